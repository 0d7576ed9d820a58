//! The WebSocket `/api/v1/ws`: live module status, debug streams, and
//! control and connection notices, pushed to the client as JSON messages.
//!
//! Authenticated like every route (`Authorization: Bearer <key>`); browsers
//! cannot set that header on a WebSocket, so `?key=<key>` is accepted too.
//!
//! The client sends
//! `{"op":"subscribe","id":1,"topic":"status","module":UUID,"key":"power"}`
//! (`key` optional: every variable), `{"op":"subscribe","id":2,"topic":"debug","module":UUID}`
//! (operators of the module's location), `{"op":"subscribe","id":3,"topic":"control"}`
//! and `{"op":"unsubscribe","id":1}`. Every answer carries the
//! subscription's `id` and a `type`: `subscribed`, `status` (first the
//! current value or values, then each change), `debug`, `control` (first
//! the current controller of every location, marked `"current": true`, then
//! each change of controller), `link` (an edge, or on an edge the master, connected or
//! lost), `unsubscribed`, `error`. On a master, `{"op":"subscribe","id":4,"topic":"sync"}`
//! sends `feed` (the change feed's `last_seq`, first and after each
//! commit) and `sync` (an edge's `replica_seq` and `unsynced` events: first
//! every edge known, marked `"current": true`, then each change); an
//! edge's replica lag is `last_seq - replica_seq`.
//!
//! Where the data comes from: modules this process runs, its runtime; on a
//! master, modules an edge runs, the edge's event pushes (status) and a
//! debug subscription over the link (debug); control changes, the store's
//! broadcast; connections, the master's link events or the edge's link.
//!
//! A slow client never slows the engine: each client has a bounded queue
//! (`ws_queue`), producers never wait on it, and what does not fit is
//! dropped and counted; the client then receives `{"type":"dropped","count":N}`.
//! A graceful stop closes every socket with 1001 (going away).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade, close_code};
use axum::extract::{ConnectInfo, FromRequestParts, State};
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use futures_util::{SinkExt, StreamExt};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::{Notify, broadcast, mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::ApiState;
use super::auth::{Caller, authenticate};
use super::error::ApiError;
use super::operations::{module_route, proxy, wire_to_api};
use crate::config::Role;
use crate::link::CallError;
use crate::link::MasterLinkEvent;
use crate::proto::{EventBody, RequestBody, ResponseBody};
use crate::util::Unpoisoned;

/// The sockets of one API server: stopped together, waited for together.
#[derive(Clone, Default)]
pub(super) struct Hub {
    pub(super) stop: CancellationToken,
    pub(super) tasks: TaskTracker,
    /// WebSocket subscribers per edge-run module's debug stream: the link
    /// subscription is cancelled when the last one leaves.
    debug_refs: Arc<Mutex<HashMap<(Uuid, Uuid), usize>>>,
}

/// An edge connected to or left the master.
#[derive(Debug, Clone, Serialize)]
pub struct LinkNotice {
    pub edge_id: Uuid,
    pub connected: bool,
    /// Milliseconds since the Unix epoch.
    pub at_ms: u64,
}

impl LinkNotice {
    /// The notice for a link-up or link-lost event; `None` for others.
    pub fn from_event(ev: &MasterLinkEvent) -> Option<LinkNotice> {
        let (edge_id, connected, at) = match ev {
            MasterLinkEvent::LinkUp { info, at, .. } => (info.edge_id, true, at),
            MasterLinkEvent::LinkLost { edge_id, at, .. } => (*edge_id, false, at),
            _ => return None,
        };
        let at_ms = at
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        Some(LinkNotice {
            edge_id,
            connected,
            at_ms,
        })
    }
}

/// Messages waiting for one client before the excess is dropped, when no
/// configuration says otherwise.
const DEFAULT_QUEUE: usize = 256;
/// How long a link request made for a subscription may take.
const LINK_CALL: Duration = Duration::from_secs(10);
/// How often a debug subscription whose edge link was lost looks for the
/// next one.
const RELINK_POLL: Duration = Duration::from_millis(250);

#[derive(Debug, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
enum ClientMsg {
    Subscribe {
        id: u64,
        topic: Topic,
        #[serde(default)]
        module: Option<Uuid>,
        #[serde(default)]
        key: Option<String>,
    },
    Unsubscribe {
        id: u64,
    },
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Topic {
    Status,
    Debug,
    Control,
    Sync,
}

/// The client's queue, as producers see it: they never wait.
#[derive(Clone)]
struct Outbox {
    tx: mpsc::Sender<String>,
    dropped: Arc<AtomicU64>,
    wake: Arc<Notify>,
}

impl Outbox {
    /// Queues `msg`, or counts it dropped. False once the client is gone.
    fn push(&self, msg: Value) -> bool {
        match self.tx.try_send(msg.to_string()) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.lost(1);
                true
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }

    fn lost(&self, n: u64) {
        self.dropped.fetch_add(n, Ordering::Relaxed);
        self.wake.notify_one();
    }

    fn error(&self, id: u64, e: impl std::fmt::Display) {
        self.push(json!({"type": "error", "id": id, "error": e.to_string()}));
    }
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct WsQuery {
    /// The API key, for clients that cannot set the `Authorization` header
    /// (browsers). Prefer the header: URLs end up in proxies' logs.
    pub key: Option<String>,
}

/// Live status, debug streams and control notices (WebSocket; see the
/// module documentation for the messages).
#[utoipa::path(get, path = "/api/v1/ws", tag = "live", params(WsQuery),
    responses((status = 101, description = "Switching to the WebSocket protocol"), (status = 400), (status = 401)),
    security(("bearer" = [])))]
async fn ws(State(s): State<Arc<ApiState>>, mut parts: Parts) -> Result<Response, ApiError> {
    let ip = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
        .unwrap_or(IpAddr::from([0, 0, 0, 0]));
    let header_key = parts
        .headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(|k| k.trim().to_owned());
    let query_key = axum::extract::Query::<WsQuery>::try_from_uri(&parts.uri)
        .ok()
        .and_then(|q| q.0.key);
    let caller = authenticate(&s, ip, header_key.or(query_key).as_deref()).await?;
    let upgrade = match WebSocketUpgrade::from_request_parts(&mut parts, &s).await {
        Ok(u) => u,
        Err(rejection) => return Ok(rejection.into_response()),
    };
    let hub = s.ws.clone();
    Ok(upgrade.on_upgrade(move |socket| {
        let task = hub.tasks.track_future(run(socket, s, caller));
        async move {
            task.await;
        }
    }))
}

/// Subscriptions one client may hold at once: each is a task and a feed.
pub(crate) const MAX_SUBSCRIPTIONS: usize = 64;
/// How often the server pings a client.
const PING_EVERY: Duration = Duration::from_secs(30);
/// A client that sends nothing, pongs included, for this long is closed.
const IDLE_AFTER: Duration = Duration::from_secs(90);

/// One client: reads its requests, writes its queue, until it leaves or
/// the server stops (then with a 1001 close frame).
async fn run(socket: WebSocket, state: Arc<ApiState>, caller: Caller) {
    let queue = state.ops.as_ref().map_or(DEFAULT_QUEUE, |o| o.ws_queue);
    let (tx, mut rx) = mpsc::channel::<String>(queue);
    let out = Outbox {
        tx,
        dropped: Arc::new(AtomicU64::new(0)),
        wake: Arc::new(Notify::new()),
    };
    let conn = state.ws.stop.child_token();
    let mut subs: HashMap<u64, CancellationToken> = HashMap::new();
    let (mut sink, mut stream) = socket.split();
    metrics::gauge!("outpost_ws_clients").increment(1.0);
    let mut ping = tokio::time::interval(PING_EVERY);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut heard = tokio::time::Instant::now();
    loop {
        tokio::select! {
            _ = ping.tick() => {
                // A client that answers nothing (not even a pong) for this
                // long is gone or stuck: its subscriptions stop.
                if heard.elapsed() > IDLE_AFTER {
                    let close = Message::Close(Some(CloseFrame {
                        code: close_code::POLICY,
                        reason: "no answer to pings".into(),
                    }));
                    let _ = tokio::time::timeout(Duration::from_secs(1), sink.send(close)).await;
                    break;
                }
                if sink.send(Message::Ping(Vec::new().into())).await.is_err() {
                    break;
                }
            }
            () = conn.cancelled() => {
                let close = Message::Close(Some(CloseFrame {
                    code: close_code::AWAY,
                    reason: "the server is shutting down".into(),
                }));
                let _ = tokio::time::timeout(Duration::from_secs(1), sink.send(close)).await;
                break;
            }
            msg = stream.next() => {
                heard = tokio::time::Instant::now();
                match msg {
                Some(Ok(Message::Text(text))) => {
                    handle(&state, &caller, &out, &conn, &mut subs, text.as_str());
                }
                Some(Ok(Message::Binary(_))) => out.error(0, "messages are JSON text"),
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                Some(Ok(_)) => {} // ping/pong: answered by the library
                }
            }
            Some(text) = rx.recv() => {
                if flush_dropped(&out, &mut sink).await.is_err()
                    || sink.send(Message::Text(text.into())).await.is_err()
                {
                    break;
                }
            }
            () = out.wake.notified() => {
                if flush_dropped(&out, &mut sink).await.is_err() {
                    break;
                }
            }
        }
    }
    conn.cancel();
    metrics::gauge!("outpost_ws_clients").decrement(1.0);
}

async fn flush_dropped(
    out: &Outbox,
    sink: &mut futures_util::stream::SplitSink<WebSocket, Message>,
) -> Result<(), axum::Error> {
    let n = out.dropped.swap(0, Ordering::Relaxed);
    if n == 0 {
        return Ok(());
    }
    metrics::counter!("outpost_ws_dropped_total").increment(n);
    sink.send(Message::Text(
        json!({"type": "dropped", "count": n}).to_string().into(),
    ))
    .await
}

fn handle(
    state: &Arc<ApiState>,
    caller: &Caller,
    out: &Outbox,
    conn: &CancellationToken,
    subs: &mut HashMap<u64, CancellationToken>,
    text: &str,
) {
    let msg: ClientMsg = match serde_json::from_str(text) {
        Ok(m) => m,
        Err(e) => {
            out.error(0, format!("cannot read the message: {e}"));
            return;
        }
    };
    match msg {
        ClientMsg::Unsubscribe { id } => match subs.remove(&id) {
            Some(token) => {
                token.cancel();
                out.push(json!({"type": "unsubscribed", "id": id}));
            }
            None => out.error(id, "no such subscription"),
        },
        ClientMsg::Subscribe {
            id,
            topic,
            module,
            key,
        } => {
            subs.retain(|_, t| !t.is_cancelled());
            if subs.contains_key(&id) {
                out.error(id, "a subscription with this id exists");
                return;
            }
            if subs.len() >= MAX_SUBSCRIPTIONS {
                out.error(
                    id,
                    format!(
                        "too many subscriptions on one connection (at most {MAX_SUBSCRIPTIONS})"
                    ),
                );
                return;
            }
            let token = conn.child_token();
            subs.insert(id, token.clone());
            let sub = Sub {
                id,
                state: state.clone(),
                caller: caller.clone(),
                out: out.clone(),
                token: token.clone(),
            };
            tokio::spawn(async move {
                // Device traffic streams from the node that drives devices.
                let device = matches!(topic, Topic::Status | Topic::Debug);
                let elsewhere = device.then(|| super::standby::devices_elsewhere(&sub.state));
                let result = match (topic, module, elsewhere.flatten()) {
                    (_, _, Some(why)) => Err(ApiError::NoLeader(why)),
                    (Topic::Status, Some(m), None) => sub.status(m, key).await,
                    (Topic::Debug, Some(m), None) => sub.debug(m).await,
                    (Topic::Control, _, None) => sub.control().await,
                    (Topic::Sync, _, None) => sub.sync().await,
                    (_, None, None) => {
                        Err(ApiError::BadRequest("this topic needs a module".into()))
                    }
                };
                if let Err(e) = result
                    && !sub.token.is_cancelled()
                {
                    sub.out.error(sub.id, api_message(&e));
                }
                token.cancel();
            });
        }
    }
}

/// The text a client sees for an API error (internal causes are logged).
fn api_message(e: &ApiError) -> String {
    match e {
        ApiError::Internal(cause) => {
            tracing::error!(%cause, "WebSocket subscription failed");
            "internal error".into()
        }
        other => other.to_string(),
    }
}

/// One subscription of one client.
struct Sub {
    id: u64,
    state: Arc<ApiState>,
    caller: Caller,
    out: Outbox,
    token: CancellationToken,
}

enum Next<T> {
    Item(T),
    Lagged(u64),
    End,
}

/// A debug line as the client sees it.
fn debug_msg(module: Uuid, level: &str, message: String) -> Value {
    json!({"type": "debug", "module": module, "level": level, "message": message})
}

async fn next<T: Clone>(rx: &mut broadcast::Receiver<T>) -> Next<T> {
    match rx.recv().await {
        Ok(v) => Next::Item(v),
        Err(broadcast::error::RecvError::Lagged(n)) => Next::Lagged(n),
        Err(broadcast::error::RecvError::Closed) => Next::End,
    }
}

/// Like [`next`], pending forever without a receiver.
async fn next_opt<T: Clone>(rx: &mut Option<broadcast::Receiver<T>>) -> Next<T> {
    match rx {
        Some(r) => next(r).await,
        None => std::future::pending().await,
    }
}

/// The edge's link to its master changed: connected or not. Pending forever
/// without one.
async fn link_changed(rx: &mut Option<watch::Receiver<Option<crate::link::Peer>>>) -> bool {
    match rx {
        Some(r) => match r.changed().await {
            Ok(()) => r.borrow_and_update().is_some(),
            Err(_) => std::future::pending().await,
        },
        None => std::future::pending().await,
    }
}

impl Sub {
    fn ops(&self) -> Result<&super::Ops, ApiError> {
        self.state
            .ops
            .as_ref()
            .ok_or_else(|| ApiError::Unavailable("no module runtime in this process".into()))
    }

    fn send(&self, mut msg: Value) -> bool {
        msg["id"] = json!(self.id);
        self.out.push(msg)
    }

    fn status_msg(&self, module: Uuid, key: &str, value: Value) -> Value {
        json!({"type": "status", "module": module, "key": key, "value": value})
    }

    /// The current value (one key) or values, as the first message.
    fn current(
        &self,
        module: Uuid,
        key: Option<&str>,
        values: serde_json::Map<String, Value>,
    ) -> bool {
        match key {
            Some(k) => {
                let v = values.get(k).cloned().unwrap_or(Value::Null);
                self.send(self.status_msg(module, k, v))
            }
            None => self.send(json!({"type": "status", "module": module, "values": values})),
        }
    }

    async fn status(&self, module: Uuid, key: Option<String>) -> Result<(), ApiError> {
        let (_, route) = module_route(&self.state, module).await?;
        let ops = self.ops()?;
        if route.local(self.state.role) {
            return self.status_local(ops, module, key).await;
        }
        self.status_at_edge(ops, &route, module, key).await
    }

    /// Status of a module this side runs, from its runtime.
    async fn status_local(
        &self,
        ops: &super::Ops,
        module: Uuid,
        key: Option<String>,
    ) -> Result<(), ApiError> {
        // Subscribe first, then read: no change falls between the two.
        let mut rx = ops
            .runtime
            .subscribe_status(module)
            .map_err(|e| ApiError::NotFound(e.to_string()))?;
        let values = ops
            .runtime
            .status(module)
            .map_err(|e| ApiError::NotFound(e.to_string()))?;
        self.send(json!({"type": "subscribed"}));
        self.current(module, key.as_deref(), values);
        loop {
            let ev = tokio::select! {
                () = self.token.cancelled() => return Ok(()),
                ev = next(&mut rx) => ev,
            };
            match ev {
                Next::Item(c) if key.as_ref().is_none_or(|k| *k == c.key) => {
                    if !self.send(self.status_msg(module, &c.key, c.value)) {
                        return Ok(());
                    }
                }
                Next::Item(_) => {}
                Next::Lagged(n) => {
                    self.out.lost(n);
                    if let Ok(values) = ops.runtime.status(module) {
                        self.current(module, key.as_deref(), values);
                    }
                }
                Next::End => {
                    return Err(ApiError::Unavailable("the module was unloaded".into()));
                }
            }
        }
    }

    /// Status of a module an edge runs (master only): its current values
    /// over the link, then the changes the edge's event pushes bring.
    async fn status_at_edge(
        &self,
        ops: &super::Ops,
        route: &super::operations::Route,
        module: Uuid,
        key: Option<String>,
    ) -> Result<(), ApiError> {
        let (Role::Master, Some(location), Some(feed)) = (
            self.state.role,
            route.location.as_ref(),
            ops.edge_status.as_ref(),
        ) else {
            return Err(ApiError::Unavailable(
                "this module runs elsewhere: subscribe on the master's API".into(),
            ));
        };
        let edge = location.id;
        let mut rx = feed.subscribe();
        let body = RequestBody::Status {
            module: module.to_string(),
            key: None,
        };
        let answer = proxy(&self.state, route, body, LINK_CALL).await?;
        let ResponseBody::Status { values } = answer else {
            return Err(ApiError::Internal(format!(
                "unexpected answer to status: {answer:?}"
            )));
        };
        self.send(json!({"type": "subscribed", "answered_by": "edge"}));
        self.current(module, key.as_deref(), values);
        loop {
            let ev = tokio::select! {
                () = self.token.cancelled() => return Ok(()),
                ev = next(&mut rx) => ev,
            };
            match ev {
                Next::Item((e, c))
                    if e == edge
                        && c.module == module
                        && key.as_ref().is_none_or(|k| *k == c.key) =>
                {
                    if !self.send(self.status_msg(module, &c.key, c.value)) {
                        return Ok(());
                    }
                }
                Next::Item(_) => {}
                Next::Lagged(n) => self.out.lost(n),
                Next::End => return Ok(()),
            }
        }
    }

    async fn debug(&self, module: Uuid) -> Result<(), ApiError> {
        let (_, route) = module_route(&self.state, module).await?;
        // Debug streams show raw device traffic: operators of the location.
        self.caller.require_operator(route.location.as_deref())?;
        let ops = self.ops()?;
        if route.local(self.state.role) {
            return self.debug_local(ops, module).await;
        }
        self.debug_at_edge(ops, &route, module).await
    }

    /// The debug stream of a module this side runs.
    async fn debug_local(&self, ops: &super::Ops, module: Uuid) -> Result<(), ApiError> {
        let mut rx = ops
            .runtime
            .debug_stream(module)
            .map_err(|e| ApiError::NotFound(e.to_string()))?;
        self.send(json!({"type": "subscribed"}));
        loop {
            let ev = tokio::select! {
                () = self.token.cancelled() => return Ok(()),
                ev = next(&mut rx) => ev,
            };
            match ev {
                Next::Item(ev) => {
                    let (level, message) = match ev {
                        crate::runtime::DebugEvent::Log { level, message, .. } => {
                            (format!("{level:?}").to_lowercase(), message)
                        }
                        crate::runtime::DebugEvent::Rx { data, .. } => ("rx".into(), data),
                        crate::runtime::DebugEvent::Tx { data, .. } => ("tx".into(), data),
                    };
                    if !self.send(debug_msg(module, &level, message)) {
                        return Ok(());
                    }
                }
                Next::Lagged(n) => self.out.lost(n),
                Next::End => {
                    return Err(ApiError::Unavailable("the module was unloaded".into()));
                }
            }
        }
    }

    /// The debug stream of a module an edge runs (master only), kept across
    /// reconnects of the edge's link; the edge's forwarding stops when the
    /// last watcher leaves.
    async fn debug_at_edge(
        &self,
        ops: &super::Ops,
        route: &super::operations::Route,
        module: Uuid,
    ) -> Result<(), ApiError> {
        let (Role::Master, Some(location), Some(events), Some(registry)) = (
            self.state.role,
            route.location.as_ref(),
            ops.edge_events.as_ref(),
            ops.registry.as_ref(),
        ) else {
            return Err(ApiError::Unavailable(
                "this module runs elsewhere: subscribe on the master's API".into(),
            ));
        };
        let edge = location.id;
        let Some(peer) = registry.peer(edge) else {
            return Err(ApiError::Unavailable(format!(
                "edge location '{}' ({edge}) controls this and is not connected",
                location.name
            )));
        };
        let rx = events.subscribe();
        self.retain_debug(edge, module);
        let (result, peer) = self
            .follow_edge_debug(registry, edge, module, peer, rx)
            .await;
        if self.release_debug(edge, module) && !peer.is_closed() {
            // The last watcher left: stop the edge's forwarding.
            let module = module.to_string();
            tokio::spawn(async move {
                let _ = peer
                    .request(RequestBody::DebugUnsubscribe { module }, LINK_CALL)
                    .await;
            });
        }
        result
    }

    /// Subscribes at the edge on every link it comes back on and forwards
    /// its debug events, until the client leaves. Returns the last link.
    async fn follow_edge_debug(
        &self,
        registry: &crate::link::Registry,
        edge: Uuid,
        module: Uuid,
        mut peer: crate::link::Peer,
        mut rx: broadcast::Receiver<(Uuid, EventBody)>,
    ) -> (Result<(), ApiError>, crate::link::Peer) {
        let subscribe = RequestBody::DebugSubscribe {
            module: module.to_string(),
        };
        let mut first = true;
        loop {
            // Subscribe on this link; a reconnected edge forgot the old one.
            match peer.request(subscribe.clone(), LINK_CALL).await {
                Ok(_) if first => {
                    self.send(json!({"type": "subscribed", "answered_by": "edge"}));
                }
                Ok(_) => {
                    self.send(debug_msg(
                        module,
                        "warn",
                        "the link to the edge is back; the debug stream resumes".into(),
                    ));
                }
                Err(CallError::Remote(w)) if first => return (Err(wire_to_api(w)), peer),
                Err(e) if first => {
                    let e = ApiError::Unavailable(format!("cannot subscribe at the edge: {e}"));
                    return (Err(e), peer);
                }
                Err(_) => {}
            }
            first = false;
            if self.forward_edge_debug(edge, module, &peer, &mut rx).await {
                return (Ok(()), peer);
            }
            self.send(debug_msg(
                module,
                "warn",
                "the link to the edge was lost; waiting for it to come back".into(),
            ));
            match self
                .wait_for_relink(registry, edge, peer.meta().session)
                .await
            {
                Some(next) => peer = next,
                None => return (Ok(()), peer),
            }
        }
    }

    /// Forwards the edge's debug events for `module` until its link closes
    /// (false) or this client is done (true).
    async fn forward_edge_debug(
        &self,
        edge: Uuid,
        module: Uuid,
        peer: &crate::link::Peer,
        rx: &mut broadcast::Receiver<(Uuid, EventBody)>,
    ) -> bool {
        let module_text = module.to_string();
        loop {
            let ev = tokio::select! {
                () = self.token.cancelled() => return true,
                () = peer.closed() => return false,
                ev = next(rx) => ev,
            };
            match ev {
                Next::Item((
                    e,
                    EventBody::Debug {
                        module: m,
                        level,
                        message,
                    },
                )) if e == edge && m == module_text => {
                    if !self.send(debug_msg(module, &level, message)) {
                        return true;
                    }
                }
                Next::Item(_) => {}
                Next::Lagged(n) => self.out.lost(n),
                Next::End => return true,
            }
        }
    }

    /// The edge's next link after session `old`; `None` when the client
    /// leaves first.
    async fn wait_for_relink(
        &self,
        registry: &crate::link::Registry,
        edge: Uuid,
        old: u64,
    ) -> Option<crate::link::Peer> {
        loop {
            tokio::select! {
                () = self.token.cancelled() => return None,
                () = tokio::time::sleep(RELINK_POLL) => {}
            }
            if let Some(p) = registry.peer(edge)
                && p.meta().session != old
                && !p.is_closed()
            {
                return Some(p);
            }
        }
    }

    fn retain_debug(&self, edge: Uuid, module: Uuid) {
        let mut refs = self.state.ws.debug_refs.lock_unpoisoned();
        *refs.entry((edge, module)).or_default() += 1;
    }

    /// True when this was the last watcher.
    fn release_debug(&self, edge: Uuid, module: Uuid) -> bool {
        let mut refs = self.state.ws.debug_refs.lock_unpoisoned();
        match refs.get_mut(&(edge, module)) {
            Some(n) if *n > 1 => {
                *n -= 1;
                false
            }
            _ => {
                refs.remove(&(edge, module));
                true
            }
        }
    }

    /// The current controller of every edge location (every key may read
    /// the locations), as `control` messages with `"current": true`.
    async fn current_controllers(&self) -> Result<Vec<Value>, ApiError> {
        let docs = self.state.store.list_all(crate::model::Kind::Edge).await?;
        let states: std::collections::HashMap<Uuid, crate::store::ControlState> = self
            .state
            .store
            .control_states()
            .await?
            .into_iter()
            .map(|c| (c.edge_id, c))
            .collect();
        Ok(docs
            .iter()
            .map(|d| {
                let state = states.get(&d.id);
                json!({
                    "type": "control",
                    "current": true,
                    "edge_id": d.id,
                    "epoch": state.map_or(0, |c| c.epoch),
                    // Until a change is recorded, an edge runs its own site.
                    "to": state.map_or("edge", |c| c.controller.as_str()),
                    "at_ms": state.map(|c| c.since_ms),
                })
            })
            .collect())
    }

    async fn control(&self) -> Result<(), ApiError> {
        let mut control = self.state.store.subscribe_control();
        let ops = self.state.ops.as_ref();
        let mut links = ops.and_then(|o| o.links.as_ref()).map(|l| l.subscribe());
        let mut master = ops.and_then(|o| o.master.clone());
        self.send(json!({"type": "subscribed"}));
        // Subscribed before reading, so no change falls between the two.
        for msg in self.current_controllers().await? {
            if !self.send(msg) {
                return Ok(());
            }
        }
        loop {
            let msg = tokio::select! {
                () = self.token.cancelled() => return Ok(()),
                ev = next(&mut control) => match ev {
                    Next::Item(r) => json!({
                        "type": "control",
                        "edge_id": r.edge_id,
                        "epoch": r.epoch,
                        "from": r.from.map(crate::control::Side::as_str),
                        "to": r.to.as_str(),
                        "reason": r.reason.as_str(),
                        "at_ms": r.at_ms,
                    }),
                    Next::Lagged(n) => { self.out.lost(n); continue }
                    Next::End => return Ok(()),
                },
                ev = next_opt(&mut links) => match ev {
                    Next::Item(n) => json!({
                        "type": "link",
                        "edge_id": n.edge_id,
                        "connected": n.connected,
                        "at_ms": n.at_ms,
                    }),
                    Next::Lagged(n) => { self.out.lost(n); continue }
                    Next::End => { links = None; continue }
                },
                connected = link_changed(&mut master) => json!({
                    "type": "link",
                    "peer": "master",
                    "connected": connected,
                }),
            };
            if !self.send(msg) {
                return Ok(());
            }
        }
    }
}

/// A `sync` message for one edge.
fn sync_msg(e: &super::EdgeSync, current: bool) -> Value {
    json!({
        "type": "sync",
        "current": current,
        "edge_id": e.edge_id,
        "replica_seq": e.replica_seq,
        "unsynced": e.unsynced,
    })
}

impl Sub {
    /// Each edge's replica position and unsynced events (master only):
    /// the feed's last sequence number and every edge known, then each
    /// change and each commit's new sequence number.
    async fn sync(&self) -> Result<(), ApiError> {
        let Some(facts) = self.state.ops.as_ref().and_then(|o| o.sync.clone()) else {
            return Err(ApiError::Unavailable(
                "replica lag and unsynced events are known at the master".into(),
            ));
        };
        // Subscribed before reading, so no change falls between the two.
        let mut changes = facts.subscribe();
        let mut commits = self.state.store.subscribe_commits();
        self.send(json!({"type": "subscribed"}));
        let last_seq = self.state.store.last_seq().await?;
        self.send(json!({"type": "feed", "last_seq": last_seq}));
        for e in facts.all() {
            self.send(sync_msg(&e, true));
        }
        loop {
            let msg = tokio::select! {
                () = self.token.cancelled() => return Ok(()),
                ev = next(&mut changes) => match ev {
                    Next::Item(e) => sync_msg(&e, false),
                    Next::Lagged(n) => {
                        // What was lost is in the current facts.
                        self.out.lost(n);
                        for e in facts.all() {
                            self.send(sync_msg(&e, true));
                        }
                        continue;
                    }
                    Next::End => return Ok(()),
                },
                r = commits.changed() => {
                    if r.is_err() {
                        return Ok(());
                    }
                    let seq = *commits.borrow_and_update();
                    json!({"type": "feed", "last_seq": seq})
                }
            };
            if !self.send(msg) {
                return Ok(());
            }
        }
    }
}

pub(super) fn routes() -> OpenApiRouter<Arc<ApiState>> {
    OpenApiRouter::new().routes(routes!(ws))
}
