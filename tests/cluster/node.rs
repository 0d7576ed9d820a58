//! Nodes of a master cluster as real `outpost master` processes, and a
//! fresh PostgreSQL database for each test (shared with the benchmark).

// The tests and the benchmark use different parts.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use sqlx::Executor as _;

/// The key every node of a test is configured with.
pub const ADMIN_KEY: &str = "cluster-test-admin-key-0123456789abcdef";

/// A fresh PostgreSQL database on the shared server, dropped at the end.
pub struct Database {
    admin_url: String,
    pub name: String,
    pub url: String,
}

impl Database {
    /// `None` (with a printed reason) when no PostgreSQL is configured.
    pub async fn create() -> Option<Database> {
        let admin_url = crate::support::pg_url()?;
        let name = format!("outpost_cluster_{}", uuid::Uuid::now_v7().simple());
        let pool = sqlx::PgPool::connect(&admin_url).await.unwrap();
        pool.execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .await
            .unwrap();
        pool.close().await;
        let url = match admin_url.rsplit_once('/') {
            Some((base, _)) => format!("{base}/{name}"),
            None => panic!("TEST_PG_URL names no database: {admin_url}"),
        };
        Some(Database {
            admin_url,
            name,
            url,
        })
    }

    pub async fn drop_it(self) {
        let pool = sqlx::PgPool::connect(&self.admin_url).await.unwrap();
        pool.execute(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            self.name
        )))
        .await
        .unwrap();
        pool.close().await;
    }
}

/// A loopback address free now, for a node process to bind later. Taken
/// below the kernel's ephemeral range (32768 and up): a port handed out by
/// `bind(0)` can be taken again by any outgoing connection (PostgreSQL's,
/// another test's) before the node binds it, which failed a CI run.
pub fn free_addr() -> std::net::SocketAddr {
    use std::sync::atomic::{AtomicU16, Ordering};
    static NEXT: AtomicU16 = AtomicU16::new(0);
    // Spread by process id, so that two test processes rarely meet.
    let offset = (std::process::id() % 1_000) as u16 * 10;
    loop {
        let step = NEXT.fetch_add(1, Ordering::Relaxed) % 12_000;
        let port = 20_000 + (offset + step) % 12_000;
        if let Ok(l) = std::net::TcpListener::bind(("127.0.0.1", port)) {
            return l.local_addr().unwrap();
        }
    }
}

/// Certificates shared by the nodes of one test.
pub fn certs(dir: &Path) -> PathBuf {
    outpost::certs::install_crypto_provider();
    let certs = dir.join("certs");
    outpost::certs::init_dev(&certs, &["localhost".into(), "127.0.0.1".into()], false).unwrap();
    certs
}

/// A node's settings.
#[derive(Clone)]
pub struct NodeSpec {
    pub id: String,
    pub database_url: String,
    pub dir: PathBuf,
    pub certs: PathBuf,
    pub lease_ms: u64,
    pub renew_ms: u64,
    pub priority: i32,
    pub preempt: bool,
    /// Set: the nodes take turns by this lock file (SQLite).
    pub lock_file: Option<PathBuf>,
    /// `cluster_failsafe`.
    pub failsafe: bool,
}

/// One `outpost master` process.
pub struct Node {
    pub spec: NodeSpec,
    pub api: std::net::SocketAddr,
    pub link: std::net::SocketAddr,
    child: Option<tokio::process::Child>,
    log: PathBuf,
}

impl Node {
    pub fn spawn(spec: &NodeSpec) -> Node {
        Node::spawn_on(spec, free_addr(), free_addr())
    }

    /// The same node started again on its addresses (edges list them).
    pub fn restart(&self) -> Node {
        Node::spawn_on(&self.spec, self.api, self.link)
    }

