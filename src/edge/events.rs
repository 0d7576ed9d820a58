//! The edge's event log, synced to the master. Status changes are recorded
//! as they happen (coalesced per module and key while unsynced, in a log
//! bounded by `event_log_max`); the pusher sends unsynced events to the
//! master as soon as they are recorded and, after a reconnect, the backlog
//! in batches, marking each batch synced once the master acknowledged it.
//! The master stores each event once (by id), so a batch resent after a
//! lost acknowledgement is harmless.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::link::Peer;
use crate::proto::{RequestBody, WireEvent};
use crate::runtime::Runtime;
use crate::store::{Event, EventKind, Store};

/// Events per push.
const BATCH: u32 = 500;
/// Retry a failed push this often even without new events.
const RETRY: Duration = Duration::from_secs(5);
const CALL: Duration = Duration::from_secs(30);

pub struct EventSync {
    pub edge_id: Uuid,
    pub store: Store,
    pub max_events: u64,
    pub wake: Notify,
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl EventSync {
    /// Records every status change of the runtime until `stop`.
    pub async fn record(self: Arc<Self>, runtime: Runtime, stop: CancellationToken) {
        let mut changes = runtime.subscribe_all_status();
        loop {
            let change = tokio::select! {
                () = stop.cancelled() => return,
                c = changes.recv() => c,
            };
            let change = match change {
                Ok(c) => c,
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    tracing::warn!(
                        missed = n,
                        "status changes came faster than the event log could record them"
                    );
                    continue;
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            };
            let event = Event {
                id: Uuid::now_v7(),
                edge_id: self.edge_id,
                at_ms: now_ms(),
                module_id: Some(change.module),
                kind: EventKind::Status,
                key: Some(change.key),
                epoch: None,
                body: change.value.to_string(),
            };
            match self.store.log_event(&event, self.max_events).await {
                Ok(_) => self.wake.notify_one(),
                Err(e) => tracing::error!(error = %e, "cannot record an event"),
            }
        }
    }

    /// Pushes unsynced events over the current link until `stop`.
    pub async fn push(
        self: Arc<Self>,
        mut peer: watch::Receiver<Option<Peer>>,
        stop: CancellationToken,
    ) {
        loop {
            let current = peer.borrow_and_update().clone();
            if let Some(p) = current
                && let Err(e) = self.push_all(&p).await
            {
                tracing::debug!(error = %e, "event push interrupted; the events stay unsynced");
            }
            tokio::select! {
                () = stop.cancelled() => return,
                r = peer.changed() => if r.is_err() { return },
                () = self.wake.notified() => {}
                () = tokio::time::sleep(RETRY) => {}
            }
        }
    }

    async fn push_all(&self, peer: &Peer) -> Result<(), String> {
        loop {
            let batch = self
                .store
                .unsynced_events(0, BATCH)
                .await
                .map_err(|e| e.to_string())?;
            if batch.is_empty() {
                return Ok(());
            }
            let ids: Vec<Uuid> = batch.iter().map(|e| e.event.id).collect();
            let events = batch.into_iter().map(to_wire).collect();
            peer.request(RequestBody::Events { events }, CALL)
                .await
                .map_err(|e| e.to_string())?;
            self.store
                .mark_synced(&ids)
                .await
                .map_err(|e| e.to_string())?;
        }
    }
}

/// An event of the log as it crosses the link.
pub fn to_wire(e: crate::store::LoggedEvent) -> WireEvent {
    WireEvent {
        id: e.event.id,
        at_ms: e.event.at_ms,
        module_id: e.event.module_id,
        kind: e.event.kind.as_str().to_owned(),
        key: e.event.key,
        epoch: e.event.epoch,
        body: e.event.body,
        seq: Some(e.seq),
    }
}
