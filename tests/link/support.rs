//! Test support: `start_master` / `start_edge` helpers that bind port 0 and
//! return handles, and a handler that behaves like a small runtime (echo,
//! sleeps, debug streams, repository operations).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use outpost::certs;
use outpost::link::edge::{self, CommitCell, EdgeLinkConfig, EdgeLinkEvent};
use outpost::link::master::{self, MasterLinkConfig, MasterLinkEvent};
use outpost::link::peer::{Handler, Peer, PeerConfig, PeerRole, RequestCtx};
use outpost::link::repository::{EdgeRepo, MasterRepo};
use outpost::link::{LinkTiming, Registry, tls};
use outpost::proto::{EventBody, RepoOp, RequestBody, ResponseBody, WireError};
use outpost::secret::{EdgeSecret, LinkKey};
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

pub const WAIT: Duration = Duration::from_secs(20);

/// Awaits `f`, failing the test instead of hanging.
pub async fn within<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(WAIT, f)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

pub struct Certs {
    pub _dir: tempfile::TempDir,
    pub paths: certs::DevCerts,
}

pub fn dev_certs() -> Certs {
    certs::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let paths = certs::init_dev(
        dir.path(),
        &["localhost".to_string(), "127.0.0.1".to_string()],
        false,
    )
    .unwrap();
    Certs { _dir: dir, paths }
}

/// Short timings so liveness tests finish quickly (no assertion depends on
/// them being exact).
pub fn fast_timing() -> LinkTiming {
    LinkTiming {
        heartbeat: Duration::from_millis(100),
        dead_after: Duration::from_millis(400),
        handshake_timeout: Duration::from_secs(2),
    }
}

/// A handler standing in for the module runtime.
#[derive(Default)]
pub struct TestHandler {
    pub log: Mutex<Vec<String>>,
    pub events: Mutex<Option<mpsc::UnboundedSender<EventBody>>>,
    pub dropped: Mutex<Option<mpsc::UnboundedSender<u64>>>,
    pub started: Mutex<Option<mpsc::UnboundedSender<u64>>>,
    pub debug: Mutex<HashMap<String, CancellationToken>>,
    pub master_repo: Option<MasterRepo>,
    pub edge_repo: Option<EdgeRepo>,
    pub commit: CommitCell,
}

impl TestHandler {
    pub fn events(&self) -> mpsc::UnboundedReceiver<EventBody> {
        let (tx, rx) = mpsc::unbounded_channel();
        *self.events.lock().unwrap() = Some(tx);
        rx
    }

    /// (started ids, dropped ids) of `hang` requests.
    pub fn watch_hangs(&self) -> (mpsc::UnboundedReceiver<u64>, mpsc::UnboundedReceiver<u64>) {
        let (s_tx, s_rx) = mpsc::unbounded_channel();
        let (d_tx, d_rx) = mpsc::unbounded_channel();
        *self.started.lock().unwrap() = Some(s_tx);
        *self.dropped.lock().unwrap() = Some(d_tx);
        (s_rx, d_rx)
    }

    fn record(&self, s: String) {
        self.log.lock().unwrap().push(s);
    }
}

struct DropSignal(u64, Option<mpsc::UnboundedSender<u64>>);

impl Drop for DropSignal {
    fn drop(&mut self) {
        if let Some(tx) = &self.1 {
            let _ = tx.send(self.0);
        }
    }
}

