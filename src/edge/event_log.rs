//! The edge's event log, synced to the master. Status changes, finished
//! execs and driver errors are recorded as they happen (status coalesced
//! per module and key while unsynced, in a log bounded by `event_log_max`);
//! control changes through [`EventSync::record_control`]. The pusher sends unsynced events to the
//! master as soon as they are recorded and, after a reconnect, the backlog
//! in batches, marking each batch synced once the master acknowledged it.
//! The master stores each event once (by id), so a batch resent after a
//! lost acknowledgement is harmless. While the pusher keeps up, it pushes
//! what the recorder just wrote from memory ([`FreshEvents`]) instead of
//! reading it back; the log stays the truth, read again after any failure.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::control::Clock;
use crate::link::Peer;
use crate::proto::{RequestBody, WireEvent};
use crate::runtime::{Activity, Runtime, StatusChange};
use crate::store::{Event, EventKind, Store};
use crate::util::Unpoisoned as _;

/// Events per push.
const BATCH: u32 = 500;
/// Events written in one transaction at most.
const RECORD_BATCH: usize = 1000;
/// How long the recorder waits after an event for others to join its
/// batch (each transaction costs an fsync).
const RECORD_LINGER: Duration = Duration::from_millis(20);
/// How often the unsynced gauge is recounted.
const COUNTS_EVERY: Duration = Duration::from_secs(1);
const CALL: Duration = Duration::from_secs(30);

pub struct EventSync {
    pub edge_id: Uuid,
    pub store: Store,
    /// The control epoch this edge was last given (0: none yet), kept by
    /// [`crate::edge::SiteControl`]: every event is stamped with it, and
    /// the master judges events by it, never by this host's clock.
    pub epoch: AtomicU64,
    /// Stamps events' times (`at_ms`): shown to people, never judged.
    pub clock: Clock,
    pub max_events: u64,
    /// Offer unsynced events again this often even without new ones.
    pub retry: Duration,
    /// Wakes the pusher for what the recorder handed it; see
    /// [`EventSync::look_again`] for events written to the log otherwise.
    pub wake: Notify,
    pub fresh: FreshEvents,
}

/// Events at most held for a push from memory; more go by the log.
const FRESH_MAX: usize = 2 * BATCH as usize;

/// The events recorded since the pusher last read the log, to push them
/// without reading them back. Only a shortcut: when it cannot be sure that
/// it holds every unsynced event (before the pusher has read the log to
/// its end, after any failed push, when more than [`FRESH_MAX`] wait), it
/// gives nothing and the pusher reads the log. An event held here and
/// read from the log as well is pushed twice, which the master's
/// deduplication by id makes harmless.
#[derive(Default)]
pub struct FreshEvents(Mutex<Fresh>);

#[derive(Default)]
struct Fresh {
    /// Every unsynced event of the log is in `events` or being pushed.
    complete: bool,
    events: Vec<Event>,
}

impl FreshEvents {
    /// The recorder wrote `events` to the log, which coalesced them: of
    /// the status changes of one module and key, only the newest stays
    /// while unsynced. What is held coalesces the same way, so the master
    /// receives what the log would have given it.
    fn recorded(&self, events: &[Event]) {
        let kept = crate::store::coalesce(events);
        let newer: HashSet<(Uuid, &str)> = kept.iter().filter_map(|e| e.status_pair()).collect();
        let mut fresh = self.0.lock_unpoisoned();
        if !newer.is_empty() {
            let superseded = |e: &Event| e.status_pair().is_some_and(|p| newer.contains(&p));
            fresh.events.retain(|e| !superseded(e));
        }
        if fresh.events.len() + kept.len() > FRESH_MAX {
            *fresh = Fresh::default();
        } else {
            fresh.events.extend(kept.into_iter().cloned());
        }
    }

