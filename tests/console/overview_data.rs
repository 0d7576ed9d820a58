//! What the console's overview and site view read from a real master with
//! a real edge (no browser needed): a site's replica lag and unsynced
//! events in `/api/v1/sites` and, live, on the WebSocket's `sync` topic;
//! and the state of a module the edge runs, asked of the edge over the
//! link, or said to be unknown while the edge is away.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use outpost::sim::{PjlinkOptions, PjlinkSim};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use crate::http;
use crate::roles::{Site, device, eventually};

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// The next message of `ws` that satisfies `pick`.
async fn next_where(ws: &mut Ws, what: &str, pick: impl Fn(&Value) -> bool) -> Value {
    let wait = async {
        loop {
            let m = ws.next().await.unwrap().unwrap();
            let Message::Text(text) = m else { continue };
            let v: Value = serde_json::from_str(&text).unwrap();
            if pick(&v) {
                return v;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(20), wait)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sites_show_replica_lag_and_unsynced_events_and_edge_run_modules_their_state() {
    let site = Site::new();
    let sim = PjlinkSim::start("127.0.0.1:0".parse().unwrap(), PjlinkOptions::default())
        .await
        .unwrap();
    let projector = device("Projector", "pjlink.lua", Some(sim.addr()));
    let room = site
        .one_room(
            json!({"name": "Sydney", "failover": false}),
            std::slice::from_ref(&projector),
        )
        .await;
    site.seed_replica(room.edge_id).await;
    let master_config = outpost::config::Config {
        heartbeat_ms: 200,
        dead_after_ms: 600,
        boot_wait_ms: 10_000,
        ..site.master_config()
    };
    let key_file = master_config.data_dir.join("admin-key");
    let link = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let master = tokio::spawn(crate::roles::master_on(master_config, link));
    let edge = outpost::edge::start(site.edge_config(room.edge_id, &room.secret, link))
        .await
        .unwrap();
    let master = master.await.unwrap();
    let key = std::fs::read_to_string(&key_file)
        .unwrap()
        .trim()
        .to_owned();
    let auth = format!("Bearer {key}");
    let get = async |path: &str| {
        let r = http::request(
            master.api_addr,
            "GET",
            path,
            &[("Authorization", &auth)],
            None,
        )
        .await;
        assert_eq!(r.status, 200, "{path}: {}", r.body);
        r.json()
    };
    let state_path = format!("/api/v1/modules/{}/state", projector.id);

    // The projector runs at the edge: its state comes from there.
    eventually(
        20,
        "the projector running at the edge, connected",
        async || {
            let s = get(&state_path).await;
            s["answered_by"] == "edge" && s["state"] == "running" && s["connected"] == true
        },
    )
    .await;
    assert_eq!(get(&state_path).await["controller"], "edge");

    // The edge pulled its replica and reported its event log.
    eventually(20, "Sydney's lag and unsynced events", async || {
        let sites = get("/api/v1/sites").await;
        let s = &sites[0];
        s["replica_lag"] == 0 && s["events_unsynced"].is_u64()
    })
    .await;

    // Live: the feed's position and what is known of every edge, then a
    // write reaches the edge and its replica position follows.
    let (mut ws, _) =
        tokio_tungstenite::connect_async(format!("ws://{}/api/v1/ws?key={key}", master.api_addr))
            .await
            .unwrap();
    ws.send(Message::Text(
        json!({"op": "subscribe", "id": 7, "topic": "sync"})
            .to_string()
            .into(),
    ))
    .await
    .unwrap();
    let feed = next_where(&mut ws, "the feed's position", |v| v["type"] == "feed").await;
    let first_seq = feed["last_seq"].as_i64().unwrap();
    let edge_id = room.edge_id.to_string();
    let current = next_where(&mut ws, "Sydney's current sync facts", |v| {
        v["type"] == "sync" && v["edge_id"] == edge_id.as_str()
    })
    .await;
    assert_eq!(current["current"], true);
    assert_eq!(current["replica_seq"], json!(first_seq));
    assert_eq!(current["id"], 7);
    let written = http::request(
        master.api_addr,
        "POST",
        "/api/v1/edges",
        &[("Authorization", &auth)],
        Some(r#"{"name": "Darwin"}"#),
    )
    .await;
    assert_eq!(written.status, 201, "{}", written.body);
    let feed = next_where(&mut ws, "the write's feed position", |v| {
        v["type"] == "feed"
    })
    .await;
    let new_seq = feed["last_seq"].as_i64().unwrap();
    assert!(new_seq > first_seq, "{feed}");
    next_where(&mut ws, "Sydney's replica to catch up", |v| {
        v["type"] == "sync" && v["edge_id"] == edge_id.as_str() && v["replica_seq"] == new_seq
    })
    .await;

    // The edge goes away (the master does not take over: failover off):
    // the state is not known, and says why; the lag shows the write the
    // edge has not received.
    edge.stop().await;
    eventually(10, "the master to see the link lost", async || {
        master.registry.peer(room.edge_id).is_none()
    })
    .await;
    let s = get(&state_path).await;
    assert_eq!(s["state"], Value::Null, "{s}");
    assert!(
        s["unknown"].as_str().unwrap().contains("not reachable"),
        "{s}"
    );
    let written = http::request(
        master.api_addr,
        "POST",
        "/api/v1/edges",
        &[("Authorization", &auth)],
        Some(r#"{"name": "Hobart"}"#),
    )
    .await;
    assert_eq!(written.status, 201, "{}", written.body);
    let sites = get("/api/v1/sites").await;
    let sydney = sites
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == edge_id.as_str())
        .unwrap();
    assert!(sydney["replica_lag"].as_i64() >= Some(1), "{sydney}");
    let darwin = sites
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "Darwin")
        .unwrap();
    assert_eq!(darwin["replica_lag"], Value::Null, "never pulled: {darwin}");
    assert_eq!(darwin["events_unsynced"], Value::Null, "{darwin}");
    master.stop().await;
}
