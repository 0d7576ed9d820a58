//! A master cluster: which master node acts.
//!
//! On PostgreSQL, nodes that share the database take turns by a lease row
//! judged by the server's clock (`store/cluster.rs`). The MASTER renews it
//! every `renew_ms` for `lease_ms`; each grant raises the fencing term, which
//! every write of this node is checked against in its own transaction. The
//! MASTER's own deadline runs from the moment it *sent* its last successful
//! renewal, on `CLOCK_BOOTTIME` ([`clock`]), and ends before the lease can
//! expire at the server: every device write reads it ([`Cluster::gate`]),
//! so a node that was stopped or cut off sends nothing once a standby may
//! have taken over. With `cluster_lock_file` (two masters on one host and
//! one SQLite file) the holder of an exclusive `flock` is MASTER instead.
//!
//! With `cluster_failsafe`, a MASTER whose renewal gets no answer keeps
//! acting while every other node confirms, over the link, that it is not
//! MASTER and cannot reach the database either ([`failsafe`]).
//!
//! What this node sees is published as a [`Leadership`] watch for the link,
//! the API and the master; a node that loses its lease goes FAILED and
//! stays so (the master stops acting and the process exits; a supervisor
//! restarts it as a standby).

pub mod clock;
pub mod failsafe;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::control::leadership::{LeaderAddress, Leadership, LeadershipWatch, NodeState};
use crate::runtime::DeviceGate;
use crate::store::{Heartbeat, Store};
use clock::{Deadline, boottime};
use failsafe::{Peer, Witness};

/// A node's settings, from the configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    pub node_id: String,
    pub priority: i32,
    pub preempt: bool,
    pub api: Option<String>,
    pub link: Option<String>,
    pub lease: Duration,
    pub renew: Duration,
    /// `cluster_failsafe`.
    pub failsafe: bool,
}

impl Settings {
    pub fn from_config(config: &Config) -> Settings {
        Settings {
            node_id: config.node_name(),
            priority: config.node_priority,
            preempt: config.preempt,
            api: Some(
                config
                    .advertise_api
                    .clone()
                    .unwrap_or_else(|| format!("http://{}", config.api_addr)),
            ),
            link: Some(
                config
                    .advertise_link
                    .clone()
                    .unwrap_or_else(|| config.link_addr.to_string()),
            ),
            lease: Duration::from_millis(config.lease_ms),
            renew: Duration::from_millis(config.renew_ms),
            failsafe: config.cluster_failsafe,
        }
    }

    /// This node's own deadline after a renewal sent at `sent`: a tenth of
    /// the lease before the server's expiry (which is counted from when the
    /// server ran the renewal, later than `sent`), for clock-rate drift and
    /// for the stop to finish before a standby can be granted the lease.
    fn deadline_after(&self, sent: Duration) -> Duration {
        sent + self.lease - self.lease / 10
    }

    fn address(&self) -> LeaderAddress {
        LeaderAddress {
            node_id: self.node_id.clone(),
            api: self.api.clone(),
            link: self.link.clone(),
        }
    }
}

/// How this node takes part.
enum Mode {
    Lease(Store),
    LockFile(std::path::PathBuf),
}

/// A node of a master cluster: its loop runs until [`Cluster::release`] or
/// until the lease is lost.
pub struct Cluster {
    settings: Arc<Settings>,
    published: Arc<watch::Sender<Leadership>>,
    deadline: Deadline,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<Option<std::fs::File>>,
    store: Option<Store>,
    witness: Arc<Witness>,
}

/// Whether `config` makes this master a cluster member.
pub fn configured(config: &Config) -> bool {
    config.cluster_lock_file.is_some() || !config.database_url().starts_with("sqlite:")
}

