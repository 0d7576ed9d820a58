//! `outpost demo`: a whole system in one command, for a newcomer to watch.
//!
//! In this process: a master (serving the console) and a PJLink projector
//! and a line-protocol device simulator for every module. As child
//! processes of this same binary: two edges, "sydney" (`failover = true`,
//! 5 s timeout) and "perth" (no failover), so killing one is a real kill.
//! Everything lives in a temporary directory (or `--dir`). Ctrl-C stops the
//! children, then the master and the simulators, and removes the temporary
//! directory: nothing is left running.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use uuid::Uuid;

use crate::config::{Config, SecretString};
use crate::model::{ControlSystem, EdgeLocation, Module};
use crate::sim::{LineOptions, LineSim, PjlinkOptions, PjlinkSim};

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Directory for the demo's certificates, stores and logs (default: a
    /// new temporary directory, removed at exit). Its earlier demo data is
    /// replaced.
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Kill this edge (`sydney` or `perth`) once everything runs, to watch
    /// the master take over; it is started again later, for a restore.
    #[arg(long, value_name = "NAME")]
    pub kill_edge: Option<String>,
    /// Seconds after start before `--kill-edge` kills the edge.
    #[arg(long, default_value_t = 20)]
    pub kill_after: u64,
    /// Where the master serves the console and the API.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub api_addr: SocketAddr,
}

/// The failover timeout of the site that fails over.
const FAILOVER_MS: u64 = 5_000;
/// How long the killed edge stays away before it is started again.
const AWAY: Duration = Duration::from_secs(20);
/// How long every device may take to get its first connection.
const CONNECT_WAIT: Duration = Duration::from_secs(60);

/// The drivers the demo's modules use, from the binary itself, so the demo
/// runs from any directory.
const DRIVERS: [(&str, &str); 2] = [
    ("pjlink.lua", include_str!("../modules/pjlink.lua")),
    ("line.lua", include_str!("../modules/line.lua")),
];

struct DemoSite {
    name: &'static str,
    location: EdgeLocation,
    secret: String,
    projector: PjlinkSim,
    display: LineSim,
}

/// One edge child process.
struct EdgeChild {
    name: &'static str,
    child: tokio::process::Child,
}

