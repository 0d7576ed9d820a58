//! Replication benchmark, master and edge in one process over real TLS on
//! loopback:
//!
//! - snapshot: a fresh edge pulls 100,000 documents from the master, as a
//!   ratio to copying the same rows with a plain bulk SQL export and import
//!   (sqlx, one transaction) in the same run;
//! - latency from a master commit to the change applied at the edge while
//!   the master commits 1,000 changes/s (p50, p99, max).
//!
//! Run: `cargo bench --bench replication` (BENCH_DOCS, default 100000;
//! BENCH_CHANGES, default 3000).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use outpost::config::{Config, SecretString};
use outpost::model::{EdgeLocation, Module, new_id};
use outpost::store::{Expect, Store, StoreOptions, Write};
use sqlx::Executor as _;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn module(i: usize) -> Module {
    Module {
        id: new_id(),
        name: format!("module {i}"),
        driver: "line.lua".into(),
        uri: Some(format!("tcp://10.0.{}.{}:4000", (i / 250) % 250, i % 250)),
        settings: Default::default(),
        enabled: false,
    }
}

fn config(dir: &std::path::Path, name: &str) -> Config {
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
        ..Config::default()
    }
}

/// The baseline: every row of the master's documents table copied into a
/// fresh SQLite file with plain sqlx, in one transaction.
async fn plain_copy(from: &std::path::Path, to: &std::path::Path) -> usize {
    let src = sqlx::SqlitePool::connect(&format!("sqlite://{}", from.display()))
        .await
        .unwrap();
    let options = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(to)
        .create_if_missing(true)
        .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
        .synchronous(sqlx::sqlite::SqliteSynchronous::Full);
    let dst = sqlx::sqlite::SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(options)
        .await
        .unwrap();
    dst.execute(
        "CREATE TABLE documents (seq INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, kind TEXT NOT NULL, \
         rev INTEGER NOT NULL, deleted INTEGER NOT NULL, owner TEXT, body TEXT NOT NULL)",
    )
    .await
    .unwrap();
    type Row = (i64, String, String, i64, bool, Option<String>, String);
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT seq, id, kind, rev, deleted, owner, body FROM documents ORDER BY seq",
    )
    .fetch_all(&src)
    .await
    .unwrap();
    let mut tx = dst.begin().await.unwrap();
    for r in &rows {
        sqlx::query("INSERT INTO documents (seq, id, kind, rev, deleted, owner, body) VALUES ($1, $2, $3, $4, $5, $6, $7)")
            .bind(r.0)
            .bind(&r.1)
            .bind(&r.2)
            .bind(r.3)
            .bind(r.4)
            .bind(&r.5)
            .bind(&r.6)
            .execute(&mut *tx)
            .await
            .unwrap();
    }
    tx.commit().await.unwrap();
    rows.len()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        outpost::certs::install_crypto_provider();
        let docs = env_usize("BENCH_DOCS", 100_000);
        let changes = env_usize("BENCH_CHANGES", 3_000);
        let dir = tempfile::tempdir().unwrap();
        outpost::certs::init_dev(&dir.path().join("certs"), &["localhost".into(), "127.0.0.1".into()], false).unwrap();

        // The master's data: one edge location and `docs` modules.
        let master_cfg = config(dir.path(), "master");
        let store = Store::open(&StoreOptions::new(master_cfg.database_url())).await.unwrap();
        let edge_id = new_id();
        let site = outpost::admin::SiteFile {
            edges: vec![serde_json::from_value::<EdgeLocation>(serde_json::json!({"id": edge_id, "name": "bench"})).unwrap()],
            ..Default::default()
        };
        let secret = outpost::admin::import(&store, &site, &Default::default()).await.unwrap().secrets[0].2.expose().to_owned();
        let modules: Vec<Module> = (0..docs).map(module).collect();
        for chunk in modules.chunks(1000) {
            let writes: Vec<Write> = chunk.iter().map(|m| Write::put(m, Expect::Absent)).collect();
            store.apply(&writes).await.unwrap();
        }
        store.close().await;

        let master = outpost::master::start(master_cfg.clone()).await.unwrap();
        let total = master.store.last_seq().await.unwrap();

        // Snapshot to a fresh edge.
        let edge_cfg = Config {
            edge_id: Some(edge_id),
            edge_secret: Some(SecretString::new(secret)),
            masters: vec![master.link_addr.to_string()],
            ..config(dir.path(), "edge")
        };
        let t = Instant::now();
        let edge = outpost::edge::start(edge_cfg).await.unwrap();
        let mut applied = edge.store.subscribe_commits();
        while *applied.borrow_and_update() < total {
            applied.changed().await.unwrap();
        }
        let snapshot = t.elapsed();
        let t = Instant::now();
        let copied = plain_copy(
            &dir.path().join("master/store.db"),
            &dir.path().join("plain.db"),
        )
        .await;
        let plain = t.elapsed();
        println!(
            "snapshot       {total:>7} docs  {:>8.0} ms  {:>9.0} docs/s | plain bulk SQL copy {copied} rows {:>7.0} ms  ratio {:.2} (target <= 3000 ms)",
            snapshot.as_secs_f64() * 1e3,
            total as f64 / snapshot.as_secs_f64(),
            plain.as_secs_f64() * 1e3,
            plain.as_secs_f64() / snapshot.as_secs_f64(),
        );

        // Commit-to-edge latency at 1,000 changes/s.
        let mut committed: BTreeMap<i64, Instant> = BTreeMap::new();
        let mut latencies = Vec::with_capacity(changes);
        let watcher = {
            let mut applied = edge.store.subscribe_commits();
            tokio::spawn(async move {
                let mut seen = Vec::new();
                while applied.changed().await.is_ok() {
                    seen.push((*applied.borrow_and_update(), Instant::now()));
                }
                seen
            })
        };
        let mut tick = tokio::time::interval(Duration::from_millis(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        let started = Instant::now();
        for i in 0..changes {
            tick.tick().await;
            let mut m = modules[i % modules.len()].clone();
            m.name = format!("changed {i}");
            let doc = master.store.get(m.id).await.unwrap().unwrap();
            let c = master.store.apply(&[Write::put(&m, Expect::Rev(doc.rev))]).await.unwrap();
            committed.insert(c[0].seq, Instant::now());
        }
        let rate = changes as f64 / started.elapsed().as_secs_f64();
        let last = *committed.keys().last().unwrap();
        let mut applied = edge.store.subscribe_commits();
        while *applied.borrow_and_update() < last {
            applied.changed().await.unwrap();
        }
        edge.stop().await;
        let seen = watcher.await.unwrap();
        for (seq, at) in &committed {
            if let Some((_, applied_at)) = seen.iter().find(|(s, _)| s >= seq) {
                latencies.push(applied_at.saturating_duration_since(*at));
            }
        }
        latencies.sort();
        println!(
            "change latency {:>7} changes at {rate:.0}/s: p50 {:.1} ms  p99 {:.1} ms  max {:.1} ms (target p99 <= 50 ms)",
            latencies.len(),
            percentile(&latencies, 0.5).as_secs_f64() * 1e3,
            percentile(&latencies, 0.99).as_secs_f64() * 1e3,
            latencies.last().unwrap().as_secs_f64() * 1e3,
        );
        master.stop().await;
    });
}
