//! Driver operations: a live reload of a driver everywhere it runs, and
//! moving an edge location to another commit of the driver repository.
//! Both are admin calls: a driver or the repository serves every location.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, State};
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::ApiState;
use super::auth::Caller;
use super::error::ApiError;
use super::operations::{ops, wire_to_api};
use crate::config::Role;
use crate::link::CallError;
use crate::link::repository::{MasterRepo, RepoError};
use crate::model::Kind;
use crate::proto::{RepoOp, RequestBody, ResponseBody};
use crate::runtime::{DriverError, RuntimeError};

/// How long an edge may take to reload a driver.
const RELOAD_CALL: Duration = Duration::from_secs(60);
/// How long an edge may take to fetch and write a commit's files.
const SYNC_CALL: Duration = Duration::from_secs(300);

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct ReloadBody {
    /// The driver's new text; without it each side reads its own file in
    /// its modules directory.
    #[serde(default)]
    pub source: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(super) struct ReloadSide {
    /// `master`, `edge` (an edge's own API), or the edge location's id.
    pub side: String,
    pub ok: bool,
    /// Modules now running the new code (this side's runtime only).
    pub updated: Vec<Uuid>,
    /// Why this side did not (entirely) take the new code.
    pub error: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(super) struct ReloadOut {
    pub driver: String,
    /// This process first, then every connected edge (on a master).
    pub sides: Vec<ReloadSide>,
}

/// Reloads a driver live in this process's runtime and, on the master, on
/// every connected edge. Status and device connections survive; a module
/// whose new code fails keeps its old code. Answers each side's outcome.
#[utoipa::path(post, path = "/api/v1/drivers/{name}/reload", tag = "drivers",
    params(("name" = String, Path, description = "the driver's file name, e.g. pjlink.lua")),
    request_body(content = Option<ReloadBody>, description = "optional new text"),
    responses((status = 200, body = ReloadOut), (status = 400), (status = 403), (status = 404)),
    security(("bearer" = [])))]
async fn reload_driver(
    State(s): State<Arc<ApiState>>,
    caller: Caller,
    Path(name): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<ReloadOut>, ApiError> {
    caller.require_admin()?;
    let body: ReloadBody = if body.iter().all(u8::is_ascii_whitespace) {
        ReloadBody::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::BadRequest(format!("the body must be {{\"source\"}}: {e}")))?
    };
    let ops = ops(&s)?;
    let here = match s.role {
        Role::Master => "master",
        Role::Edge => "edge",
    };
    // This side first: a driver that does not compile is refused before
    // any edge is asked.
    let report = ops
        .runtime
        .reload_driver(&name, body.source.clone())
        .await
        .map_err(|e| match e {
            RuntimeError::Driver(DriverError::Io { .. }) => {
                ApiError::NotFound(format!("no driver named '{name}' here"))
            }
            RuntimeError::Driver(d) => ApiError::BadRequest(d.to_string()),
            other => ApiError::Upstream(other.to_string()),
        })?;
    let mut sides = vec![ReloadSide {
        side: here.into(),
        ok: report.failed.is_empty(),
        updated: report.updated,
        error: report
            .failed
            .first()
            .map(|(id, why)| format!("module {id} kept the old code: {why}")),
    }];
    if let Some(registry) = &ops.registry {
        let calls = registry.list().into_iter().filter_map(|info| {
            let peer = registry.peer(info.edge_id)?;
            let body = RequestBody::ReloadDriver {
                name: name.clone(),
                source: body.source.clone(),
            };
            Some(async move {
                let r = peer.request(body, RELOAD_CALL).await;
                (info.edge_id, r)
            })
        });
        for (edge, r) in futures_util::future::join_all(calls).await {
            sides.push(ReloadSide {
                side: edge.to_string(),
                ok: r.is_ok(),
                updated: Vec::new(),
                error: r.err().map(|e| call_message(&e)),
            });
        }
    }
    Ok(Json(ReloadOut {
        driver: name,
        sides,
    }))
}

