//! Integration tests of the master–edge link: real TLS on loopback sockets
//! (certificates from `certs::init_dev` in a temporary directory), plus
//! in-memory duplex streams for the multiplexer's edge cases.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    unreachable_pub,
    missing_debug_implementations,
    reason = "tests and benchmarks fail loudly by design, and their items are not an API"
)]

mod adversarial;
mod credentials;
mod fuzz;
#[path = "../support/http.rs"]
mod http;
mod liveness;
mod noise;
mod probe;
mod repository;
mod requests;
mod resumption;
#[path = "../support/roles.rs"]
mod roles;
mod support;
mod versions;
