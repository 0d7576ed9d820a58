//! The master–edge link: one TLS 1.3 connection per edge carrying many
//! concurrent requests in both directions.
//!
//! Layers, bottom up:
//! - [`tls`]: rustls (ring) server and client configurations;
//!   [`tickets`]: session tickets every master sharing the database's
//!   secret opens, so edges resume across a restart or a failover.
//! - [`handshake`]: preface (magic + version), then mutual HMAC
//!   challenge-response bound to the TLS session.
//! - [`peer`]: the multiplexer. [`Peer`] is the cheap, cloneable handle
//!   (`request`, `event`, `close`); a session driver runs one reader loop
//!   (dispatch, heartbeats, dead-peer detection) and one writer task
//!   (bounded queue, batched writes, stall cut-off). Incoming requests run
//!   concurrently, each in its own task, through the role's [`Handler`].
//! - [`registry`]: the master's table of connected edges; replace-on-duplicate
//!   and link-up / link-lost events.
//! - [`master`]: `serve(listener, ...)`, the accept loop.
//! - [`edge`]: `run(config, ...)`, the connect loop with jittered retries and
//!   the "disconnected" signal.
//! - [`probe`]: a master node of a cluster asking another whether it acts
//!   and reaches the database (`cluster_failsafe`).
//! - [`repository`]: the driver repository over git (master) and its
//!   transfer to an edge's modules directory (edge).
//!
//! Shutdown: every loop selects on a `CancellationToken`; closing a peer
//! cancels its reader, writer and running handlers.

pub mod edge;
pub mod handshake;
pub mod master;
pub mod peer;
pub mod probe;
pub mod registry;
pub mod repository;
pub mod tickets;
pub mod tls;

use std::time::Duration;

pub use crate::util::AdmissionLimits;
pub use edge::{EdgeLinkConfig, EdgeLinkEvent};
pub use handshake::{ProbeResponder, ProbeStatus};
pub use master::{KeyLookup, MasterLinkConfig, MasterLinkEvent};
pub use peer::{CallError, CloseReason, Handler, Peer, PeerConfig, PeerMeta, PeerRole, RequestCtx};
pub use registry::{
    AUTH_FAILED_QUEUED, Duplicate, EdgeInfo, LinkEvents, QueueSlot, Refusals, Registry,
};

/// Timing of a link, shared by both roles. Defaults follow the mission:
/// ping every second, dead after three silent seconds.
#[derive(Debug, Clone)]
pub struct LinkTiming {
    /// How often the edge pings. Lower detects a dead peer sooner and costs
    /// two small frames per interval per link.
    pub heartbeat: Duration,
    /// A peer with no frame for this long is dead and its link closed; also
    /// the cut-off for a peer that stops reading our writes.
    pub dead_after: Duration,
    /// The whole handshake (TLS, preface, authentication) must finish
    /// within this; a connection that stalls is closed.
    pub handshake_timeout: Duration,
}

impl Default for LinkTiming {
    fn default() -> Self {
        Self {
            heartbeat: Duration::from_secs(1),
            dead_after: Duration::from_secs(3),
            handshake_timeout: Duration::from_secs(10),
        }
    }
}

/// Errors of setting a link up (configuration, TLS material, sockets).
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("TLS configuration: {0}")]
    Tls(String),
    #[error("link configuration: {0}")]
    Config(String),
    #[error(transparent)]
    Certs(#[from] crate::certs::CertError),
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
}

/// Sets TCP options every link socket gets: no Nagle delay (requests are
/// small and latency matters) and TCP keepalive as a backstop for the
/// heartbeats on half-open connections.
pub(crate) fn tune_socket(stream: &tokio::net::TcpStream, timing: &LinkTiming) {
    let _ = stream.set_nodelay(true);
    let ka = socket2::TcpKeepalive::new()
        .with_time(timing.dead_after)
        .with_interval(timing.heartbeat.max(Duration::from_secs(1)));
    let _ = socket2::SockRef::from(stream).set_tcp_keepalive(&ka);
}