impl Handler for TestHandler {
    async fn handle(&self, ctx: RequestCtx, body: RequestBody) -> Result<ResponseBody, WireError> {
        if let Some(repo) = &self.master_repo
            && let Some(r) = repo.handle(&body).await
        {
            return r;
        }
        match body {
            RequestBody::Exec {
                module,
                method,
                args,
                ..
            } => match (module.as_str(), method.as_str()) {
                ("echo", _) => Ok(ResponseBody::Value { value: args }),
                ("sleep", _) => {
                    let ms = args["ms"].as_u64().unwrap_or(0);
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                    Ok(ResponseBody::Value { value: args })
                }
                ("hang", _) => {
                    let tag = args["tag"].as_u64().unwrap_or(0);
                    let _signal = DropSignal(tag, self.dropped.lock().unwrap().clone());
                    if let Some(tx) = self.started.lock().unwrap().clone() {
                        let _ = tx.send(tag);
                    }
                    std::future::pending::<()>().await;
                    unreachable!()
                }
                ("panic", _) => panic!("the test handler panics on purpose"),
                ("big", _) => Ok(ResponseBody::Value {
                    value: json!("x".repeat(args["len"].as_u64().unwrap_or(0) as usize)),
                }),
                _ => Err(WireError::not_found(format!("module {module}"))),
            },
            RequestBody::Status { module, key } => {
                let mut values = serde_json::Map::new();
                values.insert("power".into(), json!(true));
                values.insert("input".into(), json!("hdmi1"));
                values.insert("module".into(), json!(module));
                match key {
                    None => Ok(ResponseBody::Status { values }),
                    Some(k) => values
                        .get(&k)
                        .cloned()
                        .map(|value| ResponseBody::Value { value })
                        .ok_or_else(|| WireError::not_found(k)),
                }
            }
            RequestBody::StartSystem { system, .. } => {
                self.record(format!("start {system}"));
                Ok(ResponseBody::Done)
            }
            RequestBody::StopSystem { system, .. } => {
                self.record(format!("stop {system}"));
                Ok(ResponseBody::Done)
            }
            RequestBody::ExpireSystemCache { system } => {
                self.record(format!("expire {system}"));
                Ok(ResponseBody::Done)
            }
            RequestBody::ReloadDriver { name, source } => {
                self.record(format!("reload {name} {}", source.unwrap_or_default()));
                Ok(ResponseBody::Reloaded {
                    drivers: vec![name],
                })
            }
            RequestBody::DebugSubscribe { module } => {
                let token = ctx.peer_closed_child();
                if let Some(old) = self
                    .debug
                    .lock()
                    .unwrap()
                    .insert(module.clone(), token.clone())
                {
                    old.cancel();
                }
                let peer = ctx.peer.clone();
                tokio::spawn(async move {
                    let mut n = 0u64;
                    loop {
                        tokio::select! {
                            _ = token.cancelled() => break,
                            _ = tokio::time::sleep(Duration::from_millis(5)) => {}
                        }
                        n += 1;
                        let ev = EventBody::Debug {
                            module: module.clone(),
                            level: "debug".into(),
                            message: format!("line {n}"),
                        };
                        if peer.event(ev).await.is_err() {
                            break;
                        }
                    }
                });
                Ok(ResponseBody::Done)
            }
            RequestBody::DebugUnsubscribe { module } => {
                if let Some(t) = self.debug.lock().unwrap().remove(&module) {
                    t.cancel();
                }
                Ok(ResponseBody::Done)
            }
            RequestBody::Repository {
                op: RepoOp::Sync { commit },
            } => {
                let repo = self
                    .edge_repo
                    .as_ref()
                    .ok_or_else(|| WireError::Unavailable {
                        message: "no repository".into(),
                    })?;
                let report = repo
                    .sync(&ctx.peer, &commit, Duration::from_secs(10))
                    .await
                    .map_err(WireError::from)?;
                // SEAM (runtime): reload report.changed_drivers() here.
                *self.commit.write().unwrap() = Some(report.commit.clone());
                Ok(ResponseBody::Commit {
                    commit: report.commit.clone(),
                    changed: report.changed_drivers(),
                })
            }
            other => Err(WireError::Unavailable {
                message: format!("{} not served here", other.kind()),
            }),
        }
    }

    fn event(&self, _peer: &Peer, body: EventBody) {
        if let Some(tx) = &*self.events.lock().unwrap() {
            let _ = tx.send(body);
        }
    }
}

/// A `CancellationToken` cancelled when the request's link closes.
pub trait CtxExt {
    fn peer_closed_child(&self) -> CancellationToken;
}

