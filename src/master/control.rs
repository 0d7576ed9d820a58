//! The master's control loop: one task per edge location, which alone
//! changes who controls that location (so decisions about one site are
//! made in order, and sites never wait for each other).
//!
//! - **On connection** it asks the edge what it runs, decides with
//!   [`negotiate`], and acts: when the edge wins, the master stops its own
//!   copies of the site's modules *before* it tells the edge to assume
//!   control; when the master wins, the edge stops its modules before it
//!   answers, and only then does the master connect to the devices (if the
//!   edge never answers, only after its link is declared dead).
//! - **On loss** of a location with `failover = true` it waits
//!   `failover_timeout_ms` (on the [`Clock`]) and takes over; a link that
//!   comes back first cancels that. At boot, a location whose edge did not
//!   come within the boot wait is taken over once its own
//!   `failover_timeout_ms` has passed since the master started (or since
//!   the edge was last seen by this master, if later).
//! - **Edits of a location** (its window, time zone, failover switch and
//!   timeout) take effect at once: the store's change feed wakes the
//!   location's task, which reschedules its window and its takeover.
//!   Turning failover on for a lost edge counts from when it was lost;
//!   turning it off cancels a pending takeover but never drops a site the
//!   master already holds.
//! - **Restore**: when a restore window opens while the master holds the
//!   site and the edge is connected, or when an operator restores it, the
//!   master stops its copies and then hands control to the edge.
//! - **Handover** (an operator, for planned work on the edge): the mirror of
//!   a restore. The master records itself, the edge releases, and only
//!   then does the master start.
//! - **Unconfirmed changes**: a control call that fails or times out on a
//!   link that is up is followed up by asking the edge for its state until
//!   it confirms (the edge finishes a change whatever became of the call);
//!   a hand-back unconfirmed after the location's failover timeout is
//!   taken back by a release, never while the edge's assume may complete.
//! - Every change goes through the store's epoch compare-and-set and its
//!   audit log; control held by the master survives a restart.
//! - **Hold-down**: a location that changed hands
//!   `max_control_changes_per_minute` times in the last minute is kept by
//!   the master when it holds it (see [`crate::control::held_down`]).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use tokio::sync::oneshot;

use super::inbox::{Delivery, INBOX, Inbox, Mailbox, Pending, inbox};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use uuid::Uuid;

use crate::api::{ControlLoop, RestoreError};
use crate::control::{Clock, Facts, HOLD_DOWN_PERIOD_MS, Reason, Side, held_down, negotiate};
use crate::link::{CallError, MasterLinkEvent, Peer};
use crate::model::{EdgeLocation, Kind};
use crate::proto::{RequestBody, ResponseBody, WireError};
use crate::reconciler::Reconciler;
use crate::runtime::Runtime;
use crate::store::{ControlRecord, ControlState, Store, StoreError};
use crate::util::{Unpoisoned, UnpoisonedRw};

/// The site audit log's action for an edge's graceful stop.
const PLANNED: &str = "planned_stop";

/// After a failed hand-back, or while a change is not confirmed, try (or
/// ask) again this much later.
const RETRY_MS: i64 = 1_000;

enum Msg {
    /// An operator (the API key's user, when known) restores the site.
    Restore(Reply, Option<String>),
    /// An operator hands the site to the master (planned work on the edge).
    Handover(Reply, Option<String>),
}

type Reply = oneshot::Sender<Result<ControlRecord, RestoreError>>;

struct ControlShared {
    store: Store,
    runtime: Runtime,
    /// Runs the sites this master holds (told through `set_held`).
    reconciler: Reconciler,
    clock: Clock,
    max_changes: u32,
    /// How long a control request may take (`control_call_ms`).
    call: Duration,
    /// This node's name, in the record of edges linked to it.
    node_id: String,
    /// When this master started (clock ms): the boot rule counts from it.
    started_ms: i64,
    booted: AtomicBool,
    stop: CancellationToken,
    tasks: TaskTracker,
    /// Each location task's inbox (bounded; see `master/inbox.rs`).
    actors: Mutex<HashMap<Uuid, Inbox<Msg>>>,
    /// Every location's control state as this master last wrote or read
    /// it (epoch checks on link requests read it without a query).
    states: RwLock<HashMap<Uuid, ControlState>>,
    /// Takeovers scheduled, by location (clock ms).
    due: RwLock<HashMap<Uuid, i64>>,
    /// Since when each absent edge has been away (clock ms).
    absent: RwLock<HashMap<Uuid, i64>>,
    /// How each absent edge's link ended: `planned` (it said it was
    /// restarting) or `lost`.
    stops: RwLock<HashMap<Uuid, &'static str>>,
    /// When each edge last stopped on purpose (clock ms), as recorded in
    /// the site audit log (so a restarted master knows it too).
    planned: RwLock<HashMap<Uuid, i64>>,
    /// Sites in maintenance (no takeover), since when (clock ms).
    maintenance: RwLock<HashMap<Uuid, i64>>,
}

/// The configuration a control loop reads.
pub struct ControlSettings {
    /// `max_control_changes_per_minute` (the hold-down).
    pub max_changes: u32,
    /// `control_call_ms`.
    pub call: Duration,
    /// This node's name (`Config::node_name`).
    pub node_id: String,
}

/// How a location's task begins.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Begin {
    /// The edge is away and the master does not run the site.
    Absent,
    /// The master held the site and runs it again.
    Running,
    /// The master held the site while the edge was linked to a master
    /// (so the edge runs it on its own now): wait for the edge, or for
    /// its failover timeout.
    AwaitingEdge,
}

/// A handle on the master's control loop.
#[derive(Clone)]
pub struct Control(Arc<ControlShared>);

