//! The master role: `run(config, shutdown)`.
//!
//! Boot follows the design's order (see [`crate::boot`]): certificates,
//! store, boot plan. The link listener, the runtime and the web API attach
//! here as they are built.

use std::future::Future;
use std::path::Path;

use std::time::Duration;

use crate::api;
use crate::boot::{self, RunError};
use crate::certs;
use crate::config::{Config, ConfigError, Role, check_readable};

/// Runs a master until `shutdown` completes.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> Result<(), RunError> {
    certs::install_crypto_provider();
    ensure_certificates(&config)?;
    let store = boot::open_store(&config).await?;
    let plan = boot::plan_master(&store).await?;
    tracing::info!(
        edges = plan.edges.len(),
        edge_systems = plan.edge_systems.len(),
        edge_modules = plan.edge_modules.len(),
        master_systems = plan.master_systems.len(),
        master_modules = plan.master_modules.len(),
        total_ms = plan.timings.total().as_secs_f64() * 1e3,
        "boot plan loaded ({})",
        plan.timings
    );
    let api = api::start(&config, &store, Role::Master).await?;
    tracing::info!(api = %api.addr, "master ready");
    shutdown.await;
    tracing::info!("master stopping");
    api.stop(Duration::from_millis(config.shutdown_grace_ms))
        .await;
    store.close().await;
    Ok(())
}

/// The master's TLS files must be readable. On a fresh checkout (none of the
/// three files exists) a development set is created and said to be one.
pub fn ensure_certificates(config: &Config) -> Result<(), ConfigError> {
    let files = [
        ("ca_cert", &config.ca_cert),
        ("tls_cert", &config.tls_cert),
        ("tls_key", &config.tls_key),
    ];
    if files.iter().all(|(_, p)| !p.exists()) {
        let dir = config.tls_cert.parent().unwrap_or(Path::new("."));
        let dev = certs::DevCerts::in_dir(dir);
        if dev.ca_cert != config.ca_cert || dev.cert != config.tls_cert || dev.key != config.tls_key
        {
            return Err(ConfigError::new(
                "tls_cert",
                format!(
                    "{} does not exist (development certificates are only created under the default names in one directory; run `outpost certs init`)",
                    config.tls_cert.display()
                ),
            ));
        }
        let mut hosts = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
        let ip = config.link_addr.ip();
        if !ip.is_unspecified() && !hosts.contains(&ip.to_string()) {
            hosts.push(ip.to_string());
        }
        certs::init_dev(dir, &hosts, false)
            .map_err(|e| ConfigError::new("tls_cert", e.to_string()))?;
        tracing::warn!(
            dir = %dir.display(),
            hosts = ?hosts,
            "created development certificates: for development only, not for production"
        );
    }
    for (key, path) in files {
        check_readable(path).map_err(|p| ConfigError::new(key, p))?;
    }
    certs::load_certs(&config.ca_cert).map_err(|e| ConfigError::new("ca_cert", e.to_string()))?;
    certs::load_certs(&config.tls_cert).map_err(|e| ConfigError::new("tls_cert", e.to_string()))?;
    certs::load_key(&config.tls_key).map_err(|e| ConfigError::new("tls_key", e.to_string()))?;
    Ok(())
}
