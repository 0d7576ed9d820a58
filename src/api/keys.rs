//! `/api/v1/keys`: API keys (admin only). A key's text is in the answer to
//! its creation and nowhere else; the store keeps its hash.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::ApiState;
use super::auth::Caller;
use super::documents::PageQuery;
use super::error::ApiError;
use crate::model::{ApiKey, Doc, KeyRole, Kind};
use crate::store::{Expect, Write};

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct NewKey {
    pub name: String,
    /// The user the key acts for (matched against edge locations' `admins`).
    pub user: String,
    pub role: KeyRole,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(super) struct KeyOut {
    pub id: Uuid,
    pub name: String,
    pub user: String,
    pub role: KeyRole,
    /// Only in the answer to the creation.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

impl KeyOut {
    fn from(k: ApiKey, key: Option<String>) -> Self {
        Self {
            id: k.id,
            name: k.name,
            user: k.user,
            role: k.role,
            key,
        }
    }
}

/// A page of keys, like the document lists.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(super) struct KeyPage {
    pub items: Vec<KeyOut>,
    /// Pass as `after` for the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next: Option<Uuid>,
}

/// List API keys (paged by id; never their text).
#[utoipa::path(get, path = "/api/v1/keys", tag = "keys", params(PageQuery),
    responses((status = 200, body = KeyPage)), security(("bearer" = [])))]
async fn list_keys(
    State(s): State<Arc<ApiState>>,
    caller: Caller,
    Query(q): Query<PageQuery>,
) -> Result<Json<KeyPage>, ApiError> {
    caller.require_admin()?;
    let limit = q.limit();
    let docs = s.store.list(Kind::ApiKey, q.after, limit).await?;
    let next = (docs.len() == limit as usize)
        .then(|| docs.last().map(|d| d.id))
        .flatten();
    let items = docs
        .iter()
        .map(|d| Ok(KeyOut::from(d.parse::<ApiKey>()?, None)))
        .collect::<Result<Vec<_>, ApiError>>()?;
    Ok(Json(KeyPage { items, next }))
}

/// Create an API key (its text is in this answer only).
#[utoipa::path(post, path = "/api/v1/keys", tag = "keys", request_body = NewKey,
    responses((status = 201, body = KeyOut), (status = 422, body = super::error::ErrorBody)),
    security(("bearer" = [])))]
async fn create_key(
    State(s): State<Arc<ApiState>>,
    caller: Caller,
    body: axum::body::Bytes,
) -> Result<(StatusCode, Json<KeyOut>), ApiError> {
    caller.require_admin()?;
    s.require_writable()?;
    let new: NewKey =
        serde_path_to_error::deserialize(&mut serde_json::Deserializer::from_slice(&body))
            .map_err(|e| {
                ApiError::Invalid(vec![crate::model::FieldError {
                    kind: Kind::ApiKey.as_str(),
                    id: Uuid::nil(),
                    field: e.path().to_string(),
                    message: e.into_inner().to_string(),
                }])
            })?;
    let key = ApiKey::generate();
    let doc = ApiKey::new(&new.name, &new.user, new.role, &key);
    doc.validate(&s.validation)?;
    s.store.apply(&[Write::put(&doc, Expect::Absent)]).await?;
    Ok((StatusCode::CREATED, Json(KeyOut::from(doc, Some(key)))))
}

/// Delete an API key (not the caller's own).
#[utoipa::path(delete, path = "/api/v1/keys/{id}", tag = "keys", params(("id" = Uuid, Path)),
    responses((status = 204), (status = 404, body = super::error::ErrorBody), (status = 409, body = super::error::ErrorBody)),
    security(("bearer" = [])))]
async fn delete_key(
    State(s): State<Arc<ApiState>>,
    caller: Caller,
    Path(id): Path<Uuid>,
) -> Result<StatusCode, ApiError> {
    caller.require_admin()?;
    s.require_writable()?;
    if id == caller.key_id {
        return Err(ApiError::Conflict("a key cannot delete itself".into()));
    }
    let doc = match s.store.get(id).await? {
        Some(d) if d.kind == Kind::ApiKey.as_str() => d,
        _ => return Err(ApiError::NotFound(format!("no key with id {id}"))),
    };
    s.store
        .apply(&[Write::Delete {
            id,
            expect: Expect::Rev(doc.rev),
        }])
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

pub(super) fn routes() -> OpenApiRouter<Arc<ApiState>> {
    OpenApiRouter::new()
        .routes(routes!(list_keys, create_key))
        .routes(routes!(delete_key))
}
