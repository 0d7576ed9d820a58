//! The master's table of connected edges.
//!
//! One entry per edge id, tagged with its session number. A second
//! connection for the same edge replaces the first: the old peer is closed
//! and `LinkLost { reason: Replaced }` is raised *before* the new
//! `LinkUp`, and the old session's teardown removes the entry only if it
//! still holds its own session number, so it can never clobber the new one.
//!
//! Events go to a [`LinkEvents`] sink, in order, as they happen: the
//! master's control loop takes each one at once (it only raises a flag in
//! the location's inbox), so no queue stands between them. Link-up and
//! link-lost come only from authenticated sessions; what unauthenticated
//! peers cause (`AuthFailed`) takes one of `AUTH_FAILED_QUEUED` slots, held
//! by the event until its consumer drops it, and is dropped and counted
//! (`outpost_channel_full_total{channel="link_events"}`) when none is free,
//! so strangers cannot fill a sink that queues them (a bounded channel,
//! which tests and benchmarks read).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, broadcast, mpsc};
use uuid::Uuid;

use super::master::MasterLinkEvent;
use super::peer::{CloseReason, Peer};
use crate::util::Unpoisoned;

/// What the master knows about a connected edge.
#[derive(Debug, Clone)]
pub struct EdgeInfo {
    pub edge_id: Uuid,
    pub session: u64,
    pub since: SystemTime,
    pub addr: SocketAddr,
    pub version: u16,
    pub boot_id: Uuid,
    /// The driver repository commit the edge reported (at connect, then
    /// after each repository sync).
    pub commit: Option<String>,
    /// Set when the edge authenticated with a rotated secret during its
    /// grace: what its operator must do.
    pub warning: Option<String>,
}

/// Where the registry reports link events. `deliver` is called with the
/// registry's table locked, so that a replacement's `LinkLost` and
/// `LinkUp` cannot interleave with another session's: it must return at
/// once and must not call back into the registry.
pub trait LinkEvents: Send + Sync + 'static {
    fn deliver(&self, event: MasterLinkEvent);
}

/// A bounded channel as the sink: an event that finds it full is dropped
/// and counted (`outpost_channel_full_total{channel="link_events"}`).
impl LinkEvents for mpsc::Sender<MasterLinkEvent> {
    fn deliver(&self, event: MasterLinkEvent) {
        if let Err(mpsc::error::TrySendError::Full(_)) = self.try_send(event) {
            metrics::counter!("outpost_channel_full_total", "channel" => "link_events", "outcome" => "dropped")
                .increment(1);
        }
    }
}

/// `AuthFailed` events that may wait in the event queue at once.
pub const AUTH_FAILED_QUEUED: usize = 256;

/// An event's place in a bounded share of a queue: freed when the last
/// copy of the event is dropped.
#[derive(Debug, Clone)]
pub struct QueueSlot(#[allow(dead_code, reason = "held for its drop")] Arc<OwnedSemaphorePermit>);

struct Entry {
    info: EdgeInfo,
    peer: Peer,
}

/// The last time two live processes authenticated as one edge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Duplicate {
    /// How many times since this master started.
    pub count: u64,
    /// The session that stood down, and the one that replaced it.
    pub stood_down: SocketAddr,
    pub replaced_by: SocketAddr,
    pub at: SystemTime,
}

/// At most this many edges' duplicate records (authenticated ids only, so
/// only a fleet this large could fill it), and as many refusal records
/// (ids of locations that exist only: an unknown id is not recorded).
const MAX_DUPLICATE_RECORDS: usize = 100_000;

/// Duplicates waiting for the master's audit follower; a follower that
/// lags this far behind loses the oldest, counted
/// (`outpost_channel_full_total{channel="duplicates"}`).
const DUPLICATE_FEED: usize = 64;

