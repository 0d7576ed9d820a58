//! Errors of the module runtime: [`ExecError`], the serialisable error an
//! exec or a status read returns (it crosses the link as a wire error), and
//! [`RuntimeError`] for lifecycle calls (load, start, reload, ...).

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Why an `exec` (or a status read) did not produce a result. Serialisable
/// because it travels between edge and master as it is; it carries messages,
/// never internal error values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[serde(tag = "error", rename_all = "snake_case")]
pub enum ExecError {
    #[error("no such module {module}")]
    NoSuchModule { module: Uuid },
    #[error("module has no public function '{method}'")]
    NoSuchMethod { method: String },
    #[error("module is stopped")]
    Stopped,
    #[error("timed out")]
    Timeout,
    #[error("bad arguments: {message}")]
    BadArguments { message: String },
    /// The driver raised an error; `message` is the driver's own.
    #[error("driver error: {message}")]
    Driver { message: String },
    /// The module is failed (runaway script, memory exhausted, failed load);
    /// it stays failed until it is reloaded or loaded again.
    #[error("module failed: {message}")]
    Failed { message: String },
}

/// Errors of lifecycle operations on the runtime.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("no such module {0}")]
    NoSuchModule(Uuid),
    #[error("no such system {0}")]
    NoSuchSystem(Uuid),
    #[error("module {0} is already loaded")]
    AlreadyLoaded(Uuid),
    #[error("module {0} is disabled")]
    Disabled(Uuid),
    #[error("module {module}: {message}")]
    BadEndpoint { module: Uuid, message: String },
    #[error(transparent)]
    Driver(#[from] DriverError),
    /// The driver loaded but its top-level code or `on_load` failed.
    #[error("module {module} failed to load: {message}")]
    LoadFailed { module: Uuid, message: String },
    #[error("module {module} is failed: {message}")]
    Failed { module: Uuid, message: String },
    #[error("the runtime is shutting down")]
    ShuttingDown,
}

/// A driver file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    #[error("driver name '{0}' must be a .lua file name inside the modules directory")]
    BadName(String),
    #[error("cannot read driver {path}")]
    Io {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("driver {driver} does not compile: {message}")]
    Compile { driver: String, message: String },
}
