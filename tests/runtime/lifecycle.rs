//! Lifecycle: live reload (from text and from disk) keeping connections and
//! status, compile errors leaving the old code running, systems started and
//! stopped as a whole, the room logic module driving projectors through
//! module-to-module exec, settings changes and unload.

use std::time::Duration;

use outpost::model::ControlSystem;
use outpost::runtime::{ExecError, ModuleState, Runtime, RuntimeConfig, RuntimeError};
use outpost::sim::{LineOptions, LineSim, PjlinkOptions, PjlinkSim, Power};
use serde_json::json;
use uuid::Uuid;

use crate::support::*;

async fn line_sim() -> LineSim {
    LineSim::start("127.0.0.1:0".parse().unwrap(), LineOptions::default())
        .await
        .unwrap()
}

fn line_v2() -> String {
    let v1 = std::fs::read_to_string(modules_dir().join("line.lua")).unwrap();
    v1.replace(
        "return M\n",
        "function M.version() return 2 end\nreturn M\n",
    )
}

#[tokio::test]
async fn live_reload_keeps_the_device_connection_and_status() {
    let sim = line_sim().await;
    let rt = runtime();
    let m = module("line", "line.lua", tcp(sim.addr()), json!({}));
    start(&rt, &m).await;
    wait_connected(&rt, m.id).await;
    exec_ok(&rt, m.id, "set", json!(["mode", "eco"])).await;
    assert!(matches!(
        rt.exec(m.id, "version", no_args()).await,
        Err(ExecError::NoSuchMethod { .. })
    ));

    let report = rt.reload_driver("line.lua", Some(line_v2())).await.unwrap();
    assert_eq!(report.updated, vec![m.id]);
    assert!(
        report.reconnected.is_empty() && report.failed.is_empty(),
        "{report:?}"
    );
    assert_eq!(exec_ok(&rt, m.id, "version", no_args()).await, json!(2));
    assert_eq!(rt.status_key(m.id, "mode").unwrap(), Some(json!("eco")));
    assert_eq!(exec_ok(&rt, m.id, "ping", no_args()).await, json!(true));
    assert_eq!(rt.device_connected(m.id), Some(true));
    assert_eq!(
        sim.total_connections(),
        1,
        "the connection survived the reload"
    );
    assert_eq!(sim.connections(), 1);

    // Code that does not compile changes nothing.
    let err = rt
        .reload_driver(
            "line.lua",
            Some("local M = {} function M.x( return M".into()),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, RuntimeError::Driver(_)), "{err}");
    assert!(err.to_string().contains("line.lua"), "{err}");
    assert_eq!(exec_ok(&rt, m.id, "version", no_args()).await, json!(2));

    // Code that compiles but fails when it runs keeps the old code too.
    let report = rt
        .reload_driver("line.lua", Some("error('broken at load')".into()))
        .await
        .unwrap();
    assert!(report.updated.is_empty());
    assert!(report.failed[0].1.contains("broken at load"), "{report:?}");
    assert_eq!(exec_ok(&rt, m.id, "version", no_args()).await, json!(2));
    assert_eq!(sim.total_connections(), 1);
    rt.shutdown().await;
}

