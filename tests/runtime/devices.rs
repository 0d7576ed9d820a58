//! Transports against misbehaving and absent devices: flood, endless line,
//! garbage, half replies, refused connections, timeouts, and the
//! connected-devices aggregate.

use outpost::sim::{LineOptions, LineSim};
use serde_json::json;

use crate::support::*;

async fn line_sim() -> LineSim {
    LineSim::start("127.0.0.1:0".parse().unwrap(), LineOptions::default())
        .await
        .unwrap()
}

#[tokio::test]
async fn line_device_request_response_and_status() {
    let sim = line_sim().await;
    let rt = runtime();
    let m = module("line", "line.lua", tcp(sim.addr()), json!({}));
    start(&rt, &m).await;
    wait_connected(&rt, m.id).await;
    let mut dbg = rt.debug_stream(m.id).unwrap();
    assert_eq!(exec_ok(&rt, m.id, "ping", no_args()).await, json!(true));
    let ev = dbg.try_recv();
    eprintln!("{ev:?}");
}
