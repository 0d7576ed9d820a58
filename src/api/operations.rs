//! Operations on devices: exec, status, start/stop a system, and what the
//! master knows of each edge location (connection, controller, control log).
//!
//! A module's call goes to whoever runs it: the local runtime, or, on the
//! master, the edge location that controls it, over the link. Every module
//! answer says which side answered (`X-Outpost-Answered-By`) and which
//! controls (`X-Outpost-Controller`). An edge that does not answer is 503
//! naming the location; a call past its deadline is 504; a driver's own
//! failure is 502 with the driver's message.

use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, Uri, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::ApiState;
use super::auth::Caller;
use super::error::ApiError;
use super::ws::LinkNotice;
use crate::config::Role;
use crate::control::Side;
use crate::link::{CallError, Peer, Registry};
use crate::local_ops::exec_err;
use crate::model::{ControlSystem, EdgeLocation, Kind, Module};
use crate::proto::{RequestBody, ResponseBody, WireError};
use crate::runtime::Runtime;
use tokio::sync::{broadcast, watch};

/// Events from edges (debug streams), with the edge they came from.
pub type EdgeEventFeed = broadcast::Sender<(Uuid, crate::proto::EventBody)>;

/// Status changes of edge-run modules, from the edges' event pushes, with
/// the edge they came from (the WebSocket hub follows it).
pub type EdgeStatusFeed = broadcast::Sender<(Uuid, crate::runtime::StatusChange)>;

/// What operations need beyond the store: the local runtime, on a master
/// the connected edges and the feeds the WebSocket hub follows, on an edge
/// the link to the master.
#[derive(Clone)]
pub struct Ops {
    pub runtime: Runtime,
    pub registry: Option<Registry>,
    /// The master's control loop (restore); `None` on an edge.
    pub control: Option<Arc<dyn super::ControlLoop>>,
    /// What runs for documents: a system's start and stop wait for it.
    pub reconciler: Option<crate::reconciler::Reconciler>,
    /// On an edge, its own location: its event log answers for it.
    pub edge_id: Option<Uuid>,
    /// Master: status changes of edge-controlled modules, as the edges'
    /// event pushes deliver them (with the edge they came from).
    pub edge_status: Option<EdgeStatusFeed>,
    /// Master: events from edges (debug streams).
    pub edge_events: Option<EdgeEventFeed>,
    /// Master: edges connecting and disconnecting.
    pub links: Option<broadcast::Sender<LinkNotice>>,
    /// Master: each edge's replica position and unsynced events.
    pub sync: Option<super::SyncFacts>,
    /// Edge: the current link to the master, for calls on modules the
    /// master controls.
    pub master: Option<watch::Receiver<Option<Peer>>>,
    /// Edge: the master API's base URL, for redirects.
    pub master_api: Option<String>,
    /// Edge: answer calls on master-controlled modules with 307 to
    /// `master_api` instead of proxying them over the link. Standby master
    /// node: answer what it hands to the MASTER with 307 to the MASTER's
    /// `advertise_api` instead of proxying it.
    pub redirect_to_master: bool,
    /// Master in a cluster: whether this node acts, and where the acting
    /// node is (`api::standby`). `None`: a master alone, which always acts.
    pub leadership: Option<crate::control::LeadershipWatch>,
    /// Messages a WebSocket client may have queued before the excess is
    /// dropped.
    pub ws_queue: usize,
    /// How long a rotated secret keeps authenticating
    /// (`secret_rotation_grace_ms`).
    pub rotation_grace: Duration,
    /// Master in a cluster: this node's id (`/ha/states`).
    pub node_id: Option<String>,
}

impl Ops {
    /// Operations on `runtime` (and, on a master, the edges of `registry`),
    /// with the settings of `config`; the feeds are left empty.
    pub fn new(
        runtime: Runtime,
        registry: Option<Registry>,
        config: &crate::config::Config,
    ) -> Ops {
        Ops {
            runtime,
            registry,
            edge_status: None,
            edge_events: None,
            links: None,
            sync: None,
            master: None,
            master_api: config.master_api.clone(),
            rotation_grace: Duration::from_millis(config.secret_rotation_grace_ms),
            redirect_to_master: config.redirect_to_master,
            leadership: None,
            ws_queue: config.ws_queue.max(1),
            control: None,
            reconciler: None,
            edge_id: None,
            node_id: None,
        }
    }
}

