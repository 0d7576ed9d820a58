//! Where the master's link finds an edge's key: its store. The link only
//! names the `KeyLookup` trait; the role that owns the store implements it.

use uuid::Uuid;

use crate::link::master::KeyLookup;
use crate::secret::LinkKey;
use crate::store::Store;

/// The store's credentials, as link keys.
#[derive(Clone)]
pub struct StoredKeys(pub Store);

impl KeyLookup for StoredKeys {
    async fn link_key(&self, edge_id: Uuid) -> Option<LinkKey> {
        match self.0.link_key(edge_id).await {
            Ok(Some(k)) => LinkKey::from_slice(&k),
            Ok(None) => None,
            Err(e) => {
                // Denying is the safe answer; the edge will retry.
                tracing::error!(%edge_id, error = %e, "cannot read the link key");
                None
            }
        }
    }
}