impl Cluster {
    /// Joins the cluster the configuration names: the lease on PostgreSQL
    /// (this store's writes are fenced from now on), or the lock file.
    pub fn join(config: &Config, store: &Store) -> Cluster {
        let settings = Arc::new(Settings::from_config(config));
        let mode = match &config.cluster_lock_file {
            Some(path) => Mode::LockFile(path.clone()),
            None => {
                store.fence_as(&settings.node_id);
                Mode::Lease(store.clone())
            }
        };
        let store = match &mode {
            Mode::Lease(s) => Some(s.clone()),
            Mode::LockFile(_) => None,
        };
        let published = Arc::new(watch::channel(initial()).0);
        let deadline = Deadline::default();
        let stop = CancellationToken::new();
        let witness = Arc::new(Witness::new(
            settings.node_id.clone(),
            published.clone(),
            settings.lease,
            settings.renew,
        ));
        let mut probe_tls = None;
        if settings.failsafe {
            // This process may have answered probes before it restarted:
            // it keeps that promise as if it had just answered.
            witness.promise_now();
            match crate::link::tls::client_config(&config.ca_cert, None) {
                Ok(tls) => probe_tls = Some(tls),
                Err(e) => {
                    tracing::error!(error = %e, "cluster_failsafe: cannot load ca_cert to verify other nodes: this node stops acting by its deadline when the database is unreachable")
                }
            }
        }
        let node = Node {
            settings: settings.clone(),
            published: published.clone(),
            deadline: deadline.clone(),
            stop: stop.clone(),
            witness: witness.clone(),
            probe_tls,
        };
        let task = tokio::spawn(async move {
            match mode {
                Mode::Lease(store) => {
                    node.run_lease(&store).await;
                    None
                }
                Mode::LockFile(path) => node.run_lock_file(&path).await,
            }
        });
        tracing::info!(node = %settings.node_id, "joined the master cluster");
        Cluster {
            settings,
            published,
            deadline,
            stop,
            task,
            store,
            witness,
        }
    }

    /// What this node answers other nodes' probes (`cluster_failsafe`),
    /// for its link listener.
    pub fn witness(&self) -> Arc<Witness> {
        self.witness.clone()
    }

    pub fn watch(&self) -> LeadershipWatch {
        self.published.subscribe()
    }

    pub fn node_id(&self) -> &str {
        &self.settings.node_id
    }

    /// The device gate: open while this node's deadline has not passed.
    pub fn gate(&self) -> DeviceGate {
        let deadline = self.deadline.clone();
        DeviceGate::new(move || deadline.open())
    }

    /// Waits until this node is MASTER (`true`) or the cluster loop ended
    /// without it (`false`).
    pub async fn promoted(&self) -> bool {
        let mut rx = self.watch();
        rx.wait_for(|l| l.state != NodeState::Initializing && l.state != NodeState::Standby)
            .await
            .is_ok_and(|l| l.state == NodeState::Master)
    }

    /// A graceful stop, after this node has stopped acting: the lease is
    /// given up at once so a standby promotes without waiting it out.
    pub async fn release(self) {
        self.stop.cancel();
        let lock = self.task.await.ok().flatten();
        self.deadline.close();
        let term = self.published.borrow().term;
        self.published.send_modify(|l| {
            l.state = NodeState::Terminated;
            l.leader = None;
        });
        metrics::gauge!("outpost_cluster_state").set(state_code(NodeState::Terminated));
        if let Some(store) = &self.store {
            // Bounded: a database that does not answer must not hold up
            // the stop (the lease then expires on its own).
            let limit = self.settings.lease;
            let _ = tokio::time::timeout(limit, give_up(&self.settings, store, term)).await;
        }
        drop(lock);
    }
}

/// Also after a loss: a preempted node still holds the lease, and gives it
/// up now that it has stopped acting. The release only matches this node
/// at this term.
async fn give_up(settings: &Settings, store: &Store, term: u64) {
    // TERMINATED first: a standby woken by the release must not find this
    // node's row still saying STANDBY (as it does for a renewal period
    // after a promotion), which would make it yield to this node by
    // priority and wait a whole `renew_ms` for its next try.
    let beat = heartbeat(settings, NodeState::Terminated);
    let _ = store.cluster_heartbeat(&beat).await;
    if term > 0 {
        match store.release_lease(&settings.node_id, term as i64).await {
            Ok(true) => tracing::info!(term, "cluster lease released"),
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(error = %crate::util::describe(&e), "cannot release the cluster lease: standbys take over when it expires")
            }
        }
    }
}

fn initial() -> Leadership {
    Leadership {
        state: NodeState::Initializing,
        term: 0,
        leader: None,
    }
}

fn heartbeat(settings: &Settings, state: NodeState) -> Heartbeat<'_> {
    Heartbeat {
        node_id: &settings.node_id,
        state: state.as_str(),
        priority: settings.priority,
        preempt: settings.preempt,
        api: settings.api.as_deref(),
        link: settings.link.as_deref(),
    }
}

/// `outpost_cluster_state`: 0 initializing, 1 standby, 2 master, 3 failed,
/// 4 terminated.
fn state_code(state: NodeState) -> f64 {
    match state {
        NodeState::Initializing => 0.0,
        NodeState::Standby => 1.0,
        NodeState::Master => 2.0,
        NodeState::Failed => 3.0,
        NodeState::Terminated => 4.0,
    }
}

