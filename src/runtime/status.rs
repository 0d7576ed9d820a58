//! Reads and subscriptions that never wait for a module's task: status,
//! status changes, activity, debug streams and module information.

use serde_json::{Map, Value};
use tokio::sync::broadcast;
use uuid::Uuid;

use super::{Activity, DebugEvent, Entry, ExecError, ModuleInfo, Runtime, StatusChange};
use crate::util::UnpoisonedRw;

impl Runtime {
    /// All status variables of a module.
    pub fn status(&self, id: Uuid) -> Result<Map<String, Value>, ExecError> {
        let e = self
            .entry(id)
            .ok_or(ExecError::NoSuchModule { module: id })?;
        Ok(e.shared.status_all())
    }

    /// One status variable (`None`: never set).
    pub fn status_key(&self, id: Uuid, key: &str) -> Result<Option<Value>, ExecError> {
        let e = self
            .entry(id)
            .ok_or(ExecError::NoSuchModule { module: id })?;
        Ok(e.shared.status_key(key))
    }

    /// Status changes of one module from now on. A receiver that falls more
    /// than 256 changes behind gets `Lagged` and should re-read `status`.
    pub fn subscribe_status(
        &self,
        id: Uuid,
    ) -> Result<broadcast::Receiver<StatusChange>, ExecError> {
        let e = self
            .entry(id)
            .ok_or(ExecError::NoSuchModule { module: id })?;
        Ok(e.shared.subscribe_status())
    }

    /// Status changes of every module (for the event log and the link).
    pub fn subscribe_all_status(&self) -> broadcast::Receiver<StatusChange> {
        self.inner.events.subscribe()
    }

    /// Finished execs and driver errors of every module (for the event
    /// log). Every exec goes through [`Runtime::exec`], whoever asked (the
    /// API, the link, another module's `call`), so this is the one place
    /// they are seen. Nothing is sent while no one subscribes.
    pub fn subscribe_activity(&self) -> broadcast::Receiver<Activity> {
        self.inner.activity.subscribe()
    }

    /// A module's debug stream: driver log lines and raw bytes in and out.
    /// Drop the receiver to leave; with no receiver the module emits nothing.
    pub fn debug_stream(&self, id: Uuid) -> Result<broadcast::Receiver<DebugEvent>, ExecError> {
        let e = self
            .entry(id)
            .ok_or(ExecError::NoSuchModule { module: id })?;
        Ok(e.shared.subscribe_debug())
    }

    /// How many clients watch a module's debug stream (`None`: not loaded).
    /// The link uses it to know when the last remote watcher left.
    pub fn debug_watchers(&self, id: Uuid) -> Option<usize> {
        self.entry(id).map(|e| e.shared.debug_watchers())
    }

    pub fn module_info(&self, id: Uuid) -> Option<ModuleInfo> {
        self.entry(id).map(|e| info(&e))
    }

    pub fn modules(&self) -> Vec<ModuleInfo> {
        let map = self.inner.modules.read_unpoisoned();
        map.values().map(info).collect()
    }
}

fn info(e: &Entry) -> ModuleInfo {
    ModuleInfo {
        id: e.module.id,
        name: e.module.name.clone(),
        driver: e.module.driver.clone(),
        state: e.shared.state(),
        has_device: e.shared.has_device,
        connected: e.shared.connected(),
        failure: e.shared.failure(),
        lua_memory: e.shared.lua_memory(),
    }
}