#[tokio::test]
async fn reload_with_new_framing_reconnects() {
    let sim = LineSim::start(
        "127.0.0.1:0".parse().unwrap(),
        LineOptions {
            delimiter: b"\r\n".to_vec(),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let rt = runtime();
    let src = "local M = {} M.framing = { delimiter = '\\n' } \
               function M.ping() return request('PING\\r\\n') end return M";
    driver(&rt, "crlf.lua", src).await;
    let m = module("crlf", "crlf.lua", tcp(sim.addr()), json!({}));
    start(&rt, &m).await;
    wait_connected(&rt, m.id).await;
    assert_eq!(exec_ok(&rt, m.id, "ping", no_args()).await, json!("PONG\r"));
    let report = rt
        .reload_driver("crlf.lua", Some(src.replace("'\\n' }", "'\\r\\n' }")))
        .await
        .unwrap();
    assert_eq!(report.reconnected, vec![m.id]);
    wait_connected(&rt, m.id).await;
    assert_eq!(exec_ok(&rt, m.id, "ping", no_args()).await, json!("PONG"));
    assert_eq!(sim.total_connections(), 2);
    rt.shutdown().await;
}

#[tokio::test]
async fn reload_from_disk() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("greet.lua");
    std::fs::write(&path, "return { hi = function() return 'v1' end }").unwrap();
    let rt = Runtime::new(RuntimeConfig {
        modules_dir: dir.path().to_owned(),
        ..config()
    });
    let a = module("a", "greet.lua", None, json!({}));
    let b = module("b", "greet.lua", None, json!({}));
    start(&rt, &a).await;
    start(&rt, &b).await;
    assert_eq!(exec_ok(&rt, a.id, "hi", no_args()).await, json!("v1"));
    std::fs::write(&path, "return { hi = function() return 'v2' end }").unwrap();
    // Still the loaded code until someone asks for a reload.
    assert_eq!(exec_ok(&rt, a.id, "hi", no_args()).await, json!("v1"));
    let report = rt.reload_driver("greet.lua", None).await.unwrap();
    assert_eq!(report.updated.len(), 2);
    assert_eq!(exec_ok(&rt, a.id, "hi", no_args()).await, json!("v2"));
    assert_eq!(exec_ok(&rt, b.id, "hi", no_args()).await, json!("v2"));
    assert!(matches!(
        rt.reload_driver("../etc/passwd", None).await,
        Err(RuntimeError::Driver(_))
    ));
}

async fn pjlink(warmup: Duration) -> PjlinkSim {
    PjlinkSim::start(
        "127.0.0.1:0".parse().unwrap(),
        PjlinkOptions {
            warmup,
            ..Default::default()
        },
    )
    .await
    .unwrap()
}

#[tokio::test]
async fn room_logic_powers_on_every_projector_of_its_system() {
    let p1 = pjlink(Duration::from_millis(200)).await;
    let p2 = pjlink(Duration::from_millis(200)).await;
    let rt = runtime();
    let m1 = module("left", "pjlink.lua", tcp(p1.addr()), json!({"poll_ms": 50}));
    let m2 = module(
        "right",
        "pjlink.lua",
        tcp(p2.addr()),
        json!({"poll_ms": 50}),
    );
    let room = module("room", "room.lua", None, json!({}));
    let mut off = module("spare", "pjlink.lua", tcp(p1.addr()), json!({}));
    off.enabled = false;
    for m in [&m1, &m2, &room, &off] {
        rt.load(m).await.unwrap();
    }
    let missing = Uuid::now_v7();
    let system = ControlSystem {
        id: Uuid::now_v7(),
        name: "Room 1".into(),
        description: String::new(),
        edge_id: None,
        module_ids: vec![room.id, m1.id, m2.id, off.id, missing],
        settings: Default::default(),
        stopped: false,
    };
    let report = rt.start_system(&system).await.unwrap();
    assert_eq!(report.done, vec![room.id, m1.id, m2.id]);
    assert_eq!(report.skipped, vec![off.id]);
    assert_eq!(report.missing, vec![missing]);
    wait_connected(&rt, m1.id).await;
    wait_connected(&rt, m2.id).await;

    let r = exec_ok(&rt, room.id, "power_on", no_args()).await;
    assert_eq!(r["ok"], json!(true), "{r}");
    assert_eq!(
        r["count"],
        json!(2),
        "the disabled projector is left out: {r}"
    );
    assert_eq!(p1.power(), Power::Warming);
    assert_eq!(p2.power(), Power::Warming);
    wait_until("projectors on", || {
        rt.status_key(m1.id, "power").unwrap() == Some(json!("on"))
            && rt.status_key(m2.id, "power").unwrap() == Some(json!("on"))
    })
    .await;

    // One broken projector: the others still get the command and the
    // result says which one failed.
    p2.set_failure(true);
    let r = exec_ok(&rt, room.id, "power_off", no_args()).await;
    assert_eq!(r["ok"], json!(false));
    let results = r["results"].as_array().unwrap();
    let right = results
        .iter()
        .find(|x| x["module"] == json!("right"))
        .unwrap();
    let error = right["error"].as_str().unwrap();
    assert!(error.contains("ERR4") && !error.contains('\n'), "{r}");
    assert_eq!(p1.power(), Power::Cooling);
    assert_eq!(
        rt.status_key(room.id, "power").unwrap(),
        Some(json!("partial"))
    );

    let report = rt.stop_system(system.id).await.unwrap();
    assert_eq!(report.missing, vec![missing]);
    for id in [room.id, m1.id, m2.id] {
        assert_eq!(rt.module_info(id).unwrap().state, ModuleState::Stopped);
    }
    wait_until("projectors released", || {
        p1.connections() == 0 && p2.connections() == 0
    })
    .await;
    assert!(matches!(
        rt.exec(room.id, "power_on", no_args()).await,
        Err(ExecError::Stopped)
    ));
    rt.shutdown().await;
}

const SETTINGS: &str = r#"
local M = {}
function M.on_settings(s) status.set("seen", s.level) end
function M.level() return setting("level") end
function M.on_unload() status.set("unloaded", true) end
return M
"#;

#[tokio::test]
async fn settings_changes_and_unload_reach_the_driver() {
    let sim = line_sim().await;
    let rt = runtime();
    driver(&rt, "settings.lua", SETTINGS).await;
    let mut m = module("s", "settings.lua", None, json!({"level": 1}));
    start(&rt, &m).await;
    assert_eq!(exec_ok(&rt, m.id, "level", no_args()).await, json!(1));
    m.settings.insert("level".into(), json!(5));
    rt.update(&m).await.unwrap();
    assert_eq!(exec_ok(&rt, m.id, "level", no_args()).await, json!(5));
    wait_until("on_settings ran", || {
        rt.status_key(m.id, "seen").unwrap() == Some(json!(5))
    })
    .await;
    // A new uri moves the module to a device.
    m.driver = "line.lua".into();
    m.uri = tcp(sim.addr());
    rt.update(&m).await.unwrap();
    wait_connected(&rt, m.id).await;
    assert_eq!(exec_ok(&rt, m.id, "ping", no_args()).await, json!(true));

    rt.unload(m.id).await.unwrap();
    wait_until("device released", || sim.connections() == 0).await;
    assert!(rt.module_info(m.id).is_none());
    assert!(matches!(
        rt.unload(m.id).await,
        Err(RuntimeError::NoSuchModule(_))
    ));
}

#[tokio::test]
async fn simulators_count_concurrent_connections() {
    let sim = line_sim().await;
    let mut clients = Vec::new();
    for _ in 0..3 {
        clients.push(tokio::net::TcpStream::connect(sim.addr()).await.unwrap());
    }
    wait_until("three clients", || sim.connections() == 3).await;
    drop(clients.pop());
    wait_until("two clients", || sim.connections() == 2).await;
    assert_eq!(sim.max_connections_seen(), 3);
    assert_eq!(sim.total_connections(), 3);
    sim.shutdown().await;
}

#[tokio::test]
async fn simulate_command_runs_until_shutdown() {
    use outpost::sim::cli::{SimulateCommand, run};
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let listen: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(run(
        SimulateCommand::Pjlink {
            listen,
            password: None,
            warmup_ms: 100,
            cooldown_ms: 100,
        },
        async move {
            let _ = stopped.await;
        },
    ));
    let mut c = loop {
        match tokio::net::TcpStream::connect(listen).await {
            Ok(c) => break c,
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    };
    let mut buf = [0u8; 16];
    let n = tokio::io::AsyncReadExt::read(&mut c, &mut buf)
        .await
        .unwrap();
    assert_eq!(&buf[..n], b"PJLINK 0\r");
    stop.send(()).unwrap();
    within(5, task).await.unwrap().unwrap();
}

#[tokio::test]
async fn load_many_reports_failures_without_stopping() {
    let rt = runtime();
    driver(&rt, "ok.lua", "return { hi = function() return 1 end }").await;
    let mut modules: Vec<_> = (0..100)
        .map(|i| module(&format!("m{i}"), "ok.lua", None, json!({})))
        .collect();
    let bad = module("bad", "nonexistent.lua", None, json!({}));
    modules.push(bad.clone());
    rt.load(&modules[0]).await.unwrap();
    let report = rt.load_many(&modules).await;
    assert_eq!(report.loaded, 100);
    assert_eq!(report.failed.len(), 1);
    assert_eq!(report.failed[0].0, bad.id);
    assert!(report.failed[0].1.contains("nonexistent.lua"), "{report:?}");
    assert_eq!(rt.modules().len(), 100);
    rt.shutdown().await;
    assert!(rt.modules().is_empty());
    assert!(matches!(
        rt.load(&bad).await,
        Err(RuntimeError::ShuttingDown)
    ));
}

/// Two runtimes (a master and an edge, say) hand a projector over: the one
/// that stops releases the connection before the other connects, so the
/// device never sees two controllers.
#[tokio::test]
async fn handover_between_two_runtimes_keeps_one_connection() {
    let sim = pjlink(Duration::from_millis(100)).await;
    let edge = runtime();
    let master = runtime();
    let m = module("proj", "pjlink.lua", tcp(sim.addr()), json!({}));
    let system = ControlSystem {
        id: Uuid::now_v7(),
        name: "Room".into(),
        description: String::new(),
        edge_id: Some(Uuid::now_v7()),
        module_ids: vec![m.id],
        settings: Default::default(),
        stopped: false,
    };
    for rt in [&edge, &master] {
        rt.load(&m).await.unwrap();
        rt.register_system(&system);
    }
    edge.start_system(&system).await.unwrap();
    wait_connected(&edge, m.id).await;
    assert_eq!(
        exec_ok(&edge, m.id, "power", json!([true])).await,
        json!("warming")
    );
    for _ in 0..3 {
        edge.stop_system(system.id).await.unwrap();
        wait_until("edge released", || sim.connections() == 0).await;
        master.start_system(&system).await.unwrap();
        wait_connected(&master, m.id).await;
        assert_eq!(master.location_devices(system.edge_id).connected, 1);
        assert_eq!(edge.location_devices(system.edge_id).connected, 0);
        exec_ok(&master, m.id, "power_query", no_args()).await;
        master.stop_system(system.id).await.unwrap();
        wait_until("master released", || sim.connections() == 0).await;
        edge.start_system(&system).await.unwrap();
        wait_connected(&edge, m.id).await;
    }
    // The simulator counts the last connection on its own task, maybe
    // after the module (on the driver executor) says it is connected.
    wait_until("seven connections in all", || sim.total_connections() == 7).await;
    assert_eq!(sim.max_connections_seen(), 1);
    edge.shutdown().await;
    master.shutdown().await;
}

const CALLER: &str = r#"
local M = {}
function M.poke(id) return call(id, "hello") end
function M.hello() return "hello from " .. setting("name") end
return M
"#;

/// A driver's `call(uuid, …)` reaches the modules that share a system with
/// it, and nothing else: not another room's module, even one this runtime
/// runs, and the refusal does not say whether that module exists.
#[tokio::test]
async fn a_drivers_call_across_systems_is_refused() {
    let rt = runtime();
    driver(&rt, "caller.lua", CALLER).await;
    let me = module("me", "caller.lua", None, json!({"name": "me"}));
    let mate = module("mate", "caller.lua", None, json!({"name": "mate"}));
    let stranger = module("stranger", "caller.lua", None, json!({"name": "stranger"}));
    let system = |modules: Vec<Uuid>| ControlSystem {
        id: Uuid::now_v7(),
        name: "Room".into(),
        description: String::new(),
        edge_id: None,
        module_ids: modules,
        settings: Default::default(),
        stopped: false,
    };
    for m in [&me, &mate, &stranger] {
        rt.load(m).await.unwrap();
    }
    rt.start_system(&system(vec![me.id, mate.id]))
        .await
        .unwrap();
    rt.start_system(&system(vec![stranger.id])).await.unwrap();

    let r = exec_ok(&rt, me.id, "poke", json!([mate.id.to_string()])).await;
    assert_eq!(r, json!("hello from mate"));
    for target in [stranger.id, Uuid::now_v7()] {
        match rt.exec(me.id, "poke", json!([target.to_string()])).await {
            Err(ExecError::Driver { message }) => {
                assert!(message.contains("does not share a system"), "{message}")
            }
            other => panic!("a call across systems was not refused: {other:?}"),
        }
    }
    rt.shutdown().await;
}
