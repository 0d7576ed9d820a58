//! `POST /api/v1/edges/{id}/restore`: hand a site the master holds back to
//! its edge now (the master stops its copies of the site's modules first);
//! `POST /api/v1/edges/{id}/handover`, its mirror: hand a site to the master
//! on purpose, for planned work on the edge (the edge releases first).
//! Operators of the location may do both, as may admins.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::ApiState;
use super::auth::Caller;
use super::error::ApiError;
use crate::model::{EdgeLocation, Kind};
use crate::store::{ControlRecord, StoreError};

/// What the API needs from the master's control loop: hand a site back to
/// its edge now, and say when a lost site's takeover is due. The master
/// implements it; the API only names the trait.
pub trait ControlLoop: Send + Sync + 'static {
    /// Hands a site back to its edge now; the change is recorded with
    /// `by` (the API key's user) as its author.
    fn restore<'a>(
        &'a self,
        edge_id: Uuid,
        by: &'a str,
    ) -> std::pin::Pin<Box<dyn Future<Output = Result<ControlRecord, RestoreError>> + Send + 'a>>;

    /// Hands a site its edge controls to the master now: the edge releases
    /// it, then the master starts. The change is recorded with `by` as its
    /// author when it is committed, so an answer of "not released yet"
    /// keeps it too.
    fn handover<'a>(
        &'a self,
        edge_id: Uuid,
        by: &'a str,
    ) -> std::pin::Pin<Box<dyn Future<Output = Result<ControlRecord, RestoreError>> + Send + 'a>>;

    /// When (control clock, ms) the master takes over a lost site, if due.
    fn takeover_due(&self, edge_id: Uuid) -> Option<i64>;

    /// How an absent edge went away: `planned` or `lost`.
    fn last_stop(&self, _edge_id: Uuid) -> Option<&'static str> {
        None
    }

    /// When (ms) a site's edge last stopped on purpose, if ever recorded.
    fn last_planned_stop(&self, _edge_id: Uuid) -> Option<i64> {
        None
    }

    /// Since when (ms) a site is in maintenance (no takeover), if it is.
    fn in_maintenance(&self, _edge_id: Uuid) -> Option<i64> {
        None
    }

    /// Puts a site in maintenance or takes it out, recorded with `by`;
    /// since when it is in maintenance afterwards.
    fn set_maintenance<'a>(
        &'a self,
        edge_id: Uuid,
        on: bool,
        by: &'a str,
    ) -> std::pin::Pin<Box<dyn Future<Output = Result<Option<i64>, RestoreError>> + Send + 'a>>;

    /// False during the master's boot wait: control of missing sites is
    /// not decided yet.
    fn booted(&self) -> bool {
        true
    }
}

/// Why a restore was not done.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error("no edge location with id {0}")]
    NoSuchLocation(Uuid),
    #[error("the edge already controls location {0}")]
    NotHeld(Uuid),
    #[error(
        "the edge of location {0} is not connected; it takes its site back when it reconnects inside a restore window, or restore it once it is connected"
    )]
    NotConnected(Uuid),
    #[error("the edge did not take control: {0}")]
    Edge(String),
    #[error("the master already controls location {0}")]
    MasterHolds(Uuid),
    #[error(
        "the edge has not confirmed its release yet ({0}); the master runs the site once it does, or once its link is declared dead"
    )]
    NotReleased(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the master is stopping")]
    Stopping,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(super) struct RestoreOut {
    pub edge: Uuid,
    /// `edge` after a restore, `master` after a handover.
    pub controller: &'static str,
    /// The new control epoch.
    pub epoch: i64,
}

/// Hands control of an edge location back to its edge now.
#[utoipa::path(post, path = "/api/v1/edges/{id}/restore", tag = "edges", params(("id" = Uuid, Path)),
    responses((status = 200, body = RestoreOut), (status = 403), (status = 404),
        (status = 409, description = "the edge already controls the site, or is not connected"),
        (status = 502, description = "the edge did not take control")),
    security(("bearer" = [])))]
async fn restore(
    State(s): State<Arc<ApiState>>,
    caller: Caller,
    Path(id): Path<Uuid>,
) -> Result<Json<RestoreOut>, ApiError> {
    change(&s, &caller, id, false).await
}

/// Hands control of an edge location to the master now, for planned work on
/// the edge: the edge stops its modules first, then the master starts its
/// own copies (no overlap). The mirror of `restore`.
#[utoipa::path(post, path = "/api/v1/edges/{id}/handover", tag = "edges", params(("id" = Uuid, Path)),
    responses((status = 200, body = RestoreOut), (status = 403), (status = 404),
        (status = 409, description = "the master already controls the site, or the edge is not connected"),
        (status = 502, description = "the edge has not confirmed its release yet (the master starts once it does)")),
    security(("bearer" = [])))]
async fn handover(
    State(s): State<Arc<ApiState>>,
    caller: Caller,
    Path(id): Path<Uuid>,
) -> Result<Json<RestoreOut>, ApiError> {
    change(&s, &caller, id, true).await
}