    fn spawn_on(spec: &NodeSpec, api: std::net::SocketAddr, link: std::net::SocketAddr) -> Node {
        let data = spec.dir.join(&spec.id);
        std::fs::create_dir_all(&data).unwrap();
        let log = data.join("node.log");
        let out = std::fs::File::create(&log).unwrap();
        let mut vars: Vec<(&str, String)> = vec![
            ("OUTPOST_DATABASE_URL", spec.database_url.clone()),
            ("OUTPOST_DATA_DIR", data.display().to_string()),
            ("OUTPOST_API_ADDR", api.to_string()),
            ("OUTPOST_LINK_ADDR", link.to_string()),
            (
                "OUTPOST_CA_CERT",
                spec.certs.join("ca.pem").display().to_string(),
            ),
            (
                "OUTPOST_TLS_CERT",
                spec.certs.join("master.pem").display().to_string(),
            ),
            (
                "OUTPOST_TLS_KEY",
                spec.certs.join("master-key.pem").display().to_string(),
            ),
            (
                "OUTPOST_MODULES_DIR",
                concat!(env!("CARGO_MANIFEST_DIR"), "/modules").into(),
            ),
            ("OUTPOST_ADMIN_KEY", ADMIN_KEY.into()),
            ("OUTPOST_NODE_ID", spec.id.clone()),
            ("OUTPOST_NODE_PRIORITY", spec.priority.to_string()),
            ("OUTPOST_PREEMPT", spec.preempt.to_string()),
            ("OUTPOST_LEASE_MS", spec.lease_ms.to_string()),
            ("OUTPOST_RENEW_MS", spec.renew_ms.to_string()),
            ("OUTPOST_BOOT_WAIT_MS", "50".into()),
            ("OUTPOST_SHUTDOWN_GRACE_MS", "2000".into()),
            ("OUTPOST_LOG", "info".into()),
        ];
        if spec.failsafe {
            vars.push(("OUTPOST_CLUSTER_FAILSAFE", "true".into()));
        }
        if let Some(lock) = &spec.lock_file {
            vars.push(("OUTPOST_CLUSTER_LOCK_FILE", lock.display().to_string()));
        }
        let bin = Path::new(env!("CARGO_BIN_EXE_outpost"));
        let child = launch(bin, "master", &data, vars, out);
        Node {
            spec: spec.clone(),
            api,
            link,
            child: Some(child),
            log,
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().unwrap().id().unwrap() as i32
    }

    pub fn signal(&self, sig: &str) {
        let sent = std::process::Command::new("kill")
            .args([&format!("-{sig}"), &self.pid().to_string()])
            .status()
            .unwrap();
        assert!(sent.success());
    }

    /// SIGKILL, and wait until it is gone.
    pub async fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().await.unwrap();
        }
    }

    /// Waits for the process to exit, with its status.
    pub async fn exited(&mut self) -> std::process::ExitStatus {
        let mut c = self.child.take().unwrap();
        tokio::time::timeout(Duration::from_secs(20), c.wait())
            .await
            .unwrap_or_else(|_| panic!("{} did not exit: {}", self.spec.id, self.log_text()))
            .unwrap()
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Its `/api/v1/ha/state`, or `None` when it does not answer.
    pub async fn state(&self) -> Option<String> {
        let body = get(self.api, "/api/v1/ha/state", None).await?;
        let v: serde_json::Value = serde_json::from_str(&body.1).ok()?;
        v["state"].as_str().map(str::to_owned)
    }
}

/// A failing test shows what each of its nodes logged: a cluster test's
/// failure is rarely explained by the test's own output alone.
impl Drop for Node {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- log of node {} ---\n{}", self.spec.id, self.log_text());
        }
    }
}

/// A GET, answering (status, body); `None` when the node does not answer.
pub async fn get(
    addr: std::net::SocketAddr,
    path: &str,
    key: Option<&str>,
) -> Option<(u16, String)> {
    send(addr, "GET", path, key, None).await
}

