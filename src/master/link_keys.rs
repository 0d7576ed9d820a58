//! Where the master's link finds an edge's keys: its store. The link only
//! names the `KeyLookup` trait; the role that owns the store implements it.
//!
//! A credential authenticates only while its edge location exists (one
//! left behind by an older version never does), and a rotated secret's key
//! only until its grace ends (`secret_rotation_grace_ms`), with a warning
//! sent to the edge and logged here.
//!
//! [`follow_credentials`] closes the live link of an edge whose credential
//! changed (rotated, or deleted with its location), whichever process made
//! the change (`outpost admin rotate-secret`, an import): it reads the
//! store's credential counter every `poll`, and the revisions when it moved.
//! It also closes a link opened with a rotated secret once its grace ends.

use std::collections::HashMap;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::link::handshake::KeySet;
use crate::link::master::KeyLookup;
use crate::link::{CloseReason, Registry};
use crate::secret::LinkKey;
use crate::store::Store;

/// The store's credentials, as link keys.
#[derive(Clone)]
pub struct StoredKeys(pub Store);

impl KeyLookup for StoredKeys {
    async fn link_keys(&self, edge_id: Uuid) -> KeySet {
        match self.0.edge_keys(edge_id, crate::util::unix_ms()).await {
            Ok(Some(keys)) => KeySet {
                current: LinkKey::from_slice(&keys.current),
                previous: keys.previous.and_then(|(key, until)| {
                    let warning = format!(
                        "this edge authenticated with a rotated secret, which stops working at \
                         {until} ms after the Unix epoch; configure its new secret"
                    );
                    Some((LinkKey::from_slice(&key)?, warning))
                }),
            },
            Ok(None) => KeySet::default(),
            Err(e) => {
                // Denying is the safe answer; the edge will retry.
                tracing::error!(%edge_id, error = %e, "cannot read the link key");
                KeySet::default()
            }
        }
    }
}

/// Closes the links that authenticated with a rotated secret whose grace
/// has ended: the edge reconnects, and only its new secret lets it in.
async fn close_expired_graces(store: &Store, registry: &Registry) {
    for info in registry.list().into_iter().filter(|i| i.warning.is_some()) {
        let in_grace = match store.edge_keys(info.edge_id, crate::util::unix_ms()).await {
            Ok(keys) => keys.is_some_and(|k| k.previous.is_some()),
            Err(_) => continue,
        };
        if !in_grace && let Some(peer) = registry.peer(info.edge_id) {
            tracing::warn!(edge = %info.edge_id,
                "the rotated secret's grace is over: closing the link it opened");
            peer.close(CloseReason::CredentialChanged);
        }
    }
}

/// Closes the live link of every edge whose credential changed since the
/// last look (see the module docs), until `stop`. The edge reconnects and
/// must authenticate again: with its new secret, or with the old one during
/// the rotation grace; a deleted location's edge is denied.
pub(super) async fn follow_credentials(
    store: Store,
    registry: Registry,
    poll: Duration,
    stop: CancellationToken,
) {
    let mut version = store.credentials_version().await.ok();
    let mut revs: HashMap<Uuid, i64> = match store.credential_revs().await {
        Ok(list) => list.into_iter().collect(),
        Err(e) => {
            tracing::error!(error = %e, "cannot read the credentials");
            HashMap::new()
        }
    };
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(poll) => {}
        }
        close_expired_graces(&store, &registry).await;
        let now = match store.credentials_version().await {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the credentials' version");
                continue;
            }
        };
        if version == Some(now) {
            continue;
        }
        let Ok(list) = store.credential_revs().await else {
            continue;
        };
        version = Some(now);
        let fresh: HashMap<Uuid, i64> = list.into_iter().collect();
        for (id, rev) in &revs {
            if fresh.get(id) != Some(rev)
                && let Some(peer) = registry.peer(*id)
            {
                let what = if fresh.contains_key(id) {
                    "rotated"
                } else {
                    "deleted"
                };
                tracing::warn!(edge = %id, "the edge's credential was {what}: closing its link");
                peer.close(CloseReason::CredentialChanged);
            }
        }
        revs = fresh;
    }
}
