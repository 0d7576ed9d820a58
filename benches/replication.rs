//! Replication benchmark, master and edge in one process over real TLS on
//! loopback:
//!
//! - snapshot: a fresh edge pulls 100,000 documents from the master, as a
//!   ratio to copying the same rows with a plain bulk SQL export and import
//!   (sqlx, one transaction) in the same run;
//! - site snapshot: a fresh edge whose site (its location, one system, 100
//!   modules) sits in a store of 100,000 documents (other sites like it)
//!   pulls its site under
//!   `replica_scope = "site"`, as a ratio to the same edge pulling the full
//!   copy under `"all"` from the same store, in the same run (target
//!   <= 0.05: the site snapshot reads only what it sends);
//! - latency from a master commit to the change applied at the edge while
//!   the master commits 1,000 changes/s (p50, p99, max);
//! - passive sync of 1,000,000 events: a running edge whose SQLite log
//!   holds them unsynced, a running master, the link, and the master's
//!   `sync_edge` pass in batches of `sync_batch_size` (no step sleep), as a
//!   ratio to copying the same rows between two plain SQLite files in the
//!   same batches (select a page, insert it in one transaction, mark it).
//!
//! Run: `cargo bench --bench replication` (everything), or name the cases:
//! `cargo bench --bench replication -- snapshot` (snapshot and latency),
//! `cargo bench --bench replication -- site`,
//! `cargo bench --bench replication -- passive`. BENCH_DOCS (default
//! 100000), BENCH_CHANGES (3000), BENCH_EVENTS (1000000),
//! BENCH_SYNC_BATCH (1000).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    unreachable_pub,
    missing_debug_implementations,
    reason = "tests and benchmarks fail loudly by design, and their items are not an API"
)]

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
    let cases: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let wanted = |name: &str| cases.is_empty() || cases.iter().any(|c| c == name);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    if wanted("snapshot") {
        rt.block_on(snapshot_and_latency());
    }
    if wanted("site") {
        rt.block_on(site_snapshot());
    }
    if wanted("passive") {
        rt.block_on(passive_sync());
    }
}

/// A store of `docs` documents: the benched site (its location, one system,
/// `site_modules` modules), other sites of the same shape, and a few
/// modules no site lists. Returns the site's id and secret.
async fn site_among(cfg: &Config, docs: usize, site_modules: usize) -> (uuid::Uuid, String) {
    let store = Store::open(&StoreOptions::new(cfg.database_url()))
        .await
        .unwrap();
    let edge_id = new_id();
    let modules: Vec<Module> = (0..site_modules).map(module).collect();
    let system = outpost::model::ControlSystem {
        id: new_id(),
        name: "bench room".into(),
        description: String::new(),
        edge_id: Some(edge_id),
        module_ids: modules.iter().map(|m| m.id).collect(),
        settings: Default::default(),
        stopped: false,
    };
    let site = outpost::admin::SiteFile {
        edges: vec![
            serde_json::from_value::<EdgeLocation>(
                serde_json::json!({"id": edge_id, "name": "bench"}),
            )
            .unwrap(),
        ],
        systems: vec![system],
        modules,
    };
    let secret = outpost::admin::import(&store, &site, &Default::default())
        .await
        .unwrap()
        .secrets[0]
        .2
        .expose()
        .to_owned();
    // The rest: other sites of the same shape, then unlisted modules.
    let mut left = docs.saturating_sub(site_modules + 2);
    while left > 0 {
        let mut writes = Vec::new();
        while left >= site_modules + 2 && writes.len() < 1000 {
            writes.extend(other_site(site_modules));
            left -= site_modules + 2;
        }
        if writes.is_empty() {
            writes = (0..left)
                .map(|i| Write::put(&module(i), Expect::Absent))
                .collect();
            left = 0;
        }
        store.apply(&writes).await.unwrap();
    }
    store.close().await;
    (edge_id, secret)
}

/// Another site's location, system and `modules` modules, as writes.
fn other_site(modules: usize) -> Vec<Write> {
    let location: EdgeLocation =
        serde_json::from_value(serde_json::json!({"id": new_id(), "name": "other"})).unwrap();
    let modules: Vec<Module> = (0..modules).map(module).collect();
    let system = outpost::model::ControlSystem {
        id: new_id(),
        name: "other room".into(),
        description: String::new(),
        edge_id: Some(location.id),
        module_ids: modules.iter().map(|m| m.id).collect(),
        settings: Default::default(),
        stopped: false,
    };
    let mut writes: Vec<Write> = modules
        .iter()
        .map(|m| Write::put(m, Expect::Absent))
        .collect();
    writes.push(Write::put(&location, Expect::Absent));
    writes.push(Write::put(&system, Expect::Absent));
    writes
}

