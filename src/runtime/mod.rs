//! The module runtime: runs one sandboxed Lua driver per module, owns the
//! device transports, and answers `exec`, status reads and debug streams.
//!
//! # Shape
//!
//! [`Runtime`] is a cheap clonable handle. Each loaded module is one tokio
//! task (see `module.rs`) that owns everything of that module: its Lua state
//! (`lua.rs`), its TCP [`transport`] with [`framing`], its outbound
//! [`queue`] and its timers. Everything a module does is serialised through
//! that task's bounded mailbox, so a driver never needs locks and one
//! module's Lua state is never touched by two threads at once. Driver calls
//! run as Lua coroutines: a public function that awaits a device answer
//! (`request`) or another module (`call`) suspends, and the task keeps
//! serving other calls, frames and timers meanwhile.
//!
//! Status variables live outside Lua (in [`Shared`]), so reads never wait for
//! a busy driver and survive a live reload.
//!
//! # API
//!
//! - lifecycle: [`Runtime::load`] (or [`Runtime::load_many`] for a boot
//!   plan), [`Runtime::start`], [`Runtime::stop`],
//!   [`Runtime::unload`], [`Runtime::update`]; per system
//!   [`Runtime::start_system`] / [`Runtime::stop_system`];
//!   [`Runtime::register_system`] teaches membership without starting (used
//!   by module-to-module calls and per-location device counts).
//! - calls: [`Runtime::exec`] → JSON or [`ExecError`].
//! - status: [`Runtime::status`], [`Runtime::status_key`],
//!   [`Runtime::subscribe_status`] (one module), [`Runtime::subscribe_all_status`].
//! - debug: [`Runtime::debug_stream`]; dropping the receiver leaves it, and
//!   with no subscriber nothing is formatted.
//! - drivers: [`Runtime::reload_driver`] from disk or given text.
//! - devices: [`Runtime::device_connected`], [`Runtime::devices_connected`]
//!   over a set of modules and [`Runtime::location_devices`] per edge
//!   location, for control negotiation.
//! - [`Runtime::shutdown`] unloads everything (drivers' `on_unload` run).
//!
//! The driver-side API is documented in `docs/drivers.md`.

mod error;
pub mod framing;
mod lua;
mod module;
pub mod queue;
pub mod transport;

pub use error::{DriverError, ExecError, RuntimeError};
pub use framing::Framing;
pub use queue::RequestError;
pub use transport::TransportConfig;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio_util::task::TaskTracker;
use uuid::Uuid;

use crate::model::{ControlSystem, Endpoint, Module};
use module::{Cmd, Code, Spawn};

/// Runtime settings. Changing a limit affects modules loaded afterwards.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// Where driver files (`*.lua`) are read from.
    pub modules_dir: PathBuf,
    /// Lua heap limit per module; an allocation past it fails the call and
    /// marks the module failed.
    pub memory_limit: usize,
    /// Lua instructions one call (exec, hook or timer) may run, counted in
    /// steps of 1000. Past it the call fails and the module is marked failed.
    pub instruction_budget: u64,
    /// Longest a driver call may run without yielding (one resume), checked
    /// with the instruction hook. Catches loops whose few instructions each
    /// call an expensive library function. Past it the call fails and the
    /// module is marked failed.
    pub time_limit: Duration,
    /// Longest an `exec` waits for its answer (mailbox wait included).
    pub exec_timeout: Duration,
    /// Largest exec argument accepted, in bytes of its JSON text.
    pub max_exec_args: usize,
    /// Commands a module may have queued for its device.
    pub command_queue: usize,
    /// Requests (exec, lifecycle) waiting in one module's mailbox; callers
    /// wait for room, which is the backpressure on a slow module.
    pub mailbox: usize,
    pub transport: TransportConfig,
}

