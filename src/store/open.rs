//! Opening a store: the URL, the connection pools of each backend, the
//! migrations, this store's id; and the URL as it may be logged.

use std::str::FromStr;
use std::time::Duration;

use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{AssertSqlSafe, SqlSafeStr};
use uuid::Uuid;

use super::{Backend, Store, StoreError, StoreOptions, on_writer, sql};

impl Store {
    /// Opens (creating if needed) the store at `options.url` and applies the
    /// backend's migrations.
    pub async fn open(options: &StoreOptions) -> Result<Store, StoreError> {
        let display_url = redact_url(&options.url);
        let backend = if options.url.starts_with("sqlite:") {
            open_sqlite(options, &display_url).await?
        } else if options.url.starts_with("postgres:") || options.url.starts_with("postgresql:") {
            open_postgres(options, &display_url).await?
        } else {
            return Err(StoreError::Url {
                url: display_url,
                reason: "expected sqlite://… or postgres://…".into(),
            });
        };
        let mut store = Store {
            backend: std::sync::Arc::new(backend),
            display_url,
            store_id: Uuid::nil(),
            committed: std::sync::Arc::new(tokio::sync::watch::channel(0).0),
            control_changes: tokio::sync::broadcast::channel(256).0,
            event_log_size: std::sync::Arc::new(std::sync::atomic::AtomicI64::new(-1)),
            fence: std::sync::Arc::new(super::cluster::Fence::default()),
        };
        store.store_id = store.init_store_id().await?;
        store.committed.send_replace(store.last_seq().await?);
        Ok(store)
    }

    /// Reads this store's id, creating it on first open.
    async fn init_store_id(&self) -> Result<Uuid, StoreError> {
        let value: String = on_writer!(self, pool => {
            sqlx::query(sql::INIT_STORE_ID).bind(Uuid::now_v7().to_string()).execute(pool).await?;
            sqlx::query_scalar(sql::GET_STORE_ID).fetch_one(pool).await?
        });
        Uuid::parse_str(&value).map_err(|_| StoreError::Corrupt {
            id: Uuid::nil(),
            reason: format!("bad store id '{value}'"),
        })
    }
}

/// How long a query waits for a PostgreSQL connection.
const PG_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(3);

/// Each backend's migrations, in order; a migration is never edited once
/// released, only followed by another.
const SQLITE_MIGRATIONS: &[(&str, &str)] = &[
    (
        "documents",
        include_str!("migrations/sqlite/0001_documents.sql"),
    ),
    (
        "control",
        include_str!("migrations/sqlite/0002_control.sql"),
    ),
    (
        "replication",
        include_str!("migrations/sqlite/0003_replication.sql"),
    ),
    (
        "credential revisions",
        include_str!("migrations/sqlite/0004_credential_rev.sql"),
    ),
    (
        "control log author",
        include_str!("migrations/sqlite/0005_control_log_by.sql"),
    ),
    (
        "events coalesce index",
        include_str!("migrations/sqlite/0006_events_coalesce.sql"),
    ),
    (
        "refused events",
        include_str!("migrations/sqlite/0007_events_refused.sql"),
    ),
    (
        "site audit",
        include_str!("migrations/sqlite/0008_site_audit.sql"),
    ),
    (
        "credential lifecycle",
        include_str!("migrations/sqlite/0009_credential_lifecycle.sql"),
    ),
    (
        "site index",
        include_str!("migrations/sqlite/0010_site_index.sql"),
    ),
    (
        "edge links",
        include_str!("migrations/sqlite/0011_edge_links.sql"),
    ),
    (
        "events stored",
        include_str!("migrations/sqlite/0012_events_stored.sql"),
    ),
    (
        "link ticket secret",
        include_str!("migrations/sqlite/0013_link_ticket_secret.sql"),
    ),
];
const POSTGRES_MIGRATIONS: &[(&str, &str)] = &[
    (
        "documents",
        include_str!("migrations/postgres/0001_documents.sql"),
    ),
    (
        "control",
        include_str!("migrations/postgres/0002_control.sql"),
    ),
    (
        "replication",
        include_str!("migrations/postgres/0003_replication.sql"),
    ),
    (
        "credential revisions",
        include_str!("migrations/postgres/0004_credential_rev.sql"),
    ),
    (
        "control log author",
        include_str!("migrations/postgres/0005_control_log_by.sql"),
    ),
    (
        "events coalesce index",
        include_str!("migrations/postgres/0006_events_coalesce.sql"),
    ),
    (
        "refused events",
        include_str!("migrations/postgres/0007_events_refused.sql"),
    ),
    (
        "site audit",
        include_str!("migrations/postgres/0008_site_audit.sql"),
    ),
    (
        "credential lifecycle",
        include_str!("migrations/postgres/0009_credential_lifecycle.sql"),
    ),
    (
        "cluster",
        include_str!("migrations/postgres/0010_cluster.sql"),
    ),
    (
        "site index",
        include_str!("migrations/postgres/0011_site_index.sql"),
    ),
    (
        "edge links",
        include_str!("migrations/postgres/0012_edge_links.sql"),
    ),
    (
        "events stored",
        include_str!("migrations/postgres/0013_events_stored.sql"),
    ),
    (
        "link ticket secret",
        include_str!("migrations/postgres/0014_link_ticket_secret.sql"),
    ),
];

