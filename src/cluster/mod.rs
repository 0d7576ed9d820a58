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
//! What this node sees is published as a [`Leadership`] watch for the link,
//! the API and the master; a node that loses its lease goes FAILED and
//! stays so (the master stops acting and the process exits; a supervisor
//! restarts it as a standby).

pub mod clock;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::control::leadership::{LeaderAddress, Leadership, LeadershipWatch, NodeState};
use crate::runtime::DeviceGate;
use crate::store::{Heartbeat, Store};
use clock::{Deadline, boottime};

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
        let node = Node {
            settings: settings.clone(),
            published: published.clone(),
            deadline: deadline.clone(),
            stop: stop.clone(),
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
        }
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
    if term > 0 {
        match store.release_lease(&settings.node_id, term as i64).await {
            Ok(true) => tracing::info!(term, "cluster lease released"),
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(error = %crate::util::describe(&e), "cannot release the cluster lease: standbys take over when it expires")
            }
        }
    }
    let beat = heartbeat(settings, NodeState::Terminated);
    let _ = store.cluster_heartbeat(&beat).await;
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
        let mut releases = None;
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
                }
                Turn::Lost(why) => {
                    self.fail(store, term, &why).await;
                    return;
                }
                Turn::NoAnswer => {}
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
        tokio::time::timeout(limit.max(Duration::from_millis(1)), work)
            .await
            .unwrap_or(Turn::NoAnswer)
    }

    async fn renew(&self, store: &Store, term: i64, sent: Duration) -> Turn {
        let s = &self.settings;
        match store
            .renew_lease(&s.node_id, term, s.lease.as_millis() as u64, s.priority)
            .await
        {
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
        match store
            .acquire_lease(&s.node_id, s.priority, lease_ms, "granted")
            .await
        {
            Ok(Some(term)) => Turn::Master {
                term,
                until: s.deadline_after(sent),
            },
            Ok(None) => match store.lease().await {
                Ok(view) => {
                    Turn::Standby(view.live.then_some(()).and(view.holder).map(|node_id| {
                        LeaderAddress {
                            node_id,
                            api: view.api,
                            link: view.link,
                        }
                    }))
                }
                Err(_) => Turn::Standby(None),
            },
            Err(e) => {
                tracing::debug!(error = %crate::util::describe(&e), "cannot try the cluster lease");
                Turn::NoAnswer
            }
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
