//! The preface and the handshake messages.
//!
//! After TLS, each side writes a 10-byte preface: [`MAGIC`](super::MAGIC)
//! then a protocol version (u16, big-endian). The edge writes its own
//! version first; the master reads it and answers with the version the link
//! will speak (see [`negotiate`]), so an edge of the previous version, which
//! insists on an equal version, still connects. Then the edge and the
//! master exchange length-delimited JSON [`Handshake`] messages:
//!
//! ```text
//! edge   -> master  Hello     { edge_id, nonce_e, boot_id, commit, max_in_flight }
//! master -> edge    Challenge { nonce_m }
//! edge   -> master  Proof     { mac = HMAC(K, "outpost link edge proof v1" | ...) }
//! master -> edge    Welcome   { mac = HMAC(K, "outpost link master proof v1" | ...), boot_id, max_in_flight }
//!                 | Denied    { reason?, store_id? }   (both only from version 2)
//! ```
//!
//! A master node of a cluster may instead ask another whether it acts and
//! reaches the cluster's database (`cluster_failsafe`), on a link speaking
//! version 2, with no key and no proof: only the answering node's identity
//! matters, and TLS proves it (the asker verifies its certificate):
//!
//! ```text
//! node   -> node    Probe       { nonce }
//! node   -> node    ProbeAnswer { node_id, state, reaches_database, nonce }   then close
//! ```
//!
//! Both MACs cover the version, the edge id, both nonces and a TLS exporter
//! value, so a recorded message is worthless on another connection.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{MAGIC, PROTOCOL_VERSION};

pub const PREFACE_LEN: usize = 10;

/// Magic and version, the first bytes each side writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Preface {
    pub version: u16,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PrefaceError {
    #[error("not an Outpost link peer (bad magic bytes)")]
    BadMagic,
    #[error(
        "protocol version mismatch: we speak {ours} (and accept one version either side), the peer speaks {theirs}"
    )]
    Version { ours: u16, theirs: u16 },
}

/// The version a link speaks when one side speaks `ours` and the other
/// `theirs`: the lower of the two, if they are at most one apart.
pub fn negotiate(ours: u16, theirs: u16) -> Result<u16, PrefaceError> {
    if ours.abs_diff(theirs) > 1 {
        return Err(PrefaceError::Version { ours, theirs });
    }
    Ok(ours.min(theirs))
}

impl Preface {
    pub fn ours() -> Self {
        Self {
            version: PROTOCOL_VERSION,
        }
    }

    /// A preface announcing `version`: the master's answer once it has
    /// negotiated.
    pub fn speaking(version: u16) -> Self {
        Self { version }
    }

    pub fn encode(&self) -> [u8; PREFACE_LEN] {
        let mut b = [0u8; PREFACE_LEN];
        b[..8].copy_from_slice(&MAGIC);
        b[8..].copy_from_slice(&self.version.to_be_bytes());
        b
    }

    /// Parses a preface; the magic must match, the version is returned.
    pub fn decode(b: &[u8; PREFACE_LEN]) -> Result<Self, PrefaceError> {
        if b[..8] != MAGIC {
            return Err(PrefaceError::BadMagic);
        }
        Ok(Self {
            version: u16::from_be_bytes([b[8], b[9]]),
        })
    }

    /// Checks a peer's preface against ours; answers the version the link
    /// speaks.
    pub fn check(b: &[u8; PREFACE_LEN]) -> Result<u16, PrefaceError> {
        negotiate(PROTOCOL_VERSION, Self::decode(b)?.version)
    }
}

/// 32 random or MAC bytes, hex on the wire.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Bytes32(pub [u8; 32]);

impl std::fmt::Debug for Bytes32 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Bytes32(..)")
    }
}

impl Serialize for Bytes32 {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(self.0))
    }
}

impl<'de> Deserialize<'de> for Bytes32 {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        if s.len() != 64 {
            return Err(serde::de::Error::custom("expected 64 hex digits"));
        }
        // One spelling on the wire, so a message has one encoding.
        if s.bytes().any(|c| c.is_ascii_uppercase()) {
            return Err(serde::de::Error::custom("expected lowercase hex"));
        }
        let mut out = [0u8; 32];
        hex::decode_to_slice(s.as_bytes(), &mut out)
            .map_err(|_| serde::de::Error::custom("expected lowercase hex"))?;
        Ok(Self(out))
    }
}

/// Handshake messages, in the order they are sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "msg", rename_all = "snake_case")]
pub enum Handshake {
    Hello {
        edge_id: Uuid,
        nonce: Bytes32,
        boot_id: Uuid,
        commit: Option<String>,
        max_in_flight: u32,
    },
    Challenge {
        nonce: Bytes32,
    },
    Proof {
        mac: Bytes32,
    },
    Welcome {
        mac: Bytes32,
        boot_id: Uuid,
        max_in_flight: u32,
        /// Something the edge's operator must act on, such as "this edge
        /// authenticated with a rotated secret that stops working at …".
        /// Optional: an older peer neither sends nor expects it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        warning: Option<String>,
    },
    /// Authentication failed. On a link speaking version 2 the master says
    /// why and which store it serves, so that an edge whose location was
    /// deleted can tell that from an outage; a version-1 edge gets a bare
    /// `{"msg":"denied"}`.
    Denied {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<DenyReason>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        store_id: Option<Uuid>,
    },
    /// Version 2 only: this master node does not act (a STANDBY of a
    /// cluster); the acting node's link address. Sent after the edge's
    /// proof, with the master's own proof, so that only a node that knows
    /// the edge's key can send it elsewhere. A version-1 edge gets a bare
    /// `denied` instead.
    Redirect {
        mac: Bytes32,
        node_id: String,
        link: String,
    },
    /// Version 2 only, in place of `hello`: a master node of the same
    /// cluster asks whether this node acts and whether it reaches the
    /// cluster's database (`cluster_failsafe`). Answered with
    /// `probe_answer`, then the connection closes.
    Probe {
        nonce: Bytes32,
    },
    /// The answer to `probe`, echoing its nonce. `state` as
    /// `/api/v1/ha/state` names it (`MASTER`, `STANDBY`, ...).
    ProbeAnswer {
        node_id: String,
        state: String,
        reaches_database: bool,
        nonce: Bytes32,
    },
}

/// Why a master refused an edge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DenyReason {
    /// No edge location with this id (deleted, or never created).
    UnknownEdge,
    /// The proof did not check out: a wrong or rotated secret.
    BadProof,
    /// A reason this build does not know (a newer master).
    #[serde(other)]
    Other,
}

impl std::fmt::Display for DenyReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::UnknownEdge => "no edge location with this id",
            Self::BadProof => "wrong edge proof (a wrong or rotated secret)",
            Self::Other => "a reason this edge does not know",
        })
    }
}
