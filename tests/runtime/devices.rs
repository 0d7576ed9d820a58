//! Transports against misbehaving and absent devices: flood, endless line,
//! garbage, half replies, refused connections, timeouts; status
//! subscriptions, the debug stream and the connected-devices aggregate.

use std::time::Duration;

use outpost::runtime::{DebugEvent, DeviceCount, ExecError, Runtime};
use outpost::sim::{LineOptions, LineSim};
use serde_json::json;
use tokio::sync::broadcast;

use crate::support::*;

async fn line_sim() -> LineSim {
    LineSim::start("127.0.0.1:0".parse().unwrap(), LineOptions::default())
        .await
        .unwrap()
}

/// Waits for a log line containing `needle` on a debug stream.
async fn expect_log(rx: &mut broadcast::Receiver<DebugEvent>, needle: &str) -> String {
    within(10, async {
        loop {
            match rx.recv().await {
                Ok(DebugEvent::Log { message, .. }) if message.contains(needle) => return message,
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(e) => panic!("debug stream ended: {e}"),
            }
        }
    })
    .await
}

#[tokio::test]
async fn line_device_request_response_status_and_debug_stream() {
    let sim = line_sim().await;
    let rt = runtime();
    let m = module("line", "line.lua", tcp(sim.addr()), json!({}));
    start(&rt, &m).await;
    wait_connected(&rt, m.id).await;
    assert_eq!(rt.status_key(m.id, "connected").unwrap(), Some(json!(true)));

    let mut dbg = rt.debug_stream(m.id).unwrap();
    assert_eq!(
        exec_ok(&rt, m.id, "request", json!(["PING"])).await,
        json!("PONG")
    );
    let mut seen = Vec::new();
    while let Ok(ev) = dbg.try_recv() {
        seen.push(ev);
    }
    assert!(
        seen.iter()
            .any(|e| matches!(e, DebugEvent::Tx { data, .. } if data == "PING\\n")),
        "{seen:?}"
    );
    assert!(
        seen.iter()
            .any(|e| matches!(e, DebugEvent::Rx { data, .. } if data == "PONG")),
        "{seen:?}"
    );
    assert_eq!(rt.debug_watchers(m.id), Some(1));
    drop(dbg);
    assert_eq!(
        rt.debug_watchers(m.id),
        Some(0),
        "dropping the receiver leaves"
    );

    assert_eq!(
        exec_ok(&rt, m.id, "set", json!(["volume", 7])).await,
        json!("7")
    );
    assert_eq!(sim.value("volume").as_deref(), Some("7"));
    assert_eq!(
        exec_ok(&rt, m.id, "get", json!(["volume"])).await,
        json!("7")
    );
    match rt.exec(m.id, "get", json!(["nothing"])).await {
        Err(ExecError::Driver { message }) => assert!(message.contains("no such key"), "{message}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        exec_ok(&rt, m.id, "request", json!(["DELAY 20 later"])).await,
        json!("later")
    );

    // Two subscribers both see an unsolicited change from the device.
    let mut a = rt.subscribe_status(m.id).unwrap();
    let mut b = rt.subscribe_status(m.id).unwrap();
    sim.set_value("input", "hdmi2");
    for rx in [&mut a, &mut b] {
        let change = within(5, rx.recv()).await.unwrap();
        assert_eq!(
            (change.key.as_str(), change.value),
            ("input", json!("hdmi2"))
        );
        assert_eq!(change.module, m.id);
    }
    assert_eq!(rt.status(m.id).unwrap()["input"], json!("hdmi2"));
    // Setting the same value again is not a change.
    sim.set_value("input", "hdmi2");
    assert_eq!(exec_ok(&rt, m.id, "ping", no_args()).await, json!(true));
    assert!(a.try_recv().is_err());

    // A device that does not answer in time: the exec times out.
    assert_eq!(
        rt.exec(m.id, "request", json!(["SILENT", 50])).await,
        Err(ExecError::Timeout)
    );
    assert_eq!(exec_ok(&rt, m.id, "ping", no_args()).await, json!(true));
    assert_eq!(sim.connections(), 1);
    rt.shutdown().await;
}

fn flood_config() -> Runtime {
    let mut cfg = config();
    cfg.transport.flood_bytes = 256 * 1024;
    cfg.transport.max_frame = 8 * 1024;
    cfg.transport.flood_frames = 500;
    Runtime::new(cfg)
}

#[tokio::test]
async fn flooding_and_endless_line_devices_are_cut_off() {
    let rt = flood_config();
    let quiet_sim = line_sim().await;
    let quiet = module("quiet", "line.lua", tcp(quiet_sim.addr()), json!({}));
    start(&rt, &quiet).await;
    wait_connected(&rt, quiet.id).await;
    // Answers to our own requests, however fast, are not a flood.
    for i in 0..1000 {
        let r = exec_ok(&rt, quiet.id, "request", json!([format!("ECHO {i}")])).await;
        assert_eq!(r, json!(i.to_string()));
    }

    for (cmd, needle) in [("FLOOD", "flooded"), ("ENDLESS", "without a delimiter")] {
        let sim = line_sim().await;
        let m = module(cmd, "line.lua", tcp(sim.addr()), json!({}));
        start(&rt, &m).await;
        wait_connected(&rt, m.id).await;
        let mut dbg = rt.debug_stream(m.id).unwrap();
        exec_ok(&rt, m.id, "send", json!([cmd])).await;
        let msg = expect_log(&mut dbg, needle).await;
        assert!(msg.contains("disconnected"), "{msg}");
        // It reconnects afterwards (the device is only cut, not banned),
        // and the neighbour never noticed.
        wait_connected(&rt, m.id).await;
        assert_eq!(exec_ok(&rt, m.id, "ping", no_args()).await, json!(true));
        assert_eq!(exec_ok(&rt, quiet.id, "ping", no_args()).await, json!(true));
        assert_eq!(quiet_sim.total_connections(), 1);
        assert!(sim.total_connections() >= 2);
        rt.unload(m.id).await.unwrap();
    }
    rt.shutdown().await;
}

#[tokio::test]
async fn garbage_and_half_replies_leave_the_module_working() {
    let sim = line_sim().await;
    let rt = runtime();
    let m = module("line", "line.lua", tcp(sim.addr()), json!({}));
    start(&rt, &m).await;
    wait_connected(&rt, m.id).await;
    exec_ok(&rt, m.id, "send", json!(["GARBAGE 5000"])).await;
    // The garbage's last partial line corrupts the next answer; a driver
    // that waits for a known answer (`expect`) resynchronises by itself.
    let _ = rt.exec(m.id, "request", json!(["ECHO sync"])).await;
    assert_eq!(exec_ok(&rt, m.id, "ping", no_args()).await, json!(true));
    assert_eq!(
        sim.total_connections(),
        1,
        "garbage alone is no reason to disconnect"
    );

    // The device closes in the middle of its answer.
    match rt.exec(m.id, "request", json!(["HALF"])).await {
        Err(ExecError::Driver { message }) => {
            assert!(message.contains("disconnected"), "{message}")
        }
        other => panic!("{other:?}"),
    }
    wait_connected(&rt, m.id).await;
    assert_eq!(exec_ok(&rt, m.id, "ping", no_args()).await, json!(true));
    rt.shutdown().await;
}

#[tokio::test]
async fn refused_connection_is_retried_until_the_device_appears() {
    // A port with nothing listening.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let rt = runtime();
    let m = module(
        "late",
        "line.lua",
        Some(format!("tcp://127.0.0.1:{port}")),
        json!({}),
    );
    start(&rt, &m).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(rt.device_connected(m.id), Some(false));
    match rt.exec(m.id, "ping", no_args()).await {
        Err(ExecError::Driver { message }) => {
            assert!(message.contains("not connected"), "{message}")
        }
        other => panic!("{other:?}"),
    }
    let sim = LineSim::start(
        format!("127.0.0.1:{port}").parse().unwrap(),
        LineOptions::default(),
    )
    .await
    .unwrap();
    wait_connected(&rt, m.id).await;
    assert_eq!(exec_ok(&rt, m.id, "ping", no_args()).await, json!(true));

    // The device drops us: we reconnect by ourselves.
    sim.kick_clients();
    wait_until("reconnected", || {
        sim.total_connections() == 2 && sim.connections() == 1
    })
    .await;
    wait_connected(&rt, m.id).await;
    assert_eq!(sim.max_connections_seen(), 1);
    rt.shutdown().await;
}

#[tokio::test]
async fn connected_devices_aggregate_per_set_and_location() {
    let sim = line_sim().await;
    let dead_port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let rt = runtime();
    let up = module("up", "line.lua", tcp(sim.addr()), json!({}));
    let down = module(
        "down",
        "line.lua",
        Some(format!("tcp://127.0.0.1:{dead_port}")),
        json!({}),
    );
    driver(&rt, "logic.lua", "return {}").await;
    let logic = module("logic", "logic.lua", None, json!({}));
    for m in [&up, &down, &logic] {
        rt.load(m).await.unwrap();
    }
    let edge = uuid::Uuid::now_v7();
    let system = outpost::model::ControlSystem {
        id: uuid::Uuid::now_v7(),
        name: "room".into(),
        description: String::new(),
        edge_id: Some(edge),
        module_ids: vec![up.id, down.id, logic.id],
        settings: Default::default(),
        stopped: false,
    };
    let report = rt.start_system(&system).await.unwrap();
    assert_eq!(report.done, vec![up.id, down.id, logic.id]);
    wait_connected(&rt, up.id).await;
    let ids = [up.id, down.id, logic.id];
    assert_eq!(
        rt.devices_connected(&ids),
        DeviceCount {
            total: 2,
            connected: 1,
            not_loaded: 0
        }
    );
    assert!(!rt.devices_connected(&ids).all_connected());
    assert_eq!(rt.location_devices(Some(edge)).connected, 1);
    assert_eq!(rt.location_devices(None).total, 0);
    let unknown = uuid::Uuid::now_v7();
    assert_eq!(rt.devices_connected(&[up.id, unknown]).not_loaded, 1);

    let report = rt.stop_system(system.id).await.unwrap();
    assert_eq!(report.done.len(), 3);
    assert_eq!(rt.location_devices(Some(edge)).connected, 0);
    wait_until("device released", || sim.connections() == 0).await;
    rt.shutdown().await;
}

#[tokio::test]
async fn many_requests_in_a_row_get_their_own_answers() {
    let sim = line_sim().await;
    let rt = runtime();
    let m = module("line", "line.lua", tcp(sim.addr()), json!({}));
    start(&rt, &m).await;
    wait_connected(&rt, m.id).await;
    for i in 0..200 {
        let r = exec_ok(&rt, m.id, "request", json!([format!("ECHO n{i}")])).await;
        assert_eq!(r, json!(format!("n{i}")));
    }
    // Concurrent execs on one module: each request still gets its own answer.
    let mut set = tokio::task::JoinSet::new();
    for i in 0..50 {
        let rt = rt.clone();
        set.spawn(async move {
            let r = rt
                .exec(m.id, "request", json!([format!("ECHO c{i}")]))
                .await;
            (i, r)
        });
    }
    while let Some(res) = set.join_next().await {
        let (i, r) = res.unwrap();
        assert_eq!(r, Ok(json!(format!("c{i}"))));
    }
    rt.shutdown().await;
}

const QUEUE: &str = r#"
local M = {}
M.framing = { delimiter = "\n" }
function M.silent(retries) return request("SILENT\n", { timeout = 50, retries = retries }) end
function M.burst()
  -- Queued in one go: the high-priority command overtakes both others, the
  -- waiting one holds the low one back until its answer.
  send("SET first 1\n", { wait = true, timeout = 1000 })
  send("SET order low\n", { priority = 0 })
  send("SET order high\n", { priority = 10 })
  return true
end
function M.order() return request("GET order\n") end
return M
"#;

#[tokio::test]
async fn queue_retries_timeouts_and_priority_over_tcp() {
    let sim = line_sim().await;
    let rt = runtime();
    driver(&rt, "queue.lua", QUEUE).await;
    let m = module("q", "queue.lua", tcp(sim.addr()), json!({}));
    start(&rt, &m).await;
    wait_connected(&rt, m.id).await;
    assert_eq!(
        rt.exec(m.id, "silent", json!([2])).await,
        Err(ExecError::Timeout)
    );
    // The device reads the third copy on its own task, maybe after the
    // caller has its answer.
    wait_until("sent once and retried twice", || sim.commands() == 3).await;

    let mut seen = rt.debug_stream(m.id).unwrap();
    exec_ok(&rt, m.id, "burst", no_args()).await;
    // A waiting `send` takes whatever frame comes next: the three answers
    // must be in before the `GET` is sent, or it takes one of them. (On
    // one thread the module used to read them before the test's next
    // exec arrived; it runs on the driver executor now.)
    let mut answers = 0;
    while answers < 3 {
        let ev = tokio::time::timeout(std::time::Duration::from_secs(10), seen.recv())
            .await
            .expect("the device answers the three commands")
            .unwrap();
        if matches!(ev, outpost::runtime::DebugEvent::Rx { .. }) {
            answers += 1;
        }
    }
    // "high" was sent before "low", so the device ends with "low".
    assert_eq!(
        exec_ok(&rt, m.id, "order", no_args()).await,
        json!("order=low")
    );
    rt.shutdown().await;
}

#[tokio::test]
async fn connect_timeout_applies_to_a_device_that_never_answers() {
    // A listener that never accepts, with its accept queue filled: the
    // kernel drops further SYNs, so a connect hangs until our timeout.
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = sock.listen(1).unwrap();
    let addr = listener.local_addr().unwrap();
    let mut fillers = Vec::new();
    for _ in 0..4 {
        let s = tokio::net::TcpSocket::new_v4().unwrap();
        if let Ok(Ok(c)) = tokio::time::timeout(Duration::from_millis(200), s.connect(addr)).await {
            fillers.push(c);
        }
    }
    let mut cfg = config();
    cfg.transport.connect_timeout = Duration::from_millis(300);
    let rt = Runtime::new(cfg);
    let m = module("hung", "line.lua", tcp(addr), json!({}));
    rt.load(&m).await.unwrap();
    let mut dbg = rt.debug_stream(m.id).unwrap();
    rt.start(m.id).await.unwrap();
    let msg = expect_log(&mut dbg, "connect failed").await;
    assert!(msg.contains("timed out"), "{msg}");
    assert_eq!(rt.device_connected(m.id), Some(false));
    drop(listener);
    rt.shutdown().await;
}
