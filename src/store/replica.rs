//! The edge's replica of the master's documents: documents are written
//! exactly as the master has them (revision, sequence number, tombstone), so
//! the replica's checkpoint is simply its own `last_seq`, moved in the same
//! transaction as the documents it covers.

use uuid::Uuid;

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

/// Upserts `n` replicated documents, keeping a newer revision already here;
/// returns the ids it wrote.
fn upsert_replicated(n: usize) -> String {
    let mut s =
        String::from("INSERT INTO documents (id, kind, rev, seq, deleted, owner, body) VALUES ");
    for i in 0..n {
        let p = i * 7;
        if i > 0 {
            s.push_str(", ");
        }
        s.push_str(&format!(
            "(${}, ${}, ${}, ${}, ${}, ${}, ${})",
            p + 1,
            p + 2,
            p + 3,
            p + 4,
            p + 5,
            p + 6,
            p + 7
        ));
    }
    s.push_str(
        " ON CONFLICT (id) DO UPDATE SET kind = excluded.kind, rev = excluded.rev, seq = excluded.seq, \
         deleted = excluded.deleted, owner = excluded.owner, body = excluded.body \
         WHERE excluded.rev > documents.rev RETURNING id",
    );
    s
}
const MOVE_CHECKPOINT: &str = "UPDATE outpost_meta SET value = $1 WHERE key = 'seq' AND value < $1";
const GET_INFO: &str = "SELECT value FROM store_info WHERE key = $1";
const SET_INFO: &str = "INSERT INTO store_info (key, value) VALUES ($1, $2) \
     ON CONFLICT (key) DO UPDATE SET value = excluded.value";
const CLEAR_DOCUMENTS: &str = "DELETE FROM documents";
const CLEAR_REFS: &str = "DELETE FROM doc_refs";
const RESET_SEQ: &str = "UPDATE outpost_meta SET value = 0 WHERE key = 'seq'";

impl Store {
    /// The store this replica copies, if it has started replicating.
    pub async fn upstream(&self) -> Result<Option<Uuid>, StoreError> {
        let value: Option<String> = on_reader!(self, pool => {
            sqlx::query_scalar(GET_INFO).bind("upstream_id").fetch_optional(pool).await?
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
            sqlx::query(CLEAR_REFS).execute(&mut *tx).await?;
            sqlx::query(CLEAR_DOCUMENTS).execute(&mut *tx).await?;
            sqlx::query(RESET_SEQ).execute(&mut *tx).await?;
            sqlx::query(SET_INFO)
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
                let mut q = sqlx::query_scalar::<_, String>(sqlx::AssertSqlSafe(upsert_replicated(chunk.len())));
                for r in chunk {
                    let d = &r.doc;
                    q = q
                        .bind(d.id.to_string())
                        .bind(&d.kind)
                        .bind(d.rev)
                        .bind(d.seq)
                        .bind(d.deleted)
                        .bind(d.owner.map(|o| o.to_string()))
                        .bind(&d.body);
                }
                let applied: std::collections::HashSet<String> = q.fetch_all(&mut *tx).await?.into_iter().collect();
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
                    for targets in r.refs.chunks(400) {
                        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql::insert_refs(targets.len()))).bind(&id_text);
                        for to in targets {
                            q = q.bind(to.to_string());
                        }
                        q.execute(&mut *tx).await?;
                    }
                }
            }
            sqlx::query(MOVE_CHECKPOINT).bind(checkpoint).execute(&mut *tx).await?;
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
