//! Outpost: a control-plane server for device control across many sites.
//!
//! # Layout
//!
//! One binary, two roles. The **master** holds the database and serves every
//! site; an **edge** (`OUTPOST_EDGE_ID` set) runs one site from its replica.
//!
//! - [`config`]: layered configuration (defaults < TOML < `OUTPOST_*`).
//! - [`model`]: the documents (edge locations, systems, modules) and their validation.
//! - [`control`]: who controls a site's devices; the negotiation rules as a
//!   pure function, the hold-down, control reasons, and the [`control::Clock`]
//!   that windows and failover deadlines read.
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
//! - [`cluster`]: a master cluster: the lease on PostgreSQL (or a lock
//!   file), fencing terms, the deadline every device write reads.
//! - [`reconciler`]: the only code that changes what runs for documents:
//!   it follows the store's change feed, the controller of each site and
//!   the driver files, and brings the runtime in line.
//! - [`runtime`]: the module runtime: one sandboxed Lua driver per module, the
//!   device transports it never touches itself, exec, status and debug streams.
//! - [`sim`]: device simulators (PJLink projector, line device) on real TCP.
//! - [`admin`]: import and export of documents.
//! - [`api`]: the web API (axum, OpenAPI, keys and roles, metrics); device
//!   operations go to the local runtime or over the link to the controller;
//!   a WebSocket pushes status, debug lines and control notices.
//! - [`master`], [`edge`]: `start(config)` / `run(config, shutdown)` for each
//!   role, with the handlers that answer the link; the master's control loop
//!   (one task per location: negotiation, takeover, windows, restore) and
//!   the edge's side of it (report, obey, autonomy); the edge's replica sync
//!   and event log sync.
//! - [`local_ops`]: exec, status and debug requests answered on the local
//!   runtime, the same for both roles.
//! - [`util`]: one place for the small helpers every layer uses (an error's
//!   causes on one line, wall-clock milliseconds).
//! - [`console`]: the web console's embedded files, served by the master
//!   at `/` (a client of [`api`] like any other).
//! - [`cli`]: the `outpost` command line; `main.rs` only calls it. [`http`]:
//!   the tiny HTTP client its API commands use; [`ops_cli`]: `status`,
//!   `exec`, `logs`, `certs issue-edge`; [`demo`]: `outpost demo`.
//!
//! Data flows one way at boot: `config` → `store` → `model` → `boot` plan →
//! the role's runtime. At run time, documents flow master store → change
//! feed → link → edge replica → edge runtime; events flow edge runtime →
//! edge log → link → master store (and the master's WebSocket
//! subscribers); requests flow `api` → `model` checks → `store`, or `api` →
//! link → the controlling side's runtime. Control flows link events → the
//! master's per-location task → store (epoch, audit log) → link
//! (`control_assume` / `control_release`) → the edge's runtime.

pub mod admin;
pub mod api;
pub mod boot;
pub mod certs;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod console;
pub mod control;
pub mod demo;
pub mod edge;
pub mod http;
pub mod link;
pub mod local_ops;
pub mod master;
pub mod model;
pub mod ops_cli;
pub mod proto;
pub mod reconciler;
pub mod runtime;
pub mod secret;
pub mod shutdown;
pub mod sim;
pub mod store;
pub mod util;
