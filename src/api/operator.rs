//! What an operator's tools (the web console, `outpost status`) ask the API
//! that the document and device routes do not answer in one call: the
//! version, who a key is, every site at a glance, a module's runtime state,
//! and a driver's public functions.

use std::sync::Arc;
use std::time::UNIX_EPOCH;

use axum::Json;
use axum::extract::{Path, State};
use serde::Serialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::ApiState;
use super::auth::Caller;
use super::error::ApiError;
use super::operations::{module_route, proxy};
use crate::config::Role;
use crate::model::{EdgeLocation, KeyRole, Kind};
use crate::proto::{RequestBody, ResponseBody};

/// The version of this binary and the commit it was built from.
pub(super) const VERSION: &str = env!("CARGO_PKG_VERSION");
pub(super) const COMMIT: &str = env!("BUILD_COMMIT");

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(super) struct VersionOut {
    pub version: &'static str,
    /// The git commit of the build, or `unknown`.
    pub commit: &'static str,
}

/// The version and commit of the answering binary (no key needed, like
/// `/api/v1/health`).
#[utoipa::path(get, path = "/api/v1/version", tag = "health",
    responses((status = 200, body = VersionOut)))]
async fn version() -> Json<VersionOut> {
    Json(VersionOut {
        version: VERSION,
        commit: COMMIT,
    })
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(super) struct WhoAmI {
    pub key_id: Uuid,
    pub user: String,
    pub role: KeyRole,
    /// The role of the answering process: `master` or `edge`.
    pub node: &'static str,
}

/// The calling key's user and role, so a client shows only what the key
/// may do (operators act on the locations whose `admins` list their user).
#[utoipa::path(get, path = "/api/v1/whoami", tag = "keys",
    responses((status = 200, body = WhoAmI), (status = 401)), security(("bearer" = [])))]
async fn whoami(State(s): State<Arc<ApiState>>, caller: Caller) -> Json<WhoAmI> {
    Json(WhoAmI {
        key_id: caller.key_id,
        user: caller.user,
        role: caller.role,
        node: node(s.role),
    })
}

fn node(role: Role) -> &'static str {
    match role {
        Role::Master => "master",
        Role::Edge => "edge",
    }
}

/// One edge location as an operator sees it at a glance.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(super) struct SiteOut {
    #[serde(flatten)]
    pub location: EdgeLocation,
    pub rev: i64,
    /// The edge's link to this master is up.
    pub connected: bool,
    /// When the current link came up (ms since the Unix epoch).
    pub link_since_ms: Option<u64>,
    pub address: Option<String>,
    /// `edge` or `master`; `none` while no controller was ever decided (the
    /// edge never connected and the master has not taken over).
    pub controller: &'static str,
    /// 0 until the first change of controller.
    pub epoch: i64,
    /// When the controller took over (ms since the Unix epoch).
    pub controller_since_ms: Option<i64>,
    /// When the master will take the site over if the edge stays away
    /// (ms since the Unix epoch, as the control clock counts).
    pub takeover_due_ms: Option<i64>,
    /// While the edge is away: `planned` (it stopped gracefully, saying it
    /// would restart; the failover timeout applies all the same) or `lost`.
    pub last_stop: Option<&'static str>,
    /// Since when the site is in maintenance (no takeover), if it is.
    pub maintenance_since_ms: Option<i64>,
    /// When the edge last stopped on purpose (ms, control clock), kept
    /// across restarts of the master.
    pub last_planned_stop_ms: Option<i64>,
    /// When the next restore window opens (ms since the Unix epoch).
    pub next_window_ms: Option<i64>,
    /// Changes of the master's feed the edge's replica has not been
    /// through yet, of any site (with a per-site replica, the other sites'
    /// changes are passed, not sent; 0: current; `null`: the edge has not
    /// pulled since this master started).
    pub replica_lag: Option<i64>,
    /// The feed position the edge's replica has been sent up to.
    pub replica_seq: Option<i64>,
    /// Events in the edge's log not yet acknowledged by the master, as the
    /// edge last reported (`null`: not reported since this master started).
    pub events_unsynced: Option<u64>,
}

/// Every edge location with its link, controller, epoch, failover
/// settings and next restore window, in one answer.
#[utoipa::path(get, path = "/api/v1/sites", tag = "edges",
    responses((status = 200, body = Vec<SiteOut>)), security(("bearer" = [])))]
