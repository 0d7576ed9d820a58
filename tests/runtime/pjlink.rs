//! The shipped PJLink driver against the PJLink simulator: power cycle with
//! warm-up and cool-down, MD5 authentication, and error replies.

use std::time::Duration;

use outpost::runtime::ExecError;
use outpost::sim::{PjlinkOptions, PjlinkSim, Power};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::*;

async fn sim(opts: PjlinkOptions) -> PjlinkSim {
    PjlinkSim::start("127.0.0.1:0".parse().unwrap(), opts)
        .await
        .unwrap()
}

#[tokio::test]
async fn pjlink_power_cycle_with_warmup_and_cooldown() {
    let sim = sim(PjlinkOptions {
        warmup: Duration::from_secs(30),
        cooldown: Duration::from_secs(20),
        ..Default::default()
    })
    .await;
    let rt = runtime_on_test_clock();
    let m = module(
        "proj",
        "pjlink.lua",
        tcp(sim.addr()),
        json!({"poll_ms": 1000}),
    );
    start(&rt, &m).await;
    wait_connected(&rt, m.id).await;
    assert_eq!(
        exec_ok(&rt, m.id, "power_query", no_args()).await,
        json!("off")
    );

    // From here the 30 s warm-up runs on the paused clock.
    tokio::time::pause();
    assert_eq!(
        exec_ok(&rt, m.id, "power", json!([true])).await,
        json!("warming")
    );
    assert_eq!(sim.power(), Power::Warming);
    // A second power command during warm-up is refused by the projector.
    match rt.exec(m.id, "power", json!([true])).await {
        Err(ExecError::Driver { message }) => {
            assert!(message.contains("ERR3"), "{message}")
        }
        other => panic!("expected ERR3, got {other:?}"),
    }
    // Input select is unavailable until the lamp is on.
    assert!(matches!(
        rt.exec(m.id, "input", json!(["31"])).await,
        Err(ExecError::Driver { .. })
    ));
    let mut changes = rt.subscribe_status(m.id).unwrap();
    tokio::time::sleep(Duration::from_secs(31)).await;
    wait_until("power on after warm-up", || {
        rt.status_key(m.id, "power").unwrap() == Some(json!("on"))
    })
    .await;
    assert_eq!(sim.power(), Power::On);
    let mut saw_on = false;
    while let Ok(c) = changes.try_recv() {
        saw_on |= c.key == "power" && c.value == json!("on");
    }
    assert!(saw_on, "a status change to on was published");
    tokio::time::resume();

    assert_eq!(
        exec_ok(&rt, m.id, "input", json!(["31"])).await,
        json!("31")
    );
    assert_eq!(sim.input(), "31");
    assert_eq!(
        exec_ok(&rt, m.id, "input_query", no_args()).await,
        json!("31")
    );
    assert_eq!(exec_ok(&rt, m.id, "mute", json!([true])).await, json!(true));
    assert_eq!(sim.av_mute(), "31");
    assert_eq!(
        exec_ok(&rt, m.id, "mute_query", no_args()).await,
        json!(true)
    );
    assert_eq!(
        exec_ok(&rt, m.id, "lamp", no_args()).await,
        json!({"hours": 1200, "on": true})
    );
    assert_eq!(
        rt.status_key(m.id, "lamp_hours").unwrap(),
        Some(json!(1200))
    );
    assert_eq!(
        exec_ok(&rt, m.id, "inputs", no_args()).await,
        json!(["11", "12", "31", "32", "51"])
    );

    tokio::time::pause();
    assert_eq!(
        exec_ok(&rt, m.id, "power", json!(["off"])).await,
        json!("cooling")
    );
    tokio::time::sleep(Duration::from_secs(21)).await;
    wait_until("power off after cool-down", || {
        rt.status_key(m.id, "power").unwrap() == Some(json!("off"))
    })
    .await;
    assert_eq!(sim.power(), Power::Off);
    tokio::time::resume();
    assert_eq!(sim.connections(), 1);
    assert_eq!(
        sim.total_connections(),
        1,
        "one connection for the whole cycle"
    );
    rt.shutdown().await;
    wait_until("device released", || sim.connections() == 0).await;
}

