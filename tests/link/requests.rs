//! Every request kind over real TLS, concurrency, cancellation, deadlines.

use std::time::Duration;

use outpost::link::CallError;
use outpost::proto::{EventBody, RequestBody, ResponseBody, WireError};
use serde_json::json;
use uuid::Uuid;

use crate::support::*;

const D: Duration = Duration::from_secs(10);

fn exec(module: &str, args: serde_json::Value) -> RequestBody {
    RequestBody::Exec {
        module: module.into(),
        method: "run".into(),
        args,
        epoch: Some(7),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_request_kind_over_tls_in_both_directions() {
    let certs = dev_certs();
    let (m, e, to_edge, to_master) =
        pair(&certs, TestHandler::default(), TestHandler::default()).await;
    let mut debug_events = m.handler.events();

    // exec, both directions
    let r = to_edge
        .request(exec("echo", json!({"a": [1, 2]})), D)
        .await
        .unwrap();
    assert_eq!(
        r,
        ResponseBody::Value {
            value: json!({"a": [1, 2]})
        }
    );
    let r = to_master
        .request(exec("echo", json!("up")), D)
        .await
        .unwrap();
    assert_eq!(r, ResponseBody::Value { value: json!("up") });
    let r = to_edge
        .request(exec("nope", json!(null)), D)
        .await
        .unwrap_err();
    assert_eq!(r, CallError::Remote(WireError::not_found("module nope")));

    // status: all, one, missing key
    let r = to_edge
        .request(
            RequestBody::Status {
                module: "proj".into(),
                key: None,
            },
            D,
        )
        .await
        .unwrap();
    let ResponseBody::Status { values } = r else {
        panic!("{r:?}")
    };
    assert_eq!(values["input"], json!("hdmi1"));
    assert_eq!(values["module"], json!("proj"));
    let r = to_edge
        .request(
            RequestBody::Status {
                module: "proj".into(),
                key: Some("power".into()),
            },
            D,
        )
        .await
        .unwrap();
    assert_eq!(r, ResponseBody::Value { value: json!(true) });
    let r = to_edge
        .request(
            RequestBody::Status {
                module: "proj".into(),
                key: Some("volume".into()),
            },
            D,
        )
        .await;
    assert!(
        matches!(r, Err(CallError::Remote(WireError::NotFound { .. }))),
        "{r:?}"
    );

    // systems and drivers
    let sys = Uuid::now_v7();
    for body in [
        RequestBody::StartSystem {
            system: sys,
            epoch: Some(3),
        },
        RequestBody::StopSystem {
            system: sys,
            epoch: None,
        },
        RequestBody::ExpireSystemCache { system: sys },
    ] {
        assert_eq!(to_edge.request(body, D).await.unwrap(), ResponseBody::Done);
    }
    let r = to_edge
        .request(
            RequestBody::ReloadDriver {
                name: "pjlink.lua".into(),
                source: Some("-- v2".into()),
            },
            D,
        )
        .await
        .unwrap();
    assert_eq!(
        r,
        ResponseBody::Reloaded {
            drivers: vec!["pjlink.lua".into()]
        }
    );
    assert_eq!(
        *e.handler.log.lock().unwrap(),
        vec![
            format!("start {sys}"),
            format!("stop {sys}"),
            format!("expire {sys}"),
            "reload pjlink.lua -- v2".to_string()
        ]
    );

    // debug proxy: events flow back until unsubscribed
    let r = to_edge
        .request(
            RequestBody::DebugSubscribe {
                module: "proj".into(),
            },
            D,
        )
        .await
        .unwrap();
    assert_eq!(r, ResponseBody::Done);
    for _ in 0..3 {
        let ev = within("debug event", debug_events.recv()).await.unwrap();
        let EventBody::Debug {
            module, message, ..
        } = ev
        else {
            panic!("not a debug event: {ev:?}");
        };
        assert_eq!(module, "proj");
        assert!(message.starts_with("line "));
    }
    to_edge
        .request(
            RequestBody::DebugUnsubscribe {
                module: "proj".into(),
            },
            D,
        )
        .await
        .unwrap();
    // After the unsubscribe response, at most the event already in flight
    // arrives; then the stream is silent (checked with a round trip that
    // must come back after any straggler).
    to_edge.request(exec("echo", json!(1)), D).await.unwrap();
    while debug_events.try_recv().is_ok() {}
    to_edge
        .request(exec("sleep", json!({"ms": 50})), D)
        .await
        .unwrap();
    assert!(
        debug_events.try_recv().is_err(),
        "debug events after unsubscribe"
    );

    e.stop().await;
    m.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn debug_stream_ends_when_the_link_closes() {
    let certs = dev_certs();
    let (m, e, to_edge, _) = pair(&certs, TestHandler::default(), TestHandler::default()).await;
    let mut debug_events = m.handler.events();
    to_edge
        .request(RequestBody::DebugSubscribe { module: "m".into() }, D)
        .await
        .unwrap();
    within("debug event", debug_events.recv()).await.unwrap();
    let token = e.handler.debug.lock().unwrap().get("m").cloned().unwrap();
    e.stop().await;
    within("debug stream to stop", token.cancelled()).await;
    m.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_concurrent_requests_of_mixed_durations_complete_out_of_order() {
    let certs = dev_certs();
    let (m, e, to_edge, _) = pair(&certs, TestHandler::default(), TestHandler::default()).await;
    let mut rng = fastrand::Rng::with_seed(4);
    let mut tasks = tokio::task::JoinSet::new();
    let order = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    for i in 0..1000u64 {
        let ms = if i % 10 == 0 {
            rng.u64(20..80)
        } else {
            rng.u64(0..10)
        };
        let peer = to_edge.clone();
        let order = order.clone();
        tasks.spawn(async move {
            let r = peer
                .request(exec("sleep", json!({"i": i, "ms": ms})), D)
                .await;
            order.lock().unwrap().push(i);
            (i, ms, r)
        });
    }
    let mut n = 0;
    while let Some(res) = within("1000 requests", tasks.join_next()).await {
        let (i, ms, r) = res.unwrap();
        assert_eq!(
            r.unwrap(),
            ResponseBody::Value {
                value: json!({"i": i, "ms": ms})
            }
        );
        n += 1;
    }
    assert_eq!(n, 1000);
    let order = order.lock().unwrap().clone();
    assert!(
        order.windows(2).any(|w| w[0] > w[1]),
        "responses came strictly in order"
    );
    assert_eq!(to_edge.pending_requests(), 0);
    e.stop().await;
    m.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_flight_bound_gives_backpressure_not_errors() {
    let certs = dev_certs();
    let id = EdgeIdentity::new();
    let mut opts = MasterOpts::new(keys(&[&id]));
    opts.max_in_flight = 4;
    let mut m = start_master(&certs, opts).await;
    let mut e = start_edge(
        edge_config(&certs, &id, vec![m.addr.to_string()]),
        TestHandler::default(),
    );
    let to_master = e.connected().await;
    m.next_up().await;
    // 64 requests against a bound of 4: the caller queues, nothing fails.
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..64 {
        let p = to_master.clone();
        tasks.spawn(async move { p.request(exec("sleep", json!({"ms": 5, "i": i})), D).await });
    }
    while let Some(r) = within("bounded requests", tasks.join_next()).await {
        r.unwrap().unwrap();
    }
    e.stop().await;
    m.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_that_gives_up_cancels_the_handler() {
    let certs = dev_certs();
    let edge_handler = TestHandler::default();
    let (mut started, mut dropped) = edge_handler.watch_hangs();
    let (m, e, to_edge, _) = pair(&certs, TestHandler::default(), edge_handler).await;

    // 1. The caller drops its future.
    let call = tokio::spawn({
        let p = to_edge.clone();
        async move { p.request(exec("hang", json!({"tag": 1})), D).await }
    });
    assert_eq!(within("handler start", started.recv()).await, Some(1));
    call.abort();
    assert_eq!(within("handler abort", dropped.recv()).await, Some(1));

    // 2. The caller's deadline passes.
    let r = to_edge
        .request(exec("hang", json!({"tag": 2})), Duration::from_millis(200))
        .await;
    assert_eq!(r, Err(CallError::DeadlineExceeded));
    assert_eq!(within("handler start", started.recv()).await, Some(2));
    assert_eq!(within("handler abort", dropped.recv()).await, Some(2));

    // The link is fine afterwards and nothing is left in flight.
    to_edge.request(exec("echo", json!(3)), D).await.unwrap();
    assert_eq!(to_edge.pending_requests(), 0);
    e.stop().await;
    m.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_slow_request_does_not_delay_another() {
    let certs = dev_certs();
    let edge_handler = TestHandler::default();
    let (mut started, _dropped) = edge_handler.watch_hangs();
    let (m, e, to_edge, _) = pair(&certs, TestHandler::default(), edge_handler).await;
    let hang = tokio::spawn({
        let p = to_edge.clone();
        async move { p.request(exec("hang", json!({"tag": 9})), D).await }
    });
    within("hang start", started.recv()).await;
    for i in 0..20 {
        to_edge.request(exec("echo", json!(i)), D).await.unwrap();
    }
    hang.abort();
    e.stop().await;
    m.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_large_request_and_response_are_errors_not_disconnects() {
    let certs = dev_certs();
    let id = EdgeIdentity::new();
    let mut opts = MasterOpts::new(keys(&[&id]));
    opts.max_frame = 64 * 1024;
    let mut m = start_master(&certs, opts).await;
    let mut cfg = edge_config(&certs, &id, vec![m.addr.to_string()]);
    cfg.peer.max_frame = 64 * 1024;
    let mut e = start_edge(cfg, TestHandler::default());
    let to_master = e.connected().await;
    m.next_up().await;
    let r = to_master
        .request(exec("echo", json!("y".repeat(100_000))), D)
        .await;
    assert!(matches!(r, Err(CallError::TooLarge(_))), "{r:?}");
    let r = to_master
        .request(exec("big", json!({"len": 100_000})), D)
        .await;
    assert!(
        matches!(r, Err(CallError::Remote(WireError::Failed { .. }))),
        "{r:?}"
    );
    to_master.request(exec("echo", json!(1)), D).await.unwrap();
    e.stop().await;
    m.stop().await;
}