/// Handshakes refused for a location that exists: why the master did not
/// let its edge in, so an operator sees it next to the site.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusals {
    /// How many since this master started.
    pub count: u64,
    /// The last one's reason (never a secret: "wrong edge proof", a
    /// certificate naming another edge, a timeout).
    pub last_reason: String,
    pub last_addr: SocketAddr,
    pub at: SystemTime,
}

struct Inner {
    edges: Mutex<HashMap<Uuid, Entry>>,
    duplicates: Mutex<HashMap<Uuid, Duplicate>>,
    duplicate_feed: broadcast::Sender<(Uuid, Duplicate)>,
    refusals: Mutex<HashMap<Uuid, Refusals>>,
    changed: Notify,
    events: Box<dyn LinkEvents>,
    auth_failed: Arc<Semaphore>,
}

/// Shared handle to the registry.
#[derive(Clone)]
pub struct Registry(Arc<Inner>);

impl Registry {
    /// Link-up / link-lost / auth-failure events go to `events`.
    pub fn new(events: impl LinkEvents) -> Self {
        Self(Arc::new(Inner {
            edges: Mutex::new(HashMap::new()),
            duplicates: Mutex::new(HashMap::new()),
            duplicate_feed: broadcast::channel(DUPLICATE_FEED).0,
            refusals: Mutex::new(HashMap::new()),
            changed: Notify::new(),
            events: Box::new(events),
            auth_failed: Arc::new(Semaphore::new(AUTH_FAILED_QUEUED)),
        }))
    }

    /// Reports a failed handshake, if the queue has room for one more.
    pub(crate) fn auth_failed(
        &self,
        edge_id: Option<Uuid>,
        addr: SocketAddr,
        reason: String,
        failures: u64,
    ) {
        let Ok(permit) = self.0.auth_failed.clone().try_acquire_owned() else {
            metrics::counter!("outpost_channel_full_total", "channel" => "link_events", "outcome" => "dropped")
                .increment(1);
            return;
        };
        self.emit(MasterLinkEvent::AuthFailed {
            edge_id,
            addr,
            reason,
            at: SystemTime::now(),
            failures,
            slot: QueueSlot(Arc::new(permit)),
        });
    }

    pub(crate) fn emit(&self, ev: MasterLinkEvent) {
        self.0.events.deliver(ev);
    }

    /// Registers an authenticated link, replacing (and closing) any older
    /// link of the same edge.
    pub(crate) fn insert(&self, info: EdgeInfo, peer: Peer) {
        let old = {
            let mut edges = self.0.edges.lock_unpoisoned();
            // Event order matters to consumers: emit under the lock so a
            // concurrent replacement cannot interleave its events with ours.
            let old = edges.insert(
                info.edge_id,
                Entry {
                    info: info.clone(),
                    peer: peer.clone(),
                },
            );
            if let Some(old) = &old {
                self.emit(MasterLinkEvent::LinkLost {
                    edge_id: old.info.edge_id,
                    session: old.info.session,
                    reason: CloseReason::Replaced,
                    at: SystemTime::now(),
                });
            }
            self.emit(MasterLinkEvent::LinkUp {
                info,
                peer,
                at: SystemTime::now(),
            });
            old
        };
        if let Some(old) = old {
            old.peer.close(CloseReason::Replaced);
        }
        self.0.changed.notify_waiters();
    }

    /// Removes a link at its teardown, only if the entry is still its own.
    pub(crate) fn remove(&self, edge_id: Uuid, session: u64, reason: CloseReason) {
        let mut edges = self.0.edges.lock_unpoisoned();
        if edges
            .get(&edge_id)
            .is_some_and(|e| e.info.session == session)
        {
            edges.remove(&edge_id);
            self.emit(MasterLinkEvent::LinkLost {
                edge_id,
                session,
                reason,
                at: SystemTime::now(),
            });
            drop(edges);
            self.0.changed.notify_waiters();
        }
    }