#[tokio::test]
async fn pjlink_md5_authentication() {
    let sim = sim(PjlinkOptions {
        password: Some("secret".into()),
        ..Default::default()
    })
    .await;
    let rt = runtime_on_test_clock();
    let good = module(
        "good",
        "pjlink.lua",
        tcp(sim.addr()),
        json!({"password": "secret"}),
    );
    start(&rt, &good).await;
    wait_connected(&rt, good.id).await;
    assert_eq!(
        exec_ok(&rt, good.id, "power_query", no_args()).await,
        json!("off")
    );
    // Later commands on the same connection need no digest.
    assert_eq!(
        exec_ok(&rt, good.id, "power", json!([true])).await,
        json!("warming")
    );
    assert_eq!(sim.power(), Power::Warming);

    let bad = module(
        "bad",
        "pjlink.lua",
        tcp(sim.addr()),
        json!({"password": "wrong"}),
    );
    start(&rt, &bad).await;
    wait_connected(&rt, bad.id).await;
    let err = rt.exec(bad.id, "power_query", no_args()).await.unwrap_err();
    assert!(
        matches!(err, ExecError::Driver { ref message } if message.contains("disconnected")),
        "{err:?}"
    );
    wait_until("auth error reported", || {
        rt.status_key(bad.id, "auth_error").unwrap() == Some(json!(true))
    })
    .await;
    // The good module is untouched by its neighbour's failure.
    assert_eq!(
        exec_ok(&rt, good.id, "power_query", no_args()).await,
        json!("warming")
    );
    rt.shutdown().await;
}

#[tokio::test]
async fn pjlink_error_replies() {
    let sim = sim(PjlinkOptions::default()).await;
    let rt = runtime_on_test_clock();
    let m = module("proj", "pjlink.lua", tcp(sim.addr()), json!({}));
    start(&rt, &m).await;
    wait_connected(&rt, m.id).await;

    assert_eq!(
        exec_ok(&rt, m.id, "info", no_args()).await,
        json!({"name": "Outpost PJLink simulator", "manufacturer": "Outpost",
               "product": "SIM-1", "other": "simulated projector", "class": "1"})
    );
    sim.set_failure(true);
    match rt.exec(m.id, "power", json!([true])).await {
        Err(ExecError::Driver { message }) => {
            assert!(
                message.contains("ERR4") && message.contains("projector failure"),
                "{message}"
            )
        }
        other => panic!("expected ERR4, got {other:?}"),
    }
    sim.set_failure(false);
    sim.set_error_status("020001");
    assert_eq!(
        exec_ok(&rt, m.id, "errors", no_args()).await,
        json!({"fan": "ok", "lamp": "error", "temperature": "ok", "cover": "ok",
               "filter": "ok", "other": "warning"})
    );
    // Out-of-range input code: the projector answers ERR2.
    match rt.exec(m.id, "input", json!(["99"])).await {
        Err(ExecError::Driver { message }) => assert!(message.contains("ERR2"), "{message}"),
        other => panic!("expected ERR2, got {other:?}"),
    }
    // Wrong argument types are refused by the driver before the device.
    assert!(matches!(
        rt.exec(m.id, "power", json!(["maybe"])).await,
        Err(ExecError::BadArguments { .. })
    ));
    assert!(matches!(
        rt.exec(m.id, "input", json!([{"x": 1}])).await,
        Err(ExecError::BadArguments { .. })
    ));
    rt.shutdown().await;
}

/// The simulator itself follows the specification on the wire.
#[tokio::test]
async fn pjlink_simulator_speaks_the_protocol() {
    let sim = sim(PjlinkOptions {
        password: Some("pw".into()),
        ..Default::default()
    })
    .await;
    let mut c = tokio::net::TcpStream::connect(sim.addr()).await.unwrap();
    let mut buf = vec![0u8; 64];
    let n = c.read(&mut buf).await.unwrap();
    let greeting = String::from_utf8_lossy(&buf[..n]).to_string();
    assert!(
        greeting.starts_with("PJLINK 1 ") && greeting.ends_with('\r'),
        "{greeting:?}"
    );
    let random = greeting[9..17].to_owned();
    use md5::{Digest, Md5};
    let digest: String = Md5::digest(format!("{random}pw"))
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    c.write_all(format!("{digest}%1CLSS ?\r").as_bytes())
        .await
        .unwrap();
    let n = c.read(&mut buf).await.unwrap();
    assert_eq!(&buf[..n], b"%1CLSS=1\r");
    c.write_all(b"%1XYZW ?\r").await.unwrap();
    let n = c.read(&mut buf).await.unwrap();
    assert_eq!(&buf[..n], b"%1XYZW=ERR1\r");
    c.write_all(b"%1POWR 7\r").await.unwrap();
    let n = c.read(&mut buf).await.unwrap();
    assert_eq!(&buf[..n], b"%1POWR=ERR2\r");
    assert_eq!(sim.connections(), 1);

    // A wrong digest is refused and the connection closed.
    let mut c2 = tokio::net::TcpStream::connect(sim.addr()).await.unwrap();
    let _ = c2.read(&mut buf).await.unwrap();
    c2.write_all(b"0123456789abcdef0123456789abcdef%1POWR ?\r")
        .await
        .unwrap();
    let n = c2.read(&mut buf).await.unwrap();
    assert_eq!(&buf[..n], b"PJLINK ERRA\r");
    assert_eq!(c2.read(&mut buf).await.unwrap(), 0);
    assert_eq!(sim.max_connections_seen(), 2);
}
