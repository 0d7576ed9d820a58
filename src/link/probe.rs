//! A master node of a cluster asking another, over the other's link
//! listener, whether it acts and whether it reaches the cluster's database
//! (`cluster_failsafe`; the messages are in [`crate::proto::handshake`]).
//!
//! Only the answering node's authenticity matters for safety: a MASTER
//! keeps acting on the answers, so a forged "I cannot reach the database
//! either" could keep it acting while another node takes over. The asker
//! therefore verifies the answerer's TLS certificate against the cluster's
//! CA (`ca_cert`, as edges do) and checks that the answer names the node it
//! asked. The asker itself proves nothing: what it learns (a node's state,
//! whether it reaches the database) is no secret, and the answering node's
//! promise (not to take the lease for a while) delays a failover by at
//! most one lease, while the admission limits and the handshake deadline
//! bound what a stranger can make it do.

use std::net::SocketAddr;
use std::sync::Arc;

use rustls_pki_types::ServerName;
use tokio_rustls::TlsConnector;

use super::handshake::{self, HandshakeError, ProbeStatus};

/// Why a probe got no answer.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("cannot resolve {0}")]
    Resolve(String),
    #[error("TCP: {0}")]
    Tcp(std::io::Error),
    #[error("TLS: {0}")]
    Tls(String),
    #[error(transparent)]
    Handshake(#[from] HandshakeError),
}

/// Probes the node whose link listener is at `link` (`host:port`, its
/// `advertise_link`), verifying its certificate with `tls`. Unbounded in
/// time: the caller sets the deadline.
pub async fn ask(tls: Arc<rustls::ClientConfig>, link: &str) -> Result<ProbeStatus, ProbeError> {
    let host = link
        .rsplit_once(':')
        .map(|(h, _)| h.trim_start_matches('[').trim_end_matches(']'))
        .ok_or_else(|| ProbeError::Resolve(link.to_owned()))?;
    let name =
        ServerName::try_from(host.to_owned()).map_err(|_| ProbeError::Resolve(link.to_owned()))?;
    let addr: SocketAddr = tokio::net::lookup_host(link)
        .await
        .map_err(|_| ProbeError::Resolve(link.to_owned()))?
        .next()
        .ok_or_else(|| ProbeError::Resolve(link.to_owned()))?;
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(ProbeError::Tcp)?;
    let _ = stream.set_nodelay(true);
    let mut tls = TlsConnector::from(tls)
        .connect(name, stream)
        .await
        .map_err(|e| ProbeError::Tls(e.to_string()))?;
    Ok(handshake::probe(&mut tls).await?)
}
