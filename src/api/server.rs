//! The API's HTTP server: hyper's connection builder with a header read
//! timeout and a bound on open connections, in all and per source.
//!
//! axum's own `serve` has neither, so a client that sends half a header and
//! then nothing held its connection (and a descriptor) for as long as it
//! liked, and enough of them left no descriptors for edges' links. Here the
//! header timeout also closes idle keep-alive connections: hyper starts it
//! whenever it waits for the next request's head.

use std::future::Future;
use std::time::Duration;

use axum::extract::ConnectInfo;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tower_service::Service as _;

use crate::util::{Admission, AdmissionLimits};

/// Limits of the API's HTTP server.
#[derive(Debug, Clone, Copy)]
pub struct HttpLimits {
    /// Time to send a request's headers; also the idle keep-alive timeout.
    pub header_read_timeout: Duration,
    /// Connections open at once, in all and per source.
    pub connections: AdmissionLimits,
}

impl Default for HttpLimits {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(10),
            connections: AdmissionLimits {
                max_unauthenticated: 4_096,
                per_source: 256,
            },
        }
    }
}

impl HttpLimits {
    pub fn from_config(c: &crate::config::Config) -> Self {
        let count = |v: u64| usize::try_from(v).unwrap_or(usize::MAX);
        Self {
            header_read_timeout: Duration::from_millis(c.http_header_timeout_ms),
            connections: AdmissionLimits {
                max_unauthenticated: count(c.http_max_connections),
                per_source: count(c.http_max_connections_per_source),
            },
        }
    }
}

/// Serves `router` on `listener` until `shutdown` completes, then waits for
/// the connections' requests to finish (the caller bounds that wait).
pub(super) async fn serve(
    listener: tokio::net::TcpListener,
    router: axum::Router,
    limits: HttpLimits,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let admission = Admission::new(limits.connections);
    let graceful = GracefulShutdown::new();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    tokio::pin!(shutdown);
    loop {
        let (stream, addr) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Usually out of descriptors: back off instead of spinning.
                    tracing::warn!(error = %e, "API accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let ticket = match admission.try_admit(addr.ip()) {
            Ok(t) => t,
            Err(why) => {
                metrics::counter!("outpost_http_connections_refused_total", "why" => why.as_str())
                    .increment(1);
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let router = router.clone();
        // The peer's address goes where axum's `ConnectInfo` looks for it.
        let service =
            hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
                req.extensions_mut().insert(ConnectInfo(addr));
                router.clone().call(req.map(axum::body::Body::new))
            });
        let conn = builder
            .serve_connection_with_upgrades(TokioIo::new(stream), service)
            .into_owned();
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(%addr, error = %e, "API connection ended with an error");
            }
            drop(ticket);
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}
