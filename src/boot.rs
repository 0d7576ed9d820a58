//! Boot plans: what a master or an edge loads at start, in the order of the
//! original ACA Engine edge design.
//!
//! Master: (1) all edge locations, (2) the systems of edges, (3) the set of
//! edge-owned modules, (4) every other module, which the master runs itself.
//! Edge: its own location document, the systems with its `edge_id`, and
//! their modules. The runtime that starts modules consumes these plans.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use uuid::Uuid;

use crate::model::{ControlSystem, Doc, EdgeLocation, Kind, Module};
use crate::store::{Document, Store, StoreError};

/// How long each step took.
#[derive(Debug, Clone, Default)]
pub struct Timings {
    pub steps: Vec<(&'static str, Duration)>,
}

impl Timings {
    fn step<T>(&mut self, name: &'static str, start: Instant, value: T) -> T {
        self.steps.push((name, start.elapsed()));
        value
    }

    pub fn total(&self) -> Duration {
        self.steps.iter().map(|(_, d)| *d).sum()
    }
}

impl std::fmt::Display for Timings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, (name, d)) in self.steps.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{name} {:.1} ms", d.as_secs_f64() * 1e3)?;
        }
        Ok(())
    }
}

/// What a master loads at boot.
#[derive(Debug, Clone)]
pub struct MasterPlan {
    pub edges: Vec<EdgeLocation>,
    /// Systems that belong to edge locations.
    pub edge_systems: Vec<ControlSystem>,
    /// Module id → the edge location that controls it.
    pub edge_modules: HashMap<Uuid, Uuid>,
    /// Systems that belong to the master.
    pub master_systems: Vec<ControlSystem>,
    /// Modules the master runs itself: every module not owned by an edge.
    pub master_modules: Vec<Module>,
    pub timings: Timings,
}

/// What an edge loads at boot.
#[derive(Debug, Clone)]
pub enum EdgeBoot {
    /// The location is not in the local replica yet: the edge waits for the
    /// first sync from the master.
    Waiting,
    Ready(Box<EdgePlan>),
}

#[derive(Debug, Clone)]
pub struct EdgePlan {
    pub location: EdgeLocation,
    pub systems: Vec<ControlSystem>,
    /// The modules of those systems, in first-listed order.
    pub modules: Vec<Module>,
    /// Module ids listed by a system but missing from the replica.
    pub missing_modules: Vec<Uuid>,
    pub timings: Timings,
}

#[derive(Debug, thiserror::Error)]
pub enum BootError {
    #[error("cannot read the store")]
    Store(#[from] StoreError),
}

fn parse_all<D: Doc>(docs: &[Document]) -> Result<Vec<D>, StoreError> {
    docs.iter().map(Document::parse::<D>).collect()
}

/// Builds the master's boot plan.
pub async fn plan_master(store: &Store) -> Result<MasterPlan, BootError> {
    let mut timings = Timings::default();

    let t = Instant::now();
    let edges: Vec<EdgeLocation> = parse_all(&store.list_all(Kind::Edge).await?)?;
    let edges = timings.step("edge locations", t, edges);

    let t = Instant::now();
    let edge_systems: Vec<ControlSystem> = parse_all(&store.with_any_owner(Kind::System).await?)?;
    let edge_systems = timings.step("edge systems", t, edge_systems);

    let t = Instant::now();
    let known: HashSet<Uuid> = edges.iter().map(|e| e.id).collect();
    let mut edge_modules = HashMap::new();
    for system in &edge_systems {
        // Selected by owner, so every one has an edge id.
        let Some(edge) = system.edge_id else { continue };
        if !known.contains(&edge) {
            tracing::warn!(system = %system.id, %edge, "system belongs to an edge location that does not exist; its modules stay unloaded");
        }
        for module in &system.module_ids {
            edge_modules.insert(*module, edge);
        }
    }
    let edge_modules = timings.step("edge module set", t, edge_modules);

    let t = Instant::now();
    let all_modules = store.list_all(Kind::Module).await?;
    let mut master_modules =
        Vec::with_capacity(all_modules.len().saturating_sub(edge_modules.len()));
    for doc in &all_modules {
        if !edge_modules.contains_key(&doc.id) {
            master_modules.push(doc.parse::<Module>()?);
        }
    }
    let master_modules = timings.step("master modules", t, master_modules);

    let t = Instant::now();
    let master_systems: Vec<ControlSystem> = parse_all(&store.without_owner(Kind::System).await?)?;
    let master_systems = timings.step("master systems", t, master_systems);

    Ok(MasterPlan {
        edges,
        edge_systems,
        edge_modules,
        master_systems,
        master_modules,
        timings,
    })
}

/// Builds an edge's boot plan from its local replica.
pub async fn plan_edge(store: &Store, edge_id: Uuid) -> Result<EdgeBoot, BootError> {
    let mut timings = Timings::default();

    let t = Instant::now();
    let Some(doc) = store.get(edge_id).await? else {
        return Ok(EdgeBoot::Waiting);
    };
    if doc.kind != Kind::Edge.as_str() {
        return Ok(EdgeBoot::Waiting);
    }
    let location: EdgeLocation = timings.step("edge location", t, doc.parse()?);

    let t = Instant::now();
    let systems: Vec<ControlSystem> = parse_all(&store.by_owner(Kind::System, edge_id).await?)?;
    let systems = timings.step("systems", t, systems);

    let t = Instant::now();
    let mut order = Vec::new();
    let mut seen = HashSet::new();
    for system in &systems {
        for module in &system.module_ids {
            if seen.insert(*module) {
                order.push(*module);
            }
        }
    }
    let docs = store.get_many(&order).await?;
    let mut by_id: HashMap<Uuid, Module> = HashMap::with_capacity(docs.len());
    for doc in &docs {
        by_id.insert(doc.id, doc.parse()?);
    }
    let mut modules = Vec::with_capacity(order.len());
    let mut missing_modules = Vec::new();
    for id in order {
        match by_id.remove(&id) {
            Some(m) => modules.push(m),
            None => missing_modules.push(id),
        }
    }
    let modules = timings.step("modules", t, modules);

    Ok(EdgeBoot::Ready(Box::new(EdgePlan {
        location,
        systems,
        modules,
        missing_modules,
        timings,
    })))
}

/// Why a master or an edge could not start. Each names what to fix.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error("cannot open the store")]
    Store(#[from] StoreError),
    #[error(transparent)]
    Boot(#[from] BootError),
    #[error(
        "another outpost process already runs on {database} (it holds the lock {lock}); stop it first, or give this one another data_dir"
    )]
    AlreadyRunning { database: String, lock: String },
    #[error(
        "this master node lost its cluster lease and stopped acting; restart it to rejoin the cluster as a standby"
    )]
    LeaseLost,
    #[error("cannot lock {lock}: {source}")]
    Lock {
        lock: String,
        source: std::io::Error,
    },
}

