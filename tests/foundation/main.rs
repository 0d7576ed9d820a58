//! Foundation tests: the document store on SQLite and PostgreSQL, the model's
//! validation, boot plans, and the `outpost` binary's configuration,
//! certificates and import/export.

mod boot;
mod cli;
mod model;
mod store;
#[path = "../support/mod.rs"]
mod support;
