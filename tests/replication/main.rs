//! Replication tests (store level): a replica following the master's change
//! feed with its checkpoint, and the edge and master event logs.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    unreachable_pub,
    missing_debug_implementations,
    reason = "tests and benchmarks fail loudly by design, and their items are not an API"
)]

#[path = "../support/disk.rs"]
mod disk;
mod events;
mod history;
#[path = "../support/http.rs"]
mod http;
mod judged;
mod kills;
mod over_link;
#[path = "../support/proxy.rs"]
mod proxy;
mod replica;
mod retention;
#[path = "../support/roles.rs"]
mod roles;
mod site;
#[path = "../support/mod.rs"]
mod support;
