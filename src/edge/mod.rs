//! The edge role: [`start`] returns a running edge, [`run`] runs one until
//! a shutdown future completes.
//!
//! An edge opens its local replica under its data directory and loads only
//! its own location, the systems it controls and their modules. With an
//! empty replica it says so and waits for the first sync from the master.
//! It then connects to the master (TLS, mutual authentication) and answers
//! the master's requests on its module runtime ([`handler`]), and serves
//! the web API for its own site.
//!
//! Its replica follows the master's change feed over the link ([`sync`]);
//! a fresh edge's first pull is its snapshot, after which it runs its site.
//!
//! At boot it loads its modules but runs none of them: the master decides
//! on the first connection ([`control`]), and only when no master can be
//! reached (the link is declared disconnected) does it run its site on its
//! own.

mod control;
pub mod event_log;
mod handler;
mod sync;

pub use control::SiteControl;
pub use handler::EdgeHandler;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use uuid::Uuid;

use crate::boot::{self, EdgeBoot, RunError};
use crate::certs;
use crate::config::{Config, ConfigError, Role};
use crate::control::Clock;
use crate::link::{EdgeLinkConfig, EdgeLinkEvent};
use crate::reconciler::{Reconciler, Scope};
use crate::runtime::{Runtime, RuntimeConfig};
use crate::store::Store;

/// A running edge.
pub struct Edge {
    pub edge_id: Uuid,
    pub api_addr: std::net::SocketAddr,
    pub runtime: Runtime,
    /// The only code that changes what runs for documents.
    pub reconciler: Reconciler,
    pub store: Store,
    /// What this edge runs and the epoch it was told.
    pub control: Arc<SiteControl>,
    /// The site's event log and its sync to the master; the control loop
    /// records control changes through it (`record_control`).
    pub event_log: Arc<event_log::EventSync>,
    api: crate::api::RunningApi,
    /// The current link to the master (told of a graceful stop).
    link: tokio::sync::watch::Receiver<Option<crate::link::Peer>>,
    stop: CancellationToken,
    tasks: TaskTracker,
    grace: Duration,
    /// Released when the edge is dropped, after its stop.
    _lock: boot::DatabaseLock,
}

/// Starts an edge (replica, boot plan, runtime, link, API) whose control
/// records read the system clock.
pub async fn start(config: Config) -> Result<Edge, RunError> {
    start_with_clock(config, Clock::system()).await
}

/// Starts an edge whose control records read `clock` (tests pass a manual
/// one).
pub async fn start_with_clock(config: Config, clock: Clock) -> Result<Edge, RunError> {
    certs::install_crypto_provider();
    config.check(Some(Role::Edge))?;
    let edge_id = config
        .edge_id
        .ok_or_else(|| ConfigError::new("edge_id", "required to run an edge"))?;
    let (lock, api_listener, store) = claim(&config).await?;
    let runtime = Runtime::new(RuntimeConfig::from_config(&config));
    log_plan(&store, edge_id).await?;
    let stop = CancellationToken::new();
    let tasks = TaskTracker::new();
    // Loaded, not started: nothing touches a device until the master
    // decides or cannot be reached.
    let (scope, dir) = (Scope::Edge(edge_id), config.modules_dir.clone());
    let reconciler = Reconciler::start(scope, &store, &runtime, dir, &stop, &tasks).await;
    let event_sync = event_sync(&config, edge_id, &store, clock.clone());
    let control = Arc::new(
        SiteControl::new(
            edge_id,
            runtime.clone(),
            reconciler.clone(),
            store.clone(),
            clock,
            event_sync.clone(),
        )
        .await?,
    );
    let (peer_rx, wake) = spawn_link(&config, edge_id, &runtime, &store, &control, &tasks, &stop)?;
    let replicator = sync::Replicator {
        store: store.clone(),
        page: config.replica_page_size,
        wake,
        reconciler: reconciler.clone(),
    };
    tasks.spawn(event_sync.clone().record(runtime.clone(), stop.clone()));
    tasks.spawn(event_sync.clone().push(peer_rx.clone(), stop.clone()));
    let master_link = peer_rx.clone();
    let link = peer_rx.clone();
    tasks.spawn(replicator.run(peer_rx, stop.clone()));

    let ops = crate::api::Ops {
        master: Some(master_link),
        edge_id: Some(edge_id),
        reconciler: Some(reconciler.clone()),
        ..crate::api::Ops::new(runtime.clone(), None, &config)
    };
    let api = crate::api::start_on(api_listener, &config, &store, Role::Edge, ops).await?;
    tracing::info!(%edge_id, api = %api.addr, "edge ready");
    Ok(Edge {
        edge_id,
        api_addr: api.addr,
        runtime,
        reconciler,
        store,
        control,
        event_log: event_sync,
        api,
        link,
        stop,
        tasks,
        grace: Duration::from_millis(config.shutdown_grace_ms),
        _lock: lock,
    })
}

