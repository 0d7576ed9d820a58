//! Edge shared secrets: generation, and the link key derived from them;
//! the masters' secret for link session tickets.
//!
//! An edge is configured with its secret (`OUTPOST_EDGE_SECRET`). The master
//! never stores the secret itself: it stores the link key derived from it,
//! in a credentials table that is *not* part of the replicated change feed
//! (every edge holds a replica of the documents, so a key stored there would
//! let one site impersonate another). Both sides prove knowledge of the link
//! key in the handshake; the key never crosses the wire.

use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};
use uuid::Uuid;

/// Random bytes in a new secret (hex-encoded, so 64 characters).
pub const SECRET_BYTES: usize = 32;
const KEY_CONTEXT: &[u8] = b"outpost edge link key v1\0";

/// A secret as shown once to the operator. `Debug` never prints it.
#[derive(Clone, PartialEq, Eq)]
pub struct EdgeSecret(String);

/// Bytes from the operating system's random source.
#[allow(
    clippy::expect_used,
    reason = "the OS random source failing leaves nothing secure to do"
)]
fn random_bytes() -> [u8; SECRET_BYTES] {
    let mut bytes = [0u8; SECRET_BYTES];
    SystemRandom::new()
        .fill(&mut bytes)
        .expect("the system random number generator failed");
    bytes
}

impl EdgeSecret {
    pub fn generate() -> Self {
        Self(hex::encode(random_bytes()))
    }

    /// Wraps a secret given by the operator (configuration, import file).
    pub fn from_string(s: String) -> Result<Self, &'static str> {
        if s.len() < 32 {
            return Err("must be at least 32 characters");
        }
        if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err("must not contain whitespace");
        }
        Ok(Self(s))
    }

    /// The secret text, for the one place it is shown (creation, rotation).
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The key both sides use in the link handshake.
    pub fn link_key(&self, edge_id: Uuid) -> LinkKey {
        let key = hmac::Key::new(hmac::HMAC_SHA256, self.0.as_bytes());
        let mut ctx = hmac::Context::with_key(&key);
        ctx.update(KEY_CONTEXT);
        ctx.update(edge_id.as_bytes());
        let tag = ctx.sign();
        let mut out = [0u8; 32];
        out.copy_from_slice(tag.as_ref());
        LinkKey(out)
    }
}

impl std::fmt::Debug for EdgeSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EdgeSecret(<redacted>)")
    }
}

/// The key derived from an edge's secret and id. `Debug` never prints it.
#[derive(Clone, PartialEq, Eq)]
pub struct LinkKey(pub [u8; 32]);

impl LinkKey {
    pub fn from_slice(b: &[u8]) -> Option<Self> {
        <[u8; 32]>::try_from(b).ok().map(Self)
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// An HMAC-SHA256 key for the handshake.
    pub fn hmac_key(&self) -> hmac::Key {
        hmac::Key::new(hmac::HMAC_SHA256, &self.0)
    }
}

impl std::fmt::Debug for LinkKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LinkKey(<redacted>)")
    }
}

/// The secret from which the masters sharing a database derive their
/// TLS session-ticket keys (`link::tickets`). `Debug` never prints it.
#[derive(Clone, PartialEq, Eq)]
pub struct TicketSecret([u8; 32]);

impl TicketSecret {
    pub fn generate() -> Self {
        Self(random_bytes())
    }

    pub fn from_slice(b: &[u8]) -> Option<Self> {
        <[u8; 32]>::try_from(b).ok().map(Self)
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl std::fmt::Debug for TicketSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TicketSecret(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_long_random_and_redacted() {
        let a = EdgeSecret::generate();
        let b = EdgeSecret::generate();
        assert_eq!(a.expose().len(), SECRET_BYTES * 2);
        assert_ne!(a, b);
        assert!(!format!("{a:?}").contains(a.expose()));
        let key = a.link_key(Uuid::nil());
        assert!(!format!("{key:?}").contains("0"));
    }

    #[test]
    fn link_key_depends_on_secret_and_edge() {
        let s = EdgeSecret::generate();
        let e1 = Uuid::now_v7();
        let e2 = Uuid::now_v7();
        assert_eq!(s.link_key(e1), s.link_key(e1));
        assert_ne!(s.link_key(e1), s.link_key(e2));
        assert_ne!(s.link_key(e1), EdgeSecret::generate().link_key(e1));
    }

    #[test]
    fn short_operator_secrets_are_refused() {
        assert!(EdgeSecret::from_string("short".into()).is_err());
        assert!(EdgeSecret::from_string("x".repeat(40)).is_ok());
        assert!(EdgeSecret::from_string(format!("{} ", "x".repeat(40))).is_err());
    }
}
