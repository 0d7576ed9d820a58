//! The edge's replica, kept current over the link: on every connection, on
//! every "data model updated" notice from the master, and every
//! `POLL` as a backstop, the edge pulls the master's changes after its
//! checkpoint, page by page, and applies each page with its checkpoint in
//! one transaction (a link that drops mid-way resumes from the last page).
//! A fresh edge's first pull is its snapshot: from a master that replicates
//! each edge's site only (`master/replica.rs`), a site snapshot, also taken
//! by a replica that held every document; other sites' changes then come
//! as tombstones, and each page's `through` moves the checkpoint past them.
//! Then the reconciler is poked:
//! it brings the runtime in line with the replica (see
//! [`crate::reconciler`]).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::link::Peer;
use crate::model::index_document;
use crate::proto::{DocChange, ReplicaScope, RequestBody, ResponseBody};
use crate::reconciler::Reconciler;
use crate::store::{Document, Replicated, Store};

/// Pull even without a notice this often (a master restarted by another
/// process, a lost notice).
const POLL: Duration = Duration::from_secs(5);
const CALL: Duration = Duration::from_secs(30);

pub(super) struct Replicator {
    pub store: Store,
    /// Documents per request (`replica_page_size`): the unit a snapshot
    /// resumes from.
    pub page: u32,
    /// Woken by the master's notices.
    pub wake: Arc<Notify>,
    /// Follows the replica's applies.
    pub reconciler: Reconciler,
}

