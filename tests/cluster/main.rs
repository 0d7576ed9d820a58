//! Master cluster tests: real `outpost master` processes on one real
//! PostgreSQL database (a fresh database per test), killed and stopped
//! with real signals; the fencing term checked against a write held in
//! the database itself.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    unreachable_pub,
    missing_debug_implementations,
    reason = "tests and benchmarks fail loudly by design, and their items are not an API"
)]

mod failsafe;
mod fencing;
mod node;
mod nodes;
mod outage;
#[path = "../support/mod.rs"]
mod support;
mod upgrade;

pub use node::*;