/// How long a fresh edge (its replica in `<dir>/<name>`), once started,
/// takes to be current with a master replicating `scope`.
async fn fresh_edge_sync(
    dir: &std::path::Path,
    master_cfg: &Config,
    scope: outpost::proto::ReplicaScope,
    edge: (uuid::Uuid, &str),
    name: &str,
) -> (Duration, usize) {
    let master = outpost::master::start(Config {
        replica_scope: scope,
        ..master_cfg.clone()
    })
    .await
    .unwrap();
    let total = master.store.last_seq().await.unwrap();
    let edge_cfg = Config {
        edge_id: Some(edge.0),
        edge_secret: Some(SecretString::new(edge.1.to_owned())),
        masters: vec![master.link_addr.to_string()],
        ..config(dir, name)
    };
    // From the edge's start returning (its store open, its link starting):
    // the snapshot itself, without the process's own start, which both
    // sides pay alike.
    let edge = outpost::edge::start(edge_cfg).await.unwrap();
    let t = Instant::now();
    let mut applied = edge.store.subscribe_commits();
    while *applied.borrow_and_update() < total {
        applied.changed().await.unwrap();
    }
    let took = t.elapsed();
    let mut held = 0;
    for kind in outpost::model::Kind::ALL {
        held += edge.store.count(kind).await.unwrap() as usize;
    }
    edge.stop().await;
    master.stop().await;
    (took, held)
}

/// The store's reads behind each snapshot, best of 5: a site's pages (and
/// the ids its last page lists) against the whole feed, paged as edges
/// page it (1,000 at a time).
async fn master_reads(cfg: &Config, edge_id: uuid::Uuid) -> (Duration, Duration) {
    let store = Store::open(&StoreOptions::new(cfg.database_url()))
        .await
        .unwrap();
    let (mut site, mut full) = (Duration::MAX, Duration::MAX);
    for _ in 0..5 {
        let t = Instant::now();
        let mut after = None;
        loop {
            let (docs, complete) = store.site_page(edge_id, after, 1000).await.unwrap();
            after = docs.last().map(|d| d.id).or(after);
            if complete {
                break;
            }
        }
        store.site_ids(edge_id).await.unwrap();
        site = site.min(t.elapsed());
        let t = Instant::now();
        let mut cursor = 0;
        while let Some(last) = store.changes_since(cursor, 1000).await.unwrap().last() {
            cursor = last.seq;
        }
        full = full.min(t.elapsed());
    }
    store.close().await;
    (site, full)
}

async fn site_snapshot() {
    use outpost::proto::ReplicaScope;
    outpost::certs::install_crypto_provider();
    let docs = env_usize("BENCH_DOCS", 100_000);
    let dir = tempfile::tempdir().unwrap();
    outpost::certs::init_dev(
        &dir.path().join("certs"),
        &["localhost".into(), "127.0.0.1".into()],
        false,
    )
    .unwrap();
    let master_cfg = config(dir.path(), "master");
    let (edge_id, secret) = site_among(&master_cfg, docs, 100).await;
    let edge = (edge_id, secret.as_str());
    let (site_read, full_read) = master_reads(&master_cfg, edge_id).await;
    println!(
        "site reads     {:>8.2} ms | full feed reads {:>8.0} ms  ratio {:.4} (the master's store alone)",
        site_read.as_secs_f64() * 1e3,
        full_read.as_secs_f64() * 1e3,
        site_read.as_secs_f64() / full_read.as_secs_f64(),
    );
    let (site, site_held) = fresh_edge_sync(
        dir.path(),
        &master_cfg,
        ReplicaScope::Site,
        edge,
        "edge-site",
    )
    .await;
    let (full, full_held) =
        fresh_edge_sync(dir.path(), &master_cfg, ReplicaScope::All, edge, "edge-all").await;
    println!(
        "site snapshot  {site_held:>7} docs  {:>8.1} ms | full snapshot {full_held} docs {:>8.0} ms  ratio {:.4} (target <= 0.05)",
        site.as_secs_f64() * 1e3,
        full.as_secs_f64() * 1e3,
        site.as_secs_f64() / full.as_secs_f64(),
    );
}

