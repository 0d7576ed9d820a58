//! Store benchmark: the document store against a plain sqlx loop over an
//! equivalent table, in the same run, on SQLite and (when `TEST_PG_URL` is
//! set) PostgreSQL.
//!
//! Figures: batched insert, one insert per transaction, point reads, full
//! reads, change-feed scan from zero, and master boot loading with 100,000
//! modules in 10,000 systems. Each is printed as documents per second and as
//! a ratio to the baseline.
//!
//! Run: `cargo bench --bench store` (sizes: BENCH_DOCS, default 100000;
//! BENCH_SINGLE_DOCS for one-per-transaction inserts, default 20000).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    unreachable_pub,
    missing_debug_implementations,
    reason = "tests and benchmarks fail loudly by design, and their items are not an API"
)]

use std::time::{Duration, Instant};

use outpost::model::{ControlSystem, EdgeLocation, Module, new_id};
use outpost::store::{Expect, Store, StoreOptions, Write};
use sqlx::{AssertSqlSafe, Executor as _};
use uuid::Uuid;

const BATCH: usize = 1000;

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
        enabled: true,
    }
}

struct Row {
    id: String,
    body: String,
}

/// The baseline: a plain table with the same columns, written and read with
/// straightforward sqlx calls.
enum Plain {
    Sqlite(sqlx::SqlitePool),
    Postgres(sqlx::PgPool),
}

const PLAIN_TABLE: &str = "CREATE TABLE plain (id TEXT PRIMARY KEY, kind TEXT NOT NULL, rev BIGINT NOT NULL, \
     seq BIGINT NOT NULL, deleted BOOLEAN NOT NULL, owner TEXT, body TEXT NOT NULL)";
const PLAIN_INSERT: &str = "INSERT INTO plain (id, kind, rev, seq, deleted, owner, body) VALUES ($1, 'module', 1, $2, FALSE, NULL, $3)";
const PLAIN_GET: &str = "SELECT id, kind, rev, seq, deleted, owner, body FROM plain WHERE id = $1";
const PLAIN_SCAN: &str = "SELECT id, kind, rev, seq, deleted, owner, body FROM plain WHERE seq > $1 ORDER BY seq LIMIT $2";
const PLAIN_ALL: &str = "SELECT id, kind, rev, seq, deleted, owner, body FROM plain ORDER BY id";

type PlainRow = (String, String, i64, i64, bool, Option<String>, String);

macro_rules! on_plain {
    ($plain:expr, $pool:ident => $body:expr) => {
        match $plain {
            Plain::Sqlite($pool) => $body,
            Plain::Postgres($pool) => $body,
        }
    };
}

impl Plain {
    async fn reset(&self) {
        on_plain!(self, pool => {
            pool.execute("DROP TABLE IF EXISTS plain").await.unwrap();
            pool.execute(PLAIN_TABLE).await.unwrap();
            pool.execute("CREATE UNIQUE INDEX plain_seq ON plain (seq)").await.unwrap();
        })
    }

    async fn insert(&self, rows: &[Row], batch: usize, first_seq: i64) {
        on_plain!(self, pool => {
            let mut seq = first_seq;
            for chunk in rows.chunks(batch) {
                let mut tx = pool.begin().await.unwrap();
                for r in chunk {
                    seq += 1;
                    sqlx::query(PLAIN_INSERT).bind(&r.id).bind(seq).bind(&r.body).execute(&mut *tx).await.unwrap();
                }
                tx.commit().await.unwrap();
            }
        })
    }

    async fn get(&self, ids: &[String]) -> usize {
        on_plain!(self, pool => {
            let mut n = 0;
            for id in ids {
                let row: Option<PlainRow> = sqlx::query_as(PLAIN_GET).bind(id).fetch_optional(pool).await.unwrap();
                n += row.is_some() as usize;
            }
            n
        })
    }

    async fn scan(&self) -> usize {
        on_plain!(self, pool => {
            let mut cursor = 0i64;
            let mut n = 0;
            loop {
                let rows: Vec<PlainRow> = sqlx::query_as(PLAIN_SCAN).bind(cursor).bind(1000i64).fetch_all(pool).await.unwrap();
                let Some(last) = rows.last() else { break };
                cursor = last.3;
                n += rows.len();
            }
            n
        })
    }

    async fn all(&self) -> usize {
        on_plain!(self, pool => {
            let rows: Vec<PlainRow> = sqlx::query_as(PLAIN_ALL).fetch_all(pool).await.unwrap();
            rows.len()
        })
    }
}

struct Line {
    what: String,
    docs: usize,
    ours: Duration,
    base: Duration,
}

