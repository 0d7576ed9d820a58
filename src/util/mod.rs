//! Small helpers every layer may use: one place for each (error chains,
//! wall-clock milliseconds, locks, the failure throttle, connection
//! admission). Nothing here
//! names another module of this crate.

mod admission;
mod error_chain;
mod lock_file;
mod noise;
mod private;
mod sync;
mod throttle;
mod time;

pub use admission::{Admission, AdmissionLimits, Refusal, Ticket};
pub use error_chain::describe;
pub use lock_file::try_lock_file;
pub use noise::Noise;
pub use private::{private_dir, private_file, tighten};
pub use sync::{Unpoisoned, UnpoisonedRw};
pub use throttle::{FailureThrottle, ThrottlePolicy, source_of};
pub use time::{unix_ms, unix_ms_of};
