//! The edge's side of the link: the connect loop.
//!
//! The edge tries each master in `masters` in order. After a failed round
//! it waits `reconnect` ± 20 % (jitter, so a thousand edges do not retry in
//! lock step) — never a tight loop. It raises [`EdgeLinkEvent::Disconnected`]
//! once when `dead_after` has passed without traffic *and* the following
//! reconnect failed, or has gone on for `dead_after` without an answer (a
//! master that drops every packet holds a round for the whole handshake
//! timeout); the control logic acts on that.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use rustls_pki_types::ServerName;
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::handshake::{self, HandshakeError, Hello};
use super::peer::{self, CloseReason, Handler, Peer, PeerConfig, PeerMeta, PeerRole, Session};
use super::{LinkError, LinkTiming, tls};
use crate::secret::{EdgeSecret, LinkKey};
use crate::util::UnpoisonedRw;

/// The commit the edge's modules directory is at, reported at each connect.
pub type CommitCell = Arc<RwLock<Option<String>>>;

/// What the edge's link reports to the control loop.
#[derive(Debug, Clone)]
pub enum EdgeLinkEvent {
    Connected {
        peer: Peer,
        master: String,
        at: SystemTime,
    },
    ConnectionLost {
        reason: CloseReason,
        at: SystemTime,
    },
    ConnectFailed {
        master: String,
        error: String,
        at: SystemTime,
    },
    /// A master refused this edge (from version 2 with its reason and the
    /// store it serves: a location deleted there is not an outage).
    Refused {
        master: String,
        reason: Option<crate::proto::DenyReason>,
        store_id: Option<Uuid>,
        at: SystemTime,
    },
    /// No traffic for `dead_after` and the following reconnect failed.
    Disconnected {
        at: SystemTime,
    },
}

/// The first wait after this edge's session was superseded by another
/// process with its id; it doubles at each further one, up to the cap.
const STAND_DOWN_FIRST: Duration = Duration::from_secs(10);
const STAND_DOWN_CAP: Duration = Duration::from_secs(300);

/// Set when the master said another process with this edge's id replaced
/// our session: the connect loop then waits a back-off that grows, capped
/// at five minutes, before it tries again, so two processes with one id do
/// not replace each other in a tight loop.
#[derive(Debug, Clone, Default)]
pub struct StandDown(Arc<std::sync::Mutex<StandDownState>>);

#[derive(Debug, Default)]
struct StandDownState {
    pending: bool,
    strikes: u32,
    /// The master said this edge's location no longer exists.
    decommissioned: bool,
}

/// How often a decommissioned edge asks again.
const DECOMMISSIONED_RETRY: Duration = Duration::from_secs(300);

impl StandDown {
    /// Our session was superseded: stand by before the next connect.
    pub fn superseded(&self) {
        let mut s = crate::util::Unpoisoned::lock_unpoisoned(&*self.0);
        s.pending = true;
        s.strikes = s.strikes.saturating_add(1);
    }

    /// The wait owed before the next connect, if a supersede is pending.
    fn take(&self) -> Option<Duration> {
        let mut s = crate::util::Unpoisoned::lock_unpoisoned(&*self.0);
        if !std::mem::take(&mut s.pending) {
            return None;
        }
        let doubled = STAND_DOWN_FIRST.saturating_mul(1 << s.strikes.saturating_sub(1).min(10));
        Some(doubled.min(STAND_DOWN_CAP))
    }

    /// The master serving our store says our location is gone: retry
    /// rarely until a connect succeeds.
    pub fn decommissioned(&self) {
        crate::util::Unpoisoned::lock_unpoisoned(&*self.0).decommissioned = true;
    }

    /// The wait between connect rounds.
    fn retry_wait(&self, reconnect: Duration) -> Duration {
        if crate::util::Unpoisoned::lock_unpoisoned(&*self.0).decommissioned {
            DECOMMISSIONED_RETRY
        } else {
            reconnect
        }
    }

    fn reconnected(&self) {
        crate::util::Unpoisoned::lock_unpoisoned(&*self.0).decommissioned = false;
    }

    /// A session that lasted past the cap: the duplicate is gone.
    fn forgive(&self) {
        crate::util::Unpoisoned::lock_unpoisoned(&*self.0).strikes = 0;
    }
}

