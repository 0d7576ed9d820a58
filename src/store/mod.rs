//! The document store: one API over SQLite and PostgreSQL, chosen by URL.
//! The only module that writes SQL.
//!
//! A document has a kind, an id (uuid v7), a JSON body, a per-document
//! revision, a store-wide sequence number assigned at commit, and a tombstone
//! flag. Writes are batches ([`Store::apply`]): all or nothing, each put or
//! delete naming the revision it expects, so a stale write is a
//! [`StoreError::Conflict`], never a silent overwrite.
//!
//! # The change feed never skips
//!
//! [`Store::changes_since`] returns documents and tombstones in sequence
//! order. The classic trap: with concurrent writers on PostgreSQL, a writer
//! that took sequence number 5 may commit after one that took 6, and a reader
//! that already saw 6 moves its cursor past 5 forever. Here every write batch
//! takes its numbers by incrementing one counter row (`outpost_meta.seq`) in
//! the same transaction; the row lock is held until commit, so the next
//! writer can only take higher numbers after the previous batch is visible.
//! Sequence numbers therefore become visible in order. The cost is that write
//! batches commit one at a time, which is what a configuration store needs.
//! SQLite has a single writer anyway; there we also use one writer
//! connection so that concurrent writers queue instead of failing with
//! "database is locked".

mod control;
mod events;
mod replica;
mod sql;

pub use control::{ControlRecord, ControlState};
pub use events::{Event, EventKind, LoggedEvent};
pub use replica::Replicated;

use std::str::FromStr;
use std::time::Duration;

use sqlx::migrate::{MigrateError, Migration, MigrationType, Migrator};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{AssertSqlSafe, SqlSafeStr};
use uuid::Uuid;

use crate::model::{Doc, Kind};

/// How to open a store.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// `sqlite://path/to/file.db` or `postgres://user@host/db`.
    pub url: String,
    /// PostgreSQL only: keep every table in this schema (created if missing).
    /// Tests and benchmarks use it to share one database without clashing.
    pub pg_schema: Option<String>,
    /// Connections in the pool (readers, for SQLite).
    pub max_connections: u32,
}

impl StoreOptions {
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            pg_schema: None,
            max_connections: 8,
        }
    }
}

/// One stored document (or tombstone).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Document {
    pub kind: String,
    pub id: Uuid,
    /// Starts at 1 and goes up by one at every put or delete.
    pub rev: i64,
    /// Store-wide, assigned at commit, strictly increasing in commit order.
    pub seq: i64,
    pub deleted: bool,
    pub owner: Option<Uuid>,
    /// JSON text (`null` for a tombstone).
    pub body: String,
}

impl Document {
    /// Parses the body as a typed document.
    pub fn parse<D: Doc>(&self) -> Result<D, StoreError> {
        serde_json::from_str(&self.body).map_err(|e| StoreError::Corrupt {
            id: self.id,
            reason: format!("not a valid {}: {e}", D::KIND),
        })
    }
}

/// What a write expects to find.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// The document must not exist (a tombstone counts as absent).
    Absent,
    /// The document must exist at exactly this revision.
    Rev(i64),
}

impl std::fmt::Display for Expect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Expect::Absent => f.write_str("no document"),
            Expect::Rev(r) => write!(f, "revision {r}"),
        }
    }
}

/// One operation of a write batch.
#[derive(Debug, Clone)]
pub enum Write {
    Put {
        kind: Kind,
        id: Uuid,
        expect: Expect,
        body: String,
        owner: Option<Uuid>,
        refs: Vec<Uuid>,
    },
    Delete {
        id: Uuid,
        expect: Expect,
    },
    /// Stores the link key of an edge location (not part of the feed).
    SetCredential {
        id: Uuid,
        link_key: Vec<u8>,
    },
}

impl Write {
    /// A put of a typed document, with the index keys it declares.
    pub fn put<D: Doc>(doc: &D, expect: Expect) -> Write {
        let index = doc.index();
        Write::Put {
            kind: D::KIND,
            id: doc.id(),
            expect,
            body: serde_json::to_string(doc).expect("documents always serialise"),
            owner: index.owner,
            refs: index.refs,
        }
    }

    fn in_feed(&self) -> bool {
        !matches!(self, Write::SetCredential { .. })
    }
}

