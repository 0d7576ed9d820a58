//! Web API tests over real HTTP on loopback, against a real store.

mod documents;
#[path = "../support/http.rs"]
mod http;
mod live;
mod openapi;
mod server;
#[path = "../support/mod.rs"]
mod support;
#[path = "../support/ws.rs"]
mod ws;
