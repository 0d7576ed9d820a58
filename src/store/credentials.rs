//! Edge credentials: the link key derived from each edge location's secret
//! (and, for a while after a rotation, the previous one). Not part of the
//! change feed, so no replica holds another edge's key. Written only
//! through [`Write::SetCredential`](super::Write) in a batch (or deleted
//! with the location's document); every change bumps one counter
//! ([`Store::credentials_version`]) and is recorded in the credential log,
//! in the same transaction. And the masters' secret for link session
//! tickets.

use uuid::Uuid;

use super::{Store, StoreError, on_reader, on_writer, sql};
use crate::model::Kind;
use crate::secret::TicketSecret;

/// The keys that authenticate an edge location now.
#[derive(Clone, PartialEq, Eq)]
pub struct EdgeKeys {
    pub current: Vec<u8>,
    /// A rotated secret's key, with the end of its grace (Unix ms).
    pub previous: Option<(Vec<u8>, i64)>,
}

impl std::fmt::Debug for EdgeKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EdgeKeys")
            .field("current", &"<redacted>")
            .field("previous_until_ms", &self.previous.as_ref().map(|p| p.1))
            .finish()
    }
}

/// One entry of the credential log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CredentialRecord {
    pub at_ms: i64,
    /// `created`, `rotated (…)` or `deleted`.
    pub action: String,
}

impl Store {
    /// The stored link key of an edge location.
    pub async fn link_key(&self, id: Uuid) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(on_reader!(self, pool => {
            sqlx::query_scalar(sql::GET_CREDENTIAL)
                .bind(id.to_string())
                .fetch_optional(pool)
                .await?
        }))
    }

    /// The keys of an edge location whose document exists: a credential
    /// left without its location (by an older version) authenticates
    /// nothing. The previous key is given only while its grace lasts at
    /// `now_ms`.
    pub async fn edge_keys(&self, id: Uuid, now_ms: i64) -> Result<Option<EdgeKeys>, StoreError> {
        type Row = (Vec<u8>, Option<Vec<u8>>, Option<i64>);
        let row: Option<Row> = on_reader!(self, pool => {
            sqlx::query_as(sql::EDGE_KEYS)
                .bind(id.to_string())
                .bind(Kind::Edge.as_str())
                .fetch_optional(pool)
                .await?
        });
        Ok(row.map(|(current, prev, until)| EdgeKeys {
            current,
            previous: match (prev, until) {
                (Some(k), Some(until)) if until > now_ms => Some((k, until)),
                _ => None,
            },
        }))
    }

    /// The revision of an edge location's credential (`None`: it has none);
    /// a rotation names it in [`Write::SetCredential`](super::Write).
    pub async fn credential_rev(&self, id: Uuid) -> Result<Option<i64>, StoreError> {
        Ok(on_reader!(self, pool => {
            sqlx::query_scalar(sql::CREDENTIAL_REV)
                .bind(id.to_string())
                .fetch_optional(pool)
                .await?
        }))
    }

    /// Every credential's revision, by edge location.
    pub async fn credential_revs(&self) -> Result<Vec<(Uuid, i64)>, StoreError> {
        let rows: Vec<(String, i64)> = on_reader!(self, pool => {
            sqlx::query_as(sql::CREDENTIAL_REVS).fetch_all(pool).await?
        });
        rows.into_iter()
            .map(|(id, rev)| Ok((super::parse_id(&id)?, rev)))
            .collect()
    }

    /// A number that changes whenever any credential is written or deleted,
    /// by any process: one cheap read tells a running master to look again.
    pub async fn credentials_version(&self) -> Result<i64, StoreError> {
        Ok(on_reader!(self, pool => {
            sqlx::query_scalar(sql::CREDENTIALS_VERSION).fetch_one(pool).await?
        }))
    }

    /// The credential log of an edge location, newest first.
    pub async fn credential_log(
        &self,
        id: Uuid,
        limit: u32,
    ) -> Result<Vec<CredentialRecord>, StoreError> {
        let rows: Vec<(i64, String)> = on_reader!(self, pool => {
            sqlx::query_as(sql::CREDENTIAL_LOG)
                .bind(id.to_string())
                .bind(i64::from(limit))
                .fetch_all(pool)
                .await?
        });
        Ok(rows
            .into_iter()
            .map(|(at_ms, action)| CredentialRecord { at_ms, action })
            .collect())
    }

    /// The secret every master on this database derives its TLS ticket
    /// keys from, made on first use. Any node may make it, MASTER or not
    /// (a standby answers handshakes too), so no fence: the first write
    /// wins and the others read the same row.
    pub async fn link_ticket_secret(&self) -> Result<TicketSecret, StoreError> {
        // Read first: a master whose database it may not write (a disk
        // gone read-only) still resumes the sessions of the others.
        let stored: Option<Vec<u8>> = on_reader!(self, pool => {
            sqlx::query_scalar(sql::TICKET_SECRET).fetch_optional(pool).await?
        });
        let stored = match stored {
            Some(stored) => stored,
            None => on_writer!(self, pool => {
                sqlx::query(sql::OFFER_TICKET_SECRET)
                    .bind(TicketSecret::generate().as_bytes().as_slice())
                    .execute(pool)
                    .await?;
                sqlx::query_scalar(sql::TICKET_SECRET).fetch_one(pool).await?
            }),
        };
        TicketSecret::from_slice(&stored).ok_or_else(|| StoreError::CorruptRow {
            table: "link_ticket_secret",
            reason: format!("{} bytes where 32 belong", stored.len()),
        })
    }
}