fn migrator(files: &[(&'static str, &'static str)]) -> Migrator {
    let migrations = files
        .iter()
        .enumerate()
        .map(|(i, (description, sql))| {
            Migration::new(
                i as i64 + 1,
                (*description).into(),
                MigrationType::Simple,
                sql.into_sql_str(),
                false,
            )
        })
        .collect();
    Migrator::with_migrations(migrations)
}

/// The database file a `sqlite://` URL names; `None` for other URLs and
/// for in-memory databases.
pub fn sqlite_file(url: &str) -> Option<std::path::PathBuf> {
    if !url.starts_with("sqlite:") {
        return None;
    }
    let connect = SqliteConnectOptions::from_str(url).ok()?;
    let file = connect.get_filename();
    let name = file.to_string_lossy();
    (!name.is_empty() && name != ":memory:").then(|| file.to_path_buf())
}

/// Whether the writer connection may go back to the pool: only outside
/// any transaction. SQLite rolls a transaction back by itself on some
/// errors (a full disk, for one); sqlx's own count of open transactions
/// then stays up, and its later `ROLLBACK TO SAVEPOINT` leaves SQLite in a
/// write transaction that nothing ever commits: every write after it is
/// invisible to other processes, lost at exit, and the write lock is held
/// for good. Closing such a connection rolls it back and frees the lock;
/// the pool opens a fresh one.
async fn leaves_no_transaction(conn: &mut sqlx::SqliteConnection) -> Result<bool, sqlx::Error> {
    use sqlx::Connection;
    // The rollback of a dropped transaction is queued, not done: let the
    // connection's worker catch up before reading its count.
    conn.ping().await?;
    let clean = !conn.is_in_transaction();
    if !clean {
        tracing::warn!(
            "a database connection was left inside a transaction after an error; reopening it"
        );
    }
    Ok(clean)
}

