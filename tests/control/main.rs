//! Control tests: control epochs and the audit log on both backends, restore
//! windows, and a master and an edge together over real TLS. (The
//! negotiation table lives with the pure function in `src/control`.)

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    unreachable_pub,
    missing_debug_implementations,
    reason = "tests and benchmarks fail loudly by design, and their items are not an API"
)]

mod epochs;
mod event_epochs;
mod failover;
mod handover;
#[path = "../support/http.rs"]
mod http;
mod instances;
mod live_api;
mod live_config;
mod load;
mod maintenance;
#[path = "../support/proxy.rs"]
mod proxy;
mod readme;
mod reconcile;
mod refusals;
#[path = "../support/roles.rs"]
mod roles;
mod roles_api;
mod roles_link;
#[path = "../support/mod.rs"]
mod support;
mod windows;
#[path = "../support/ws.rs"]
mod ws;
