//! Foundation tests: the document store on SQLite and PostgreSQL, the model's
//! validation, boot plans, and the `outpost` binary's configuration,
//! certificates and import/export.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    unreachable_pub,
    missing_debug_implementations,
    reason = "tests and benchmarks fail loudly by design, and their items are not an API"
)]

mod boot;
mod cli;
mod model;
mod store;
#[path = "../support/mod.rs"]
mod support;
