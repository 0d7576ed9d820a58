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

mod cluster;
mod control;
mod credentials;
mod documents;
mod events;
mod open;
mod replica;
mod scope;
mod sql;

pub use cluster::{Heartbeat, HistoryRecord, LeaseReleases, LeaseView, NodeRecord};
pub use control::{ControlRecord, ControlState, SiteAction};
pub use credentials::{CredentialRecord, EdgeKeys};
pub use events::{Appended, Event, EventKind, LoggedEvent, coalesce};
pub use open::sqlite_file;
pub use replica::Replicated;
pub use scope::Site;

use sqlx::migrate::MigrateError;
use sqlx::postgres::PgPool;
use sqlx::sqlite::SqlitePool;
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
    /// PostgreSQL only: the server ends a transaction left idle this long
    /// (`idle_in_transaction_session_timeout`).
    pub idle_in_transaction_ms: Option<u64>,
}

impl StoreOptions {
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            pg_schema: None,
            max_connections: 8,
            idle_in_transaction_ms: None,
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
    /// `expect` is about the credential, not the document: `Absent` when
    /// the edge is created, the revision read by [`Store::credential_rev`]
    /// when the key is rotated. On a rotation, `grace_until_ms` keeps the
    /// replaced key authenticating until then (none: it stops at once).
    /// Every credential write is counted and recorded in the credential
    /// log in the same transaction.
    SetCredential {
        id: Uuid,
        expect: Expect,
        link_key: Vec<u8>,
        grace_until_ms: Option<i64>,
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
            #[allow(
                clippy::expect_used,
                reason = "documents are structs with string keys and no maps keyed by non-strings, which serde_json always serialises"
            )]
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
    #[error(
        "write refused: this node's cluster term {term} is over (another node holds the lease, or it expired)"
    )]
    Fenced { term: i64 },
    #[error("stored document {id} is corrupt: {reason}")]
    Corrupt { id: Uuid, reason: String },
    #[error("the stored {table} is corrupt: {reason}")]
    CorruptRow { table: &'static str, reason: String },
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
    /// Rows in the edge's event log as this process counts them (-1: not
    /// counted yet): appends keep it, so the log's bound costs no
    /// `COUNT(*)` per event.
    event_log_size: std::sync::Arc<std::sync::atomic::AtomicI64>,
    /// Whose writes pass (a master cluster's member: its node and term).
    fence: std::sync::Arc<cluster::Fence>,
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
use {on_reader, on_writer};

/// A stored id as a uuid.
fn parse_id(s: &str) -> Result<Uuid, StoreError> {
    Uuid::parse_str(s).map_err(|e| StoreError::Corrupt {
        id: Uuid::nil(),
        reason: format!("bad id '{s}': {e}"),
    })
}

/// A row of `documents`: id, kind, rev, seq, deleted, owner, body.
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
    pub(crate) fn subscribe_control(&self) -> tokio::sync::broadcast::Receiver<ControlRecord> {
        self.control_changes.subscribe()
    }

    /// The URL without credentials.
    pub(crate) fn display_url(&self) -> &str {
        &self.display_url
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
}