impl Control {
    pub fn new(
        store: Store,
        runtime: Runtime,
        reconciler: Reconciler,
        clock: Clock,
        settings: ControlSettings,
        stop: CancellationToken,
        tasks: TaskTracker,
    ) -> Control {
        let ControlSettings {
            max_changes,
            call,
            node_id,
        } = settings;
        Control(Arc::new(ControlShared {
            store,
            runtime,
            started_ms: clock.now_ms(),
            reconciler,
            clock,
            max_changes,
            call,
            node_id,
            booted: AtomicBool::new(false),
            stop,
            tasks,
            actors: Mutex::new(HashMap::new()),
            states: RwLock::new(HashMap::new()),
            due: RwLock::new(HashMap::new()),
            absent: RwLock::new(HashMap::new()),
            stops: RwLock::new(HashMap::new()),
            planned: RwLock::new(HashMap::new()),
            maintenance: RwLock::new(HashMap::new()),
        }))
    }

    /// Starts a task for every location and, before any edge can connect,
    /// runs the sites the master held when it stopped (or when the node
    /// it takes over from stopped), except those whose edge was linked to
    /// it: that edge ran its site on its own when the link ended, so its
    /// task waits for it to reconnect, or for its failover timeout.
    pub async fn resume(&self, locations: &[Uuid]) -> Result<(), StoreError> {
        let states = self.0.store.control_states().await?;
        let linked: HashMap<Uuid, String> = self.0.store.edge_links().await?.into_iter().collect();
        let (awaited, held): (Vec<Uuid>, Vec<Uuid>) = states
            .iter()
            .filter(|s| s.controller == Side::Master)
            .map(|s| s.edge_id)
            .partition(|id| linked.contains_key(id));
        for id in &awaited {
            tracing::warn!(edge = %id, node = %linked[id], "this site's edge was linked to a master holding it, so it runs the site on its own now: waiting for it to reconnect (or for its failover timeout)");
        }
        self.0
            .states
            .write_unpoisoned()
            .extend(states.into_iter().map(|s| (s.edge_id, s)));
        let maintenance = self.0.store.sites_in_maintenance().await?;
        self.0.maintenance.write_unpoisoned().extend(maintenance);
        // How each edge's last stop went, from before this master started:
        // every edge is away now, and stays so reported until it connects.
        let (last, planned) = self.0.store.last_stops().await?;
        self.0.stops.write_unpoisoned().extend(
            last.into_iter()
                .map(|(id, how, _)| (id, if how == PLANNED { "planned" } else { "lost" })),
        );
        self.0.planned.write_unpoisoned().extend(planned);
        for id in &held {
            tracing::info!(edge = %id, "this master held the site when it stopped: running it again");
            self.0.reconciler.set_held(*id, true);
        }
        if !held.is_empty() {
            self.0.reconciler.settle().await;
        }
        for id in locations {
            let begin = if held.contains(id) {
                Begin::Running
            } else if awaited.contains(id) {
                Begin::AwaitingEdge
            } else {
                Begin::Absent
            };
            self.actor(*id, begin);
        }
        Ok(())
    }

    /// The boot wait is over: schedule the takeover of the locations whose
    /// edge did not come (where failover allows, each at its own timeout),
    /// then negotiate as a booted master.
    pub fn booted(&self, missing: &[Uuid]) {
        for id in missing {
            self.actor(*id, Begin::Absent)
                .raise(|p| p.missing_at_boot = true);
        }
        self.0.booted.store(true, Ordering::Release);
    }

    /// True once the boot wait is over.
    pub fn is_booted(&self) -> bool {
        self.0.booted.load(Ordering::Acquire)
    }

    /// Follows the store's change feed from `after` and wakes the task of
    /// every edge location that changed, so edits take effect at once.
    /// Commits through this process wake it at once; other processes'
    /// (`outpost admin import`) within `poll`.
    pub async fn follow_locations(self, mut after: i64, poll: Duration) {
        let mut commits = self.0.store.subscribe_commits();
        loop {
            tokio::select! {
                () = self.0.stop.cancelled() => return,
                r = commits.changed() => if r.is_err() { return },
                () = tokio::time::sleep(poll) => {}
            }
            loop {
                let docs = match self.0.store.changes_since(after, 500).await {
                    Ok(docs) => docs,
                    Err(e) => {
                        tracing::debug!(error = %e, "cannot read the change feed for now");
                        break;
                    }
                };
                let Some(last) = docs.last().map(|d| d.seq) else {
                    break;
                };
                after = last;
                for d in docs.iter().filter(|d| d.kind == Kind::Edge.as_str()) {
                    self.edited(d.id);
                }
            }
        }
    }

    /// The control loop as the link registry's event sink (also
    /// publishing each event to the API's WebSocket subscribers through
    /// `links`).
    pub fn link_events(
        &self,
        links: tokio::sync::broadcast::Sender<crate::api::LinkNotice>,
    ) -> LinkFollower {
        LinkFollower {
            control: self.clone(),
            links,
        }
    }

    /// Hands a site the master holds back to its (connected) edge now.
    pub async fn restore(&self, edge_id: Uuid) -> Result<ControlRecord, RestoreError> {
        self.restore_by(edge_id, None).await
    }

    /// [`Control::restore`], recording `by` as its author in the control
    /// log with the change itself.
    pub async fn restore_by(
        &self,
        edge_id: Uuid,
        by: Option<&str>,
    ) -> Result<ControlRecord, RestoreError> {
        let by = by.map(str::to_owned);
        self.ask(edge_id, |reply| Msg::Restore(reply, by)).await
    }

    /// Hands a site its (connected) edge controls to the master now, for
    /// planned work on the edge: the edge releases it (stops its modules),
    /// and only then does the master start its copies. Unconfirmed, the
    /// master keeps asking and starts once the edge confirms, or once its
    /// link is declared dead.
    pub async fn handover(&self, edge_id: Uuid) -> Result<ControlRecord, RestoreError> {
        self.handover_by(edge_id, None).await
    }

    /// [`Control::handover`], recording `by` as its author with the change
    /// itself: an unconfirmed release (502) keeps its author too.
    pub async fn handover_by(
        &self,
        edge_id: Uuid,
        by: Option<&str>,
    ) -> Result<ControlRecord, RestoreError> {
        let by = by.map(str::to_owned);
        self.ask(edge_id, |reply| Msg::Handover(reply, by)).await
    }