impl RuntimeConfig {
    pub fn new(modules_dir: impl Into<PathBuf>) -> RuntimeConfig {
        RuntimeConfig {
            modules_dir: modules_dir.into(),
            memory_limit: 4 * 1024 * 1024,
            instruction_budget: 10_000_000,
            time_limit: Duration::from_secs(1),
            exec_timeout: Duration::from_secs(30),
            max_exec_args: 1024 * 1024,
            command_queue: 256,
            mailbox: 64,
            transport: TransportConfig::default(),
        }
    }
}

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
    fn from_u8(v: u8) -> ModuleState {
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

fn cut(mut text: String) -> String {
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

/// State of one module readable without asking its task.
pub(crate) struct Shared {
    id: Uuid,
    name: String,
    has_device: bool,
    status: RwLock<Map<String, Value>>,
    // Created on first subscription: most modules are never watched, and an
    // idle module should cost little.
    status_tx: OnceLock<broadcast::Sender<StatusChange>>,
    debug_tx: OnceLock<broadcast::Sender<DebugEvent>>,
    events: broadcast::Sender<StatusChange>,
    activity: broadcast::Sender<Activity>,
    connected: AtomicBool,
    state: AtomicU8,
    failure: Mutex<Option<String>>,
    lua_memory: std::sync::atomic::AtomicUsize,
}

/// Most status variables one module may have.
pub(crate) const MAX_STATUS_KEYS: usize = 1024;
/// Largest status value, in bytes of JSON text: status is copied to every
/// subscriber and across the link, and lives outside the Lua memory limit.
pub(crate) const MAX_STATUS_VALUE: usize = 256 * 1024;

impl Shared {
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
            let mut m = self.status.write().expect("status lock");
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
        self.status.read().expect("status lock").get(key).cloned()
    }

    pub(crate) fn status_all(&self) -> Map<String, Value> {
        self.status.read().expect("status lock").clone()
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
        *self.failure.lock().expect("failure lock") = msg;
    }

    fn failure(&self) -> Option<String> {
        self.failure.lock().expect("failure lock").clone()
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

#[derive(Clone)]
struct Entry {
    module: Arc<Module>,
    tx: mpsc::Sender<Cmd>,
    shared: Arc<Shared>,
}

pub(crate) struct Inner {
    cfg: Arc<RuntimeConfig>,
    modules: RwLock<HashMap<Uuid, Entry>>,
    systems: RwLock<HashMap<Uuid, Arc<ControlSystem>>>,
    /// Compiled drivers by file name: read and compiled once, replaced by
    /// reloads. Modules load this bytecode, so 10,000 modules of one driver
    /// parse its text once.
    drivers: Mutex<HashMap<String, Code>>,
    events: broadcast::Sender<StatusChange>,
    activity: broadcast::Sender<Activity>,
    tracker: TaskTracker,
    closing: AtomicBool,
}

/// Handle to the module runtime; clones share it.
#[derive(Clone)]
pub struct Runtime {
    pub(crate) inner: Arc<Inner>,
}

/// Another module of the same system(s), as `system_modules()` shows it.
pub(crate) struct Peer {
    pub id: Uuid,
    pub name: String,
    pub driver: String,
    pub connected: bool,
    pub running: bool,
}

impl Runtime {
    pub fn new(cfg: RuntimeConfig) -> Runtime {
        Runtime {
            inner: Arc::new(Inner {
                cfg: Arc::new(cfg),
                modules: RwLock::new(HashMap::new()),
                systems: RwLock::new(HashMap::new()),
                drivers: Mutex::new(HashMap::new()),
                events: broadcast::channel(1024).0,
                activity: broadcast::channel(1024).0,
                tracker: TaskTracker::new(),
                closing: AtomicBool::new(false),
            }),
        }
    }

    pub fn config(&self) -> &RuntimeConfig {
        &self.inner.cfg
    }

    fn entry(&self, id: Uuid) -> Option<Entry> {
        self.inner
            .modules
            .read()
            .expect("modules lock")
            .get(&id)
            .cloned()
    }

    /// The compiled driver: from the cache, or read and compiled once.
    fn driver_code(&self, name: &str) -> Result<Code, DriverError> {
        check_driver_name(name)?;
        if let Some(s) = self.inner.drivers.lock().expect("drivers lock").get(name) {
            return Ok(s.clone());
        }
        let path = self.inner.cfg.modules_dir.join(name);
        let text = std::fs::read_to_string(&path).map_err(|source| DriverError::Io {
            path: path.clone(),
            source,
        })?;
        let text = module::compile(name, &text).map_err(|message| DriverError::Compile {
            driver: name.to_owned(),
            message,
        })?;
        self.inner
            .drivers
            .lock()
            .expect("drivers lock")
            .insert(name.to_owned(), text.clone());
        Ok(text)
    }

    /// Loads a module: creates its Lua state, runs the driver and its
    /// `on_load`. The module is not started (no device connection yet).
    pub async fn load(&self, module: &Module) -> Result<(), RuntimeError> {
        if self.inner.closing.load(Ordering::Acquire) {
            return Err(RuntimeError::ShuttingDown);
        }
        let endpoint = module
            .endpoint()
            .map_err(|message| RuntimeError::BadEndpoint {
                module: module.id,
                message,
            })?;
        let source = self.driver_code(&module.driver)?;
        let shared = Arc::new(Shared {
            id: module.id,
            name: module.name.clone(),
            has_device: endpoint != Endpoint::None,
            status: RwLock::new(Map::new()),
            status_tx: OnceLock::new(),
            debug_tx: OnceLock::new(),
            events: self.inner.events.clone(),
            activity: self.inner.activity.clone(),
            connected: AtomicBool::new(false),
            state: AtomicU8::new(ModuleState::Loaded as u8),
            failure: Mutex::new(None),
            lua_memory: Default::default(),
        });
        let (tx, rx) = mpsc::channel(self.inner.cfg.mailbox);
        let module = Arc::new(module.clone());
        {
            let mut map = self.inner.modules.write().expect("modules lock");
            if map.contains_key(&module.id) {
                return Err(RuntimeError::AlreadyLoaded(module.id));
            }
            map.insert(
                module.id,
                Entry {
                    module: module.clone(),
                    tx,
                    shared: shared.clone(),
                },
            );
        }
        let (ready_tx, ready_rx) = oneshot::channel();
        self.inner.tracker.spawn(module::run(Spawn {
            module: module.clone(),
            endpoint,
            source,
            shared,
            rt: Arc::downgrade(&self.inner),
            cfg: self.inner.cfg.clone(),
            rx,
            ready: ready_tx,
        }));
        let res = match ready_rx.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(message)) => Err(RuntimeError::LoadFailed {
                module: module.id,
                message,
            }),
            Err(_) => Err(RuntimeError::LoadFailed {
                module: module.id,
                message: "module task ended during load".into(),
            }),
        };
        if res.is_err() {
            self.inner
                .modules
                .write()
                .expect("modules lock")
                .remove(&module.id);
        }
        res
    }

    /// Loads many modules, 64 at a time (a boot plan's modules). Modules
    /// already loaded count as loaded; failures are listed, not fatal.
    pub async fn load_many(&self, modules: &[Module]) -> LoadReport {
        let sem = Arc::new(tokio::sync::Semaphore::new(64));
        let mut set = tokio::task::JoinSet::new();
        for m in modules {
            let Ok(permit) = sem.clone().acquire_owned().await else {
                break;
            };
            let rt = self.clone();
            let m = m.clone();
            set.spawn(async move {
                let r = rt.load(&m).await;
                drop(permit);
                (m.id, r)
            });
        }
        let mut report = LoadReport::default();
        while let Some(res) = set.join_next().await {
            match res {
                Ok((_, Ok(()))) | Ok((_, Err(RuntimeError::AlreadyLoaded(_)))) => {
                    report.loaded += 1
                }
                Ok((id, Err(e))) => report.failed.push((id, e.to_string())),
                Err(e) => report.failed.push((Uuid::nil(), e.to_string())),
            }
        }
        report.failed.sort();
        report
    }

    async fn ask<T>(
        &self,
        id: Uuid,
        make: impl FnOnce(oneshot::Sender<T>) -> Cmd,
    ) -> Result<T, RuntimeError> {
        let entry = self.entry(id).ok_or(RuntimeError::NoSuchModule(id))?;
        let (tx, rx) = oneshot::channel();
        entry
            .tx
            .send(make(tx))
            .await
            .map_err(|_| RuntimeError::NoSuchModule(id))?;
        rx.await.map_err(|_| RuntimeError::NoSuchModule(id))
    }

    /// Starts a loaded module: it connects to its device (if any) and
    /// accepts exec. A disabled module is refused.
    pub async fn start(&self, id: Uuid) -> Result<(), RuntimeError> {
        let entry = self.entry(id).ok_or(RuntimeError::NoSuchModule(id))?;
        if !entry.module.enabled {
            return Err(RuntimeError::Disabled(id));
        }
        self.ask(id, Cmd::Start).await?
    }

    /// Stops a module: closes its device connection; status is kept.
    pub async fn stop(&self, id: Uuid) -> Result<(), RuntimeError> {
        self.ask(id, Cmd::Stop).await
    }

    /// Runs the driver's `on_unload`, closes the device and forgets the module.
    pub async fn unload(&self, id: Uuid) -> Result<(), RuntimeError> {
        let entry = self
            .inner
            .modules
            .write()
            .expect("modules lock")
            .remove(&id)
            .ok_or(RuntimeError::NoSuchModule(id))?;
        let (tx, rx) = oneshot::channel();
        if entry.tx.send(Cmd::Unload(tx)).await.is_ok() {
            let _ = rx.await;
        }
        Ok(())
    }

    /// Applies a changed module document: new settings call the driver's
    /// `on_settings`; a new uri moves the connection; a new driver reloads.
    pub async fn update(&self, module: &Module) -> Result<(), RuntimeError> {
        let entry = self
            .entry(module.id)
            .ok_or(RuntimeError::NoSuchModule(module.id))?;
        let endpoint = module
            .endpoint()
            .map_err(|message| RuntimeError::BadEndpoint {
                module: module.id,
                message,
            })?;
        let source = if entry.module.driver != module.driver {
            Some(self.driver_code(&module.driver)?)
        } else {
            None
        };
        let new = Arc::new(module.clone());
        let res = self
            .ask(module.id, |reply| Cmd::Update {
                module: new.clone(),
                endpoint,
                source,
                reply,
            })
            .await?;
        res.map_err(|message| RuntimeError::Failed {
            module: module.id,
            message,
        })?;
        if let Some(e) = self
            .inner
            .modules
            .write()
            .expect("modules lock")
            .get_mut(&module.id)
        {
            e.module = new;
        }
        Ok(())
    }

    /// Registers (or updates) a system's membership without starting
    /// anything: module-to-module calls, `system_modules()` and
    /// [`Runtime::location_devices`] see registered systems.
    pub fn register_system(&self, system: &ControlSystem) {
        self.inner
            .systems
            .write()
            .expect("systems lock")
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
            .read()
            .expect("systems lock")
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
        self.inner
            .systems
            .write()
            .expect("systems lock")
            .remove(&id)
            .is_some()
    }

    /// Calls a public function of a module's driver with JSON arguments (an
    /// array is spread into positional arguments, `null` passes none).
    pub async fn exec(&self, id: Uuid, method: &str, args: Value) -> Result<Value, ExecError> {
        let result = self.exec_inner(id, method, args).await;
        let tx = &self.inner.activity;
        if tx.receiver_count() > 0 && !matches!(result, Err(ExecError::NoSuchModule { .. })) {
            let _ = tx.send(Activity::Exec {
                module: id,
                method: cut(method.to_owned()),
                result: match &result {
                    Ok(v) => Ok(cut(v.to_string())),
                    Err(e) => Err(e.clone()),
                },
            });
        }
        result
    }

    async fn exec_inner(&self, id: Uuid, method: &str, args: Value) -> Result<Value, ExecError> {
        let entry = self
            .entry(id)
            .ok_or(ExecError::NoSuchModule { module: id })?;
        match entry.shared.state() {
            ModuleState::Running => {}
            ModuleState::Failed => return Err(entry.shared.ended_error()),
            _ => return Err(ExecError::Stopped),
        }
        let limit = self.inner.cfg.max_exec_args;
        if json_size(&args, limit) > limit {
            return Err(ExecError::BadArguments {
                message: format!("arguments larger than {limit} bytes"),
            });
        }
        let (tx, rx) = oneshot::channel();
        let cmd = Cmd::Exec {
            method: method.to_owned(),
            args,
            reply: tx,
        };
        self.call(&entry, cmd, rx).await
    }

    async fn call(
        &self,
        entry: &Entry,
        cmd: Cmd,
        rx: oneshot::Receiver<Result<Value, ExecError>>,
    ) -> Result<Value, ExecError> {
        let fut = async {
            entry
                .tx
                .send(cmd)
                .await
                .map_err(|_| entry.shared.ended_error())?;
            rx.await.map_err(|_| entry.shared.ended_error())?
        };
        tokio::time::timeout(self.inner.cfg.exec_timeout, fut)
            .await
            .map_err(|_| ExecError::Timeout)?
    }

    /// Runs a Rust closure inside a module's task, through the same mailbox
    /// as [`Runtime::exec`]. It exists as the baseline the benchmark compares
    /// Lua exec against; it is not a way to extend drivers.
    pub async fn exec_native(
        &self,
        id: Uuid,
        f: impl FnOnce() -> Value + Send + 'static,
    ) -> Result<Value, ExecError> {
        let entry = self
            .entry(id)
            .ok_or(ExecError::NoSuchModule { module: id })?;
        let (tx, rx) = oneshot::channel();
        let cmd = Cmd::Native {
            f: Box::new(f),
            reply: tx,
        };
        self.call(&entry, cmd, rx).await
    }

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
        Ok(e.shared
            .status_tx
            .get_or_init(|| broadcast::channel(256).0)
            .subscribe())
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
        Ok(e.shared
            .debug_tx
            .get_or_init(|| broadcast::channel(1024).0)
            .subscribe())
    }

    /// How many clients watch a module's debug stream (`None`: not loaded).
    /// The link uses it to know when the last remote watcher left.
    pub fn debug_watchers(&self, id: Uuid) -> Option<usize> {
        self.entry(id)
            .map(|e| e.shared.debug_tx.get().map_or(0, |t| t.receiver_count()))
    }

    pub fn module_info(&self, id: Uuid) -> Option<ModuleInfo> {
        self.entry(id).map(|e| info(&e))
    }

    pub fn modules(&self) -> Vec<ModuleInfo> {
        let map = self.inner.modules.read().expect("modules lock");
        map.values().map(info).collect()
    }

    /// Whether a module's device is connected (`None`: not loaded).
    pub fn device_connected(&self, id: Uuid) -> Option<bool> {
        self.entry(id)
            .map(|e| e.shared.connected.load(Ordering::Acquire))
    }

    /// Counts the device modules among `ids` and how many are connected.
    pub fn devices_connected(&self, ids: &[Uuid]) -> DeviceCount {
        let map = self.inner.modules.read().expect("modules lock");
        let mut c = DeviceCount::default();
        for id in ids {
            match map.get(id) {
                None => c.not_loaded += 1,
                Some(e) if e.shared.has_device => {
                    c.total += 1;
                    if e.shared.connected.load(Ordering::Acquire) {
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
        let systems = self.inner.systems.read().expect("systems lock");
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

    /// Replaces a driver's code in every module using it, from the file in
    /// the modules directory or from `source`. Status and (when the framing
    /// did not change) device connections survive. Code that does not
    /// compile changes nothing and is reported; a module whose new code fails
    /// at load keeps its old code and is listed in `failed`.
    pub async fn reload_driver(
        &self,
        name: &str,
        source: Option<String>,
    ) -> Result<ReloadReport, RuntimeError> {
        check_driver_name(name)?;
        let text = match source {
            Some(s) => s,
            None => {
                let path = self.inner.cfg.modules_dir.join(name);
                std::fs::read_to_string(&path).map_err(|source| DriverError::Io { path, source })?
            }
        };
        let text = module::compile(name, &text).map_err(|message| DriverError::Compile {
            driver: name.to_owned(),
            message,
        })?;
        self.inner
            .drivers
            .lock()
            .expect("drivers lock")
            .insert(name.to_owned(), text.clone());
        let users: Vec<Uuid> = {
            let map = self.inner.modules.read().expect("modules lock");
            let mut v: Vec<Uuid> = map
                .values()
                .filter(|e| e.module.driver == name)
                .map(|e| e.module.id)
                .collect();
            v.sort_unstable();
            v
        };
        let mut report = ReloadReport {
            driver: name.to_owned(),
            ..ReloadReport::default()
        };
        for id in users {
            let source = text.clone();
            match self.ask(id, |reply| Cmd::Reload { source, reply }).await {
                Ok(Ok(reconnected)) => {
                    report.updated.push(id);
                    if reconnected {
                        report.reconnected.push(id);
                    }
                }
                Ok(Err(msg)) => report.failed.push((id, msg)),
                Err(e) => report.failed.push((id, e.to_string())),
            }
        }
        Ok(report)
    }

    /// Resolves a module reference given by a driver: a uuid, or the name of
    /// a module in one of the caller's systems.
    pub(crate) fn resolve(&self, me: Uuid, target: &str) -> Result<Uuid, ExecError> {
        if let Ok(id) = target.parse::<Uuid>() {
            return Ok(id);
        }
        self.system_peers(me)
            .into_iter()
            .find(|p| p.name == target)
            .map(|p| p.id)
            .ok_or_else(|| ExecError::Driver {
                message: format!("no module named '{target}' in this module's systems"),
            })
    }

    /// Loaded modules that share a system with `me`, in system order.
    pub(crate) fn system_peers(&self, me: Uuid) -> Vec<Peer> {
        let mut ids: Vec<Uuid> = Vec::new();
        {
            let systems = self.inner.systems.read().expect("systems lock");
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
        let map = self.inner.modules.read().expect("modules lock");
        ids.into_iter()
            .filter_map(|id| map.get(&id))
            .map(|e| Peer {
                id: e.module.id,
                name: e.module.name.clone(),
                driver: e.module.driver.clone(),
                connected: e.shared.connected.load(Ordering::Acquire),
                running: e.shared.state() == ModuleState::Running,
            })
            .collect()
    }

    /// Unloads every module (each driver's `on_unload` runs, bounded) and
    /// waits for their tasks. Further loads are refused.
    pub async fn shutdown(&self) {
        self.inner.closing.store(true, Ordering::Release);
        let ids: Vec<Uuid> = self
            .inner
            .modules
            .read()
            .expect("modules lock")
            .keys()
            .copied()
            .collect();
        let mut set = tokio::task::JoinSet::new();
        for id in ids {
            let rt = self.clone();
            set.spawn(async move {
                let _ = rt.unload(id).await;
            });
        }
        while set.join_next().await.is_some() {}
        self.inner.tracker.close();
        let _ = tokio::time::timeout(Duration::from_secs(5), self.inner.tracker.wait()).await;
    }
}

fn info(e: &Entry) -> ModuleInfo {
    ModuleInfo {
        id: e.module.id,
        name: e.module.name.clone(),
        driver: e.module.driver.clone(),
        state: e.shared.state(),
        has_device: e.shared.has_device,
        connected: e.shared.connected.load(Ordering::Acquire),
        failure: e.shared.failure(),
        lua_memory: e.shared.lua_memory.load(Ordering::Relaxed),
    }
}

fn check_driver_name(name: &str) -> Result<(), DriverError> {
    if name.is_empty()
        || name.contains('/')
        || name.contains('\\')
        || name.starts_with('.')
        || !name.ends_with(".lua")
    {
        return Err(DriverError::BadName(name.to_owned()));
    }
    Ok(())
}

/// Size of a JSON value's text, counted only up to `limit` (so a huge
/// argument is refused without walking all of it).
fn json_size(v: &Value, limit: usize) -> usize {
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
