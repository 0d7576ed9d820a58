//! The reconciler: the one piece of code that loads, updates, starts, stops
//! and unloads modules on behalf of documents, on both roles.
//!
//! It is level-triggered, shaped like a Kubernetes controller. Each pass
//! reads the **desired state** (the documents of what this process controls
//! now: on the master every system without `edge_id` plus the systems of
//! every site it holds; on an edge its own site, started only while it
//! controls it) and compares it with the **actual state** (the runtime),
//! then takes the smallest action per module:
//!
//! - not loaded → load (then start if it should run);
//! - document changed → [`Runtime::update`] (settings: the driver's update
//!   hook, connection kept; uri: reconnect; driver: reload);
//! - should run (enabled, listed by a system that is not `stopped` and
//!   whose site is held) but does not → start; runs but should not → stop;
//! - loaded but listed by no desired system (or deleted) → unload.
//!
//! Passes are driven by the store's commits through this process
//! ([`Store::subscribe_commits`]), a poll of the feed's sequence number
//! (writes by another process: `outpost admin import`), explicit pokes (the
//! edge's replica applies), changes of controller ([`Reconciler::set_held`])
//! and driver files changing in `modules/` (modification times, polled).
//! Bursts coalesce: every trigger marks the work queue dirty and the next
//! pass sees all of them at once; the queue is keyed by document id, so one
//! pass acts on each module at most once, whatever the number of edits. A
//! pass is idempotent, and a process that restarts resumes from nothing
//! (its runtime is empty), so a killed role converges on its next start
//! without starting a module twice.
//!
//! Safety stops (a site released to the other side) do not wait in the
//! queue: the control loop takes [`Reconciler::pause`], stops the modules
//! itself, marks the site not held, and lets go. Nor do they wait for a
//! whole pass: a pass gives way between chunks of actions when a stop
//! waits, and runs again after it (so a replica's snapshot of thousands of
//! modules never holds a release up).

mod diff;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use tokio::sync::{Mutex, Notify, OwnedMutexGuard, watch};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::model::{ControlSystem, Module};
use crate::runtime::Runtime;
use crate::store::Store;
use crate::util::Unpoisoned;

pub use diff::Actions;

/// Look at the feed's sequence number and the driver files this often.
const POLL: Duration = Duration::from_millis(500);

/// Which documents this process runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Every system without `edge_id`, plus the systems of held sites.
    Master,
    /// A hot STANDBY of a cluster: the systems a MASTER runs itself,
    /// loaded (drivers compiled, `on_load` run) but never started, so no
    /// device is driven; [`Reconciler::promote`] makes it `Master`, and
    /// promotion only starts what is already loaded.
    Standby,
    /// This edge's own systems: loaded always, started while held.
    Edge(Uuid),
}

/// What a pass remembers between passes.
#[derive(Default)]
struct State {
    /// The last sequence number a pass read the documents at.
    seq: i64,
    /// The module documents as last applied to the runtime.
    applied: HashMap<Uuid, Module>,
    /// The systems registered in the runtime.
    systems: HashMap<Uuid, ControlSystem>,
    /// Modules whose load failed, with the document that failed: tried
    /// again when the document or a driver file changes.
    failed: HashMap<Uuid, Module>,
    /// Driver file modification times, as last seen.
    drivers: HashMap<String, Option<SystemTime>>,
}

struct Inner {
    /// Changes once at most: from `Standby` to `Master` on promotion.
    scope: std::sync::Mutex<Scope>,
    store: Store,
    runtime: Runtime,
    modules_dir: PathBuf,
    /// Sites whose modules this process should run.
    held: std::sync::Mutex<HashSet<Uuid>>,
    /// Held by a pass, and by a safety stop ([`Reconciler::pause`]).
    pass: Arc<Mutex<State>>,
    /// Safety stops waiting for `pass`: a pass gives way to them between
    /// chunks of actions instead of finishing first.
    stops_waiting: Arc<AtomicU64>,
    wake: Notify,
    /// Pass generations asked for and completed.
    asked: AtomicU64,
    done: watch::Sender<u64>,
    actions: diff::Counters,
}

