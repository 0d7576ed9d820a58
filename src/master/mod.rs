//! The master role: [`start`] returns a running master, [`run`] runs one
//! until a shutdown future completes.
//!
//! Boot follows the design's order (see [`crate::boot`]): certificates,
//! store, boot plan (edge locations, their systems, the set of edge-owned
//! modules, the master's own modules), start the master's modules (through
//! the [`Reconciler`], which then follows every change), listen for edges,
//! serve the API (reads at once; `health` says `booting`), and wait up to
//! `boot_wait_ms` for edges before deciding about missing ones.

pub mod authorize;
mod control;
mod handler;
mod inbox;
mod link_keys;
mod replica;
mod standby;

pub use crate::api::RestoreError;
pub use control::Control;
pub use handler::{MasterHandler, accept_from_controller, judge_events};
pub use link_keys::StoredKeys;

use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use uuid::Uuid;

use crate::api;
use crate::boot::{self, RunError};
use crate::certs;
use crate::cluster::{self, Cluster};
use crate::config::{Config, ConfigError, Role, check_readable};
use crate::control::Clock;
use crate::link::{MasterLinkConfig, Registry};
use crate::reconciler::{Reconciler, Scope};
use crate::runtime::{Runtime, RuntimeConfig};
use crate::store::Store;

/// How often the control loop reads the change feed for location edits
/// committed by another process (this process's commits wake it at once).
const LOCATION_POLL: Duration = Duration::from_secs(1);

/// A running master.
pub struct Master {
    pub api_addr: std::net::SocketAddr,
    pub link_addr: std::net::SocketAddr,
    /// Connected edges.
    pub registry: Registry,
    pub runtime: Runtime,
    /// The only code that changes what runs for documents.
    pub reconciler: Reconciler,
    pub store: Store,
    /// Edge locations that had not connected when the boot wait ended.
    pub missing_at_boot: Vec<Uuid>,
    /// Events arriving from edges (debug streams), with their edge.
    pub edge_events: api::EdgeEventFeed,
    /// Who controls each location; restore.
    pub control: Control,
    /// In a cluster: this node's state and term (`None`: a master alone).
    pub leadership: Option<crate::control::leadership::LeadershipWatch>,
    api: api::RunningApi,
    stop: CancellationToken,
    tasks: TaskTracker,
    grace: Duration,
    /// Its lease, released after the stop.
    cluster: Option<Cluster>,
    /// Released when the master is dropped, after its stop.
    _lock: boot::DatabaseLock,
}

/// Starts a master whose control decisions read the system clock.
pub async fn start(config: Config) -> Result<Master, RunError> {
    start_with_clock(config, Clock::system()).await
}

/// Starts a master whose control decisions (windows, failover deadlines,
/// the hold-down) read `clock`: tests and benchmarks pass a manual one.
///
/// In a cluster (a `postgres://` database, or `cluster_lock_file`) the node
/// first serves API reads as a STANDBY and returns once it is MASTER: only
/// then does it drive devices and take edges.
pub async fn start_with_clock(config: Config, clock: Clock) -> Result<Master, RunError> {
    certs::install_crypto_provider();
    ensure_certificates(&config)?;
    let mut claimed = claim(&config).await?;
    let cluster = cluster::configured(&config).then(|| Cluster::join(&config, &claimed.store));
    let mut runtime_config = RuntimeConfig::from_config(&config);
    if let Some(c) = &cluster {
        runtime_config.transport.gate = c.gate();
        claimed.link.leadership = c.watch();
        // Both the standby's door and the acting link answer other
        // nodes' probes (`cluster_failsafe`).
        claimed.link.probe = Some(c.witness());
    }
    let runtime = Runtime::new(runtime_config);
    let acting = Acting::new();
    let standby = match &cluster {
        Some(c) => {
            let warm = acting.keep_warm(&config, &claimed.store, &runtime);
            let standby = standby::serve_until_promoted(c, &config, &mut claimed, &runtime).await;
            match standby {
                Ok(standby) => Some((standby, warm)),
                Err(e) => {
                    acting.stop.cancel();
                    return Err(e);
                }
            }
        }
        None => None,
    };
    let (standby, warm) = standby.unzip();
    let master = act(config, clock, claimed, runtime, cluster, acting, warm).await;
    if let Some(standby) = standby {
        standby.stop().await;
    }
    master
}

