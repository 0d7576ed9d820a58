//! Console benchmark in a real headless Chromium against a real master with
//! 1,000 edge locations (SQLite store, loopback), three figures each with
//! a baseline measured in the same run:
//!
//! - first load: bytes of HTML + JS + CSS fetched over HTTP (target
//!   ≤ 150 KiB), beside the bytes of the 1,000-site `/api/v1/sites` answer;
//! - time to a painted overview of 1,000 sites, from navigation start to
//!   the frame after the table is built (median of BENCH_LOADS, default 5),
//!   beside the time to fetch the same data by plain HTTP from Rust (target
//!   ≤ 1 s);
//! - controller change in the store → change painted in the browser, p99
//!   over BENCH_CHANGES (default 100), beside the same change reaching a
//!   plain WebSocket client in Rust (target ≤ 250 ms).
//!
//! Run: `cargo bench --bench console` (needs Debian's chromium and
//! chromium-driver).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    unreachable_pub,
    reason = "tests and benchmarks fail loudly by design, and their items are not an API"
)]

#[path = "../tests/console/browser.rs"]
mod browser;
#[path = "../tests/support/http.rs"]
mod http;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::{SinkExt, StreamExt};
use outpost::control::{Reason, Side};
use serde_json::{Value, json};

const SITES: usize = 1000;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn now_ms() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
        * 1e3
}

