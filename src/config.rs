//! Configuration: built-in defaults < a TOML file (`config/master.toml`,
//! `config/edge.toml`, or `--config PATH`) < `OUTPOST_*` environment
//! variables, merged by figment. Every key is flat, so `OUTPOST_LINK_ADDR`
//! sets `link_addr`. Unknown keys are errors: a typo must not be ignored.
//!
//! [`Config::load`] returns a [`ConfigError`] that names the key and the
//! problem in one line; the binary prints it and exits non-zero.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Deserializer, Serialize};
use uuid::Uuid;

/// A secret from configuration. `Debug` and `Serialize` never show it.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct SecretString(String);

impl SecretString {
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for SecretString {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

impl Serialize for SecretString {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("<redacted>")
    }
}

impl<'de> Deserialize<'de> for SecretString {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // Environment values that look like numbers arrive as numbers; a
        // secret is text whatever it looks like.
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Lossy {
            S(String),
            U(u64),
            I(i64),
        }
        Ok(SecretString(match Lossy::deserialize(d)? {
            Lossy::S(s) => s,
            Lossy::U(u) => u.to_string(),
            Lossy::I(i) => i.to_string(),
        }))
    }
}

/// Which role the process runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Master,
    Edge,
}

/// Every setting of a master or an edge. See `config/master.toml` and
/// `config/edge.toml` for each key's unit and what changing it does.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Set: this process is the edge controller of that location.
    pub edge_id: Option<Uuid>,
    /// The edge's shared secret (required on an edge, here or in
    /// `edge_secret_file`).
    pub edge_secret: Option<SecretString>,
    /// A file holding the edge's secret (mode 0600: readable by its owner
    /// only), instead of `edge_secret` in the environment.
    pub edge_secret_file: Option<PathBuf>,
    /// Master: how long a rotated edge secret keeps authenticating, so the
    /// edge can be updated without darkening its site (`outpost admin
    /// rotate-secret --no-grace` stops the old one at once).
    pub secret_rotation_grace_ms: u64,
    /// Master link listeners (`host:port`), tried in order by an edge.
    #[serde(deserialize_with = "de_list")]
    pub masters: Vec<String>,
    /// `sqlite://…` or `postgres://…`; default: SQLite under `data_dir`.
    pub database_url: Option<String>,
    /// Where SQLite files and generated keys live.
    pub data_dir: PathBuf,
    /// The web API listener.
    pub api_addr: SocketAddr,
    /// The master's link listener (edges connect here).
    pub link_addr: SocketAddr,
    /// CA that signed the master certificate (edges verify the master with it).
    pub ca_cert: PathBuf,
    /// The master's TLS certificate chain (PEM).
    pub tls_cert: PathBuf,
    /// The master's TLS private key (PEM).
    pub tls_key: PathBuf,
    /// Master: set to a CA's certificate to require every edge to present a
    /// client certificate signed by it (mutual TLS), on top of the secret.
    /// Unset (the default): edges authenticate with their secret only.
    pub link_client_ca: Option<PathBuf>,
    /// Edge: the client certificate (PEM) to present when the master asks
    /// for one (mutual TLS); set together with `tls_client_key`.
    pub tls_client_cert: Option<PathBuf>,
    /// Edge: the client certificate's private key (PEM).
    pub tls_client_key: Option<PathBuf>,
    /// The first admin API key; generated at first start when unset.
    pub admin_key: Option<SecretString>,
    /// Directory of Lua drivers.
    pub modules_dir: PathBuf,
    /// How long a booting master waits for edges before failover decisions.
    pub boot_wait_ms: u64,
    /// Link heartbeat interval.
    pub heartbeat_ms: u64,
    /// A link peer silent for this long is dead.
    pub dead_after_ms: u64,
    /// Edge reconnect interval (±20 % jitter).
    pub reconnect_ms: u64,
    /// How long a graceful stop may take before remaining work is dropped.
    pub shutdown_grace_ms: u64,
    /// Master: how often the passive sync job pulls unsynced events from
    /// every connected edge (a backstop to the edges' own pushes).
    pub sync_interval_ms: u64,
    /// Master: events per passive-sync request.
    pub sync_batch_size: u32,
    /// Master: pause between passive-sync batches, so a large backlog does
    /// not crowd out live traffic.
    pub sync_step_sleep_ms: u64,
    /// Edge: events kept in the local log at most (synced ones are dropped
    /// first, then the oldest status changes; control changes never).
    pub event_log_max: u64,
    /// Master: collected events older than this many days, counted from
    /// when the master stored them (by its clock, never the edge's stamp),
    /// are deleted, checked at start and hourly. 0 keeps them regardless
    /// of age.
    pub event_retention_days: u64,
    /// Master: at most this many collected events are kept; the oldest go
    /// first. 0: no bound by count.
    pub event_retention_max: u64,
    /// Worker threads of the driver executor: module tasks (Lua drivers)
    /// run there, apart from the runtime that serves the link and the API,
    /// so a busy driver cannot delay a heartbeat.
    pub driver_threads: usize,
    /// Master: how long it waits for an edge's answer to a control request
    /// (report, assume, release). A call that times out is followed up by
    /// asking the edge for its state; the edge finishes the change anyway.
    pub control_call_ms: u64,
    /// Master: a location may change controller at most this many times
    /// in a minute; after that, the master keeps a site it took over even
    /// from an edge that reaches its devices (the hold-down against a
    /// flapping link). 0 turns the hold-down off.
    pub max_control_changes_per_minute: u32,
    /// Edge: how often the event pusher retries unsynced events when nothing
    /// new woke it (after a failed push, or events the master has not
    /// acknowledged). Lower: a backlog leaves sooner after an outage, at the
    /// cost of an idle query every interval.
    pub event_retry_ms: u64,
    /// Edge: documents per replication request. Each page is applied with
    /// its checkpoint in one transaction, so a link that drops mid-snapshot
    /// resumes after the last whole page; larger pages mean fewer round
    /// trips and commits, smaller ones less work repeated after a drop.
    /// The master caps a page at 2000.
    pub replica_page_size: u32,
    /// Master: what each edge's replica holds. `site` (the default): its
    /// own location, its systems, their modules and the API keys that may
    /// act on it, so one compromised edge box yields no other site's
    /// documents or device secrets. `all`: every document (seed 001's full
    /// copy), so any edge's replica can rebuild the master's database.
    pub replica_scope: crate::proto::ReplicaScope,
    /// Edge: the master's web API base URL (e.g. `https://master:8080`),
    /// used for 307 redirects of calls on modules the master controls
    /// when `redirect_to_master` is set.
    pub master_api: Option<String>,
    /// Edge: answer API calls on modules the master controls with a 307
    /// redirect to `master_api` instead of proxying them over the link
    /// (the default, false). Standby master node: answer writes and device
    /// calls with a 307 to the MASTER's `advertise_api` instead of
    /// proxying them to it. Redirecting saves this node the work;
    /// proxying works for clients that cannot reach the MASTER themselves
    /// or do not follow redirects.
    pub redirect_to_master: bool,
    /// Messages one WebSocket client may have waiting; beyond it the newest
    /// are dropped and the client told how many (`{"type":"dropped"}`).
    /// Larger absorbs longer stalls at the cost of memory per client.
    pub ws_queue: usize,
    /// How long an HTTP client may take to send a request's headers, and
    /// how long an idle keep-alive connection stays open. Lower closes slow
    /// or idle clients sooner; higher tolerates slower networks.
    pub http_header_timeout_ms: u64,
    /// HTTP connections open at once, in all; more are closed at accept.
    /// Keep it well below the process's descriptor limit so edges' links
    /// always find descriptors.
    pub http_max_connections: u64,
    /// HTTP connections open at once from one address (IPv6 per /64).
    pub http_max_connections_per_source: u64,
    /// Log filter (tracing `EnvFilter` syntax), e.g. `info` or `outpost=debug`.
    pub log: String,
    /// Master cluster: this node's name (default: host name and API port).
    pub node_id: Option<String>,
    /// Master cluster: among live standbys, the highest priority takes a
    /// free lease first (ties by node id).
    pub node_priority: i32,
    /// Master cluster: base URL of this node's web API as others reach it
    /// (default `http://` and `api_addr`).
    pub advertise_api: Option<String>,
    /// Master cluster: this node's link address as edges reach it
    /// (`host:port`, default `link_addr`).
    pub advertise_link: Option<String>,
    /// Master cluster: how long a grant lasts at the database. A MASTER
    /// that cannot renew stops acting before it ends; standbys take over
    /// after it. Lower fails over sooner, and fails over falsely on a
    /// database pause longer than it.
    pub lease_ms: u64,
    /// Master cluster: how often the MASTER renews its lease (and every
    /// node its heartbeat). At most a third of `lease_ms`.
    pub renew_ms: u64,
    /// Master cluster: a standby of higher priority than the MASTER takes
    /// the lease from it (the MASTER steps down at its next renewal).
    pub preempt: bool,
    /// Two masters on one host sharing a SQLite database: the holder of an
    /// exclusive `flock` on this file is MASTER, the other waits as STANDBY.
    pub cluster_lock_file: Option<PathBuf>,
    /// Master cluster (PostgreSQL): keep acting while the database is
    /// unreachable if every other node answers, over its link listener,
    /// that it is not MASTER and cannot reach the database either
    /// (Patroni's failsafe). Set it alike on every node.
    pub cluster_failsafe: bool,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            edge_id: None,
            edge_secret: None,
            edge_secret_file: None,
            secret_rotation_grace_ms: 600_000,
            masters: vec!["127.0.0.1:17400".into()],
            database_url: None,
            data_dir: PathBuf::from("data"),
            api_addr: ([127, 0, 0, 1], 8080).into(),
            link_addr: ([127, 0, 0, 1], 17400).into(),
            ca_cert: PathBuf::from("certs/ca.pem"),
            tls_cert: PathBuf::from("certs/master.pem"),
            tls_key: PathBuf::from("certs/master-key.pem"),
            link_client_ca: None,
            tls_client_cert: None,
            tls_client_key: None,
            admin_key: None,
            modules_dir: PathBuf::from("modules"),
            boot_wait_ms: 6_000,
            heartbeat_ms: 1_000,
            dead_after_ms: 3_000,
            reconnect_ms: 3_000,
            shutdown_grace_ms: 10_000,
            event_log_max: 100_000,
            event_retry_ms: 5_000,
            replica_page_size: 1_000,
            replica_scope: crate::proto::ReplicaScope::Site,
            sync_interval_ms: 60_000,
            sync_batch_size: 1_000,
            sync_step_sleep_ms: 100,
            max_control_changes_per_minute: 4,
            event_retention_days: 90,
            event_retention_max: 10_000_000,
            driver_threads: 2,
            control_call_ms: 10_000,
            master_api: None,
            redirect_to_master: false,
            ws_queue: 256,
            http_header_timeout_ms: 10_000,
            http_max_connections: 4_096,
            http_max_connections_per_source: 256,
            log: "info".into(),
            node_id: None,
            node_priority: 0,
            advertise_api: None,
            advertise_link: None,
            lease_ms: 2_000,
            renew_ms: 500,
            preempt: false,
            cluster_lock_file: None,
            cluster_failsafe: false,
        }
    }
}

