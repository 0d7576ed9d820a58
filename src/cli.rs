//! The `outpost` command line. `main.rs` only calls [`main`]; each command
//! parses its configuration and calls the matching `run`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, CommandFactory, Parser, Subcommand};

use crate::admin::Change;
use crate::config::{Config, Role, Sources};

#[derive(Debug, Parser)]
#[command(
    name = "outpost",
    version = concat!(env!("CARGO_PKG_VERSION"), " (commit ", env!("BUILD_COMMIT"), ")"),
    about = "Device control across many sites: master and edge controllers"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// `--config`, on the commands that read a configuration.
#[derive(Debug, Args, Default)]
pub struct ConfigArg {
    /// Configuration file (default: config/master.toml or config/edge.toml).
    #[arg(long, value_name = "PATH")]
    pub config: Option<PathBuf>,
}

/// A command's own arguments and `--config`.
#[derive(Debug, Args)]
pub struct WithConfig<T: Args> {
    #[command(flatten)]
    pub config: ConfigArg,
    #[command(flatten)]
    pub args: T,
}

/// `admin`: `--config` for every admin command.
#[derive(Debug, Args)]
pub struct AdminArgs {
    /// Configuration file (default: config/master.toml).
    #[arg(long, global = true, value_name = "PATH")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: AdminCommand,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a master.
    Master(ConfigArg),
    /// Run an edge controller (also the default when OUTPOST_EDGE_ID is set).
    Edge(ConfigArg),
    /// Certificates.
    #[command(subcommand)]
    Certs(CertsCommand),
    /// Administration of the documents in the master's store.
    Admin(AdminArgs),
    /// Run a device simulator (real protocol on real TCP) until Ctrl-C.
    #[command(subcommand)]
    Simulate(crate::sim::cli::SimulateCommand),
    /// Run a whole demo system: a master, two edges and simulated devices.
    Demo(crate::demo::DemoArgs),
    /// Every site of the running master: link, controller, epoch.
    Status(WithConfig<crate::ops_cli::StatusArgs>),
    /// Call a driver function of a module on the running master.
    Exec(WithConfig<crate::ops_cli::ExecArgs>),
    /// Follow a module's live debug stream.
    Logs(WithConfig<crate::ops_cli::LogsArgs>),
}

#[derive(Debug, Subcommand)]
pub enum CertsCommand {
    /// Write a development CA and a master certificate signed by it.
    Init(CertsInit),
    /// Write a client certificate for an edge's mutual TLS, signed by the dev CA.
    IssueEdge(crate::ops_cli::IssueEdgeArgs),
}

