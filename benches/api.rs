//! Web API benchmark with a real load generator (`wrk`): a master and an
//! edge in this process over real TLS on loopback, and three targets in
//! the same run:
//!
//! - (a) exec on an edge-controlled module through the master's API
//!   (API → link → edge runtime → link → API);
//! - (b) the same exec on a module the master runs itself;
//! - (c) a bare axum handler answering a constant (the HTTP floor).
//!
//! Each prints requests/s and p99 latency; the ratios compare them (target
//! (a)/(b) ≥ 0.6). The module is `room.lua` answering `projectors()` with
//! no device, so the figures are the API's and the link's, not a device's.
//!
//! Run: `cargo bench --bench api` (needs `wrk` on the PATH: `apt-get
//! install -y wrk`). BENCH_SECS (default 10) per target, BENCH_CONNS
//! (default 32) connections, BENCH_THREADS (default 1) wrk threads,
//! BENCH_ONLY=a|b|c one target (for profiling; skips the paced run),
//! BENCH_ROUNDS (default 1) interleaved rounds of the three, reported as
//! medians,
//! BENCH_PACED_CONNS (4) and BENCH_PACED_MS (10) the paced run of (a) and
//! (b) at a device-realistic rate (latency, not throughput), BENCH_DRIVER_THREADS
//! (default: the configuration's) the driver executor's threads (0: none).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    unreachable_pub,
    missing_debug_implementations,
    reason = "tests and benchmarks fail loudly by design, and their items are not an API"
)]

use std::path::Path;
use std::time::Duration;

use outpost::config::{Config, SecretString};
use outpost::model::{ControlSystem, Module, index_document, new_id};
use outpost::store::{Replicated, Store, StoreOptions};
use uuid::Uuid;

#[path = "support/process.rs"]
mod process;
use process::cpu_seconds;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn config(dir: &Path, name: &str) -> Config {
    let certs = dir.join("certs");
    Config {
        data_dir: dir.join(name),
        database_url: Some(format!(
            "sqlite://{}",
            dir.join(name).join("store.db").display()
        )),
        api_addr: "127.0.0.1:0".parse().unwrap(),
        link_addr: "127.0.0.1:0".parse().unwrap(),
        ca_cert: certs.join("ca.pem"),
        tls_cert: certs.join("master.pem"),
        tls_key: certs.join("master-key.pem"),
        modules_dir: concat!(env!("CARGO_MANIFEST_DIR"), "/modules").into(),
        boot_wait_ms: 0,
        log: "warn".into(),
        // BENCH_DRIVER_THREADS=0 runs drivers on the I/O runtime, to
        // measure what the driver executor's thread hop costs.
        driver_threads: env_u64(
            "BENCH_DRIVER_THREADS",
            Config::default().driver_threads as u64,
        ) as usize,
        ..Config::default()
    }
}

fn room_module(name: &str) -> Module {
    Module {
        id: new_id(),
        name: name.into(),
        driver: "room.lua".into(),
        uri: None,
        settings: Default::default(),
        enabled: true,
    }
}

fn system(name: &str, edge_id: Option<Uuid>, module: &Module) -> ControlSystem {
    ControlSystem {
        id: new_id(),
        name: name.into(),
        description: String::new(),
        edge_id,
        module_ids: vec![module.id],
        settings: Default::default(),
        stopped: false,
    }
}

/// Copies the master's documents into the edge's replica, as the link's
/// replication does, so the edge boots with its site.
async fn seed_replica(master: &Config, edge: &Config) {
    let master = Store::open(&StoreOptions::new(master.database_url()))
        .await
        .unwrap();
    let replica = Store::open(&StoreOptions::new(edge.database_url()))
        .await
        .unwrap();
    let mut cursor = replica.begin_replication(master.store_id()).await.unwrap();
    loop {
        let docs = master.changes_since(cursor, 500).await.unwrap();
        let Some(last) = docs.last() else { break };
        cursor = last.seq;
        let batch: Vec<Replicated> = docs
            .into_iter()
            .map(|doc| Replicated {
                refs: index_document(&doc.kind, &doc.body).unwrap().refs,
                doc,
            })
            .collect();
        replica.apply_replicated(&batch, cursor).await.unwrap();
    }
    replica.close().await;
    master.close().await;
}

struct Figures {
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
    requests: u64,
    errors: u64,
    /// CPU time of this process (master and edge, not wrk) per request.
    cpu_us: f64,
}

