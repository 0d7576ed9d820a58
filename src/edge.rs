//! The edge role: `run(config, shutdown)`.
//!
//! An edge opens its local replica under its data directory and loads only
//! its own location, the systems it controls and their modules. With an
//! empty replica it says so and waits for the first sync from the master.

use std::future::Future;

use crate::boot::{self, EdgeBoot, RunError};
use crate::certs;
use crate::config::{Config, ConfigError, Role};

/// Runs an edge until `shutdown` completes.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> Result<(), RunError> {
    certs::install_crypto_provider();
    config.check(Some(Role::Edge))?;
    let edge_id = config
        .edge_id
        .ok_or_else(|| ConfigError::new("edge_id", "required to run an edge"))?;
    let store = boot::open_store(&config).await?;
    match boot::plan_edge(&store, edge_id).await? {
        EdgeBoot::Waiting => tracing::warn!(
            %edge_id,
            "this edge location is not in the local replica yet: waiting for the first sync from the master"
        ),
        EdgeBoot::Ready(plan) => {
            if !plan.missing_modules.is_empty() {
                tracing::warn!(missing = ?plan.missing_modules, "systems list modules that are not in the replica");
            }
            tracing::info!(
                %edge_id,
                location = %plan.location.name,
                systems = plan.systems.len(),
                modules = plan.modules.len(),
                total_ms = plan.timings.total().as_secs_f64() * 1e3,
                "boot plan loaded ({})",
                plan.timings
            );
        }
    }
    let api = crate::api::start(&config, &store, Role::Edge).await?;
    tracing::info!(%edge_id, api = %api.addr, "edge ready");
    shutdown.await;
    tracing::info!("edge stopping");
    api.stop(std::time::Duration::from_millis(config.shutdown_grace_ms))
        .await;
    store.close().await;
    Ok(())
}
