//! Preface exchange and mutual authentication, run once per connection
//! right after TLS (see [`crate::proto::handshake`] for the messages).
//!
//! The edge proves it holds the link key, then the master proves it too;
//! the edge accepts no request before the master's proof checks out. Both
//! MACs are HMAC-SHA256 over a per-direction context string, the protocol
//! version, the edge id, both nonces and the TLS exporter value; they are
//! compared in constant time (`ring::hmac::verify`). The key never crosses
//! the wire. The caller bounds the whole exchange with a deadline.

use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use uuid::Uuid;

use crate::proto::handshake::Bytes32;
use crate::proto::{
    DenyReason, Handshake, MAX_HANDSHAKE_FRAME, PREFACE_LEN, Preface, PrefaceError,
};
use crate::secret::LinkKey;

const EDGE_CONTEXT: &[u8] = b"outpost link edge proof v1\0";
const MASTER_CONTEXT: &[u8] = b"outpost link master proof v1\0";

/// Why a handshake failed. The master records it; the edge receives
/// `Denied`, with the reason on a link speaking version 2.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    #[error("I/O during handshake: {0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Preface(#[from] PrefaceError),
    #[error("malformed handshake message: {0}")]
    Malformed(String),
    #[error("handshake message of {0} bytes is too large")]
    TooLarge(usize),
    #[error("expected {expected}, got another handshake message")]
    Unexpected { expected: &'static str },
    #[error("unknown edge id")]
    UnknownEdge,
    #[error("wrong edge proof (wrong secret, or a replayed message)")]
    BadProof,
    #[error("the client certificate was issued for another edge (it does not name {0})")]
    WrongCertificate(Uuid),
    #[error("denied by the master{}", reason.map(|r| format!(": {r}")).unwrap_or_default())]
    Denied {
        reason: Option<DenyReason>,
        /// The store the refusing master serves.
        store_id: Option<Uuid>,
    },
    #[error("the master failed to prove it knows the edge's key")]
    MasterProof,
    #[error("this master node does not act; the MASTER {node_id} is at {link}")]
    Redirected { node_id: String, link: String },
    #[error("this master node does not act and knows no MASTER yet")]
    NotActing,
    /// Not a failure: the peer was a master node of the cluster asking
    /// whether this node acts, and was answered.
    #[error("answered a cluster node's probe")]
    Probed,
    #[error("the peer answered a probe with another nonce")]
    ProbeNonce,
    #[error("handshake timed out")]
    Timeout,
    #[error("TLS: {0}")]
    Tls(String),
}

/// What the master answers an edge that proved its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// Welcome: this node acts.
    Welcome,
    /// A standby that knows the acting node's link address.
    RedirectTo { node_id: String, link: String },
    /// A standby that knows no acting node: the connection is closed, and
    /// the edge tries its next address.
    Close,
}

/// What the master learns from a successful handshake.
#[derive(Debug, Clone)]
pub struct Accepted {
    pub edge_id: Uuid,
    pub boot_id: Uuid,
    pub commit: Option<String>,
    pub version: u16,
    pub max_in_flight: u32,
    /// The edge proved a key other than its current one (a rotated
    /// secret during its grace): the warning it was sent.
    pub warning: Option<String>,
}

/// What the edge learns from a successful handshake.
#[derive(Debug, Clone)]
pub struct Welcomed {
    pub boot_id: Uuid,
    pub version: u16,
    pub max_in_flight: u32,
    /// What the master asks this edge's operator to act on.
    pub warning: Option<String>,
}

/// What the edge announces.
#[derive(Debug, Clone)]
pub struct Hello {
    pub edge_id: Uuid,
    pub boot_id: Uuid,
    pub commit: Option<String>,
    pub max_in_flight: u32,
}

#[allow(
    clippy::expect_used,
    reason = "the OS random source failing leaves nothing secure to do"
)]
fn nonce() -> [u8; 32] {
    let mut n = [0u8; 32];
    SystemRandom::new()
        .fill(&mut n)
        .expect("the system random number generator failed");
    n
}

fn mac_input(
    context: &[u8],
    version: u16,
    edge_id: Uuid,
    nonce_e: &[u8; 32],
    nonce_m: &[u8; 32],
    exporter: &[u8; 32],
) -> Vec<u8> {
    let mut m = Vec::with_capacity(context.len() + 2 + 16 + 96);
    m.extend_from_slice(context);
    m.extend_from_slice(&version.to_be_bytes());
    m.extend_from_slice(edge_id.as_bytes());
    m.extend_from_slice(nonce_e);
    m.extend_from_slice(nonce_m);
    m.extend_from_slice(exporter);
    m
}

