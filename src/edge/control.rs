//! The edge's side of control. The edge does not decide: it reports what it
//! runs when the master asks (every connection starts with that), and obeys
//! the master's decision, stopping its modules *before* it answers a
//! release. On its own it only ever starts: when the link is declared
//! disconnected it runs its site (autonomy), whatever it was told before.
//!
//! An assume or a release runs to completion once it has begun, on a task
//! of its own, whatever happens to the request that started it (a master
//! whose call timed out, a link that dropped): the site is never left half
//! started or half stopped. Changes run one at a time, in order; a report
//! never waits for one (it says which is under way), and a change under
//! an epoch older than the edge's is answered with the current state,
//! never carried out.
//!
//! At boot the edge runs nothing until the first connection decides, or
//! until the link is declared disconnected (no master within
//! `dead_after_ms` and one more failed attempt): an edge whose site the
//! master holds must not grab the devices just because it restarted.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::Mutex;
use uuid::Uuid;

use super::event_log::EventSync;
use crate::control::{Clock, Reason, Side};
use crate::proto::{PendingControl, ResponseBody, WireError};
use crate::reconciler::Reconciler;
use crate::runtime::Runtime;
use crate::store::Store;
use crate::util::Unpoisoned;

/// What the edge runs and the control epoch it was last told.
pub struct SiteControl {
    edge_id: Uuid,
    runtime: Runtime,
    /// Runs the site's modules while this edge holds it (`set_held`).
    reconciler: Reconciler,
    store: Store,
    clock: Clock,
    events: Arc<EventSync>,
    /// Held by one change at a time (assume, release, autonomy), in the
    /// order they came (tokio's mutex is fair). Never by a report.
    changing: Mutex<()>,
    /// The site runs here (set once a start has finished, cleared once a
    /// stop has).
    running: AtomicBool,
    /// The assume or release being carried out, for reports.
    pending: std::sync::Mutex<Option<PendingControl>>,
    /// The master serving our store said our location no longer exists:
    /// the site stays dark instead of running on its own.
    decommissioned: AtomicBool,
}

impl SiteControl {
    pub async fn new(
        edge_id: Uuid,
        runtime: Runtime,
        reconciler: Reconciler,
        store: Store,
        clock: Clock,
        events: Arc<EventSync>,
    ) -> Result<Self, crate::store::StoreError> {
        let epoch = store
            .control_state(edge_id)
            .await?
            .map_or(0, |s| s.epoch as u64);
        // The event log stamps every event with it.
        events.epoch.store(epoch, Ordering::Release);
        Ok(Self {
            edge_id,
            runtime,
            reconciler,
            store,
            clock,
            events,
            changing: Mutex::new(()),
            running: AtomicBool::new(false),
            pending: std::sync::Mutex::new(None),
            decommissioned: AtomicBool::new(false),
        })
    }

    /// The epoch this edge believes in (the last the master gave, 0: none
    /// yet); kept by the event log, which stamps every event with it.
    pub fn epoch(&self) -> u64 {
        self.events.epoch.load(Ordering::Acquire)
    }

    /// Refuses a request that acts on devices under another epoch. A
    /// request without one (an older peer, a local caller) passes.
    pub fn check_epoch(&self, sent: Option<u64>) -> Result<(), WireError> {
        match sent {
            Some(sent) if sent != self.epoch() => Err(WireError::StaleEpoch {
                sent,
                current: self.epoch(),
            }),
            _ => Ok(()),
        }
    }

    /// Whether the site runs here now (a start or stop under way counts
    /// once it has finished).
    pub async fn is_running(&self) -> bool {
        self.running.load(Ordering::Acquire)
    }

    /// Waits until the runtime follows the replica as it is now.
    pub async fn follow_documents(&self) {
        self.reconciler.settle().await;
    }

    /// The answer to the master's `ControlReport`, and to every assume and
    /// release: what runs now, without waiting for a change under way
    /// (which it names instead).
    pub fn report(&self) -> ResponseBody {
        let running = self.running.load(Ordering::Acquire);
        ResponseBody::ControlReport {
            running,
            devices_connected: if running {
                self.runtime.location_devices(Some(self.edge_id)).connected as u32
            } else {
                0
            },
            epoch: self.epoch(),
            pending: *self.pending.lock_unpoisoned(),
        }
    }

    /// The master says the edge controls from `epoch` on: record it, then
    /// start the site if it is not running. Carried out on a task of its
    /// own, so it completes even when the request is cancelled (the
    /// master's call timed out, the link dropped): only the waiting for
    /// it is dropped. Answered with the state afterwards; an assume under
    /// an epoch older than this edge's is only answered.
    pub async fn assume(
        self: &Arc<Self>,
        epoch: u64,
        reason: &str,
    ) -> Result<ResponseBody, WireError> {
        let reason = parse_reason(reason)?;
        let this = self.clone();
        run_detached(async move { this.change(true, epoch, reason).await }).await
    }

    /// The master takes the site from `epoch` on: stop every module (their
    /// device connections close) and only then record it and answer. Like
    /// [`SiteControl::assume`]: to completion, and a late one only answered.
    pub async fn release(
        self: &Arc<Self>,
        epoch: u64,
        reason: &str,
    ) -> Result<ResponseBody, WireError> {
        let reason = parse_reason(reason)?;
        let this = self.clone();
        run_detached(async move { this.change(false, epoch, reason).await }).await
    }