/// How long a call through the API may take unless the caller says less.
const DEFAULT_DEADLINE: Duration = Duration::from_secs(30);

/// Where a module or system runs.
pub(super) struct Route {
    /// The edge location that owns it (`None`: the master's).
    pub(super) location: Option<Arc<EdgeLocation>>,
    pub(super) controller: Side,
    /// The control epoch of the location as this side knows it (`None`:
    /// no change of controller recorded).
    pub(super) epoch: Option<i64>,
}

impl Route {
    pub(super) fn local(&self, role: Role) -> bool {
        matches!(
            (role, self.controller),
            (Role::Master, Side::Master) | (Role::Edge, Side::Edge)
        )
    }
}

pub(super) fn ops(state: &ApiState) -> Result<&Ops, ApiError> {
    state
        .ops
        .as_ref()
        .ok_or_else(|| ApiError::Unavailable("no module runtime in this process".into()))
}

pub(super) async fn owner_location(
    state: &ApiState,
    edge: Option<Uuid>,
) -> Result<Route, ApiError> {
    let Some(edge) = edge else {
        return Ok(Route {
            location: None,
            controller: Side::Master,
            epoch: None,
        });
    };
    let location = state
        .cache
        .get_parsed::<EdgeLocation>(&state.store, edge)
        .await?;
    // Until a takeover is recorded, an edge location's modules run at the edge.
    let control = state.cache.control_state(&state.store, edge).await?;
    Ok(Route {
        location,
        controller: control.map_or(Side::Edge, |s| s.controller),
        epoch: control.map(|s| s.epoch),
    })
}

pub(super) async fn module_route(
    state: &ApiState,
    id: Uuid,
) -> Result<(Arc<Module>, Route), ApiError> {
    // A standby runs nothing: device calls go to the MASTER (the standby
    // layer hands them on before they get here; this is the backstop).
    state.require_acting()?;
    let Some(module) = state.cache.get_parsed::<Module>(&state.store, id).await? else {
        return Err(ApiError::NotFound(format!("no module with id {id}")));
    };
    let systems = state
        .cache
        .referencing_parsed::<ControlSystem>(&state.store, id)
        .await?;
    let owner = systems.first().and_then(|s| s.edge_id);
    Ok((module, owner_location(state, owner).await?))
}

/// Sends `body` to the edge controlling `route`, or says why it cannot.
pub(super) async fn proxy(
    state: &ApiState,
    route: &Route,
    body: RequestBody,
    deadline: Duration,
) -> Result<ResponseBody, ApiError> {
    proxy_with(state, route, deadline, |peer| async move {
        peer.request(body, deadline).await
    })
    .await
}

/// Whom a call on `route` goes to, in messages.
fn peer_name(state: &ApiState, route: &Route) -> String {
    match (state.role, route.location.as_ref()) {
        (Role::Master, Some(l)) => format!("edge location '{}' ({})", l.name, l.id),
        _ => "the master".to_owned(),
    }
}

/// Runs `call` on the link to the side controlling `route`, or says why it
/// cannot; maps the link's errors to the API's.
async fn proxy_with<T, F, Fut>(
    state: &ApiState,
    route: &Route,
    deadline: Duration,
    call: F,
) -> Result<T, ApiError>
where
    F: FnOnce(Peer) -> Fut,
    Fut: std::future::Future<Output = Result<T, CallError>>,
{
    let Some(peer) = route_peer(state, route)? else {
        return Err(unreachable_peer(state, route).await);
    };
    call(peer).await.map_err(|e| match e {
        CallError::Remote(w) => wire_to_api(w),
        CallError::DeadlineExceeded => ApiError::Timeout(format!(
            "{} did not answer within {} ms",
            peer_name(state, route),
            deadline.as_millis()
        )),
        CallError::Closed => {
            ApiError::Unavailable(format!("the link to {} closed", peer_name(state, route)))
        }
        other => ApiError::Internal(other.to_string()),
    })
}