    /// Records that a session of `edge_id` at `stood_down` stood down for
    /// another live process at `replaced_by`.
    pub(crate) fn note_duplicate(
        &self,
        edge_id: Uuid,
        stood_down: SocketAddr,
        replaced_by: SocketAddr,
    ) {
        let mut all = self.0.duplicates.lock_unpoisoned();
        if all.len() >= MAX_DUPLICATE_RECORDS && !all.contains_key(&edge_id) {
            return;
        }
        let count = all.get(&edge_id).map_or(0, |d| d.count) + 1;
        let duplicate = Duplicate {
            count,
            stood_down,
            replaced_by,
            at: SystemTime::now(),
        };
        all.insert(edge_id, duplicate.clone());
        drop(all);
        let _ = self.0.duplicate_feed.send((edge_id, duplicate));
    }

    /// Each duplicate as it is noted (the master records them in the
    /// site's audit log).
    pub fn subscribe_duplicates(&self) -> broadcast::Receiver<(Uuid, Duplicate)> {
        self.0.duplicate_feed.subscribe()
    }

    /// Records a handshake refused for `edge_id`, a location that exists.
    pub(crate) fn note_refusal(&self, edge_id: Uuid, addr: SocketAddr, reason: String) {
        let mut all = self.0.refusals.lock_unpoisoned();
        if all.len() >= MAX_DUPLICATE_RECORDS && !all.contains_key(&edge_id) {
            return;
        }
        let count = all.get(&edge_id).map_or(0, |r| r.count) + 1;
        all.insert(
            edge_id,
            Refusals {
                count,
                last_reason: reason,
                last_addr: addr,
                at: SystemTime::now(),
            },
        );
    }

    /// The handshakes refused for a location since this master started.
    pub fn refusals(&self, edge_id: Uuid) -> Option<Refusals> {
        self.0.refusals.lock_unpoisoned().get(&edge_id).cloned()
    }

    /// The last duplicate session of an edge, if it ever had one.
    pub fn duplicate(&self, edge_id: Uuid) -> Option<Duplicate> {
        self.0.duplicates.lock_unpoisoned().get(&edge_id).cloned()
    }

    /// The live link of an edge.
    pub fn peer(&self, edge_id: Uuid) -> Option<Peer> {
        self.0
            .edges
            .lock_unpoisoned()
            .get(&edge_id)
            .map(|e| e.peer.clone())
    }

    pub fn info(&self, edge_id: Uuid) -> Option<EdgeInfo> {
        self.0
            .edges
            .lock_unpoisoned()
            .get(&edge_id)
            .map(|e| e.info.clone())
    }

    /// Every connected edge.
    pub fn list(&self) -> Vec<EdgeInfo> {
        let mut v: Vec<_> = self
            .0
            .edges
            .lock_unpoisoned()
            .values()
            .map(|e| e.info.clone())
            .collect();
        v.sort_by_key(|i| i.edge_id);
        v
    }

    pub fn len(&self) -> usize {
        self.0.edges.lock_unpoisoned().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Records the commit an edge reported after a repository sync.
    pub fn set_commit(&self, edge_id: Uuid, commit: String) {
        if let Some(e) = self.0.edges.lock_unpoisoned().get_mut(&edge_id) {
            e.info.commit = Some(commit);
        }
    }

    /// The master's boot wait: returns once every edge in `expected` is
    /// connected, or after `wait`, with the ids still missing (those the
    /// failover logic may act on).
    pub async fn wait_for(&self, expected: &[Uuid], wait: Duration) -> Vec<Uuid> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            // Register interest before checking, so no change is missed.
            let notified = self.0.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let missing: Vec<Uuid> = {
                let edges = self.0.edges.lock_unpoisoned();
                expected
                    .iter()
                    .filter(|id| !edges.contains_key(id))
                    .copied()
                    .collect()
            };
            if missing.is_empty() {
                return missing;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return missing;
            }
        }
    }
}