/// Resolves at the next release of the lease, as PostgreSQL announces it
/// (never, while no listener can be had: the period applies).
async fn released(store: &Store, releases: &mut Option<crate::store::LeaseReleases>) {
    if releases.is_none() {
        *releases = store.lease_released().await.ok();
    }
    let Some(listener) = releases.as_mut() else {
        return std::future::pending().await;
    };
    if listener.next().await.is_err() {
        *releases = None;
        std::future::pending::<()>().await;
    }
}

/// The loop's side of a [`Cluster`].
struct Node {
    settings: Arc<Settings>,
    published: Arc<watch::Sender<Leadership>>,
    deadline: Deadline,
    stop: CancellationToken,
    witness: Arc<Witness>,
    /// Set with `cluster_failsafe`: verifies the nodes probed.
    probe_tls: Option<Arc<rustls::ClientConfig>>,
}

/// What one turn of the lease loop found.
enum Turn {
    Standby(Option<LeaderAddress>),
    Master {
        term: i64,
        until: Duration,
    },
    /// The lease is gone (expired, taken, deadline passed, preempted).
    Lost(String),
    /// The database did not answer; nothing changes.
    NoAnswer,
}

impl Node {
    fn publish(&self, state: NodeState, term: i64, leader: Option<LeaderAddress>) {
        let next = Leadership {
            state,
            term: term.max(0) as u64,
            leader,
        };
        self.published.send_if_modified(|l| {
            let changed = *l != next;
            *l = next;
            changed
        });
        metrics::gauge!("outpost_cluster_state").set(state_code(state));
        metrics::gauge!("outpost_cluster_term").set(term as f64);
    }

    async fn run_lease(&self, store: &Store) {
        let mut term = 0i64;
        let mut state = NodeState::Initializing;
        // Listening before this node first says STANDBY, so a release from
        // then on wakes it at once (a listener set up later, between
        // turns, missed the release of a MASTER stopped just after).
        let listen = tokio::time::timeout(self.settings.renew, store.lease_released());
        let mut releases = match store.has_cluster_tables() {
            true => listen.await.ok().and_then(Result::ok),
            false => None,
        };
        // With failsafe: the other nodes (refreshed after each renewal),
        // and whether this outage was ridden out already.
        let mut peers: Option<Vec<Peer>> = None;
        let mut riding = false;
        loop {
            let sent = boottime();
            let turn = self.lease_turn(store, state, term, sent).await;
            match turn {
                Turn::Standby(leader) => {
                    state = NodeState::Standby;
                    self.publish(state, term, leader);
                }
                Turn::Master { term: t, until } => {
                    self.deadline.extend_to(until);
                    if state != NodeState::Master {
                        term = t;
                        store.set_fence_term(term);
                        state = NodeState::Master;
                        metrics::counter!("outpost_cluster_promotions_total").increment(1);
                        tracing::info!(node = %self.settings.node_id, term, "this node is MASTER");
                        self.publish(state, term, Some(self.settings.address()));
                    }
                    if riding {
                        riding = false;
                        tracing::warn!(
                            term,
                            "PostgreSQL reachable again: lease renewed at the same term (cluster_failsafe)"
                        );
                    }
                    if self.probe_tls.is_some() {
                        self.refresh_peers(store, &mut peers).await;
                    }
                }
                Turn::Lost(why) => {
                    self.fail(store, term, &why).await;
                    return;
                }
                Turn::NoAnswer => {
                    if state == NodeState::Master {
                        self.ride_out(peers.as_deref(), &mut riding).await;
                    }
                }
            }
            if state == NodeState::Master && !self.deadline.open() {
                self.fail(store, term, "deadline passed without a renewal")
                    .await;
                return;
            }
            let pause = match state {
                NodeState::Master => self.settings.renew.min(self.deadline.remaining()),
                _ => self.settings.renew,
            };
            tokio::select! {
                () = self.stop.cancelled() => return,
                () = tokio::time::sleep(pause) => {}
                () = released(store, &mut releases), if state != NodeState::Master => {}
            }
        }
    }