/// The link to the side controlling `route`, if it is up.
fn route_peer(state: &ApiState, route: &Route) -> Result<Option<Peer>, ApiError> {
    let location = route.location.as_ref();
    let ops = ops(state)?;
    Ok(match (state.role, location, &ops.registry) {
        (Role::Master, Some(l), Some(registry)) => registry.peer(l.id),
        // An edge reaches what the master controls over its own link.
        (Role::Edge, _, _) if route.controller == Side::Master => {
            ops.master.as_ref().and_then(|m| m.borrow().clone())
        }
        _ => None,
    })
}

/// Why a call on `route` cannot go anywhere now.
async fn unreachable_peer(state: &ApiState, route: &Route) -> ApiError {
    let name = peer_name(state, route);
    if state.role == Role::Master && state.booting() {
        return ApiError::Booting(format!(
            "the master is starting and has not decided who controls {name} yet; retry shortly"
        ));
    }
    let since = match route.location.as_ref() {
        Some(l) => match state.store.control_state(l.id).await {
            Ok(state) => state
                .map(|s| format!(" since {} ms after the Unix epoch", s.since_ms))
                .unwrap_or_default(),
            Err(e) => return e.into(),
        },
        None => String::new(),
    };
    ApiError::Unavailable(format!(
        "site controlled by {name}{since}, which is not reachable from here"
    ))
}

pub(super) fn wire_to_api(e: WireError) -> ApiError {
    match e {
        WireError::NotFound { what } => ApiError::NotFound(what),
        WireError::BadRequest { message } => ApiError::BadRequest(message),
        WireError::DeadlineExceeded => {
            ApiError::Timeout("the call did not finish within its deadline".into())
        }
        WireError::Unavailable { message } => ApiError::Unavailable(message),
        WireError::ShuttingDown | WireError::Overloaded => ApiError::Unavailable(e.to_string()),
        WireError::Failed { message } => ApiError::Upstream(message),
        // Control changed hands while the call travelled: the caller may
        // ask again and be routed to the new controller.
        WireError::StaleEpoch { .. } => ApiError::Conflict(e.to_string()),
        other => ApiError::Upstream(other.to_string()),
    }
}

fn side(role: Role) -> &'static str {
    match role {
        Role::Master => "master",
        Role::Edge => "edge",
    }
}

/// Adds the answered-by and controller headers to a module answer.
fn tagged(state: &ApiState, route: &Route, body: impl IntoResponse) -> Response {
    let mut r = body.into_response();
    let local = route.local(state.role);
    let answered = if local {
        side(state.role)
    } else {
        route.controller.as_str()
    };
    r.headers_mut()
        .insert("x-outpost-answered-by", HeaderValue::from_static(answered));
    r.headers_mut().insert(
        "x-outpost-controller",
        HeaderValue::from_static(route.controller.as_str()),
    );
    r
}

