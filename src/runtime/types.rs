//! The runtime's public value types: module state, activity, status
//! changes, debug events and the reports of lifecycle operations.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use super::ExecError;

/// Where a module is in its lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ModuleState {
    /// Driver loaded (`on_load` ran), not started: no device connection,
    /// exec answers `Stopped`.
    Loaded = 0,
    Running = 1,
    Stopped = 2,
    /// A limit was broken or a reload could not be applied; see the message.
    Failed = 3,
}

impl ModuleState {
    pub(super) fn from_u8(v: u8) -> ModuleState {
        match v {
            1 => ModuleState::Running,
            2 => ModuleState::Stopped,
            3 => ModuleState::Failed,
            _ => ModuleState::Loaded,
        }
    }
}

/// Something a module did that belongs in the site's history besides its
/// status: a finished exec, or a driver error. The edge's event log records
/// these ([`Runtime::subscribe_activity`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Activity {
    /// An exec finished: its result (JSON text, cut to
    /// [`ACTIVITY_TEXT`] bytes) or its error.
    Exec {
        module: Uuid,
        method: String,
        result: Result<String, ExecError>,
    },
    /// The driver threw in a hook or a timer (the module keeps running), or
    /// broke a limit and the module failed (`failed`).
    DriverError {
        module: Uuid,
        message: String,
        failed: bool,
    },
}

/// Longest text an [`Activity`] carries (an exec's result, an error
/// message); the rest is cut, so one busy module cannot fill the event log
/// with large values.
pub const ACTIVITY_TEXT: usize = 1024;

pub(super) fn cut(mut text: String) -> String {
    if text.len() > ACTIVITY_TEXT {
        let mut at = ACTIVITY_TEXT;
        while !text.is_char_boundary(at) {
            at -= 1;
        }
        text.truncate(at);
        text.push_str("...");
    }
    text
}

/// One status variable changed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusChange {
    pub module: Uuid,
    pub key: String,
    pub value: Value,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogLevel {
    Debug,
    Info,
    Warn,
    Error,
}

/// One line of a module's debug stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum DebugEvent {
    Log {
        module: Uuid,
        level: LogLevel,
        message: String,
    },
    /// Raw bytes from the device (one frame), escaped for display.
    Rx { module: Uuid, data: String },
    /// Raw bytes to the device, escaped for display.
    Tx { module: Uuid, data: String },
}

/// Device modules among a set and how many are connected.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceCount {
    /// Loaded modules of the set that have a device (logic modules excluded).
    pub total: usize,
    pub connected: usize,
    /// Ids of the set that are not loaded here.
    pub not_loaded: usize,
}

impl DeviceCount {
    /// Every device module of the set is loaded here and connected.
    pub fn all_connected(&self) -> bool {
        self.not_loaded == 0 && self.connected == self.total
    }
}

/// A module as the runtime sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModuleInfo {
    pub id: Uuid,
    pub name: String,
    pub driver: String,
    pub state: ModuleState,
    pub has_device: bool,
    pub connected: bool,
    pub failure: Option<String>,
    /// Bytes of Lua heap, as of the module's last driver call.
    pub lua_memory: usize,
}

/// Outcome of a system start or stop.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SystemReport {
    pub system: Uuid,
    /// Modules started (or stopped), in system order.
    pub done: Vec<Uuid>,
    /// Listed by the system but not loaded here.
    pub missing: Vec<Uuid>,
    /// Disabled modules, left alone.
    pub skipped: Vec<Uuid>,
    pub failed: Vec<(Uuid, String)>,
}

/// Outcome of [`Runtime::load_many`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LoadReport {
    /// Modules loaded by this call or already loaded before it.
    pub loaded: usize,
    pub failed: Vec<(Uuid, String)>,
}

/// Outcome of a live reload.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ReloadReport {
    pub driver: String,
    /// Modules now running the new code.
    pub updated: Vec<Uuid>,
    /// Of those, modules whose transport settings changed and so reconnect.
    pub reconnected: Vec<Uuid>,
    /// Modules that kept the old code, with the reason.
    pub failed: Vec<(Uuid, String)>,
}