/// Proof that this process alone runs a role on its SQLite database: an
/// exclusive `flock` on `<database>.lock`, held until dropped (the kernel
/// drops it with the process, however it dies). The lock is beside the
/// database, not on it, so that `outpost admin` and other readers still
/// open the database itself. PostgreSQL databases are shared on purpose
/// (a cluster) and take no lock file.
#[derive(Debug)]
pub struct DatabaseLock {
    _file: Option<std::fs::File>,
}

/// Takes the [`DatabaseLock`] before anything drives a device, so that a
/// second process on the same database fails at once instead of driving
/// the same devices beside the first.
pub fn lock_database(config: &crate::config::Config) -> Result<DatabaseLock, RunError> {
    // Masters sharing a database by a cluster lock file take turns by it.
    if config.cluster_lock_file.is_some() && config.role() == crate::config::Role::Master {
        return Ok(DatabaseLock { _file: None });
    }
    let Some(database) = crate::store::sqlite_file(&config.database_url()) else {
        return Ok(DatabaseLock { _file: None });
    };
    let mut name = database.file_name().unwrap_or_default().to_os_string();
    name.push(".lock");
    let lock = database.with_file_name(name);
    match crate::util::try_lock_file(&lock) {
        Ok(Some(file)) => Ok(DatabaseLock { _file: Some(file) }),
        Ok(None) => Err(RunError::AlreadyRunning {
            database: database.display().to_string(),
            lock: lock.display().to_string(),
        }),
        Err(source) => Err(RunError::Lock {
            lock: lock.display().to_string(),
            source,
        }),
    }
}

/// Opens the configured store, logging where it is (never credentials).
pub async fn open_store(config: &crate::config::Config) -> Result<Store, RunError> {
    let mut options = crate::store::StoreOptions::new(config.database_url());
    if config.role() == crate::config::Role::Master {
        // A cluster member stopped mid-transaction (SIGSTOP, a frozen VM)
        // must not hold the lease row's lock past its lease: the server
        // ends such a transaction, and a standby can be granted the lease.
        options.idle_in_transaction_ms = Some(config.lease_ms);
    }
    let store = Store::open(&options).await?;
    tracing::info!(database = store.display_url(), "store open");
    Ok(store)
}

/// A graceful stop of a role, in the order that releases what it holds:
/// the API drains its requests, links close (their tasks are waited for, up
/// to `grace`), modules unload (drivers' `on_unload` run and devices are
/// released), `before_close` runs (a master gives up its cluster lease),
/// and the store closes.
pub(crate) async fn graceful_stop(
    api_drained: impl std::future::Future<Output = ()>,
    stop: tokio_util::sync::CancellationToken,
    tasks: tokio_util::task::TaskTracker,
    runtime: &crate::runtime::Runtime,
    (store, before_close): (&Store, impl std::future::Future<Output = ()>),
    grace: std::time::Duration,
) {
    api_drained.await;
    stop.cancel();
    tasks.close();
    if tokio::time::timeout(grace, tasks.wait()).await.is_err() {
        tracing::warn!(
            grace_ms = grace.as_millis() as u64,
            "links did not close within the grace period"
        );
    }
    runtime.shutdown().await;
    before_close.await;
    store.close().await;
}
