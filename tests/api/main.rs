//! Web API tests over real HTTP on loopback, against a real store.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    unreachable_pub,
    missing_debug_implementations,
    reason = "tests and benchmarks fail loudly by design, and their items are not an API"
)]

mod documents;
mod errors;
#[path = "../support/http.rs"]
mod http;
mod limits;
mod live;
mod openapi;
#[path = "../support/roles.rs"]
mod roles;
mod server;
mod standby;
#[path = "../support/mod.rs"]
mod support;
#[path = "../support/ws.rs"]
mod ws;
