//! `start_master()` / `start_edge()`: a master and an edge in this process,
//! on loopback port 0, with development certificates, real SQLite files,
//! the repository's drivers, and a replica seeded through the store's real
//! replication primitives, or through the link's own replication.

// Each test binary uses a different part of this module.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use outpost::config::{Config, SecretString};
use outpost::model::index_document;
use outpost::store::{Replicated, Store, StoreOptions};
use uuid::Uuid;

/// A directory with certificates, shared by a master and its edges.
pub struct Site {
    pub dir: tempfile::TempDir,
}

impl Site {
    pub fn new() -> Site {
        Site::with_hosts(&[])
    }

    /// A site whose master certificate also names `hosts` (addresses the
    /// master is reached at besides localhost and 127.0.0.1).
    pub fn with_hosts(hosts: &[String]) -> Site {
        outpost::certs::install_crypto_provider();
        let dir = tempfile::tempdir().unwrap();
        let mut names = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
        names.extend_from_slice(hosts);
        outpost::certs::init_dev(&dir.path().join("certs"), &names, false).unwrap();
        Site { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    fn base_config(&self, name: &str) -> Config {
        let certs = self.path().join("certs");
        Config {
            data_dir: self.path().join(name),
            database_url: Some(format!(
                "sqlite://{}",
                self.path().join(name).join("store.db").display()
            )),
            api_addr: "127.0.0.1:0".parse().unwrap(),
            link_addr: "127.0.0.1:0".parse().unwrap(),
            ca_cert: certs.join("ca.pem"),
            tls_cert: certs.join("master.pem"),
            tls_key: certs.join("master-key.pem"),
            modules_dir: PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/modules")),
            boot_wait_ms: 50,
            shutdown_grace_ms: 2_000,
            ..Config::default()
        }
    }

    /// The master's configuration (its store at `<site>/master/store.db`).
    pub fn master_config(&self) -> Config {
        self.base_config("master")
    }

    pub async fn master_store(&self) -> Store {
        Store::open(&StoreOptions::new(self.master_config().database_url()))
            .await
            .unwrap()
    }

    /// An edge's configuration, connecting to `master_link`.
    pub fn edge_config(
        &self,
        edge_id: Uuid,
        secret: &str,
        master_link: std::net::SocketAddr,
    ) -> Config {
        Config {
            edge_id: Some(edge_id),
            edge_secret: Some(SecretString::new(secret)),
            masters: vec![master_link.to_string()],
            heartbeat_ms: 200,
            dead_after_ms: 600,
            reconnect_ms: 200,
            ..self.base_config(&format!("edge-{edge_id}"))
        }
    }

    /// Copies every document of the master's store into the edge's replica,
    /// as replication will.
    pub async fn seed_replica(&self, edge_id: Uuid) {
        let master = self.master_store().await;
        let config = self.edge_config(edge_id, &"x".repeat(64), "127.0.0.1:1".parse().unwrap());
        let replica = Store::open(&StoreOptions::new(config.database_url()))
            .await
            .unwrap();
        let mut cursor = replica.begin_replication(master.store_id()).await.unwrap();
        loop {
            let docs = master.changes_since(cursor, 500).await.unwrap();
            let Some(last) = docs.last() else { break };
            cursor = last.seq;
            let batch: Vec<Replicated> = docs
                .into_iter()
                .map(|doc| Replicated {
                    refs: index_document(&doc.kind, &doc.body).unwrap().refs,
                    doc,
                })
                .collect();
            replica.apply_replicated(&batch, cursor).await.unwrap();
        }
        replica.close().await;
        master.close().await;
    }
}

/// Polls `check` every 10 ms until it holds, for at most `secs` seconds.
pub async fn eventually(secs: u64, what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(secs);
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

/// A module for `driver` at `addr` (`None`: a logic module).
pub fn device(
    name: &str,
    driver: &str,
    addr: Option<std::net::SocketAddr>,
) -> outpost::model::Module {
    outpost::model::Module {
        id: outpost::model::new_id(),
        name: name.into(),
        driver: driver.into(),
        uri: addr.map(|a| format!("tcp://{a}")),
        settings: Default::default(),
        enabled: true,
    }
}

/// What `Site::one_room` imported.
pub struct Room {
    pub edge_id: Uuid,
    pub system: outpost::model::ControlSystem,
    /// The edge location's secret, as shown at creation.
    pub secret: String,
}

impl Site {
    /// Imports into the master's store one edge location (`location`: extra
    /// fields of its document, e.g. `{"admins": [...]}`) owning one room that
    /// lists `modules`.
    pub async fn one_room(
        &self,
        location: serde_json::Value,
        modules: &[outpost::model::Module],
    ) -> Room {
        let edge_id = outpost::model::new_id();
        let mut doc = serde_json::json!({"id": edge_id, "name": "Site"});
        doc.as_object_mut()
            .unwrap()
            .extend(location.as_object().cloned().unwrap_or_default());
        let system = outpost::model::ControlSystem {
            id: outpost::model::new_id(),
            name: "Room".into(),
            description: String::new(),
            edge_id: Some(edge_id),
            module_ids: modules.iter().map(|m| m.id).collect(),
            settings: Default::default(),
            stopped: false,
        };
        let site = outpost::admin::SiteFile {
            edges: vec![serde_json::from_value(doc).unwrap()],
            systems: vec![system.clone()],
            modules: modules.to_vec(),
        };
        let store = self.master_store().await;
        let report = outpost::admin::import(&store, &site, &Default::default())
            .await
            .unwrap();
        store.close().await;
        Room {
            edge_id,
            system,
            secret: report.secrets[0].2.expose().to_owned(),
        }
    }
}

impl Site {
    /// Imports into the master's store one room that the master runs
    /// itself (no `edge_id`), listing `modules`.
    pub async fn master_room(&self, config: &Config, modules: &[outpost::model::Module]) {
        let system = outpost::model::ControlSystem {
            id: outpost::model::new_id(),
            name: "Boardroom".into(),
            description: String::new(),
            edge_id: None,
            module_ids: modules.iter().map(|m| m.id).collect(),
            settings: Default::default(),
            stopped: false,
        };
        let site = outpost::admin::SiteFile {
            edges: vec![],
            systems: vec![system],
            modules: modules.to_vec(),
        };
        let store = open_store(config).await;
        outpost::admin::import(&store, &site, &Default::default())
            .await
            .unwrap();
        store.close().await;
    }
}

/// An edge running as its own `outpost edge` process, so a test can kill
/// it the way a power cut does (SIGKILL: no goodbye on the link, the
/// kernel closes its sockets).
pub struct EdgeProcess {
    child: tokio::process::Child,
    pub log: PathBuf,
}

impl EdgeProcess {
    /// Starts `outpost edge` with `config` passed as `OUTPOST_*` variables.
    pub fn spawn(config: &Config) -> EdgeProcess {
        let command = tokio::process::Command::new(env!("CARGO_BIN_EXE_outpost"));
        EdgeProcess::spawn_with(command, config)
    }

    /// As [`EdgeProcess::spawn`], through `command`: the outpost binary,
    /// or a wrapper that execs it (`ip netns exec NAME outpost`), so that
    /// the pid is the edge's.
    pub fn spawn_with(mut command: tokio::process::Command, config: &Config) -> EdgeProcess {
        std::fs::create_dir_all(&config.data_dir).unwrap();
        // Beside the data directory, not in it: the fault suite fills that
        // disk, and the log must still say what the edge made of it.
        let log = config.data_dir.with_extension("log");
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        let vars: Vec<(&str, String)> = vec![
            ("OUTPOST_EDGE_ID", config.edge_id.unwrap().to_string()),
            (
                "OUTPOST_EDGE_SECRET",
                config.edge_secret.as_ref().unwrap().expose().to_owned(),
            ),
            ("OUTPOST_MASTERS", config.masters.join(",")),
            ("OUTPOST_DATA_DIR", config.data_dir.display().to_string()),
            ("OUTPOST_DATABASE_URL", config.database_url()),
            ("OUTPOST_API_ADDR", config.api_addr.to_string()),
            ("OUTPOST_CA_CERT", config.ca_cert.display().to_string()),
            (
                "OUTPOST_MODULES_DIR",
                config.modules_dir.display().to_string(),
            ),
            ("OUTPOST_HEARTBEAT_MS", config.heartbeat_ms.to_string()),
            ("OUTPOST_DEAD_AFTER_MS", config.dead_after_ms.to_string()),
            ("OUTPOST_RECONNECT_MS", config.reconnect_ms.to_string()),
            ("OUTPOST_EVENT_RETRY_MS", config.event_retry_ms.to_string()),
            (
                "OUTPOST_SHUTDOWN_GRACE_MS",
                config.shutdown_grace_ms.to_string(),
            ),
            ("OUTPOST_LOG", "info".into()),
        ];
        let child = command
            .arg("edge")
            .current_dir(config.data_dir.parent().unwrap())
            .env_clear()
            .envs(vars)
            .stdin(std::process::Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .kill_on_drop(true)
            .spawn()
            .expect("cannot start the outpost binary");
        EdgeProcess { child, log }
    }

    /// The process id, for signals other than SIGKILL.
    pub fn pid(&self) -> u32 {
        self.child.id().expect("the edge process is still running")
    }

    /// SIGKILL, and wait for the process to be gone.
    pub async fn kill(mut self) {
        self.child.kill().await.unwrap();
    }

    /// SIGTERM (a graceful stop, as a service manager does it), and wait
    /// for the process to exit.
    pub async fn terminate(mut self) {
        let pid = self.child.id().expect("the edge is running");
        let sent = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .unwrap();
        assert!(sent.success());
        let status = self.child.wait().await.unwrap();
        assert!(status.success(), "{status}: {}", self.log_text());
    }

    /// What the process logged (for failure messages).
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// How the process ended, once it has.
    pub fn exit_status(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }
}

/// A master or an edge on a tokio runtime of its own, so that a test can
/// kill it: [`Killable::kill`] drops every task of that runtime where it
/// stands (no graceful stop, no flush, open transactions rolled back as the
/// connections close), as a process killed mid-work would.
pub struct Killable<T> {
    rt: Option<tokio::runtime::Runtime>,
    role: Option<T>,
}

impl<T: Send + 'static> Killable<T> {
    /// Runs `start` on a new runtime and keeps what it returns.
    pub async fn start<F>(start: F) -> Killable<T>
    where
        F: std::future::Future<Output = T> + Send + 'static,
    {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let role = rt.spawn(start).await.unwrap();
        Killable {
            rt: Some(rt),
            role: Some(role),
        }
    }

    pub fn get(&self) -> &T {
        self.role.as_ref().unwrap()
    }

    /// Kills it: every task is dropped at its current await point.
    pub fn kill(mut self) {
        let rt = self.rt.take().unwrap();
        {
            let _inside = rt.enter();
            drop(self.role.take());
        }
        rt.shutdown_background();
    }

    /// Runs `f` (a graceful stop) on its own runtime.
    pub async fn stop_with<F, Fut>(mut self, f: F)
    where
        F: FnOnce(T) -> Fut,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        let rt = self.rt.take().unwrap();
        let fut = f(self.role.take().unwrap());
        rt.spawn(fut).await.unwrap();
        rt.shutdown_background();
    }
}

/// Starts a master whose link listens on `link` (a restarted master takes
/// the address of the one it replaces; the old socket may take a moment to
/// be released after a kill).
pub async fn master_on(mut config: Config, link: std::net::SocketAddr) -> outpost::master::Master {
    config.link_addr = link;
    for _ in 0..100 {
        match outpost::master::start(config.clone()).await {
            Ok(m) => return m,
            Err(e) if e.to_string().contains("cannot listen") => {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await
            }
            Err(e) => panic!("master did not start: {e}"),
        }
    }
    panic!("the link address {link} was not released");
}

/// A second handle on a role's SQLite store, for a test to look at it (or
/// write to it) while the role runs.
pub async fn open_store(config: &Config) -> Store {
    Store::open(&StoreOptions::new(config.database_url()))
        .await
        .unwrap()
}

/// Holds SQLite's write lock on a store's file until dropped (or
/// `release`d): the role's writes wait (its reads do not), so a test can
/// stop a role just before it records something.
pub struct WriteLock(sqlx::SqliteConnection);

impl WriteLock {
    pub async fn take(config: &Config) -> WriteLock {
        use sqlx::Connection as _;
        use sqlx::Executor as _;
        let url = config.database_url();
        let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
        conn.execute("BEGIN IMMEDIATE").await.unwrap();
        WriteLock(conn)
    }

    pub async fn release(mut self) {
        use sqlx::Connection as _;
        use sqlx::Executor as _;
        self.0.execute("ROLLBACK").await.unwrap();
        self.0.close().await.unwrap();
    }
}