const SCRIPT: &str = r#"
wrk.method = "POST"
wrk.body = '{"method":"projectors"}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer KEY"
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("RESULT %d %d %d %d %d\n", summary.requests, summary.duration,
    latency:percentile(99), e.connect + e.read + e.write + e.status + e.timeout,
    latency:percentile(50)))
end
"#;

/// The paced run: each connection waits this long (ms) before each
/// request, as a room's panels and schedules do, instead of a closed loop.
const PACE: &str = r#"
function delay()
  return PACE_MS
end
"#;

async fn wrk(script: &Path, url: &str, conns: u64) -> Figures {
    let secs = env_u64("BENCH_SECS", 10);
    let cpu_before = cpu_seconds();
    let out = tokio::process::Command::new("wrk")
        .arg(format!("-t{}", env_u64("BENCH_THREADS", 1)))
        .arg(format!("-c{conns}"))
        .arg(format!("-d{secs}s"))
        .arg("--timeout")
        .arg("10s")
        .arg("-s")
        .arg(script)
        .arg(url)
        .output()
        .await
        .expect("wrk runs (apt-get install -y wrk)");
    let cpu = cpu_seconds() - cpu_before;
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix("RESULT "))
        .unwrap_or_else(|| panic!("no result from wrk: {text}"));
    let n: Vec<u64> = line
        .split_whitespace()
        .map(|x| x.parse().unwrap())
        .collect();
    Figures {
        rps: n[0] as f64 / (n[1] as f64 / 1e6),
        p50_ms: n[4] as f64 / 1e3,
        p99_ms: n[2] as f64 / 1e3,
        requests: n[0],
        errors: n[3],
        cpu_us: cpu * 1e6 / n[0].max(1) as f64,
    }
}

/// Each target at full load, BENCH_ROUNDS (1) times, interleaved: on a
/// shared machine one run can differ from the next by a third, so more
/// rounds report the median of each target and the ratio of the medians.
async fn closed_loop(script: &Path, targets: &[(&str, String)], only: Option<&str>) {
    let rounds = env_u64("BENCH_ROUNDS", 1).max(1);
    println!(
        "wrk -t{} -c{} -d{}s per target, {rounds} round(s)",
        env_u64("BENCH_THREADS", 1),
        env_u64("BENCH_CONNS", 32),
        env_u64("BENCH_SECS", 10)
    );
    let mut runs: Vec<Vec<Figures>> = targets.iter().map(|_| Vec::new()).collect();
    for _ in 0..rounds {
        for ((name, url), runs) in targets.iter().zip(&mut runs) {
            if only.is_some_and(|o| !name.starts_with(&format!("({o})"))) {
                continue;
            }
            let f = wrk(script, url, env_u64("BENCH_CONNS", 32)).await;
            println!(
                "{name:<48} {:>9.0} req/s  p50 {:>6.2} ms  p99 {:>7.2} ms  CPU {:>5.1} µs/req  ({} requests, {} errors)",
                f.rps, f.p50_ms, f.p99_ms, f.cpu_us, f.requests, f.errors
            );
            assert_eq!(f.errors, 0, "{name}: every request must succeed");
            runs.push(f);
        }
    }
    if runs.iter().any(Vec::is_empty) {
        return;
    }
    let rps: Vec<f64> = runs
        .iter()
        .map(|r| median(r.iter().map(|f| f.rps)))
        .collect();
    let cpu: Vec<f64> = runs
        .iter()
        .map(|r| median(r.iter().map(|f| f.cpu_us)))
        .collect();
    if rounds > 1 {
        println!(
            "medians: (a) {:.0}, (b) {:.0}, (c) {:.0} req/s; CPU (a) {:.1}, (b) {:.1}, (c) {:.1} µs/req",
            rps[0], rps[1], rps[2], cpu[0], cpu[1], cpu[2]
        );
    }
    println!(
        "ratios: (a)/(b) = {:.2} (target >= 0.6), (b)/(c) = {:.2}, (a)/(c) = {:.2}",
        rps[0] / rps[1],
        rps[1] / rps[2],
        rps[0] / rps[2]
    );
    // wrk shares the two cores, so the wall-clock ratio also counts
    // what wrk does per request; CPU per request is the servers' work.
    println!(
        "work: CPU per request (b)/(a) = {:.2}, (c)/(a) = {:.2}",
        cpu[1] / cpu[0],
        cpu[2] / cpu[0]
    );
}