/// On an edge configured to redirect (`redirect_to_master`), a call on
/// something the master controls is answered 307 to the same path on the
/// master's API.
fn redirect(state: &ApiState, route: &Route, uri: &Uri) -> Option<Response> {
    let ops = state.ops.as_ref()?;
    if state.role != Role::Edge || route.local(state.role) || !ops.redirect_to_master {
        return None;
    }
    let base = ops.master_api.as_deref()?;
    let mut r = super::standby::temporary_redirect(base, uri);
    r.headers_mut().insert(
        "x-outpost-controller",
        HeaderValue::from_static(route.controller.as_str()),
    );
    Some(r)
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct ExecBody {
    pub method: String,
    /// JSON arguments: an array is passed positionally, anything else as one value.
    #[serde(default)]
    #[schema(value_type = Value)]
    pub args: Value,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct DeadlineQuery {
    /// Give up after this many milliseconds (default 30000).
    pub timeout_ms: Option<u64>,
}

impl DeadlineQuery {
    fn deadline(&self) -> Duration {
        self.timeout_ms
            .map(Duration::from_millis)
            .unwrap_or(DEFAULT_DEADLINE)
            .clamp(Duration::from_millis(1), Duration::from_secs(600))
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(super) struct ExecOut {
    #[schema(value_type = Value)]
    pub result: Value,
}

/// Executes a public function of a module, wherever it runs.
#[utoipa::path(post, path = "/api/v1/modules/{id}/exec", tag = "modules",
    params(("id" = Uuid, Path), DeadlineQuery), request_body = ExecBody,
    responses((status = 200, body = ExecOut), (status = 307, description = "edge with redirect_to_master: the master controls this"), (status = 403), (status = 404), (status = 409, description = "the module exists but does not run here (disabled, in no system, driver failed)"), (status = 502), (status = 503), (status = 504)),
    security(("bearer" = [])))]
async fn exec(
    State(s): State<Arc<ApiState>>,
    caller: Caller,
    Path(id): Path<Uuid>,
    Query(q): Query<DeadlineQuery>,
    uri: Uri,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let (module, route) = module_route(&s, id).await?;
    caller.require_operator(route.location.as_deref())?;
    if let Some(r) = redirect(&s, &route, &uri) {
        return Ok(r);
    }
    // A disabled module may be loaded (stopped) by the reconciler: it
    // still does not run, and says so.
    if route.local(s.role) && (!module.enabled || ops(&s)?.runtime.module_info(id).is_none()) {
        return Err(not_running(&s, &module, &ops(&s)?.runtime).await);
    }
    if !route.local(s.role) {
        return exec_remote(&s, &route, id, &body, q.deadline()).await;
    }
    let call: ExecBody = serde_json::from_slice(&body).map_err(bad_exec_body)?;
    let runtime = &ops(&s)?.runtime;
    let result =
        match tokio::time::timeout(q.deadline(), runtime.exec(id, &call.method, call.args)).await {
            Ok(r) => r.map_err(|e| wire_to_api(exec_err(e)))?,
            Err(_) => {
                return Err(ApiError::Timeout(format!(
                    "no answer within {} ms",
                    q.deadline().as_millis()
                )));
            }
        };
    Ok(tagged(&s, &route, Json(ExecOut { result })))
}

fn bad_exec_body(e: serde_json::Error) -> ApiError {
    ApiError::BadRequest(format!("the body must be {{\"method\", \"args\"}}: {e}"))
}

/// [`ExecBody`] with its arguments left as the client's JSON text.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ExecBodyRaw<'a> {
    #[serde(borrow)]
    method: std::borrow::Cow<'a, str>,
    #[serde(default, borrow)]
    args: Option<&'a serde_json::value::RawValue>,
}

/// An exec on a module the other side runs: the client's arguments go
/// over the link as they came, and the driver's result comes back as the
/// peer wrote it, neither parsed into values nor encoded again here.
async fn exec_remote(
    s: &ApiState,
    route: &Route,
    id: Uuid,
    body: &[u8],
    deadline: Duration,
) -> Result<Response, ApiError> {
    let call: ExecBodyRaw<'_> = serde_json::from_slice(body).map_err(bad_exec_body)?;
    let null = serde_json::value::RawValue::NULL;
    let module = id.to_string();
    let exec = crate::proto::body::ExecRaw {
        module: &module,
        method: &call.method,
        args: call.args.unwrap_or(null),
        // The receiver refuses a call made under a stale epoch.
        epoch: route.epoch.and_then(|e| u64::try_from(e).ok()),
    };
    let value = proxy_with(s, route, deadline, |peer| async move {
        peer.request_value(crate::proto::body::ExecRaw::KIND, &exec, deadline)
            .await
    })
    .await?;
    let mut out = Vec::with_capacity(value.get().len() + 11);
    out.extend_from_slice(b"{\"result\":");
    out.extend_from_slice(value.get().as_bytes());
    out.push(b'}');
    let json = [(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    )];
    Ok(tagged(s, route, (json, out)))
}

/// Every status variable of a module.
#[utoipa::path(get, path = "/api/v1/modules/{id}/status", tag = "modules", params(("id" = Uuid, Path)),
    responses((status = 200, body = Object), (status = 404, description = "no such module"),
        (status = 409, description = "the module exists but does not run here: disabled, in no system, or its driver failed"),
        (status = 503, description = "the side that controls it is not reachable, or the master is booting (Retry-After)")),
    security(("bearer" = [])))]