/// The acting master's stop and tasks, made before it acts: a hot
/// STANDBY's reconciler runs on them already.
struct Acting {
    stop: CancellationToken,
    tasks: TaskTracker,
}

impl Acting {
    fn new() -> Self {
        Self {
            stop: CancellationToken::new(),
            tasks: TaskTracker::new(),
        }
    }

    /// A STANDBY's reconciler: the master's own systems loaded, none
    /// started, kept current with the store until promotion.
    fn keep_warm(&self, config: &Config, store: &Store, runtime: &Runtime) -> Reconciler {
        let dir = config.modules_dir.clone();
        let reconciler = Reconciler::new(Scope::Standby, store.clone(), runtime.clone(), dir);
        self.tasks.spawn(reconciler.clone().run(self.stop.clone()));
        reconciler
    }

    /// The acting master's reconciler, after its first pass: the standby's
    /// promoted, or a new one.
    async fn reconciler(
        &self,
        warm: Option<Reconciler>,
        config: &Config,
        store: &Store,
        runtime: &Runtime,
    ) -> Reconciler {
        if let Some(warm) = warm {
            warm.promote();
            warm.settle().await;
            return warm;
        }
        let dir = config.modules_dir.clone();
        Reconciler::start(Scope::Master, store, runtime, dir, &self.stop, &self.tasks).await
    }
}

/// What a master does once it acts (at once when alone, on promotion in a
/// cluster): boot plan, its own systems, held sites, edges, the API.
async fn act(
    config: Config,
    clock: Clock,
    claimed: Claimed,
    runtime: Runtime,
    cluster: Option<Cluster>,
    acting: Acting,
    warm: Option<Reconciler>,
) -> Result<Master, RunError> {
    #[rustfmt::skip]
    let Claimed { lock, api_listener, listener, link, link_addr, store } = claimed;
    // Location edits after this point reach the control loop.
    let feed_from = store.last_seq().await?;
    let plan = boot::plan_master(&store).await?;
    log_plan(&plan);
    // The master's own systems run before any edge can connect.
    let reconciler = acting.reconciler(warm, &config, &store, &runtime).await;
    let Acting { stop, tasks } = acting;

    let (edge_events, _) = tokio::sync::broadcast::channel(1024);
    let parts = (&store, &runtime, &reconciler);
    let control = control_loop(&config, parts, clock.clone(), &stop, &tasks);
    let (links, _) = tokio::sync::broadcast::channel(256);
    let registry = Registry::new(control.link_events(links.clone()));
    let expected: Vec<Uuid> = plan.edges.iter().map(|e| e.id).collect();
    control.resume(&expected).await?; // held sites run before edges connect

    let sync_facts = api::SyncFacts::new();
    let (handler, edge_status) =
        link_handler(&config, &store, &runtime, &control, &clock, &edge_events);
    let handler = handler.with_sync_facts(sync_facts.clone());
    let keys = StoredKeys(store.clone());
    spawn_link(listener, link, keys, handler, &registry, &stop, &tasks);
    spawn_feeds(&config, &store, &registry, &clock, &stop, &tasks);
    tasks.spawn(retain_events(store.clone(), clock, &config, stop.clone()));
    tasks.spawn(control.clone().follow_locations(feed_from, LOCATION_POLL));
    let leadership = standby::follow(cluster.as_ref(), &runtime, &stop, &tasks);
    tracing::info!(link = %link_addr, "listening for edges");

    // The API answers from the first second: reads at once, device calls
    // on sites not decided yet 503 with Retry-After until the boot wait ends.
    let ops = api::Ops {
        edge_status: Some(edge_status),
        edge_events: Some(edge_events.clone()),
        links: Some(links),
        sync: Some(sync_facts),
        control: Some(Arc::new(control.clone())),
        reconciler: Some(reconciler.clone()),
        ..standby::cluster_ops(
            api::Ops::new(runtime.clone(), Some(registry.clone()), &config),
            cluster.as_ref(),
        )
    };
    let api = api::start_on(api_listener, &config, &store, Role::Master, ops).await?;
    tracing::info!(api = %api.addr, "API serving while the master boots");
    let missing_at_boot = boot_wait(&registry, &expected, &config, &control).await;
    tracing::info!(api = %api.addr, link = %link_addr, "master ready");
    Ok(Master {
        api_addr: api.addr,
        link_addr,
        registry,
        runtime,
        reconciler,
        store,
        missing_at_boot,
        edge_events,
        control,
        leadership,
        api,
        stop,
        tasks,
        grace: Duration::from_millis(config.shutdown_grace_ms),
        cluster,
        _lock: lock,
    })
}

