//! A master node of a cluster before it acts, and after it lost its lease.
//!
//! While STANDBY (or INITIALIZING) it serves API reads (writes answer 503
//! naming the MASTER) and closes every link connection at once, so an edge
//! tries its next address without waiting; it drives no device. Once
//! MASTER, the acting API and link take over the same listening sockets.
//! A MASTER that loses its lease stops its links and modules at once;
//! the device gate has already closed with the deadline.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::Claimed;
use crate::api;
use crate::boot::RunError;
use crate::cluster::Cluster;
use crate::config::{Config, ConfigError, Role};
use crate::control::leadership::{LeadershipWatch, NodeState};
use crate::runtime::Runtime;

/// The standby's API and link door, closed after promotion.
pub(super) struct Standby {
    api: api::RunningApi,
    link_door: CancellationToken,
    grace: Duration,
}

impl Standby {
    pub(super) async fn stop(self) {
        self.link_door.cancel();
        self.api.stop(self.grace).await;
    }
}

/// Serves the standby's API and link door on copies of the claimed
/// listeners until this node is MASTER. An error when the cluster loop
/// ended without promoting it (the lock file could not be opened).
pub(super) async fn serve_until_promoted(
    cluster: &Cluster,
    config: &Config,
    claimed: &mut Claimed,
    runtime: &Runtime,
) -> Result<Standby, RunError> {
    let api_copy = copy_listener(&claimed.api_listener, "api_addr")?;
    let link_copy = copy_listener(&claimed.listener, "link_addr")?;
    let ops = cluster_ops(api::Ops::new(runtime.clone(), None, config), Some(cluster));
    let api = api::start_on(api_copy, config, &claimed.store, Role::Master, ops).await?;
    let link_door = CancellationToken::new();
    serve_link_door(link_copy, claimed, cluster, &link_door);
    tracing::info!(node = cluster.node_id(), api = %api.addr, "serving API reads until this node is MASTER");
    let standby = Standby {
        api,
        link_door,
        grace: Duration::from_millis(config.shutdown_grace_ms),
    };
    if cluster.promoted().await {
        Ok(standby)
    } else {
        standby.stop().await;
        Err(RunError::LeaseLost)
    }
}

/// A second handle on a bound listener: both accept from one socket, so
/// the acting server can start before the standby's stops.
fn copy_listener(
    listener: &tokio::net::TcpListener,
    key: &str,
) -> Result<tokio::net::TcpListener, ConfigError> {
    let copy = || -> std::io::Result<tokio::net::TcpListener> {
        let socket = socket2::SockRef::from(listener).try_clone()?;
        let std: std::net::TcpListener = socket.into();
        std.set_nonblocking(true)?;
        tokio::net::TcpListener::from_std(std)
    };
    copy().map_err(|e| ConfigError::new(key, format!("cannot share the listener: {e}")))
}

/// A standby holds no edge link: it authenticates each edge and sends it
/// to the MASTER's link address (or closes the connection while it knows
/// none), so the edge goes on at once.
fn serve_link_door(
    listener: tokio::net::TcpListener,
    claimed: &Claimed,
    cluster: &Cluster,
    stop: &CancellationToken,
) {
    let mut link = claimed.link.clone();
    link.leadership = cluster.watch();
    // Nobody reads them: the door registers no link.
    let (events, _) = tokio::sync::mpsc::channel(1);
    let serve = crate::link::master::serve(
        listener,
        link,
        Arc::new(super::StoredKeys(claimed.store.clone())),
        Arc::new(NotActing),
        crate::link::Registry::new(events),
        stop.clone(),
    );
    tokio::spawn(async move {
        if let Err(e) = serve.await {
            tracing::error!(error = %e, "the standby's link door stopped");
        }
    });
}

/// Answers nothing: a standby registers no link (every edge is sent on
/// before its link starts).
struct NotActing;

impl crate::link::Handler for NotActing {
    async fn handle(
        &self,
        _ctx: crate::link::RequestCtx,
        _body: crate::proto::RequestBody,
    ) -> Result<crate::proto::ResponseBody, crate::proto::WireError> {
        Err(crate::proto::WireError::Unavailable {
            message: "this master node does not act".into(),
        })
    }
}

/// Resolves when this node is no longer MASTER (lost, fenced, preempted).
pub(super) async fn lost(mut watch: LeadershipWatch) {
    let failed = watch
        .wait_for(|l| matches!(l.state, NodeState::Failed))
        .await
        .is_ok();
    if !failed {
        // The cluster was released: a graceful stop, not a loss.
        std::future::pending::<()>().await;
    }
}

/// Once the lease is lost: edge links close and modules unload (the
/// device gate closed already, with the deadline).
pub(super) async fn stop_acting_when_lost(
    watch: LeadershipWatch,
    runtime: Runtime,
    stop: CancellationToken,
) {
    tokio::select! {
        () = stop.cancelled() => {}
        () = lost(watch) => {
            tracing::error!("lease lost: closing edge links and stopping every module");
            stop.cancel();
            runtime.shutdown().await;
        }
    }
}

/// `ops` with this node's cluster state (none for a master alone).
pub(super) fn cluster_ops(ops: api::Ops, cluster: Option<&Cluster>) -> api::Ops {
    api::Ops {
        leadership: cluster.map(Cluster::watch),
        node_id: cluster.map(|c| c.node_id().to_owned()),
        ..ops
    }
}

/// The acting master's view of its leadership, with a task that stops it
/// acting when the lease is lost.
pub(super) fn follow(
    cluster: Option<&Cluster>,
    runtime: &Runtime,
    stop: &CancellationToken,
    tasks: &tokio_util::task::TaskTracker,
) -> Option<LeadershipWatch> {
    let watch = cluster.map(Cluster::watch)?;
    tasks.spawn(stop_acting_when_lost(
        watch.clone(),
        runtime.clone(),
        stop.clone(),
    ));
    Some(watch)
}