/// One HTTP/1.1 request with `Connection: close`.
pub async fn send(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    key: Option<&str>,
    body: Option<&str>,
) -> Option<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let io = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
        let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
        if let Some(k) = key {
            req.push_str(&format!("Authorization: Bearer {k}\r\n"));
        }
        let body = body.unwrap_or("");
        if !body.is_empty() {
            req.push_str("Content-Type: application/json\r\n");
        }
        req.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
        stream.write_all(req.as_bytes()).await.ok()?;
        let mut out = Vec::new();
        stream.read_to_end(&mut out).await.ok()?;
        let text = String::from_utf8_lossy(&out).into_owned();
        let status: u16 = text.split(' ').nth(1)?.parse().ok()?;
        let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned())?;
        Some((status, body))
    };
    tokio::time::timeout(Duration::from_secs(5), io)
        .await
        .ok()
        .flatten()
}

/// Polls `check` every 20 ms until it holds, for at most `secs` seconds.
pub async fn eventually(secs: u64, what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The states of `nodes` (`None`: not answering).
pub async fn states(nodes: &[Node]) -> Vec<Option<String>> {
    let mut out = Vec::new();
    for n in nodes {
        out.push(n.state().await);
    }
    out
}

/// `n` edge locations in the cluster's database (`url`): (id, secret).
pub async fn edge_locations(url: &str, n: usize) -> Vec<(uuid::Uuid, String)> {
    let store = outpost::store::Store::open(&outpost::store::StoreOptions::new(url.to_owned()))
        .await
        .unwrap();
    let ids: Vec<uuid::Uuid> = (0..n).map(|_| outpost::model::new_id()).collect();
    let edges = ids
        .iter()
        .enumerate()
        .map(|(i, id)| {
            serde_json::from_value(serde_json::json!({"id": id, "name": format!("Site {i}")}))
                .unwrap()
        })
        .collect();
    let site = outpost::admin::SiteFile {
        edges,
        systems: vec![],
        modules: vec![],
    };
    let report = outpost::admin::import(&store, &site, &Default::default())
        .await
        .unwrap();
    store.close().await;
    report
        .secrets
        .iter()
        .map(|(id, _, secret)| (*id, secret.expose().to_owned()))
        .collect()
}

/// `outpost edge` for location `id`, connecting to `masters` (a list of
/// link addresses), its data and log under `spec.dir`.
pub fn spawn_edge(
    spec: &NodeSpec,
    id: uuid::Uuid,
    secret: &str,
    masters: &str,
) -> tokio::process::Child {
    let bin = Path::new(env!("CARGO_BIN_EXE_outpost"));
    spawn_edge_of(bin, spec, id, secret, masters)
}

/// [`spawn_edge`] with the `outpost` binary at `bin` (another release's).
pub fn spawn_edge_of(
    bin: &Path,
    spec: &NodeSpec,
    id: uuid::Uuid,
    secret: &str,
    masters: &str,
) -> tokio::process::Child {
    let data = spec.dir.join(format!("edge-{id}"));
    std::fs::create_dir_all(&data).unwrap();
    let out = std::fs::File::create(data.join("edge.log")).unwrap();
    let vars: Vec<(&str, String)> = vec![
        ("OUTPOST_EDGE_ID", id.to_string()),
        ("OUTPOST_EDGE_SECRET", secret.to_owned()),
        ("OUTPOST_MASTERS", masters.to_owned()),
        ("OUTPOST_DATA_DIR", data.display().to_string()),
        (
            "OUTPOST_DATABASE_URL",
            format!("sqlite://{}", data.join("edge.db").display()),
        ),
        ("OUTPOST_API_ADDR", free_addr().to_string()),
        (
            "OUTPOST_CA_CERT",
            spec.certs.join("ca.pem").display().to_string(),
        ),
        (
            "OUTPOST_MODULES_DIR",
            concat!(env!("CARGO_MANIFEST_DIR"), "/modules").into(),
        ),
        ("OUTPOST_HEARTBEAT_MS", "200".into()),
        ("OUTPOST_DEAD_AFTER_MS", "600".into()),
        ("OUTPOST_RECONNECT_MS", "200".into()),
        ("OUTPOST_LOG", "info".into()),
    ];
    launch(bin, "edge", &data, vars, out)
}

/// `bin ROLE` in `dir` with only `vars` in its environment, its output to
/// `out`; killed when dropped.
fn launch(
    bin: &Path,
    role: &str,
    dir: &Path,
    vars: Vec<(&str, String)>,
    out: std::fs::File,
) -> tokio::process::Child {
    tokio::process::Command::new(bin)
        .arg(role)
        .current_dir(dir)
        .env_clear()
        .envs(vars)
        .stdin(std::process::Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()))
}