async fn snapshot_and_latency() {
    {
        outpost::certs::install_crypto_provider();
        let docs = env_usize("BENCH_DOCS", 100_000);
        let changes = env_usize("BENCH_CHANGES", 3_000);
        let dir = tempfile::tempdir().unwrap();
        outpost::certs::init_dev(
            &dir.path().join("certs"),
            &["localhost".into(), "127.0.0.1".into()],
            false,
        )
        .unwrap();

        // The master's data: one edge location and `docs` modules.
        let master_cfg = config(dir.path(), "master");
        let store = Store::open(&StoreOptions::new(master_cfg.database_url()))
            .await
            .unwrap();
        let edge_id = new_id();
        let site = outpost::admin::SiteFile {
            edges: vec![
                serde_json::from_value::<EdgeLocation>(
                    serde_json::json!({"id": edge_id, "name": "bench"}),
                )
                .unwrap(),
            ],
            ..Default::default()
        };
        let secret = outpost::admin::import(&store, &site, &Default::default())
            .await
            .unwrap()
            .secrets[0]
            .2
            .expose()
            .to_owned();
        let modules: Vec<Module> = (0..docs).map(module).collect();
        for chunk in modules.chunks(1000) {
            let writes: Vec<Write> = chunk
                .iter()
                .map(|m| Write::put(m, Expect::Absent))
                .collect();
            store.apply(&writes).await.unwrap();
        }
        store.close().await;

        // The full copy: this case measures the whole feed.
        let master = outpost::master::start(Config {
            replica_scope: outpost::proto::ReplicaScope::All,
            ..master_cfg.clone()
        })
        .await
        .unwrap();
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
            let c = master
                .store
                .apply(&[Write::put(&m, Expect::Rev(doc.rev))])
                .await
                .unwrap();
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
    }
}

/// One generated event row: (id, edge_id, at_ms, module_id, kind, key, epoch, body).
fn event_row(
    i: usize,
    edge_id: uuid::Uuid,
    module: uuid::Uuid,
) -> (String, String, i64, String, String) {
    (
        new_id().to_string(),
        edge_id.to_string(),
        1_700_000_000_000 + i as i64,
        module.to_string(),
        serde_json::json!({"method": "set", "ok": true, "result": format!("\"{i}\"")}).to_string(),
    )
}

async fn sqlite_pool(path: &std::path::Path) -> sqlx::SqlitePool {
    let options = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true)
        .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
        .synchronous(sqlx::sqlite::SqliteSynchronous::Full)
        .busy_timeout(Duration::from_secs(30));
    sqlx::sqlite::SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(options)
        .await
        .unwrap()
}

/// Fills an events table (the edge's, or the baseline's) with `n` unsynced
/// rows, 500 per statement, in one transaction.
async fn fill_events(pool: &sqlx::SqlitePool, n: usize, edge_id: uuid::Uuid) {
    let modules: Vec<uuid::Uuid> = (0..100).map(|_| new_id()).collect();
    let mut tx = pool.begin().await.unwrap();
    for start in (0..n).step_by(500) {
        let end = (start + 500).min(n);
        let mut q = sqlx::QueryBuilder::new(
            "INSERT INTO events (id, edge_id, at_ms, module_id, kind, key, epoch, body, synced) ",
        );
        q.push_values(start..end, |mut b, i| {
            let (id, edge, at, module, body) = event_row(i, edge_id, modules[i % modules.len()]);
            b.push_bind(id)
                .push_bind(edge)
                .push_bind(at)
                .push_bind(module)
                .push_bind("exec")
                .push_bind(None::<String>)
                .push_bind(Some(1i64))
                .push_bind(body)
                .push_bind(false);
        });
        q.build().execute(&mut *tx).await.unwrap();
    }
    tx.commit().await.unwrap();
}

/// The baseline: the same rows copied from one plain SQLite file to
/// another in the same batches: select a page of unsynced rows, insert
/// them one statement per row in one transaction, mark the page synced.
async fn plain_event_copy(
    dir: &std::path::Path,
    n: usize,
    batch: usize,
    edge_id: uuid::Uuid,
) -> Duration {
    const TABLE: &str = "CREATE TABLE events (seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE, \
        edge_id TEXT NOT NULL, at_ms INTEGER NOT NULL, module_id TEXT, kind TEXT NOT NULL, key TEXT, \
        epoch INTEGER, body TEXT NOT NULL, synced INTEGER NOT NULL DEFAULT 0)";
    let edge = sqlite_pool(&dir.join("plain-edge.db")).await;
    let master = sqlite_pool(&dir.join("plain-master.db")).await;
    for pool in [&edge, &master] {
        pool.execute(TABLE).await.unwrap();
        pool.execute("CREATE INDEX events_unsynced ON events (synced, seq)")
            .await
            .unwrap();
    }
    fill_events(&edge, n, edge_id).await;
    type Row = (
        i64,
        String,
        String,
        i64,
        Option<String>,
        String,
        Option<String>,
        Option<i64>,
        String,
    );
    let t = Instant::now();
    let mut after = 0i64;
    loop {
        let rows: Vec<Row> = sqlx::query_as(
            "SELECT seq, id, edge_id, at_ms, module_id, kind, key, epoch, body FROM events \
             WHERE synced = 0 AND seq > $1 ORDER BY seq LIMIT $2",
        )
        .bind(after)
        .bind(batch as i64)
        .fetch_all(&edge)
        .await
        .unwrap();
        let Some(last) = rows.last().map(|r| r.0) else {
            break;
        };
        let mut tx = master.begin().await.unwrap();
        for r in &rows {
            sqlx::query(
                "INSERT INTO events (id, edge_id, at_ms, module_id, kind, key, epoch, body, synced) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 1) ON CONFLICT (id) DO NOTHING",
            )
            .bind(&r.1)
            .bind(&r.2)
            .bind(r.3)
            .bind(&r.4)
            .bind(&r.5)
            .bind(&r.6)
            .bind(r.7)
            .bind(&r.8)
            .execute(&mut *tx)
            .await
            .unwrap();
        }
        tx.commit().await.unwrap();
        sqlx::query("UPDATE events SET synced = 1 WHERE synced = 0 AND seq > $1 AND seq <= $2")
            .bind(after)
            .bind(last)
            .execute(&edge)
            .await
            .unwrap();
        after = last;
    }
    let took = t.elapsed();
    let copied: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM events")
        .fetch_one(&master)
        .await
        .unwrap();
    assert_eq!(copied as usize, n, "the baseline copied every row");
    took
}