/// Entry point from the command line.
pub fn main(args: DemoArgs) -> ExitCode {
    let filter = tracing_subscriber::EnvFilter::try_new(
        std::env::var("OUTPOST_LOG").unwrap_or_else(|_| "warn".into()),
    )
    .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
    #[allow(
        clippy::expect_used,
        reason = "without a runtime nothing can run; the panic message says why"
    )]
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("cannot start the tokio runtime");
    match rt.block_on(run(args, crate::shutdown::signal())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("outpost demo: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Runs the demo until `shutdown` completes.
pub async fn run(args: DemoArgs, shutdown: impl Future<Output = ()>) -> Result<(), String> {
    let (dir, temporary) = match &args.dir {
        Some(d) => (d.clone(), false),
        None => {
            let d = std::env::temp_dir().join(format!(
                "outpost-demo-{}-{}",
                std::process::id(),
                Uuid::now_v7().simple()
            ));
            (d, true)
        }
    };
    let result = run_in(&dir, &args, shutdown).await;
    if temporary {
        let _ = std::fs::remove_dir_all(&dir);
    }
    result
}

fn io(what: &str, path: &Path) -> impl FnOnce(std::io::Error) -> String {
    let text = format!("cannot {what} {}", path.display());
    move |e| format!("{text}: {e}")
}

async fn run_in(
    dir: &Path,
    args: &DemoArgs,
    shutdown: impl Future<Output = ()>,
) -> Result<(), String> {
    crate::certs::install_crypto_provider();
    let (config, key, key_path) = prepare(dir, args)?;
    let sites = import_sites(&config).await?;
    let master_task = tokio::spawn(crate::master::start(config.clone()));
    let mut edges = Vec::new();
    for site in &sites {
        edges.push(spawn_edge(dir, &config, site)?);
    }
    let master = match master_task.await {
        Ok(Ok(m)) => m,
        Ok(Err(e)) => {
            return Err(format!(
                "the master did not start: {}",
                crate::util::describe(&e)
            ));
        }
        Err(e) => return Err(format!("the master did not start: {e}")),
    };
    let url = format!("http://{}/", master.api_addr);
    println!("Outpost demo in {}", dir.display());
    println!("master: console and API at {url}");
    for e in &edges {
        println!("edge {}: pid {}", e.name, e.child.id().unwrap_or(0));
    }
    report_devices(dir, &sites).await;
    print_guide(&url, &key, &key_path, args);
    tokio::select! {
        () = shutdown => {}
        () = kill_script(dir, &config, args, &sites, &mut edges) => {}
    }
    println!("stopping");
    for e in &mut edges {
        let _ = e.child.kill().await;
    }
    master.stop().await;
    drop(sites);
    println!("stopped");
    Ok(())
}

/// A fresh demo directory: drivers, development certificates, an admin key,
/// and the master's configuration.
fn prepare(dir: &Path, args: &DemoArgs) -> Result<(Config, String, PathBuf), String> {
    // Earlier demo data would hold other devices' addresses: start afresh.
    for sub in ["certs", "master", "edges", "modules"] {
        let _ = std::fs::remove_dir_all(dir.join(sub));
    }
    let modules_dir = dir.join("modules");
    std::fs::create_dir_all(&modules_dir).map_err(io("create", &modules_dir))?;
    for (name, text) in DRIVERS {
        let path = modules_dir.join(name);
        std::fs::write(&path, text).map_err(io("write", &path))?;
    }
    let certs = dir.join("certs");
    crate::certs::init_dev(&certs, &["localhost".into(), "127.0.0.1".into()], true)
        .map_err(|e| crate::util::describe(&e))?;
    let key = crate::model::ApiKey::generate();
    let key_path = dir.join("admin-key");
    std::fs::write(&key_path, format!("{key}\n")).map_err(io("write", &key_path))?;
    let link = reserve_port().map_err(|e| format!("cannot find a free port: {e}"))?;
    let config = Config {
        data_dir: dir.join("master"),
        api_addr: args.api_addr,
        link_addr: link,
        ca_cert: certs.join(crate::certs::CA_CERT),
        tls_cert: certs.join(crate::certs::MASTER_CERT),
        tls_key: certs.join(crate::certs::MASTER_KEY),
        modules_dir,
        admin_key: Some(SecretString::new(key.clone())),
        boot_wait_ms: 10_000,
        ..Config::default()
    };
    std::fs::create_dir_all(&config.data_dir).map_err(io("create", &config.data_dir))?;
    Ok((config, key, key_path))
}

/// Waits (bounded) for every simulated device to be connected and says so.
async fn report_devices(dir: &Path, sites: &[DemoSite]) {
    let devices = sites.len() * 2;
    let connected = tokio::time::timeout(CONNECT_WAIT, async {
        while !sites
            .iter()
            .all(|s| s.projector.connections() >= 1 && s.display.connections() >= 1)
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .is_ok();
    if connected {
        println!("all {devices} devices connected");
    } else {
        println!(
            "not every device is connected yet: see the logs under {}/edges",
            dir.display()
        );
    }
}

/// The short script of things to try.
fn print_guide(url: &str, key: &str, key_path: &Path, args: &DemoArgs) {
    println!();
    println!("Open {url} and sign in with this admin key:");
    println!();
    println!("    {key}");
    println!();
    println!("(also in {}). Things to try:", key_path.display());
    println!("  1. Overview: both sites connected, each driven by its edge.");
    println!(
        "  2. Open Sydney, then its projector: run power with true, and watch its status change live."
    );
    match &args.kill_edge {
        Some(name) => println!(
            "  3. In {} s the demo kills edge '{name}': watch the link turn lost; sydney fails over to the master after {} s, perth never does.",
            args.kill_after,
            FAILOVER_MS / 1000
        ),
        None => println!(
            "  3. Kill an edge to watch a failover: run `outpost demo --kill-edge sydney`, or kill the pid above."
        ),
    }
    println!("  4. When the edge is back, press \"Restore to edge\" on its site page.");
    println!(
        "  5. From a shell: OUTPOST_ADMIN_KEY=<key> outpost status --api {}",
        url.trim_end_matches('/')
    );
    println!("Ctrl-C stops everything.");
}

/// `--kill-edge NAME`: kills that edge after `--kill-after` seconds, starts
/// it again after a while, then waits forever (until Ctrl-C).
async fn kill_script(
    dir: &Path,
    config: &Config,
    args: &DemoArgs,
    sites: &[DemoSite],
    edges: &mut [EdgeChild],
) {
    let Some(name) = args.kill_edge.as_deref() else {
        return std::future::pending::<()>().await;
    };
    let Some(i) = edges.iter().position(|e| e.name == name) else {
        println!("no edge named '{name}' (sydney or perth)");
        return std::future::pending().await;
    };
    tokio::time::sleep(Duration::from_secs(args.kill_after)).await;
    let _ = edges[i].child.kill().await;
    println!("killed edge {name} (SIGKILL): watch the console");
    tokio::time::sleep(AWAY).await;
    match spawn_edge(dir, config, &sites[i]) {
        Ok(e) => {
            println!(
                "edge {name} is back (pid {}): press \"Restore to edge\" on its site page",
                e.child.id().unwrap_or(0)
            );
            edges[i] = e;
        }
        Err(e) => println!("cannot start edge {name} again: {e}"),
    }
    std::future::pending().await
}

fn reserve_port() -> std::io::Result<SocketAddr> {
    std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()
}

/// Two sites, each with a room of a projector and a display, imported into
/// the master's store; the simulators they point at are started here.
async fn import_sites(config: &Config) -> Result<Vec<DemoSite>, String> {
    let plan: [(&str, &str, bool, &str); 2] = [
        ("sydney", "Sydney office", true, "Australia/Sydney"),
        ("perth", "Perth office", false, "Australia/Perth"),
    ];
    let mut sites = Vec::new();
    let mut file = crate::admin::SiteFile::default();
    for (name, title, failover, tz) in plan {
        let city = title.split(' ').next().unwrap_or(title);
        let any = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
        let projector = PjlinkSim::start(any, PjlinkOptions::default())
            .await
            .map_err(|e| format!("cannot start a PJLink simulator: {e}"))?;
        let display = LineSim::start(any, LineOptions::default())
            .await
            .map_err(|e| format!("cannot start a line simulator: {e}"))?;
        let location: EdgeLocation = serde_json::from_value(serde_json::json!({
            "id": crate::model::new_id(),
            "name": title,
            "description": format!("edge '{name}' of the demo"),
            "failover": failover,
            "failover_timeout_ms": FAILOVER_MS,
            "window_start": "0 3 * * *",
            "window_length_ms": 3_600_000,
            "timezone": tz,
            "admins": ["admin"],
        }))
        .map_err(|e| e.to_string())?;
        let modules = [
            module(&format!("{city} projector"), "pjlink.lua", projector.addr()),
            module(&format!("{city} display"), "line.lua", display.addr()),
        ];
        file.systems.push(ControlSystem {
            id: crate::model::new_id(),
            name: "Boardroom".into(),
            description: format!("{title}: a projector and a display"),
            edge_id: Some(location.id),
            module_ids: modules.iter().map(|m| m.id).collect(),
            settings: Default::default(),
            stopped: false,
        });
        file.modules.extend(modules);
        file.edges.push(location.clone());
        sites.push(DemoSite {
            name,
            location,
            secret: String::new(),
            projector,
            display,
        });
    }
    let store = crate::boot::open_store(config)
        .await
        .map_err(|e| crate::util::describe(&e))?;
    let ctx = crate::model::ValidationContext::with_modules_dir(&config.modules_dir)
        .map_err(|e| e.to_string())?;
    let report = crate::admin::import(&store, &file, &ctx).await;
    store.close().await;
    let report = report.map_err(|e| crate::util::describe(&e))?;
    for (id, _, secret) in report.secrets {
        if let Some(s) = sites.iter_mut().find(|s| s.location.id == id) {
            s.secret = secret.expose().to_owned();
        }
    }
    Ok(sites)
}

fn module(name: &str, driver: &str, addr: SocketAddr) -> Module {
    Module {
        id: crate::model::new_id(),
        name: name.into(),
        driver: driver.into(),
        uri: Some(format!("tcp://{addr}")),
        settings: Default::default(),
        enabled: true,
    }
}

/// Starts `outpost edge` for `site` as a child process (killed if this
/// process drops it), its output in `<dir>/edges/<name>/edge.log`.
fn spawn_edge(dir: &Path, config: &Config, site: &DemoSite) -> Result<EdgeChild, String> {
    let data = dir.join("edges").join(site.name);
    std::fs::create_dir_all(&data).map_err(io("create", &data))?;
    let log_path = data.join("edge.log");
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(io("open", &log_path))?;
    let err = log.try_clone().map_err(io("open", &log_path))?;
    let exe = std::env::current_exe().map_err(|e| format!("cannot find this binary: {e}"))?;
    let mut cmd = tokio::process::Command::new(exe);
    cmd.arg("edge")
        .current_dir(&data)
        // Only what the edge needs: an OUTPOST_* variable of the caller's
        // shell (an API address, say) must not leak into it.
        .env_clear()
        .envs(std::env::var_os("PATH").map(|p| ("PATH", p)))
        .env("OUTPOST_EDGE_ID", site.location.id.to_string())
        .env("OUTPOST_EDGE_SECRET", &site.secret)
        .env("OUTPOST_MASTERS", config.link_addr.to_string())
        .env("OUTPOST_DATA_DIR", &data)
        .env("OUTPOST_API_ADDR", "127.0.0.1:0")
        .env("OUTPOST_CA_CERT", &config.ca_cert)
        .env("OUTPOST_MODULES_DIR", &config.modules_dir)
        .env("OUTPOST_LOG", "info")
        .stdin(std::process::Stdio::null())
        .stdout(log)
        .stderr(err)
        .kill_on_drop(true);
    let child = cmd
        .spawn()
        .map_err(|e| format!("cannot start edge {}: {e}", site.name))?;
    Ok(EdgeChild {
        name: site.name,
        child,
    })
}