/// The master's control loop, with the configuration's hold-down and
/// control call timeout.
fn control_loop(
    config: &Config,
    (store, runtime, reconciler): (&Store, &Runtime, &Reconciler),
    clock: Clock,
    stop: &CancellationToken,
    tasks: &TaskTracker,
) -> Control {
    Control::new(
        store.clone(),
        runtime.clone(),
        reconciler.clone(),
        clock,
        control::ControlSettings {
            max_changes: config.max_control_changes_per_minute,
            call: Duration::from_millis(config.control_call_ms),
            node_id: config.node_name(),
        },
        stop.clone(),
        tasks.clone(),
    )
}

/// What a master holds before it drives any device.
pub(crate) struct Claimed {
    lock: boot::DatabaseLock,
    api_listener: tokio::net::TcpListener,
    listener: tokio::net::TcpListener,
    link: MasterLinkConfig,
    link_addr: std::net::SocketAddr,
    store: Store,
}

/// Claims the database and binds both listeners before any device is
/// driven: a second master on this database, or a port in use, fails here
/// and touches nothing. Then opens the store.
async fn claim(config: &Config) -> Result<Claimed, RunError> {
    let lock = boot::lock_database(config)?;
    let api_listener = api::bind(config).await?;
    let (listener, mut link, link_addr) = bind_link(config).await?;
    let store = boot::open_store(config).await?;
    link.store_id = Some(store.store_id());
    share_link_tickets(&mut link, &store).await;
    Ok(Claimed {
        lock,
        api_listener,
        listener,
        link,
        link_addr,
        store,
    })
}

/// Edges resume their TLS sessions on every master of this database (this
/// one restarted, the next MASTER of a cluster). Without the secret, this
/// master's own tickets still serve reconnects to it: a restart then costs
/// full handshakes, which is slower, not wrong.
async fn share_link_tickets(link: &mut MasterLinkConfig, store: &Store) {
    match store.link_ticket_secret().await {
        Ok(secret) => link.tls = crate::link::tls::with_shared_tickets(&link.tls, &secret),
        Err(e) => tracing::warn!(
            error = %e,
            "cannot read the link's ticket secret; edges will not resume their TLS sessions across a restart or failover"
        ),
    }
}

/// What answers edges over the link, and the feed of their modules' status
/// changes it publishes (the API's WebSocket hub follows it).
fn link_handler(
    config: &Config,
    store: &Store,
    runtime: &Runtime,
    control: &Control,
    clock: &Clock,
    edge_events: &api::EdgeEventFeed,
) -> (MasterHandler, api::EdgeStatusFeed) {
    let (edge_status, _) = tokio::sync::broadcast::channel(1024);
    let handler = MasterHandler::new(
        runtime.clone(),
        config.modules_dir.clone(),
        edge_events.clone(),
        store.clone(),
        control.clone(),
        clock.clone(),
    )
    .with_status_feed(edge_status.clone())
    .with_replica_scope(config.replica_scope);
    (handler, edge_status)
}

/// Serves the link on `tasks` until `stop`.
fn spawn_link(
    listener: tokio::net::TcpListener,
    link: MasterLinkConfig,
    keys: StoredKeys,
    handler: MasterHandler,
    registry: &Registry,
    stop: &CancellationToken,
    tasks: &TaskTracker,
) {
    let serve = crate::link::master::serve(
        listener,
        link,
        Arc::new(keys),
        Arc::new(handler),
        registry.clone(),
        stop.clone(),
    );
    tasks.spawn(async move {
        if let Err(e) = serve.await {
            tracing::error!(error = %e, "the link listener stopped");
        }
    });
}

/// Edges retry every few seconds: gives each a chance before deciding
/// anything about the ones that did not come.
async fn boot_wait(
    registry: &Registry,
    expected: &[Uuid],
    config: &Config,
    control: &Control,
) -> Vec<Uuid> {
    let missing = registry
        .wait_for(expected, Duration::from_millis(config.boot_wait_ms))
        .await;
    if !missing.is_empty() {
        tracing::warn!(missing = ?missing, "edge locations not connected after the boot wait");
    }
    control.booted(&missing);
    missing
}