fn median(values: impl Iterator<Item = f64>) -> f64 {
    let mut v: Vec<f64> = values.collect();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// (a) and (b) at a device-realistic rate: BENCH_PACED_CONNS (4)
/// connections, each sending a request every BENCH_PACED_MS (10) ms after
/// the last answer; what matters there is the latency a caller sees.
async fn paced(dir: &Path, admin: &str, targets: &[(&str, String)]) {
    let (conns, pace) = (
        env_u64("BENCH_PACED_CONNS", 4),
        env_u64("BENCH_PACED_MS", 10),
    );
    let script = dir.join("paced.lua");
    let text = SCRIPT.replace("KEY", admin) + &PACE.replace("PACE_MS", &pace.to_string());
    std::fs::write(&script, text).unwrap();
    println!("paced: {conns} connections, one request each per {pace} ms after the last answer");
    let mut figures = Vec::new();
    for (name, url) in targets {
        let f = wrk(&script, url, conns).await;
        println!(
            "{name:<48} {:>9.0} req/s  p50 {:>6.2} ms  p99 {:>7.2} ms  ({} requests, {} errors)",
            f.rps, f.p50_ms, f.p99_ms, f.requests, f.errors
        );
        assert_eq!(f.errors, 0, "{name}: every request must succeed");
        figures.push(f);
    }
    println!(
        "paced ratios: (a)/(b) throughput = {:.2}, latency (b)/(a) p50 = {:.2}, p99 = {:.2}",
        figures[0].rps / figures[1].rps,
        figures[1].p50_ms / figures[0].p50_ms,
        figures[1].p99_ms / figures[0].p99_ms,
    );
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(run());
}

async fn run() {
    outpost::certs::install_crypto_provider();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    outpost::certs::init_dev(
        &dir.join("certs"),
        &["localhost".into(), "127.0.0.1".into()],
        false,
    )
    .unwrap();

    let edge_module = room_module("Edge room");
    let master_module = room_module("Master room");
    let edge_id = new_id();
    let site = outpost::admin::SiteFile {
        edges: vec![
            serde_json::from_value(serde_json::json!({"id": edge_id, "name": "Bench"})).unwrap(),
        ],
        systems: vec![
            system("Edge room", Some(edge_id), &edge_module),
            system("Master room", None, &master_module),
        ],
        modules: vec![edge_module.clone(), master_module.clone()],
    };
    let admin = "b".repeat(48);
    let mut master_config = config(dir, "master");
    master_config.admin_key = Some(SecretString::new(admin.clone()));
    std::fs::create_dir_all(&master_config.data_dir).unwrap();
    let store = Store::open(&StoreOptions::new(master_config.database_url()))
        .await
        .unwrap();
    let report = outpost::admin::import(&store, &site, &Default::default())
        .await
        .unwrap();
    let secret = report.secrets[0].2.expose().to_owned();
    store.close().await;

    let master = outpost::master::start(master_config.clone()).await.unwrap();
    let mut edge_config = config(dir, "edge");
    edge_config.edge_id = Some(edge_id);
    edge_config.edge_secret = Some(SecretString::new(secret));
    edge_config.masters = vec![master.link_addr.to_string()];
    std::fs::create_dir_all(&edge_config.data_dir).unwrap();
    seed_replica(&master_config, &edge_config).await;
    let edge = outpost::edge::start(edge_config).await.unwrap();
    for _ in 0..1000 {
        if master.registry.peer(edge_id).is_some()
            && edge.runtime.module_info(edge_module.id).is_some()
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        master.registry.peer(edge_id).is_some(),
        "the edge connected"
    );

    // The HTTP floor: the same server stack answering a constant.
    let floor = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let floor_addr = floor.local_addr().unwrap();
    let app = axum::Router::new().route(
        "/",
        axum::routing::post(|| async { axum::Json(serde_json::json!({"result": []})) }),
    );
    tokio::spawn(async move { axum::serve(floor, app).await });

    let script = dir.join("exec.lua");
    std::fs::write(&script, SCRIPT.replace("KEY", &admin)).unwrap();
    let m = master.api_addr;
    let targets = [
        (
            "(a) exec, edge-controlled, through the master",
            format!("http://{m}/api/v1/modules/{}/exec", edge_module.id),
        ),
        (
            "(b) exec, master-controlled",
            format!("http://{m}/api/v1/modules/{}/exec", master_module.id),
        ),
        ("(c) constant axum handler", format!("http://{floor_addr}/")),
    ];
    // BENCH_ONLY=a (or b, c) runs one target, for profiling.
    let only = std::env::var("BENCH_ONLY").ok();
    closed_loop(&script, &targets, only.as_deref()).await;
    if only.is_none() {
        paced(dir, &admin, &targets[..2]).await;
    }
    edge.stop().await;
    master.stop().await;
}
