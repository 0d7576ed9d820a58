//! Test support shared by the test binaries: stores on a real SQLite file
//! and a real PostgreSQL server.
//!
//! PostgreSQL tests read `TEST_PG_URL`. Without it they say so loudly and
//! pass, except under CI (`CI` set), where a skip is a failure.

// Each test binary uses a different part of this module.
#![allow(dead_code)]

use outpost::store::{Store, StoreOptions};

/// A store and what to clean up after it.
pub struct TestStore {
    pub store: Store,
    _dir: Option<tempfile::TempDir>,
    pg: Option<(String, String)>,
}

impl TestStore {
    pub async fn sqlite() -> TestStore {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("test.db").display());
        let store = Store::open(&StoreOptions::new(url)).await.unwrap();
        TestStore {
            store,
            _dir: Some(dir),
            pg: None,
        }
    }

    /// A store in a fresh schema of the test database, or `None` when no
    /// PostgreSQL URL is configured outside CI.
    pub async fn postgres() -> Option<TestStore> {
        let url = pg_url()?;
        let schema = format!("outpost_t_{}", uuid::Uuid::now_v7().simple());
        let mut options = StoreOptions::new(url.clone());
        options.pg_schema = Some(schema.clone());
        let store = Store::open(&options).await.unwrap();
        Some(TestStore {
            store,
            _dir: None,
            pg: Some((url, schema)),
        })
    }

    /// The PostgreSQL schema of this store.
    pub fn schema(&self) -> Option<&str> {
        self.pg.as_ref().map(|(_, s)| s.as_str())
    }

    /// Closes the store and drops its PostgreSQL schema.
    pub async fn cleanup(self) {
        self.store.close().await;
        if let Some((url, schema)) = self.pg {
            use sqlx::Executor as _;
            let pool = sqlx::PgPool::connect(&url).await.unwrap();
            pool.execute(sqlx::AssertSqlSafe(format!("DROP SCHEMA {schema} CASCADE")))
                .await
                .unwrap();
            pool.close().await;
        }
    }
}

pub fn pg_url() -> Option<String> {
    match std::env::var("TEST_PG_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            if std::env::var_os("CI").is_some() {
                panic!("TEST_PG_URL is not set under CI: PostgreSQL tests must run");
            }
            eprintln!("SKIPPED: TEST_PG_URL is not set, PostgreSQL test not run");
            None
        }
    }
}

/// Runs each named `async fn(&Store)` once on SQLite and once on PostgreSQL.
#[macro_export]
macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let s = $crate::support::TestStore::sqlite().await;
                    super::$name(&s.store).await;
                    s.cleanup().await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let Some(s) = $crate::support::TestStore::postgres().await else { return };
                    super::$name(&s.store).await;
                    s.cleanup().await;
                }
            )*
        }
    };
}

/// Driver names the example site uses, for validation without a modules dir.
pub fn example_drivers() -> outpost::model::ValidationContext {
    outpost::model::ValidationContext {
        drivers: Some(
            ["pjlink.lua", "line.lua", "room.lua"]
                .into_iter()
                .map(String::from)
                .collect(),
        ),
        dir: None,
    }
}

pub fn example_site() -> outpost::admin::SiteFile {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/config/example-site.json"
    ))
    .unwrap();
    outpost::admin::parse_site(&text).unwrap()
}