async fn passive_sync() {
    outpost::certs::install_crypto_provider();
    let n = env_usize("BENCH_EVENTS", 1_000_000);
    let batch = env_usize("BENCH_SYNC_BATCH", 1_000);
    let dir = tempfile::tempdir().unwrap();
    outpost::certs::init_dev(
        &dir.path().join("certs"),
        &["localhost".into(), "127.0.0.1".into()],
        false,
    )
    .unwrap();
    let master_cfg = Config {
        // The job's own timer stays out of the way: the pass is run below.
        sync_interval_ms: 3_600_000,
        ..config(dir.path(), "master")
    };
    let store = Store::open(&StoreOptions::new(master_cfg.database_url()))
        .await
        .unwrap();
    let edge_id = new_id();
    let site = outpost::admin::SiteFile {
        edges: vec![
            serde_json::from_value::<EdgeLocation>(
                serde_json::json!({"id": edge_id, "name": "bench"}),
            )
            .unwrap(),
        ],
        ..Default::default()
    };
    let secret = outpost::admin::import(&store, &site, &Default::default())
        .await
        .unwrap()
        .secrets[0]
        .2
        .expose()
        .to_owned();
    store.close().await;
    let master = outpost::master::start(master_cfg).await.unwrap();
    let edge_cfg = Config {
        edge_id: Some(edge_id),
        edge_secret: Some(SecretString::new(secret)),
        masters: vec![master.link_addr.to_string()],
        event_log_max: 2 * n as u64,
        // The edge's pusher stays out of the way too: it pushed its (empty)
        // log when the link came up and is not woken by rows written below.
        event_retry_ms: 3_600_000,
        ..config(dir.path(), "edge")
    };
    let edge = outpost::edge::start(edge_cfg.clone()).await.unwrap();
    let peer = loop {
        if let Some(p) = master.registry.peer(edge_id) {
            break p;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    // Let the connect-time push and replication settle before the log fills.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let t = Instant::now();
    let raw = sqlite_pool(&dir.path().join("edge/store.db")).await;
    fill_events(&raw, n, edge_id).await;
    raw.close().await;
    let fill = t.elapsed();
    assert_eq!(edge.store.event_counts().await.unwrap().0 as usize, n);

    let cfg = outpost::master::PassiveSync {
        interval: Duration::from_secs(3600),
        batch: batch as u32,
        step_sleep: Duration::ZERO,
    };
    let t = Instant::now();
    outpost::master::sync_edge(
        &master.store,
        &peer,
        edge_id,
        &outpost::control::Clock::system(),
        cfg,
        &tokio_util::sync::CancellationToken::new(),
    )
    .await
    .unwrap();
    let took = t.elapsed();
    assert_eq!(
        edge.store.event_counts().await.unwrap().0,
        0,
        "every event marked synced"
    );
    assert!(master.store.sync_cursor(edge_id).await.unwrap() >= n as i64);
    edge.stop().await;
    master.stop().await;
    let collected: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM events")
        .fetch_one(&sqlite_pool(&dir.path().join("master/store.db")).await)
        .await
        .unwrap();
    assert_eq!(collected as usize, n, "every event stored once");

    let plain = plain_event_copy(dir.path(), n, batch, edge_id).await;
    println!(
        "passive sync   {n:>7} events in batches of {batch}: {:>7.0} ms  {:>9.0} events/s | plain SQL copy {:>7.0} ms {:>9.0} events/s  ratio {:.2} (target >= 50,000/s; log filled in {:.0} ms)",
        took.as_secs_f64() * 1e3,
        n as f64 / took.as_secs_f64(),
        plain.as_secs_f64() * 1e3,
        n as f64 / plain.as_secs_f64(),
        plain.as_secs_f64() / took.as_secs_f64(),
        fill.as_secs_f64() * 1e3,
    );
}