fn sign(key: &hmac::Key, input: &[u8]) -> Bytes32 {
    let mut out = [0u8; 32];
    out.copy_from_slice(hmac::sign(key, input).as_ref());
    Bytes32(out)
}

/// Writes one handshake message (4-byte length, JSON).
pub async fn write_msg<W: AsyncWrite + Unpin>(w: &mut W, msg: &Handshake) -> std::io::Result<()> {
    #[allow(
        clippy::expect_used,
        reason = "handshake messages are plain serde enums"
    )]
    let payload = serde_json::to_vec(msg).expect("handshake messages serialise");
    w.write_all(&crate::proto::frame::with_length_prefix(&payload))
        .await?;
    w.flush().await
}

/// Reads one handshake message. Reads exactly its bytes, so nothing that
/// follows is swallowed.
pub async fn read_msg<R: AsyncRead + Unpin>(r: &mut R) -> Result<Handshake, HandshakeError> {
    let len = r.read_u32().await? as usize;
    if len > MAX_HANDSHAKE_FRAME {
        return Err(HandshakeError::TooLarge(len));
    }
    let mut buf = vec![0u8; len];
    r.read_exact(&mut buf).await?;
    parse_msg(&buf)
}

/// Parses a handshake message payload (the fuzz target's entry point).
pub fn parse_msg(buf: &[u8]) -> Result<Handshake, HandshakeError> {
    serde_json::from_slice(buf).map_err(|e| HandshakeError::Malformed(e.to_string()))
}

/// Edge side: announce our version, learn the one the link speaks.
async fn announce_version<IO: AsyncRead + AsyncWrite + Unpin>(
    io: &mut IO,
) -> Result<u16, HandshakeError> {
    io.write_all(&Preface::ours().encode()).await?;
    io.flush().await?;
    let mut theirs = [0u8; PREFACE_LEN];
    io.read_exact(&mut theirs).await?;
    Ok(Preface::check(&theirs)?)
}

/// Master side: read the edge's version first and answer with the one the
/// link speaks. An edge of the previous version accepts only its own
/// version, so the answer must not be ours. On a mismatch the answer is
/// ours, so that the edge can report both versions.
async fn answer_version<IO: AsyncRead + AsyncWrite + Unpin>(
    io: &mut IO,
) -> Result<u16, HandshakeError> {
    let mut theirs = [0u8; PREFACE_LEN];
    io.read_exact(&mut theirs).await?;
    let negotiated = Preface::check(&theirs);
    let answer = match negotiated {
        Ok(v) => Preface::speaking(v),
        Err(_) => Preface::ours(),
    };
    io.write_all(&answer.encode()).await?;
    io.flush().await?;
    Ok(negotiated?)
}

/// What authenticates an edge now: its current key, and a rotated
/// secret's key during its grace, with the warning to send when that one
/// is used.
#[derive(Debug, Clone, Default)]
pub struct KeySet {
    pub current: Option<LinkKey>,
    pub previous: Option<(LinkKey, String)>,
}

impl From<Option<LinkKey>> for KeySet {
    fn from(current: Option<LinkKey>) -> Self {
        Self {
            current,
            previous: None,
        }
    }
}

/// What a master node of a cluster tells another that probes it
/// (`cluster_failsafe`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeStatus {
    pub node_id: String,
    /// As `/api/v1/ha/state` names it: `MASTER`, `STANDBY`, ...
    pub state: String,
    /// Whether this node reaches the cluster's database now.
    pub reaches_database: bool,
}

/// Answers probes: the master cluster implements it (the link names no
/// cluster). Answering may be a promise: a node that answers
/// `reaches_database: false` lets the asking MASTER keep acting, so
/// `answer` records whatever the node must hold to afterwards, before the
/// answer is sent.
pub trait ProbeResponder: Send + Sync + 'static {
    fn answer(&self) -> ProbeStatus;
}

