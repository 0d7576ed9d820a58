//! One run of the fault suite: the processes, their simulators and proxies,
//! the settle check after each heal, and the invariants at the end.

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::process::Stdio;
use std::time::{Duration, Instant};

use outpost::config::Config;
use outpost::sim::{PjlinkOptions, PjlinkSim};
use outpost::store::{Store, StoreOptions};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::disk::Disk;
use crate::faults::Fault;
use crate::http::request;
use crate::netns::EdgeNet;
use crate::proxy::Proxy;
use crate::roles::{EdgeProcess, Site, device};

/// How long a site may take to settle after a heal before the run fails.
/// Generous on purpose: the figure that matters is printed, not asserted.
const SETTLE_BOUND: Duration = Duration::from_secs(45);
const EDGES: usize = 2;

/// What a run measured.
#[derive(Debug, Default)]
pub struct Report {
    pub faults: Vec<String>,
    pub settles: Vec<Duration>,
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (fault, settle) in self.faults.iter().zip(&self.settles) {
            write!(f, "[{fault} settled in {settle:.1?}] ")?;
        }
        Ok(())
    }
}

/// An edge process with its simulator and the proxy in front of its link.
pub struct EdgeUnit {
    pub id: Uuid,
    config: Config,
    process: Option<EdgeProcess>,
    pub proxy: Proxy,
    pub sim: PjlinkSim,
    /// The edge's data directory on a disk of its own, when mounts work.
    pub disk: Option<Disk>,
    /// The edge's network namespace, where `ip netns` works. Last: the
    /// process above is killed before the namespace goes.
    pub net: Option<EdgeNet>,
}

impl EdgeUnit {
    pub fn spawn(&mut self) {
        let bin = std::path::Path::new(env!("CARGO_BIN_EXE_outpost"));
        self.process = Some(match &self.net {
            Some(net) => EdgeProcess::spawn_with(net.command(bin), &self.config),
            None => EdgeProcess::spawn(&self.config),
        });
    }

    pub async fn kill(&mut self) {
        if let Some(p) = self.process.take() {
            p.kill().await;
        }
    }

    pub fn pid(&self) -> u32 {
        self.process.as_ref().expect("the edge runs").pid()
    }

    fn log(&self) -> String {
        self.process
            .as_ref()
            .map(EdgeProcess::log_text)
            .unwrap_or_default()
    }

    /// How the edge process ended, if it did: an edge must never exit on
    /// its own, whatever the fault.
    fn exited(&mut self) -> Option<String> {
        let process = self.process.as_mut()?;
        process.exit_status().map(|s| s.to_string())
    }
}

/// The master as an `outpost master` process on fixed ports.
pub struct MasterProcess {
    child: tokio::process::Child,
}

impl MasterProcess {
    pub async fn kill(&mut self) {
        self.child.kill().await.unwrap();
    }

    pub fn pid(&self) -> u32 {
        self.child.id().expect("the master runs")
    }
}

pub struct World {
    pub master: MasterProcess,
    master_config: Config,
    api: SocketAddr,
    admin: String,
    pub edges: Vec<EdgeUnit>,
    master_sim: PjlinkSim,
    pub dead_after: Duration,
    /// The master's data directory on a disk of its own, when mounts work.
    pub master_disk: Option<Disk>,
    /// Holds the run's directory (certificates, databases, logs). Last, so
    /// that the disks above are unmounted before it is removed.
    _site: Site,
}

fn reserve() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

async fn sim(ip: IpAddr) -> PjlinkSim {
    PjlinkSim::start((ip, 0).into(), PjlinkOptions::default())
        .await
        .unwrap()
}

const LOOPBACK: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