/// The edge's link settings.
#[derive(Clone)]
pub struct EdgeLinkConfig {
    pub edge_id: Uuid,
    pub key: LinkKey,
    /// `host:port` of master link listeners, tried in order.
    pub masters: Vec<String>,
    pub tls: Arc<rustls::ClientConfig>,
    pub peer: PeerConfig,
    /// Wait between reconnect rounds (±20 % jitter).
    pub reconnect: Duration,
    pub boot_id: Uuid,
    pub commit: CommitCell,
    /// Local address to connect from (benchmarks spread edges over
    /// several 127.0.0.x); `None` lets the system choose.
    pub bind: Option<IpAddr>,
    /// Shared with the request handler, which sets it when the master says
    /// this session was superseded.
    pub stand_down: StandDown,
}

impl EdgeLinkConfig {
    /// From the process configuration (`edge_id`, `edge_secret`, `masters`,
    /// `ca_cert`, timings).
    pub fn from_config(c: &crate::config::Config) -> Result<Self, LinkError> {
        let edge_id = c
            .edge_id
            .ok_or_else(|| LinkError::Config("edge_id is not set".into()))?;
        let secret = match (&c.edge_secret, &c.edge_secret_file) {
            (Some(s), _) => s.clone(),
            (None, Some(path)) => crate::config::read_secret_file(path)
                .map_err(|e| LinkError::Config(format!("edge_secret_file {e}")))?,
            (None, None) => return Err(LinkError::Config("edge_secret is not set".into())),
        };
        let secret = EdgeSecret::from_string(secret.expose().to_owned())
            .map_err(|e| LinkError::Config(format!("edge_secret {e}")))?;
        let timing = LinkTiming {
            heartbeat: Duration::from_millis(c.heartbeat_ms),
            dead_after: Duration::from_millis(c.dead_after_ms),
            ..LinkTiming::default()
        };
        Ok(Self {
            edge_id,
            key: secret.link_key(edge_id),
            masters: c.masters.clone(),
            tls: tls::client_config(
                &c.ca_cert,
                c.tls_client_cert
                    .as_deref()
                    .zip(c.tls_client_key.as_deref()),
            )?,
            peer: PeerConfig::new(PeerRole::Edge, timing),
            reconnect: Duration::from_millis(c.reconnect_ms),
            boot_id: Uuid::now_v7(),
            commit: CommitCell::default(),
            bind: None,
            stand_down: StandDown::default(),
        })
    }
}

/// A reconnect wait: `base` ± 20 %.
pub fn jittered(base: Duration) -> Duration {
    base.mul_f64(0.8 + 0.4 * fastrand::f64())
}

/// Keeps the edge connected to a master until `shutdown`.
pub async fn run<H: Handler>(
    cfg: EdgeLinkConfig,
    handler: Arc<H>,
    events: mpsc::UnboundedSender<EdgeLinkEvent>,
    shutdown: CancellationToken,
) {
    let dead_after = cfg.peer.timing.dead_after;
    let mut last_traffic = Instant::now();
    let mut raised = false;
    let mut immediate = true;
    let mut refusals = RefusalLog::default();
    loop {
        if !immediate {
            let wait = jittered(cfg.stand_down.retry_wait(cfg.reconnect));
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
            }
        }
        // A round against a master that answers nothing lasts up to the
        // handshake timeout: the site must not wait for it, so a round
        // still going after `dead_after` counts as failed for this.
        let round = connect_any(&cfg, &events, &shutdown, &mut refusals);
        tokio::pin!(round);
        let patience = tokio::time::sleep(dead_after);
        tokio::pin!(patience);
        let mut waited = false;
        let connected = loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                c = &mut round => break c,
                () = &mut patience, if !raised && !waited => {
                    waited = true;
                    if last_traffic.elapsed() >= dead_after {
                        raised = disconnected(&cfg, &events);
                    }
                }
            }
        };
        let Some((peer, session, master)) = connected else {
            immediate = false;
            if !raised && last_traffic.elapsed() >= dead_after {
                raised = disconnected(&cfg, &events);
            }
            continue;
        };
        raised = false;
        cfg.stand_down.reconnected();
        tracing::info!(edge_id = %cfg.edge_id, %master, "link up");
        let _ = events.send(EdgeLinkEvent::Connected {
            peer,
            master,
            at: SystemTime::now(),
        });
        let started = Instant::now();
        let mut reason = session.run(handler.clone()).await;
        if shutdown.is_cancelled() {
            reason = CloseReason::Shutdown;
        }
        last_traffic = match reason {
            CloseReason::Dead(d) => Instant::now() - d,
            _ => Instant::now(),
        };
        tracing::info!(edge_id = %cfg.edge_id, %reason, "link lost");
        let _ = events.send(EdgeLinkEvent::ConnectionLost {
            reason,
            at: SystemTime::now(),
        });
        if shutdown.is_cancelled() || !stand_down_if_superseded(&cfg, started, &shutdown).await {
            return;
        }
        // One immediate retry after a session that lasted; a session that
        // ends at once (say, replaced) waits like any failure.
        immediate = started.elapsed() >= cfg.reconnect;
    }
}

