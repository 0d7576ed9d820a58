//! Small helpers every layer may use: one place for each. Nothing here
//! names another module of this crate.

mod error_chain;
mod sync;
mod time;

pub use error_chain::describe;
pub use sync::{Unpoisoned, UnpoisonedRw};
pub use time::unix_ms;
