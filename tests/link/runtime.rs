//! Request kinds end to end into the module runtime: a master sends over
//! real TLS, the edge serves from a `Runtime` running a Lua logic module.

use std::sync::Arc;
use std::time::Duration;

use outpost::link::CallError;
use outpost::link::edge::{self, EdgeEvent};
use outpost::link::runtime::RuntimeHandler;
use outpost::model::Module;
use outpost::proto::{EventBody, RequestBody, ResponseBody, WireError};
use outpost::runtime::{Runtime, RuntimeConfig};
use serde_json::json;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::support::*;

const LOGIC: &str = r#"
local M = {}
function M.echo(x) return x end
function M.shout(s) log.info("shout " .. tostring(s)) return "ok" end
function M.set(v) status.set("level", v) return v end
function M.on_load() status.set("loaded", true) end
return M
"#;

const D: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_kinds_reach_the_module_runtime() {
    let certs = dev_certs();
    let dir = tempfile::tempdir().unwrap();
    let rt = Runtime::new(RuntimeConfig::new(dir.path()));
    rt.reload_driver("logic.lua", Some(LOGIC.into()))
        .await
        .unwrap();
    let m = Module {
        id: Uuid::now_v7(),
        name: "logic".into(),
        driver: "logic.lua".into(),
        uri: None,
        settings: Default::default(),
        enabled: true,
    };
    rt.load(&m).await.unwrap();
    rt.start(m.id).await.unwrap();

    let id = EdgeIdentity::new();
    let mut master = start_master(&certs, MasterOpts::new(keys(&[&id]))).await;
    let mut debug = master.handler.events();
    let (tx, mut events) = mpsc::unbounded_channel();
    let stop = CancellationToken::new();
    let cfg = edge_config(&certs, &id, vec![master.addr.to_string()]);
    let task = tokio::spawn(edge::run(
        cfg,
        Arc::new(RuntimeHandler::new(rt.clone())),
        tx,
        stop.clone(),
    ));
    loop {
        if let EdgeEvent::Connected { .. } = within("edge up", events.recv()).await.unwrap() {
            break;
        }
    }
    let (_, _, to_edge) = master.next_up().await;
    let module = m.id.to_string();
    let exec = |method: &str, args| RequestBody::Exec {
        module: module.clone(),
        method: method.into(),
        args,
        epoch: None,
    };

    assert_eq!(
        to_edge
            .request(exec("echo", json!([{"a": 1}])), D)
            .await
            .unwrap(),
        ResponseBody::Value {
            value: json!({"a": 1})
        }
    );
    to_edge.request(exec("set", json!([42])), D).await.unwrap();
    let r = to_edge.request(exec("nope", json!([])), D).await;
    assert!(
        matches!(r, Err(CallError::Remote(WireError::NotFound { .. }))),
        "{r:?}"
    );
    let r = to_edge
        .request(
            RequestBody::Status {
                module: module.clone(),
                key: Some("level".into()),
            },
            D,
        )
        .await
        .unwrap();
    assert_eq!(r, ResponseBody::Value { value: json!(42) });
    let ResponseBody::Status { values } = to_edge
        .request(
            RequestBody::Status {
                module: module.clone(),
                key: None,
            },
            D,
        )
        .await
        .unwrap()
    else {
        panic!()
    };
    assert_eq!(values["loaded"], json!(true));

    // Debug stream: lines flow back as events until unsubscribed.
    to_edge
        .request(
            RequestBody::DebugSubscribe {
                module: module.clone(),
            },
            D,
        )
        .await
        .unwrap();
    to_edge
        .request(exec("shout", json!(["hi"])), D)
        .await
        .unwrap();
    let ev = within("debug line", debug.recv()).await.unwrap();
    let EventBody::Debug {
        module: from,
        message,
        ..
    } = ev
    else {
        panic!("not a debug event: {ev:?}");
    };
    assert_eq!(from, module);
    assert!(message.contains("shout hi"), "{message}");
    to_edge
        .request(
            RequestBody::DebugUnsubscribe {
                module: module.clone(),
            },
            D,
        )
        .await
        .unwrap();

    // Live reload with new text.
    let v2 = LOGIC.replace("return x end", "return {v2 = x} end");
    let r = to_edge
        .request(
            RequestBody::ReloadDriver {
                name: "logic.lua".into(),
                source: Some(v2),
            },
            D,
        )
        .await
        .unwrap();
    assert_eq!(
        r,
        ResponseBody::Reloaded {
            drivers: vec!["logic.lua".into()]
        }
    );
    assert_eq!(
        to_edge.request(exec("echo", json!([1])), D).await.unwrap(),
        ResponseBody::Value {
            value: json!({"v2": 1})
        }
    );

    // Systems: unknown ones are typed errors; expiring a cache is fine.
    let r = to_edge
        .request(
            RequestBody::StartSystem {
                system: Uuid::now_v7(),
            },
            D,
        )
        .await;
    assert!(
        matches!(r, Err(CallError::Remote(WireError::NotFound { .. }))),
        "{r:?}"
    );
    let r = to_edge
        .request(
            RequestBody::ExpireSystemCache {
                system: Uuid::now_v7(),
            },
            D,
        )
        .await
        .unwrap();
    assert_eq!(r, ResponseBody::Done);
    let r = to_edge
        .request(
            RequestBody::Status {
                module: "not-a-uuid".into(),
                key: None,
            },
            D,
        )
        .await;
    assert!(
        matches!(r, Err(CallError::Remote(WireError::BadRequest { .. }))),
        "{r:?}"
    );

    stop.cancel();
    within("edge stop", task).await.unwrap();
    master.stop().await;
    rt.shutdown().await;
}
