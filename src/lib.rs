//! Outpost: a control-plane server for device control across many sites.
//!
//! # Layout
//!
//! One binary, two roles. The **master** holds the database and serves every
//! site; an **edge** (`OUTPOST_EDGE_ID` set) runs one site from its replica.
//!
//! - [`config`]: layered configuration (defaults < TOML < `OUTPOST_*`).
//! - [`model`]: the documents (edge locations, systems, modules) and their validation.
//! - [`store`]: the document store on SQLite or PostgreSQL with its change
//!   feed; the only module that writes SQL.
//! - [`secret`]: edge secrets and the link keys derived from them.
//! - [`certs`]: development CA and certificates, PEM loading.
//! - [`proto`]: the link's wire types (preface, handshake, envelope,
//!   request/response/event bodies, `WireError`); no sockets.
//! - [`link`]: the master–edge link: TLS, mutual HMAC handshake, the
//!   multiplexed peer, heartbeats, the master's registry, the edge's
//!   connect loop, and the driver repository transfer.
//! - [`boot`]: what a master or an edge loads at start (the boot plans).
//! - [`admin`]: import and export of documents.
//! - [`master`], [`edge`]: `run(config, shutdown)` for each role.
//! - [`cli`]: the `outpost` command line; `main.rs` only calls it.
//!
//! Data flows one way at boot: `config` → `store` → `model` → `boot` plan →
//! the role's runtime.

#![forbid(unsafe_code)]
#![warn(clippy::await_holding_lock)]

pub mod admin;
pub mod boot;
pub mod certs;
pub mod cli;
pub mod config;
pub mod edge;
pub mod link;
pub mod master;
pub mod model;
pub mod proto;
pub mod secret;
pub mod shutdown;
pub mod store;
