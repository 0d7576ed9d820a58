//! The operator's tools against a real master: the web console in a real
//! headless Chromium, `outpost demo`, and the operator commands of the
//! real binary.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    unreachable_pub,
    reason = "tests and benchmarks fail loudly by design, and their items are not an API"
)]

mod browser;
mod cli;
mod demo;
#[path = "../support/http.rs"]
mod http;
mod overview_data;
#[path = "../support/roles.rs"]
mod roles;
#[path = "../support/mod.rs"]
mod support;
mod walkthrough;