impl Line {
    fn print(&self, backend: &str) {
        let rate = |d: Duration| self.docs as f64 / d.as_secs_f64();
        println!(
            "{backend:<9} {:<34} {:>7} docs  {:>10.0} docs/s  {:>8.1} ms  | plain sqlx {:>10.0} docs/s  ratio {:>5.2}",
            self.what,
            self.docs,
            rate(self.ours),
            self.ours.as_secs_f64() * 1e3,
            rate(self.base),
            self.base.as_secs_f64() / self.ours.as_secs_f64(),
        );
    }
}

async fn timed<T>(f: impl std::future::Future<Output = T>) -> (Duration, T) {
    let t = Instant::now();
    let v = f.await;
    (t.elapsed(), v)
}

async fn bench(backend: &str, store: Store, plain: Plain) {
    let docs = env_usize("BENCH_DOCS", 100_000);
    let single = env_usize("BENCH_SINGLE_DOCS", 20_000);
    let modules: Vec<Module> = (0..docs).map(module).collect();
    let rows: Vec<Row> = modules
        .iter()
        .map(|m| Row {
            id: m.id.to_string(),
            body: serde_json::to_string(m).unwrap(),
        })
        .collect();
    plain.reset().await;

    // Batched insert.
    let (ours, ()) = timed(async {
        for chunk in modules.chunks(BATCH) {
            let writes: Vec<Write> = chunk
                .iter()
                .map(|m| Write::put(m, Expect::Absent))
                .collect();
            store.apply(&writes).await.unwrap();
        }
    })
    .await;
    let (base, ()) = timed(plain.insert(&rows, BATCH, 0)).await;
    Line {
        what: format!("insert, batches of {BATCH}"),
        docs,
        ours,
        base,
    }
    .print(backend);

    // One document per transaction.
    let extra: Vec<Module> = (docs..docs + single).map(module).collect();
    let extra_rows: Vec<Row> = extra
        .iter()
        .map(|m| Row {
            id: m.id.to_string(),
            body: serde_json::to_string(m).unwrap(),
        })
        .collect();
    let (ours, ()) = timed(async {
        for m in &extra {
            store.apply(&[Write::put(m, Expect::Absent)]).await.unwrap();
        }
    })
    .await;
    let (base, ()) = timed(plain.insert(&extra_rows, 1, docs as i64)).await;
    Line {
        what: "insert, one per transaction".into(),
        docs: single,
        ours,
        base,
    }
    .print(backend);

    // Point reads of 10,000 ids.
    let sample: Vec<Uuid> = modules
        .iter()
        .step_by((docs / 10_000).max(1))
        .map(|m| m.id)
        .collect();
    let sample_text: Vec<String> = sample.iter().map(Uuid::to_string).collect();
    let (ours, n) = timed(async {
        let mut n = 0;
        for id in &sample {
            n += store.get(*id).await.unwrap().is_some() as usize;
        }
        n
    })
    .await;
    assert_eq!(n, sample.len());
    let (base, n) = timed(plain.get(&sample_text)).await;
    assert_eq!(n, sample.len());
    Line {
        what: "read back, one get per id".into(),
        docs: sample.len(),
        ours,
        base,
    }
    .print(backend);

    // Everything back, parsed into typed documents.
    let total = docs + single;
    let (ours, n) = timed(async {
        let all = store.list_all(outpost::model::Kind::Module).await.unwrap();
        let parsed: Vec<Module> = all.iter().map(|d| d.parse().unwrap()).collect();
        parsed.len()
    })
    .await;
    assert_eq!(n, total);
    let (base, n) = timed(plain.all()).await;
    assert_eq!(n, total);
    Line {
        what: "read back all (list_all + parse)".into(),
        docs: total,
        ours,
        base,
    }
    .print(backend);

    // Change feed from zero.
    let (ours, n) = timed(async {
        let mut cursor = 0;
        let mut n = 0;
        loop {
            let page = store.changes_since(cursor, 1000).await.unwrap();
            let Some(last) = page.last() else { break };
            cursor = last.seq;
            n += page.len();
        }
        n
    })
    .await;
    assert_eq!(n, total);
    let (base, n) = timed(plain.scan()).await;
    assert_eq!(n, total);
    Line {
        what: "changes_since(0), pages of 1000".into(),
        docs: total,
        ours,
        base,
    }
    .print(backend);
}

