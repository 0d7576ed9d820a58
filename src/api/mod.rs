//! The web API (axum): JSON under `/api/v1/`, authenticated by
//! `Authorization: Bearer <key>`; `/metrics` (Prometheus text) and
//! `/api/v1/health` need no key; `/api/v1/openapi.json` describes every
//! route, generated from the handlers themselves (utoipa), so a route cannot
//! exist without being described.
//!
//! Served by the master and, for its own site, by an edge.

mod auth;
mod cache;
mod documents;
mod drivers;
mod error;
mod ha;
mod keys;
mod operations;
mod operator;
mod restore;
mod server;
mod standby;
mod sync;
mod ws;

pub use auth::{BootstrapError, Caller, bootstrap_admin};
pub use error::ApiError;
pub use operations::{EdgeEventFeed, EdgeStatusFeed, Ops};
pub use restore::{ControlLoop, RestoreError};
pub use server::HttpLimits;
pub use sync::{EdgeSync, ServedPage, SyncFacts};
pub use ws::LinkNotice;

use std::future::Future;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use axum::Json;
use axum::extract::{MatchedPath, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use serde::Serialize;
use utoipa::OpenApi as _;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use std::time::Duration;

use crate::config::{Config, ConfigError, Role};
use crate::model::ValidationContext;
use crate::store::Store;

/// What every handler can reach.
pub struct ApiState {
    pub store: Store,
    pub role: Role,
    /// Driver names that exist, for validating modules.
    pub validation: ValidationContext,
    /// The runtime and the connected edges, for device operations.
    pub ops: Option<Ops>,
    throttle: crate::util::FailureThrottle,
    /// Held while a document write checks other documents and writes, so
    /// two API writes cannot both pass a check that only one may pass (a
    /// module claimed by systems of two owners).
    write_lock: tokio::sync::Mutex<()>,
    /// The WebSocket clients, closed with the server.
    ws: ws::Hub,
    /// Documents device calls look up (keys, modules, systems, locations).
    cache: cache::ReadCache,
}

impl ApiState {
    pub fn new(store: Store, role: Role, validation: ValidationContext) -> Arc<Self> {
        Self::with_ops(store, role, validation, None)
    }

    pub fn with_ops(
        store: Store,
        role: Role,
        validation: ValidationContext,
        ops: Option<Ops>,
    ) -> Arc<Self> {
        Arc::new(Self {
            role,
            validation,
            ops,
            throttle: crate::util::FailureThrottle::new(auth::KEY_THROTTLE),
            write_lock: tokio::sync::Mutex::new(()),
            ws: ws::Hub::default(),
            cache: cache::ReadCache::new(&store),
            store,
        })
    }

    /// The master is in its boot wait.
    pub fn booting(&self) -> bool {
        self.ops
            .as_ref()
            .and_then(|o| o.control.as_ref())
            .is_some_and(|c| !c.booted())
    }

    /// Documents and keys are written on the master only; an edge holds a
    /// replica.
    pub fn require_writable(&self) -> Result<(), ApiError> {
        match self.role {
            Role::Master => self.require_acting(),
            Role::Edge => Err(ApiError::ReadOnly),
        }
    }

    /// A master node of a cluster writes only while it is MASTER; the
    /// others answer 503 naming the MASTER (until writes are proxied).
    pub fn require_acting(&self) -> Result<(), ApiError> {
        let Some(watch) = self.ops.as_ref().and_then(|o| o.leadership.as_ref()) else {
            return Ok(());
        };
        let now = watch.borrow().clone();
        if now.acting() {
            return Ok(());
        }
        let master = match &now.leader {
            Some(l) => format!(
                "the MASTER is {} ({})",
                l.node_id,
                l.api.as_deref().unwrap_or("no API address advertised")
            ),
            None => "no MASTER is known right now".to_owned(),
        };
        Err(ApiError::Unavailable(format!(
            "this node is {} in the master cluster and does not write; {master}",
            now.state.as_str()
        )))
    }
}

#[derive(utoipa::OpenApi)]
#[openapi(
    info(title = "Outpost API", description = "Device control across many sites: master and edge controllers."),
    tags(
        (name = "edges", description = "Edge locations"),
        (name = "systems", description = "Control systems"),
        (name = "modules", description = "Modules (driver instances)"),
        (name = "keys", description = "API keys"),
        (name = "health", description = "Liveness and metrics"),
        (name = "drivers", description = "Drivers and the driver repository"),
        (name = "live", description = "WebSocket: live status, debug streams, control notices"),
        (name = "cluster", description = "Master cluster: node states and the history of MASTERs"),
    )
)]
struct ApiDoc;

