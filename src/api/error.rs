//! `ApiError`: every way a request fails, as one JSON shape. Internal errors
//! are logged with their cause and answered with a generic message.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::model::{FieldError, Invalid};
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("unauthorized")]
    Unauthorized,
    #[error("forbidden")]
    Forbidden,
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("this request needs an If-Match header with the document's current revision")]
    PreconditionRequired,
    #[error(
        "documents are read-only on an edge (a replica of the master's); write them on the master"
    )]
    ReadOnly,
    #[error("validation failed")]
    Invalid(Vec<FieldError>),
    /// The device side failed (a driver's error, a device's refusal).
    #[error("{0}")]
    Upstream(String),
    /// Whoever should answer cannot be reached now.
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    Timeout(String),
    /// The master is in its boot wait and has not decided who controls
    /// this yet: 503 with `Retry-After`.
    #[error("{0}")]
    Booting(String),
    /// This master node is STANDBY and cannot hand the request to the
    /// acting node (none known, or it does not answer): 503 with
    /// `Retry-After`, as a promotion takes about a lease.
    #[error("{0}")]
    NoLeader(String),
    #[error("internal error")]
    Internal(String),
}

/// Seconds a caller is told to wait while the master boots (edges retry
/// every 3 s, so the boot wait decides within a few seconds), or while a
/// cluster has no acting node (a promotion takes about `lease_ms`, 3 s).
const RETRY_AFTER_BOOT: &str = "2";

/// The JSON body of every error answer.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(super) struct ErrorBody {
    pub error: String,
    /// For validation errors: each field and what is wrong with it.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<FieldProblem>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(super) struct FieldProblem {
    pub field: String,
    pub message: String,
}

impl From<Invalid> for ApiError {
    fn from(e: Invalid) -> Self {
        ApiError::Invalid(e.errors)
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict { .. } | StoreError::EpochConflict { .. } => {
                ApiError::Conflict(e.to_string())
            }
            StoreError::Fenced { .. } => ApiError::Unavailable(e.to_string()),
            StoreError::Database(sqlx::Error::PoolTimedOut | sqlx::Error::Io(_)) => {
                ApiError::Unavailable("the database cannot be reached".into())
            }
            other => ApiError::Internal(crate::util::describe(&other)),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = match &self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::PreconditionRequired => StatusCode::PRECONDITION_REQUIRED,
            ApiError::ReadOnly => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Upstream(_) => StatusCode::BAD_GATEWAY,
            ApiError::Unavailable(_) | ApiError::Booting(_) | ApiError::NoLeader(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ApiError::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
            ApiError::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Internal(cause) => {
                tracing::error!(%cause, "internal error answering an API request");
                StatusCode::INTERNAL_SERVER_ERROR
            }
        };
        let fields = match &self {
            ApiError::Invalid(errors) => errors
                .iter()
                .map(|e| FieldProblem {
                    field: e.field.clone(),
                    message: e.message.clone(),
                })
                .collect(),
            _ => Vec::new(),
        };
        let booting = matches!(self, ApiError::Booting(_) | ApiError::NoLeader(_));
        let body = ErrorBody {
            error: self.to_string(),
            fields,
        };
        let mut response = (status, Json(body)).into_response();
        if booting {
            response.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from_static(RETRY_AFTER_BOOT),
            );
        }
        response
    }
}

/// Largest plain-text error body read back to be re-wrapped as JSON.
const REWRAP_LIMIT: usize = 16 * 1024;

/// Answers axum's own rejections (a body too large, a path id that is not
/// a UUID, a query that does not parse, bad JSON) in the JSON error shape:
/// any error answer that is not JSON is re-wrapped, keeping its status and
/// its text as `error`.
pub(super) async fn json_errors(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let response = next.run(req).await;
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let is_json = response
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if is_json {
        return response;
    }
    let (parts, body) = response.into_parts();
    let text = match axum::body::to_bytes(body, REWRAP_LIMIT).await {
        Ok(bytes) => String::from_utf8_lossy(&bytes).trim().to_owned(),
        Err(_) => String::new(),
    };
    let error = if text.is_empty() {
        status
            .canonical_reason()
            .unwrap_or("request failed")
            .to_lowercase()
    } else {
        text
    };
    let mut out = (
        status,
        Json(ErrorBody {
            error,
            fields: Vec::new(),
        }),
    )
        .into_response();
    // Keep what the rejection said beyond its body (Allow, WWW-Authenticate).
    for (name, value) in &parts.headers {
        if name != axum::http::header::CONTENT_TYPE && name != axum::http::header::CONTENT_LENGTH {
            out.headers_mut().append(name.clone(), value.clone());
        }
    }
    out
}