    async fn ask(
        &self,
        edge_id: Uuid,
        msg: impl FnOnce(Reply) -> Msg,
    ) -> Result<ControlRecord, RestoreError> {
        match self.0.store.get(edge_id).await? {
            Some(d) if d.kind == Kind::Edge.as_str() => {}
            _ => return Err(RestoreError::NoSuchLocation(edge_id)),
        }
        let (tx, rx) = oneshot::channel();
        self.send(edge_id, msg(tx)).await;
        rx.await.unwrap_or(Err(RestoreError::Stopping))
    }

    /// The control state of a location as this master knows it.
    pub fn state(&self, edge_id: Uuid) -> Option<ControlState> {
        self.0.states.read_unpoisoned().get(&edge_id).copied()
    }

    /// When the master will take a lost location over (clock ms), if a
    /// takeover is scheduled.
    pub fn takeover_due(&self, edge_id: Uuid) -> Option<i64> {
        self.0.due.read_unpoisoned().get(&edge_id).copied()
    }

    /// Since when (clock ms) the edge of a location has been away from
    /// this master: its start, or when its link was lost; `None` while it
    /// is connected (or its task has not started).
    pub fn absent_since(&self, edge_id: Uuid) -> Option<i64> {
        self.0.absent.read_unpoisoned().get(&edge_id).copied()
    }

    /// How the absent edge of a location went away: `planned` (a graceful
    /// stop, which said it was a restart) or `lost`; `None` while it is
    /// connected, or never came.
    pub fn last_stop(&self, edge_id: Uuid) -> Option<&'static str> {
        self.0.stops.read_unpoisoned().get(&edge_id).copied()
    }

    /// When (clock ms) the edge of a location last stopped on purpose (a
    /// graceful stop saying it would restart), before or since this
    /// master started.
    pub fn last_planned_stop(&self, edge_id: Uuid) -> Option<i64> {
        self.0.planned.read_unpoisoned().get(&edge_id).copied()
    }

    /// Since when (ms) a location is in maintenance: no takeover while it is.
    pub fn in_maintenance(&self, edge_id: Uuid) -> Option<i64> {
        self.0.maintenance.read_unpoisoned().get(&edge_id).copied()
    }

    /// Puts a location in maintenance (`on`) or takes it out, recorded in
    /// the site audit log with `by`. In maintenance the master does not take
    /// the site over, however long its edge is away (a pending takeover is
    /// cancelled); out of it, a lost edge's takeover is due its failover
    /// timeout after the loss, as if maintenance had never been. Returns
    /// since when the site is in maintenance (`None`: not).
    pub async fn set_maintenance(
        &self,
        edge_id: Uuid,
        on: bool,
        by: Option<&str>,
    ) -> Result<Option<i64>, RestoreError> {
        match self.0.store.get(edge_id).await? {
            Some(d) if d.kind == Kind::Edge.as_str() => {}
            _ => return Err(RestoreError::NoSuchLocation(edge_id)),
        }
        let now = self.0.clock.now_ms();
        if self.in_maintenance(edge_id).is_some() != on {
            let action = if on {
                "maintenance_on"
            } else {
                "maintenance_off"
            };
            self.0
                .store
                .record_site_action(edge_id, action, now, by)
                .await?;
            let mut map = self.0.maintenance.write_unpoisoned();
            if on {
                map.insert(edge_id, now);
            } else {
                map.remove(&edge_id);
            }
            tracing::warn!(edge = %edge_id, on, by, "maintenance");
        }
        self.edited(edge_id);
        Ok(self.in_maintenance(edge_id))
    }

    /// The edge on link `session` says it is stopping on purpose.
    /// Never waits: the link's reader calls it.
    pub fn stopping(&self, edge_id: Uuid, session: u64, restart: bool) {
        self.actor(edge_id, Begin::Absent)
            .raise(|p| p.stopping = Some((session, restart)));
    }

    /// A location's document changed (or may have): its task reschedules.
    fn edited(&self, edge_id: Uuid) {
        self.actor(edge_id, Begin::Absent)
            .raise(|p| p.edited = true);
    }

    /// Refuses a request from `edge_id`'s link that carries an epoch other
    /// than the location's current one.
    pub fn check_epoch(&self, edge_id: Uuid, sent: Option<u64>) -> Result<(), WireError> {
        let current = self.state(edge_id).map_or(0, |s| s.epoch as u64);
        match sent {
            Some(sent) if sent != current => Err(WireError::StaleEpoch { sent, current }),
            _ => Ok(()),
        }
    }

    async fn send(&self, edge_id: Uuid, msg: Msg) {
        let inbox = self.actor(edge_id, Begin::Absent);
        inbox.send(msg).await;
    }

    /// The task of a location, started on first use (a location created
    /// after boot, an unknown edge id that authenticated anyway).
    fn actor(&self, edge_id: Uuid, begin: Begin) -> Inbox<Msg> {
        let mut actors = self.0.actors.lock_unpoisoned();
        if let Some(tx) = actors.get(&edge_id)
            && !tx.is_closed()
        {
            return tx.clone();
        }
        let (tx, rx) = inbox(INBOX);
        actors.insert(edge_id, tx.clone());
        let recorded_planned = self.0.stops.read_unpoisoned().get(&edge_id) == Some(&"planned");
        let actor = Location {
            id: edge_id,
            sh: self.0.clone(),
            link: None,
            running: begin == Begin::Running,
            awaiting_edge: begin == Begin::AwaitingEdge,
            link_recorded: false,
            failover_at: None,
            absent_since: Some(self.0.started_ms),
            watching: false,
            seen: false,
            retry_at: None,
            unconfirmed: None,
            planned_stop: false,
            recent: VecDeque::new(),
            author: None,
            recorded_planned,
        };
        self.0.tasks.spawn(actor.run(rx));
        tx
    }
}

/// An assume or release the edge did not confirm (its call failed or timed
/// out). The edge carries it out whatever became of the call, so the
/// master asks for its state until the edge confirms, never guessing.
#[derive(Debug, Clone, Copy)]
struct Unconfirmed {
    /// `true`: a hand-back (assume); `false`: a release.
    assume: bool,
    epoch: u64,
    reason: Reason,
    /// When it was sent (clock ms): a hand-back is taken back after the
    /// location's failover timeout.
    since_ms: i64,
}

