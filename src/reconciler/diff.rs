//! One pass of the reconciler: the desired state read from the store, and
//! the actions that bring the runtime to it (each module at most once).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};

use uuid::Uuid;

use super::{Scope, State};
use crate::model::{ControlSystem, EdgeLocation, Kind, Module};
use crate::runtime::{ModuleState, Runtime};
use crate::store::{Store, StoreError};
use crate::util::Unpoisoned;

/// Modules acted on at once (loads, updates, starts, stops).
const PARALLEL: usize = 64;
/// Modules loaded between two looks at whether a safety stop waits.
const LOAD_CHUNK: usize = 4 * PARALLEL;

/// Runtime actions taken by the reconciler since it was created.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Actions {
    pub loads: u64,
    pub updates: u64,
    pub starts: u64,
    pub stops: u64,
    pub unloads: u64,
}

#[derive(Default)]
pub(super) struct Counters {
    /// Why each module whose last load failed did, for the API's status
    /// answer (an entry goes when the module loads).
    pub(super) load_failures: std::sync::Mutex<std::collections::HashMap<Uuid, String>>,
    loads: AtomicU64,
    updates: AtomicU64,
    starts: AtomicU64,
    stops: AtomicU64,
    unloads: AtomicU64,
}

impl Counters {
    pub(super) fn snapshot(&self) -> Actions {
        Actions {
            loads: self.loads.load(Ordering::Acquire),
            updates: self.updates.load(Ordering::Acquire),
            starts: self.starts.load(Ordering::Acquire),
            stops: self.stops.load(Ordering::Acquire),
            unloads: self.unloads.load(Ordering::Acquire),
        }
    }
}

/// What should run: the systems in scope, and each module they list with
/// whether it should be started.
pub(super) struct Desired {
    pub systems: Vec<ControlSystem>,
    /// Module id → (document, should run).
    pub modules: HashMap<Uuid, (Module, bool)>,
    /// Module ids in first-listed order (starts follow it).
    pub order: Vec<Uuid>,
}

/// Reads the desired state of `scope` with the sites in `held`.
pub(super) async fn desired(
    store: &Store,
    scope: Scope,
    held: &HashSet<Uuid>,
) -> Result<Desired, StoreError> {
    // (system, whether its site runs here)
    let mut systems: Vec<(ControlSystem, bool)> = Vec::new();
    match scope {
        Scope::Standby => {
            for doc in store.without_owner(Kind::System).await? {
                systems.push((doc.parse()?, false));
            }
        }
        Scope::Master => {
            for doc in store.without_owner(Kind::System).await? {
                systems.push((doc.parse()?, true));
            }
            let mut sites: Vec<Uuid> = held.iter().copied().collect();
            sites.sort_unstable();
            for site in sites {
                for doc in store.by_owner(Kind::System, site).await? {
                    systems.push((doc.parse()?, true));
                }
            }
        }
        Scope::Edge(edge_id) => {
            let located = matches!(store.get(edge_id).await?,
                Some(d) if d.kind == Kind::Edge.as_str() && d.parse::<EdgeLocation>().is_ok());
            if located {
                for doc in store.by_owner(Kind::System, edge_id).await? {
                    systems.push((doc.parse()?, held.contains(&edge_id)));
                }
            }
        }
    }
    let mut order = Vec::new();
    let mut runs: HashMap<Uuid, bool> = HashMap::new();
    for (system, site_runs) in &systems {
        for id in &system.module_ids {
            let run = *site_runs && !system.stopped;
            match runs.get_mut(id) {
                Some(r) => *r |= run,
                None => {
                    runs.insert(*id, run);
                    order.push(*id);
                }
            }
        }
    }
    let mut modules = HashMap::with_capacity(order.len());
    for doc in store.get_many(&order).await? {
        if doc.kind != Kind::Module.as_str() {
            continue;
        }
        match doc.parse::<Module>() {
            Ok(m) => {
                let run = m.enabled && runs.get(&m.id).copied().unwrap_or(false);
                modules.insert(m.id, (m, run));
            }
            Err(e) => tracing::error!(module = %doc.id, error = %e, "module document unreadable"),
        }
    }
    order.retain(|id| modules.contains_key(id));
    Ok(Desired {
        systems: systems.into_iter().map(|(s, _)| s).collect(),
        modules,
        order,
    })
}

/// Brings the runtime to `desired`: systems, unloads, loads, updates, then
/// starts and stops. Gives way (returns `false`, the pass unfinished) as
/// soon as `wait` says a safety stop waits, between chunks of actions, so
/// a stop never waits for a whole pass.
pub(super) async fn apply(
    rt: &Runtime,
    n: &Counters,
    state: &mut State,
    desired: &Desired,
    wait: &(dyn Fn() -> bool + Sync),
) -> bool {
    sync_systems(rt, state, desired);
    for info in rt.modules() {
        if !desired.modules.contains_key(&info.id) {
            if let Err(e) = rt.unload(info.id).await {
                tracing::warn!(module = %info.id, error = %e, "cannot unload");
            }
            n.unloads.fetch_add(1, Ordering::AcqRel);
            state.applied.remove(&info.id);
        }
    }
    state
        .failed
        .retain(|id, _| desired.modules.contains_key(id));
    if wait() || !load_new(rt, n, state, desired, wait).await {
        return false;
    }
    if wait() || !update_changed(rt, n, state, desired, wait).await {
        return false;
    }
    !wait() && start_and_stop(rt, n, desired, wait).await
}