/// Starts the connect loop, and the task that follows its events. Answers
/// the link to the master as it comes and goes, and what wakes the
/// replicator when the master says the documents changed.
fn spawn_link(
    config: &Config,
    edge_id: Uuid,
    runtime: &Runtime,
    store: &Store,
    control: &Arc<SiteControl>,
    tasks: &TaskTracker,
    stop: &CancellationToken,
) -> Result<(PeerWatch, Arc<tokio::sync::Notify>), RunError> {
    let wake = Arc::new(tokio::sync::Notify::new());
    let (link, handler) = link_parts(config, edge_id, runtime, store, control, &wake)?;
    let stood_down = (store.clone(), link.stand_down.clone());
    // Unbounded but paced: only the connect loop sends, a few events per
    // attempt, and attempts wait `reconnect_ms` (ARCHITECTURE.md).
    let (events_tx, events_rx) = mpsc::unbounded_channel();
    let (peer_tx, peer_rx) = tokio::sync::watch::channel(None);
    tasks.spawn(crate::link::edge::run(
        link,
        handler,
        events_tx,
        stop.clone(),
    ));
    // Not tracked: it ends when the link loop drops its sender.
    tokio::spawn(follow_link_events(
        events_rx,
        peer_tx,
        control.clone(),
        stood_down,
    ));
    Ok((peer_rx, wake))
}

/// The edge's link to the master, `None` while it is down.
type PeerWatch = tokio::sync::watch::Receiver<Option<crate::link::Peer>>;

/// The link's settings, and the handler that answers the master (it shares
/// the connect loop's stand-down switch).
fn link_parts(
    config: &Config,
    edge_id: Uuid,
    runtime: &Runtime,
    store: &Store,
    control: &Arc<SiteControl>,
    wake: &Arc<tokio::sync::Notify>,
) -> Result<(EdgeLinkConfig, Arc<EdgeHandler>), RunError> {
    let link = EdgeLinkConfig::from_config(config)
        .map_err(|e| ConfigError::new("ca_cert", e.to_string()))?;
    let handler = EdgeHandler::new(
        edge_id,
        runtime.clone(),
        store.clone(),
        config.modules_dir.clone(),
        wake.clone(),
        control.clone(),
    )
    .with_stand_down(link.stand_down.clone());
    Ok((link, Arc::new(handler)))
}

/// As on the master: one process per database, the API's port bound
/// before any device is driven, then the store.
async fn claim(
    config: &Config,
) -> Result<(boot::DatabaseLock, tokio::net::TcpListener, Store), RunError> {
    let lock = boot::lock_database(config)?;
    let api_listener = crate::api::bind(config).await?;
    Ok((lock, api_listener, boot::open_store(config).await?))
}

