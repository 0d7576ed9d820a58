//! Edge credentials: the link key derived from each edge location's secret.
//! Not part of the change feed, so no replica holds another edge's key.
//! Written only through [`Write::SetCredential`](super::Write) in a batch.

use uuid::Uuid;

use super::{Store, StoreError, on_reader, sql};

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
}