fn de_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum List {
        One(String),
        Many(Vec<String>),
    }
    Ok(match List::deserialize(d)? {
        List::One(s) => s
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect(),
        List::Many(v) => v,
    })
}

/// A configuration problem: the key and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{}: {problem}", key_part(.key), origin_suffix(.origin))]
pub struct ConfigError {
    pub key: String,
    /// Where the bad value came from (a file or an environment variable).
    pub origin: Option<String>,
    pub problem: String,
}

/// "configuration key `k`", or "configuration" for a problem of the
/// whole file (a syntax error).
fn key_part(key: &str) -> String {
    if key.is_empty() {
        "configuration".to_owned()
    } else {
        format!("configuration key `{key}`")
    }
}

fn origin_suffix(origin: &Option<String>) -> String {
    origin
        .as_ref()
        .map(|s| format!(" (from {s})"))
        .unwrap_or_default()
}

impl ConfigError {
    pub fn new(key: &str, problem: impl Into<String>) -> Self {
        Self {
            key: key.to_owned(),
            origin: None,
            problem: problem.into(),
        }
    }
}

/// Where configuration comes from.
#[derive(Debug, Clone, Default)]
pub struct Sources {
    /// An explicit file (`--config`): must exist.
    pub file: Option<PathBuf>,
    /// Role the command line asks for (`outpost master` / `outpost edge`);
    /// `None` lets `edge_id` decide.
    pub role: Option<Role>,
}