    /// One heartbeat and one lease call, bounded by the renewal period (and
    /// by the deadline, for a MASTER) so a database that hangs cannot keep
    /// a MASTER past its deadline unnoticed.
    async fn lease_turn(&self, store: &Store, state: NodeState, term: i64, sent: Duration) -> Turn {
        let limit = match state {
            NodeState::Master => self.settings.renew.min(self.deadline.remaining()),
            _ => self.settings.renew,
        };
        let work = async {
            let shown = if state == NodeState::Initializing {
                NodeState::Standby
            } else {
                state
            };
            if let Err(e) = store
                .cluster_heartbeat(&heartbeat(&self.settings, shown))
                .await
            {
                tracing::debug!(error = %crate::util::describe(&e), "cluster heartbeat failed");
            }
            match state {
                NodeState::Master => self.renew(store, term, sent).await,
                _ => self.try_acquire(store, sent).await,
            }
        };
        self.witness.begin(sent);
        let turn = tokio::time::timeout(limit.max(Duration::from_millis(1)), work)
            .await
            .unwrap_or(Turn::NoAnswer);
        self.witness.end(!matches!(turn, Turn::NoAnswer));
        turn
    }

    /// With failsafe: the other nodes as `cluster_nodes` lists them now
    /// (kept as they were when the database does not answer in time).
    async fn refresh_peers(&self, store: &Store, peers: &mut Option<Vec<Peer>>) {
        let read = tokio::time::timeout(self.settings.renew, store.cluster_nodes()).await;
        if let Ok(Ok(nodes)) = read {
            *peers = Some(
                nodes
                    .into_iter()
                    .filter(|n| n.node_id != self.settings.node_id)
                    .map(|n| Peer {
                        node_id: n.node_id,
                        link: n.link,
                    })
                    .collect(),
            );
        }
    }

    /// A MASTER's renewal got no answer. With failsafe: if every other
    /// node confirms it is not MASTER and cannot reach the database either,
    /// the deadline extends as a renewal sent when the probes began would
    /// have extended it (each of them holds off the lease until a lease
    /// after its answer, later than that). Otherwise the deadline runs out
    /// as without failsafe.
    ///
    /// The others may not have noticed the outage yet (their own calls
    /// are still waiting): the probes are repeated every quarter period
    /// for up to one period, within the deadline, before the next renewal
    /// is tried.
    async fn ride_out(&self, peers: Option<&[Peer]>, riding: &mut bool) {
        let Some(tls) = &self.probe_tls else {
            return;
        };
        let Some(peers) = peers else {
            tracing::warn!(
                "PostgreSQL unreachable and the other nodes are not known yet: this node stops acting by its deadline"
            );
            return;
        };
        let renew = self.settings.renew;
        let until = boottime() + renew;
        loop {
            let sent = boottime();
            let budget = renew.min(self.deadline.remaining());
            if budget.is_zero() {
                return;
            }
            match failsafe::confirm(tls, peers, budget).await {
                Ok(()) => {
                    self.deadline.extend_to(self.settings.deadline_after(sent));
                    metrics::counter!("outpost_cluster_failsafe_total").increment(1);
                    if !*riding {
                        *riding = true;
                        tracing::warn!(
                            nodes = peers.len(),
                            "PostgreSQL unreachable; every other node confirms it cannot reach it either: staying MASTER (cluster_failsafe)"
                        );
                    }
                    return;
                }
                Err(why) => {
                    let pause = (renew / 4).min(self.deadline.remaining());
                    if boottime() + pause >= until || pause.is_zero() {
                        tracing::warn!(%why, "PostgreSQL unreachable and not every other node confirms it cannot reach it either: this node stops acting by its deadline unless a renewal succeeds");
                        return;
                    }
                    tracing::debug!(%why, "failsafe: not confirmed yet; asking again");
                    tokio::select! {
                        () = self.stop.cancelled() => return,
                        () = tokio::time::sleep(pause) => {}
                    }
                }
            }
        }
    }

    async fn renew(&self, store: &Store, term: i64, sent: Duration) -> Turn {
        let s = &self.settings;
        let answer = store
            .renew_lease(
                &s.node_id,
                term,
                s.lease.as_millis() as u64,
                s.priority,
                s.failsafe,
            )
            .await;
        if answer.is_ok() {
            self.witness.reached(sent);
        }
        match answer {
            Ok(Some(None)) => Turn::Master {
                term,
                until: s.deadline_after(sent),
            },
            Ok(Some(Some(by))) => Turn::Lost(format!("preempted by {by} (higher priority)")),
            Ok(None) => Turn::Lost("the lease expired or another node holds it".into()),
            Err(e) => {
                tracing::warn!(error = %crate::util::describe(&e), "cannot renew the cluster lease");
                Turn::NoAnswer
            }
        }
    }