/// The result of one put or delete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Committed {
    pub id: Uuid,
    pub rev: i64,
    pub seq: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("conflict on {id}: expected {expected}, found {}", describe_actual(*.actual))]
    Conflict {
        id: Uuid,
        expected: Expect,
        /// The current revision, or `None` when absent or deleted.
        actual: Option<i64>,
    },
    #[error("invalid database url '{url}': {reason}")]
    Url { url: String, reason: String },
    #[error("cannot create the data directory {path}")]
    DataDir {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("database error")]
    Database(#[from] sqlx::Error),
    #[error("database migration failed")]
    Migrate(#[from] MigrateError),
    #[error("control of edge location {edge_id} changed concurrently: expected epoch {}, found {}", describe_epoch(*.expected), describe_epoch(*.actual))]
    EpochConflict {
        edge_id: Uuid,
        expected: Option<i64>,
        actual: Option<i64>,
    },
    #[error("stored document {id} is corrupt: {reason}")]
    Corrupt { id: Uuid, reason: String },
}

fn describe_epoch(epoch: Option<i64>) -> String {
    epoch.map_or_else(|| "none".into(), |e| e.to_string())
}

fn describe_actual(actual: Option<i64>) -> String {
    match actual {
        None => "no document".into(),
        Some(r) => format!("revision {r}"),
    }
}

enum Backend {
    Sqlite {
        /// One connection: SQLite has one writer, and queueing here is better
        /// than SQLITE_BUSY under load.
        writer: SqlitePool,
        reader: SqlitePool,
    },
    Postgres(PgPool),
}

/// The document store. Cheap to clone (pools are shared).
#[derive(Clone)]
pub struct Store {
    backend: std::sync::Arc<Backend>,
    /// The URL with any password removed, for logs.
    display_url: String,
    /// This store's own id, made once when it is created.
    store_id: Uuid,
    /// The last sequence number committed through this process (watchers
    /// learn of new changes without polling).
    committed: std::sync::Arc<tokio::sync::watch::Sender<i64>>,
    /// Every change of controller committed through this process.
    control_changes: tokio::sync::broadcast::Sender<control::ControlRecord>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("url", &self.display_url)
            .finish()
    }
}

/// Runs `$body` with `$pool` bound to the backend's reading pool; the body is
/// written once and type-checked for each backend.
macro_rules! on_reader {
    ($self:expr, $pool:ident => $body:expr) => {
        match &*$self.backend {
            $crate::store::Backend::Sqlite { reader, .. } => {
                let $pool = reader;
                $body
            }
            $crate::store::Backend::Postgres(pg) => {
                let $pool = pg;
                $body
            }
        }
    };
}

/// As `on_reader!`, with the pool that writes.
macro_rules! on_writer {
    ($self:expr, $pool:ident => $body:expr) => {
        match &*$self.backend {
            $crate::store::Backend::Sqlite { writer, .. } => {
                let $pool = writer;
                $body
            }
            $crate::store::Backend::Postgres(pg) => {
                let $pool = pg;
                $body
            }
        }
    };
}

// Path-based exports so `store`'s submodules can use the macros.
pub(crate) use {on_reader, on_writer};

/// A row of `documents` as selected by [`sql::DOC_COLUMNS`].
type DocRow = (String, String, i64, i64, bool, Option<String>, String);

fn to_document(row: DocRow) -> Result<Document, StoreError> {
    let (id, kind, rev, seq, deleted, owner, body) = row;
    let parse = |s: &str| {
        Uuid::parse_str(s).map_err(|e| StoreError::Corrupt {
            id: Uuid::nil(),
            reason: format!("bad id '{s}': {e}"),
        })
    };
    Ok(Document {
        id: parse(&id)?,
        kind,
        rev,
        seq,
        deleted,
        owner: owner.as_deref().map(parse).transpose()?,
        body,
    })
}