    /// The next batch to push, oldest first (empty: nothing is unsynced);
    /// `None` when the log has to be read instead.
    fn take(&self) -> Option<Vec<Event>> {
        let mut fresh = self.0.lock_unpoisoned();
        if !fresh.complete {
            return None;
        }
        let n = fresh.events.len().min(BATCH as usize);
        Some(fresh.events.drain(..n).collect())
    }

    /// The pusher reads the log, whose end holds all it holds; `to_end`
    /// once it has read it all.
    fn reading(&self, to_end: bool) {
        let mut fresh = self.0.lock_unpoisoned();
        fresh.complete = to_end;
        if !to_end {
            fresh.events.clear();
        }
    }

    /// Read the log next: a push failed (what it carried is still
    /// unsynced there), or it is time to look again.
    fn forget(&self) {
        *self.0.lock_unpoisoned() = Fresh::default();
    }
}

impl EventSync {
    /// Records every status change, finished exec and driver error of the
    /// runtime until `stop`. What arrives within `RECORD_LINGER` of an event
    /// or while the previous batch was being written goes into one batch,
    /// so a burst costs one transaction per batch, not one per event.
    pub async fn record(self: Arc<Self>, runtime: Runtime, stop: CancellationToken) {
        let mut changes = runtime.subscribe_all_status();
        let mut activity = runtime.subscribe_activity();
        let mut batch = Vec::new();
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                c = changes.recv() => if let Some(c) = received(c, "status changes") {
                    batch.push(self.status(c));
                },
                a = activity.recv() => if let Some(a) = received(a, "execs and driver errors") {
                    batch.push(self.activity(a));
                },
            }
            // A burst is one transaction, not one per event that happened to
            // arrive alone: give the next ones a moment to come.
            if !batch.is_empty() {
                tokio::time::sleep(RECORD_LINGER).await;
            }
            while batch.len() < RECORD_BATCH {
                let before = batch.len();
                if let Some(c) = waiting(changes.try_recv(), "status changes") {
                    batch.push(self.status(c));
                }
                if let Some(a) = waiting(activity.try_recv(), "execs and driver errors") {
                    batch.push(self.activity(a));
                }
                if batch.len() == before {
                    break;
                }
            }
            self.append(&batch).await;
            batch.clear();
        }
    }

    fn status(&self, c: StatusChange) -> Event {
        self.event(
            Some(c.module),
            EventKind::Status,
            Some(c.key),
            c.value.to_string(),
        )
    }

    /// Records a change of controller of this location (never dropped from
    /// the log). The control loop calls this; `body` says what changed
    /// (from, to, reason), `epoch` is the location's new control epoch.
    pub async fn record_control(&self, epoch: i64, body: serde_json::Value) {
        let mut event = self.event(None, EventKind::Control, None, body.to_string());
        event.epoch = Some(epoch);
        self.append(std::slice::from_ref(&event)).await;
    }

    fn event(
        &self,
        module_id: Option<Uuid>,
        kind: EventKind,
        key: Option<String>,
        body: String,
    ) -> Event {
        Event {
            id: Uuid::now_v7(),
            edge_id: self.edge_id,
            at_ms: self.clock.now_ms(),
            module_id,
            kind,
            key,
            epoch: Some(self.epoch.load(Ordering::Acquire) as i64),
            body,
        }
    }

    /// An exec result or a driver error as an event: the body is a small
    /// JSON object (`method`, `ok`, `result` or `error`; `message`,
    /// `failed`).
    fn activity(&self, a: Activity) -> Event {
        match a {
            Activity::Exec {
                module,
                method,
                result,
            } => self.event(
                Some(module),
                EventKind::Exec,
                None,
                exec_body(&method, &result),
            ),
            Activity::DriverError {
                module,
                message,
                failed,
            } => {
                let body = DriverErrorBody {
                    message: &message,
                    failed,
                };
                let body = serde_json::to_string(&body).unwrap_or_default();
                self.event(Some(module), EventKind::DriverError, None, body)
            }
        }
    }

    async fn append(&self, events: &[Event]) {
        if events.is_empty() {
            return;
        }
        match self.store.append_events(events, self.max_events).await {
            Ok(_) => {
                self.fresh.recorded(events);
                self.wake.notify_one()
            }
            Err(e) => {
                tracing::error!(error = %e, events = events.len(), "cannot record events")
            }
        }
    }

    /// Has the pusher read the log now, for events written to it by other
    /// means than this recorder (which hands its own to the pusher).
    pub fn look_again(&self) {
        self.fresh.forget();
        self.wake.notify_one();
    }

    /// Pushes unsynced events over the current link until `stop`.
    pub async fn push(
        self: Arc<Self>,
        mut peer: watch::Receiver<Option<Peer>>,
        stop: CancellationToken,
    ) {
        let mut counted = tokio::time::Instant::now() - COUNTS_EVERY;
        let mut look = tokio::time::Instant::now() + self.retry;
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
                () = tokio::time::sleep_until(look) => {}
            }
            // The log is read again every `retry`, however often the
            // recorder wakes the pusher: anything unsynced in it goes
            // within `retry` at worst, whatever memory holds.
            if tokio::time::Instant::now() >= look {
                self.fresh.forget();
                look = tokio::time::Instant::now() + self.retry;
            }
            // The gauge counts the unsynced rows: at most once a second,
            // not after every batch.
            if counted.elapsed() >= COUNTS_EVERY {
                counted = tokio::time::Instant::now();
                self.publish_counts().await;
            }
        }
    }

    /// Sets the `outpost_events_unsynced` gauge from the log.
    async fn publish_counts(&self) {
        if let Ok((unsynced, _)) = self.store.event_counts().await {
            metrics::gauge!("outpost_events_unsynced").set(unsynced as f64);
        }
    }

    async fn push_all(&self, peer: &Peer) -> Result<(), String> {
        loop {
            let events = match self.fresh.take() {
                Some(fresh) => fresh.into_iter().map(|e| wire(e, None)).collect(),
                None => self.read_unsynced().await?,
            };
            if events.is_empty() {
                return Ok(());
            }
            let ids: Vec<Uuid> = events.iter().map(|e| e.id).collect();
            let pushed = async {
                peer.request(RequestBody::Events { events }, CALL)
                    .await
                    .map_err(|e| e.to_string())?;
                self.store
                    .mark_synced(&ids)
                    .await
                    .map_err(|e| e.to_string())
            };
            if let Err(e) = pushed.await {
                self.fresh.forget();
                return Err(e);
            }
        }
    }

    /// The oldest unsynced events of the log, a batch at most.
    async fn read_unsynced(&self) -> Result<Vec<WireEvent>, String> {
        // Cleared first: what is recorded from here on is either in this
        // read or held for the next push, possibly both.
        self.fresh.reading(false);
        let batch = self
            .store
            .unsynced_events(0, BATCH)
            .await
            .map_err(|e| e.to_string())?;
        self.fresh.reading(batch.len() < BATCH as usize);
        Ok(batch.into_iter().map(to_wire).collect())
    }
}

