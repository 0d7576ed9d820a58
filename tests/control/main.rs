//! Control tests: control epochs and the audit log on both backends. (The
//! negotiation table lives with the pure function in `src/control`.)

mod epochs;
#[path = "../support/mod.rs"]
mod support;
mod windows;