fn log_plan(plan: &boot::MasterPlan) {
    tracing::info!(
        edges = plan.edges.len(),
        edge_systems = plan.edge_systems.len(),
        edge_modules = plan.edge_modules.len(),
        master_systems = plan.master_systems.len(),
        master_modules = plan.master_modules.len(),
        total_ms = %format_args!("{:.1}", plan.timings.total().as_secs_f64() * 1e3),
        "boot plan loaded ({})",
        plan.timings
    );
}

/// Binds the link's listener.
async fn bind_link(
    config: &Config,
) -> Result<
    (
        tokio::net::TcpListener,
        MasterLinkConfig,
        std::net::SocketAddr,
    ),
    RunError,
> {
    let link = MasterLinkConfig::from_config(config)
        .map_err(|e| ConfigError::new("tls_cert", e.to_string()))?;
    let listener = tokio::net::TcpListener::bind(config.link_addr)
        .await
        .map_err(|e| {
            ConfigError::new(
                "link_addr",
                format!("cannot listen on {}: {e}", config.link_addr),
            )
        })?;
    let link_addr = listener
        .local_addr()
        .map_err(|e| ConfigError::new("link_addr", e.to_string()))?;
    Ok((listener, link, link_addr))
}

/// The credential watcher, the passive event sync (stamping what it stores
/// with `clock`) and the data-model notices to edges.
fn spawn_feeds(
    config: &Config,
    store: &Store,
    registry: &Registry,
    clock: &Clock,
    stop: &CancellationToken,
    tasks: &TaskTracker,
) {
    // Credential changes close the edge's link within one heartbeat.
    tasks.spawn(link_keys::follow_credentials(
        store.clone(),
        registry.clone(),
        Duration::from_millis((config.heartbeat_ms / 2).max(1)),
        stop.clone(),
    ));
    tasks.spawn(passive_sync(
        store.clone(),
        registry.clone(),
        clock.clone(),
        PassiveSync {
            interval: Duration::from_millis(config.sync_interval_ms),
            batch: config.sync_batch_size,
            step_sleep: Duration::from_millis(config.sync_step_sleep_ms),
        },
        stop.clone(),
    ));
    tasks.spawn(notify_data_changes(
        store.subscribe_commits(),
        registry.clone(),
        stop.clone(),
    ));
    tasks.spawn(audit_duplicates(
        store.clone(),
        registry.subscribe_duplicates(),
        stop.clone(),
    ));
}

/// Records each duplicate edge session in its site's audit log: two live
/// processes with one id is an operator's mistake to find later too.
async fn audit_duplicates(
    store: Store,
    mut duplicates: tokio::sync::broadcast::Receiver<(Uuid, crate::link::Duplicate)>,
    stop: CancellationToken,
) {
    use tokio::sync::broadcast::error::RecvError;
    loop {
        let next = tokio::select! {
            () = stop.cancelled() => return,
            next = duplicates.recv() => next,
        };
        let (edge_id, duplicate) = match next {
            Ok(d) => d,
            Err(RecvError::Lagged(n)) => {
                metrics::counter!("outpost_channel_full_total", "channel" => "duplicates", "outcome" => "dropped").increment(n);
                continue;
            }
            Err(RecvError::Closed) => return,
        };
        let at_ms = crate::util::unix_ms_of(duplicate.at);
        if let Err(e) = store
            .record_site_action(edge_id, "duplicate_session", at_ms, None)
            .await
        {
            tracing::error!(edge = %edge_id, error = %crate::util::describe(&e), "cannot record a duplicate session in the audit log");
        }
    }
}

/// How often (by the control clock) collected events are checked against
/// the retention bounds.
const PRUNE_EVERY_MS: i64 = 3_600_000;
const DAY_MS: i64 = 86_400_000;

