//! Every kind of event an edge records reaches the master: status changes,
//! exec results (ok and error), driver errors (a throwing timer, a module
//! that breaks its budget and fails) and control changes; the edge's status
//! shows its log's unsynced and dropped counts.

use outpost::config::SecretString;
use outpost::store::{Event, EventKind, LoggedEvent, Store};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::http::request;
use crate::roles::{Room, Site, device, eventually};

const FAULTY: &str = r#"
local M = {}
function M.hello(name) return "hello " .. name end
function M.boom() error("boom") end
function M.later() after(1, function() error("tick") end) return true end
function M.spin() while true do end end
return M
"#;

async fn events_at(store: &Store, edge_id: Uuid) -> Vec<(EventKind, Value, LoggedEvent)> {
    store
        .events_of(edge_id, 0, 10_000)
        .await
        .unwrap()
        .into_iter()
        .map(|e| {
            let body = serde_json::from_str(&e.event.body).unwrap_or(Value::Null);
            (e.event.kind.clone(), body, e)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn execs_driver_errors_and_control_changes_reach_the_master() {
    let site = Site::new();
    // The shipped drivers and one that misbehaves on request.
    let modules = site.path().join("modules");
    std::fs::create_dir_all(&modules).unwrap();
    for f in std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/modules")).unwrap() {
        let f = f.unwrap();
        std::fs::copy(f.path(), modules.join(f.file_name())).unwrap();
    }
    std::fs::write(modules.join("faulty.lua"), FAULTY).unwrap();
    let faulty = device("Faulty", "faulty.lua", None);
    let module = faulty.id;
    let Room {
        edge_id, secret, ..
    } = site.one_room(json!({}), &[faulty]).await;

    let admin = "a".repeat(48);
    let mut config = site.master_config();
    config.modules_dir = modules.clone();
    config.admin_key = Some(SecretString::new(admin.clone()));
    let master = outpost::master::start(config).await.unwrap();
    let mut edge_config = site.edge_config(edge_id, &secret, master.link_addr);
    edge_config.modules_dir = modules;
    let edge = outpost::edge::start(edge_config).await.unwrap();
    eventually(10, "the module to run at the edge", async || {
        edge.runtime
            .exec(module, "hello", json!(["x"]))
            .await
            .is_ok()
    })
    .await;

    assert_eq!(
        edge.runtime
            .exec(module, "hello", json!(["world"]))
            .await
            .unwrap(),
        json!("hello world")
    );
    assert!(edge.runtime.exec(module, "boom", json!([])).await.is_err());
    edge.runtime.exec(module, "later", json!([])).await.unwrap();
    eventually(10, "the timer's error at the master", async || {
        events_at(&master.store, edge_id)
            .await
            .iter()
            .any(|(k, b, _)| *k == EventKind::DriverError && b["failed"] == json!(false))
    })
    .await;
    assert!(edge.runtime.exec(module, "spin", json!([])).await.is_err());
    edge.event_log
        .record_control(
            3,
            json!({"from": "master", "to": "edge", "reason": "restore_window"}),
        )
        .await;

    eventually(10, "every kind at the master", async || {
        let got = events_at(&master.store, edge_id).await;
        let has = |f: &dyn Fn(&(EventKind, Value, LoggedEvent)) -> bool| got.iter().any(f);
        has(&|(k, b, _)| {
            *k == EventKind::Exec
                && b == &json!({"method": "hello", "ok": true, "result": "\"hello world\""})
        }) && has(&|(k, b, _)| *k == EventKind::Exec && b["method"] == "boom" && b["ok"] == false)
            && has(&|(k, b, _)| *k == EventKind::DriverError && b["failed"] == true)
            && has(&|(k, _, e)| *k == EventKind::Control && e.event.epoch == Some(3))
    })
    .await;
    let got = events_at(&master.store, edge_id).await;
    let boom = got
        .iter()
        .find(|(k, b, _)| *k == EventKind::Exec && b["method"] == "boom")
        .unwrap();
    assert!(
        boom.1["error"].to_string().contains("boom"),
        "the error says what the driver threw: {}",
        boom.1
    );
    assert!(
        got.iter().all(
            |(_, _, e)| e.event.module_id == Some(module) || e.event.kind == EventKind::Control
        )
    );
    let failed = got
        .iter()
        .find(|(k, b, _)| *k == EventKind::DriverError && b["failed"] == true)
        .unwrap();
    assert!(failed.1["message"].as_str().unwrap().len() <= outpost::runtime::ACTIVITY_TEXT + 3);

    // The edge's status, answered by the edge: nothing waiting, nothing
    // dropped; the master does not know the edge's log.
    let auth = format!("Bearer {admin}");
    let status = async |addr| {
        let r = request(
            addr,
            "GET",
            &format!("/api/v1/edges/{edge_id}/status"),
            &[("Authorization", auth.as_str())],
            None,
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.body);
        r.json()
    };
    eventually(10, "the admin key at the edge", async || {
        request(
            edge.api_addr,
            "GET",
            &format!("/api/v1/edges/{edge_id}/status"),
            &[("Authorization", auth.as_str())],
            None,
        )
        .await
        .status
            == 200
    })
    .await;
    eventually(10, "the edge's log to be synced", async || {
        edge.store.event_counts().await.unwrap().0 == 0
    })
    .await;
    let s = status(edge.api_addr).await;
    assert_eq!(
        (&s["events_unsynced"], &s["events_dropped"]),
        (&json!(0), &json!(0))
    );
    let s = status(master.api_addr).await;
    assert_eq!(
        (&s["events_unsynced"], &s["events_dropped"]),
        (&Value::Null, &Value::Null)
    );

    // The master goes away; a full log drops (and counts) the oldest.
    master.stop().await;
    for i in 0..8 {
        let e = Event {
            id: outpost::model::new_id(),
            edge_id,
            at_ms: i,
            module_id: Some(module),
            kind: EventKind::Status,
            key: Some(format!("k{i}")),
            epoch: None,
            body: "1".into(),
        };
        edge.store.log_event(&e, 5).await.unwrap();
    }
    let s = status(edge.api_addr).await;
    assert_eq!(s["events_unsynced"], json!(5));
    assert_eq!(s["events_dropped"], json!(3));
    edge.stop().await;
}