/// Registers the desired systems, forgets the others.
fn sync_systems(rt: &Runtime, state: &mut State, desired: &Desired) {
    let wanted: HashSet<Uuid> = desired.systems.iter().map(|s| s.id).collect();
    state.systems.retain(|id, _| {
        let keep = wanted.contains(id);
        if !keep {
            rt.forget_system(*id);
        }
        keep
    });
    for s in &desired.systems {
        if state.systems.get(&s.id) != Some(s) {
            rt.register_system(s);
            state.systems.insert(s.id, s.clone());
        }
    }
}

async fn load_new(
    rt: &Runtime,
    n: &Counters,
    state: &mut State,
    desired: &Desired,
    wait: &(dyn Fn() -> bool + Sync),
) -> bool {
    let new: Vec<Module> = desired
        .order
        .iter()
        .filter_map(|id| desired.modules.get(id))
        .map(|(m, _)| m)
        .filter(|m| rt.module_info(m.id).is_none() && state.failed.get(&m.id) != Some(*m))
        .cloned()
        .collect();
    for chunk in new.chunks(LOAD_CHUNK) {
        if wait() {
            return false;
        }
        let report = rt.load_many(chunk).await;
        let failed: HashSet<Uuid> = report.failed.iter().map(|(id, _)| *id).collect();
        let mut failures = n.load_failures.lock_unpoisoned();
        for (id, why) in &report.failed {
            tracing::error!(module = %id, error = %why, "module failed to load");
            failures.insert(*id, why.to_string());
        }
        for m in chunk {
            if failed.contains(&m.id) {
                state.failed.insert(m.id, m.clone());
            } else {
                failures.remove(&m.id);
                n.loads.fetch_add(1, Ordering::AcqRel);
                state.failed.remove(&m.id);
                state.applied.insert(m.id, m.clone());
            }
        }
    }
    true
}

async fn update_changed(
    rt: &Runtime,
    n: &Counters,
    state: &mut State,
    desired: &Desired,
    wait: &(dyn Fn() -> bool + Sync),
) -> bool {
    let changed: Vec<&Module> = desired
        .order
        .iter()
        .filter_map(|id| desired.modules.get(id))
        .map(|(m, _)| m)
        .filter(|m| rt.module_info(m.id).is_some() && state.applied.get(&m.id) != Some(*m))
        .collect();
    for chunk in changed.chunks(PARALLEL) {
        if wait() {
            return false;
        }
        let updates = chunk
            .iter()
            .map(|m| async move { (*m, rt.update(m).await) });
        for (m, result) in futures_util::future::join_all(updates).await {
            n.updates.fetch_add(1, Ordering::AcqRel);
            if let Err(e) = result {
                tracing::error!(module = %m.id, error = %e, "module change not applied");
            }
            // Recorded either way: the same document is not retried until
            // it changes again.
            state.applied.insert(m.id, m.clone());
        }
    }
    true
}

/// Starts what should run and stops what should not, in system order.
async fn start_and_stop(
    rt: &Runtime,
    n: &Counters,
    desired: &Desired,
    wait: &(dyn Fn() -> bool + Sync),
) -> bool {
    let mut starts = Vec::new();
    let mut stops = Vec::new();
    for id in &desired.order {
        let (Some((_, run)), Some(info)) = (desired.modules.get(id), rt.module_info(*id)) else {
            continue;
        };
        match (run, info.state) {
            (true, ModuleState::Loaded | ModuleState::Stopped) => starts.push(*id),
            (false, ModuleState::Running) => stops.push(*id),
            _ => {}
        }
    }
    for chunk in stops.chunks(PARALLEL) {
        let calls = chunk
            .iter()
            .map(|id| async move { (*id, rt.stop(*id).await) });
        for (id, result) in futures_util::future::join_all(calls).await {
            n.stops.fetch_add(1, Ordering::AcqRel);
            if let Err(e) = result {
                tracing::warn!(module = %id, error = %e, "cannot stop");
            }
        }
    }
    for chunk in starts.chunks(PARALLEL) {
        if wait() {
            return false;
        }
        let calls = chunk
            .iter()
            .map(|id| async move { (*id, rt.start(*id).await) });
        for (id, result) in futures_util::future::join_all(calls).await {
            n.starts.fetch_add(1, Ordering::AcqRel);
            if let Err(e) = result {
                tracing::error!(module = %id, error = %e, "module failed to start");
            }
        }
    }
    true
}
