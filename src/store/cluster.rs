//! A master cluster's rows (PostgreSQL only): the lease, judged by the
//! server's clock and carrying the fencing term; the nodes' heartbeats;
//! the history of MASTERs. And the fence every write of a cluster member
//! passes: its term is checked in the write's own transaction.
//!
//! # Why a delayed write of a fenced node fails
//!
//! The check reads the lease row `FOR SHARE` in the write's transaction,
//! after the write has taken its sequence numbers: it passes only while
//! this node holds the lease at this term and the lease has not expired by
//! the server's clock. A grant to another node updates that row, so it
//! waits for a write that passed the check to commit, and a write that
//! checks after the grant finds the new term and rolls back. No write of
//! the old term therefore commits after the new term begins.

use sqlx::{Postgres, Sqlite, Transaction};

use super::{Store, StoreError, sql};
use crate::util::Unpoisoned;

/// Whose writes this store lets through (`None`: not a cluster member,
/// no check: SQLite, edges, a master alone).
#[derive(Debug, Default)]
pub(crate) struct Fence(std::sync::Mutex<Option<(String, i64)>>);

impl Fence {
    fn get(&self) -> Option<(String, i64)> {
        self.0.lock_unpoisoned().clone()
    }
}

/// The term check, in the transaction of every write a master makes.
pub(super) trait FenceCheck {
    async fn check_fence(&mut self, fence: &Fence) -> Result<(), StoreError>;
}

impl FenceCheck for Transaction<'_, Postgres> {
    async fn check_fence(&mut self, fence: &Fence) -> Result<(), StoreError> {
        let Some((node, term)) = fence.get() else {
            return Ok(());
        };
        let held: Option<i64> = sqlx::query_scalar(sql::CHECK_FENCE)
            .bind(&node)
            .bind(term)
            .fetch_optional(&mut **self)
            .await?;
        match held {
            Some(_) => Ok(()),
            None => Err(StoreError::Fenced { term }),
        }
    }
}

impl FenceCheck for Transaction<'_, Sqlite> {
    async fn check_fence(&mut self, fence: &Fence) -> Result<(), StoreError> {
        // Two masters on one SQLite file take turns by a lock file, which
        // the kernel releases with the process: no lease, no term to check.
        match fence.get() {
            Some((_, term)) => Err(StoreError::Fenced { term }),
            None => Ok(()),
        }
    }
}

/// Notices of lease releases, from [`Store::lease_released`].
pub struct LeaseReleases(sqlx::postgres::PgListener);

impl LeaseReleases {
    /// The next release (an error when the connection broke; it is made
    /// again on the next call).
    pub async fn next(&mut self) -> Result<(), StoreError> {
        self.0.recv().await?;
        Ok(())
    }
}

/// One node's heartbeat, as `/ha/states` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeRecord {
    pub node_id: String,
    pub state: String,
    pub priority: i32,
    pub preempt: bool,
    pub api: Option<String>,
    pub link: Option<String>,
    /// Milliseconds since its last heartbeat, by the server's clock.
    pub last_seen_ms: i64,
}

/// The lease as it stands, with the holder's advertised addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseView {
    pub holder: Option<String>,
    pub term: i64,
    /// Not expired by the server's clock.
    pub live: bool,
    pub api: Option<String>,
    pub link: Option<String>,
}

/// One change of MASTER.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryRecord {
    pub node_id: String,
    pub term: i64,
    pub reason: String,
    pub at_ms: i64,
}

/// A node's heartbeat values.
#[derive(Debug, Clone)]
pub struct Heartbeat<'a> {
    pub node_id: &'a str,
    pub state: &'a str,
    pub priority: i32,
    pub preempt: bool,
    pub api: Option<&'a str>,
    pub link: Option<&'a str>,
}

/// How many changes of MASTER the history keeps (the oldest go first).
const HISTORY_KEEP: i64 = 1000;

fn pg_only() -> StoreError {
    StoreError::Url {
        url: "sqlite".into(),
        reason: "a master cluster's lease needs PostgreSQL".into(),
    }
}

type NodeRow = (
    String,
    String,
    i32,
    bool,
    Option<String>,
    Option<String>,
    i64,
);
type LeaseRow = (Option<String>, i64, bool, Option<String>, Option<String>);

impl Store {
    /// From now on every write of this store must pass the lease check as
    /// `node_id` at the term set by [`Store::set_fence_term`]; until one is
    /// set (term 0) every write is refused.
    pub fn fence_as(&self, node_id: &str) {
        *self.fence.0.lock_unpoisoned() = Some((node_id.to_owned(), 0));
    }

    /// The term this node's writes are checked against (0: none pass).
    pub fn set_fence_term(&self, term: i64) {
        if let Some((_, t)) = self.fence.0.lock_unpoisoned().as_mut() {
            *t = term;
        }
    }

    /// Whether the cluster's tables are here (a PostgreSQL store; a
    /// lock-file cluster on SQLite has none).
    pub fn has_cluster_tables(&self) -> bool {
        matches!(&*self.backend, super::Backend::Postgres(_))
    }

    fn postgres(&self) -> Result<&sqlx::PgPool, StoreError> {
        match &*self.backend {
            super::Backend::Postgres(pg) => Ok(pg),
            super::Backend::Sqlite { .. } => Err(pg_only()),
        }
    }

