//! Systems: membership, starting and stopping a system's modules, device
//! counts per location, and the modules a driver's `call` can reach.

use std::sync::Arc;

use uuid::Uuid;

use super::{DeviceCount, ExecError, ModuleState, Runtime, RuntimeError, SystemReport};
use crate::model::ControlSystem;
use crate::util::UnpoisonedRw;

/// Another module of the same system(s), as a driver's `system_modules()`
/// shows it and its `call` reaches it by name.
pub(crate) struct SystemMate {
    pub id: Uuid,
    pub name: String,
    pub driver: String,
    pub connected: bool,
    pub running: bool,
}

impl Runtime {
    /// Registers (or updates) a system's membership without starting
    /// anything: module-to-module calls, `system_modules()` and
    /// [`Runtime::location_devices`] see registered systems.
    pub fn register_system(&self, system: &ControlSystem) {
        self.inner
            .systems
            .write_unpoisoned()
            .insert(system.id, Arc::new(system.clone()));
    }

    /// Registers a system and starts its enabled modules in order.
    pub async fn start_system(&self, system: &ControlSystem) -> Result<SystemReport, RuntimeError> {
        self.register_system(system);
        let mut report = SystemReport {
            system: system.id,
            ..SystemReport::default()
        };
        for id in &system.module_ids {
            match self.start(*id).await {
                Ok(()) => report.done.push(*id),
                Err(RuntimeError::NoSuchModule(_)) => report.missing.push(*id),
                Err(RuntimeError::Disabled(_)) => report.skipped.push(*id),
                Err(e) => report.failed.push((*id, e.to_string())),
            }
        }
        Ok(report)
    }

    /// Stops every module of a started system (membership is kept).
    pub async fn stop_system(&self, id: Uuid) -> Result<SystemReport, RuntimeError> {
        let system = self
            .inner
            .systems
            .read_unpoisoned()
            .get(&id)
            .cloned()
            .ok_or(RuntimeError::NoSuchSystem(id))?;
        let mut report = SystemReport {
            system: id,
            ..SystemReport::default()
        };
        for m in &system.module_ids {
            match self.stop(*m).await {
                Ok(()) => report.done.push(*m),
                Err(RuntimeError::NoSuchModule(_)) => report.missing.push(*m),
                Err(e) => report.failed.push((*m, e.to_string())),
            }
        }
        Ok(report)
    }

    /// Forgets a system's membership (its modules are left as they are).
    pub fn forget_system(&self, id: Uuid) -> bool {
        self.inner.systems.write_unpoisoned().remove(&id).is_some()
    }

    /// Whether a module's device is connected (`None`: not loaded).
    pub fn device_connected(&self, id: Uuid) -> Option<bool> {
        self.entry(id).map(|e| e.shared.connected())
    }

    /// Counts the device modules among `ids` and how many are connected.
    pub fn devices_connected(&self, ids: &[Uuid]) -> DeviceCount {
        let map = self.inner.modules.read_unpoisoned();
        let mut c = DeviceCount::default();
        for id in ids {
            match map.get(id) {
                None => c.not_loaded += 1,
                Some(e) if e.shared.has_device => {
                    c.total += 1;
                    if e.shared.connected() {
                        c.connected += 1;
                    }
                }
                Some(_) => {}
            }
        }
        c
    }

    /// [`Runtime::devices_connected`] over the modules of every registered
    /// system of an edge location (`None`: the master's own systems).
    pub fn location_devices(&self, edge_id: Option<Uuid>) -> DeviceCount {
        let (_, ids) = self.location_modules(edge_id);
        self.devices_connected(&ids)
    }

    /// The registered systems of an edge location (`None`: the master's
    /// own) and their modules, each module once.
    pub fn location_modules(&self, edge_id: Option<Uuid>) -> (Vec<Uuid>, Vec<Uuid>) {
        let systems = self.inner.systems.read_unpoisoned();
        let mine: Vec<&Arc<ControlSystem>> =
            systems.values().filter(|s| s.edge_id == edge_id).collect();
        let mut ids: Vec<Uuid> = mine
            .iter()
            .flat_map(|s| s.module_ids.iter().copied())
            .collect();
        ids.sort_unstable();
        ids.dedup();
        (mine.iter().map(|s| s.id).collect(), ids)
    }

    /// Resolves a module reference given by a driver: a uuid, or the name of
    /// a module in one of the caller's systems. Either way the target must
    /// share a system with the caller: a driver reaches only its own
    /// systems' modules, never another room's or another site's by id.
    pub(crate) fn resolve(&self, me: Uuid, target: &str) -> Result<Uuid, ExecError> {
        if let Ok(id) = target.parse::<Uuid>() {
            let shared = id == me
                || self
                    .inner
                    .systems
                    .read_unpoisoned()
                    .values()
                    .any(|s| s.module_ids.contains(&me) && s.module_ids.contains(&id));
            if !shared {
                // The same words whether it exists elsewhere or not at all.
                return Err(ExecError::Driver {
                    message: format!(
                        "module {id} does not share a system with this module (a driver calls only its systems' modules)"
                    ),
                });
            }
            return Ok(id);
        }
        self.system_mates(me)
            .into_iter()
            .find(|p| p.name == target)
            .map(|p| p.id)
            .ok_or_else(|| ExecError::Driver {
                message: format!("no module named '{target}' in this module's systems"),
            })
    }

    /// Loaded modules that share a system with `me`, in system order.
    pub(crate) fn system_mates(&self, me: Uuid) -> Vec<SystemMate> {
        let mut ids: Vec<Uuid> = Vec::new();
        {
            let systems = self.inner.systems.read_unpoisoned();
            let mut list: Vec<&Arc<ControlSystem>> = systems
                .values()
                .filter(|s| s.module_ids.contains(&me))
                .collect();
            list.sort_by_key(|s| s.id);
            for s in list {
                for m in &s.module_ids {
                    if *m != me && !ids.contains(m) {
                        ids.push(*m);
                    }
                }
            }
        }
        let map = self.inner.modules.read_unpoisoned();
        ids.into_iter()
            .filter_map(|id| map.get(&id))
            .map(|e| SystemMate {
                id: e.module.id,
                name: e.module.name.clone(),
                driver: e.module.driver.clone(),
                connected: e.shared.connected(),
                running: e.shared.state() == ModuleState::Running,
            })
            .collect()
    }
}