fn call_message(e: &CallError) -> String {
    match e {
        CallError::Remote(w) => w.to_string(),
        other => other.to_string(),
    }
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub(super) enum RepositoryOp {
    /// The master fetches and moves to its upstream's commit.
    Pull,
    /// The master moves to `commit`.
    Reset { commit: String },
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(super) struct RepositoryOut {
    /// The commit the master's repository and the edge now run.
    pub commit: String,
    /// Drivers the edge reloaded because their files changed.
    pub reloaded: Vec<String>,
}

/// Moves the master's driver repository (`pull` or `reset` to a commit),
/// then has the edge location fetch that commit's files over its link and
/// reload the drivers that changed.
#[utoipa::path(post, path = "/api/v1/edges/{id}/repository", tag = "drivers",
    params(("id" = Uuid, Path)), request_body = RepositoryOp,
    responses((status = 200, body = RepositoryOut), (status = 400), (status = 403), (status = 404),
        (status = 405, description = "on an edge"), (status = 502), (status = 503)),
    security(("bearer" = [])))]
async fn edge_repository(
    State(s): State<Arc<ApiState>>,
    caller: Caller,
    Path(id): Path<Uuid>,
    body: axum::body::Bytes,
) -> Result<Json<RepositoryOut>, ApiError> {
    caller.require_admin()?;
    s.require_writable()?;
    let op: RepositoryOp = serde_json::from_slice(&body).map_err(|e| {
        ApiError::BadRequest(format!(
            "the body must be {{\"op\":\"pull\"}} or {{\"op\":\"reset\",\"commit\":…}}: {e}"
        ))
    })?;
    match s.store.get(id).await? {
        Some(d) if d.kind == Kind::Edge.as_str() => {}
        _ => return Err(ApiError::NotFound(format!("no edge with id {id}"))),
    }
    let ops = ops(&s)?;
    let Some(peer) = ops.registry.as_ref().and_then(|r| r.peer(id)) else {
        return Err(ApiError::Unavailable(format!(
            "edge location {id} is not connected; its repository was not moved"
        )));
    };
    let repo = MasterRepo::new(ops.runtime.config().modules_dir.clone());
    let moved = match &op {
        RepositoryOp::Pull => repo.pull().await,
        RepositoryOp::Reset { commit } => repo.reset(commit).await,
    };
    let commit = moved.map_err(|e| match e {
        RepoError::BadCommit(c) => {
            ApiError::BadRequest(format!("no commit '{c}' in the repository"))
        }
        other => ApiError::Upstream(crate::util::describe(&other)),
    })?;
    tracing::info!(edge = %id, %commit, op = ?op, "driver repository moved; syncing the edge");
    let answer = peer
        .request(
            RequestBody::Repository {
                op: RepoOp::Sync {
                    commit: commit.clone(),
                },
            },
            SYNC_CALL,
        )
        .await
        .map_err(|e| match e {
            CallError::Remote(w) => wire_to_api(w),
            CallError::DeadlineExceeded => {
                ApiError::Timeout(format!("the edge did not finish syncing {commit} in time"))
            }
            other => ApiError::Unavailable(format!(
                "the master is at {commit}, but the edge did not sync: {other}"
            )),
        })?;
    let ResponseBody::Commit { commit, changed } = answer else {
        return Err(ApiError::Internal(format!(
            "unexpected answer to a repository sync: {answer:?}"
        )));
    };
    if let Some(registry) = &ops.registry {
        registry.set_commit(id, commit.clone());
    }
    Ok(Json(RepositoryOut {
        commit,
        reloaded: changed,
    }))
}

pub(super) fn routes() -> OpenApiRouter<Arc<ApiState>> {
    OpenApiRouter::new()
        .routes(routes!(reload_driver))
        .routes(routes!(edge_repository))
}