impl World {
    async fn new() -> World {
        // Each edge in a namespace of its own where the machine allows it:
        // it reaches the master through the fault proxy on its uplink, and
        // its simulator on its device LAN (netns.rs). The master stays on
        // loopback; its certificate names the uplink addresses.
        let nets: Vec<Option<EdgeNet>> = (0..EDGES).map(|_| EdgeNet::create()).collect();
        let hosts: Vec<String> = nets
            .iter()
            .flatten()
            .map(|n| n.uplink_addr().to_string())
            .collect();
        let site = Site::with_hosts(&hosts);
        let mut master_config = site.master_config();
        master_config.api_addr = reserve();
        master_config.link_addr = reserve();
        let master_disk = Disk::mount(&master_config.data_dir);
        let master_sim = sim(LOOPBACK).await;
        let projector = device("Projector", "pjlink.lua", Some(master_sim.addr()));
        site.master_room(&master_config, &[projector]).await;
        let mut edges = Vec::new();
        for (n, net) in nets.into_iter().enumerate() {
            let sim = sim(net.as_ref().map_or(LOOPBACK, EdgeNet::lan_addr)).await;
            let room = site
                .one_room(
                    json!({"name": format!("Site {n}"), "failover": true, "failover_timeout_ms": 1000}),
                    &[device("Projector", "pjlink.lua", Some(sim.addr()))],
                )
                .await;
            let uplink = net.as_ref().map_or(LOOPBACK, EdgeNet::uplink_addr);
            let proxy = Proxy::start_on(uplink, master_config.link_addr).await;
            let mut config = site.edge_config(room.edge_id, &room.secret, proxy.addr());
            config.event_retry_ms = 500;
            let disk = master_disk
                .as_ref()
                .and_then(|_| Disk::mount(&config.data_dir));
            edges.push(EdgeUnit {
                id: room.edge_id,
                config,
                process: None,
                proxy,
                sim,
                disk,
                net,
            });
        }
        let admin = "c".repeat(48);
        let master = MasterProcess {
            child: spawn_master(&master_config, &admin),
        };
        let mut world = World {
            dead_after: Duration::from_millis(edges[0].config.dead_after_ms),
            api: master_config.api_addr,
            _site: site,
            master,
            master_config,
            admin,
            edges,
            master_sim,
            master_disk,
        };
        world.wait_for_master().await;
        for e in &mut world.edges {
            e.spawn();
        }
        world
    }

    /// Starts the master again on its ports (a killed one's ports may take
    /// a moment to be free: it retries while the new process fails).
    pub fn spawn_master(&mut self) {
        self.master = MasterProcess {
            child: spawn_master(&self.master_config, &self.admin),
        };
    }