/// The body of an exec event, written straight from borrowed fields: one
/// is written per exec on an edge, so no `Value` tree is built for it.
fn exec_body(method: &str, result: &Result<String, crate::runtime::ExecError>) -> String {
    let body = ExecBody {
        method,
        ok: result.is_ok(),
        result: result.as_ref().ok(),
        error: result.as_ref().err(),
    };
    // Strings, a bool and an `ExecError` always serialize.
    serde_json::to_string(&body).unwrap_or_default()
}

/// The body of an exec event.
#[derive(serde::Serialize)]
struct ExecBody<'a> {
    method: &'a str,
    ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    result: Option<&'a String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a crate::runtime::ExecError>,
}

/// The body of a driver-error event.
#[derive(serde::Serialize)]
struct DriverErrorBody<'a> {
    message: &'a str,
    failed: bool,
}

/// What a broadcast receiver had waiting, with a lag logged and skipped.
fn waiting<T>(r: Result<T, tokio::sync::broadcast::error::TryRecvError>, what: &str) -> Option<T> {
    match r {
        Ok(v) => Some(v),
        Err(tokio::sync::broadcast::error::TryRecvError::Lagged(n)) => {
            tracing::warn!(
                missed = n,
                "{what} came faster than the event log could record them"
            );
            None
        }
        Err(_) => None,
    }
}

