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
//! Module tasks run on an executor of their own (`RuntimeConfig::driver_threads`
//! worker threads), not on the runtime that serves the link and the API, and
//! a driver call yields back to it every few thousand Lua instructions, so
//! the executor time-slices among busy drivers. Drivers are compiled off the
//! runtime, once per driver version, however many modules load at once.
//!
//! Status variables live outside Lua (in `ModuleShared`), so reads never wait for
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

mod calls;
mod config;
mod error;
mod framing;
mod lifecycle;
mod lua;
mod module;
mod queue;
mod shared;
mod status;
mod systems;
mod transport;
mod types;

pub use config::RuntimeConfig;
pub use error::{DriverError, ExecError, RuntimeError};
pub use transport::{DeviceGate, TransportConfig};
pub use types::{
    ACTIVITY_TEXT, Activity, DebugEvent, DeviceCount, LoadReport, LogLevel, ModuleInfo,
    ModuleState, ReloadReport, StatusChange, SystemReport,
};

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use tokio::sync::{broadcast, mpsc};
use tokio_util::task::TaskTracker;
use uuid::Uuid;

use crate::model::{ControlSystem, Module};
use crate::util::UnpoisonedRw;
use module::{Cmd, Code};
use shared::ModuleShared;

/// A loaded module as the handle keeps it: its document, its task's
/// mailbox, and what can be read without the task.
#[derive(Clone)]
struct Entry {
    module: Arc<Module>,
    tx: mpsc::Sender<Cmd>,
    shared: Arc<ModuleShared>,
}

pub(crate) struct Inner {
    cfg: Arc<RuntimeConfig>,
    modules: RwLock<HashMap<Uuid, Entry>>,
    systems: RwLock<HashMap<Uuid, Arc<ControlSystem>>>,
    /// Compiled drivers by file name: read and compiled once (the first
    /// load compiles, concurrent ones wait for it), replaced by reloads.
    /// Modules load this bytecode, so 10,000 modules of one driver parse its
    /// text once.
    drivers: Mutex<HashMap<String, Arc<tokio::sync::OnceCell<Code>>>>,
    executor: Executor,
    /// Driver compilations so far.
    compiled: std::sync::atomic::AtomicU64,
    events: broadcast::Sender<StatusChange>,
    activity: broadcast::Sender<Activity>,
    tracker: TaskTracker,
    closing: AtomicBool,
}

/// Where module tasks and driver compilation run.
struct Executor {
    /// The runtime of our own (none: tasks run on the caller's runtime).
    own: Option<tokio::runtime::Runtime>,
    handle: tokio::runtime::Handle,
}

impl Executor {
    fn new(threads: usize) -> Executor {
        if threads == 0
            && let Ok(handle) = tokio::runtime::Handle::try_current()
        {
            return Executor { own: None, handle };
        }
        let built = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads.max(1))
            .thread_name("outpost-driver")
            .enable_all()
            .build();
        match built {
            Ok(rt) => Executor {
                handle: rt.handle().clone(),
                own: Some(rt),
            },
            Err(e) => {
                tracing::error!(error = %e, "cannot start the driver executor; drivers share the I/O runtime");
                Executor {
                    own: None,
                    handle: tokio::runtime::Handle::current(),
                }
            }
        }
    }
}

impl Drop for Executor {
    fn drop(&mut self) {
        // Not `drop`: that blocks, which tokio forbids inside a runtime.
        if let Some(rt) = self.own.take() {
            rt.shutdown_background();
        }
    }
}

/// Handle to the module runtime; clones share it.
#[derive(Clone)]
pub struct Runtime {
    pub(crate) inner: Arc<Inner>,
}

impl Runtime {
    pub fn new(cfg: RuntimeConfig) -> Runtime {
        let executor = Executor::new(cfg.driver_threads);
        Runtime {
            inner: Arc::new(Inner {
                cfg: Arc::new(cfg),
                modules: RwLock::new(HashMap::new()),
                systems: RwLock::new(HashMap::new()),
                drivers: Mutex::new(HashMap::new()),
                executor,
                compiled: std::sync::atomic::AtomicU64::new(0),
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

    /// Driver texts compiled so far (tests, benchmarks): one per driver
    /// version, however many modules load it at once.
    pub fn compilations(&self) -> u64 {
        self.inner.compiled.load(Ordering::Relaxed)
    }

    fn entry(&self, id: Uuid) -> Option<Entry> {
        self.inner.modules.read_unpoisoned().get(&id).cloned()
    }

    /// Unloads every module (each driver's `on_unload` runs, bounded) and
    /// waits for their tasks. Further loads are refused.
    pub async fn shutdown(&self) {
        self.inner.closing.store(true, Ordering::Release);
        let ids: Vec<Uuid> = self
            .inner
            .modules
            .read_unpoisoned()
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