/// The site's event log and its sync to the master.
fn event_sync(
    config: &Config,
    edge_id: Uuid,
    store: &Store,
    clock: Clock,
) -> Arc<event_log::EventSync> {
    Arc::new(event_log::EventSync {
        edge_id,
        store: store.clone(),
        epoch: std::sync::atomic::AtomicU64::new(0),
        clock,
        max_events: config.event_log_max,
        retry: Duration::from_millis(config.event_retry_ms),
        wake: tokio::sync::Notify::new(),
        fresh: Default::default(),
    })
}

/// Logs what the replica holds for this edge at boot.
async fn log_plan(store: &Store, edge_id: Uuid) -> Result<(), RunError> {
    match boot::plan_edge(store, edge_id).await? {
        EdgeBoot::Waiting => tracing::warn!(
            %edge_id,
            "this edge location is not in the local replica yet: waiting for the first sync from the master"
        ),
        EdgeBoot::Ready(plan) => {
            if !plan.missing_modules.is_empty() {
                tracing::warn!(missing = ?plan.missing_modules, "systems list modules that are not in the replica");
            }
            tracing::info!(
                %edge_id,
                location = %plan.location.name,
                systems = plan.systems.len(),
                modules = plan.modules.len(),
                total_ms = %format_args!("{:.1}", plan.timings.total().as_secs_f64() * 1e3),
                "boot plan loaded ({})",
                plan.timings
            );
        }
    }
    Ok(())
}

impl Edge {
    /// A graceful stop: the master is told it is a restart (not a loss),
    /// the API drains, the link closes, modules unload (releasing their
    /// devices), the store closes.
    pub async fn stop(self) {
        tracing::info!("edge stopping");
        let peer = self.link.borrow().clone();
        if let Some(peer) = peer {
            let said = peer.event(crate::proto::EventBody::Stopping { restart: true });
            // A master that cannot be told in a second learns of the loss.
            let _ = tokio::time::timeout(Duration::from_secs(1), said).await;
        }
        boot::graceful_stop(
            self.api.stop(self.grace),
            self.stop,
            self.tasks,
            &self.runtime,
            (&self.store, async {}),
            self.grace,
        )
        .await;
    }
}

/// Runs an edge until `shutdown` completes.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> Result<(), RunError> {
    let edge = start(config).await?;
    shutdown.await;
    edge.stop().await;
    Ok(())
}

/// Publishes the current link for the replicator and the event pusher,
/// and runs the site when the link is declared disconnected.
async fn follow_link_events(
    mut events: mpsc::UnboundedReceiver<EdgeLinkEvent>,
    peer: tokio::sync::watch::Sender<Option<crate::link::Peer>>,
    control: Arc<SiteControl>,
    (store, stand_down): (Store, crate::link::edge::StandDown),
) {
    while let Some(ev) = events.recv().await {
        match ev {
            EdgeLinkEvent::Connected {
                master, peer: p, ..
            } => {
                tracing::info!(%master, "connected to the master");
                control.recommission();
                peer.send_replace(Some(p));
            }
            EdgeLinkEvent::Refused {
                reason: Some(crate::proto::DenyReason::UnknownEdge),
                store_id: Some(theirs),
                ..
            } if store.upstream().await.ok().flatten() == Some(theirs) => {
                // Handled before the Disconnected event that follows this
                // failed round, so the site never starts on its own.
                stand_down.decommissioned();
                control.decommission().await;
            }
            EdgeLinkEvent::Refused { .. } => {}
            EdgeLinkEvent::ConnectionLost { reason, .. } => {
                tracing::warn!(?reason, "link to the master lost");
                peer.send_replace(None);
            }
            EdgeLinkEvent::ConnectFailed { master, error, .. } => {
                tracing::debug!(%master, %error, "cannot reach the master")
            }
            EdgeLinkEvent::Disconnected { .. } => {
                // Not awaited here: the link's events keep flowing while
                // the site starts.
                let control = control.clone();
                tokio::spawn(async move { control.autonomy().await });
            }
        }
    }
}