#[derive(Debug, Args)]
pub struct CertsInit {
    /// Directory for ca.pem, ca-key.pem, master.pem and master-key.pem.
    #[arg(long, default_value = "certs")]
    pub dir: PathBuf,
    /// Host names and IP addresses the master certificate is valid for.
    #[arg(long, value_delimiter = ',', default_value = "localhost,127.0.0.1")]
    pub hosts: Vec<String>,
    /// Overwrite existing files.
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Import a site file (validated; all or nothing). New edge locations'
    /// secrets are printed once.
    ///
    /// Documents equal to the stored ones are left alone. A document that
    /// changed since the file was exported (its `rev` is not the stored
    /// one), or that differs and carries no `rev`, is refused unless
    /// `--force`.
    Import {
        /// JSON file in the format of config/example-site.json (or of an
        /// export, which adds each document's `rev`).
        file: PathBuf,
        /// List what the import would change; write nothing.
        #[arg(long)]
        dry_run: bool,
        /// Overwrite documents changed since the file was exported.
        #[arg(long)]
        force: bool,
    },
    /// Give an edge location a new secret, printed once. A running master
    /// closes that edge's link at once; the old secret keeps working for
    /// `secret_rotation_grace_ms` (10 minutes by default).
    RotateSecret {
        /// The edge location's id.
        edge_id: uuid::Uuid,
        /// Stop the old secret at once (it is compromised).
        #[arg(long)]
        no_grace: bool,
    },
    /// Hand an edge location the master holds back to its edge now (asks
    /// the running master over its web API).
    Restore {
        /// The edge location's id.
        edge_id: uuid::Uuid,
        /// The master's API, e.g. `http://10.0.0.5:8080` (default: the
        /// configured `api_addr`).
        #[arg(long)]
        api: Option<String>,
        /// A file holding an admin or operator API key (default:
        /// `admin_key` from the configuration, else `<data_dir>/admin-key`).
        #[arg(long)]
        key_file: Option<PathBuf>,
    },
    /// Hand an edge location its edge controls to the master now, for
    /// planned work on the edge: the edge releases it first, then the master
    /// starts (asks the running master over its web API).
    Handover {
        /// The edge location's id.
        edge_id: uuid::Uuid,
        /// The master's API, e.g. `http://10.0.0.5:8080` (default: the
        /// configured `api_addr`).
        #[arg(long)]
        api: Option<String>,
        /// A file holding an admin or operator API key (default:
        /// `admin_key` from the configuration, else `<data_dir>/admin-key`).
        #[arg(long)]
        key_file: Option<PathBuf>,
    },
    /// Put an edge location in maintenance (`on`: the master does not take
    /// it over while its edge is serviced) or take it out (`off`); asks the
    /// running master over its web API.
    Maintenance {
        /// The edge location's id.
        edge_id: uuid::Uuid,
        /// `on` or `off`.
        #[arg(value_parser = ["on", "off"])]
        state: String,
        /// The master's API, e.g. `http://10.0.0.5:8080` (default: the
        /// configured `api_addr`).
        #[arg(long)]
        api: Option<String>,
        /// A file holding an admin or operator API key (default:
        /// `admin_key` from the configuration, else `<data_dir>/admin-key`).
        #[arg(long)]
        key_file: Option<PathBuf>,
    },
    /// Export every document as stable JSON, each with its `rev`.
    Export {
        /// Write here instead of standard output.
        #[arg(long, short)]
        output: Option<PathBuf>,
        /// Write secret settings' values instead of "<redacted>" (the file
        /// is then created with mode 0600; standard output is refused).
        #[arg(long)]
        include_secrets: bool,
    },
}

/// Exit codes: 0 success, 1 failure while running, 2 usage or configuration.
const EXIT_FAILURE: u8 = 1;
const EXIT_USAGE: u8 = 2;

/// Parses the command line and runs the command.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let command = match cli.command {
        Some(c) => c,
        None if std::env::var_os("OUTPOST_EDGE_ID").is_some() => {
            Command::Edge(ConfigArg::default())
        }
        None => {
            let _ = Cli::command().print_help();
            return ExitCode::from(EXIT_USAGE);
        }
    };
    match command {
        Command::Certs(CertsCommand::Init(args)) => certs_init(&args),
        Command::Master(c) => run_role(c.config, Role::Master),
        Command::Edge(c) => run_role(c.config, Role::Edge),
        Command::Admin(admin) => run_admin(admin.config, admin.command),
        Command::Simulate(sim) => simulate(sim),
        Command::Certs(CertsCommand::IssueEdge(args)) => crate::ops_cli::issue_edge(args),
        Command::Demo(args) => crate::demo::main(args),
        Command::Status(a) => crate::ops_cli::status(a.config.config, a.args),
        Command::Exec(a) => crate::ops_cli::exec(a.config.config, a.args),
        Command::Logs(a) => crate::ops_cli::logs(a.config.config, a.args),
    }
}

fn load_config(file: Option<PathBuf>, role: Role) -> Result<Config, ExitCode> {
    Config::load(&Sources {
        file,
        role: Some(role),
    })
    .map_err(|e| {
        eprintln!("outpost: {e}");
        ExitCode::from(EXIT_USAGE)
    })
}

fn init_logging(config: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_new(&config.log)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .try_init();
}

