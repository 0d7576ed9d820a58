//! `ModuleShared`: the part of a module other code reads (and its task
//! writes) without asking the task: status, state, connected flag and the
//! broadcast senders.

use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock, RwLock};

use serde_json::{Map, Value};
use tokio::sync::broadcast;
use uuid::Uuid;

use super::types::cut;
use super::{Activity, DebugEvent, ExecError, LogLevel, ModuleState, StatusChange};
use crate::util::{Unpoisoned, UnpoisonedRw};

/// State of one module readable without asking its task.
pub(crate) struct ModuleShared {
    id: Uuid,
    name: String,
    pub(super) has_device: bool,
    status: RwLock<Map<String, Value>>,
    // Created on first subscription: most modules are never watched, and an
    // idle module should cost little.
    status_tx: OnceLock<broadcast::Sender<StatusChange>>,
    debug_tx: OnceLock<broadcast::Sender<DebugEvent>>,
    events: broadcast::Sender<StatusChange>,
    activity: broadcast::Sender<Activity>,
    pub(super) connected: AtomicBool,
    state: AtomicU8,
    failure: Mutex<Option<String>>,
    lua_memory: AtomicUsize,
}

/// Most status variables one module may have.
pub(crate) const MAX_STATUS_KEYS: usize = 1024;
/// Largest status value, in bytes of JSON text: status is copied to every
/// subscriber and across the link, and lives outside the Lua memory limit.
pub(crate) const MAX_STATUS_VALUE: usize = 256 * 1024;

impl ModuleShared {
    /// A freshly loaded module's view: no status, not connected, `Loaded`.
    pub(super) fn new(
        module: &crate::model::Module,
        has_device: bool,
        events: broadcast::Sender<StatusChange>,
        activity: broadcast::Sender<Activity>,
    ) -> ModuleShared {
        ModuleShared {
            id: module.id,
            name: module.name.clone(),
            has_device,
            status: RwLock::new(Map::new()),
            status_tx: OnceLock::new(),
            debug_tx: OnceLock::new(),
            events,
            activity,
            connected: AtomicBool::new(false),
            state: AtomicU8::new(ModuleState::Loaded as u8),
            failure: Mutex::new(None),
            lua_memory: AtomicUsize::new(0),
        }
    }

    /// Status changes of this module from now on (the channel is created by
    /// the first subscriber).
    pub(super) fn subscribe_status(&self) -> broadcast::Receiver<StatusChange> {
        self.status_tx
            .get_or_init(|| broadcast::channel(256).0)
            .subscribe()
    }

    /// This module's debug stream (the channel is created by the first
    /// watcher).
    pub(super) fn subscribe_debug(&self) -> broadcast::Receiver<DebugEvent> {
        self.debug_tx
            .get_or_init(|| broadcast::channel(1024).0)
            .subscribe()
    }

    pub(super) fn debug_watchers(&self) -> usize {
        self.debug_tx.get().map_or(0, |t| t.receiver_count())
    }

    pub(super) fn connected(&self) -> bool {
        self.connected.load(Ordering::Acquire)
    }

    pub(super) fn lua_memory(&self) -> usize {
        self.lua_memory.load(Ordering::Relaxed)
    }

    /// Sets a status variable; refuses values and key counts past the
    /// limits with a message for the driver.
    pub(crate) fn set_status(&self, key: String, value: Value) -> Result<(), String> {
        if key.len() > 256 {
            return Err("status key longer than 256 bytes".into());
        }
        if json_size(&value, MAX_STATUS_VALUE) > MAX_STATUS_VALUE {
            return Err(format!(
                "status '{key}' is larger than {MAX_STATUS_VALUE} bytes"
            ));
        }
        {
            let mut m = self.status.write_unpoisoned();
            if m.get(&key) == Some(&value) {
                return Ok(());
            }
            if m.len() >= MAX_STATUS_KEYS && !m.contains_key(&key) {
                return Err(format!(
                    "too many status variables (limit {MAX_STATUS_KEYS})"
                ));
            }
            m.insert(key.clone(), value.clone());
        }
        let change = StatusChange {
            module: self.id,
            key,
            value,
        };
        if let Some(tx) = self.status_tx.get()
            && tx.receiver_count() > 0
        {
            let _ = tx.send(change.clone());
        }
        if self.events.receiver_count() > 0 {
            let _ = self.events.send(change);
        }
        Ok(())
    }