    async fn try_acquire(&self, store: &Store, sent: Duration) -> Turn {
        let s = &self.settings;
        let lease_ms = s.lease.as_millis() as u64;
        // This node told a MASTER it cannot reach the database: that
        // MASTER may act until a lease after the answer (failsafe).
        if sent < self.witness.promised_until() || self.holder_still_acts(store).await {
            return self.standby_view(store, sent).await;
        }
        match store
            .acquire_lease(&s.node_id, s.priority, lease_ms, "granted")
            .await
        {
            Ok(Some(term)) if self.witness.promised_since(sent) => {
                // Granted, but a probe was answered "cannot reach" while
                // the call was on its way: give it back at once (the
                // MASTER that asked finds it taken and stops).
                self.witness.reached(sent);
                tracing::warn!(
                    term,
                    "granted the lease just after promising a MASTER not to take it: giving it back (cluster_failsafe)"
                );
                if let Err(e) = store.release_lease(&s.node_id, term).await {
                    tracing::warn!(error = %crate::util::describe(&e), "cannot give the lease back: it expires on its own");
                }
                Turn::Standby(None)
            }
            Ok(Some(term)) => {
                self.witness.reached(sent);
                Turn::Master {
                    term,
                    until: s.deadline_after(sent),
                }
            }
            Ok(None) => {
                self.witness.reached(sent);
                self.standby_view(store, sent).await
            }
            Err(e) => {
                tracing::debug!(error = %crate::util::describe(&e), "cannot try the cluster lease");
                Turn::NoAnswer
            }
        }
    }

    /// With failsafe: whether the lease expired at the database while its
    /// holder, asked over its link, still says it is MASTER. It may be
    /// riding out an outage on its peers' word without knowing this node
    /// (one that joined just before the outage): it renews its own lease
    /// once it reaches the database again, and this node waits for that.
    /// A holder that does not answer (dead, stopped, cut off) is not
    /// waited for.
    async fn holder_still_acts(&self, store: &Store) -> bool {
        let Some(tls) = &self.probe_tls else {
            return false;
        };
        let Ok(view) = store.lease().await else {
            return false;
        };
        let (Some(holder), Some(link)) = (view.holder, view.link) else {
            return false;
        };
        if view.live || holder == self.settings.node_id {
            return false;
        }
        let budget = self.settings.renew / 3;
        let answer =
            tokio::time::timeout(budget, crate::link::probe::ask(tls.clone(), &link)).await;
        let acts = matches!(&answer, Ok(Ok(a)) if a.node_id == holder && a.state == NodeState::Master.as_str());
        if acts {
            tracing::warn!(%holder, "the lease expired at the database but its holder still acts (cluster_failsafe): waiting for it to renew");
        }
        acts
    }

    /// A standby's view of the lease: who acts, and where.
    async fn standby_view(&self, store: &Store, sent: Duration) -> Turn {
        match store.lease().await {
            Ok(view) => {
                self.witness.reached(sent);
                Turn::Standby(view.live.then_some(()).and(view.holder).map(|node_id| {
                    LeaderAddress {
                        node_id,
                        api: view.api,
                        link: view.link,
                    }
                }))
            }
            Err(_) => Turn::Standby(None),
        }
    }

    async fn fail(&self, store: &Store, term: i64, why: &str) {
        self.deadline.close();
        store.set_fence_term(0);
        tracing::error!(node = %self.settings.node_id, term, "cluster lease lost ({why}): this node stops acting");
        self.publish(NodeState::Failed, term, None);
        let _ = tokio::time::timeout(
            self.settings.renew,
            store.cluster_heartbeat(&heartbeat(&self.settings, NodeState::Failed)),
        )
        .await;
    }

    /// Fiorano's lock file: STANDBY until this process takes the exclusive
    /// lock, then MASTER for as long as it lives (the kernel releases the
    /// lock with the process, however it ends).
    async fn run_lock_file(&self, path: &std::path::Path) -> Option<std::fs::File> {
        loop {
            match crate::util::try_lock_file(path) {
                Ok(Some(file)) => {
                    self.deadline.extend_to(Duration::MAX);
                    metrics::counter!("outpost_cluster_promotions_total").increment(1);
                    tracing::info!(lock = %path.display(), "this node holds the cluster lock file: MASTER");
                    self.publish(NodeState::Master, 0, Some(self.settings.address()));
                    return Some(file);
                }
                Ok(None) => self.publish(NodeState::Standby, 0, None),
                Err(e) => {
                    tracing::error!(lock = %path.display(), error = %e, "cannot open the cluster lock file");
                    self.publish(NodeState::Failed, 0, None);
                    return None;
                }
            }
            tokio::select! {
                () = self.stop.cancelled() => return None,
                () = tokio::time::sleep(self.settings.renew) => {}
            }
        }
    }
}