async fn status(
    State(s): State<Arc<ApiState>>,
    _caller: Caller,
    Path(id): Path<Uuid>,
    uri: Uri,
) -> Result<Response, ApiError> {
    let (module, route) = module_route(&s, id).await?;
    if let Some(r) = redirect(&s, &route, &uri) {
        return Ok(r);
    }
    let values = if route.local(s.role) {
        let runtime = &ops(&s)?.runtime;
        match runtime.status(id) {
            Ok(values) if module.enabled => values,
            _ => return Err(not_running(&s, &module, runtime).await),
        }
    } else {
        match proxy(
            &s,
            &route,
            RequestBody::Status {
                module: id.to_string(),
                key: None,
            },
            DEFAULT_DEADLINE,
        )
        .await?
        {
            ResponseBody::Status { values } => values,
            other => {
                return Err(ApiError::Internal(format!(
                    "unexpected answer to status: {other:?}"
                )));
            }
        }
    };
    Ok(tagged(&s, &route, Json(values)))
}

/// Why a module that exists is not running on this side: 409 naming the
/// reason (disabled, in no system, its driver failed), 503 while the
/// master boots or when it is simply not loaded here yet.
async fn not_running(s: &ApiState, module: &Module, runtime: &Runtime) -> ApiError {
    let name = format!("module '{}' ({})", module.name, module.id);
    if !module.enabled {
        return ApiError::Conflict(format!("{name} is not running: disabled"));
    }
    let systems = s.cache.referencing(&s.store, Kind::System, module.id).await;
    if systems.as_ref().is_ok_and(Vec::is_empty) {
        return ApiError::Conflict(format!("{name} is not running: not in any system"));
    }
    let failure = s
        .ops
        .as_ref()
        .and_then(|o| o.reconciler.as_ref())
        .and_then(|r| r.load_failure(module.id));
    if let Some(why) = failure {
        return ApiError::Conflict(format!("{name} is not running: driver failed: {why}"));
    }
    let driver = runtime.config().modules_dir.join(&module.driver);
    if !driver.is_file() {
        return ApiError::Conflict(format!(
            "{name} is not running: driver failed: '{}' does not exist in modules/",
            module.driver
        ));
    }
    if s.booting() {
        return ApiError::Booting(format!("{name} is not running yet: the master is starting"));
    }
    ApiError::Unavailable(format!("{name} is not loaded on this {} yet", side(s.role)))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(super) struct StatusValue {
    pub key: String,
    /// `null` when the module has no such variable.
    #[schema(value_type = Value)]
    pub value: Value,
}

/// One status variable of a module.
#[utoipa::path(get, path = "/api/v1/modules/{id}/status/{key}", tag = "modules",
    params(("id" = Uuid, Path), ("key" = String, Path)),
    responses((status = 200, body = StatusValue), (status = 404), (status = 409), (status = 503)), security(("bearer" = [])))]
async fn status_key(
    State(s): State<Arc<ApiState>>,
    _caller: Caller,
    Path((id, key)): Path<(Uuid, String)>,
    uri: Uri,
) -> Result<Response, ApiError> {
    let (module, route) = module_route(&s, id).await?;
    if let Some(r) = redirect(&s, &route, &uri) {
        return Ok(r);
    }
    let value = if route.local(s.role) {
        let runtime = &ops(&s)?.runtime;
        if !module.enabled || runtime.module_info(id).is_none() {
            return Err(not_running(&s, &module, runtime).await);
        }
        runtime
            .status_key(id, &key)
            .map_err(|e| wire_to_api(exec_err(e)))?
            .unwrap_or_default()
    } else {
        let body = RequestBody::Status {
            module: id.to_string(),
            key: Some(key.clone()),
        };
        match proxy(&s, &route, body, DEFAULT_DEADLINE).await? {
            ResponseBody::Value { value } => value,
            other => {
                return Err(ApiError::Internal(format!(
                    "unexpected answer to status: {other:?}"
                )));
            }
        }
    };
    Ok(tagged(&s, &route, Json(StatusValue { key, value })))
}