impl Config {
    /// Loads defaults, the role's TOML file and the environment, then checks
    /// the result.
    pub fn load(sources: &Sources) -> Result<Config, ConfigError> {
        Self::load_from(sources, Env::prefixed("OUTPOST_"))
    }

    fn load_from(sources: &Sources, env: Env) -> Result<Config, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        let file = match &sources.file {
            Some(path) => {
                if !path.is_file() {
                    return Err(ConfigError::new(
                        "--config",
                        format!("{} does not exist or is not a file", path.display()),
                    ));
                }
                Some(path.clone())
            }
            None => {
                // The role decides which default file applies; the role may
                // itself come from the environment (OUTPOST_EDGE_ID).
                let edge = match sources.role {
                    Some(role) => role == Role::Edge,
                    None => std::env::var_os("OUTPOST_EDGE_ID").is_some(),
                };
                let path = PathBuf::from(if edge {
                    "config/edge.toml"
                } else {
                    "config/master.toml"
                });
                path.is_file().then_some(path)
            }
        };
        if let Some(file) = &file {
            figment = figment.merge(Toml::file_exact(file));
        }
        figment = figment.merge(env);
        let mut config: Config = figment.extract().map_err(from_figment)?;
        if let Some(path) = &config.edge_secret_file {
            if config.edge_secret.is_some() {
                return Err(ConfigError::new(
                    "edge_secret_file",
                    "set either edge_secret or edge_secret_file, not both",
                ));
            }
            config.edge_secret =
                Some(read_secret_file(path).map_err(|p| ConfigError::new("edge_secret_file", p))?);
        }
        config.check(sources.role)?;
        Ok(config)
    }

    /// The role: an explicit command wins; otherwise `edge_id` decides.
    pub fn role(&self) -> Role {
        if self.edge_id.is_some() {
            Role::Edge
        } else {
            Role::Master
        }
    }

    /// The database URL, defaulting to a SQLite file in `data_dir`.
    pub fn database_url(&self) -> String {
        match &self.database_url {
            Some(url) => url.clone(),
            None => {
                let file = match self.role() {
                    Role::Master => "master.db",
                    Role::Edge => "edge.db",
                };
                format!("sqlite://{}", self.data_dir.join(file).display())
            }
        }
    }

    /// Checks what the types alone cannot.
    pub fn check(&self, role: Option<Role>) -> Result<(), ConfigError> {
        self.check_common()?;
        match role.unwrap_or(self.role()) {
            Role::Edge => self.check_edge(),
            Role::Master => match &self.link_client_ca {
                Some(ca) => check_readable(ca).map_err(|p| ConfigError::new("link_client_ca", p)),
                None => Ok(()),
            },
        }
    }

    /// Settings both roles read.
    fn check_common(&self) -> Result<(), ConfigError> {
        if let Some(key) = &self.admin_key
            && key.expose().len() < crate::model::MIN_KEY_LEN
        {
            return Err(ConfigError::new(
                "admin_key",
                format!(
                    "must be at least {} characters (it is an API key with every right)",
                    crate::model::MIN_KEY_LEN
                ),
            ));
        }
        if let Some(url) = &self.database_url
            && !(url.starts_with("sqlite:")
                || url.starts_with("postgres:")
                || url.starts_with("postgresql:"))
        {
            return Err(ConfigError::new(
                "database_url",
                "must start with sqlite:// or postgres://",
            ));
        }
        for (key, value) in [
            ("event_log_max", self.event_log_max),
            ("http_header_timeout_ms", self.http_header_timeout_ms),
            ("http_max_connections", self.http_max_connections),
            (
                "http_max_connections_per_source",
                self.http_max_connections_per_source,
            ),
            ("event_retry_ms", self.event_retry_ms),
            ("replica_page_size", u64::from(self.replica_page_size)),
            ("sync_interval_ms", self.sync_interval_ms),
            ("sync_batch_size", u64::from(self.sync_batch_size)),
            ("heartbeat_ms", self.heartbeat_ms),
            ("dead_after_ms", self.dead_after_ms),
            ("reconnect_ms", self.reconnect_ms),
            ("control_call_ms", self.control_call_ms),
        ] {
            if value == 0 {
                return Err(ConfigError::new(key, "must be greater than 0"));
            }
        }
        // A standby master redirects to the MASTER's advertised API, which
        // the cluster knows; an edge needs to be told where its master is.
        if self.redirect_to_master && self.master_api.is_none() && self.role() == Role::Edge {
            return Err(ConfigError::new(
                "master_api",
                "required when redirect_to_master is set (the URL of the master's web API)",
            ));
        }
        self.check_cluster()?;
        if self.ws_queue == 0 {
            return Err(ConfigError::new("ws_queue", "must be greater than 0"));
        }
        if self.dead_after_ms <= self.heartbeat_ms {
            return Err(ConfigError::new(
                "dead_after_ms",
                format!("must be greater than heartbeat_ms ({})", self.heartbeat_ms),
            ));
        }
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.log) {
            return Err(ConfigError::new("log", e.to_string()));
        }
        Ok(())
    }

    /// The lease must outlast several renewals, so one slow renewal is
    /// not a failover.
    fn check_cluster(&self) -> Result<(), ConfigError> {
        if self.renew_ms == 0 {
            return Err(ConfigError::new("renew_ms", "must be greater than 0"));
        }
        if self.lease_ms < self.renew_ms.saturating_mul(3) {
            return Err(ConfigError::new(
                "lease_ms",
                format!("must be at least 3 × renew_ms ({})", self.renew_ms),
            ));
        }
        if self.cluster_failsafe
            && (self.cluster_lock_file.is_some() || self.database_url().starts_with("sqlite:"))
        {
            return Err(ConfigError::new(
                "cluster_failsafe",
                "only applies to a master cluster on PostgreSQL (a postgres:// database_url, no cluster_lock_file): without a database lease there is no outage to ride out",
            ));
        }
        if self.cluster_failsafe && self.link_client_ca.is_some() {
            return Err(ConfigError::new(
                "cluster_failsafe",
                "cannot be used with link_client_ca: a node probing another presents no client certificate, so every probe would be refused",
            ));
        }
        if let Some(id) = &self.node_id
            && (id.is_empty() || id.len() > 128)
        {
            return Err(ConfigError::new("node_id", "must be 1 to 128 characters"));
        }
        Ok(())
    }

    /// This node's name in a master cluster: `node_id`, or the host name
    /// and API port.
    pub fn node_name(&self) -> String {
        if let Some(id) = &self.node_id {
            return id.clone();
        }
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .map(|h| h.trim().to_owned())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "localhost".into());
        format!("{host}:{}", self.api_addr.port())
    }

    /// What an edge needs: its identity, its secret, masters to reach and the
    /// CA to verify them.
    fn check_edge(&self) -> Result<(), ConfigError> {
        if self.edge_id.is_none() {
            return Err(ConfigError::new(
                "edge_id",
                "required to run an edge (set OUTPOST_EDGE_ID)",
            ));
        }
        match &self.edge_secret {
            None => {
                return Err(ConfigError::new(
                    "edge_secret",
                    "required when edge_id is set (set OUTPOST_EDGE_SECRET to the secret shown when the edge location was created)",
                ));
            }
            Some(s) => {
                if let Err(e) = crate::secret::EdgeSecret::from_string(s.expose().to_owned()) {
                    return Err(ConfigError::new("edge_secret", e));
                }
            }
        }
        if self.masters.is_empty() {
            return Err(ConfigError::new("masters", "needs at least one host:port"));
        }
        for m in &self.masters {
            check_host_port(m).map_err(|p| ConfigError::new("masters", p))?;
        }
        check_readable(&self.ca_cert).map_err(|p| ConfigError::new("ca_cert", p))?;
        match (&self.tls_client_cert, &self.tls_client_key) {
            (Some(cert), Some(key)) => {
                check_readable(cert).map_err(|p| ConfigError::new("tls_client_cert", p))?;
                check_readable(key).map_err(|p| ConfigError::new("tls_client_key", p))?;
            }
            (Some(_), None) => {
                return Err(ConfigError::new(
                    "tls_client_key",
                    "required with tls_client_cert",
                ));
            }
            (None, Some(_)) => {
                return Err(ConfigError::new(
                    "tls_client_cert",
                    "required with tls_client_key",
                ));
            }
            (None, None) => {}
        }
        Ok(())
    }
}