/// The process-wide Prometheus recorder (installed once, shared by every
/// server in the process: tests run several).
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            #[allow(clippy::expect_used, reason = "the buckets are constants, sorted and finite")]
            let recorder = PrometheusBuilder::new()
                .set_buckets(&[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0])
                .expect("static buckets are valid")
                .build_recorder();
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("a metrics recorder was already installed; /metrics shows only this recorder's data");
            }
            describe_metrics();
            handle
        })
        .clone()
}

/// HELP texts of what bounds the process keeps: retention, refused
/// strangers, duplicate edges, full queues.
fn describe_bounds() {
    use metrics::describe_counter;
    describe_counter!(
        "outpost_edge_duplicate_sessions_total",
        "Times a second live process authenticated with an edge's id and the older one stood down"
    );
    describe_counter!(
        "outpost_events_pruned_total",
        "Collected events the master deleted past their retention (age or count)"
    );
    describe_counter!(
        "outpost_link_handshake_failures_total",
        "Link connections that failed before they were authenticated"
    );
    describe_counter!(
        "outpost_link_tls_handshakes_total",
        "Link TLS handshakes completed, by kind: resumed (no certificate signature) or full"
    );
    describe_counter!(
        "outpost_channel_full_total",
        "Times a bounded internal queue was full (channel; what happened: waited or dropped)"
    );
}

/// HELP texts of a master cluster's state.
fn describe_cluster() {
    use metrics::{describe_counter, describe_gauge};
    describe_gauge!(
        "outpost_cluster_state",
        "This master node's cluster state: 0 initializing, 1 standby, 2 master, 3 failed, 4 terminated"
    );
    describe_gauge!(
        "outpost_cluster_term",
        "The fencing term this master node last saw granted to itself"
    );
    describe_counter!(
        "outpost_cluster_promotions_total",
        "Times this master node became MASTER"
    );
    describe_counter!(
        "outpost_cluster_failsafe_total",
        "Times this MASTER extended its deadline without the database because every other node confirmed it cannot reach it either (cluster_failsafe)"
    );
}

/// HELP text for every metric family, the build's identity, and the
/// counters that must show before their first increment.
fn describe_metrics() {
    use metrics::{describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        "outpost_http_requests_total",
        "API requests answered, by route, method and status"
    );
    describe_histogram!(
        "outpost_http_request_seconds",
        metrics::Unit::Seconds,
        "API request latency, by route, method and status"
    );
    describe_counter!(
        "outpost_link_requests_total",
        "Requests over the master-edge link as seen by the caller, by kind and outcome"
    );
    describe_histogram!(
        "outpost_link_request_seconds",
        metrics::Unit::Seconds,
        "Latency of requests over the master-edge link, by kind"
    );
    describe_gauge!(
        "outpost_edges_connected",
        "Edges whose link to this master is up"
    );
    describe_gauge!(
        "outpost_location_controller_master",
        "Per edge location: 1 when the master controls it, 0 when its edge does"
    );
    describe_gauge!(
        "outpost_location_epoch",
        "Per edge location: its control epoch"
    );
    describe_counter!(
        "outpost_control_changes_total",
        "Changes of controller committed through this process, by new controller (to) and reason"
    );
    describe_gauge!(
        "outpost_modules",
        "Modules of this process's runtime, by state"
    );
    describe_gauge!(
        "outpost_replication_lag",
        "Per edge: documents behind at its last pull"
    );
    describe_counter!(
        "outpost_events_collected_total",
        "Edge events the master stored"
    );
    describe_counter!(
        "outpost_events_refused_total",
        "Edge events the master stored marked refused (not produced under an epoch the edge controlled)"
    );
    describe_counter!(
        "outpost_edge_stops_total",
        "Edge links that ended, by how: planned (a graceful stop) or lost"
    );
    describe_counter!(
        "outpost_events_dropped_total",
        "Events an edge's full log dropped"
    );
    describe_gauge!(
        "outpost_events_unsynced",
        "Events in an edge's log not yet acknowledged by the master"
    );
    describe_bounds();
    describe_cluster();
    describe_gauge!("outpost_ws_clients", "Open WebSocket clients");
    describe_counter!(
        "outpost_ws_dropped_total",
        "Messages dropped because a WebSocket client's queue was full"
    );
    describe_gauge!(
        "outpost_build_info",
        "Always 1: the version and commit of this build"
    );
    metrics::gauge!("outpost_build_info", "version" => env!("CARGO_PKG_VERSION"), "commit" => env!("BUILD_COMMIT")).set(1.0);
    metrics::counter!("outpost_ws_dropped_total").increment(0);
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Health {
    /// `booting` during the master's boot wait (reads are served, device
    /// calls on undecided sites answer 503), then `ok`, or `degraded` when
    /// the store does not answer.
    pub status: &'static str,
    /// `master` or `edge`.
    pub role: &'static str,
    pub version: &'static str,
}

/// Liveness: answers without a key.
#[utoipa::path(get, path = "/api/v1/health", tag = "health",
    responses((status = 200, body = Health), (status = 503, body = Health)))]