/// One location's control task.
struct Location {
    id: Uuid,
    sh: Arc<ControlShared>,
    link: Option<Peer>,
    /// The master runs this location's modules.
    running: bool,
    /// The master holds the site but does not run it: the edge may (see
    /// [`Begin::AwaitingEdge`]). It starts at the failover timeout.
    awaiting_edge: bool,
    /// This link is recorded in the store's edge links (the master holds
    /// the site while it is up); forgotten when it ends.
    link_recorded: bool,
    /// Take over at this time (clock ms) unless the edge comes back.
    failover_at: Option<i64>,
    /// Since when the edge has been away (clock ms): the master's start,
    /// or when its link was lost; `None` while connected.
    absent_since: Option<i64>,
    /// Failover applies to this absence (the link was lost, or the boot
    /// wait ended without the edge).
    watching: bool,
    /// The edge connected to this master at least once.
    seen: bool,
    /// Try a due hand-back again (or ask after an unconfirmed change) at
    /// this time.
    retry_at: Option<i64>,
    /// A change sent to the edge that it has not confirmed yet.
    unconfirmed: Option<Unconfirmed>,
    /// The edge on the current link said it is stopping on purpose.
    planned_stop: bool,
    /// When the recent changes of controller happened (hold-down).
    recent: VecDeque<i64>,
    /// The operator whose restore or handover is being carried out: the
    /// change it commits is recorded with them.
    author: Option<String>,
    /// The newest stop in the site audit log is a planned one (a loss is
    /// recorded only after one, so the log says how the last stop went
    /// without a row per flap).
    recorded_planned: bool,
}