impl CtxExt for RequestCtx {
    fn peer_closed_child(&self) -> CancellationToken {
        let token = CancellationToken::new();
        let t = token.clone();
        let peer = self.peer.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = peer.closed() => t.cancel(),
                _ = t.cancelled() => {}
            }
        });
        token
    }
}

pub struct Master {
    pub addr: SocketAddr,
    pub registry: Registry,
    pub events: mpsc::Receiver<MasterLinkEvent>,
    pub shutdown: CancellationToken,
    pub handler: Arc<TestHandler>,
    pub task: tokio::task::JoinHandle<()>,
}

pub struct MasterOpts {
    pub timing: LinkTiming,
    pub keys: HashMap<Uuid, LinkKey>,
    pub max_in_flight: u32,
    pub outbound_queue: usize,
    pub max_frame: usize,
    pub handler: TestHandler,
    pub addr: Option<SocketAddr>,
    pub client_ca: Option<PathBuf>,
    pub admission: outpost::link::AdmissionLimits,
    /// Zero (the default here): every failed handshake is reported.
    pub failure_report_interval: Duration,
    /// Answers cluster nodes' probes (none: refused).
    pub probe: Option<Arc<dyn outpost::link::ProbeResponder>>,
}

impl MasterOpts {
    pub fn new(keys: HashMap<Uuid, LinkKey>) -> Self {
        Self {
            timing: LinkTiming::default(),
            keys,
            max_in_flight: 1024,
            outbound_queue: 1024,
            max_frame: outpost::proto::DEFAULT_MAX_FRAME,
            handler: TestHandler::default(),
            addr: None,
            client_ca: None,
            admission: Default::default(),
            failure_report_interval: Duration::ZERO,
            probe: None,
        }
    }
}

pub async fn start_master(certs: &Certs, opts: MasterOpts) -> Master {
    let listener = TcpListener::bind(opts.addr.unwrap_or(([127, 0, 0, 1], 0).into()))
        .await
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let mut peer = PeerConfig::new(PeerRole::Master, opts.timing);
    peer.max_in_flight = opts.max_in_flight;
    peer.outbound_queue = opts.outbound_queue;
    peer.max_frame = opts.max_frame;
    let cfg = MasterLinkConfig {
        tls: tls::server_config(
            &certs.paths.cert,
            &certs.paths.key,
            opts.client_ca.as_deref(),
        )
        .unwrap(),
        peer,
        boot_id: Uuid::now_v7(),
        max_handshakes: 64,
        admission: opts.admission,
        failure_report_interval: opts.failure_report_interval,
        shutdown_grace: Duration::from_secs(2),
        store_id: None,
        leadership: outpost::control::leadership::alone_watch(),
        probe: opts.probe,
    };
    // Far above what a test raises: the registry's sink is bounded.
    let (tx, events) = mpsc::channel(4096);
    let registry = Registry::new(tx);
    let shutdown = CancellationToken::new();
    let handler = Arc::new(opts.handler);
    let task = tokio::spawn({
        let (registry, shutdown, handler) = (registry.clone(), shutdown.clone(), handler.clone());
        let keys = Arc::new(opts.keys);
        async move {
            master::serve(listener, cfg, keys, handler, registry, shutdown)
                .await
                .unwrap()
        }
    });
    Master {
        addr,
        registry,
        events,
        shutdown,
        handler,
        task,
    }
}

impl Master {
    /// The next event that is not an auth failure when `skip_failures`.
    pub async fn next_event(&mut self) -> MasterLinkEvent {
        within("a master event", self.events.recv()).await.unwrap()
    }

    pub async fn next_up(&mut self) -> (Uuid, u64, Peer) {
        loop {
            if let MasterLinkEvent::LinkUp { info, peer, .. } = self.next_event().await {
                return (info.edge_id, info.session, peer);
            }
        }
    }