async fn open_sqlite(options: &StoreOptions, display_url: &str) -> Result<Backend, StoreError> {
    let connect = SqliteConnectOptions::from_str(&options.url)
        .map_err(|e| StoreError::Url {
            url: display_url.to_owned(),
            reason: e.to_string(),
        })?
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        // FULL: a committed write survives power loss, not only a crash.
        .synchronous(SqliteSynchronous::Full)
        .busy_timeout(Duration::from_secs(10))
        .foreign_keys(false);
    // The database holds link keys and device passwords: its directory
    // 0700, the file and its WAL and SHM 0600 (SQLite creates those two with
    // the mode of the database file, which is created here first).
    let file = connect.get_filename().to_path_buf();
    let in_memory = file.as_os_str().is_empty() || file.as_os_str() == ":memory:";
    if !in_memory {
        if let Some(dir) = file.parent()
            && !dir.as_os_str().is_empty()
        {
            crate::util::private_dir(dir).map_err(|source| StoreError::DataDir {
                path: dir.display().to_string(),
                source,
            })?;
        }
        crate::util::private_file(&file).map_err(|source| StoreError::DataDir {
            path: file.display().to_string(),
            source,
        })?;
        for suffix in ["-wal", "-shm"] {
            let mut side = file.clone().into_os_string();
            side.push(suffix);
            crate::util::tighten(std::path::Path::new(&side), 0o600);
        }
    }
    let writer = SqlitePoolOptions::new()
        .max_connections(1)
        .after_release(|conn, _| Box::pin(leaves_no_transaction(conn)))
        .connect_with(connect.clone())
        .await?;
    migrator(SQLITE_MIGRATIONS).run(&writer).await?;
    let reader = SqlitePoolOptions::new()
        .max_connections(options.max_connections.max(1))
        .connect_with(connect.read_only(true))
        .await?;
    Ok(Backend::Sqlite { writer, reader })
}

async fn open_postgres(options: &StoreOptions, display_url: &str) -> Result<Backend, StoreError> {
    let mut connect = PgConnectOptions::from_str(&options.url).map_err(|e| StoreError::Url {
        url: display_url.to_owned(),
        reason: e.to_string(),
    })?;
    if let Some(schema) = &options.pg_schema {
        if schema.is_empty()
            || !schema
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        {
            return Err(StoreError::Url {
                url: display_url.to_owned(),
                reason: format!("schema name '{schema}' must be lower-case letters, digits and _"),
            });
        }
        let admin = PgPoolOptions::new()
            .max_connections(1)
            .connect_with(connect.clone())
            .await?;
        sqlx::query(AssertSqlSafe(sql::create_schema(schema)))
            .execute(&admin)
            .await?;
        admin.close().await;
        connect = connect.options([("search_path", schema.as_str())]);
    }
    if let Some(ms) = options.idle_in_transaction_ms {
        connect = connect.options([("idle_in_transaction_session_timeout", ms.to_string())]);
    }
    let pool = PgPoolOptions::new()
        .max_connections(options.max_connections.max(2))
        // With the server unreachable, every query waits this long for a
        // connection: short enough that the API answers 503 within a load
        // balancer's patience, long enough for a busy pool to free one.
        .acquire_timeout(PG_ACQUIRE_TIMEOUT)
        .connect_with(connect)
        .await?;
    migrator(POSTGRES_MIGRATIONS).run(&pool).await?;
    Ok(Backend::Postgres(pool))
}

/// Removes the password from a database URL so it can be logged.
fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let (authority, tail) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split(':').next().unwrap_or("");
            let tail = redact_query_password(tail);
            if userinfo.contains(':') {
                format!("{scheme}://{user}:***@{host}{tail}")
            } else {
                format!("{scheme}://{user}@{host}{tail}")
            }
        }
        None => format!("{scheme}://{authority}{}", redact_query_password(tail)),
    }
}

fn redact_query_password(tail: &str) -> String {
    let Some((path, query)) = tail.split_once('?') else {
        return tail.to_owned();
    };
    let query: Vec<String> = query
        .split('&')
        .map(|kv| match kv.split_once('=') {
            Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
            _ => kv.to_owned(),
        })
        .collect();
    format!("{path}?{}", query.join("&"))
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn passwords_never_reach_logs() {
        for (url, want) in [
            (
                "postgres://u:secret@h:5432/db",
                "postgres://u:***@h:5432/db",
            ),
            ("postgres://u@h/db", "postgres://u@h/db"),
            (
                "postgres://h/db?password=secret&x=1",
                "postgres://h/db?password=***&x=1",
            ),
            ("sqlite://data/master.db", "sqlite://data/master.db"),
        ] {
            assert_eq!(redact_url(url), want, "{url}");
        }
    }
}
