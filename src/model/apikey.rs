//! `ApiKey`: a web API key, stored hashed. Keys are documents so they
//! replicate to edges, which then accept the same keys.
//!
//! A key's document id is derived from the key's SHA-256 (its first 16
//! bytes), so authenticating is one lookup by id followed by a
//! constant-time comparison of the full hash. Keys are random 256-bit
//! values, so neither the id nor the hash helps an attacker.

use ring::digest;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::validate::{Checker, Invalid};
use super::{Doc, Kind, ValidationContext};

/// What a key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum KeyRole {
    /// Everything.
    Admin,
    /// Exec, start/stop, restore and reload on the locations whose `admins`
    /// include the key's user, and on the master's systems.
    Operator,
    /// Read only.
    Viewer,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKey {
    pub id: Uuid,
    pub name: String,
    /// The user the key acts for (matched against edge locations' `admins`).
    pub user: String,
    pub role: KeyRole,
    /// Hex SHA-256 of the key.
    pub hash: String,
}

/// A presented key's SHA-256. Computed once per request: its first 16
/// bytes name the key's document, and all of it is compared with the
/// stored hash.
#[derive(Clone, Copy)]
pub struct KeyDigest([u8; 32]);

impl KeyDigest {
    pub fn of(key: &str) -> Self {
        let mut d = [0u8; 32];
        d.copy_from_slice(digest::digest(&digest::SHA256, key.as_bytes()).as_ref());
        KeyDigest(d)
    }

    /// The document id of the key.
    pub fn id(&self) -> Uuid {
        let mut b = [0u8; 16];
        b.copy_from_slice(&self.0[..16]);
        Uuid::from_bytes(b)
    }
}

/// Shortest key accepted (a configured `admin_key` included).
pub const MIN_KEY_LEN: usize = 32;

impl ApiKey {
    pub fn new(name: &str, user: &str, role: KeyRole, key: &str) -> Self {
        Self {
            id: Self::id_for(key),
            name: name.to_owned(),
            user: user.to_owned(),
            role,
            hash: hex::encode(digest::digest(&digest::SHA256, key.as_bytes()).as_ref()),
        }
    }

    /// The document id of the key with this text.
    pub fn id_for(key: &str) -> Uuid {
        KeyDigest::of(key).id()
    }

    /// Does `key` hash to this document's hash? Constant-time.
    pub fn matches(&self, key: &str) -> bool {
        self.matches_digest(&KeyDigest::of(key))
    }

    /// Is `presented` this document's hash? Constant-time.
    pub fn matches_digest(&self, presented: &KeyDigest) -> bool {
        let mut stored = [0u8; 32];
        hex::decode_to_slice(&self.hash, &mut stored).is_ok()
            && stored
                .iter()
                .zip(presented.0.iter())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0
    }

    /// A new random key: 64 hex characters.
    pub fn generate() -> String {
        crate::secret::EdgeSecret::generate().expose().to_owned()
    }
}

impl Doc for ApiKey {
    super::doc_identity!(Kind::ApiKey);

    fn validate(&self, _ctx: &ValidationContext) -> Result<(), Invalid> {
        let mut c = Checker::new(Self::KIND, self.id);
        c.name("name", &self.name);
        c.name("user", &self.user);
        if self.hash.len() != 64 || !self.hash.bytes().all(|b| b.is_ascii_hexdigit()) {
            c.fail("hash", "must be a hex SHA-256");
        }
        c.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_match_only_themselves() {
        let key = ApiKey::generate();
        let doc = ApiKey::new("ops", "alice", KeyRole::Operator, &key);
        assert!(doc.matches(&key));
        assert!(!doc.matches(&ApiKey::generate()));
        assert_eq!(doc.id, ApiKey::id_for(&key));
        assert!(!doc.hash.contains(&key));
        assert!(doc.validate(&ValidationContext::default()).is_ok());
    }
}