fn percentile(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let loads = env_usize("BENCH_LOADS", 5);
    let changes = env_usize("BENCH_CHANGES", 100);
    outpost::certs::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    outpost::certs::init_dev(&dir.path().join("certs"), &["127.0.0.1".into()], false).unwrap();
    let certs = dir.path().join("certs");
    let config = outpost::config::Config {
        data_dir: dir.path().join("master"),
        api_addr: "127.0.0.1:0".parse().unwrap(),
        link_addr: "127.0.0.1:0".parse().unwrap(),
        ca_cert: certs.join("ca.pem"),
        tls_cert: certs.join("master.pem"),
        tls_key: certs.join("master-key.pem"),
        modules_dir: concat!(env!("CARGO_MANIFEST_DIR"), "/modules").into(),
        boot_wait_ms: 50,
        ..Default::default()
    };
    std::fs::create_dir_all(&config.data_dir).unwrap();
    // 1,000 locations whose edges never come (failover off: the master
    // leaves them alone), imported in one transaction.
    let edges: Vec<outpost::model::EdgeLocation> = (0..SITES)
        .map(|i| {
            serde_json::from_value(json!({
                "id": outpost::model::new_id(),
                "name": format!("Site {i:04}"),
                "window_start": "0 3 * * *",
                "window_length_ms": 3_600_000,
                "timezone": "Australia/Sydney",
            }))
            .unwrap()
        })
        .collect();
    {
        let store = outpost::boot::open_store(&config).await.unwrap();
        let file = outpost::admin::SiteFile {
            edges: edges.clone(),
            ..Default::default()
        };
        outpost::admin::import(&store, &file, &Default::default())
            .await
            .unwrap();
        store.close().await;
    }
    let key_file = config.data_dir.join("admin-key");
    let master = outpost::master::start(config).await.unwrap();
    let key = std::fs::read_to_string(key_file).unwrap().trim().to_owned();
    let addr = master.api_addr;
    let base = format!("http://{addr}");
    let auth = format!("Bearer {key}");

    // 1. First-load bytes, as served over HTTP.
    let mut first_load = 0;
    for path in outpost::console::paths() {
        let r = http::request(addr, "GET", path, &[], None).await;
        assert_eq!(r.status, 200, "{path}");
        first_load += r.body.len();
    }
    let sites = http::request(
        addr,
        "GET",
        "/api/v1/sites",
        &[("Authorization", &auth)],
        None,
    )
    .await;
    assert_eq!(sites.json().as_array().unwrap().len(), SITES);
    println!(
        "first load: {first_load} bytes ({:.1} KiB; target <= 150 KiB) | baseline: /api/v1/sites for {SITES} sites {} bytes | ratio {:.2}",
        first_load as f64 / 1024.0,
        sites.body.len(),
        first_load as f64 / sites.body.len() as f64
    );

    // 2. Time to a painted overview of 1,000 sites.
    let Some(b) = browser::Browser::start("bench", 1280).await else {
        return;
    };
    b.goto(&format!("{base}/")).await;
    b.js(
        "sessionStorage.setItem('outpost.key', arguments[0]); return true",
        vec![json!(key)],
    )
    .await;
    let mut paint = Vec::new();
    let mut fetch = Vec::new();
    for i in 0..loads {
        // A distinct query string makes every navigation a full page load.
        b.goto(&format!("{base}/?load={i}#/")).await;
        b.until(
            "the overview painted",
            "return (window.outpostPaints || []).some(p => p.what === 'overview')",
            vec![],
        )
        .await;
        let ms = b
            .js(
                "const p = window.outpostPaints.find(p => p.what === 'overview'); return p.at - performance.timeOrigin",
                vec![],
            )
            .await;
        paint.push(ms.as_f64().unwrap());
        let t = Instant::now();
        let r = http::request(
            addr,
            "GET",
            "/api/v1/sites",
            &[("Authorization", &auth)],
            None,
        )
        .await;
        let _: Value = r.json();
        fetch.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let rows = b
        .js(
            "return document.querySelectorAll('tr[data-site]').length",
            vec![],
        )
        .await;
    assert_eq!(
        rows,
        json!(SITES + 1),
        "every site painted (and the master row)"
    );
    b.shot("overview-1000").await;
    let paint_med = percentile(&mut paint, 0.5);
    let fetch_med = percentile(&mut fetch, 0.5);
    println!(
        "overview of {SITES} sites painted: median {paint_med:.0} ms over {loads} loads (target <= 1000 ms) | baseline: same data by plain HTTP {fetch_med:.1} ms | ratio {:.1}",
        paint_med / fetch_med
    );

    // 3. Controller change in the store → painted, against a plain
    // WebSocket client seeing the same change.
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/api/v1/ws?key={key}"))
        .await
        .unwrap();
    ws.send(tokio_tungstenite::tungstenite::Message::Text(
        json!({"op": "subscribe", "id": 1, "topic": "control"})
            .to_string()
            .into(),
    ))
    .await
    .unwrap();
    loop {
        let m = ws.next().await.unwrap().unwrap();
        if m.to_text().unwrap_or_default().contains("subscribed") {
            break;
        }
    }
    let target = edges[0].id;
    let mut epoch = None;
    let mut painted = Vec::new();
    let mut received = Vec::new();
    for i in 0..changes {
        let to = if i % 2 == 0 { Side::Master } else { Side::Edge };
        let t0 = now_ms();
        let record = master
            .store
            .change_controller(target, epoch, to, Reason::ManualRestore, t0 as i64)
            .await
            .unwrap();
        epoch = Some(record.epoch);
        // The plain client's copy.
        loop {
            let m = tokio::time::timeout(Duration::from_secs(10), ws.next())
                .await
                .unwrap()
                .unwrap()
                .unwrap();
            let v: Value =
                serde_json::from_str(m.to_text().unwrap_or("null")).unwrap_or(Value::Null);
            if v["type"] == "control" && v["epoch"] == json!(record.epoch) {
                received.push(now_ms() - t0);
                break;
            }
        }
        b.until(
            "the change painted",
            "return (window.outpostPaints || []).some(p => p.what === 'control' && p.detail === arguments[0])",
            vec![json!(record.epoch)],
        )
        .await;
        let at = b
            .js(
                "return window.outpostPaints.find(p => p.what === 'control' && p.detail === arguments[0]).at",
                vec![json!(record.epoch)],
            )
            .await;
        painted.push(at.as_f64().unwrap() - t0);
    }
    let p99 = percentile(&mut painted, 0.99);
    let p50 = percentile(&mut painted, 0.5);
    let base99 = percentile(&mut received, 0.99);
    println!(
        "controller change -> painted: p99 {p99:.1} ms, p50 {p50:.1} ms over {changes} changes (target p99 <= 250 ms) | baseline: plain WebSocket client p99 {base99:.1} ms | ratio {:.1}",
        p99 / base99.max(0.001)
    );
    b.close().await;
    master.stop().await;
}