async fn sites(
    State(s): State<Arc<ApiState>>,
    _caller: Caller,
) -> Result<Json<Vec<SiteOut>>, ApiError> {
    let docs = s.store.list_all(Kind::Edge).await?;
    let states: std::collections::HashMap<Uuid, crate::store::ControlState> = s
        .store
        .control_states()
        .await?
        .into_iter()
        .map(|c| (c.edge_id, c))
        .collect();
    let ops = s.ops.as_ref();
    let registry = ops.and_then(|o| o.registry.as_ref());
    let control = ops.and_then(|o| o.control.as_ref());
    let sync = ops.and_then(|o| o.sync.as_ref());
    let last_seq = match sync {
        Some(_) => s.store.last_seq().await?,
        None => 0,
    };
    let now = chrono::Utc::now();
    let mut out = Vec::with_capacity(docs.len());
    for doc in &docs {
        let location: EdgeLocation = doc.parse()?;
        let info = registry.and_then(|r| r.info(location.id));
        let state = states.get(&location.id);
        let synced = sync.and_then(|f| f.get(location.id));
        out.push(SiteOut {
            replica_lag: synced.map(|f| super::sync::lag(last_seq, f.replica_seq)),
            replica_seq: synced.map(|f| f.replica_seq),
            events_unsynced: synced.and_then(|f| f.unsynced),
            rev: doc.rev,
            connected: info.is_some(),
            link_since_ms: info
                .as_ref()
                .and_then(|i| i.since.duration_since(UNIX_EPOCH).ok())
                .map(|d| d.as_millis() as u64),
            address: info.as_ref().map(|i| i.addr.to_string()),
            // No decision recorded yet: the edge never connected.
            controller: state.map_or("none", |c| c.controller.as_str()),
            epoch: state.map_or(0, |c| c.epoch),
            controller_since_ms: state.map(|c| c.since_ms),
            takeover_due_ms: control.and_then(|c| c.takeover_due(location.id)),
            last_stop: control.and_then(|c| c.last_stop(location.id)),
            maintenance_since_ms: control.and_then(|c| c.in_maintenance(location.id)),
            last_planned_stop_ms: control.and_then(|c| c.last_planned_stop(location.id)),
            next_window_ms: location
                .restore_window()
                .and_then(|w| w.next_open(now))
                .map(|t| t.timestamp_millis()),
            location,
        });
    }
    Ok(Json(out))
}

#[derive(Debug, Default, Serialize, utoipa::ToSchema)]
pub(super) struct ModuleStateOut {
    pub id: Uuid,
    /// The side that runs the module now: `master` or `edge`.
    pub controller: &'static str,
    /// The edge location that owns it (`null`: the master's).
    pub edge_id: Option<Uuid>,
    /// `loaded`, `running`, `stopped` or `failed`; `null` when it is not
    /// known (the side that runs it cannot be asked: see `unknown`).
    pub state: Option<String>,
    /// Why it failed.
    pub failure: Option<String>,
    /// Whether it has a device, and is connected to it.
    pub has_device: Option<bool>,
    pub connected: Option<bool>,
    /// `master` or `edge`: the side whose runtime answered (on a master,
    /// `edge` for a module its edge runs, asked over the link).
    pub answered_by: Option<&'static str>,
    /// Why the state is not known (the edge is not connected, or too old
    /// to answer).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unknown: Option<String>,
}

/// How long the master waits for an edge's answer about a module's state.
const STATE_CALL: std::time::Duration = std::time::Duration::from_secs(5);

/// Where a module runs and its state and device connection: from this
/// process's runtime, or, on a master, asked of the edge that runs it.
#[utoipa::path(get, path = "/api/v1/modules/{id}/state", tag = "modules", params(("id" = Uuid, Path)),
    responses((status = 200, body = ModuleStateOut), (status = 404)), security(("bearer" = [])))]
