//! Small helpers every layer may use: one place for each. Nothing here
//! names another module of this crate.

mod error_chain;
pub mod lock;
mod time;

pub use error_chain::describe;
pub use time::unix_ms;
