//! The edge's side of control. The edge does not decide: it reports what it
//! runs when the master asks (every connection starts with that), and obeys
//! the master's decision, stopping its modules *before* it answers a
//! release. On its own it only ever starts: when the link is declared
//! disconnected it runs its site (autonomy), whatever it was told before.
//!
//! At boot the edge runs nothing until the first connection decides, or
//! until the link is declared disconnected (no master within
//! `dead_after_ms` and one more failed attempt): an edge whose site the
//! master holds must not grab the devices just because it restarted.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::Mutex;
use uuid::Uuid;

use super::event_log::EventSync;
use crate::control::{Clock, Reason, Side};
use crate::proto::{ResponseBody, WireError};
use crate::reconciler::Reconciler;
use crate::runtime::Runtime;
use crate::store::{Event, EventKind, Store};

/// What the edge runs and the control epoch it was last told.
pub struct SiteControl {
    edge_id: Uuid,
    runtime: Runtime,
    /// Runs the site's modules while this edge holds it (`set_held`).
    reconciler: Reconciler,
    store: Store,
    clock: Clock,
    events: Arc<EventSync>,
    /// Held while the site starts or stops; `true` while the site runs here.
    running: Mutex<bool>,
    /// The last epoch the master gave (0: none yet).
    epoch: AtomicU64,
    /// The master serving our store said our location no longer exists:
    /// the site stays dark instead of running on its own.
    decommissioned: std::sync::atomic::AtomicBool,
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
        Ok(Self {
            edge_id,
            runtime,
            reconciler,
            store,
            clock,
            events,
            running: Mutex::new(false),
            epoch: AtomicU64::new(epoch),
            decommissioned: Default::default(),
        })
    }

    /// The epoch this edge believes in.
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
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

    /// Whether the site runs here now.
    pub async fn is_running(&self) -> bool {
        *self.running.lock().await
    }

    /// Waits until the runtime follows the replica as it is now.
    pub async fn follow_documents(&self) {
        self.reconciler.settle().await;
    }

    /// The answer to the master's `ControlReport`.
    pub async fn report(&self) -> ResponseBody {
        let running = self.running.lock().await;
        ResponseBody::ControlReport {
            running: *running,
            devices_connected: if *running {
                self.runtime.location_devices(Some(self.edge_id)).connected as u32
            } else {
                0
            },
            epoch: self.epoch(),
        }
    }

    /// The master says the edge controls from `epoch` on: record it, then
    /// start the site if it is not running.
    pub async fn assume(&self, epoch: u64, reason: &str) -> Result<(), WireError> {
        let reason = parse_reason(reason)?;
        let mut running = self.running.lock().await;
        self.adopt(Side::Edge, epoch, reason).await?;
        if !*running {
            self.start_site(&mut running).await?;
        }
        Ok(())
    }

    /// The master takes the site from `epoch` on: stop every module (their
    /// device connections close) and only then record it and answer.
    pub async fn release(&self, epoch: u64, reason: &str) -> Result<(), WireError> {
        let reason = parse_reason(reason)?;
        let mut running = self.running.lock().await;
        if epoch < self.epoch() {
            return Err(WireError::StaleEpoch {
                sent: epoch,
                current: self.epoch(),
            });
        }
        self.stop_site(&mut running).await;
        self.adopt(Side::Master, epoch, reason).await
    }

    /// Another process with this edge's id took over the link: stop the
    /// site, without a change of controller (the master negotiates with
    /// the other process as it would with us).
    pub async fn stand_by(&self) {
        let mut running = self.running.lock().await;
        self.stop_site(&mut running).await;
    }

    /// The master that serves the store this edge replicates says this
    /// edge's location no longer exists: stop the site and keep it stopped,
    /// even without a master, until a master accepts this edge again.
    pub async fn decommission(&self) {
        let mut running = self.running.lock().await;
        if !self.decommissioned.swap(true, Ordering::AcqRel) {
            tracing::error!(
                edge_id = %self.edge_id,
                "the master says this edge's location was deleted: its modules are stopped and it stays dark; it asks again every 5 minutes"
            );
        }
        self.stop_site(&mut running).await;
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
        let mut running = self.running.lock().await;
        if *running || self.decommissioned.load(Ordering::Acquire) {
            return;
        }
        tracing::warn!(edge_id = %self.edge_id, "no master: this edge runs its site on its own");
        if let Err(e) = self.start_site(&mut running).await {
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
        self.epoch.fetch_max(epoch, Ordering::AcqRel);
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
    async fn start_site(&self, running: &mut bool) -> Result<(), WireError> {
        self.reconciler.set_held(self.edge_id, true);
        self.reconciler.settle().await;
        *running = true;
        tracing::info!("site running at this edge");
        Ok(())
    }

    /// A safety stop: stops every module at once with the reconciler held
    /// off, then tells it the site is no longer held, so it keeps them
    /// loaded but stopped.
    async fn stop_site(&self, running: &mut bool) {
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
        if *running {
            tracing::info!("site stopped at this edge");
        }
        *running = false;
    }

    async fn record(&self, body: serde_json::Value) {
        let event = Event {
            id: Uuid::now_v7(),
            edge_id: self.edge_id,
            at_ms: self.clock.now_ms(),
            module_id: None,
            kind: EventKind::Control,
            key: None,
            epoch: Some(self.epoch() as i64),
            body: body.to_string(),
        };
        match self.store.log_event(&event, self.events.max_events).await {
            Ok(_) => self.events.wake.notify_one(),
            Err(e) => tracing::error!(error = %e, "cannot record a control event"),
        }
    }
}

fn parse_reason(s: &str) -> Result<Reason, WireError> {
    Reason::parse(s).ok_or_else(|| WireError::bad_request(format!("unknown control reason '{s}'")))
}