async fn health(State(s): State<Arc<ApiState>>) -> Response {
    let store_ok = s.store.last_seq().await.is_ok();
    let body = Health {
        status: match (store_ok, s.booting()) {
            (false, _) => "degraded",
            (true, true) => "booting",
            (true, false) => "ok",
        },
        role: match s.role {
            Role::Master => "master",
            Role::Edge => "edge",
        },
        version: env!("CARGO_PKG_VERSION"),
    };
    let status = if store_ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}

/// Prometheus text. Gauges of current state are read at scrape time.
#[utoipa::path(get, path = "/metrics", tag = "health",
    responses((status = 200, description = "Prometheus text exposition", content_type = "text/plain")))]
async fn metrics_text(State(s): State<Arc<ApiState>>) -> String {
    if let Some(ops) = &s.ops {
        if let Some(registry) = &ops.registry {
            metrics::gauge!("outpost_edges_connected").set(registry.len() as f64);
        }
        let mut by_state = [0usize; 4];
        for m in ops.runtime.modules() {
            by_state[m.state as usize] += 1;
        }
        for (state, n) in ["loaded", "running", "stopped", "failed"]
            .iter()
            .zip(by_state)
        {
            metrics::gauge!("outpost_modules", "state" => *state).set(n as f64);
        }
    }
    // One series per location, valued by its controller (0: edge, 1:
    // master): as many series as locations, like the edge-labelled lag.
    if let Ok(states) = s.store.control_states().await {
        for c in states {
            let master = matches!(c.controller, crate::control::Side::Master);
            metrics::gauge!("outpost_location_controller_master", "edge" => c.edge_id.to_string())
                .set(if master { 1.0 } else { 0.0 });
            metrics::gauge!("outpost_location_epoch", "edge" => c.edge_id.to_string())
                .set(c.epoch as f64);
        }
    }
    metrics_handle().render()
}

/// Counts changes of controller committed through this process's store.
async fn count_control_changes(
    mut changes: tokio::sync::broadcast::Receiver<crate::store::ControlRecord>,
    stop: tokio_util::sync::CancellationToken,
) {
    loop {
        let record = tokio::select! {
            () = stop.cancelled() => return,
            r = changes.recv() => r,
        };
        match record {
            Ok(r) => metrics::counter!("outpost_control_changes_total", "to" => r.to.as_str(), "reason" => r.reason.as_str()).increment(1),
            Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                metrics::counter!("outpost_control_changes_total", "to" => "unknown", "reason" => "unknown").increment(n)
            }
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
        }
    }
}

/// Counts requests and their latency by route and status.
async fn track(req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let method = req.method().as_str().to_owned();
    let start = Instant::now();
    let response = next.run(req).await;
    let status = response.status().as_u16().to_string();
    let labels = [("route", route), ("method", method), ("status", status)];
    metrics::counter!("outpost_http_requests_total", &labels).increment(1);
    metrics::histogram!("outpost_http_request_seconds", &labels)
        .record(start.elapsed().as_secs_f64());
    response
}

/// This document: every route of the API with its description.
#[utoipa::path(get, path = "/api/v1/openapi.json", tag = "health",
    responses((status = 200, description = "The OpenAPI 3.1 description of this API")))]
async fn openapi_json(
    axum::Extension(spec): axum::Extension<Arc<utoipa::openapi::OpenApi>>,
) -> Json<utoipa::openapi::OpenApi> {
    Json(spec.as_ref().clone())
}

/// The API's routes and their OpenAPI description.
pub fn router(state: Arc<ApiState>) -> (axum::Router, utoipa::openapi::OpenApi) {
    let (router, mut openapi) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(health))
        .routes(routes!(metrics_text))
        .routes(routes!(openapi_json))
        .merge(documents::routes())
        .merge(keys::routes())
        .merge(operations::routes())
        .merge(restore::routes())
        .merge(operator::routes())
        .merge(ha::routes())
        .merge(drivers::routes())
        .merge(ws::routes())
        .split_for_parts();
    standby::document(&mut openapi);
    openapi
        .components
        .get_or_insert_with(Default::default)
        .add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    let spec = Arc::new(openapi.clone());
    let router = router
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            standby::gate,
        ))
        .layer(axum::Extension(spec))
        .merge(crate::console::router(state.role))
        .fallback(|| async { ApiError::NotFound("no such route".into()) })
        .layer(axum::middleware::from_fn(error::json_errors))
        .layer(axum::middleware::from_fn(track))
        .with_state(state);
    (router, openapi)
}