    /// Records a node's heartbeat (the server's clock), and forgets nodes
    /// not seen for a day, so names that came and went do not pile up.
    pub async fn cluster_heartbeat(&self, beat: &Heartbeat<'_>) -> Result<(), StoreError> {
        let pg = self.postgres()?;
        let mut tx = pg.begin().await?;
        sqlx::query(sql::UPSERT_NODE)
            .bind(beat.node_id)
            .bind(beat.state)
            .bind(beat.priority)
            .bind(beat.preempt)
            .bind(beat.api)
            .bind(beat.link)
            .execute(&mut *tx)
            .await?;
        sqlx::query(sql::FORGET_NODES).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Takes the lease for `node_id` if it is free or expired (by the
    /// server's clock) and no live standby ranks before this node
    /// (`node_priority`, then node id). Each grant raises the term and is
    /// recorded in the history with `reason`. `None`: not granted.
    pub async fn acquire_lease(
        &self,
        node_id: &str,
        priority: i32,
        lease_ms: u64,
        reason: &str,
    ) -> Result<Option<i64>, StoreError> {
        let pg = self.postgres()?;
        let mut tx = pg.begin().await?;
        let term: Option<i64> = sqlx::query_scalar(sql::ACQUIRE_LEASE)
            .bind(node_id)
            .bind(lease_ms as i64)
            .bind(priority)
            .fetch_optional(&mut *tx)
            .await?;
        if let Some(term) = term {
            sqlx::query(sql::INSERT_HISTORY)
                .bind(node_id)
                .bind(term)
                .bind(reason)
                .execute(&mut *tx)
                .await?;
            sqlx::query(sql::TRIM_HISTORY)
                .bind(HISTORY_KEEP)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(term)
    }

    /// Extends the lease `node_id` holds at `term` by `lease_ms` from now
    /// (the server's clock). `None`: it no longer holds it (expired, taken).
    /// `Some(Some(id))`: a live standby that ranks higher asks to preempt.
    ///
    /// `expired_too`: renew it also once it expired at the server, provided
    /// nobody was granted it since (holder and term still these): what a
    /// `cluster_failsafe` MASTER needs when the database returns after an
    /// outage it rode out. Same term, so no promotion and no history entry.
    pub async fn renew_lease(
        &self,
        node_id: &str,
        term: i64,
        lease_ms: u64,
        priority: i32,
        expired_too: bool,
    ) -> Result<Option<Option<String>>, StoreError> {
        let pg = self.postgres()?;
        let query = if expired_too {
            sql::RENEW_OWN_LEASE
        } else {
            sql::RENEW_LEASE
        };
        let renewed: Option<i64> = sqlx::query_scalar(query)
            .bind(node_id)
            .bind(term)
            .bind(lease_ms as i64)
            .fetch_optional(pg)
            .await?;
        if renewed.is_none() {
            return Ok(None);
        }
        let preempter: Option<String> = sqlx::query_scalar(sql::PREEMPTER)
            .bind(node_id)
            .bind(priority)
            .bind(lease_ms as i64)
            .fetch_optional(pg)
            .await?;
        Ok(Some(preempter))
    }

    /// Gives the lease up at once (a graceful stop, after this node has
    /// stopped acting): a standby need not wait for it to expire.
    pub async fn release_lease(&self, node_id: &str, term: i64) -> Result<bool, StoreError> {
        let pg = self.postgres()?;
        let mut tx = pg.begin().await?;
        let done = sqlx::query(sql::RELEASE_LEASE)
            .bind(node_id)
            .bind(term)
            .execute(&mut *tx)
            .await?;
        let released = done.rows_affected() > 0;
        if released {
            sqlx::query(sql::INSERT_HISTORY)
                .bind(node_id)
                .bind(term)
                .bind("released")
                .execute(&mut *tx)
                .await?;
            // Delivered at commit: standbys try the lease at once.
            sqlx::query(sql::NOTIFY_RELEASED).execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(released)
    }

    /// Wakes on every release of the lease (`LISTEN`), so a standby tries
    /// at once instead of at its next period.
    pub async fn lease_released(&self) -> Result<LeaseReleases, StoreError> {
        let mut listener = sqlx::postgres::PgListener::connect_with(self.postgres()?).await?;
        listener.listen(sql::RELEASE_CHANNEL).await?;
        Ok(LeaseReleases(listener))
    }

    /// The lease and its holder's addresses.
    pub async fn lease(&self) -> Result<LeaseView, StoreError> {
        let row: LeaseRow = sqlx::query_as(sql::GET_LEASE)
            .fetch_one(self.postgres()?)
            .await?;
        let (holder, term, live, api, link) = row;
        Ok(LeaseView {
            holder,
            term,
            live,
            api,
            link,
        })
    }

    /// Every node's last heartbeat, by node id.
    pub async fn cluster_nodes(&self) -> Result<Vec<NodeRecord>, StoreError> {
        let rows: Vec<NodeRow> = sqlx::query_as(sql::LIST_NODES)
            .fetch_all(self.postgres()?)
            .await?;
        Ok(rows
            .into_iter()
            .map(
                |(node_id, state, priority, preempt, api, link, last_seen_ms)| NodeRecord {
                    node_id,
                    state,
                    priority,
                    preempt,
                    api,
                    link,
                    last_seen_ms,
                },
            )
            .collect())
    }

    /// The changes of MASTER, newest first, at most `limit`.
    pub async fn cluster_history(&self, limit: u32) -> Result<Vec<HistoryRecord>, StoreError> {
        let rows: Vec<(String, i64, String, i64)> = sqlx::query_as(sql::LIST_HISTORY)
            .bind(i64::from(limit))
            .fetch_all(self.postgres()?)
            .await?;
        Ok(rows
            .into_iter()
            .map(|(node_id, term, reason, at_ms)| HistoryRecord {
                node_id,
                term,
                reason,
                at_ms,
            })
            .collect())
    }
}