/// Keeps the collected events within `event_retention_days` and
/// `event_retention_max`: at start, then every hour. Age is judged by
/// `clock` on both ends: the cut-off from its now, against when this master
/// (with the same clock) stored each event, never the edge's own stamp, so
/// an edge's wrong clock cannot have its events deleted on arrival.
fn retain_events(
    store: Store,
    clock: Clock,
    config: &Config,
    stop: CancellationToken,
) -> impl Future<Output = ()> + Send + 'static {
    let days = i64::try_from(config.event_retention_days).unwrap_or(i64::MAX);
    let keep = config.event_retention_max;
    async move {
        loop {
            let before = match days {
                0 => i64::MIN,
                d => clock.now_ms().saturating_sub(d.saturating_mul(DAY_MS)),
            };
            match store.prune_events(before, keep).await {
                Ok(0) => {}
                Ok(n) => {
                    metrics::counter!("outpost_events_pruned_total").increment(n);
                    tracing::info!(pruned = n, "collected events past their retention deleted");
                }
                Err(e) => tracing::warn!(error = %e, "cannot prune collected events"),
            }
            let next = clock.now_ms().saturating_add(PRUNE_EVERY_MS);
            tokio::select! {
                () = stop.cancelled() => return,
                () = clock.sleep_until(next) => {}
            }
        }
    }
}

impl Master {
    /// A graceful stop: the API drains, edge links close, modules unload
    /// (releasing their devices), the cluster lease is released (a standby
    /// promotes at once), the store closes.
    pub async fn stop(self) {
        tracing::info!("master stopping");
        let cluster = self.cluster;
        boot::graceful_stop(
            self.api.stop(self.grace),
            self.stop,
            self.tasks,
            &self.runtime,
            (&self.store, async move {
                if let Some(c) = cluster {
                    c.release().await;
                }
            }),
            self.grace,
        )
        .await;
    }

    /// Resolves when this node lost its cluster lease (never for a master
    /// alone).
    pub async fn lost(&self) {
        match &self.leadership {
            Some(w) => standby::lost(w.clone()).await,
            None => std::future::pending().await,
        }
    }
}

/// Runs a master until `shutdown` completes.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> Result<(), RunError> {
    tokio::pin!(shutdown);
    // A standby waits for promotion inside `start`; a stop meanwhile ends it.
    let master = tokio::select! {
        m = start(config) => m?,
        () = &mut shutdown => return Ok(()),
    };
    let lost = tokio::select! {
        () = &mut shutdown => false,
        () = master.lost() => true,
    };
    master.stop().await;
    if lost {
        Err(RunError::LeaseLost)
    } else {
        Ok(())
    }
}

/// The master's TLS files must be readable. On a fresh checkout (none of the
/// three files exists) a development set is created and said to be one.
pub fn ensure_certificates(config: &Config) -> Result<(), ConfigError> {
    let files = [
        ("ca_cert", &config.ca_cert),
        ("tls_cert", &config.tls_cert),
        ("tls_key", &config.tls_key),
    ];
    if files.iter().all(|(_, p)| !p.exists()) {
        let dir = config.tls_cert.parent().unwrap_or(Path::new("."));
        let dev = certs::DevCerts::in_dir(dir);
        if dev.ca_cert != config.ca_cert || dev.cert != config.tls_cert || dev.key != config.tls_key
        {
            return Err(ConfigError::new(
                "tls_cert",
                format!(
                    "{} does not exist (development certificates are only created under the default names in one directory; run `outpost certs init`)",
                    config.tls_cert.display()
                ),
            ));
        }
        let mut hosts = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
        let ip = config.link_addr.ip();
        if !ip.is_unspecified() && !hosts.contains(&ip.to_string()) {
            hosts.push(ip.to_string());
        }
        certs::init_dev(dir, &hosts, false)
            .map_err(|e| ConfigError::new("tls_cert", e.to_string()))?;
        tracing::warn!(
            dir = %dir.display(),
            hosts = ?hosts,
            "created development certificates: for development only, not for production"
        );
    }
    for (key, path) in files {
        check_readable(path).map_err(|p| ConfigError::new(key, p))?;
    }
    certs::load_certs(&config.ca_cert).map_err(|e| ConfigError::new("ca_cert", e.to_string()))?;
    certs::load_certs(&config.tls_cert).map_err(|e| ConfigError::new("tls_cert", e.to_string()))?;
    certs::load_key(&config.tls_key).map_err(|e| ConfigError::new("tls_key", e.to_string()))?;
    Ok(())
}