/// Reads a secret from a file that only its owner may read (mode 0600 or
/// stricter); surrounding whitespace is dropped.
pub fn read_secret_file(path: &std::path::Path) -> Result<SecretString, String> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let meta = std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(format!(
                "{} has mode {mode:04o}; it must be readable by its owner only (chmod 600)",
                path.display()
            ));
        }
    }
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(SecretString::new(text.trim()))
}

fn check_host_port(s: &str) -> Result<(), String> {
    let Some((host, port)) = s.rsplit_once(':') else {
        return Err(format!("'{s}' is not host:port"));
    };
    if host.trim_matches(['[', ']']).is_empty() {
        return Err(format!("'{s}' has no host"));
    }
    match port.parse::<u16>() {
        Ok(p) if p != 0 => Ok(()),
        _ => Err(format!("'{s}' has an invalid port")),
    }
}

/// A file the process needs to read must exist and be readable now, not at
/// the first connection attempt.
pub fn check_readable(path: &Path) -> Result<(), String> {
    std::fs::File::open(path)
        .map(drop)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))
}

/// "` at line 1, column 9\n  |\n1 | x = \n  |    ^\ninvalid string\n…`" →
/// "` at line 1, column 9: invalid string; …`": the snippet lines dropped.
fn one_line(message: &str) -> String {
    let mut lines = message.lines();
    let mut out = lines.next().unwrap_or_default().trim_end().to_owned();
    let rest: Vec<&str> = lines
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('|') && !l.contains(" | "))
        .collect();
    if !rest.is_empty() {
        out.push_str(": ");
        out.push_str(&rest.join("; "));
    }
    out
}