/// Master boot loading: 100,000 modules in 10,000 systems, a fifth of them
/// at 20 edge locations; compared with a plain select of the same rows.
async fn bench_boot(backend: &str, store: Store, plain: Plain) {
    let systems_n = env_usize("BENCH_DOCS", 100_000) / 10;
    let edges: Vec<EdgeLocation> = (0..20)
        .map(|i| {
            serde_json::from_value(serde_json::json!({"id": new_id(), "name": format!("site {i}")}))
                .unwrap()
        })
        .collect();
    let mut writes: Vec<Write> = edges
        .iter()
        .map(|e| Write::put(e, Expect::Absent))
        .collect();
    let mut plain_rows = Vec::new();
    for s in 0..systems_n {
        let ms: Vec<Module> = (0..10).map(|i| module(s * 10 + i)).collect();
        let system = ControlSystem {
            id: new_id(),
            name: format!("room {s}"),
            description: String::new(),
            edge_id: (s % 5 == 0).then(|| edges[s % edges.len()].id),
            module_ids: ms.iter().map(|m| m.id).collect(),
            settings: Default::default(),
            stopped: false,
        };
        for m in &ms {
            writes.push(Write::put(m, Expect::Absent));
            plain_rows.push(Row {
                id: m.id.to_string(),
                body: serde_json::to_string(m).unwrap(),
            });
        }
        writes.push(Write::put(&system, Expect::Absent));
        plain_rows.push(Row {
            id: system.id.to_string(),
            body: serde_json::to_string(&system).unwrap(),
        });
    }
    for chunk in writes.chunks(BATCH) {
        store.apply(chunk).await.unwrap();
    }
    plain.reset().await;
    plain.insert(&plain_rows, BATCH, 0).await;

    let (ours, plan) = timed(outpost::boot::plan_master(&store)).await;
    let plan = plan.unwrap();
    let modules = plan.master_modules.len() + plan.edge_modules.len();
    assert_eq!(modules, systems_n * 10);
    let (base, n) = timed(plain.all()).await;
    assert_eq!(n, plain_rows.len());
    Line {
        what: format!("boot plan ({} modules)", modules),
        docs: plain_rows.len(),
        ours,
        base,
    }
    .print(backend);
    println!(
        "{backend:<9} boot plan steps: {} (target: 100,000 modules in <= 2 s)",
        plan.timings
    );
}

async fn sqlite_pair(dir: &std::path::Path, name: &str) -> (Store, Plain) {
    let store = Store::open(&StoreOptions::new(format!(
        "sqlite://{}",
        dir.join(format!("{name}.db")).display()
    )))
    .await
    .unwrap();
    // The baseline uses the same SQLite settings as the store.
    let options = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(dir.join(format!("{name}-plain.db")))
        .create_if_missing(true)
        .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
        .synchronous(sqlx::sqlite::SqliteSynchronous::Full);
    let pool = sqlx::sqlite::SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(options)
        .await
        .unwrap();
    (store, Plain::Sqlite(pool))
}

async fn pg_pair(url: &str) -> (Store, Plain, String) {
    let schema = format!("outpost_bench_{}", Uuid::now_v7().simple());
    let mut options = StoreOptions::new(url);
    options.pg_schema = Some(schema.clone());
    let store = Store::open(&options).await.unwrap();
    let plain_schema = format!("{schema}_plain");
    let admin = sqlx::PgPool::connect(url).await.unwrap();
    admin
        .execute(AssertSqlSafe(format!("CREATE SCHEMA {plain_schema}")))
        .await
        .unwrap();
    let connect: sqlx::postgres::PgConnectOptions = url.parse().unwrap();
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(8)
        .connect_with(connect.options([("search_path", plain_schema.as_str())]))
        .await
        .unwrap();
    (store, Plain::Postgres(pool), schema)
}

async fn drop_pg(url: &str, schema: &str) {
    let admin = sqlx::PgPool::connect(url).await.unwrap();
    for s in [schema.to_owned(), format!("{schema}_plain")] {
        admin
            .execute(AssertSqlSafe(format!("DROP SCHEMA IF EXISTS {s} CASCADE")))
            .await
            .unwrap();
    }
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        println!("# outpost store benchmark (ratio = plain sqlx time / store time; > 1 means the store is faster)");
        let dir = tempfile::tempdir().unwrap();
        let (store, plain) = sqlite_pair(dir.path(), "docs").await;
        bench("sqlite", store, plain).await;
        let (store, plain) = sqlite_pair(dir.path(), "boot").await;
        bench_boot("sqlite", store, plain).await;
        match std::env::var("TEST_PG_URL") {
            Ok(url) if !url.is_empty() => {
                let (store, plain, schema) = pg_pair(&url).await;
                bench("postgres", store, plain).await;
                drop_pg(&url, &schema).await;
                let (store, plain, schema) = pg_pair(&url).await;
                bench_boot("postgres", store, plain).await;
                drop_pg(&url, &schema).await;
            }
            _ => println!("postgres  SKIPPED: set TEST_PG_URL to benchmark PostgreSQL"),
        }
    });
}