    pub async fn next_lost(&mut self) -> (Uuid, u64, outpost::link::CloseReason) {
        loop {
            if let MasterLinkEvent::LinkLost {
                edge_id,
                session,
                reason,
                ..
            } = self.next_event().await
            {
                return (edge_id, session, reason);
            }
        }
    }

    pub async fn next_auth_failure(&mut self) -> (Option<Uuid>, String) {
        loop {
            if let MasterLinkEvent::AuthFailed {
                edge_id, reason, ..
            } = self.next_event().await
            {
                return (edge_id, reason);
            }
        }
    }

    pub async fn stop(self) {
        self.shutdown.cancel();
        within("master shutdown", self.task).await.unwrap();
    }
}

pub struct EdgeIdentity {
    pub id: Uuid,
    pub secret: EdgeSecret,
}

impl EdgeIdentity {
    pub fn new() -> Self {
        Self {
            id: Uuid::now_v7(),
            secret: EdgeSecret::generate(),
        }
    }

    pub fn key(&self) -> LinkKey {
        self.secret.link_key(self.id)
    }
}

pub fn keys(edges: &[&EdgeIdentity]) -> HashMap<Uuid, LinkKey> {
    edges.iter().map(|e| (e.id, e.key())).collect()
}

pub fn edge_config(certs: &Certs, id: &EdgeIdentity, masters: Vec<String>) -> EdgeLinkConfig {
    edge_config_with_ca(&certs.paths.ca_cert, id, masters)
}

/// As [`edge_config`], trusting the CA certificate at `ca_cert`.
pub fn edge_config_with_ca(
    ca_cert: &std::path::Path,
    id: &EdgeIdentity,
    masters: Vec<String>,
) -> EdgeLinkConfig {
    EdgeLinkConfig {
        edge_id: id.id,
        key: id.key(),
        masters,
        tls: tls::client_config(ca_cert, None).unwrap(),
        peer: PeerConfig::new(PeerRole::Edge, LinkTiming::default()),
        reconnect: Duration::from_millis(200),
        boot_id: Uuid::now_v7(),
        commit: CommitCell::default(),
        bind: None,
        stand_down: Default::default(),
    }
}

pub struct Edge {
    pub events: mpsc::UnboundedReceiver<EdgeLinkEvent>,
    pub shutdown: CancellationToken,
    pub handler: Arc<TestHandler>,
    pub task: tokio::task::JoinHandle<()>,
}

pub fn start_edge(cfg: EdgeLinkConfig, handler: TestHandler) -> Edge {
    let (tx, events) = mpsc::unbounded_channel();
    let shutdown = CancellationToken::new();
    let handler = Arc::new(handler);
    let task = tokio::spawn(edge::run(cfg, handler.clone(), tx, shutdown.clone()));
    Edge {
        events,
        shutdown,
        handler,
        task,
    }
}

impl Edge {
    pub async fn next_event(&mut self) -> EdgeLinkEvent {
        within("an edge event", self.events.recv()).await.unwrap()
    }

    pub async fn connected(&mut self) -> Peer {
        loop {
            if let EdgeLinkEvent::Connected { peer, .. } = self.next_event().await {
                return peer;
            }
        }
    }

    pub async fn stop(self) {
        self.shutdown.cancel();
        within("edge shutdown", self.task).await.unwrap();
    }
}

/// A master and one connected edge; returns (master, edge, master's peer
/// for the edge, edge's peer for the master).
pub async fn pair(
    certs: &Certs,
    master_handler: TestHandler,
    edge_handler: TestHandler,
) -> (Master, Edge, Peer, Peer) {
    let id = EdgeIdentity::new();
    let mut opts = MasterOpts::new(keys(&[&id]));
    opts.handler = master_handler;
    let mut m = start_master(certs, opts).await;
    let cfg = edge_config(certs, &id, vec![m.addr.to_string()]);
    let mut e = start_edge(cfg, edge_handler);
    let to_master = e.connected().await;
    let (_, _, to_edge) = m.next_up().await;
    (m, e, to_edge, to_master)
}