async fn module_state(
    State(s): State<Arc<ApiState>>,
    _caller: Caller,
    Path(id): Path<Uuid>,
) -> Result<Json<ModuleStateOut>, ApiError> {
    let (_, route) = module_route(&s, id).await?;
    let mut out = ModuleStateOut {
        id,
        controller: route.controller.as_str(),
        edge_id: route.location.as_ref().map(|l| l.id),
        ..Default::default()
    };
    if route.local(s.role) {
        if let Some(info) = s.ops.as_ref().and_then(|o| o.runtime.module_info(id)) {
            out.state = Some(crate::local_ops::state_name(info.state).to_owned());
            out.failure = info.failure;
            out.has_device = Some(info.has_device);
            out.connected = Some(info.connected);
            out.answered_by = Some(node(s.role));
        }
        return Ok(Json(out));
    }
    if s.role != Role::Master {
        out.unknown = Some("it runs at the master: ask the master's API".into());
        return Ok(Json(out));
    }
    let body = RequestBody::ModuleState {
        module: id.to_string(),
    };
    match proxy(&s, &route, body, STATE_CALL).await {
        Ok(ResponseBody::ModuleState {
            state,
            failure,
            has_device,
            connected,
        }) => {
            out.state = Some(state);
            out.failure = failure;
            out.has_device = Some(has_device);
            out.connected = Some(connected);
            out.answered_by = Some("edge");
        }
        Ok(other) => {
            out.unknown = Some(format!(
                "unexpected answer from the edge: {}",
                other_kind(&other)
            ))
        }
        Err(e) => out.unknown = Some(e.to_string()),
    }
    Ok(Json(out))
}

fn other_kind(body: &ResponseBody) -> String {
    serde_json::to_value(body)
        .ok()
        .and_then(|v| v.get("kind").and_then(|k| k.as_str()).map(str::to_owned))
        .unwrap_or_default()
}

#[derive(Debug, Serialize, PartialEq, utoipa::ToSchema)]
pub(super) struct DriverFunction {
    pub name: String,
    /// Parameter names as the driver declares them.
    pub params: Vec<String>,
}

/// The public functions of a driver (`function M.name(a, b)` at the start
/// of a line), without its hooks (`on_…`), for an exec form.
#[utoipa::path(get, path = "/api/v1/drivers/{name}/functions", tag = "drivers", params(("name" = String, Path)),
    responses((status = 200, body = Vec<DriverFunction>), (status = 404)), security(("bearer" = [])))]
async fn driver_functions(
    State(s): State<Arc<ApiState>>,
    _caller: Caller,
    Path(name): Path<String>,
) -> Result<Json<Vec<DriverFunction>>, ApiError> {
    let plain = name.ends_with(".lua")
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        && !name.starts_with('.');
    let ops = s.ops.as_ref();
    let Some(dir) = ops
        .map(|o| o.runtime.config().modules_dir.clone())
        .filter(|_| plain)
    else {
        return Err(ApiError::NotFound(format!("no driver named {name}")));
    };
    let text = tokio::fs::read_to_string(dir.join(&name))
        .await
        .map_err(|_| ApiError::NotFound(format!("no driver named {name}")))?;
    Ok(Json(public_functions(&text)))
}

/// `function M.x(a, b)` lines of a driver's text, hooks left out.
pub(super) fn public_functions(text: &str) -> Vec<DriverFunction> {
    text.lines()
        .filter_map(|line| {
            let rest = line.strip_prefix("function ")?;
            let (_, rest) = rest.split_once('.')?;
            let (name, rest) = rest.split_once('(')?;
            let (params, _) = rest.split_once(')')?;
            let name = name.trim();
            let valid = !name.is_empty()
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                && !name.starts_with("on_");
            valid.then(|| DriverFunction {
                name: name.to_owned(),
                params: params
                    .split(',')
                    .map(str::trim)
                    .filter(|p| !p.is_empty())
                    .map(str::to_owned)
                    .collect(),
            })
        })
        .collect()
}

pub(super) fn routes() -> OpenApiRouter<Arc<ApiState>> {
    OpenApiRouter::new()
        .routes(routes!(version))
        .routes(routes!(whoami))
        .routes(routes!(sites))
        .routes(routes!(module_state))
        .routes(routes!(driver_functions))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_functions_are_read_from_the_driver_text_without_hooks() {
        let text = "local M = {}\nfunction M.on_connect()\nend\nfunction M.power(on)\nend\n\
                    function M.request(text, timeout_ms)\nend\nlocal function helper(x)\nend\n";
        assert_eq!(
            public_functions(text),
            vec![
                DriverFunction {
                    name: "power".into(),
                    params: vec!["on".into()]
                },
                DriverFunction {
                    name: "request".into(),
                    params: vec!["text".into(), "timeout_ms".into()]
                },
            ]
        );
    }
}