    async fn wait_for_master(&mut self) {
        let deadline = Instant::now() + SETTLE_BOUND;
        loop {
            if self.get("/api/v1/health").await.is_some() {
                return;
            }
            if let Ok(Some(_)) = self.master.child.try_wait() {
                self.spawn_master();
            }
            assert!(
                Instant::now() < deadline,
                "the master did not start:\n{}",
                self.master_log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The master killed and started again on its disk mounted read-only:
    /// it must exit, saying why, without driving anything. Then the disk is
    /// writable again and the master starts as after any restart.
    pub async fn restart_master_read_only(&mut self, hold: Duration) {
        self.master.kill().await;
        let disk = self
            .master_disk
            .as_ref()
            .expect("storage faults need disks");
        assert!(disk.read_only(true), "the master's disk remounts read-only");
        self.spawn_master();
        let exited = tokio::time::timeout(SETTLE_BOUND, self.master.child.wait()).await;
        let status = exited.expect("a master on a read-only disk exits").unwrap();
        let log = self.master_log();
        assert!(
            !status.success() && log.contains("Read-only file system"),
            "a master on a read-only disk exits with an error naming it ({status}):\n{log}"
        );
        tokio::time::sleep(hold).await;
        let disk = self
            .master_disk
            .as_ref()
            .expect("storage faults need disks");
        assert!(disk.read_only(false), "the master's disk remounts writable");
        self.spawn_master();
    }

    /// An operator's restore of site `i` (409 when the edge already holds
    /// it or is not connected: both fine here).
    pub async fn restore(&self, i: usize) {
        let auth = format!("Bearer {}", self.admin);
        let path = format!("/api/v1/edges/{}/restore", self.edges[i].id);
        let r = request(
            self.api,
            "POST",
            &path,
            &[("Authorization", &auth)],
            Some("{}"),
        )
        .await;
        assert!(
            matches!(r.status, 200 | 409 | 503),
            "restore: {} {}",
            r.status,
            r.body
        );
    }

    async fn get(&self, path: &str) -> Option<Value> {
        let auth = format!("Bearer {}", self.admin);
        let api = self.api;
        let path = path.to_owned();
        // A stopped master accepts but never answers: bound each call.
        let call = async move {
            if tokio::net::TcpStream::connect(api).await.is_err() {
                return None;
            }
            let r = request(api, "GET", &path, &[("Authorization", &auth)], None).await;
            (r.status == 200).then(|| r.json())
        };
        tokio::time::timeout(Duration::from_secs(2), tokio::spawn(call))
            .await
            .ok()
            .and_then(|joined| joined.ok().flatten())
    }

    fn master_log_full(&self) -> String {
        std::fs::read_to_string(master_log_path(&self.master_config)).unwrap_or_default()
    }

    fn master_log(&self) -> String {
        let text = self.master_log_full();
        text.lines()
            .rev()
            .take(40)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn devices(&self) -> impl Iterator<Item = &PjlinkSim> {
        self.edges
            .iter()
            .map(|e| &e.sim)
            .chain(std::iter::once(&self.master_sim))
    }

    /// Every site's edge connected and one controller decided, every
    /// device held by exactly one side. Answers how long that took.
    async fn settle(&mut self) -> Duration {
        let start = Instant::now();
        let mut last = Value::Null;
        loop {
            if let Some(sites) = self.get("/api/v1/sites").await {
                // A restarted edge drives nothing until told to, so the
                // master may keep a site it took over (until a restore or
                // a window): either side is a settled controller.
                let decided = sites.as_array().is_some_and(|s| {
                    s.len() == EDGES
                        && s.iter().all(|x| {
                            x["connected"] == json!(true)
                                && (x["controller"] == json!("edge")
                                    || x["controller"] == json!("master"))
                        })
                });
                if decided && self.devices().all(|d| d.connections() == 1) {
                    return start.elapsed();
                }
                last = sites;
            } else if let Ok(Some(status)) = self.master.child.try_wait() {
                panic!("the master exited ({status}):\n{}", self.master_log());
            }
            for e in &mut self.edges {
                if let Some(status) = e.exited() {
                    panic!("edge {} exited on its own ({status}):\n{}", e.id, e.log());
                }
            }
            if start.elapsed() > SETTLE_BOUND {
                let counts: Vec<usize> = self.devices().map(PjlinkSim::connections).collect();
                let logs: Vec<String> = self.edges.iter().map(EdgeUnit::log).collect();
                panic!(
                    "not settled after {SETTLE_BOUND:?}: sites {last}, device connections {counts:?}\nmaster:\n{}\nedges:\n{}",
                    self.master_log(),
                    logs.join("\n----\n")
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn reset_device_counts(&self) {
        for d in self.devices() {
            d.reset_max_connections();
        }
    }

    /// No device had two controllers since the last reset (a healthy span).
    fn assert_one_controller_per_device(&self, span: &str) {
        for (n, d) in self.devices().enumerate() {
            if d.max_connections_seen() > 1 {
                let logs: Vec<String> = self.edges.iter().map(EdgeUnit::log).collect();
                panic!(
                    "device {n} had {} connections at once while the links were healthy ({span})\nmaster:\n{}\nedges:\n{}",
                    d.max_connections_seen(),
                    self.master_log(),
                    logs.join("\n----\n")
                );
            }
        }
    }
}

/// Beside the data directory, not in it: the nemesis makes that disk full
/// or read-only, and the log must tell what the master made of it.
fn master_log_path(config: &Config) -> std::path::PathBuf {
    config.data_dir.with_extension("log")
}

fn spawn_master(config: &Config, admin: &str) -> tokio::process::Child {
    std::fs::create_dir_all(&config.data_dir).unwrap();
    let log = master_log_path(config);
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    let vars: Vec<(&str, String)> = vec![
        ("OUTPOST_DATA_DIR", config.data_dir.display().to_string()),
        ("OUTPOST_DATABASE_URL", config.database_url()),
        ("OUTPOST_API_ADDR", config.api_addr.to_string()),
        ("OUTPOST_LINK_ADDR", config.link_addr.to_string()),
        ("OUTPOST_CA_CERT", config.ca_cert.display().to_string()),
        ("OUTPOST_TLS_CERT", config.tls_cert.display().to_string()),
        ("OUTPOST_TLS_KEY", config.tls_key.display().to_string()),
        (
            "OUTPOST_MODULES_DIR",
            config.modules_dir.display().to_string(),
        ),
        ("OUTPOST_ADMIN_KEY", admin.to_owned()),
        ("OUTPOST_BOOT_WAIT_MS", "300".into()),
        ("OUTPOST_HEARTBEAT_MS", "200".into()),
        ("OUTPOST_DEAD_AFTER_MS", "600".into()),
        // The hold-down would keep a flapping site at the master on
        // purpose; the suite checks the hand-overs themselves.
        ("OUTPOST_MAX_CONTROL_CHANGES_PER_MINUTE", "0".into()),
        ("OUTPOST_SYNC_INTERVAL_MS", "1000".into()),
        ("OUTPOST_SHUTDOWN_GRACE_MS", "2000".into()),
        ("OUTPOST_LOG", "info".into()),
    ];
    tokio::process::Command::new(env!("CARGO_BIN_EXE_outpost"))
        .arg("master")
        .current_dir(config.data_dir.parent().unwrap())
        .env_clear()
        .envs(vars)
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .kill_on_drop(true)
        .spawn()
        .expect("cannot start the outpost binary")
}

/// One seeded run: settle, `faults` faults each followed by a settle, then
/// the end-of-run invariants.
pub async fn run(seed: u64, faults: u64) -> Report {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut world = World::new().await;
    let mut report = Report::default();
    world.settle().await;
    world.reset_device_counts();
    for _ in 0..faults {
        let fault = Fault::pick(
            &mut rng,
            EDGES,
            world.master_disk.is_some(),
            world.in_namespaces(),
        );
        let hold = Duration::from_millis(rng.u64(300..=2_000));
        world.inject(fault, &mut rng, hold, &mut report).await;
    }
    world.finish().await;
    report
}

impl World {
    /// Whether every edge runs in a network namespace of its own (and so
    /// can be partitioned).
    pub fn in_namespaces(&self) -> bool {
        self.edges.iter().all(|e| e.net.is_some())
    }

    /// One fault, held for `hold`, healed, and settled.
    async fn inject(
        &mut self,
        fault: Fault,
        rng: &mut fastrand::Rng,
        hold: Duration,
        report: &mut Report,
    ) {
        self.assert_one_controller_per_device(&format!("before {fault:?}"));
        fault.run(self, rng, hold).await;
        if matches!(fault, Fault::KillMaster | Fault::MasterReadOnly) {
            self.wait_for_master().await;
        }
        report.faults.push(format!("{fault:?} for {hold:?}"));
        report.settles.push(self.settle().await);
        self.reset_device_counts();
    }

    /// The end-of-run invariants: a healthy span after the last heal, then
    /// the records.
    async fn finish(&self) {
        tokio::time::sleep(Duration::from_millis(500)).await;
        self.assert_one_controller_per_device("after the last heal");
        self.check_control_logs().await;
        self.check_events().await;
    }

    /// Epochs go up by one at every change of controller, and the audit log
    /// has every one of them, ending at the epoch the master reports.
    async fn check_control_logs(&self) {
        let sites = self.get("/api/v1/sites").await.expect("the sites");
        for e in &self.edges {
            let log = self
                .get(&format!("/api/v1/edges/{}/control-log?limit=1000", e.id))
                .await
                .expect("the control log");
            let mut epochs: Vec<i64> = log
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r["epoch"].as_i64().unwrap())
                .collect();
            epochs.reverse(); // newest first on the wire
            let expected: Vec<i64> = (1..=epochs.len() as i64).collect();
            assert_eq!(
                epochs, expected,
                "edge {}: epochs with gaps or repeats",
                e.id
            );
            let current = sites
                .as_array()
                .unwrap()
                .iter()
                .find(|s| s["id"] == json!(e.id))
                .map(|s| s["epoch"].as_i64().unwrap());
            assert_eq!(
                current,
                epochs.last().copied(),
                "edge {}: the log ends at the current epoch",
                e.id
            );
        }
    }

    /// Every event each edge logged reaches the master exactly once.
    async fn check_events(&self) {
        let master = open(&self.master_config).await;
        for e in &self.edges {
            let edge = Store::open(&StoreOptions::new(e.config.database_url()))
                .await
                .unwrap_or_else(|err| panic!("edge {}: open its store: {err}\n{}", e.id, e.log()));
            let deadline = Instant::now() + SETTLE_BOUND;
            while edge.event_counts().await.unwrap().0 > 0 {
                assert!(
                    Instant::now() < deadline,
                    "edge {}: events never synced",
                    e.id
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            let logged = edge.events_of(e.id, 0, 1_000_000).await.unwrap();
            let stored = master.events_of(e.id, 0, 1_000_000).await.unwrap();
            let mut seen = HashSet::new();
            for s in &stored {
                assert!(
                    seen.insert(s.event.id),
                    "edge {}: event {} stored twice",
                    e.id,
                    s.event.id
                );
            }
            for l in &logged {
                assert!(
                    seen.contains(&l.event.id),
                    "edge {}: event {} lost",
                    e.id,
                    l.event.id
                );
            }
            edge.close().await;
        }
        master.close().await;
    }
}

async fn open(config: &Config) -> Store {
    let url = config.database_url();
    Store::open(&StoreOptions::new(url.clone()))
        .await
        .unwrap_or_else(|e| panic!("open {url}: {e}"))
}

/// SIGSTOP of an edge, then of the master, each past the dead interval.
/// Answers how long each side took to declare the stopped one lost.
pub async fn stopped_processes() -> (Duration, Duration) {
    let mut world = World::new().await;
    world.settle().await;

    let pid = world.edges[0].pid();
    crate::faults::signal("-STOP", pid);
    let stopped = Instant::now();
    let id = world.edges[0].id;
    let mut edge_detected = None;
    while stopped.elapsed() < SETTLE_BOUND {
        let sites = world.get("/api/v1/sites").await.unwrap_or_default();
        let lost = sites
            .as_array()
            .and_then(|s| s.iter().find(|x| x["id"] == json!(id)))
            .is_some_and(|x| x["connected"] == json!(false));
        if lost {
            edge_detected = Some(stopped.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    crate::faults::signal("-CONT", pid);
    let edge_detected = edge_detected.expect("the master never declared the stopped edge lost");
    world.settle().await;

    let log_before = world.edges[1].log().matches("link lost").count();
    let pid = world.master.pid();
    crate::faults::signal("-STOP", pid);
    let stopped = Instant::now();
    let mut master_detected = None;
    while stopped.elapsed() < SETTLE_BOUND {
        if world.edges[1].log().matches("link lost").count() > log_before {
            master_detected = Some(stopped.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    crate::faults::signal("-CONT", pid);
    let master_detected = master_detected.expect("the edge never declared the stopped master lost");
    world.settle().await;
    (edge_detected, master_detected)
}

/// What [`partition_sequence`] saw of its first partition.
#[derive(Debug)]
pub struct PartitionSeen {
    /// From the partition to the master reporting the edge disconnected.
    pub master_detected: Duration,
    /// The master's log line for that loss (its reason).
    pub master_line: String,
    /// The edge's own log lines from the partition until the heal.
    pub edge_lines: Vec<String>,
    pub report: Report,
}

/// The lines of `log` after the first `skip` that contain every one of
/// `words`.
fn lines_with(log: &str, skip: usize, words: &[&str]) -> Vec<String> {
    log.lines()
        .skip(skip)
        .filter(|l| words.iter().all(|w| l.contains(w)))
        .map(str::to_owned)
        .collect()
}

/// A fixed sequence around real partitions (edges in network namespaces),
/// ending with the run's invariants; `None` where namespaces are not
/// available. The first `Partition(0)` is watched: the master must lose
/// the edge by its heartbeat (`dead_after`: no frame), not by a reset or a
/// close, and the edge, cut off from the master but not from its devices,
/// must run its site on its own while the master takes it over (its
/// device then has two controllers, one from each side of the partition).
pub async fn partition_sequence() -> Option<PartitionSeen> {
    if !crate::netns::available() {
        return None;
    }
    let mut world = World::new().await;
    assert!(world.in_namespaces(), "every edge in a namespace");
    let mut rng = fastrand::Rng::with_seed(0);
    let mut report = Report::default();
    world.settle().await;
    world.reset_device_counts();
    world.assert_one_controller_per_device("before the partition");

    // The edge really is elsewhere: its network namespace is not ours.
    let ns_of = |pid: String| std::fs::read_link(format!("/proc/{pid}/ns/net")).unwrap();
    assert_ne!(
        ns_of(world.edges[0].pid().to_string()),
        ns_of("self".into()),
        "the edge runs in a network namespace of its own"
    );
    let id = world.edges[0].id.to_string();
    let master_skip = world.master_log_full().lines().count();
    let edge_skip = world.edges[0].log().lines().count();
    let net = world.edges[0].net.as_ref().unwrap();
    net.partition();
    let partitioned = Instant::now();
    let mut master_detected = None;
    let mut both_drive = false;
    while partitioned.elapsed() < SETTLE_BOUND {
        if master_detected.is_none() {
            let sites = world.get("/api/v1/sites").await.unwrap_or_default();
            let lost = sites
                .as_array()
                .and_then(|s| s.iter().find(|x| x["id"] == json!(id)))
                .is_some_and(|x| x["connected"] == json!(false));
            if lost {
                master_detected = Some(partitioned.elapsed());
            }
        }
        // The master runs the site once the failover timeout has passed;
        // the edge never let go of its device.
        both_drive = both_drive || world.edges[0].sim.connections() == 2;
        if master_detected.is_some() && both_drive && partitioned.elapsed() > world.dead_after * 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let edge_lines = lines_with(&world.edges[0].log(), edge_skip, &["edge_id"]);
    world.edges[0].net.as_ref().unwrap().heal();
    let held = partitioned.elapsed();
    let master_detected = master_detected.unwrap_or_else(|| {
        panic!(
            "the master never lost the partitioned edge:\n{}",
            world.master_log()
        )
    });
    assert!(
        both_drive,
        "during the partition the edge runs its site on its own while the master takes it over: {} device connections\nedge:\n{}",
        world.edges[0].sim.connections(),
        edge_lines.join("\n")
    );
    let lost = lines_with(
        &world.master_log_full(),
        master_skip,
        &["edge link lost", &id],
    );
    // The link layer's line and the control's, for the one session.
    assert!(
        !lost.is_empty() && lost.iter().all(|l| l.contains("no frame from the peer")),
        "the master lost the edge by its heartbeat, not by a reset or a close: {lost:?}"
    );
    let master_line = lost.last().unwrap().clone();
    // The edge, too, hears nothing: its side of the link dies of silence.
    // (It declares itself disconnected only after its next connection
    // attempt has timed out, which under a silent drop is the handshake
    // timeout; it did not stop its site meanwhile, as the device shows.)
    assert!(
        edge_lines
            .iter()
            .any(|l| l.contains("link lost") && l.contains("no frame from the peer")),
        "the edge lost the link by its heartbeat: {edge_lines:?}"
    );
    report
        .faults
        .push(format!("{:?} for {held:?}", Fault::Partition(0)));
    report.settles.push(world.settle().await);
    world.reset_device_counts();

    for (fault, hold) in [
        (Fault::Restore(0), 500),
        (Fault::Partition(0), 800),
        (Fault::Cut(1), 500),
        (Fault::Partition(1), 1_500),
        (Fault::KillEdge(0), 500),
    ] {
        let hold = Duration::from_millis(hold);
        world.inject(fault, &mut rng, hold, &mut report).await;
    }
    world.finish().await;
    Some(PartitionSeen {
        master_detected,
        master_line,
        edge_lines,
        report,
    })
}