/// Tells the edge that no master answers (its site runs on its own).
/// Returns `true`: raised.
fn disconnected(cfg: &EdgeLinkConfig, events: &mpsc::UnboundedSender<EdgeLinkEvent>) -> bool {
    tracing::warn!(edge_id = %cfg.edge_id, "disconnected from every master");
    let _ = events.send(EdgeLinkEvent::Disconnected {
        at: SystemTime::now(),
    });
    true
}

/// After a session that the master said was superseded, waits the
/// stand-down back-off. False if `shutdown` came first.
async fn stand_down_if_superseded(
    cfg: &EdgeLinkConfig,
    started: Instant,
    shutdown: &CancellationToken,
) -> bool {
    if started.elapsed() >= STAND_DOWN_CAP {
        cfg.stand_down.forgive();
    }
    let Some(wait) = cfg.stand_down.take() else {
        return true;
    };
    tracing::error!(
        edge_id = %cfg.edge_id,
        wait_s = wait.as_secs(),
        "another process uses this edge's id: standing by before reconnecting"
    );
    tokio::select! {
        _ = shutdown.cancelled() => false,
        _ = tokio::time::sleep(wait) => true,
    }
}

/// Refusals and certificate failures are logged at ERROR, but the same
/// one only once a minute: an edge retries every few seconds.
#[derive(Default)]
struct RefusalLog {
    last: Option<(String, Instant)>,
}

impl RefusalLog {
    const QUIET: Duration = Duration::from_secs(60);

    fn should_log(&mut self, text: &str) -> bool {
        let fresh = self
            .last
            .as_ref()
            .is_none_or(|(t, at)| t != text || at.elapsed() >= Self::QUIET);
        if fresh {
            self.last = Some((text.to_owned(), Instant::now()));
        }
        fresh
    }
}

type Connected = (Peer, Session<TlsStream<TcpStream>>, String);

/// Redirects followed in one round, at most: a standby names the MASTER it
/// sees, which may be stale during a failover; past this the round goes on
/// with the next configured address.
const MAX_REDIRECTS: usize = 3;

async fn connect_any(
    cfg: &EdgeLinkConfig,
    events: &mpsc::UnboundedSender<EdgeLinkEvent>,
    shutdown: &CancellationToken,
    refusals: &mut RefusalLog,
) -> Option<Connected> {
    let mut redirects = 0;
    for configured in &cfg.masters {
        let mut master = configured.clone();
        loop {
            match tokio::time::timeout(
                cfg.peer.timing.handshake_timeout,
                connect(cfg, &master, shutdown),
            )
            .await
            .unwrap_or(Err(ConnectError::Handshake(HandshakeError::Timeout)))
            {
                Ok((peer, session)) => return Some((peer, session, master)),
                Err(ConnectError::Handshake(HandshakeError::Redirected { node_id, link }))
                    if redirects < MAX_REDIRECTS && link != master =>
                {
                    redirects += 1;
                    tracing::info!(edge_id = %cfg.edge_id, from = %master, to = %link, %node_id, "a standby master node sent this edge to the MASTER");
                    master = link;
                }
                Err(e) => {
                    report_failure(cfg, &master, e, events, refusals);
                    break;
                }
            }
        }
    }
    None
}

