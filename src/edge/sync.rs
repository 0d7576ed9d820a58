//! The edge's replica, kept current over the link: on every connection, on
//! every "data model updated" notice from the master, and every
//! `POLL` as a backstop, the edge pulls the master's changes after its
//! checkpoint, page by page, and applies each page with its checkpoint in
//! one transaction (a link that drops mid-way resumes from the last page).
//! A fresh edge's first pull is its snapshot. Then the reconciler is poked:
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
use crate::proto::{RequestBody, ResponseBody};
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
        let mut cursor = self.store.last_seq().await.map_err(|e| e.to_string())?;
        let mut checked_upstream = false;
        // Reported to the master with every page: its console shows it.
        let unsynced = self
            .store
            .event_counts()
            .await
            .ok()
            .map(|(n, _)| n.max(0) as u64);
        loop {
            let answer = peer
                .request(
                    RequestBody::Changes {
                        after: cursor,
                        limit: self.page,
                        unsynced,
                    },
                    CALL,
                )
                .await
                .map_err(|e| e.to_string())?;
            let ResponseBody::Changes {
                store_id,
                docs,
                last_seq: _,
            } = answer
            else {
                return Err(format!("unexpected answer to changes: {answer:?}"));
            };
            if !checked_upstream {
                checked_upstream = true;
                let resume = self
                    .store
                    .begin_replication(store_id)
                    .await
                    .map_err(|e| e.to_string())?;
                if resume != cursor {
                    // A different master database: start again from nothing.
                    tracing::warn!(%store_id, "the master's database is not the one this replica copied: full resync");
                    cursor = resume;
                    continue;
                }
            }
            let Some(last) = docs.last().map(|d| d.seq) else {
                return Ok(changed);
            };
            let batch: Vec<Replicated> = docs
                .into_iter()
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
                .collect();
            self.store
                .apply_replicated(&batch, last)
                .await
                .map_err(|e| e.to_string())?;
            tracing::debug!(documents = batch.len(), checkpoint = last, "replicated");
            cursor = last;
        }
    }
}
