//! The edge's replica of the master's documents: documents are written
//! exactly as the master has them (revision, sequence number, tombstone), so
//! the replica's checkpoint is simply its own `last_seq`, moved in the same
//! transaction as the documents it covers.

use std::collections::HashSet;

use sqlx::{Postgres, Sqlite, Transaction};
use uuid::Uuid;

use super::documents::BatchSteps as _;
use super::{Document, Store, StoreError, on_reader, on_writer, parse_id, sql};

/// `store_info` key: `site` once a site snapshot finished, `all` after the
/// master asked for the full copy again.
const SCOPE_KEY: &str = "replica_scope";
const SITE: &str = "site";

/// A document as replicated from the master, with the ids its body refers
/// to (derived by the model, as for local writes).
#[derive(Debug, Clone)]
pub struct Replicated {
    pub doc: Document,
    pub refs: Vec<Uuid>,
}

/// Rows per multi-row upsert (7 parameters each). Small on purpose: SQLite
/// walks a statement's parameter list to bind each `$N`, so the binding
/// cost of one statement grows with the square of its parameters (200 rows
/// took the snapshot benchmark 2.9 s, 25 rows 1.4 s).
const UPSERT_RUN: usize = 25;

impl Store {
    /// The store this replica copies, if it has started replicating.
    pub async fn upstream(&self) -> Result<Option<Uuid>, StoreError> {
        let value: Option<String> = on_reader!(self, pool => {
            sqlx::query_scalar(sql::GET_INFO).bind("upstream_id").fetch_optional(pool).await?
        });
        Ok(value.and_then(|v| Uuid::parse_str(&v).ok()))
    }

    /// Prepares to replicate `upstream` and returns the checkpoint to resume
    /// from. A different upstream (the master's database was replaced)
    /// clears every replicated document first: a full resync, never a mix
    /// of two databases.
    pub async fn begin_replication(&self, upstream: Uuid) -> Result<i64, StoreError> {
        if self.upstream().await? == Some(upstream) {
            return self.last_seq().await;
        }
        on_writer!(self, pool => {
            let mut tx = pool.begin().await?;
            sqlx::query(sql::CLEAR_REFS).execute(&mut *tx).await?;
            sqlx::query(sql::CLEAR_DOCUMENTS).execute(&mut *tx).await?;
            sqlx::query(sql::RESET_SEQ).execute(&mut *tx).await?;
            // Nothing is held any more, of a site or of the whole store.
            sqlx::query(sql::DELETE_INFO).bind(SCOPE_KEY).execute(&mut *tx).await?;
            sqlx::query(sql::SET_INFO)
                .bind("upstream_id")
                .bind(upstream.to_string())
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
        });
        Ok(0)
    }

    /// Applies replicated documents and moves the checkpoint to
    /// `checkpoint`, in one transaction. Applying the same page twice is
    /// harmless: a document is only replaced by a later version.
    pub async fn apply_replicated(
        &self,
        docs: &[Replicated],
        checkpoint: i64,
    ) -> Result<(), StoreError> {
        self.apply_pages(docs, Some(checkpoint), false).await
    }

    /// As [`Store::apply_replicated`], for a feed limited to this edge's
    /// site: the tombstone of a document this replica does not hold (another
    /// site's change) leaves no row.
    pub async fn apply_site_changes(
        &self,
        docs: &[Replicated],
        checkpoint: i64,
    ) -> Result<(), StoreError> {
        self.apply_pages(docs, Some(checkpoint), true).await
    }

    /// Applies a page of a site snapshot; the checkpoint stays (it moves
    /// when the snapshot ends, [`Store::finish_site_resync`]).
    pub async fn apply_site_page(&self, docs: &[Replicated]) -> Result<(), StoreError> {
        self.apply_pages(docs, None, true).await
    }

    async fn apply_pages(
        &self,
        docs: &[Replicated],
        checkpoint: Option<i64>,
        site: bool,
    ) -> Result<(), StoreError> {
        on_writer!(self, pool => {
            let mut tx = pool.begin().await?;
            for chunk in docs.chunks(UPSERT_RUN) {
                let chunk = if site { tx.held_or_live(chunk).await? } else { chunk.iter().collect() };
                if chunk.is_empty() {
                    continue;
                }
                // One multi-row upsert per chunk; it returns the documents it
                // actually wrote (a later version already here is kept).
                let mut q = sql::values(sql::UPSERT_REPLICATED_HEAD, chunk.iter(), |mut row, r| {
                    let d = &r.doc;
                    row.push_bind(d.id.to_string())
                        .push_bind(d.kind.clone())
                        .push_bind(d.rev)
                        .push_bind(d.seq)
                        .push_bind(d.deleted)
                        .push_bind(d.owner.map(|o| o.to_string()))
                        .push_bind(d.body.clone());
                }, sql::UPSERT_REPLICATED_TAIL);
                let applied: HashSet<String> = q.build_query_scalar::<String>().fetch_all(&mut *tx).await?.into_iter().collect();
                for r in chunk {
                    let d = &r.doc;
                    let id_text = d.id.to_string();
                    if !applied.contains(&id_text) {
                        continue;
                    }
                    // A first revision cannot have left references here.
                    if d.rev > 1 || d.deleted {
                        sqlx::query(sql::DELETE_REFS).bind(&id_text).execute(&mut *tx).await?;
                    }
                    if d.deleted {
                        continue;
                    }
                    tx.insert_refs(&id_text, &r.refs).await?;
                }
            }
            if let Some(checkpoint) = checkpoint {
                sqlx::query(sql::MOVE_CHECKPOINT).bind(checkpoint).execute(&mut *tx).await?;
            }
            tx.commit().await?;
        });
        if let Some(checkpoint) = checkpoint {
            self.moved_to(checkpoint);
        }
        Ok(())
    }