/// A restore (`to_master` false) or a handover, with the location's role
/// rules, recorded with the caller's user in the audit log (by the control
/// loop, with the change).
async fn change(
    s: &ApiState,
    caller: &Caller,
    id: Uuid,
    to_master: bool,
) -> Result<Json<RestoreOut>, ApiError> {
    let location: EdgeLocation = match s.store.get(id).await? {
        Some(d) if d.kind == Kind::Edge.as_str() => d.parse()?,
        _ => return Err(ApiError::NotFound(format!("no edge with id {id}"))),
    };
    caller.require_operator(Some(&location))?;
    let control = s
        .ops
        .as_ref()
        .and_then(|o| o.control.as_ref())
        .ok_or_else(|| ApiError::Unavailable("sites change hands on the master".into()))?;
    // The control loop records the caller with the change it commits.
    let result = if to_master {
        control.handover(id, &caller.user).await
    } else {
        control.restore(id, &caller.user).await
    };
    let record = result.map_err(|e| match e {
        RestoreError::NoSuchLocation(_) => ApiError::NotFound(e.to_string()),
        RestoreError::NotHeld(_) | RestoreError::NotConnected(_) | RestoreError::MasterHolds(_) => {
            ApiError::Conflict(e.to_string())
        }
        RestoreError::Edge(_) | RestoreError::NotReleased(_) => ApiError::Upstream(e.to_string()),
        RestoreError::Store(e) => e.into(),
        RestoreError::Stopping => ApiError::Unavailable(e.to_string()),
    })?;
    Ok(Json(RestoreOut {
        edge: id,
        controller: record.to.as_str(),
        epoch: record.epoch,
    }))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub(super) struct MaintenanceIn {
    /// `true`: in maintenance (the master does not take the site over
    /// while its edge is away); `false`: out of it.
    pub on: bool,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(super) struct MaintenanceOut {
    pub edge: Uuid,
    pub maintenance: bool,
    /// Since when (ms since the Unix epoch, control clock).
    pub since_ms: Option<i64>,
}

/// Puts a site in maintenance (no takeover while its edge is serviced) or
/// takes it out; recorded in the site's audit log with the caller.
#[utoipa::path(put, path = "/api/v1/edges/{id}/maintenance", tag = "edges", params(("id" = Uuid, Path)),
    request_body = MaintenanceIn,
    responses((status = 200, body = MaintenanceOut), (status = 403), (status = 404)),
    security(("bearer" = [])))]
async fn maintenance(
    State(s): State<Arc<ApiState>>,
    caller: Caller,
    Path(id): Path<Uuid>,
    Json(body): Json<MaintenanceIn>,
) -> Result<Json<MaintenanceOut>, ApiError> {
    let location: EdgeLocation = match s.store.get(id).await? {
        Some(d) if d.kind == Kind::Edge.as_str() => d.parse()?,
        _ => return Err(ApiError::NotFound(format!("no edge with id {id}"))),
    };
    caller.require_operator(Some(&location))?;
    let control = s
        .ops
        .as_ref()
        .and_then(|o| o.control.as_ref())
        .ok_or_else(|| ApiError::Unavailable("maintenance is set on the master".into()))?;
    let since_ms = control
        .set_maintenance(id, body.on, &caller.user)
        .await
        .map_err(|e| match e {
            RestoreError::NoSuchLocation(_) => ApiError::NotFound(e.to_string()),
            RestoreError::Store(e) => e.into(),
            other => ApiError::Unavailable(other.to_string()),
        })?;
    Ok(Json(MaintenanceOut {
        edge: id,
        maintenance: since_ms.is_some(),
        since_ms,
    }))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(super) struct SiteActionOut {
    pub at_ms: i64,
    /// `maintenance_on` or `maintenance_off` (with the user);
    /// `duplicate_session` (a second live process authenticated with the
    /// location's id and secret, and the older one stood down);
    /// `planned_stop` (the edge stopped gracefully, to restart), and
    /// `lost_stop` (its next link ended without warning).
    pub action: String,
    /// The API key's user who did it.
    pub by: Option<String>,
}

/// A site's audit log of operators' actions that are not changes of
/// controller (those are in `control-log`), newest first.
#[utoipa::path(get, path = "/api/v1/edges/{id}/audit", tag = "edges", params(("id" = Uuid, Path)),
    responses((status = 200, body = Vec<SiteActionOut>)), security(("bearer" = [])))]
async fn audit(
    State(s): State<Arc<ApiState>>,
    _caller: Caller,
    Path(id): Path<Uuid>,
) -> Result<Json<Vec<SiteActionOut>>, ApiError> {
    let actions = s.store.site_actions(id, 1_000).await?;
    Ok(Json(
        actions
            .into_iter()
            .map(|a| SiteActionOut {
                at_ms: a.at_ms,
                action: a.action,
                by: a.by,
            })
            .collect(),
    ))
}

pub(super) fn routes() -> OpenApiRouter<Arc<ApiState>> {
    OpenApiRouter::new()
        .routes(routes!(restore))
        .routes(routes!(handover))
        .routes(routes!(maintenance))
        .routes(routes!(audit))
}