impl Replicator {
    /// Runs until `stop`, following the current link in `peer`.
    pub(super) async fn run(
        self,
        mut peer: watch::Receiver<Option<Peer>>,
        stop: CancellationToken,
    ) {
        loop {
            let current = peer.borrow_and_update().clone();
            if let Some(p) = current {
                match self.pull(&p).await {
                    // The reconciler brings the runtime in line.
                    Ok(changed) if !changed.is_empty() => self.reconciler.poke(),
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "replication pull failed; retrying on the next notice")
                    }
                }
            }
            tokio::select! {
                () = stop.cancelled() => return,
                r = peer.changed() => if r.is_err() { return },
                () = self.wake.notified() => {}
                () = tokio::time::sleep(POLL) => {}
            }
        }
    }

    /// Pulls and applies every page after the checkpoint; returns the ids
    /// of the documents that changed.
    async fn pull(&self, peer: &Peer) -> Result<HashSet<Uuid>, String> {
        let mut changed = HashSet::new();
        let mut cursor = self.store.last_seq().await.map_err(text)?;
        let mut checked_upstream = false;
        // Reported to the master with every page: its console shows it.
        let unsynced = self
            .store
            .event_counts()
            .await
            .ok()
            .map(|(n, _)| n.max(0) as u64);
        loop {
            let request = RequestBody::Changes {
                after: cursor,
                limit: self.page,
                unsynced,
            };
            let answer = peer.request(request, CALL).await.map_err(text)?;
            let ResponseBody::Changes {
                store_id,
                docs,
                last_seq,
                through,
                scope,
            } = answer
            else {
                return Err(format!("unexpected answer to changes: {answer:?}"));
            };
            if !checked_upstream {
                checked_upstream = true;
                if let Some(resume) = self
                    .follow_upstream(peer, store_id, scope, cursor, &mut changed)
                    .await?
                {
                    cursor = resume;
                    continue;
                }
            }
            // A newer master says how far the page went through the feed,
            // past changes of other sites it did not send.
            let end = through.or(docs.last().map(|d| d.seq));
            let Some(end) = end.filter(|e| !docs.is_empty() || *e > cursor) else {
                return Ok(changed);
            };
            let batch = replicated(docs, &mut changed);
            // Limited to this edge's site: another site's change is a
            // tombstone that leaves no row where nothing was held.
            if scope == Some(ReplicaScope::Site) {
                self.store.apply_site_changes(&batch, end).await
            } else {
                self.store.apply_replicated(&batch, end).await
            }
            .map_err(text)?;
            tracing::debug!(documents = batch.len(), checkpoint = end, "replicated");
            cursor = end;
            if through.is_some_and(|t| t >= last_seq) {
                return Ok(changed);
            }
        }
    }

    /// Checks the first answer of a pull against what this replica copies:
    /// the same database, and the same scope. Returns the checkpoint to
    /// pull from again when the replica had to change first: a different
    /// database (everything again), a master that now sends only this
    /// edge's site (a site snapshot, then the feed after it), or one that
    /// sends everything again after a site-only replica (from the start).
    async fn follow_upstream(
        &self,
        peer: &Peer,
        store_id: Uuid,
        scope: Option<ReplicaScope>,
        cursor: i64,
        changed: &mut HashSet<Uuid>,
    ) -> Result<Option<i64>, String> {
        let resume = self.store.begin_replication(store_id).await.map_err(text)?;
        let replaced = resume != cursor;
        if replaced {
            tracing::warn!(%store_id, "the master's database is not the one this replica copied: full resync");
        }
        let site_only = self.store.replica_is_site().await.map_err(text)?;
        match scope {
            Some(ReplicaScope::Site) if !site_only => {
                self.site_resync(peer, store_id, changed).await?;
                Ok(Some(self.store.last_seq().await.map_err(text)?))
            }
            Some(ReplicaScope::All) | None if site_only => {
                tracing::info!("the master replicates every document again: copying them all");
                self.store.replicate_everything().await.map_err(text)?;
                Ok(Some(0))
            }
            _ if replaced => Ok(Some(resume)),
            _ => Ok(None),
        }
    }

    /// Replaces the replica with this edge's site as the master has it now,
    /// page by page; the last page turns every other document into a
    /// tombstone and moves the checkpoint to where the first page was read,
    /// so every change since comes with the feed. A link that drops
    /// mid-way leaves the checkpoint where it was: the next pull starts
    /// the snapshot again (the pages already applied are harmless).
    async fn site_resync(
        &self,
        peer: &Peer,
        store_id: Uuid,
        changed: &mut HashSet<Uuid>,
    ) -> Result<(), String> {
        let mut after_id = None;
        let mut first_as_of = None;
        loop {
            let request = RequestBody::SiteSnapshot {
                after_id,
                limit: self.page,
            };
            let answer = peer.request(request, CALL).await.map_err(text)?;
            let ResponseBody::SiteSnapshot {
                store_id: from,
                docs,
                as_of,
                keep,
            } = answer
            else {
                return Err(format!("unexpected answer to site_snapshot: {answer:?}"));
            };
            if from != store_id {
                return Err(format!(
                    "the master's database changed during a site snapshot ({store_id} → {from})"
                ));
            }
            let as_of = *first_as_of.get_or_insert(as_of);
            let progress = docs.last().map(|d| d.id);
            let batch = replicated(docs, changed);
            self.store.apply_site_page(&batch).await.map_err(text)?;
            if let Some(keep) = keep {
                let keep: HashSet<Uuid> = keep.into_iter().collect();
                let dropped = self
                    .store
                    .finish_site_resync(&keep, as_of)
                    .await
                    .map_err(text)?;
                tracing::info!(
                    kept = keep.len(),
                    dropped = dropped.len(),
                    checkpoint = as_of,
                    "the replica now holds this edge's site only"
                );
                changed.extend(dropped);
                return Ok(());
            }
            if progress.is_none() {
                return Err("a site snapshot page with neither documents nor an end".into());
            }
            after_id = progress;
        }
    }
}

/// The documents of an answer as the replica stores them, each noted in
/// `changed`.
fn replicated(docs: Vec<DocChange>, changed: &mut HashSet<Uuid>) -> Vec<Replicated> {
    docs.into_iter()
        .map(|d| {
            changed.insert(d.id);
            let refs = index_document(&d.kind, &d.body)
                .map(|k| k.refs)
                .unwrap_or_default();
            Replicated {
                doc: Document {
                    kind: d.kind,
                    id: d.id,
                    rev: d.rev,
                    seq: d.seq,
                    deleted: d.deleted,
                    owner: d.owner,
                    body: d.body,
                },
                refs,
            }
        })
        .collect()
}

fn text(e: impl std::fmt::Display) -> String {
    e.to_string()
}