/// Tells every connected edge when the data model changed, so replicas pull
/// at once. Bursts coalesce: a notice carries the latest sequence number.
async fn notify_data_changes(
    mut commits: tokio::sync::watch::Receiver<i64>,
    registry: Registry,
    stop: CancellationToken,
) {
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            r = commits.changed() => if r.is_err() { return },
        }
        let seq = *commits.borrow_and_update();
        for info in registry.list() {
            if let Some(peer) = registry.peer(info.edge_id) {
                tokio::spawn(async move {
                    // A closed link learns on reconnect; nothing to retry.
                    let _ = peer
                        .event(crate::proto::EventBody::DataModelUpdated { seq })
                        .await;
                });
            }
        }
    }
}

/// Settings of the passive event sync.
#[derive(Debug, Clone, Copy)]
pub struct PassiveSync {
    pub interval: Duration,
    pub batch: u32,
    pub step_sleep: Duration,
}

/// Every `interval`, pulls unsynced events from each connected edge in
/// batches, stores them with the edge's cursor in one transaction, then
/// tells the edge they are synced. A kill at any point repeats at most a
/// batch, which the store ignores (events are idempotent by id).
async fn passive_sync(
    store: Store,
    registry: Registry,
    clock: Clock,
    cfg: PassiveSync,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(cfg.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        for info in registry.list() {
            let Some(peer) = registry.peer(info.edge_id) else {
                continue;
            };
            if let Err(e) = sync_edge(&store, &peer, info.edge_id, &clock, cfg, &stop).await {
                tracing::debug!(edge = %info.edge_id, error = %e, "passive sync stopped for now");
            }
        }
    }
}

/// One passive-sync pass over one edge: batches of unsynced events from
/// its cursor until the edge has none left (public for the benchmark),
/// each stored stamped with `clock`, the master's (retention counts from
/// there).
/// The next batch is asked for while the current one is stored and
/// acknowledged, so the edge's read, the master's write and the edge's
/// marking overlap instead of taking turns.
pub async fn sync_edge(
    store: &Store,
    peer: &crate::link::Peer,
    edge_id: Uuid,
    clock: &Clock,
    cfg: PassiveSync,
    stop: &CancellationToken,
) -> Result<(), String> {
    use crate::proto::{RequestBody, ResponseBody};
    let call = Duration::from_secs(30);
    let fetch = |after: i64| async move {
        let body = RequestBody::UnsyncedEvents {
            after,
            limit: cfg.batch,
        };
        match peer.request(body, call).await.map_err(|e| e.to_string())? {
            ResponseBody::Events { events } => Ok(events),
            other => Err(format!("unexpected answer: {other:?}")),
        }
    };
    let mut after = store
        .sync_cursor(edge_id)
        .await
        .map_err(|e| e.to_string())?;
    let mut restarted = false;
    let mut events = fetch(after).await?;
    loop {
        if events.is_empty() {
            // An edge whose log restarted (a new data directory) numbers
            // from 1 again: look once from the start.
            if after > 0 && !restarted {
                restarted = true;
                after = 0;
                events = fetch(after).await?;
                continue;
            }
            return Ok(());
        }
        let last = events.iter().filter_map(|e| e.seq).max().unwrap_or(after);
        let ids: Vec<Uuid> = events.iter().map(|e| e.id).collect();
        // Judged and stored like pushed events: refused ones marked, unknown
        // kinds kept as they came.
        let batch = events
            .iter()
            .map(|e| handler::from_wire(edge_id, e))
            .collect();
        let judged = judge_events(store, edge_id, batch)
            .await
            .map_err(|e| e.to_string())?;
        let store_and_ack = async {
            let rows: Vec<(&crate::store::Event, Option<&str>)> =
                judged.iter().map(|(e, why)| (e, why.as_deref())).collect();
            let new = store
                .collect_judged(edge_id, &rows, Some(last), clock.now_ms())
                .await
                .map_err(|e| e.to_string())?;
            metrics::counter!("outpost_events_collected_total").increment(new as u64);
            peer.request(RequestBody::EventsSynced { ids }, call)
                .await
                .map_err(|e| e.to_string())
        };
        let (next, stored) = tokio::join!(fetch(last), store_and_ack);
        stored?;
        after = last;
        events = next?;
        tokio::select! {
            () = stop.cancelled() => return Ok(()),
            () = tokio::time::sleep(cfg.step_sleep) => {}
        }
    }
}