async fn system_route(state: &ApiState, id: Uuid) -> Result<(ControlSystem, Route), ApiError> {
    state.require_acting()?;
    let system: ControlSystem = match state.store.get(id).await? {
        Some(d) if d.kind == Kind::System.as_str() => d.parse()?,
        _ => return Err(ApiError::NotFound(format!("no system with id {id}"))),
    };
    let route = owner_location(state, system.edge_id).await?;
    Ok((system, route))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(super) struct SystemOut {
    pub system: Uuid,
    /// `started` or `stopped`.
    pub state: &'static str,
}

/// Writes the system's `stopped` field through the store (the API's write
/// lock, the revision read), then, where this process runs the system,
/// waits until the reconciler has followed it. An edge-owned system is
/// followed by its controller through the replica.
async fn start_or_stop(
    s: &ApiState,
    caller: &Caller,
    id: Uuid,
    start: bool,
) -> Result<Response, ApiError> {
    let (_, route) = system_route(s, id).await?;
    caller.require_operator(route.location.as_deref())?;
    s.require_writable()?;
    {
        let _guard = s.write_lock.lock().await;
        let (rev, mut system) = match s.store.get(id).await? {
            Some(d) if d.kind == Kind::System.as_str() => (d.rev, d.parse::<ControlSystem>()?),
            _ => return Err(ApiError::NotFound(format!("no system with id {id}"))),
        };
        if system.stopped == start {
            system.stopped = !start;
            s.store
                .apply(&[crate::store::Write::put(
                    &system,
                    crate::store::Expect::Rev(rev),
                )])
                .await?;
        }
    }
    if route.local(s.role)
        && let Some(reconciler) = &ops(s)?.reconciler
    {
        reconciler.settle().await;
    }
    let out = SystemOut {
        system: id,
        state: if start { "started" } else { "stopped" },
    };
    Ok(tagged(s, &route, Json(out)))
}

/// Starts a system: clears its `stopped` field (written at the master like
/// any edit, replicated to edges), so its enabled modules run wherever the
/// site is controlled; answered once the master runs them, for the
/// master's own systems and the sites it holds. Refused on an edge (405: documents are
/// written at the master).
#[utoipa::path(post, path = "/api/v1/systems/{id}/start", tag = "systems", params(("id" = Uuid, Path)),
    responses((status = 200, body = SystemOut), (status = 403), (status = 404), (status = 405), (status = 409), (status = 503)), security(("bearer" = [])))]
async fn start_system(
    State(s): State<Arc<ApiState>>,
    caller: Caller,
    Path(id): Path<Uuid>,
) -> Result<Response, ApiError> {
    start_or_stop(&s, &caller, id, true).await
}

/// Stops a system: sets its `stopped` field (written at the master like any
/// edit, replicated to edges), so its modules stop (their devices are
/// released) unless another running system lists them, and stay stopped
/// across restarts and hand-overs. Answered once the master has stopped
/// them, for the master's own systems and the sites it holds. Refused on an
/// edge (405: documents are written at the master).
#[utoipa::path(post, path = "/api/v1/systems/{id}/stop", tag = "systems", params(("id" = Uuid, Path)),
    responses((status = 200, body = SystemOut), (status = 403), (status = 404), (status = 405), (status = 409), (status = 503)), security(("bearer" = [])))]
