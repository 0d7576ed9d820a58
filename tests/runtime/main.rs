//! Integration tests of the module runtime, against the device simulators
//! over real TCP: drivers, transports, lifecycle, exec, status and the
//! containment of bad devices and bad drivers.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    unreachable_pub,
    missing_debug_implementations,
    reason = "tests and benchmarks fail loudly by design, and their items are not an API"
)]

mod devices;
mod drivers;
mod lifecycle;
mod pjlink;
mod sandbox;
mod slicing;
mod support;