impl Location {
    async fn run(mut self, mut inbox: Mailbox<Msg>) {
        self.set_absent(self.absent_since);
        if self.awaiting_edge {
            self.watching = true;
            self.schedule(true).await;
        }
        if let Ok(log) = self.sh.store.control_log(self.id, None, 64).await {
            let since = self.sh.clock.now_ms() - HOLD_DOWN_PERIOD_MS;
            self.recent = log
                .iter()
                .rev()
                .map(|r| r.at_ms)
                .filter(|&at| at > since)
                .collect();
        }
        loop {
            let wake = self.next_wake().await;
            let clock = self.sh.clock.clone();
            let timer = async move {
                match wake {
                    Some(at) => clock.sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = self.sh.stop.cancelled() => return,
                delivery = inbox.recv() => match delivery {
                    Some(Delivery::Message(msg)) => self.on(msg).await,
                    Some(Delivery::Flags(raised)) => self.on_flags(raised).await,
                    None => return,
                },
                () = timer => self.on_timer().await,
            }
        }
    }

    fn state(&self) -> Option<ControlState> {
        self.sh.states.read_unpoisoned().get(&self.id).copied()
    }

    fn set_due(&mut self, at: Option<i64>) {
        self.failover_at = at;
        let mut due = self.sh.due.write_unpoisoned();
        match at {
            Some(at) => due.insert(self.id, at),
            None => due.remove(&self.id),
        };
    }

    fn set_absent(&mut self, since: Option<i64>) {
        self.absent_since = since;
        let mut absent = self.sh.absent.write_unpoisoned();
        match since {
            Some(at) => absent.insert(self.id, at),
            None => absent.remove(&self.id),
        };
    }

    /// Records how the link ended: a planned stop (the edge said it was
    /// restarting) or a loss. Either way the failover timeout applies: a
    /// restart usually comes back within it. Planned stops go to the site
    /// audit log (a master restarted meanwhile still knows), and a loss
    /// right after one, so the log's newest stop is always how the last
    /// one went.
    async fn record_stop(&mut self) {
        let planned = std::mem::take(&mut self.planned_stop);
        let how = if planned {
            tracing::info!(edge = %self.id, "the edge stopped on purpose (a restart): the failover timeout applies as usual");
            "planned"
        } else {
            "lost"
        };
        metrics::counter!("outpost_edge_stops_total", "how" => how).increment(1);
        self.sh.stops.write_unpoisoned().insert(self.id, how);
        let now = self.sh.clock.now_ms();
        if planned {
            self.sh.planned.write_unpoisoned().insert(self.id, now);
        }
        if !planned && !self.recorded_planned {
            return;
        }
        let action = if planned { PLANNED } else { "lost_stop" };
        match self
            .sh
            .store
            .record_site_action(self.id, action, now, None)
            .await
        {
            Ok(()) => self.recorded_planned = planned,
            Err(e) => {
                tracing::error!(edge = %self.id, error = %e, "cannot record the edge's stop in the audit log")
            }
        }
    }

    /// In maintenance: no takeover.
    fn serviced(&self) -> bool {
        self.sh.maintenance.read_unpoisoned().contains_key(&self.id)
    }

    fn holds(&self) -> bool {
        self.state().is_some_and(|s| s.controller == Side::Master)
    }

    async fn location(&self) -> Option<EdgeLocation> {
        match self.sh.store.get(self.id).await {
            Ok(Some(d)) if d.kind == Kind::Edge.as_str() => d.parse().ok(),
            _ => None,
        }
    }

    /// The next time something is due: a takeover, or (while the master
    /// holds the site and the edge is connected) a window opening.
    async fn next_wake(&self) -> Option<i64> {
        let mut wake = self.failover_at;
        let mut earliest = |t: i64| wake = Some(wake.map_or(t, |w| w.min(t)));
        if let Some(t) = self.retry_at {
            earliest(t);
        }
        if self.holds()
            && self.link.is_some()
            && let Some(window) = self.location().await.and_then(|l| l.restore_window())
        {
            let now = self.sh.clock.now();
            if window.open_at(now).is_some() {
                // Due now, unless a failed hand-back waits for its retry.
                if self.retry_at.is_none() {
                    earliest(now.timestamp_millis());
                }
            } else if let Some(next) = window.next_open(now) {
                earliest(next.timestamp_millis());
            }
        }
        wake
    }

    /// The edge on link `session` said it stops (`restart`: on purpose).
    fn note_stopping(&mut self, stopping: Option<(u64, bool)>) {
        if let Some((session, restart)) = stopping
            && self.link.as_ref().map(|p| p.meta().session) == Some(session)
        {
            self.planned_stop = restart;
        }
    }

    async fn link_up(&mut self, peer: Peer) {
        self.set_due(None);
        self.set_absent(None);
        self.watching = false;
        self.seen = true;
        self.retry_at = None;
        // The negotiation's report is the edge's state now.
        self.unconfirmed = None;
        self.planned_stop = false;
        self.awaiting_edge = false; // negotiation decides now
        self.sh.stops.write_unpoisoned().remove(&self.id);
        self.link = Some(peer.clone());
        self.negotiate(&peer).await;
    }

    /// Every link up to session `through` was lost.
    async fn link_lost(&mut self, through: u64) {
        if self
            .link
            .as_ref()
            .is_none_or(|p| p.meta().session > through)
        {
            return; // no link, or a newer one than those lost
        }
        self.link = None;
        self.retry_at = None;
        self.unconfirmed = None;
        self.forget_link().await;
        self.record_stop().await;
        self.set_absent(Some(self.sh.clock.now_ms()));
        self.watching = true;
        if self.holds() {
            // The edge went silent before it confirmed a release:
            // its link is now declared dead, so the devices are ours.
            if !self.running {
                self.start().await;
            }
            return;
        }
        self.schedule(true).await;
    }

    async fn on(&mut self, msg: Msg) {
        match msg {
            Msg::Restore(reply, by) => {
                self.author = by;
                let result = if !self.holds() {
                    Err(RestoreError::NotHeld(self.id))
                } else if let Some(peer) = self.link.clone() {
                    self.hand_back(&peer, Reason::ManualRestore).await
                } else {
                    Err(RestoreError::NotConnected(self.id))
                };
                self.author = None;
                let _ = reply.send(result);
            }
            Msg::Handover(reply, by) => {
                self.author = by;
                let result = match self.link.clone() {
                    _ if self.holds() => Err(RestoreError::MasterHolds(self.id)),
                    Some(peer) => self.hand_over(&peer).await,
                    None => Err(RestoreError::NotConnected(self.id)),
                };
                self.author = None;
                let _ = reply.send(result);
            }
        }
    }

    /// Raised flags, in the order they matter: the edge's word that it
    /// stops (before the loss of its link), the loss of links, a newer
    /// link, the end of the boot wait, an edit.
    async fn on_flags(&mut self, raised: Pending) {
        self.note_stopping(raised.stopping);
        if let Some(through) = raised.lost_through {
            self.link_lost(through).await;
        }
        // A link lost as soon as it came up was never this task's to use.
        if let Some(peer) = raised.link_up
            && raised.lost_through < Some(peer.meta().session)
        {
            self.link_up(peer).await;
            self.note_stopping(raised.stopping);
        }
        if raised.missing_at_boot && self.link.is_none() {
            self.watching = true;
            self.schedule(true).await;
        }
        if raised.edited {
            self.schedule(false).await;
        }
    }

    /// The master records itself as controller, tells the edge to release,
    /// and starts its copies once the edge confirms (see
    /// [`Location::release`]).
    async fn hand_over(&mut self, peer: &Peer) -> Result<ControlRecord, RestoreError> {
        let reason = Reason::ManualHandover;
        let record = self
            .change(self.state().map(|s| s.epoch), Side::Master, reason)
            .await?;
        tracing::info!(edge = %self.id, epoch = record.epoch, "an operator hands the site to the master");
        self.release(peer, record.epoch as u64, reason).await;
        match self.unconfirmed {
            Some(_) => Err(RestoreError::NotReleased(format!(
                "control epoch {}",
                record.epoch
            ))),
            None => Ok(record),
        }
    }

    async fn on_timer(&mut self) {
        let now = self.sh.clock.now_ms();
        if self.failover_at.is_some_and(|t| t <= now) {
            self.set_due(None);
            if self.link.is_none() && !self.holds() && !self.serviced() {
                let reason = if self.seen {
                    Reason::FailoverTimeout
                } else {
                    Reason::Boot
                };
                self.take_over(reason).await;
            } else if self.link.is_none() && self.awaiting_edge && !self.serviced() {
                tracing::warn!(edge = %self.id, "the edge did not come back within its failover timeout: the master runs the site it holds");
                self.awaiting_edge = false;
                if !self.running {
                    self.start().await;
                }
            }
        }
        if self.retry_at.is_some_and(|t| t <= now) {
            self.retry_at = None;
            if let (Some(u), Some(peer)) = (self.unconfirmed, self.link.clone()) {
                self.follow_up(&peer, u).await;
                return;
            }
        }
        if self.unconfirmed.is_some() {
            return; // the edge is asked until it confirms
        }
        if self.holds()
            && let Some(peer) = self.link.clone()
            && self
                .location()
                .await
                .and_then(|l| l.restore_window())
                .is_some_and(|w| w.open_at(self.sh.clock.now()).is_some())
            && let Err(e) = self.hand_back(&peer, Reason::RestoreWindow).await
        {
            tracing::warn!(edge = %self.id, error = %e, "hand-back at the window failed; retrying");
            self.retry_at = Some(self.sh.clock.now_ms() + RETRY_MS);
        }
    }

    /// Sets (or cancels) the takeover of an absent edge from the
    /// location's current document: due `failover_timeout_ms` after the
    /// edge went away (the master's start for an edge never seen since).
    /// The window needs nothing here: the task's loop recomputes it.
    async fn schedule(&mut self, log: bool) {
        let (Some(since), true, None) = (self.absent_since, self.watching, &self.link) else {
            return;
        };
        // A site the master holds is never dropped here; one it holds but
        // does not run yet starts at the failover timeout, whatever the
        // failover switch says (the master holds control already).
        let awaited = self.awaiting_edge && !self.running;
        if self.holds() && !awaited {
            return;
        }
        let location = self.location().await;
        let serviced = self.serviced();
        let at = match &location {
            Some(l) if (l.failover || awaited) && !serviced => {
                Some(since + l.failover_timeout_ms as i64)
            }
            _ => None,
        };
        if at != self.failover_at || log {
            match (at, &location) {
                (Some(at), Some(l)) => {
                    tracing::info!(edge = %self.id, timeout_ms = l.failover_timeout_ms, due_ms = at, "takeover scheduled unless the edge returns")
                }
                (None, Some(_)) if serviced => {
                    tracing::info!(edge = %self.id, "the location is in maintenance: the master will not take over")
                }
                (None, Some(_)) => {
                    tracing::info!(edge = %self.id, "failover is off for this location: the master will not take over")
                }
                _ => {}
            }
        }
        self.set_due(at);
    }

    /// Asks the edge what it runs, decides, and carries the decision out.
    async fn negotiate(&mut self, peer: &Peer) {
        let report = match peer.request(RequestBody::ControlReport, self.sh.call).await {
            Ok(ResponseBody::ControlReport {
                running,
                devices_connected,
                epoch,
                ..
            }) => (running, devices_connected, epoch),
            Ok(other) => {
                tracing::error!(edge = %self.id, answer = ?other, "unexpected answer to a control report");
                return;
            }
            Err(e) => {
                tracing::warn!(edge = %self.id, error = %e, "no control report from the edge");
                return;
            }
        };
        let (edge_running, edge_devices, edge_epoch) = report;
        let now = self.sh.clock.now();
        let location = self.location().await;
        let facts = Facts {
            edge_modules_loaded: edge_running,
            edge_devices_connected: edge_devices,
            master_devices_connected: if self.running {
                self.sh.runtime.location_devices(Some(self.id)).connected as u32
            } else {
                0
            },
            in_restore_window: location
                .as_ref()
                .and_then(|l| l.restore_window())
                .is_some_and(|w| w.open_at(now).is_some()),
            master_booting: !self.sh.booted.load(Ordering::Acquire),
            master_modules_loaded: self.running,
            master_holds_control: self.holds(),
            held_down: held_down(
                self.recent.make_contiguous(),
                now.timestamp_millis(),
                self.sh.max_changes,
            ),
        };
        let decision = negotiate(&facts);
        let epoch = self.state().map(|s| s.epoch);
        tracing::info!(
            edge = %self.id,
            winner = %decision.winner,
            rule = decision.rule.as_str(),
            epoch = ?epoch,
            edge_epoch,
            ?facts,
            "control negotiated"
        );
        let reason = Reason::Negotiation(decision.rule);
        match decision.winner {
            Side::Edge => {
                if let Err(e) = self.hand_back(peer, reason).await {
                    tracing::warn!(edge = %self.id, error = %e, "the edge did not confirm control");
                }
            }
            Side::Master => {
                let epoch = epoch.unwrap_or(0) as u64;
                self.release(peer, epoch, reason).await;
            }
        }
    }

    /// Tells the edge to release the site at `epoch` (the master already
    /// holds it), and starts the master's copies once the edge confirms.
    /// Unconfirmed, the devices stay unclaimed by the master until the
    /// edge confirms (it is asked again) or its link is declared dead.
    async fn release(&mut self, peer: &Peer, epoch: u64, reason: Reason) {
        if let Err(e) = self.record_link().await {
            // Unrecorded, a master promoted after this one could start the
            // site while this edge runs it: the edge keeps it instead.
            tracing::error!(edge = %self.id, error = %e, "cannot record the edge's link: not asking it to release");
            return;
        }
        let release = |reason: Reason| RequestBody::ControlRelease {
            epoch,
            reason: reason.as_str().to_owned(),
        };
        let mut answer = peer.request(release(reason), self.sh.call).await;
        if refused_reason(&answer) && reason.for_older_edge() != reason {
            // An edge of the previous version: the closest reason it knows.
            let older = release(reason.for_older_edge());
            answer = peer.request(older, self.sh.call).await;
        }
        let _ = self.settle_change(false, epoch, reason, &answer).await;
    }

    /// Records, before the edge is asked to stand by, that its link is up
    /// to this node while it holds the site (see [`Begin::AwaitingEdge`]).
    async fn record_link(&mut self) -> Result<(), StoreError> {
        if self.link_recorded {
            return Ok(());
        }
        let now = self.sh.clock.now_ms();
        let store = &self.sh.store;
        store
            .record_edge_link(self.id, &self.sh.node_id, now)
            .await?;
        self.link_recorded = true;
        Ok(())
    }

    /// The link ended: forget its record, unless this master is stopping
    /// (then the edge runs its site on its own, and the record says so to
    /// the master that starts next).
    async fn forget_link(&mut self) {
        if !self.link_recorded || self.sh.stop.is_cancelled() {
            return;
        }
        match self
            .sh
            .store
            .forget_edge_link(self.id, &self.sh.node_id)
            .await
        {
            Ok(()) => self.link_recorded = false,
            Err(e) => {
                tracing::warn!(edge = %self.id, error = %e, "cannot forget the edge's link: a master started next waits for the edge")
            }
        }
    }

    /// Acts on an edge's answer to an assume or release (or to a report
    /// asked for after one): confirmed, a release lets the master start;
    /// not confirmed, the change is followed up after [`RETRY_MS`].
    /// Returns why it is not confirmed.
    async fn settle_change(
        &mut self,
        assume: bool,
        epoch: u64,
        reason: Reason,
        answer: &Result<ResponseBody, CallError>,
    ) -> Result<(), String> {
        match confirms(answer, assume, epoch) {
            Ok(()) => {
                self.unconfirmed = None;
                if !assume && !self.running {
                    self.start().await;
                }
                Ok(())
            }
            Err(why) => {
                let now = self.sh.clock.now_ms();
                let since_ms = match self.unconfirmed {
                    Some(u) if u.assume == assume && u.epoch == epoch => u.since_ms,
                    _ => now,
                };
                tracing::warn!(edge = %self.id, epoch, assume, %why, "the edge did not confirm the change; asking it again");
                self.unconfirmed = Some(Unconfirmed {
                    assume,
                    epoch,
                    reason,
                    since_ms,
                });
                self.retry_at = Some(now + RETRY_MS);
                Err(why)
            }
        }
    }

    /// Asks the edge for its state after an unconfirmed change and
    /// reconciles: confirmed, done; a change still under way at the edge is
    /// waited for; one the edge does not have is sent again. A hand-back
    /// still unconfirmed after the location's failover timeout is taken
    /// back: recorded, then released by the edge (after its assume, which
    /// it finishes first), and only then run by the master.
    async fn follow_up(&mut self, peer: &Peer, u: Unconfirmed) {
        let report = peer.request(RequestBody::ControlReport, self.sh.call).await;
        let pending = matches!(
            report,
            Ok(ResponseBody::ControlReport {
                pending: Some(_),
                ..
            })
        );
        let settled = self.settle_change(u.assume, u.epoch, u.reason, &report);
        if settled.await.is_ok() {
            tracing::info!(edge = %self.id, epoch = u.epoch, assume = u.assume, "the edge confirmed the change");
            return;
        }
        let bound = self
            .location()
            .await
            .map_or(0, |l| l.failover_timeout_ms as i64);
        if u.assume && self.sh.clock.now_ms() - u.since_ms >= bound {
            self.take_back(peer, u.epoch).await;
        } else if !pending && report.is_ok() {
            // The edge has not got it (or could not carry it out): again,
            // under the same epoch (idempotent).
            self.resend(peer, u).await;
        }
    }

    /// The master stops its copies of the site's modules, records the edge
    /// as controller (unless it already is), then tells the edge.
    async fn hand_back(
        &mut self,
        peer: &Peer,
        reason: Reason,
    ) -> Result<ControlRecord, RestoreError> {
        if self.running {
            stop_site(&self.sh, self.id).await;
            self.running = false;
        }
        let state = self.state();
        let record = match state {
            Some(s) if s.controller == Side::Edge => ControlRecord {
                id: Uuid::nil(),
                edge_id: self.id,
                epoch: s.epoch,
                from: Some(Side::Edge),
                to: Side::Edge,
                reason,
                at_ms: s.since_ms,
                by: None,
            },
            _ => {
                self.change(state.map(|s| s.epoch), Side::Edge, reason)
                    .await?
            }
        };
        let assume = RequestBody::ControlAssume {
            epoch: record.epoch as u64,
            reason: reason.as_str().to_owned(),
        };
        let answer = peer.request(assume, self.sh.call).await;
        // The devices are the edge's now; unloading (which runs each
        // driver's `on_unload`) can wait until it has them.
        unload_site(&self.sh, self.id).await;
        // Unconfirmed, the edge is asked for its state until it confirms
        // (its assume runs to completion whatever became of the call).
        self.settle_change(true, record.epoch as u64, reason, &answer)
            .await
            .map_err(RestoreError::Edge)?;
        Ok(record)
    }

    /// Sends an unconfirmed change again, under the same epoch (the edge
    /// carries out a repeated one as one).
    async fn resend(&mut self, peer: &Peer, u: Unconfirmed) {
        if !u.assume {
            return self.release(peer, u.epoch, u.reason).await;
        }
        let body = RequestBody::ControlAssume {
            epoch: u.epoch,
            reason: u.reason.as_str().to_owned(),
        };
        let answer = peer.request(body, self.sh.call).await;
        let _ = self
            .settle_change(u.assume, u.epoch, u.reason, &answer)
            .await;
    }

    /// A hand-back at `epoch` the edge did not confirm within the failover
    /// timeout on a link that is up: the master records itself as
    /// controller (`hand_back_unconfirmed`) and tells the edge to release,
    /// which the edge does after its assume, never during it. The master
    /// runs the site only once the release is confirmed, or the link is
    /// declared dead.
    async fn take_back(&mut self, peer: &Peer, epoch: u64) {
        let reason = Reason::HandBackUnconfirmed;
        match self.change(Some(epoch as i64), Side::Master, reason).await {
            Ok(record) => {
                tracing::warn!(edge = %self.id, epoch = record.epoch, "the edge did not confirm the hand-back in time: the master takes the site back once the edge releases it");
                self.unconfirmed = None;
                self.release(peer, record.epoch as u64, reason).await;
            }
            Err(e) => {
                tracing::error!(edge = %self.id, error = %e, "take-back not recorded");
                self.retry_at = Some(self.sh.clock.now_ms() + RETRY_MS);
            }
        }
    }

    /// The master records itself as controller, then connects.
    async fn take_over(&mut self, reason: Reason) {
        let epoch = self.state().map(|s| s.epoch);
        match self.change(epoch, Side::Master, reason).await {
            Ok(record) => {
                tracing::warn!(edge = %self.id, epoch = record.epoch, %reason, "the master takes over this site");
                if !self.running {
                    self.start().await;
                }
            }
            Err(e) => tracing::error!(edge = %self.id, error = %e, "takeover not recorded"),
        }
    }

    async fn change(
        &mut self,
        expected: Option<i64>,
        to: Side,
        reason: Reason,
    ) -> Result<ControlRecord, RestoreError> {
        let now = self.sh.clock.now_ms();
        let result = self
            .sh
            .store
            .change_controller(self.id, expected, to, reason, now)
            .await;
        let mut record = match result {
            Ok(r) => r,
            Err(e) => {
                // Someone else moved the epoch: learn it, so the next
                // decision starts from the truth.
                if let Ok(Some(s)) = self.sh.store.control_state(self.id).await {
                    self.sh.states.write_unpoisoned().insert(self.id, s);
                }
                return Err(e.into());
            }
        };
        self.sh.states.write_unpoisoned().insert(
            self.id,
            ControlState {
                edge_id: self.id,
                controller: to,
                epoch: record.epoch,
                since_ms: now,
            },
        );
        if let Some(by) = self.author.take() {
            // With the change, before anything can fail after it.
            let authored = self
                .sh
                .store
                .record_control_author(self.id, record.epoch, &by);
            match authored.await {
                Ok(()) => record.by = Some(by),
                Err(e) => {
                    tracing::error!(edge = %self.id, epoch = record.epoch, error = %e, "the change's author was not recorded")
                }
            }
        }
        self.recent.push_back(now);
        while self.recent.len() > 64 {
            self.recent.pop_front();
        }
        // Counted by the API from the store's control feed, with the reason.
        tracing::info!(edge = %self.id, epoch = record.epoch, from = ?record.from, %to, %reason, "controller changed");
        Ok(record)
    }

    async fn start(&mut self) {
        start_site(&self.sh, self.id).await;
        self.running = true;
    }
}

/// Whether the edge refused a control request for its reason (an edge of
/// the previous version, which does not know the newer reasons).
fn refused_reason(answer: &Result<ResponseBody, CallError>) -> bool {
    matches!(answer, Err(CallError::Remote(WireError::BadRequest { message }))
        if message.contains("unknown control reason"))
}

/// Whether an edge's answer confirms an assume (`assume`) or a release at
/// `epoch`: its report says it runs the site (or not) under that epoch or a
/// later one. An older edge answers a finished change with `Done`.
fn confirms(
    answer: &Result<ResponseBody, CallError>,
    assume: bool,
    epoch: u64,
) -> Result<(), String> {
    match answer {
        Ok(ResponseBody::Done) => Ok(()),
        Ok(ResponseBody::ControlReport {
            running,
            epoch: at,
            pending,
            ..
        }) => {
            if *running == assume && *at >= epoch {
                Ok(())
            } else {
                Err(format!(
                    "the edge reports running={running} at epoch {at}, under way: {pending:?} \
                     (wanted running={assume} at epoch {epoch} or later)"
                ))
            }
        }
        Ok(other) => Err(format!("unexpected answer: {other:?}")),
        Err(e) => Err(e.to_string()),
    }
}

/// Tells the reconciler the master holds a location, and waits until its
/// modules run.
async fn start_site(sh: &ControlShared, edge_id: Uuid) {
    sh.reconciler.set_held(edge_id, true);
    sh.reconciler.settle().await;
    tracing::info!(edge = %edge_id, "the master runs this site");
}

/// A safety stop: stops a location's modules in the master's runtime at
/// once (their device connections are closed when this returns), with the
/// reconciler held off, then tells it the site is no longer held so it
/// does not start them again.
async fn stop_site(sh: &ControlShared, edge_id: Uuid) {
    let paused = sh.reconciler.pause().await;
    let (_, modules) = sh.runtime.location_modules(Some(edge_id));
    let stops = modules.into_iter().map(|id| {
        let runtime = sh.runtime.clone();
        async move {
            let _ = runtime.stop(id).await;
        }
    });
    futures_util::future::join_all(stops).await;
    sh.reconciler.set_held(edge_id, false);
    drop(paused);
    tracing::info!(edge = %edge_id, "the master stopped running this site");
}

/// Lets the reconciler forget a released location's systems and unload
/// its modules.
async fn unload_site(sh: &ControlShared, edge_id: Uuid) {
    sh.reconciler.set_held(edge_id, false);
    sh.reconciler.settle().await;
}

impl ControlLoop for Control {
    fn restore<'a>(
        &'a self,
        edge_id: Uuid,
        by: &'a str,
    ) -> std::pin::Pin<Box<dyn Future<Output = Result<ControlRecord, RestoreError>> + Send + 'a>>
    {
        Box::pin(Control::restore_by(self, edge_id, Some(by)))
    }