    /// One assume or release, after the changes before it.
    async fn change(
        &self,
        assume: bool,
        epoch: u64,
        reason: Reason,
    ) -> Result<ResponseBody, WireError> {
        let _turn = self.changing.lock().await;
        if epoch < self.epoch() {
            tracing::info!(
                epoch,
                current = self.epoch(),
                assume,
                "a late control change: answered with the current state"
            );
            return Ok(self.report());
        }
        *self.pending.lock_unpoisoned() = Some(PendingControl { assume, epoch });
        let result = if assume {
            match self.adopt(Side::Edge, epoch, reason).await {
                Ok(()) if !self.running.load(Ordering::Acquire) => self.start_site().await,
                other => other,
            }
        } else {
            self.stop_site().await;
            self.adopt(Side::Master, epoch, reason).await
        };
        *self.pending.lock_unpoisoned() = None;
        result.map(|()| self.report())
    }

    /// Another process with this edge's id took over the link: stop the
    /// site, without a change of controller (the master negotiates with
    /// the other process as it would with us).
    pub async fn stand_by(&self) {
        let _turn = self.changing.lock().await;
        self.stop_site().await;
    }

    /// The master that serves the store this edge replicates says this
    /// edge's location no longer exists: stop the site and keep it stopped,
    /// even without a master, until a master accepts this edge again.
    pub async fn decommission(&self) {
        let _turn = self.changing.lock().await;
        if !self.decommissioned.swap(true, Ordering::AcqRel) {
            tracing::error!(
                edge_id = %self.edge_id,
                "the master says this edge's location was deleted: its modules are stopped and it stays dark; it asks again every 5 minutes"
            );
        }
        self.stop_site().await;
    }

    /// A master accepted this edge again.
    pub fn recommission(&self) {
        if self.decommissioned.swap(false, Ordering::AcqRel) {
            tracing::warn!(edge_id = %self.edge_id, "a master accepts this edge again");
        }
    }

    /// The link is declared disconnected: run the site if it is not running
    /// (and this edge was not decommissioned).
    pub async fn autonomy(&self) {
        let _turn = self.changing.lock().await;
        if self.running.load(Ordering::Acquire) || self.decommissioned.load(Ordering::Acquire) {
            return;
        }
        tracing::warn!(edge_id = %self.edge_id, "no master: this edge runs its site on its own");
        if let Err(e) = self.start_site().await {
            tracing::error!(error = %e, "cannot run the site on its own");
        }
        self.record(serde_json::json!({
            "event": "autonomy",
            "epoch": self.epoch(),
        }))
        .await;
    }

    async fn adopt(&self, to: Side, epoch: u64, reason: Reason) -> Result<(), WireError> {
        let changed = self
            .store
            .adopt_controller(self.edge_id, to, epoch as i64, reason, self.clock.now_ms())
            .await
            .map_err(|e| match e {
                crate::store::StoreError::EpochConflict { actual, .. } => WireError::StaleEpoch {
                    sent: epoch,
                    current: actual.unwrap_or(0) as u64,
                },
                other => WireError::failed(format!("cannot record the decision: {other}")),
            })?;
        self.events.epoch.fetch_max(epoch, Ordering::AcqRel);
        if let Some(record) = changed {
            tracing::info!(controller = %to, epoch, %reason, "control decided by the master");
            self.record(serde_json::json!({
                "event": "controller",
                "from": record.from.map(Side::as_str),
                "to": to.as_str(),
                "epoch": epoch,
                "reason": reason.as_str(),
            }))
            .await;
        }
        Ok(())
    }

    /// Tells the reconciler this edge holds its site and waits until its
    /// modules run (with an empty replica, they start once the first
    /// snapshot arrives).
    async fn start_site(&self) -> Result<(), WireError> {
        self.reconciler.set_held(self.edge_id, true);
        self.reconciler.settle().await;
        self.running.store(true, Ordering::Release);
        tracing::info!("site running at this edge");
        Ok(())
    }

    /// A safety stop: stops every module at once with the reconciler held
    /// off, then tells it the site is no longer held, so it keeps them
    /// loaded but stopped.
    async fn stop_site(&self) {
        let paused = self.reconciler.pause().await;
        // Stopped modules keep their code and status, and hold no device
        // connection: starting again is quick when control comes back.
        let stops = self.runtime.modules().into_iter().map(|info| {
            let runtime = self.runtime.clone();
            async move {
                if let Err(e) = runtime.stop(info.id).await {
                    tracing::warn!(module = %info.id, error = %e, "cannot stop");
                }
            }
        });
        futures_util::future::join_all(stops).await;
        self.reconciler.set_held(self.edge_id, false);
        drop(paused);
        if self.running.swap(false, Ordering::AcqRel) {
            tracing::info!("site stopped at this edge");
        }
    }

    /// Through the event log's own recorder, which also hands the event to
    /// the pusher.
    async fn record(&self, body: serde_json::Value) {
        self.events.record_control(self.epoch() as i64, body).await;
    }
}

/// Runs a change of controller on a task of its own and waits for it:
/// dropping the wait (a cancelled request) leaves the change running.
async fn run_detached(
    change: impl Future<Output = Result<ResponseBody, WireError>> + Send + 'static,
) -> Result<ResponseBody, WireError> {
    tokio::spawn(change)
        .await
        .unwrap_or_else(|e| Err(WireError::failed(format!("the control change failed: {e}"))))
}

fn parse_reason(s: &str) -> Result<Reason, WireError> {
    Reason::parse(s).ok_or_else(|| WireError::bad_request(format!("unknown control reason '{s}'")))
}