async fn stop_system(
    State(s): State<Arc<ApiState>>,
    caller: Caller,
    Path(id): Path<Uuid>,
) -> Result<Response, ApiError> {
    start_or_stop(&s, &caller, id, false).await
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(super) struct EdgeStatus {
    pub id: Uuid,
    pub connected: bool,
    /// When the current link came up (milliseconds since the Unix epoch).
    pub since_ms: Option<u64>,
    pub address: Option<String>,
    pub protocol_version: Option<u16>,
    pub commit: Option<String>,
    /// `edge` or `master`; `none` while no controller was ever decided (the
    /// edge never connected and the master has not taken over).
    pub controller: &'static str,
    /// The control epoch (0: no change of controller recorded yet).
    pub epoch: i64,
    /// Events in the edge's log not yet acknowledged by the master. Answered
    /// by the edge for itself; `null` where it is not known (the master, or
    /// an edge asked about another location).
    pub events_unsynced: Option<i64>,
    /// Events the edge's log dropped because it was full (status changes
    /// first; control changes never), since the log was created. `null`
    /// where not known, as above.
    pub events_dropped: Option<i64>,
    /// What the operator must act on: the edge authenticated with a
    /// rotated secret during its grace (master only).
    pub warning: Option<String>,
    /// The credential audit log, newest first (at most 20 entries):
    /// creation, rotations, deletion. Empty on an edge.
    pub credentials: Vec<CredentialEvent>,
    /// Master: the last time a second live process authenticated with this
    /// location's id and secret (the older one stood down). Absent when it
    /// never happened since the master started.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duplicate_sessions: Option<DuplicateOut>,
    /// Master: link handshakes of this location's edge that the master
    /// refused since it started (a wrong or rotated secret, a certificate
    /// for another edge): why a site is lost although its edge is alive.
    /// Absent when none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refusals: Option<RefusalsOut>,
    /// Master: since when the site is in maintenance (no takeover), if it
    /// is (ms, control clock).
    pub maintenance_since_ms: Option<i64>,
    /// Master, while the edge is away: `planned` (it stopped gracefully to
    /// restart) or `lost`.
    pub last_stop: Option<&'static str>,
    /// Master: when the edge last stopped on purpose (ms, control clock),
    /// kept across restarts of the master.
    pub last_planned_stop_ms: Option<i64>,
}

/// Refused link attempts of one location's edge.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(super) struct RefusalsOut {
    /// How many since the master started.
    pub count: u64,
    /// Why the last one was refused.
    pub last_reason: String,
    /// Where it came from.
    pub last_address: String,
    /// When (milliseconds since the Unix epoch).
    pub last_at_ms: i64,
}

/// One entry of the credential audit log.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(super) struct CredentialEvent {
    /// Milliseconds since the Unix epoch.
    pub at_ms: i64,
    pub action: String,
}

/// Two live processes with one edge id: an operator's mistake to fix.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(super) struct DuplicateOut {
    /// How many times since the master started.
    pub count: u64,
    /// The address of the session that stood down.
    pub stood_down: String,
    /// The address of the session that replaced it.
    pub replaced_by: String,
    /// When (milliseconds since the Unix epoch).
    pub at_ms: u64,
}

/// What the master knows of an edge location right now; on an edge, about
/// itself, with its event log's counts.
#[utoipa::path(get, path = "/api/v1/edges/{id}/status", tag = "edges", params(("id" = Uuid, Path)),
    responses((status = 200, body = EdgeStatus), (status = 404)), security(("bearer" = [])))]