/// Serves the API on `listener` until `shutdown` completes, then finishes
/// in-flight requests.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: Arc<ApiState>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_with(listener, state, HttpLimits::default(), shutdown).await
}

/// [`serve`] with the server's limits (header timeout, connection caps).
pub async fn serve_with(
    listener: tokio::net::TcpListener,
    state: Arc<ApiState>,
    limits: HttpLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    metrics_handle();
    let sockets = state.ws.stop.clone();
    let (router, _) = router(state);
    server::serve(listener, router, limits, async move {
        shutdown.await;
        // Upgraded connections are no longer the server's: close them
        // ourselves, each with a close frame.
        sockets.cancel();
    })
    .await
}

/// A running web API.
pub struct RunningApi {
    pub addr: std::net::SocketAddr,
    stop: tokio_util::sync::CancellationToken,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
    sockets: ws::Hub,
}

impl RunningApi {
    /// Stops accepting, lets in-flight requests finish within `grace`.
    pub async fn stop(self, grace: Duration) {
        let deadline = tokio::time::Instant::now() + grace;
        self.stop.cancel();
        self.sockets.tasks.close();
        if tokio::time::timeout_at(deadline, self.sockets.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!("WebSocket clients still open after the grace period were dropped");
        }
        match tokio::time::timeout_at(deadline, self.task).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => tracing::error!(error = %e, "the API server failed"),
            Ok(Err(e)) => tracing::error!(error = %e, "the API server task panicked"),
            Err(_) => tracing::warn!(
                grace_ms = grace.as_millis() as u64,
                "API requests still running after the grace period were dropped"
            ),
        }
    }
}

/// Binds `api_addr`. Roles bind before they drive any device, so that a
/// port taken by another process fails the start at once.
pub async fn bind(config: &Config) -> Result<tokio::net::TcpListener, ConfigError> {
    tokio::net::TcpListener::bind(config.api_addr)
        .await
        .map_err(|e| {
            ConfigError::new(
                "api_addr",
                format!("cannot listen on {}: {e}", config.api_addr),
            )
        })
}

/// Serves the API on `api_addr` (see [`start_on`]).
pub async fn start(
    config: &Config,
    store: &crate::store::Store,
    role: Role,
    ops: Ops,
) -> Result<RunningApi, crate::boot::RunError> {
    start_on(bind(config).await?, config, store, role, ops).await
}

/// Serves the API on a bound listener. On a master, first makes sure an
/// admin key exists; an edge only knows the keys replicated from its master.
pub async fn start_on(
    listener: tokio::net::TcpListener,
    config: &Config,
    store: &crate::store::Store,
    role: Role,
    ops: Ops,
) -> Result<RunningApi, crate::boot::RunError> {
    let configured = config.admin_key.as_ref().map(|k| k.expose());
    // An edge only knows the keys replicated from its master.
    // A standby of a master cluster writes nothing: the MASTER bootstraps.
    let standby = ops
        .leadership
        .as_ref()
        .is_some_and(|w| !w.borrow().acting());
    let bootstrap = match role {
        Role::Master if !standby => bootstrap_admin(store, configured, &config.data_dir).await,
        Role::Master | Role::Edge => Ok(None),
    };
    match bootstrap {
        Ok(Some(path)) => tracing::warn!(
            path = %path.display(),
            "generated the first admin API key and wrote it once to this file (mode 0600); keep it safe"
        ),
        Ok(None) => {}
        Err(BootstrapError::Short) => {
            return Err(ConfigError::new("admin_key", BootstrapError::Short.to_string()).into());
        }
        Err(e) => return Err(ConfigError::new("data_dir", crate::util::describe(&e)).into()),
    }
    let validation = match ValidationContext::with_modules_dir(&config.modules_dir) {
        Ok(v) => v,
        Err(e) => {
            tracing::warn!(dir = %config.modules_dir.display(), error = %e, "cannot read the modules directory: module drivers are not checked");
            ValidationContext::default()
        }
    };
    let addr = listener
        .local_addr()
        .map_err(|e| ConfigError::new("api_addr", e.to_string()))?;
    let state = ApiState::with_ops(store.clone(), role, validation, Some(ops));
    let stop = tokio_util::sync::CancellationToken::new();
    let sockets = state.ws.clone();
    tokio::spawn(count_control_changes(
        store.subscribe_control(),
        stop.clone(),
    ));
    let limits = HttpLimits::from_config(config);
    let task = tokio::spawn(serve_with(
        listener,
        state,
        limits,
        stop.clone().cancelled_owned(),
    ));
    Ok(RunningApi {
        addr,
        stop,
        task,
        sockets,
    })
}
