//! `RuntimeConfig`: the limits and timings every module of a runtime runs under.

use std::path::PathBuf;
use std::time::Duration;

use super::TransportConfig;

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
    /// Worker threads of the executor module tasks (drivers) run on: a
    /// tokio runtime of their own, so a busy driver never holds a worker of
    /// the runtime that serves the link and the API. 0 runs them on the
    /// caller's runtime instead (tests that pause tokio's clock).
    pub driver_threads: usize,
    pub transport: TransportConfig,
}

impl RuntimeConfig {
    /// The defaults, with the process configuration's modules directory
    /// and driver threads.
    pub fn from_config(config: &crate::config::Config) -> RuntimeConfig {
        RuntimeConfig {
            driver_threads: config.driver_threads,
            ..RuntimeConfig::new(config.modules_dir.clone())
        }
    }

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
            driver_threads: 2,
            transport: TransportConfig::default(),
        }
    }
}