async fn edge_status(
    State(s): State<Arc<ApiState>>,
    _caller: Caller,
    Path(id): Path<Uuid>,
) -> Result<Json<EdgeStatus>, ApiError> {
    let route = owner_location(&s, Some(id)).await?;
    if route.location.is_none() {
        return Err(ApiError::NotFound(format!("no edge with id {id}")));
    }
    let registry = s.ops.as_ref().and_then(|o| o.registry.as_ref());
    let info = registry.and_then(|r| r.info(id));
    let duplicate_sessions = registry
        .and_then(|r| r.duplicate(id))
        .map(|d| DuplicateOut {
            count: d.count,
            stood_down: d.stood_down.to_string(),
            replaced_by: d.replaced_by.to_string(),
            at_ms: d
                .at
                .duration_since(UNIX_EPOCH)
                .map_or(0, |t| t.as_millis() as u64),
        });
    let control_loop = s.ops.as_ref().and_then(|o| o.control.as_ref());
    let refusals = registry.and_then(|r| r.refusals(id)).map(|r| RefusalsOut {
        count: r.count,
        last_reason: r.last_reason,
        last_address: r.last_addr.to_string(),
        last_at_ms: crate::util::unix_ms_of(r.at),
    });
    let control = s.store.control_state(id).await?;
    let epoch = control.map_or(0, |c| c.epoch);
    let own = s.ops.as_ref().filter(|o| o.edge_id == Some(id));
    // An edge asked about itself is connected while its link to the master is up.
    let linked = own
        .and_then(|o| o.master.as_ref())
        .is_some_and(|m| m.borrow().is_some());
    let (events_unsynced, events_dropped) = if own.is_some() {
        let (unsynced, dropped) = s.store.event_counts().await?;
        (Some(unsynced), Some(dropped))
    } else {
        (None, None)
    };
    Ok(Json(EdgeStatus {
        id,
        connected: info.is_some() || linked,
        since_ms: info
            .as_ref()
            .and_then(|i| i.since.duration_since(UNIX_EPOCH).ok())
            .map(|d| d.as_millis() as u64),
        address: info.as_ref().map(|i| i.addr.to_string()),
        protocol_version: info.as_ref().map(|i| i.version),
        commit: info.as_ref().and_then(|i| i.commit.clone()),
        // No decision recorded yet: the edge never connected.
        controller: control.map_or("none", |c| c.controller.as_str()),
        epoch,
        events_unsynced,
        events_dropped,
        warning: info.and_then(|i| i.warning),
        credentials: s
            .store
            .credential_log(id, 20)
            .await?
            .into_iter()
            .map(|r| CredentialEvent {
                at_ms: r.at_ms,
                action: r.action,
            })
            .collect(),
        duplicate_sessions,
        refusals,
        maintenance_since_ms: control_loop.and_then(|c| c.in_maintenance(id)),
        last_stop: control_loop.and_then(|c| c.last_stop(id)),
        last_planned_stop_ms: control_loop.and_then(|c| c.last_planned_stop(id)),
    }))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(super) struct ControlRecordOut {
    pub epoch: i64,
    pub from: Option<&'static str>,
    pub to: &'static str,
    pub reason: &'static str,
    pub at_ms: i64,
    /// Who asked for the change (a restore: the API key's user); absent
    /// for the control loop's own decisions.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct LogQuery {
    /// Records with an epoch below this (paging backwards).
    pub before: Option<i64>,
    /// At most this many (default 100, at most 1000).
    pub limit: Option<u32>,
}

/// Every change of controller of an edge location, newest first.
#[utoipa::path(get, path = "/api/v1/edges/{id}/control-log", tag = "edges", params(("id" = Uuid, Path), LogQuery),
    responses((status = 200, body = Vec<ControlRecordOut>), (status = 404)), security(("bearer" = [])))]
async fn control_log(
    State(s): State<Arc<ApiState>>,
    _caller: Caller,
    Path(id): Path<Uuid>,
    Query(q): Query<LogQuery>,
) -> Result<Json<Vec<ControlRecordOut>>, ApiError> {
    match s.store.get(id).await? {
        Some(d) if d.kind == Kind::Edge.as_str() => {}
        _ => return Err(ApiError::NotFound(format!("no edge with id {id}"))),
    }
    let records = s
        .store
        .control_log(id, q.before, q.limit.unwrap_or(100).clamp(1, 1000))
        .await?;
    Ok(Json(
        records
            .into_iter()
            .map(|r| ControlRecordOut {
                epoch: r.epoch,
                from: r.from.map(Side::as_str),
                to: r.to.as_str(),
                reason: r.reason.as_str(),
                at_ms: r.at_ms,
                by: r.by,
            })
            .collect(),
    ))
}

pub(super) fn routes() -> OpenApiRouter<Arc<ApiState>> {
    OpenApiRouter::new()
        .routes(routes!(exec))
        .routes(routes!(status))
        .routes(routes!(status_key))
        .routes(routes!(start_system))
        .routes(routes!(stop_system))
        .routes(routes!(edge_status))
        .routes(routes!(control_log))
}