/// Master side. `lookup` maps an edge id to the keys that authenticate it.
/// A peer that sends `probe` instead of `hello` is answered by `probe`
/// (refused without one, or on a version-1 link) and the handshake ends
/// with [`HandshakeError::Probed`].
pub async fn accept<IO, F, Fut>(
    io: &mut IO,
    exporter: [u8; 32],
    lookup: F,
    max_in_flight: u32,
    boot_id: Uuid,
    (store_id, answer): (Option<Uuid>, Answer),
    probe: Option<&dyn ProbeResponder>,
) -> Result<Accepted, HandshakeError>
where
    IO: AsyncRead + AsyncWrite + Unpin,
    F: FnOnce(Uuid) -> Fut,
    Fut: std::future::Future<Output = KeySet>,
{
    let version = answer_version(io).await?;
    let (edge_id, nonce_e, edge_boot, commit, edge_max) = match read_msg(io).await? {
        Handshake::Hello {
            edge_id,
            nonce,
            boot_id,
            commit,
            max_in_flight,
        } => (edge_id, nonce, boot_id, commit, max_in_flight),
        Handshake::Probe { nonce } => return Err(answer_probe(io, version, probe, nonce).await),
        _ => return Err(HandshakeError::Unexpected { expected: "hello" }),
    };
    let nonce_m = nonce();
    write_msg(
        io,
        &Handshake::Challenge {
            nonce: Bytes32(nonce_m),
        },
    )
    .await?;
    let keys = lookup(edge_id).await;
    let Handshake::Proof { mac } = read_msg(io).await? else {
        return Err(HandshakeError::Unexpected { expected: "proof" });
    };
    // An unknown edge is checked against a random key, so that the work
    // done and the answer sent do not depend on whether the id exists.
    let known = keys.current.is_some();
    let input = mac_input(
        EDGE_CONTEXT,
        version,
        edge_id,
        &nonce_e.0,
        &nonce_m,
        &exporter,
    );
    let current = keys.current.unwrap_or_else(|| LinkKey(nonce())).hmac_key();
    let mut proved = hmac::verify(&current, &input, &mac.0)
        .is_ok()
        .then_some((current, None));
    if proved.is_none()
        && let Some((old, warning)) = keys.previous
    {
        let old = old.hmac_key();
        if hmac::verify(&old, &input, &mac.0).is_ok() {
            proved = Some((old, Some(warning)));
        }
    }
    let Some((hkey, warning)) = proved.filter(|_| known) else {
        // Best effort. From version 2 the peer learns why: an edge whose
        // location is gone stands down instead of running its site (ids are
        // random UUIDs, so this tells a prober nothing it could use).
        let reason = if known {
            DenyReason::BadProof
        } else {
            DenyReason::UnknownEdge
        };
        let denied = match version {
            1 => Handshake::Denied {
                reason: None,
                store_id: None,
            },
            _ => Handshake::Denied {
                reason: Some(reason),
                store_id,
            },
        };
        let _ = write_msg(io, &denied).await;
        return Err(if known {
            HandshakeError::BadProof
        } else {
            HandshakeError::UnknownEdge
        });
    };
    let input = mac_input(
        MASTER_CONTEXT,
        version,
        edge_id,
        &nonce_e.0,
        &nonce_m,
        &exporter,
    );
    if answer != Answer::Welcome {
        return Err(not_acting(io, version, answer, sign(&hkey, &input)).await);
    }
    write_msg(
        io,
        &Handshake::Welcome {
            mac: sign(&hkey, &input),
            boot_id,
            max_in_flight,
            warning: warning.clone(),
        },
    )
    .await?;
    Ok(Accepted {
        edge_id,
        boot_id: edge_boot,
        commit,
        version,
        max_in_flight: edge_max,
        warning,
    })
}

/// Answers a cluster node's probe, echoing its nonce. Only version 2
/// knows the message, and only a cluster member answers it.
async fn answer_probe<IO: AsyncRead + AsyncWrite + Unpin>(
    io: &mut IO,
    version: u16,
    probe: Option<&dyn ProbeResponder>,
    nonce: Bytes32,
) -> HandshakeError {
    let Some(responder) = probe.filter(|_| version >= 2) else {
        return HandshakeError::Unexpected { expected: "hello" };
    };
    // The responder records its promise before the answer leaves.
    let status = responder.answer();
    let msg = Handshake::ProbeAnswer {
        node_id: status.node_id,
        state: status.state,
        reaches_database: status.reaches_database,
        nonce,
    };
    match write_msg(io, &msg).await {
        Ok(()) => HandshakeError::Probed,
        Err(e) => HandshakeError::Io(e),
    }
}