    fn handover<'a>(
        &'a self,
        edge_id: Uuid,
        by: &'a str,
    ) -> std::pin::Pin<Box<dyn Future<Output = Result<ControlRecord, RestoreError>> + Send + 'a>>
    {
        Box::pin(Control::handover_by(self, edge_id, Some(by)))
    }

    fn takeover_due(&self, edge_id: Uuid) -> Option<i64> {
        Control::takeover_due(self, edge_id)
    }

    fn last_stop(&self, edge_id: Uuid) -> Option<&'static str> {
        Control::last_stop(self, edge_id)
    }

    fn in_maintenance(&self, edge_id: Uuid) -> Option<i64> {
        Control::in_maintenance(self, edge_id)
    }

    fn last_planned_stop(&self, edge_id: Uuid) -> Option<i64> {
        Control::last_planned_stop(self, edge_id)
    }

    fn set_maintenance<'a>(
        &'a self,
        edge_id: Uuid,
        on: bool,
        by: &'a str,
    ) -> std::pin::Pin<Box<dyn Future<Output = Result<Option<i64>, RestoreError>> + Send + 'a>>
    {
        Box::pin(Control::set_maintenance(self, edge_id, on, Some(by)))
    }

    fn booted(&self) -> bool {
        self.is_booted()
    }
}