#[allow(
    clippy::expect_used,
    reason = "without a runtime nothing can run; the panic message says why"
)]
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("cannot start the tokio runtime")
}

use crate::util::describe as report;

fn run_role(file: Option<PathBuf>, role: Role) -> ExitCode {
    let config = match load_config(file, role) {
        Ok(c) => c,
        Err(code) => return code,
    };
    init_logging(&config);
    let result = runtime().block_on(async move {
        match role {
            Role::Master => crate::master::run(config, crate::shutdown::signal()).await,
            Role::Edge => crate::edge::run(config, crate::shutdown::signal()).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(crate::boot::RunError::Config(e)) => {
            eprintln!("outpost: {e}");
            ExitCode::from(EXIT_USAGE)
        }
        Err(e) => {
            eprintln!("outpost: {}", report(&e));
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

fn simulate(command: crate::sim::cli::SimulateCommand) -> ExitCode {
    init_logging(&Config::default());
    match runtime().block_on(crate::sim::cli::run(command, crate::shutdown::signal())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("outpost: {e:#}");
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

fn certs_init(args: &CertsInit) -> ExitCode {
    crate::certs::install_crypto_provider();
    match crate::certs::init_dev(&args.dir, &args.hosts, args.force) {
        Ok(paths) => {
            println!(
                "wrote {}, {}, {} and {} (development only)",
                paths.ca_cert.display(),
                paths.ca_key.display(),
                paths.cert.display(),
                paths.key.display()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("outpost: {}", report(&e));
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

fn run_admin(file: Option<PathBuf>, command: AdminCommand) -> ExitCode {
    let config = match load_config(file, Role::Master) {
        Ok(c) => c,
        Err(code) => return code,
    };
    init_logging(&Config {
        log: "warn".into(),
        ..config.clone()
    });
    if let Some(result) = master_api_call(&config, &command) {
        return match result {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("outpost: {e}");
                ExitCode::from(EXIT_FAILURE)
            }
        };
    }
    if !matches!(command, AdminCommand::Import { .. })
        && let Err(e) = require_store(&config)
    {
        eprintln!("outpost: {e}");
        return ExitCode::from(EXIT_FAILURE);
    }
    let result: Result<(), String> = runtime().block_on(async move {
        let store = crate::boot::open_store(&config)
            .await
            .map_err(|e| report(&e))?;
        let out = match command {
            AdminCommand::Import {
                file,
                dry_run,
                force,
            } => import(&store, &config, &file, dry_run, force).await,
            AdminCommand::Export {
                output,
                include_secrets,
            } => export(&store, &config, output, include_secrets).await,
            AdminCommand::RotateSecret { edge_id, no_grace } => {
                let grace = if no_grace {
                    std::time::Duration::ZERO
                } else {
                    std::time::Duration::from_millis(config.secret_rotation_grace_ms)
                };
                rotate_secret(&store, edge_id, grace).await
            }
            AdminCommand::Restore { .. }
            | AdminCommand::Handover { .. }
            | AdminCommand::Maintenance { .. } => {
                unreachable!("handled above")
            }
        };
        store.close().await;
        out
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("outpost: {e}");
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

/// Commands that read the store must not create an empty one: a SQLite
/// file that does not exist is an error naming it.
fn require_store(config: &Config) -> Result<(), String> {
    let url = config.database_url();
    let Some(rest) = url
        .strip_prefix("sqlite://")
        .or(url.strip_prefix("sqlite:"))
    else {
        return Ok(());
    };
    let path = rest.split('?').next().unwrap_or(rest);
    if path.is_empty() || path == ":memory:" || std::path::Path::new(path).exists() {
        return Ok(());
    }
    Err(format!(
        "no store at {path}: nothing to read here (run in the master's directory, or pass --config naming its data_dir or database_url)"
    ))
}

async fn import(
    store: &crate::store::Store,
    config: &Config,
    file: &std::path::Path,
    dry_run: bool,
    force: bool,
) -> Result<(), String> {
    let text = std::fs::read_to_string(file)
        .map_err(|e| format!("cannot read {}: {e}", file.display()))?;
    let (site, revs) = crate::admin::parse_site_with_revs(&text)
        .map_err(|e| format!("{}: {}", file.display(), report(&e)))?;
    let ctx =
        crate::model::ValidationContext::with_modules_dir(&config.modules_dir).map_err(|e| {
            format!(
                "cannot read the modules directory {}: {e}",
                config.modules_dir.display()
            )
        })?;
    let options = crate::admin::ImportOptions {
        dry_run,
        force,
        revs,
    };
    let done = crate::admin::import_with(store, &site, &ctx, &options)
        .await
        .map_err(|e| format!("{}: {}", file.display(), report(&e)))?;
    if dry_run {
        for p in done
            .changes
            .iter()
            .filter(|p| p.change != Change::Unchanged)
        {
            println!(
                "would {} {} '{}' ({})",
                p.change.as_str(),
                p.kind,
                p.name,
                p.id
            );
        }
        println!(
            "dry run of {}: would create {}, replace {}, leave {} unchanged; nothing written",
            file.display(),
            done.created,
            done.replaced,
            done.unchanged
        );
        return Ok(());
    }
    for p in done.changes.iter().filter(|p| p.change == Change::Replace) {
        println!("replaced {} '{}' ({})", p.kind, p.name, p.id);
    }
    println!(
        "imported {}: {} created, {} replaced, {} unchanged",
        file.display(),
        done.created,
        done.replaced,
        done.unchanged
    );
    for (id, name, secret) in &done.secrets {
        println!(
            "edge location '{name}' ({id}): secret {} (shown once; set OUTPOST_EDGE_SECRET on that edge)",
            secret.expose()
        );
    }
    Ok(())
}

async fn export(
    store: &crate::store::Store,
    config: &Config,
    output: Option<PathBuf>,
    include_secrets: bool,
) -> Result<(), String> {
    // Without the drivers, only the default secret names are known.
    let ctx =
        crate::model::ValidationContext::with_modules_dir(&config.modules_dir).unwrap_or_default();
    let text = crate::admin::export_with(store, &ctx, include_secrets)
        .await
        .map_err(|e| report(&e))?;
    match (output, include_secrets) {
        (Some(path), true) => write_private(&path, &text),
        (Some(path), false) => {
            std::fs::write(&path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))
        }
        (None, true) => Err(
            "--include-secrets needs --output FILE (written with mode 0600), not standard output"
                .into(),
        ),
        (None, false) => {
            print!("{text}");
            Ok(())
        }
    }
}

/// Writes `text` to a new file only its owner may read (mode 0600), or
/// replaces an existing one after tightening its mode.
fn write_private(path: &std::path::Path, text: &str) -> Result<(), String> {
    use std::io::Write as _;
    let fail = |e: std::io::Error| format!("cannot write {}: {e}", path.display());
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
        options.mode(0o600);
        if path.exists() {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(fail)?;
        }
    }
    let mut file = options.open(path).map_err(fail)?;
    file.write_all(text.as_bytes()).map_err(fail)
}

async fn rotate_secret(
    store: &crate::store::Store,
    edge_id: uuid::Uuid,
    grace: std::time::Duration,
) -> Result<(), String> {
    let secret = crate::admin::rotate_secret(store, edge_id, grace)
        .await
        .map_err(|e| report(&e))?;
    println!(
        "edge location {edge_id}: new secret {} (shown once; set OUTPOST_EDGE_SECRET or edge_secret_file on that edge)",
        secret.expose()
    );
    if grace.is_zero() {
        eprintln!("the old secret stopped working at once; the edge's link is closed");
    } else {
        eprintln!(
            "warning: the old secret keeps working for {} s; the edge's link is closed and it reconnects",
            grace.as_secs()
        );
    }
    Ok(())
}

/// The admin commands that ask the running master over its API (restore,
/// handover, maintenance); `None` for the others, which open the store.
fn master_api_call(config: &Config, command: &AdminCommand) -> Option<Result<(), String>> {
    let call = match command {
        AdminCommand::Maintenance {
            edge_id,
            state,
            api,
            key_file,
        } => runtime().block_on(maintenance(
            config,
            *edge_id,
            state == "on",
            api.clone(),
            key_file.clone(),
        )),
        AdminCommand::Restore {
            edge_id,
            api,
            key_file,
        }
        | AdminCommand::Handover {
            edge_id,
            api,
            key_file,
        } => runtime().block_on(change_controller(
            config,
            *edge_id,
            api.clone(),
            key_file.clone(),
            matches!(command, AdminCommand::Handover { .. }),
        )),
        _ => return None,
    };
    Some(call)
}

/// `admin maintenance EDGE on|off`, through the running master's API.
async fn maintenance(
    config: &Config,
    edge_id: uuid::Uuid,
    on: bool,
    api: Option<String>,
    key_file: Option<PathBuf>,
) -> Result<(), String> {
    let key = admin_key(config, key_file)?;
    let api = api.unwrap_or_else(|| format!("http://{}", config.api_addr));
    let path = format!("/api/v1/edges/{edge_id}/maintenance");
    let body = serde_json::json!({ "on": on }).to_string();
    let (status, answer) = crate::http::request(&api, "PUT", &path, &key, Some(&body))
        .await
        .map_err(|e| format!("cannot reach the master's API at {api}: {e}"))?;
    let json: serde_json::Value = serde_json::from_str(&answer).unwrap_or_default();
    if status == 200 {
        match json["since_ms"].as_i64() {
            Some(since) => println!(
                "edge location {edge_id}: in maintenance since {since} ms; the master does not take it over"
            ),
            None => println!("edge location {edge_id}: out of maintenance; failover applies again"),
        }
        Ok(())
    } else {
        let why = json["error"].as_str().unwrap_or(answer.as_str());
        Err(format!("maintenance refused ({status}): {why}"))
    }
}

/// The API key a command-line call to the master uses: `--key-file`, else
/// the configured `admin_key`, else `<data_dir>/admin-key`.
fn admin_key(config: &Config, key_file: Option<PathBuf>) -> Result<String, String> {
    match (key_file, &config.admin_key) {
        (Some(path), _) => read_key(&path),
        (None, Some(key)) => Ok(key.expose().to_owned()),
        (None, None) => read_key(&config.data_dir.join("admin-key")),
    }
}

/// `admin restore` (`to_master` false) or `admin handover`, through the
/// running master's API.
async fn change_controller(
    config: &Config,
    edge_id: uuid::Uuid,
    api: Option<String>,
    key_file: Option<PathBuf>,
    to_master: bool,
) -> Result<(), String> {
    let (action, done, holder) = if to_master {
        ("handover", "handed over", "master")
    } else {
        ("restore", "restored", "edge")
    };
    let key = admin_key(config, key_file)?;
    let api = api.unwrap_or_else(|| format!("http://{}", config.api_addr));
    let path = format!("/api/v1/edges/{edge_id}/{action}");
    let (status, body) = crate::http::post(&api, &path, &key)
        .await
        .map_err(|e| format!("cannot reach the master's API at {api}: {e}"))?;
    let json: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
    if status == 200 {
        println!(
            "edge location {edge_id}: {done}; the {holder} controls it at epoch {}",
            json["epoch"]
        );
        Ok(())
    } else {
        let why = json["error"].as_str().unwrap_or(body.as_str());
        Err(format!("{action} refused ({status}): {why}"))
    }
}

fn read_key(path: &std::path::Path) -> Result<String, String> {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_owned())
        .map_err(|e| {
            format!(
                "cannot read an API key from {}: {e} (pass --key-file or set OUTPOST_ADMIN_KEY)",
                path.display()
            )
        })
}