    pub(crate) fn status_key(&self, key: &str) -> Option<Value> {
        self.status.read_unpoisoned().get(key).cloned()
    }

    pub(crate) fn status_all(&self) -> Map<String, Value> {
        self.status.read_unpoisoned().clone()
    }

    pub(crate) fn debug_enabled(&self) -> bool {
        self.debug_tx.get().is_some_and(|t| t.receiver_count() > 0)
    }

    pub(crate) fn debug(&self, ev: DebugEvent) {
        if let Some(tx) = self.debug_tx.get() {
            let _ = tx.send(ev);
        }
    }

    pub(crate) fn log(&self, level: LogLevel, mut message: String) {
        if message.len() > 4096 {
            let mut cut = 4096;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
            message.push_str("...");
        }
        let (id, name) = (self.id, self.name.as_str());
        match level {
            LogLevel::Debug => tracing::debug!(module = %id, name, "{message}"),
            LogLevel::Info => tracing::info!(module = %id, name, "{message}"),
            LogLevel::Warn => tracing::warn!(module = %id, name, "{message}"),
            LogLevel::Error => tracing::error!(module = %id, name, "{message}"),
        }
        if self.debug_enabled() {
            self.debug(DebugEvent::Log {
                module: id,
                level,
                message,
            });
        }
    }

    /// Reports a driver error to whoever records the site's history.
    pub(crate) fn driver_error(&self, message: &str, failed: bool) {
        if self.activity.receiver_count() > 0 {
            let _ = self.activity.send(Activity::DriverError {
                module: self.id,
                message: cut(message.to_owned()),
                failed,
            });
        }
    }

    pub(crate) fn set_state(&self, s: ModuleState) {
        self.state.store(s as u8, Ordering::Release);
    }

    pub(crate) fn state(&self) -> ModuleState {
        ModuleState::from_u8(self.state.load(Ordering::Acquire))
    }

    pub(crate) fn set_connected(&self, c: bool) {
        self.connected.store(c, Ordering::Release);
        let _ = self.set_status("connected".into(), Value::Bool(c));
    }

    pub(crate) fn set_lua_memory(&self, bytes: usize) {
        self.lua_memory.store(bytes, Ordering::Relaxed);
    }

    pub(crate) fn set_failure(&self, msg: Option<String>) {
        *self.failure.lock_unpoisoned() = msg;
    }

    pub(super) fn failure(&self) -> Option<String> {
        self.failure.lock_unpoisoned().clone()
    }

    /// The error for a call whose module went away under it.
    pub(crate) fn ended_error(&self) -> ExecError {
        match self.state() {
            ModuleState::Failed => ExecError::Failed {
                message: self.failure().unwrap_or_default(),
            },
            ModuleState::Running => ExecError::Driver {
                message: "the driver was reloaded while the call was running".into(),
            },
            _ => ExecError::Stopped,
        }
    }
}

/// Size of a JSON value's text, counted only up to `limit` (so a huge
/// argument is refused without walking all of it).
pub(super) fn json_size(v: &Value, limit: usize) -> usize {
    fn walk(v: &Value, acc: &mut usize, limit: usize) {
        if *acc > limit {
            return;
        }
        match v {
            Value::Null | Value::Bool(_) => *acc += 5,
            Value::Number(_) => *acc += 8,
            Value::String(s) => *acc += s.len() + 2,
            Value::Array(a) => {
                *acc += 2;
                for x in a {
                    walk(x, acc, limit);
                    *acc += 1;
                }
            }
            Value::Object(o) => {
                *acc += 2;
                for (k, x) in o {
                    *acc += k.len() + 4;
                    walk(x, acc, limit);
                }
            }
        }
    }
    let mut acc = 0;
    walk(v, &mut acc, limit);
    acc
}

/// Bytes as printable text for the debug stream (`\r`, `\n`, `\xNN`).
pub(crate) fn escape(data: &[u8]) -> String {
    let mut s = String::with_capacity(data.len());
    for b in data.iter().take(4096) {
        match b {
            b'\r' => s.push_str("\\r"),
            b'\n' => s.push_str("\\n"),
            b'\\' => s.push_str("\\\\"),
            0x20..=0x7e => s.push(*b as char),
            _ => s.push_str(&format!("\\x{b:02x}")),
        }
    }
    if data.len() > 4096 {
        s.push_str("...");
    }
    s
}
