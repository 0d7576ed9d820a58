//! The edge's replica of the master's documents: documents are written
//! exactly as the master has them (revision, sequence number, tombstone), so
//! the replica's checkpoint is simply its own `last_seq`, moved in the same
//! transaction as the documents it covers.

use uuid::Uuid;

use super::documents::BatchSteps as _;
use super::{Document, Store, StoreError, on_reader, on_writer, sql};

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
    /// harmless: a document is only replaced by a higher revision.
    pub async fn apply_replicated(
        &self,
        docs: &[Replicated],
        checkpoint: i64,
    ) -> Result<(), StoreError> {
        on_writer!(self, pool => {
            let mut tx = pool.begin().await?;
            for chunk in docs.chunks(UPSERT_RUN) {
                // One multi-row upsert per chunk; it returns the documents it
                // actually wrote (a newer revision already here is kept).
                let mut q = sql::values(sql::UPSERT_REPLICATED_HEAD, chunk, |mut row, r| {
                    let d = &r.doc;
                    row.push_bind(d.id.to_string())
                        .push_bind(d.kind.clone())
                        .push_bind(d.rev)
                        .push_bind(d.seq)
                        .push_bind(d.deleted)
                        .push_bind(d.owner.map(|o| o.to_string()))
                        .push_bind(d.body.clone());
                }, sql::UPSERT_REPLICATED_TAIL);
                let applied: std::collections::HashSet<String> = q.build_query_scalar::<String>().fetch_all(&mut *tx).await?.into_iter().collect();
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
            sqlx::query(sql::MOVE_CHECKPOINT).bind(checkpoint).execute(&mut *tx).await?;
            tx.commit().await?;
        });
        self.committed.send_if_modified(|seq| {
            let moved = checkpoint > *seq;
            *seq = (*seq).max(checkpoint);
            moved
        });
        Ok(())
    }
}