/// The edge locations `node` (a MASTER) has a live link with.
pub async fn connected_edges(node: &Node) -> Option<std::collections::HashSet<String>> {
    let (200, body) = get(node.api, "/api/v1/sites", Some(ADMIN_KEY)).await? else {
        return None;
    };
    let v: serde_json::Value = serde_json::from_str(&body).ok()?;
    Some(
        v.as_array()?
            .iter()
            .filter(|s| s["connected"] == true)
            .filter_map(|s| s["id"].as_str().map(str::to_owned))
            .collect(),
    )
}

/// Whether `node` (a MASTER) has a live link with edge `id`.
pub async fn edge_connected(node: &Node, id: uuid::Uuid) -> bool {
    connected_edges(node)
        .await
        .is_some_and(|ids| ids.contains(&id.to_string()))
}

/// Imports a room with a PJLink module for `addr`: run by the master, or
/// (`on_edge`) by a new edge location's edge, whose (id, secret) it returns.
pub async fn import_room(
    url: &str,
    addr: std::net::SocketAddr,
    on_edge: bool,
) -> Option<(uuid::Uuid, String)> {
    let module = outpost::model::Module {
        id: outpost::model::new_id(),
        name: "Projector".into(),
        driver: "pjlink.lua".into(),
        uri: Some(format!("tcp://{addr}")),
        settings: Default::default(),
        enabled: true,
    };
    let edge_id = outpost::model::new_id();
    let edges = match on_edge {
        true => vec![
            serde_json::from_value(serde_json::json!({
                "id": edge_id,
                "name": "Site",
                "failover": true,
                "failover_timeout_ms": 5_000,
            }))
            .unwrap(),
        ],
        false => vec![],
    };
    let system = outpost::model::ControlSystem {
        id: outpost::model::new_id(),
        name: "Boardroom".into(),
        description: String::new(),
        edge_id: on_edge.then_some(edge_id),
        module_ids: vec![module.id],
        settings: Default::default(),
        stopped: false,
    };
    let store = outpost::store::Store::open(&outpost::store::StoreOptions::new(url.to_owned()))
        .await
        .unwrap();
    let site = outpost::admin::SiteFile {
        edges,
        systems: vec![system],
        modules: vec![module],
    };
    let report = outpost::admin::import(&store, &site, &Default::default())
        .await
        .unwrap();
    store.close().await;
    report
        .secrets
        .first()
        .map(|(id, _, secret)| (*id, secret.expose().to_owned()))
}

/// Waits until exactly one of `nodes` is MASTER and every other answers
/// STANDBY; its index. On time-out, prints every node's log.
pub async fn one_master(nodes: &[Node]) -> usize {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let s = states(nodes).await;
        let masters: Vec<usize> = (0..s.len())
            .filter(|i| s[*i].as_deref() == Some("MASTER"))
            .collect();
        let standbys = s.iter().filter(|x| x.as_deref() == Some("STANDBY")).count();
        if masters.len() == 1 && standbys == nodes.len() - 1 {
            return masters[0];
        }
        // Each node's log is printed as it is dropped.
        assert!(
            tokio::time::Instant::now() <= deadline,
            "no single MASTER: {s:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
