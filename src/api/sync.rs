//! What the master knows of each edge's copy of its data, for the console's
//! overview and `outpost status`: how far the edge's replica has been sent
//! the change feed (its lag is the master's last sequence number minus
//! that: changes of any site, since an edge's checkpoint passes other
//! sites' changes too; 0 means current), and how many events the edge's
//! log still holds unacknowledged.
//!
//! The master's link handler records both whenever an edge pulls changes
//! (on connection, on every "data model updated" notice, and every 5 s):
//! the pull names the edge's checkpoint, and a newer edge adds its count of
//! unsynced events. Nothing is known of an edge that has not pulled since
//! this master started, nor the unsynced count of an edge that predates
//! the field: those are `null`, shown as "—".
//!
//! Changes are published to the WebSocket's `sync` topic, only when a
//! value changed, so an idle fleet's periodic pulls send nothing.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde::Serialize;
use tokio::sync::broadcast;
use uuid::Uuid;

use crate::util::Unpoisoned;

/// One edge's replica position and unsynced events, as last reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct EdgeSync {
    pub edge_id: Uuid,
    /// The change feed's sequence number up to which the edge has been sent
    /// every change (its checkpoint, or the master's last sequence number
    /// when a pull came back with nothing more).
    pub replica_seq: i64,
    /// Events in the edge's log not yet acknowledged by the master; `None`
    /// from an edge that does not report it.
    pub unsynced: Option<u64>,
}

/// Every edge's [`EdgeSync`], shared by the link handler (writer) and the
/// API (reader), with a feed of changes.
#[derive(Clone)]
pub struct SyncFacts {
    edges: Arc<Mutex<HashMap<Uuid, EdgeSync>>>,
    changes: broadcast::Sender<EdgeSync>,
}

impl Default for SyncFacts {
    fn default() -> Self {
        Self::new()
    }
}

impl SyncFacts {
    pub fn new() -> SyncFacts {
        SyncFacts {
            edges: Arc::new(Mutex::new(HashMap::new())),
            changes: broadcast::channel(1024).0,
        }
    }

    /// Records a page of changes served to `edge_id`: it asked after
    /// `after`, got `sent` documents (the last with sequence number
    /// `last_doc`) of at most `limit`, while the master was at `last_seq`.
    /// A page shorter than `limit` is the end of the feed: the edge then
    /// has everything up to `last_seq`.
    pub fn served(&self, edge_id: Uuid, page: ServedPage, unsynced: Option<u64>) {
        let replica_seq = if page.sent < page.limit as usize {
            page.last_seq.max(page.last_doc.unwrap_or(page.after))
        } else {
            page.last_doc.unwrap_or(page.after)
        };
        let now = EdgeSync {
            edge_id,
            replica_seq,
            unsynced,
        };
        let old = self.edges.lock_unpoisoned().insert(edge_id, now);
        if old != Some(now) && self.changes.receiver_count() > 0 {
            let _ = self.changes.send(now);
        }
    }

    /// What is known of `edge_id`.
    pub fn get(&self, edge_id: Uuid) -> Option<EdgeSync> {
        self.edges.lock_unpoisoned().get(&edge_id).copied()
    }

    /// What is known of every edge.
    pub fn all(&self) -> Vec<EdgeSync> {
        self.edges.lock_unpoisoned().values().copied().collect()
    }

    /// Changes from now on (a receiver that lags loses the oldest).
    pub fn subscribe(&self) -> broadcast::Receiver<EdgeSync> {
        self.changes.subscribe()
    }
}

/// One page of the change feed as served to an edge.
#[derive(Debug, Clone, Copy)]
pub struct ServedPage {
    /// The edge's checkpoint (the request's `after`).
    pub after: i64,
    pub limit: u32,
    /// Documents sent.
    pub sent: usize,
    /// The sequence number of the last document sent.
    pub last_doc: Option<i64>,
    /// The master's last sequence number when it answered.
    pub last_seq: i64,
}

/// The lag of a replica at `replica_seq` behind a feed at `last_seq`.
pub(super) fn lag(last_seq: i64, replica_seq: i64) -> i64 {
    last_seq.saturating_sub(replica_seq).max(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(after: i64, sent: usize, last_doc: Option<i64>, last_seq: i64) -> ServedPage {
        ServedPage {
            after,
            limit: 2,
            sent,
            last_doc,
            last_seq,
        }
    }

    #[test]
    fn a_full_page_leaves_the_replica_behind_and_a_short_one_catches_up() {
        let facts = SyncFacts::new();
        let edge = crate::model::new_id();
        let mut rx = facts.subscribe();
        facts.served(edge, page(0, 2, Some(4), 9), Some(3));
        assert_eq!(facts.get(edge).unwrap().replica_seq, 4);
        assert_eq!(lag(9, 4), 5);
        facts.served(edge, page(4, 1, Some(9), 9), Some(0));
        assert_eq!(facts.get(edge).unwrap().replica_seq, 9);
        // The end of the feed: nothing newer than the master's last number.
        facts.served(edge, page(9, 0, None, 12), None);
        assert_eq!(facts.get(edge).unwrap().replica_seq, 12);
        assert_eq!(rx.try_recv().unwrap().replica_seq, 4);
        assert_eq!(rx.try_recv().unwrap().unsynced, Some(0));
        assert_eq!(rx.try_recv().unwrap().unsynced, None);
        // The same facts again publish nothing.
        facts.served(edge, page(9, 0, None, 12), None);
        assert!(rx.try_recv().is_err());
        assert_eq!(lag(3, 7), 0);
    }
}