fn to_documents(rows: Vec<DocRow>) -> Result<Vec<Document>, StoreError> {
    rows.into_iter().map(to_document).collect()
}

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

    /// This store's own id: a replica records the id of the store it copies,
    /// and resyncs from scratch when it changes.
    pub fn store_id(&self) -> Uuid {
        self.store_id
    }

    /// Follows the last sequence number committed through this process.
    /// Writes by other processes (an `outpost admin import`) are not seen
    /// here; readers that must see them also poll [`Store::last_seq`].
    pub fn subscribe_commits(&self) -> tokio::sync::watch::Receiver<i64> {
        self.committed.subscribe()
    }

    /// Follows every change of controller committed through this process
    /// (metrics, WebSocket subscribers). A receiver that lags loses the
    /// oldest; the audit log ([`Store::control_log`]) has them all.
    pub fn subscribe_control(&self) -> tokio::sync::broadcast::Receiver<ControlRecord> {
        self.control_changes.subscribe()
    }

    /// The URL without credentials.
    pub fn display_url(&self) -> &str {
        &self.display_url
    }

    pub fn is_postgres(&self) -> bool {
        matches!(*self.backend, Backend::Postgres(_))
    }

    /// Closes every connection (waits for checked-out ones).
    pub async fn close(&self) {
        match &*self.backend {
            Backend::Sqlite { writer, reader } => {
                reader.close().await;
                writer.close().await;
            }
            Backend::Postgres(pg) => pg.close().await,
        }
    }

    /// Applies a batch of writes in one transaction: all or nothing.
    pub async fn apply(&self, writes: &[Write]) -> Result<Vec<Committed>, StoreError> {
        on_writer!(self, pool => {
            let mut tx = pool.begin().await?;
            let feed_ops = writes.iter().filter(|w| w.in_feed()).count() as i64;
            let mut seq = if feed_ops > 0 {
                let end: i64 = sqlx::query_scalar(sql::BUMP_SEQ)
                    .bind(feed_ops)
                    .fetch_one(&mut *tx)
                    .await?;
                end - feed_ops
            } else {
                0
            };
            // Each put or delete, with the refs a put declares (None: delete).
            let mut done: Vec<(Committed, Option<&[Uuid]>)> = Vec::with_capacity(feed_ops as usize);
            let mut i = 0;
            while i < writes.len() {
                // Runs of new documents go in multi-row statements: one round
                // trip instead of one per document.
                let run = creation_run(&writes[i..]);
                if run > 1 {
                    let chunk = &writes[i..i + run];
                    let query = sql::insert_docs(run);
                    let mut q = sqlx::query_as::<_, (String, i64)>(AssertSqlSafe(query));
                    for (k, w) in chunk.iter().enumerate() {
                        let Write::Put { kind, id, body, owner, .. } = w else { unreachable!() };
                        q = q
                            .bind(id.to_string())
                            .bind(kind.as_str())
                            .bind(seq + 1 + k as i64)
                            .bind(owner.map(|o| o.to_string()))
                            .bind(body.as_str());
                    }
                    let returned: std::collections::HashMap<String, i64> =
                        q.fetch_all(&mut *tx).await?.into_iter().collect();
                    for w in chunk {
                        let Write::Put { id, refs, .. } = w else { unreachable!() };
                        seq += 1;
                        let id_text = id.to_string();
                        let Some(&rev) = returned.get(&id_text) else {
                            let actual: Option<(i64, bool)> = sqlx::query_as(sql::CURRENT_REV)
                                .bind(&id_text)
                                .fetch_optional(&mut *tx)
                                .await?;
                            return Err(conflict(*id, Expect::Absent, actual));
                        };
                        done.push((Committed { id: *id, rev, seq }, Some(refs.as_slice())));
                    }
                    i += run;
                    continue;
                }
                match &writes[i] {
                    Write::Put { kind, id, expect, body, owner, refs } => {
                        seq += 1;
                        let id_text = id.to_string();
                        let owner = owner.map(|o| o.to_string());
                        let rev: Option<i64> = match expect {
                            Expect::Absent => sqlx::query_scalar(sql::INSERT_DOC)
                                .bind(&id_text)
                                .bind(kind.as_str())
                                .bind(seq)
                                .bind(owner)
                                .bind(body)
                                .fetch_optional(&mut *tx)
                                .await?,
                            Expect::Rev(expected) => sqlx::query_scalar(sql::UPDATE_DOC)
                                .bind(&id_text)
                                .bind(kind.as_str())
                                .bind(seq)
                                .bind(owner)
                                .bind(body)
                                .bind(*expected)
                                .fetch_optional(&mut *tx)
                                .await?,
                        };
                        let Some(rev) = rev else {
                            let actual: Option<(i64, bool)> = sqlx::query_as(sql::CURRENT_REV)
                                .bind(&id_text)
                                .fetch_optional(&mut *tx)
                                .await?;
                            return Err(conflict(*id, *expect, actual));
                        };
                        done.push((Committed { id: *id, rev, seq }, Some(refs.as_slice())));
                    }
                    Write::Delete { id, expect } => {
                        seq += 1;
                        let id_text = id.to_string();
                        let rev: Option<i64> = match expect {
                            Expect::Rev(expected) => sqlx::query_scalar(sql::DELETE_DOC)
                                .bind(&id_text)
                                .bind(seq)
                                .bind(*expected)
                                .fetch_optional(&mut *tx)
                                .await?,
                            Expect::Absent => None,
                        };
                        let Some(rev) = rev else {
                            let actual: Option<(i64, bool)> = sqlx::query_as(sql::CURRENT_REV)
                                .bind(&id_text)
                                .fetch_optional(&mut *tx)
                                .await?;
                            return Err(conflict(*id, *expect, actual));
                        };
                        done.push((Committed { id: *id, rev, seq }, None));
                    }
                    Write::SetCredential { id, link_key } => {
                        sqlx::query(sql::UPSERT_CREDENTIAL)
                            .bind(id.to_string())
                            .bind(link_key.as_slice())
                            .bind(crate::util::unix_ms())
                            .execute(&mut *tx)
                            .await?;
                    }
                }
                i += 1;
            }
            // The reference index follows the documents: a brand-new document
            // has nothing to replace; an update or delete drops what it had.
            for (c, refs) in &done {
                let id_text = c.id.to_string();
                if c.rev > 1 {
                    sqlx::query(sql::DELETE_REFS).bind(&id_text).execute(&mut *tx).await?;
                }
                for targets in refs.unwrap_or_default().chunks(400) {
                    let mut q = sqlx::query(AssertSqlSafe(sql::insert_refs(targets.len()))).bind(&id_text);
                    for to in targets {
                        q = q.bind(to.to_string());
                    }
                    q.execute(&mut *tx).await?;
                }
            }
            tx.commit().await?;
            if let Some(last) = done.last() {
                self.committed.send_if_modified(|seq| {
                    let moved = last.0.seq > *seq;
                    *seq = (*seq).max(last.0.seq);
                    moved
                });
            }
            Ok(done.into_iter().map(|(c, _)| c).collect())
        })
    }

    /// A live document by id (tombstones are `None`).
    pub async fn get(&self, id: Uuid) -> Result<Option<Document>, StoreError> {
        let row: Option<DocRow> = on_reader!(self, pool => {
            sqlx::query_as(sql::GET_DOC).bind(id.to_string()).fetch_optional(pool).await?
        });
        Ok(row.map(to_document).transpose()?.filter(|d| !d.deleted))
    }

    /// Live documents by id, in id order; missing ids are left out.
    pub async fn get_many(&self, ids: &[Uuid]) -> Result<Vec<Document>, StoreError> {
        let mut out = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(500) {
            let query = sql::get_many(chunk.len());
            let rows: Vec<DocRow> = on_reader!(self, pool => {
                let mut q = sqlx::query_as(AssertSqlSafe(query));
                for id in chunk {
                    q = q.bind(id.to_string());
                }
                q.fetch_all(pool).await?
            });
            out.extend(to_documents(rows)?);
        }
        out.sort_by_key(|d| d.id);
        Ok(out)
    }

    /// Live documents of a kind in id order, `limit` at most, after `after`.
    pub async fn list(
        &self,
        kind: Kind,
        after: Option<Uuid>,
        limit: u32,
    ) -> Result<Vec<Document>, StoreError> {
        let after = after.map(|a| a.to_string()).unwrap_or_default();
        let rows: Vec<DocRow> = on_reader!(self, pool => {
            sqlx::query_as(sql::LIST_KIND)
                .bind(kind.as_str())
                .bind(after)
                .bind(i64::from(limit))
                .fetch_all(pool)
                .await?
        });
        to_documents(rows)
    }

    /// Every live document of a kind, in id order.
    pub async fn list_all(&self, kind: Kind) -> Result<Vec<Document>, StoreError> {
        let rows: Vec<DocRow> = on_reader!(self, pool => {
            sqlx::query_as(sql::LIST_ALL).bind(kind.as_str()).fetch_all(pool).await?
        });
        to_documents(rows)
    }

    /// Live documents of a kind owned by `owner` (the systems of an edge).
    pub async fn by_owner(&self, kind: Kind, owner: Uuid) -> Result<Vec<Document>, StoreError> {
        let rows: Vec<DocRow> = on_reader!(self, pool => {
            sqlx::query_as(sql::BY_OWNER)
                .bind(kind.as_str())
                .bind(owner.to_string())
                .fetch_all(pool)
                .await?
        });
        to_documents(rows)
    }

    /// Live documents of a kind that have any owner (all systems of edges).
    pub async fn with_any_owner(&self, kind: Kind) -> Result<Vec<Document>, StoreError> {
        let rows: Vec<DocRow> = on_reader!(self, pool => {
            sqlx::query_as(sql::WITH_ANY_OWNER).bind(kind.as_str()).fetch_all(pool).await?
        });
        to_documents(rows)
    }

    /// Live documents of a kind with no owner (the master's systems).
    pub async fn without_owner(&self, kind: Kind) -> Result<Vec<Document>, StoreError> {
        let rows: Vec<DocRow> = on_reader!(self, pool => {
            sqlx::query_as(sql::WITHOUT_OWNER).bind(kind.as_str()).fetch_all(pool).await?
        });
        to_documents(rows)
    }

    /// Live documents of a kind that refer to `target` (systems listing a module).
    pub async fn referencing(&self, kind: Kind, target: Uuid) -> Result<Vec<Document>, StoreError> {
        let rows: Vec<DocRow> = on_reader!(self, pool => {
            sqlx::query_as(sql::REFERENCING)
                .bind(target.to_string())
                .bind(kind.as_str())
                .fetch_all(pool)
                .await?
        });
        to_documents(rows)
    }

    /// Documents and tombstones with `seq > after`, in sequence order, at
    /// most `limit`. Pass the last `seq` returned to continue.
    pub async fn changes_since(&self, after: i64, limit: u32) -> Result<Vec<Document>, StoreError> {
        let rows: Vec<DocRow> = on_reader!(self, pool => {
            sqlx::query_as(sql::CHANGES_SINCE)
                .bind(after)
                .bind(i64::from(limit))
                .fetch_all(pool)
                .await?
        });
        to_documents(rows)
    }

    /// The highest committed sequence number (0 for an empty store).
    pub async fn last_seq(&self) -> Result<i64, StoreError> {
        Ok(on_reader!(self, pool => {
            sqlx::query_scalar(sql::LAST_SEQ).fetch_one(pool).await?
        }))
    }

    /// Number of live documents of a kind.
    pub async fn count(&self, kind: Kind) -> Result<i64, StoreError> {
        Ok(on_reader!(self, pool => {
            sqlx::query_scalar(sql::COUNT_KIND).bind(kind.as_str()).fetch_one(pool).await?
        }))
    }

    /// The stored link key of an edge location.
    pub async fn link_key(&self, id: Uuid) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(on_reader!(self, pool => {
            sqlx::query_scalar(sql::GET_CREDENTIAL)
                .bind(id.to_string())
                .fetch_optional(pool)
                .await?
        }))
    }
}

