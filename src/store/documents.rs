//! Documents: write batches ([`Store::apply`]) and every read of documents
//! and the change feed.

use std::collections::{HashMap, HashSet};

use sqlx::{Postgres, Sqlite, Transaction};
use uuid::Uuid;

use super::cluster::FenceCheck;
use super::{
    Committed, DocRow, Document, Expect, Store, StoreError, Write, on_reader, on_writer, sql,
    to_document, to_documents,
};
use crate::model::Kind;

/// Rows per multi-row insert of new documents (5 parameters each).
const INSERT_RUN: usize = 200;

/// Reference rows per statement (2 parameters each).
const REFS_PER_STATEMENT: usize = 400;

/// Ids per `IN (…)` list.
const IDS_PER_STATEMENT: usize = 500;

impl Store {
    /// Applies a batch of writes in one transaction: all or nothing.
    pub async fn apply(&self, writes: &[Write]) -> Result<Vec<Committed>, StoreError> {
        let done = on_writer!(self, pool => {
            let mut tx = pool.begin().await?;
            let done = tx.write_batch(writes).await?;
            // After the sequence numbers are taken (see `store/cluster.rs`).
            tx.check_fence(&self.fence).await?;
            tx.commit().await?;
            done
        });
        if let Some(last) = done.last() {
            self.committed.send_if_modified(|seq| {
                let moved = last.seq > *seq;
                *seq = (*seq).max(last.seq);
                moved
            });
        }
        Ok(done)
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
        for chunk in ids.chunks(IDS_PER_STATEMENT) {
            let rows: Vec<DocRow> = on_reader!(self, pool => {
                sql::id_list(sql::GET_MANY_HEAD, chunk).build_query_as().fetch_all(pool).await?
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
}

/// The steps of a write batch inside its transaction. The bodies are written
/// once ([`batch_steps!`]) and compiled for each backend's transaction, as
/// `on_writer!` does for whole methods.
pub(super) trait BatchSteps {
    /// Writes every operation of `writes` and the reference index; returns
    /// each put's or delete's result, in order.
    async fn write_batch(&mut self, writes: &[Write]) -> Result<Vec<Committed>, StoreError>;
    /// The documents whose site may change with this batch: what the
    /// written documents refer to, before and after (a system's modules),
    /// less what the batch writes itself. They get new sequence numbers in
    /// the batch's transaction, so a per-site feed sends them to the edge
    /// they join and a tombstone to the edge they leave, although their
    /// bodies did not change.
    async fn moved_by(&mut self, writes: &[Write]) -> Result<Vec<Uuid>, StoreError>;
    /// Takes `n` sequence numbers; returns the one before the first.
    async fn take_seqs(&mut self, n: i64) -> Result<i64, StoreError>;
    /// New documents in one multi-row insert, numbered from `seq + 1`.
    async fn create_run<'w>(
        &mut self,
        run: &'w [Write],
        seq: i64,
    ) -> Result<Vec<(Committed, &'w [Uuid])>, StoreError>;
    /// One put; returns its revision.
    async fn put_one(&mut self, write: &Write, seq: i64) -> Result<i64, StoreError>;
    /// One delete; returns the tombstone's revision.
    async fn delete_one(&mut self, id: Uuid, expect: Expect, seq: i64) -> Result<i64, StoreError>;
    /// Writes an edge's link key where `expect` holds.
    async fn set_credential(
        &mut self,
        id: Uuid,
        expect: Expect,
        link_key: &[u8],
        grace_until_ms: Option<i64>,
    ) -> Result<(), StoreError>;
    /// Counts a credential change and records it in the credential log.
    async fn credential_changed(&mut self, id: &str, action: &str) -> Result<(), StoreError>;
    /// The conflict to report for `id`, with its current revision.
    async fn conflict(&mut self, id: Uuid, expect: Expect) -> Result<StoreError, StoreError>;
    /// Adds `from_id`'s references to the index.
    async fn insert_refs(&mut self, from_id: &str, refs: &[Uuid]) -> Result<(), StoreError>;
}

macro_rules! batch_steps {
    ($db:ty) => {
        impl BatchSteps for Transaction<'_, $db> {
            async fn write_batch(
                &mut self,
                writes: &[Write],
            ) -> Result<Vec<Committed>, StoreError> {
                let feed_ops = writes.iter().filter(|w| w.in_feed()).count();
                let moved = self.moved_by(writes).await?;
                let mut seq = self.take_seqs((feed_ops + moved.len()) as i64).await?;
                for id in &moved {
                    seq += 1;
                    sqlx::query(sql::RESTAMP_DOC)
                        .bind(seq)
                        .bind(id.to_string())
                        .execute(&mut **self)
                        .await?;
                }
                // Each put or delete, with the refs a put declares (None: delete).
                let mut done: Vec<(Committed, Option<&[Uuid]>)> = Vec::with_capacity(feed_ops);
                let mut i = 0;
                while i < writes.len() {
                    // Runs of new documents go in multi-row statements: one
                    // round trip instead of one per document.
                    let run = creation_run(&writes[i..]);
                    if run > 1 {
                        let created = self.create_run(&writes[i..i + run], seq).await?;
                        seq += created.len() as i64;
                        done.extend(created.into_iter().map(|(c, refs)| (c, Some(refs))));
                        i += run;
                        continue;
                    }
                    match &writes[i] {
                        put @ Write::Put { id, refs, .. } => {
                            seq += 1;
                            let rev = self.put_one(put, seq).await?;
                            done.push((Committed { id: *id, rev, seq }, Some(refs.as_slice())));
                        }
                        Write::Delete { id, expect } => {
                            seq += 1;
                            let rev = self.delete_one(*id, *expect, seq).await?;
                            done.push((Committed { id: *id, rev, seq }, None));
                        }
                        Write::SetCredential {
                            id,
                            expect,
                            link_key,
                            grace_until_ms,
                        } => {
                            self.set_credential(*id, *expect, link_key, *grace_until_ms)
                                .await?;
                        }
                    }
                    i += 1;
                }
                // The reference index follows the documents: a brand-new
                // document has nothing to replace; an update or delete drops
                // what it had.
                for (c, refs) in &done {
                    let id_text = c.id.to_string();
                    if c.rev > 1 {
                        sqlx::query(sql::DELETE_REFS)
                            .bind(&id_text)
                            .execute(&mut **self)
                            .await?;
                    }
                    self.insert_refs(&id_text, refs.unwrap_or_default()).await?;
                }
                Ok(done.into_iter().map(|(c, _)| c).collect())
            }

            async fn moved_by(&mut self, writes: &[Write]) -> Result<Vec<Uuid>, StoreError> {
                let mut written = HashSet::new();
                let mut before = Vec::new();
                let mut targets = std::collections::BTreeSet::new();
                for w in writes {
                    match w {
                        Write::Put {
                            id, refs, expect, ..
                        } => {
                            written.insert(*id);
                            targets.extend(refs.iter().copied());
                            if matches!(expect, Expect::Rev(_)) {
                                before.push(*id);
                            }
                        }
                        Write::Delete { id, .. } => {
                            written.insert(*id);
                            before.push(*id);
                        }
                        Write::SetCredential { .. } => {}
                    }
                }
                for chunk in before.chunks(IDS_PER_STATEMENT) {
                    let old: Vec<String> = sql::id_list(sql::REFS_FROM_HEAD, chunk)
                        .build_query_scalar()
                        .fetch_all(&mut **self)
                        .await?;
                    for id in old {
                        targets.insert(super::parse_id(&id)?);
                    }
                }
                // What this batch writes gets its new number anyway.
                Ok(targets
                    .into_iter()
                    .filter(|t| !written.contains(t))
                    .collect())
            }

            async fn take_seqs(&mut self, n: i64) -> Result<i64, StoreError> {
                if n == 0 {
                    return Ok(0);
                }
                let end: i64 = sqlx::query_scalar(sql::BUMP_SEQ)
                    .bind(n)
                    .fetch_one(&mut **self)
                    .await?;
                Ok(end - n)
            }

            async fn create_run<'w>(
                &mut self,
                run: &'w [Write],
                seq: i64,
            ) -> Result<Vec<(Committed, &'w [Uuid])>, StoreError> {
                // Only puts reach here (`creation_run`); anything else is skipped.
                let puts: Vec<_> = run
                    .iter()
                    .filter_map(|w| match w {
                        Write::Put {
                            kind,
                            id,
                            body,
                            owner,
                            refs,
                            ..
                        } => Some((*kind, *id, body.as_str(), *owner, refs.as_slice())),
                        _ => None,
                    })
                    .collect();
                let mut q = sql::values(
                    sql::INSERT_DOCS_HEAD,
                    puts.iter().enumerate(),
                    |mut row, (k, (kind, id, body, owner, _))| {
                        row.push_bind(id.to_string())
                            .push_bind(kind.as_str())
                            .push_unseparated(", 1")
                            .push_bind(seq + 1 + k as i64)
                            .push_unseparated(", FALSE")
                            .push_bind(owner.map(|o| o.to_string()))
                            .push_bind(body.to_string());
                    },
                    sql::INSERT_DOCS_TAIL,
                );
                let returned: HashMap<String, i64> = q
                    .build_query_as::<(String, i64)>()
                    .fetch_all(&mut **self)
                    .await?
                    .into_iter()
                    .collect();
                let mut created = Vec::with_capacity(puts.len());
                for (k, (_, id, _, _, refs)) in puts.into_iter().enumerate() {
                    let Some(&rev) = returned.get(&id.to_string()) else {
                        return Err(self.conflict(id, Expect::Absent).await?);
                    };
                    created.push((
                        Committed {
                            id,
                            rev,
                            seq: seq + 1 + k as i64,
                        },
                        refs,
                    ));
                }
                Ok(created)
            }

            async fn put_one(&mut self, write: &Write, seq: i64) -> Result<i64, StoreError> {
                let Write::Put {
                    kind,
                    id,
                    expect,
                    body,
                    owner,
                    ..
                } = write
                else {
                    return Err(StoreError::Corrupt {
                        id: Uuid::nil(),
                        reason: "a put step was given another write".into(),
                    });
                };
                let id_text = id.to_string();
                let owner = owner.map(|o| o.to_string());
                let rev: Option<i64> = match expect {
                    Expect::Absent => {
                        sqlx::query_scalar(sql::INSERT_DOC)
                            .bind(&id_text)
                            .bind(kind.as_str())
                            .bind(seq)
                            .bind(owner)
                            .bind(body)
                            .fetch_optional(&mut **self)
                            .await?
                    }
                    Expect::Rev(expected) => {
                        sqlx::query_scalar(sql::UPDATE_DOC)
                            .bind(&id_text)
                            .bind(kind.as_str())
                            .bind(seq)
                            .bind(owner)
                            .bind(body)
                            .bind(*expected)
                            .fetch_optional(&mut **self)
                            .await?
                    }
                };
                match rev {
                    Some(rev) => Ok(rev),
                    None => Err(self.conflict(*id, *expect).await?),
                }
            }

            async fn delete_one(
                &mut self,
                id: Uuid,
                expect: Expect,
                seq: i64,
            ) -> Result<i64, StoreError> {
                let id_text = id.to_string();
                let rev: Option<i64> = match expect {
                    Expect::Rev(expected) => {
                        sqlx::query_scalar(sql::DELETE_DOC)
                            .bind(&id_text)
                            .bind(seq)
                            .bind(expected)
                            .fetch_optional(&mut **self)
                            .await?
                    }
                    Expect::Absent => None,
                };
                let Some(rev) = rev else {
                    return Err(self.conflict(id, expect).await?);
                };
                // A deleted edge location's credential goes with it.
                let gone = sqlx::query(sql::DELETE_CREDENTIAL)
                    .bind(&id_text)
                    .execute(&mut **self)
                    .await?
                    .rows_affected();
                if gone > 0 {
                    self.credential_changed(&id_text, "deleted").await?;
                }
                Ok(rev)
            }

            async fn credential_changed(
                &mut self,
                id: &str,
                action: &str,
            ) -> Result<(), StoreError> {
                sqlx::query(sql::BUMP_CREDENTIALS)
                    .execute(&mut **self)
                    .await?;
                sqlx::query(sql::INSERT_CREDENTIAL_LOG)
                    .bind(id)
                    .bind(crate::util::unix_ms())
                    .bind(action)
                    .execute(&mut **self)
                    .await?;
                Ok(())
            }

            async fn set_credential(
                &mut self,
                id: Uuid,
                expect: Expect,
                link_key: &[u8],
                grace_until_ms: Option<i64>,
            ) -> Result<(), StoreError> {
                let id_text = id.to_string();
                let now = crate::util::unix_ms();
                let rev: Option<i64> = match expect {
                    Expect::Absent => {
                        sqlx::query_scalar(sql::INSERT_CREDENTIAL)
                            .bind(&id_text)
                            .bind(link_key)
                            .bind(now)
                            .fetch_optional(&mut **self)
                            .await?
                    }
                    Expect::Rev(expected) => {
                        sqlx::query_scalar(sql::UPDATE_CREDENTIAL)
                            .bind(&id_text)
                            .bind(link_key)
                            .bind(now)
                            .bind(expected)
                            .bind(grace_until_ms)
                            .fetch_optional(&mut **self)
                            .await?
                    }
                };
                if rev.is_some() {
                    let action = match (expect, grace_until_ms) {
                        (Expect::Absent, _) => "created",
                        (Expect::Rev(_), Some(_)) => {
                            "rotated (the old secret works during the grace)"
                        }
                        (Expect::Rev(_), None) => "rotated (the old secret stopped at once)",
                    };
                    return self.credential_changed(&id_text, action).await;
                }
                let actual: Option<i64> = sqlx::query_scalar(sql::CREDENTIAL_REV)
                    .bind(&id_text)
                    .fetch_optional(&mut **self)
                    .await?;
                Err(StoreError::Conflict {
                    id,
                    expected: expect,
                    actual,
                })
            }

            async fn conflict(
                &mut self,
                id: Uuid,
                expect: Expect,
            ) -> Result<StoreError, StoreError> {
                let actual: Option<(i64, bool)> = sqlx::query_as(sql::CURRENT_REV)
                    .bind(id.to_string())
                    .fetch_optional(&mut **self)
                    .await?;
                Ok(StoreError::Conflict {
                    id,
                    expected: expect,
                    actual: actual.filter(|(_, deleted)| !deleted).map(|(r, _)| r),
                })
            }

            async fn insert_refs(
                &mut self,
                from_id: &str,
                refs: &[Uuid],
            ) -> Result<(), StoreError> {
                for targets in refs.chunks(REFS_PER_STATEMENT) {
                    sql::values(
                        sql::INSERT_REFS_HEAD,
                        targets,
                        |mut row, to| {
                            row.push_bind(from_id.to_owned()).push_bind(to.to_string());
                        },
                        "",
                    )
                    .build()
                    .execute(&mut **self)
                    .await?;
                }
                Ok(())
            }
        }
    };
}

batch_steps!(Sqlite);
batch_steps!(Postgres);

/// How many writes at the front of `writes` are creations that can share one
/// multi-row insert (no repeated id, which PostgreSQL's upsert refuses).
fn creation_run(writes: &[Write]) -> usize {
    let mut ids = HashSet::new();
    writes
        .iter()
        .take(INSERT_RUN)
        .take_while(
            |w| matches!(w, Write::Put { expect: Expect::Absent, id, .. } if ids.insert(*id)),
        )
        .count()
}
