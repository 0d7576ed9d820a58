//! The master's side of the link: the accept loop.
//!
//! Each connection gets its own task: TLS, preface, authentication (all
//! under one deadline, and after a delay when its address failed
//! recently), then a [`Session`](super::peer::Session) registered in the
//! [`Registry`]. Failures are recorded with edge id, address and reason
//! (log and [`MasterLinkEvent::AuthFailed`]); the peer only ever learns
//! "denied".

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use uuid::Uuid;

use super::handshake::{self, HandshakeError, KeySet};
use super::peer::{self, CloseReason, Handler, Peer, PeerConfig, PeerMeta, PeerRole};
use super::registry::{EdgeInfo, QueueSlot, Registry};
use super::{LinkError, LinkTiming, tls};
use crate::control::leadership::LeadershipWatch;
use crate::secret::LinkKey;
use crate::util::{Admission, AdmissionLimits, FailureThrottle, Noise, ThrottlePolicy};

/// Where the master finds the keys that authenticate an edge now.
pub trait KeyLookup: Send + Sync + 'static {
    fn link_keys(&self, edge_id: Uuid) -> impl Future<Output = KeySet> + Send;
}

/// A fixed table (tests, benchmarks).
impl KeyLookup for HashMap<Uuid, LinkKey> {
    async fn link_keys(&self, edge_id: Uuid) -> KeySet {
        self.get(&edge_id).cloned().into()
    }
}

/// What the master's link reports to the control loop.
#[derive(Debug, Clone)]
pub enum MasterLinkEvent {
    LinkUp {
        info: EdgeInfo,
        peer: Peer,
        at: SystemTime,
    },
    LinkLost {
        edge_id: Uuid,
        session: u64,
        reason: CloseReason,
        at: SystemTime,
    },
    /// A connection failed before it was authenticated: the first from its
    /// source in `failure_report_interval`, standing for `failures` (those
    /// held back since the source's last report, and this one).
    AuthFailed {
        edge_id: Option<Uuid>,
        addr: SocketAddr,
        reason: String,
        at: SystemTime,
        failures: u64,
        /// Its place in the registry's bounded share of the event queue,
        /// given back when the event is dropped.
        slot: QueueSlot,
    },
}

/// The master's link settings.
#[derive(Clone)]
pub struct MasterLinkConfig {
    pub tls: Arc<rustls::ServerConfig>,
    pub peer: PeerConfig,
    /// This master process's boot id, announced to edges.
    pub boot_id: Uuid,
    /// Handshakes in progress at once; more connections wait their turn
    /// (a reconnect storm costs queueing, not memory).
    pub max_handshakes: usize,
    /// Connections accepted but not yet authenticated, in all and per
    /// source; more are closed at once.
    pub admission: AdmissionLimits,
    /// The store this master serves, told to refused edges (version 2) so
    /// that an edge whose location was deleted here can stand down.
    pub store_id: Option<Uuid>,
    /// A source's failed handshakes are logged and reported
    /// ([`MasterLinkEvent::AuthFailed`]) once per this interval, with the
    /// count; the rest are counted only (`outpost_link_handshake_failures_total`).
    /// Zero reports every one.
    pub failure_report_interval: Duration,
    /// How long `serve` waits for links to finish after shutdown.
    pub shutdown_grace: Duration,
    /// Whether this master node acts: a node that does not sends an edge
    /// on to the acting one after authenticating it.
    pub leadership: LeadershipWatch,
    /// Answers a cluster node's probe (`cluster_failsafe`); `None`: a
    /// master alone, which refuses probes.
    pub probe: Option<Arc<dyn super::ProbeResponder>>,
}

impl MasterLinkConfig {
    /// From the process configuration (`tls_cert`, `tls_key`, timings).
    pub fn from_config(c: &crate::config::Config) -> Result<Self, LinkError> {
        let timing = LinkTiming {
            heartbeat: Duration::from_millis(c.heartbeat_ms),
            dead_after: Duration::from_millis(c.dead_after_ms),
            ..LinkTiming::default()
        };
        Ok(Self {
            tls: tls::server_config(&c.tls_cert, &c.tls_key, c.link_client_ca.as_deref())?,
            peer: PeerConfig::new(PeerRole::Master, timing),
            boot_id: Uuid::now_v7(),
            max_handshakes: 256,
            admission: AdmissionLimits::default(),
            store_id: None,
            failure_report_interval: FAILURE_REPORT_INTERVAL,
            shutdown_grace: Duration::from_millis(c.shutdown_grace_ms),
            leadership: crate::control::leadership::alone_watch(),
            probe: None,
        })
    }
}