/// A handle on the reconciler of one role (cheap to clone).
#[derive(Clone)]
pub struct Reconciler(Arc<Inner>);

/// While held, no pass runs: a safety stop acts on the runtime itself.
pub struct Paused {
    _pass: OwnedMutexGuard<State>,
}

/// Counts a safety stop as waiting until it has the pass lock (or gave up).
struct Waiting(Arc<AtomicU64>);

impl Drop for Waiting {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Reconciler {
    pub fn new(scope: Scope, store: Store, runtime: Runtime, modules_dir: PathBuf) -> Reconciler {
        Reconciler(Arc::new(Inner {
            scope: std::sync::Mutex::new(scope),
            store,
            runtime,
            modules_dir,
            held: std::sync::Mutex::new(HashSet::new()),
            pass: Arc::new(Mutex::new(State::default())),
            stops_waiting: Arc::new(AtomicU64::new(0)),
            wake: Notify::new(),
            asked: AtomicU64::new(0),
            done: watch::channel(0).0,
            actions: diff::Counters::default(),
        }))
    }

    /// Creates the reconciler of a role, runs it on `tasks` until `stop`,
    /// and waits for its first pass (what the documents say runs now).
    pub async fn start(
        scope: Scope,
        store: &Store,
        runtime: &Runtime,
        modules_dir: PathBuf,
        stop: &CancellationToken,
        tasks: &tokio_util::task::TaskTracker,
    ) -> Reconciler {
        let reconciler = Reconciler::new(scope, store.clone(), runtime.clone(), modules_dir);
        tasks.spawn(reconciler.clone().run(stop.clone()));
        reconciler.settle().await;
        reconciler
    }

    /// Runs passes until `stop`: on commits through this process, on pokes,
    /// and every [`POLL`] when the feed moved or a driver file changed.
    pub async fn run(self, stop: CancellationToken) {
        let mut commits = self.0.store.subscribe_commits();
        let mut tick = tokio::time::interval(POLL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let asked = self.0.asked.load(Ordering::Acquire);
            let due = asked > *self.0.done.borrow() || self.outdated().await;
            if due {
                if self.pass().await {
                    self.0.done.send_replace(asked);
                }
                continue;
            }
            tokio::select! {
                () = stop.cancelled() => return,
                () = self.0.wake.notified() => {}
                r = commits.changed() => if r.is_err() { return },
                _ = tick.tick() => {}
            }
        }
    }

    /// Asks for a pass without waiting for it.
    pub fn poke(&self) {
        self.0.asked.fetch_add(1, Ordering::AcqRel);
        self.0.wake.notify_one();
    }

    /// Asks for a pass and waits until one that started after this call
    /// has finished: what runs then matches the documents as they were.
    pub async fn settle(&self) {
        let want = self.0.asked.fetch_add(1, Ordering::AcqRel) + 1;
        self.0.wake.notify_one();
        let mut done = self.0.done.subscribe();
        // An error means the reconciler stopped: nothing more will happen.
        let _ = done.wait_for(|d| *d >= want).await;
    }

    /// A STANDBY's reconciler becomes the MASTER's: its next pass (asked
    /// for here) starts what the standby kept loaded.
    pub fn promote(&self) {
        let mut scope = self.0.scope.lock_unpoisoned();
        if *scope == Scope::Standby {
            *scope = Scope::Master;
            drop(scope);
            self.poke();
        }
    }

    /// Whether this process controls `location` now (the control loops
    /// tell). Takes effect at the next pass, which this asks for.
    pub fn set_held(&self, location: Uuid, held: bool) {
        let mut set = self.0.held.lock_unpoisoned();
        let changed = if held {
            set.insert(location)
        } else {
            set.remove(&location)
        };
        drop(set);
        if changed {
            self.poke();
        }
    }

