//! Wire types of the master–edge link: the preface, the handshake messages,
//! the envelope and its codec, request/response/event bodies and the
//! serialisable [`WireError`]. No sockets here: `link` moves these bytes.
//!
//! **Only `proto` defines wire types**; internal error types never cross the
//! link (they are mapped to [`WireError`] first).

pub mod body;
pub mod error;
pub mod frame;
pub mod handshake;

pub use body::{
    DocChange, EventBody, PendingControl, ReplicaScope, RepoOp, RequestBody, ResponseBody,
    TreeEntry, WireEvent,
};
pub use error::WireError;
pub use frame::{Frame, FrameError, Message, RawFrame};
pub use handshake::{DenyReason, Handshake, PREFACE_LEN, Preface, PrefaceError};

/// The protocol version this build speaks. Bump it on any change of the
/// handshake, the envelope or a body that a peer of the previous version
/// must be protected from (new request kinds alone do not need it: an
/// unknown kind gets a typed error, not a disconnect).
///
/// Both sides accept a peer within one version of their own and speak the
/// lower of the two (see [`handshake::negotiate`]), so a fleet can upgrade
/// its masters first and its edges after (README.md, "Upgrades"). Code
/// that sends something only a newer peer understands checks the
/// negotiated version of the link first.
///
/// Version 2 adds optional fields and request kinds only; a version-1
/// edge keeps working against a version-2 master.
pub const PROTOCOL_VERSION: u16 = 2;

/// Magic bytes that open every link connection (inside TLS).
pub const MAGIC: [u8; 8] = *b"OUTPOST\x4c";

/// Default upper bound of one frame on an established link. A larger frame
/// is a protocol error and closes the link.
pub const DEFAULT_MAX_FRAME: usize = 8 * 1024 * 1024;

/// Upper bound of one handshake message: nothing legitimate comes close.
pub const MAX_HANDSHAKE_FRAME: usize = 4096;