/// Asking side of a probe, after TLS: this node's preface, `probe`, and
/// the answer, which must echo the nonce. The caller checks the answer's
/// node id and bounds the exchange with a deadline.
pub async fn probe<IO>(io: &mut IO) -> Result<ProbeStatus, HandshakeError>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let version = announce_version(io).await?;
    if version < 2 {
        return Err(HandshakeError::Unexpected {
            expected: "a peer speaking version 2 (probes)",
        });
    }
    let sent = Bytes32(nonce());
    write_msg(io, &Handshake::Probe { nonce: sent }).await?;
    match read_msg(io).await? {
        Handshake::ProbeAnswer {
            node_id,
            state,
            reaches_database,
            nonce,
        } => {
            if nonce != sent {
                return Err(HandshakeError::ProbeNonce);
            }
            Ok(ProbeStatus {
                node_id,
                state,
                reaches_database,
            })
        }
        Handshake::Denied { reason, store_id } => Err(HandshakeError::Denied { reason, store_id }),
        _ => Err(HandshakeError::Unexpected {
            expected: "probe_answer",
        }),
    }
}

/// A standby's answer to an edge that proved its key: where the MASTER is
/// (version 2), a bare `denied` (version 1), or nothing.
async fn not_acting<IO: AsyncRead + AsyncWrite + Unpin>(
    io: &mut IO,
    version: u16,
    answer: Answer,
    mac: Bytes32,
) -> HandshakeError {
    let Answer::RedirectTo { node_id, link } = answer else {
        return HandshakeError::NotActing;
    };
    let msg = match version {
        1 => Handshake::Denied {
            reason: None,
            store_id: None,
        },
        _ => Handshake::Redirect {
            mac,
            node_id: node_id.clone(),
            link: link.clone(),
        },
    };
    // Best effort: the edge tries its next address either way.
    let _ = write_msg(io, &msg).await;
    HandshakeError::Redirected { node_id, link }
}

/// Edge side.
pub async fn connect<IO>(
    io: &mut IO,
    exporter: [u8; 32],
    key: &LinkKey,
    hello: &Hello,
) -> Result<Welcomed, HandshakeError>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let version = announce_version(io).await?;
    let nonce_e = nonce();
    write_msg(
        io,
        &Handshake::Hello {
            edge_id: hello.edge_id,
            nonce: Bytes32(nonce_e),
            boot_id: hello.boot_id,
            commit: hello.commit.clone(),
            max_in_flight: hello.max_in_flight,
        },
    )
    .await?;
    let nonce_m = match read_msg(io).await? {
        Handshake::Challenge { nonce } => nonce.0,
        Handshake::Denied { reason, store_id } => {
            return Err(HandshakeError::Denied { reason, store_id });
        }
        _ => {
            return Err(HandshakeError::Unexpected {
                expected: "challenge",
            });
        }
    };
    let hkey = key.hmac_key();
    let input = mac_input(
        EDGE_CONTEXT,
        version,
        hello.edge_id,
        &nonce_e,
        &nonce_m,
        &exporter,
    );
    write_msg(
        io,
        &Handshake::Proof {
            mac: sign(&hkey, &input),
        },
    )
    .await?;
    match read_msg(io).await? {
        Handshake::Welcome {
            mac,
            boot_id,
            max_in_flight,
            warning,
        } => {
            let input = mac_input(
                MASTER_CONTEXT,
                version,
                hello.edge_id,
                &nonce_e,
                &nonce_m,
                &exporter,
            );
            hmac::verify(&hkey, &input, &mac.0).map_err(|_| HandshakeError::MasterProof)?;
            Ok(Welcomed {
                boot_id,
                version,
                max_in_flight,
                warning,
            })
        }
        Handshake::Denied { reason, store_id } => Err(HandshakeError::Denied { reason, store_id }),
        Handshake::Redirect { mac, node_id, link } => {
            let input = mac_input(
                MASTER_CONTEXT,
                version,
                hello.edge_id,
                &nonce_e,
                &nonce_m,
                &exporter,
            );
            hmac::verify(&hkey, &input, &mac.0).map_err(|_| HandshakeError::MasterProof)?;
            Err(HandshakeError::Redirected { node_id, link })
        }
        _ => Err(HandshakeError::Unexpected {
            expected: "welcome",
        }),
    }
}