/// The handshake's failure throttle: after three failures within a minute,
/// each new connection from that address waits 250 ms before its handshake
/// starts, doubling up to 8 s.
pub const HANDSHAKE_THROTTLE: ThrottlePolicy = ThrottlePolicy {
    free: 3,
    window: Duration::from_secs(60),
    base: Duration::from_millis(250),
    cap: Duration::from_secs(8),
    max_tracked: 65_536,
};

/// How often one source's failed handshakes are logged, by default.
pub const FAILURE_REPORT_INTERVAL: Duration = Duration::from_secs(60);
/// Sources whose failures are held back at most (see `util::Noise`).
const FAILURE_SOURCES: usize = 4096;

/// Accepts edge links on `listener` until `shutdown`; then closes every link
/// and waits at most `shutdown_grace` for their tasks.
pub async fn serve<K: KeyLookup, H: Handler>(
    listener: TcpListener,
    cfg: MasterLinkConfig,
    keys: Arc<K>,
    handler: Arc<H>,
    registry: Registry,
    shutdown: CancellationToken,
) -> Result<(), LinkError> {
    let ctx = Arc::new(Accept {
        acceptor: TlsAcceptor::from(cfg.tls.clone()),
        handshakes: Semaphore::new(cfg.max_handshakes.max(1)),
        admission: Admission::new(cfg.admission),
        limiter: FailureThrottle::new(HANDSHAKE_THROTTLE),
        noise: Noise::new(cfg.failure_report_interval, FAILURE_SOURCES),
        cfg: cfg.clone(),
        registry,
        shutdown: shutdown.clone(),
        sweeper: peer::Sweeper::new(cfg.peer.timing.clone()),
    });
    let tracker = TaskTracker::new();
    tracker.spawn(ctx.sweeper.clone().run(shutdown.clone()));
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            r = listener.accept() => r,
        };
        match accepted {
            Ok((stream, addr)) => {
                tracker.spawn(
                    ctx.clone()
                        .connection(stream, addr, keys.clone(), handler.clone()),
                );
            }
            Err(e) => {
                // Usually out of file descriptors: back off instead of spinning.
                tracing::warn!(error = %e, "link accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    tracker.close();
    let _ = tokio::time::timeout(cfg.shutdown_grace, tracker.wait()).await;
    Ok(())
}

struct Accept {
    acceptor: TlsAcceptor,
    handshakes: Semaphore,
    admission: Admission,
    limiter: FailureThrottle,
    noise: Noise,
    cfg: MasterLinkConfig,
    registry: Registry,
    shutdown: CancellationToken,
    sweeper: Arc<peer::Sweeper>,
}

impl Accept {
    async fn connection<K: KeyLookup, H: Handler>(
        self: Arc<Self>,
        stream: TcpStream,
        addr: SocketAddr,
        keys: Arc<K>,
        handler: Arc<H>,
    ) {
        let ticket = match self.admission.try_admit(addr.ip()) {
            Ok(ticket) => ticket,
            Err(refusal) => {
                metrics::counter!("outpost_link_admission_refused_total", "why" => refusal.as_str())
                    .increment(1);
                tracing::debug!(%addr, why = refusal.as_str(), "connection refused before its handshake");
                return;
            }
        };
        // One deadline from accept to authenticated, waits for a permit
        // included: a slot is never held longer than that.
        let deadline = Instant::now() + self.cfg.peer.timing.handshake_timeout;
        let outcome = match tokio::time::timeout_at(deadline, self.admit(addr)).await {
            Ok(Some(permit)) => {
                super::tune_socket(&stream, &self.cfg.peer.timing);
                let outcome = self.authenticate(stream, addr, keys, deadline).await;
                drop(permit);
                outcome
            }
            Ok(None) => return,
            Err(_) => Err((None, HandshakeError::Timeout)),
        };
        drop(ticket);
        match outcome {
            Ok((tls, accepted)) => {
                self.limiter.success(addr.ip());
                self.run_link(tls, accepted, addr, handler).await;
            }
            Err((claimed, e)) => self.failed(claimed, addr, &e),
        }
    }

    /// A handshake failed: throttled, counted, and reported once per source
    /// per interval (200 idle sockets are one line, not 200).
    fn failed(&self, claimed: Option<Uuid>, addr: SocketAddr, e: &HandshakeError) {
        if matches!(
            e,
            HandshakeError::Redirected { .. } | HandshakeError::NotActing | HandshakeError::Probed
        ) {
            // An authenticated edge sent on, or a cluster node's probe
            // answered: no failure, no penalty.
            tracing::debug!(edge_id = ?claimed, %addr, reason = %e, "edge sent to the acting master node, or probe answered");
            return;
        }
        let now = Instant::now();
        self.limiter.failure(addr.ip(), now);
        metrics::counter!("outpost_link_handshake_failures_total").increment(1);
        // A location that exists refused: an operator's problem (a rotated
        // secret, a certificate for another edge) that leaves its site
        // "lost" although its edge is alive. Every one is counted for the
        // site's status; the log is rate-limited like any failure.
        // A network failure during the handshake (a cut, a timeout) is an
        // outage, not a refusal.
        let judged = !matches!(
            e,
            HandshakeError::UnknownEdge | HandshakeError::Io(_) | HandshakeError::Timeout
        );
        let refused = claimed.filter(|_| judged);
        if let Some(id) = refused {
            self.registry.note_refusal(id, addr, e.to_string());
        }
        match self.noise.note(addr.ip(), now) {
            Some(failures) => {
                if let Some(id) = refused {
                    tracing::error!(edge_id = %id, %addr, reason = %e, failures, "refused the edge of this location; its site is lost to the master until this is fixed");
                } else {
                    tracing::warn!(edge_id = ?claimed, %addr, reason = %e, failures, "link handshake failed");
                }
                self.registry
                    .auth_failed(claimed, addr, e.to_string(), failures);
            }
            None => {
                tracing::debug!(edge_id = ?claimed, %addr, reason = %e, "link handshake failed (reported once per source and interval)")
            }
        }
    }

    /// Waits out the address's failure penalty, then for a handshake slot;
    /// `None` when the master stops first.
    async fn admit(&self, addr: SocketAddr) -> Option<tokio::sync::SemaphorePermit<'_>> {
        let penalty = self.limiter.penalty(addr.ip(), Instant::now());
        if !penalty.is_zero() {
            tokio::select! {
                _ = self.shutdown.cancelled() => return None,
                _ = tokio::time::sleep(penalty) => {}
            }
        }
        tokio::select! {
            _ = self.shutdown.cancelled() => None,
            p = self.handshakes.acquire() => p.ok(),
        }
    }

    /// What this node answers an authenticated edge, as its leadership
    /// stands now.
    fn answer(&self) -> handshake::Answer {
        let now = self.cfg.leadership.borrow();
        if now.acting() {
            return handshake::Answer::Welcome;
        }
        match now.leader.as_ref().and_then(|l| Some((l, l.link.clone()?))) {
            Some((leader, link)) => handshake::Answer::RedirectTo {
                node_id: leader.node_id.clone(),
                link,
            },
            None => handshake::Answer::Close,
        }
    }

    /// TLS, then the mutual proof, within the handshake deadline. On failure,
    /// the edge id the peer claimed (if it got that far) and why.
    async fn authenticate<K: KeyLookup>(
        &self,
        stream: TcpStream,
        addr: SocketAddr,
        keys: Arc<K>,
        deadline: Instant,
    ) -> Result<(TlsStream<TcpStream>, handshake::Accepted), (Option<Uuid>, HandshakeError)> {
        let mut claimed: Option<Uuid> = None;
        let outcome = tokio::time::timeout_at(deadline, async {
            let mut tls = self
                .acceptor
                .accept(stream)
                .await
                .map_err(|e| HandshakeError::Tls(e.to_string()))?;
            count_tls_handshake(tls.get_ref().1);
            let exporter =
                tls::exporter(tls.get_ref().1).map_err(|e| HandshakeError::Tls(e.to_string()))?;
            // With mutual TLS, the client certificate must name the edge id
            // the peer claims: one edge's certificate opens no other's door.
            let leaf = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .map(|c| c.clone().into_owned());
            let mut wrong_cert = None;
            let accepted = handshake::accept(
                &mut tls,
                exporter,
                |id| {
                    claimed = Some(id);
                    let fits = leaf.as_ref().is_none_or(|c| tls::names_edge(c, id));
                    if !fits {
                        wrong_cert = Some(id);
                    }
                    let keys = keys.clone();
                    async move {
                        if fits {
                            keys.link_keys(id).await
                        } else {
                            // A key nobody holds: the edge is told "bad
                            // proof", an outage it rides out, never
                            // "unknown edge", which would make it stand down.
                            let random = crate::secret::EdgeSecret::generate();
                            Some(random.link_key(id)).into()
                        }
                    }
                },
                self.cfg.peer.max_in_flight,
                self.cfg.boot_id,
                (self.cfg.store_id, self.answer()),
                self.cfg.probe.as_deref(),
            )
            .await
            .map_err(|e| wrong_cert.map_or(e, HandshakeError::WrongCertificate))?;
            Ok::<_, HandshakeError>((tls, accepted))
        })
        .await
        .unwrap_or(Err(HandshakeError::Timeout));
        tracing::trace!(%addr, ok = outcome.is_ok(), "handshake finished");
        outcome.map_err(|e| (claimed, e))
    }

    /// Registers an authenticated link and serves it until it closes.
    async fn run_link<H: Handler>(
        &self,
        tls: TlsStream<TcpStream>,
        acc: handshake::Accepted,
        addr: SocketAddr,
        handler: Arc<H>,
    ) {
        let meta = PeerMeta {
            edge_id: acc.edge_id,
            session: peer::next_session(),
            addr,
            version: acc.version,
            remote_boot_id: acc.boot_id,
        };
        let info = EdgeInfo {
            edge_id: acc.edge_id,
            session: meta.session,
            since: SystemTime::now(),
            addr,
            version: acc.version,
            boot_id: acc.boot_id,
            commit: acc.commit.clone(),
            warning: acc.warning.clone(),
        };
        let (session_no, edge_id) = (meta.session, meta.edge_id);
        let (peer, session) =
            peer::session(tls, meta, &self.cfg.peer, acc.max_in_flight, &self.shutdown);
        let session = session.swept_by(&self.sweeper);
        tracing::info!(%edge_id, %addr, session = session_no, "edge link up");
        if let Some(warning) = &acc.warning {
            tracing::warn!(%edge_id, %addr, "{warning}");
        }
        // The new session is served at once, but registered (which starts
        // the control negotiation) only once an older session of the same
        // edge has stood down or proved dead.
        let run = session.run(handler);
        tokio::pin!(run);
        let ended_early = tokio::select! {
            reason = &mut run => Some(reason),
            () = self.supersede(edge_id, acc.boot_id, addr) => None,
        };
        let registered = ended_early.is_none();
        if registered {
            self.registry.insert(info, peer);
        }
        let mut reason = match ended_early {
            Some(reason) => reason,
            None => run.await,
        };
        if self.shutdown.is_cancelled() && reason == CloseReason::Local {
            reason = CloseReason::Shutdown;
        }
        tracing::info!(%edge_id, %addr, session = session_no, %reason, "edge link lost");
        if registered {
            self.registry.remove(edge_id, session_no, reason);
        }
    }

    /// Before a new session of `edge_id` (from `by`) replaces a live one:
    /// a reconnect of the same process (same boot id) replaces it at once.
    /// Otherwise the old session is told it is superseded and answers once
    /// its modules have stopped; an old session that does not answer
    /// within the dead interval is dead (a restarted edge) or too old to
    /// know the request, and is replaced all the same. One that answers
    /// was a second live process with the same id: that is an operator's
    /// mistake, logged at ERROR and counted.
    async fn supersede(&self, edge_id: Uuid, boot_id: Uuid, by: SocketAddr) {
        let Some(old) = self.registry.peer(edge_id) else {
            return;
        };
        if old.meta().remote_boot_id == boot_id || old.meta().version < 2 {
            return;
        }
        let request = crate::proto::RequestBody::Superseded { by: by.to_string() };
        let wait = self.cfg.peer.timing.dead_after;
        match old.request(request, wait).await {
            Ok(_) => {
                metrics::counter!("outpost_edge_duplicate_sessions_total").increment(1);
                self.registry.note_duplicate(edge_id, old.meta().addr, by);
                tracing::error!(
                    %edge_id,
                    standing_by = %old.meta().addr,
                    replacing = %by,
                    "two live processes use this edge's id and secret; the older one stopped its modules and stands by"
                );
            }
            Err(e) => tracing::warn!(
                %edge_id,
                old = %old.meta().addr,
                new = %by,
                error = %e,
                "an earlier session of this edge did not stand down (a restarted edge?); replacing it"
            ),
        }
    }
}

/// Counts a finished TLS handshake by kind: a reconnect storm that does
/// full handshakes where it could resume costs the master a signature each.
fn count_tls_handshake(conn: &rustls::ServerConnection) {
    let kind = match conn.handshake_kind() {
        Some(rustls::HandshakeKind::Resumed) => "resumed",
        _ => "full",
    };
    metrics::counter!("outpost_link_tls_handshakes_total", "kind" => kind).increment(1);
}