    fn moved_to(&self, checkpoint: i64) {
        self.committed.send_if_modified(|seq| {
            let moved = checkpoint > *seq;
            *seq = (*seq).max(checkpoint);
            moved
        });
    }

    /// Ends a site snapshot: every live document not in `keep` (another
    /// site's, or one that left this site) becomes a tombstone, the
    /// checkpoint moves to `as_of` and the replica is recorded as holding
    /// its site only, in one transaction. Returns the ids dropped.
    pub async fn finish_site_resync(
        &self,
        keep: &HashSet<Uuid>,
        as_of: i64,
    ) -> Result<Vec<Uuid>, StoreError> {
        let dropped = on_writer!(self, pool => {
            let mut tx = pool.begin().await?;
            let live: Vec<String> = sqlx::query_scalar(sql::LIVE_IDS).fetch_all(&mut *tx).await?;
            let mut dropped = Vec::new();
            for id_text in live {
                let id = parse_id(&id_text)?;
                if keep.contains(&id) {
                    continue;
                }
                sqlx::query(sql::DROP_REPLICATED).bind(&id_text).execute(&mut *tx).await?;
                sqlx::query(sql::DELETE_REFS).bind(&id_text).execute(&mut *tx).await?;
                dropped.push(id);
            }
            sqlx::query(sql::MOVE_CHECKPOINT).bind(as_of).execute(&mut *tx).await?;
            sqlx::query(sql::SET_INFO).bind(SCOPE_KEY).bind(SITE).execute(&mut *tx).await?;
            tx.commit().await?;
            dropped
        });
        self.moved_to(as_of);
        Ok(dropped)
    }

    /// Whether this replica holds only its site (a finished site snapshot,
    /// and no full copy asked for since).
    pub async fn replica_is_site(&self) -> Result<bool, StoreError> {
        let value: Option<String> = on_reader!(self, pool => {
            sqlx::query_scalar(sql::GET_INFO).bind(SCOPE_KEY).fetch_optional(pool).await?
        });
        Ok(value.as_deref() == Some(SITE))
    }

    /// The master sends every document again: the replica, which held only
    /// its site, is missing every other document below its checkpoint, so
    /// the checkpoint goes back to the start (nothing is deleted; the full
    /// feed replaces what is here).
    pub async fn replicate_everything(&self) -> Result<(), StoreError> {
        on_writer!(self, pool => {
            let mut tx = pool.begin().await?;
            sqlx::query(sql::RESET_SEQ).execute(&mut *tx).await?;
            sqlx::query(sql::SET_INFO).bind(SCOPE_KEY).bind("all").execute(&mut *tx).await?;
            tx.commit().await?;
        });
        Ok(())
    }
}

/// Filters a chunk of replicated documents before it is applied.
trait ReplicaSteps {
    /// `chunk` without the tombstones of documents this replica does not
    /// hold: another site's changes reach an edge as bare tombstones, and
    /// they leave no row behind.
    async fn held_or_live<'c>(
        &mut self,
        chunk: &'c [Replicated],
    ) -> Result<Vec<&'c Replicated>, StoreError>;
}

macro_rules! replica_steps {
    ($db:ty) => {
        impl ReplicaSteps for Transaction<'_, $db> {
            async fn held_or_live<'c>(
                &mut self,
                chunk: &'c [Replicated],
            ) -> Result<Vec<&'c Replicated>, StoreError> {
                let gone: Vec<Uuid> = chunk
                    .iter()
                    .filter(|r| r.doc.deleted)
                    .map(|r| r.doc.id)
                    .collect();
                if gone.is_empty() {
                    return Ok(chunk.iter().collect());
                }
                let held: HashSet<String> = sql::id_list(sql::HELD_HEAD, &gone)
                    .build_query_scalar::<String>()
                    .fetch_all(&mut **self)
                    .await?
                    .into_iter()
                    .collect();
                Ok(chunk
                    .iter()
                    .filter(|r| !r.doc.deleted || held.contains(&r.doc.id.to_string()))
                    .collect())
            }
        }
    };
}

replica_steps!(Sqlite);
replica_steps!(Postgres);