/// Rows per multi-row insert: 5 parameters each stays far below both
/// backends' parameter limits.
const INSERT_RUN: usize = 200;

/// How many writes at the front of `writes` are creations that can share one
/// multi-row insert (no repeated id, which PostgreSQL's upsert refuses).
fn creation_run(writes: &[Write]) -> usize {
    let mut ids = std::collections::HashSet::new();
    writes
        .iter()
        .take(INSERT_RUN)
        .take_while(
            |w| matches!(w, Write::Put { expect: Expect::Absent, id, .. } if ids.insert(*id)),
        )
        .count()
}

fn conflict(id: Uuid, expected: Expect, actual: Option<(i64, bool)>) -> StoreError {
    StoreError::Conflict {
        id,
        expected,
        actual: actual.filter(|(_, deleted)| !deleted).map(|(r, _)| r),
    }
}

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
    if let Some(dir) = connect.get_filename().parent()
        && !dir.as_os_str().is_empty()
    {
        std::fs::create_dir_all(dir).map_err(|source| StoreError::DataDir {
            path: dir.display().to_string(),
            source,
        })?;
    }
    let writer = SqlitePoolOptions::new()
        .max_connections(1)
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
        sqlx::query(AssertSqlSafe(format!(
            "CREATE SCHEMA IF NOT EXISTS {schema}"
        )))
        .execute(&admin)
        .await?;
        admin.close().await;
        connect = connect.options([("search_path", schema.as_str())]);
    }
    let pool = PgPoolOptions::new()
        .max_connections(options.max_connections.max(2))
        .acquire_timeout(Duration::from_secs(10))
        .connect_with(connect)
        .await?;
    migrator(POSTGRES_MIGRATIONS).run(&pool).await?;
    Ok(Backend::Postgres(pool))
}

/// Removes the password from a database URL so it can be logged.
pub fn redact_url(url: &str) -> String {
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