fn from_figment(e: figment::Error) -> ConfigError {
    let key = if e.path.is_empty() {
        match &e.kind {
            figment::error::Kind::UnknownField(field, _) => field.clone(),
            figment::error::Kind::MissingField(field) => field.to_string(),
            _ => "(configuration)".to_owned(),
        }
    } else {
        e.path.join(".")
    };
    let origin = e.metadata.as_ref().map(|m| match &m.source {
        Some(figment::Source::File(path)) => path.display().to_string(),
        _ if m.name.contains("environment") => {
            format!(
                "environment variable OUTPOST_{}",
                e.path.join("_").to_uppercase()
            )
        }
        _ => m.name.to_string(),
    });
    let problem = match &e.kind {
        figment::error::Kind::UnknownField(field, _) => format!("unknown key `{field}`"),
        kind => kind.to_string(),
    };
    // A TOML syntax error is about the file, not a key; its message spans
    // several lines (a snippet with a caret): keep one.
    if let Some(rest) = problem.strip_prefix("TOML parse error") {
        return ConfigError {
            key: String::new(),
            origin,
            problem: format!("TOML syntax error{}", one_line(rest)),
        };
    }
    ConfigError {
        key,
        origin,
        problem,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // figment's Jail API returns figment's own (large) error type.
    #[allow(
        clippy::result_large_err,
        reason = "figment's Jail API returns figment's own error type"
    )]
    fn load(
        toml: Option<&str>,
        env: &[(&str, &str)],
        role: Option<Role>,
    ) -> Result<Config, ConfigError> {
        let mut out = None;
        figment::Jail::expect_with(|jail| {
            let file = toml.map(|t| {
                jail.create_file("test.toml", t).unwrap();
                PathBuf::from("test.toml")
            });
            for (k, v) in env {
                jail.set_env(k, v);
            }
            jail.create_file("ca.pem", "x").unwrap();
            let sources = Sources { file, role };
            out = Some(Config::load_from(&sources, Env::prefixed("OUTPOST_")));
            Ok(())
        });
        out.unwrap()
    }

    #[test]
    fn layers_apply_in_order() {
        let c = load(None, &[], Some(Role::Master)).unwrap();
        assert_eq!(c.api_addr.to_string(), "127.0.0.1:8080");
        assert_eq!(c.database_url(), "sqlite://data/master.db");
        let c = load(
            Some("api_addr = \"127.0.0.1:9000\"\nboot_wait_ms = 10"),
            &[],
            None,
        )
        .unwrap();
        assert_eq!(c.api_addr.to_string(), "127.0.0.1:9000");
        assert_eq!(c.boot_wait_ms, 10);
        let c = load(
            Some("api_addr = \"127.0.0.1:9000\""),
            &[
                ("OUTPOST_API_ADDR", "127.0.0.1:9100"),
                ("OUTPOST_MASTERS", "a:1, b:2"),
            ],
            None,
        )
        .unwrap();
        assert_eq!(c.api_addr.to_string(), "127.0.0.1:9100");
        assert_eq!(c.masters, vec!["a:1", "b:2"]);
    }

    #[test]
    fn edge_needs_secret_and_numeric_secrets_stay_text() {
        let id = "0191e9a0-0000-7000-8000-000000000001";
        let err = load(
            None,
            &[("OUTPOST_EDGE_ID", id), ("OUTPOST_CA_CERT", "ca.pem")],
            None,
        )
        .unwrap_err();
        assert_eq!(err.key, "edge_secret");
        let digits = "1".repeat(40);
        let c = load(
            None,
            &[
                ("OUTPOST_EDGE_ID", id),
                ("OUTPOST_EDGE_SECRET", &digits[..18]),
                ("OUTPOST_CA_CERT", "ca.pem"),
            ],
            None,
        )
        .unwrap_err();
        assert_eq!(c.key, "edge_secret");
        let c = load(
            None,
            &[
                ("OUTPOST_EDGE_ID", id),
                ("OUTPOST_EDGE_SECRET", &"a1".repeat(20)),
                ("OUTPOST_CA_CERT", "ca.pem"),
            ],
            None,
        )
        .unwrap();
        assert_eq!(c.role(), Role::Edge);
        assert_eq!(c.database_url(), "sqlite://data/edge.db");
        assert!(!format!("{c:?}").contains(&"a1".repeat(20)));
    }

    #[test]
    fn cluster_failsafe_is_taken_on_postgres_only() {
        let env = [
            ("OUTPOST_CLUSTER_FAILSAFE", "true"),
            ("OUTPOST_DATABASE_URL", "postgres://outpost@db/outpost"),
        ];
        let c = load(None, &env, Some(Role::Master)).unwrap();
        assert!(c.cluster_failsafe);
        assert!(
            !load(None, &[], Some(Role::Master))
                .unwrap()
                .cluster_failsafe
        );
        for refused in [
            vec![("OUTPOST_CLUSTER_FAILSAFE", "true")],
            vec![
                ("OUTPOST_CLUSTER_FAILSAFE", "true"),
                ("OUTPOST_CLUSTER_LOCK_FILE", "cluster.lock"),
            ],
        ] {
            let err = load(None, &refused, Some(Role::Master)).unwrap_err();
            assert_eq!(err.key, "cluster_failsafe", "{err}");
            assert!(err.to_string().contains("PostgreSQL"), "{err}");
        }
    }

    #[test]
    fn replica_scope_is_site_unless_all_is_asked() {
        use crate::proto::ReplicaScope;
        let c = load(None, &[], Some(Role::Master)).unwrap();
        assert_eq!(c.replica_scope, ReplicaScope::Site);
        let c = load(Some("replica_scope = \"all\""), &[], Some(Role::Master)).unwrap();
        assert_eq!(c.replica_scope, ReplicaScope::All);
        let c = load(None, &[("OUTPOST_REPLICA_SCOPE", "site")], None).unwrap();
        assert_eq!(c.replica_scope, ReplicaScope::Site);
    }

    #[test]
    fn bad_values_name_the_key() {
        for (toml, env, key, needle) in [
            (Some("api_adr = \"x\""), vec![], "api_adr", "unknown key"),
            (
                None,
                vec![("OUTPOST_LINK_ADDR", "nonsense")],
                "link_addr",
                "OUTPOST_LINK_ADDR",
            ),
            (
                None,
                vec![("OUTPOST_BOOT_WAIT_MS", "soon")],
                "boot_wait_ms",
                "OUTPOST_BOOT_WAIT_MS",
            ),
            (
                Some("dead_after_ms = 500"),
                vec![],
                "dead_after_ms",
                "heartbeat_ms",
            ),
            (
                Some("database_url = \"mysql://x\""),
                vec![],
                "database_url",
                "sqlite",
            ),
            (Some("log = \"=[\""), vec![], "log", ""),
            (
                None,
                vec![("OUTPOST_REPLICA_SCOPE", "everything")],
                "replica_scope",
                "OUTPOST_REPLICA_SCOPE",
            ),
        ] {
            let err = load(toml, &env, Some(Role::Master)).unwrap_err();
            assert_eq!(err.key, key, "{err}");
            assert!(err.to_string().contains(needle), "{err}");
            assert!(!err.to_string().contains('\n'), "one line: {err}");
        }
        let err = load(
            None,
            &[("OUTPOST_LINK_CLIENT_CA", "missing.pem")],
            Some(Role::Master),
        )
        .unwrap_err();
        assert_eq!(err.key, "link_client_ca");
        let err = load(
            None,
            &[
                ("OUTPOST_EDGE_ID", "0191e9a0-0000-7000-8000-000000000001"),
                ("OUTPOST_EDGE_SECRET", &"z".repeat(40)),
                ("OUTPOST_CA_CERT", "ca.pem"),
                ("OUTPOST_TLS_CLIENT_CERT", "ca.pem"),
            ],
            None,
        )
        .unwrap_err();
        assert_eq!(err.key, "tls_client_key");
        let err = load(
            None,
            &[
                ("OUTPOST_EDGE_ID", "0191e9a0-0000-7000-8000-000000000001"),
                ("OUTPOST_EDGE_SECRET", &"z".repeat(40)),
                ("OUTPOST_CA_CERT", "missing.pem"),
            ],
            None,
        )
        .unwrap_err();
        assert_eq!(err.key, "ca_cert");
    }
}