    /// Whether `location` is held.
    pub fn is_held(&self, location: Uuid) -> bool {
        self.0.held.lock_unpoisoned().contains(&location)
    }

    /// Holds passes off until the guard drops: a safety stop runs under
    /// it. A running pass gives way at its next chunk of actions (and is
    /// run again afterwards), so this never waits for a whole pass.
    pub async fn pause(&self) -> Paused {
        self.0.stops_waiting.fetch_add(1, Ordering::AcqRel);
        let _waiting = Waiting(self.0.stops_waiting.clone());
        Paused {
            _pass: self.0.pass.clone().lock_owned().await,
        }
    }

    /// How many runtime actions passes have taken so far.
    pub fn actions(&self) -> Actions {
        self.0.actions.snapshot()
    }

    /// Why `module` failed to load, if its last load failed.
    pub fn load_failure(&self, module: Uuid) -> Option<String> {
        self.0
            .actions
            .load_failures
            .lock_unpoisoned()
            .get(&module)
            .cloned()
    }

    /// Whether the feed moved past the last pass or a driver file changed.
    async fn outdated(&self) -> bool {
        let Ok(state) = self.0.pass.try_lock() else {
            return false;
        };
        match self.0.store.last_seq().await {
            Ok(seq) if seq != state.seq => return true,
            Ok(_) => {}
            Err(e) => tracing::debug!(error = %e, "cannot read the feed's sequence number"),
        }
        state
            .drivers
            .iter()
            .any(|(name, seen)| modified(&self.0.modules_dir.join(name)) != *seen)
    }

    /// One pass: read the desired state, act on the difference. `false`:
    /// it gave way to a safety stop before it finished.
    async fn pass(&self) -> bool {
        let mut state = self.0.pass.lock().await;
        let seq = match self.0.store.last_seq().await {
            Ok(seq) => seq,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the feed; next pass retries");
                return true;
            }
        };
        let held: HashSet<Uuid> = self.0.held.lock_unpoisoned().clone();
        let scope = *self.0.scope.lock_unpoisoned();
        let desired = match diff::desired(&self.0.store, scope, &held).await {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the documents; next pass retries");
                return true;
            }
        };
        let reloaded = self.reload_changed_drivers(&mut state, &desired).await;
        if reloaded {
            state.failed.clear();
        }
        let waiting = &self.0.stops_waiting;
        let wait = || waiting.load(Ordering::Acquire) > 0;
        if !diff::apply(
            &self.0.runtime,
            &self.0.actions,
            &mut state,
            &desired,
            &wait,
        )
        .await
        {
            tracing::debug!("pass gave way to a safety stop; it runs again after it");
            return false;
        }
        state.seq = seq;
        true
    }

    /// Reloads drivers whose file changed since the last pass (every module
    /// using one gets the new code); records the times of the drivers in use.
    async fn reload_changed_drivers(&self, state: &mut State, desired: &diff::Desired) -> bool {
        let names: HashSet<&str> = desired
            .modules
            .values()
            .map(|(m, _)| m.driver.as_str())
            .collect();
        let mut any = false;
        let mut seen = HashMap::with_capacity(names.len());
        for name in names {
            let now = modified(&self.0.modules_dir.join(name));
            if let Some(before) = state.drivers.get(name)
                && *before != now
            {
                any = true;
                match self.0.runtime.reload_driver(name, None).await {
                    Ok(r) => tracing::info!(
                        driver = name,
                        modules = r.updated.len(),
                        "driver file changed: reloaded"
                    ),
                    Err(e) => {
                        tracing::warn!(driver = name, error = %e, "driver file changed but cannot be reloaded")
                    }
                }
            }
            seen.insert(name.to_owned(), now);
        }
        state.drivers = seen;
        any
    }
}

fn modified(path: &std::path::Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}