/// Takes each link event as the registry reports it: a flag raised in the
/// location's inbox, so the registry never waits and no queue grows.
pub struct LinkFollower {
    control: Control,
    links: tokio::sync::broadcast::Sender<crate::api::LinkNotice>,
}

impl crate::link::LinkEvents for LinkFollower {
    fn deliver(&self, ev: MasterLinkEvent) {
        if let Some(notice) = crate::api::LinkNotice::from_event(&ev) {
            let _ = self.links.send(notice);
        }
        match ev {
            MasterLinkEvent::LinkUp { info, peer, .. } => {
                tracing::info!(edge = %info.edge_id, addr = %info.addr, "edge connected");
                self.control
                    .actor(info.edge_id, Begin::Absent)
                    .raise(|p| p.up(peer));
            }
            MasterLinkEvent::LinkLost {
                edge_id,
                session,
                reason,
                ..
            } => {
                tracing::warn!(edge = %edge_id, %reason, "edge link lost");
                self.control
                    .actor(edge_id, Begin::Absent)
                    .raise(|p| p.lost(session));
            }
            MasterLinkEvent::AuthFailed {
                edge_id,
                addr,
                reason,
                ..
            } => {
                tracing::warn!(edge = ?edge_id, %addr, %reason, "edge authentication failed")
            }
        }
    }
}