/// What a broadcast receiver got, with a lag logged and skipped.
fn received<T>(r: Result<T, tokio::sync::broadcast::error::RecvError>, what: &str) -> Option<T> {
    match r {
        Ok(v) => Some(v),
        Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
            tracing::warn!(
                missed = n,
                "{what} came faster than the event log could record them"
            );
            None
        }
        // Cannot happen while `record` holds the runtime (which holds the
        // senders); the stop token ends the loop.
        Err(tokio::sync::broadcast::error::RecvError::Closed) => None,
    }
}

/// An event of the log as it crosses the link.
pub fn to_wire(e: crate::store::LoggedEvent) -> WireEvent {
    wire(e.event, Some(e.seq))
}

/// An event as it crosses the link; `seq`, its place in the log, is only
/// known (and only needed, by the master's pull) when it was read from it.
fn wire(e: Event, seq: Option<i64>) -> WireEvent {
    WireEvent {
        id: e.id,
        at_ms: e.at_ms,
        module_id: e.module_id,
        kind: e.kind.as_str().to_owned(),
        key: e.key,
        epoch: e.epoch,
        body: e.body,
        seq,
    }
}

#[cfg(test)]
mod tests {
    use super::{Event, FreshEvents, exec_body};
    use crate::runtime::ExecError;
    use crate::store::EventKind;
    use uuid::Uuid;

    fn event(kind: EventKind, module: Uuid, key: Option<&str>, body: &str) -> Event {
        Event {
            id: Uuid::now_v7(),
            edge_id: Uuid::nil(),
            at_ms: 0,
            module_id: Some(module),
            kind,
            key: key.map(str::to_owned),
            epoch: Some(1),
            body: body.into(),
        }
    }

    /// Memory coalesces status changes as the log does: within a batch,
    /// and against what it still holds; other events and other keys stay,
    /// in order.
    #[test]
    fn held_status_changes_coalesce_as_the_log_does() {
        let (m, other) = (Uuid::now_v7(), Uuid::now_v7());
        let fresh = FreshEvents::default();
        fresh.reading(true);
        let first = [
            event(EventKind::Status, m, Some("power"), "1"),
            event(EventKind::Exec, m, None, "{}"),
            event(EventKind::Status, m, Some("power"), "2"),
            event(EventKind::Status, m, Some("input"), "\"hdmi\""),
        ];
        fresh.recorded(&first);
        let second = [
            event(EventKind::Status, m, Some("power"), "3"),
            event(EventKind::Status, other, Some("power"), "4"),
        ];
        fresh.recorded(&second);
        let bodies: Vec<String> = fresh.take().unwrap().into_iter().map(|e| e.body).collect();
        assert_eq!(bodies, ["{}", "\"hdmi\"", "3", "4"]);
    }

    /// The bodies written from borrowed fields are the objects the event
    /// log has always held.
    #[test]
    fn exec_bodies_are_the_objects_they_always_were() {
        let ok: Result<String, ExecError> = Ok("{\"on\":true}".into());
        let failed: Result<String, ExecError> = Err(ExecError::Driver {
            message: "no \"power\"".into(),
        });
        let same = [
            (
                &ok,
                serde_json::json!({"method": "set", "ok": true, "result": "{\"on\":true}"}),
            ),
            (
                &failed,
                serde_json::json!({"method": "set", "ok": false, "error": failed.as_ref().unwrap_err()}),
            ),
        ];
        for (result, before) in same {
            let now: serde_json::Value = serde_json::from_str(&exec_body("set", result)).unwrap();
            assert_eq!(now, before);
        }
    }
}