/// A refusal by a master (a wrong secret, a deleted location) or a master
/// certificate that does not verify is an operator's problem, and said at
/// ERROR; anything else is an outage, said by the control loop.
fn report_failure(
    cfg: &EdgeLinkConfig,
    master: &str,
    error: ConnectError,
    events: &mpsc::UnboundedSender<EdgeLinkEvent>,
    refusals: &mut RefusalLog,
) {
    let text = error.to_string();
    let operator_problem = matches!(
        error,
        ConnectError::Tls(_)
            | ConnectError::Handshake(HandshakeError::Denied { .. } | HandshakeError::MasterProof)
    );
    if operator_problem && refusals.should_log(&text) {
        tracing::error!(edge_id = %cfg.edge_id, %master, error = %text, "the master refused this edge or could not be verified; the site runs on its own meanwhile");
    } else {
        tracing::debug!(edge_id = %cfg.edge_id, %master, error = %text, "connect failed");
    }
    let at = SystemTime::now();
    let event = match error {
        ConnectError::Handshake(HandshakeError::Denied { reason, store_id }) => {
            EdgeLinkEvent::Refused {
                master: master.to_owned(),
                reason,
                store_id,
                at,
            }
        }
        _ => EdgeLinkEvent::ConnectFailed {
            master: master.to_owned(),
            error: text,
            at,
        },
    };
    let _ = events.send(event);
}

/// Why one connection attempt failed.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("cannot resolve '{0}'")]
    Resolve(String),
    #[error("TCP connect: {0}")]
    Tcp(#[source] std::io::Error),
    /// TLS refused by a judgement: a certificate that does not verify, an
    /// alert from the master. An operator's problem.
    #[error("TLS: {0}")]
    Tls(String),
    /// The network failed during the TLS handshake (a reset, an early
    /// close): an outage like any other.
    #[error("TLS handshake: {0}")]
    TlsIo(#[source] std::io::Error),
    #[error(transparent)]
    Handshake(#[from] HandshakeError),
}

/// rustls hands what it judged (a certificate, an alert) back as an I/O
/// error wrapping its own error; anything else is the network's doing.
fn tls_failure(e: std::io::Error) -> ConnectError {
    match e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    {
        Some(judged) => ConnectError::Tls(judged.to_string()),
        None => ConnectError::TlsIo(e),
    }
}

/// One connection attempt to one master: TCP, TLS, preface, handshake.
pub async fn connect(
    cfg: &EdgeLinkConfig,
    master: &str,
    shutdown: &CancellationToken,
) -> Result<(Peer, Session<TlsStream<TcpStream>>), ConnectError> {
    let host = master
        .rsplit_once(':')
        .map(|(h, _)| h.trim_start_matches('[').trim_end_matches(']'))
        .ok_or_else(|| ConnectError::Resolve(master.to_owned()))?;
    let name = ServerName::try_from(host.to_owned())
        .map_err(|_| ConnectError::Resolve(master.to_owned()))?;
    let addr: SocketAddr = tokio::net::lookup_host(master)
        .await
        .map_err(|_| ConnectError::Resolve(master.to_owned()))?
        .next()
        .ok_or_else(|| ConnectError::Resolve(master.to_owned()))?;
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    }
    .map_err(ConnectError::Tcp)?;
    if let Some(ip) = cfg.bind {
        socket
            .bind(SocketAddr::new(ip, 0))
            .map_err(ConnectError::Tcp)?;
    }
    let stream = socket.connect(addr).await.map_err(ConnectError::Tcp)?;
    super::tune_socket(&stream, &cfg.peer.timing);
    let mut tls = TlsConnector::from(cfg.tls.clone())
        .connect(name, stream)
        .await
        .map_err(tls_failure)?;
    let exporter = tls::exporter(tls.get_ref().1).map_err(|e| ConnectError::Tls(e.to_string()))?;
    let hello = Hello {
        edge_id: cfg.edge_id,
        boot_id: cfg.boot_id,
        commit: cfg.commit.read_unpoisoned().clone(),
        max_in_flight: cfg.peer.max_in_flight,
    };
    let welcomed = handshake::connect(&mut tls, exporter, &cfg.key, &hello).await?;
    if let Some(warning) = &welcomed.warning {
        tracing::warn!(master = %addr, "the master warns: {warning}");
    }
    let meta = PeerMeta {
        edge_id: cfg.edge_id,
        session: peer::next_session(),
        addr,
        version: welcomed.version,
        remote_boot_id: welcomed.boot_id,
    };
    Ok(peer::session(
        tls,
        meta,
        &cfg.peer,
        welcomed.max_in_flight,
        shutdown,
    ))
}
