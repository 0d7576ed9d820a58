//! What an edge answers over the link: every request kind of the design,
//! carried out on this edge's module runtime.

use std::path::PathBuf;
use std::time::Duration;

use uuid::Uuid;

use crate::link::repository::EdgeRepo;
use crate::link::{Handler, RequestCtx};
use crate::local_ops::{ModuleRequests, internal, runtime_err};
use crate::model::{ControlSystem, Kind};
use crate::proto::{RepoOp, RequestBody, ResponseBody, WireError};
use crate::runtime::Runtime;
use crate::store::Store;

/// The edge's request handler.
pub struct EdgeHandler {
    pub edge_id: Uuid,
    pub runtime: Runtime,
    pub store: Store,
    pub repo: EdgeRepo,
    modules: ModuleRequests,
    /// Wakes the replicator when the master says the data model changed.
    data_changed: std::sync::Arc<tokio::sync::Notify>,
    control: std::sync::Arc<super::SiteControl>,
    /// Told when the master says another process with our id replaced
    /// this session; the connect loop then stands by.
    stand_down: crate::link::edge::StandDown,
}

/// How long one file request of a repository sync may take.
const REPO_REQUEST: Duration = Duration::from_secs(30);

impl EdgeHandler {
    pub fn new(
        edge_id: Uuid,
        runtime: Runtime,
        store: Store,
        modules_dir: PathBuf,
        data_changed: std::sync::Arc<tokio::sync::Notify>,
        control: std::sync::Arc<super::SiteControl>,
    ) -> Self {
        Self {
            edge_id,
            store,
            repo: EdgeRepo::new(modules_dir),
            modules: ModuleRequests::new(runtime.clone()),
            runtime,
            data_changed,
            control,
            stand_down: Default::default(),
        }
    }

    /// Shares the connect loop's stand-down switch.
    pub fn with_stand_down(mut self, stand_down: crate::link::edge::StandDown) -> Self {
        self.stand_down = stand_down;
        self
    }

    /// One of this edge's systems from the replica.
    async fn system(&self, id: Uuid) -> Result<ControlSystem, WireError> {
        let doc = match self.store.get(id).await.map_err(internal)? {
            Some(d) if d.kind == Kind::System.as_str() => d,
            _ => return Err(WireError::not_found(format!("system {id}"))),
        };
        let system: ControlSystem = doc.parse().map_err(internal)?;
        if system.edge_id != Some(self.edge_id) {
            return Err(WireError::Unavailable {
                message: format!("system {id} does not belong to this edge location"),
            });
        }
        Ok(system)
    }
}

impl Handler for EdgeHandler {
    fn event(&self, _peer: &crate::link::Peer, body: crate::proto::EventBody) {
        match body {
            crate::proto::EventBody::DataModelUpdated { .. } => self.data_changed.notify_one(),
            other => tracing::debug!(event = ?other, "unexpected event from the master"),
        }
    }

    async fn handle(&self, ctx: RequestCtx, body: RequestBody) -> Result<ResponseBody, WireError> {
        // A request that acts on devices must come under the current epoch:
        // one sent before control changed hands is refused.
        self.control.check_epoch(body.epoch())?;
        let body = match self.modules.handle(&ctx, body).await {
            Ok(answer) => return answer,
            Err(body) => body,
        };
        match body {
            RequestBody::ControlReport => Ok(self.control.report()),
            RequestBody::ControlAssume { epoch, reason } => {
                self.control.assume(epoch, &reason).await
            }
            RequestBody::ControlRelease { epoch, reason } => {
                self.control.release(epoch, &reason).await
            }
            RequestBody::Superseded { by } => {
                tracing::error!(
                    edge_id = %self.edge_id,
                    duplicate = %by,
                    "another process with this edge's id and secret connected to the master from {by}: this one stops its modules and stands by (two processes must never share an edge id)"
                );
                self.control.stand_by().await;
                self.stand_down.superseded();
                Ok(ResponseBody::Done)
            }
            RequestBody::StartSystem { system, .. } => self.start_system(system).await,
            RequestBody::StopSystem { system, .. } | RequestBody::ExpireSystemCache { system } => {
                self.system(system).await?;
                self.control.follow_documents().await;
                Ok(ResponseBody::Done)
            }
            RequestBody::ReloadDriver { name, source } => self.reload_driver(name, source).await,
            RequestBody::Repository {
                op: RepoOp::Sync { commit },
            } => self.sync_repository(&ctx, &commit).await,
            RequestBody::Repository { .. }
            | RequestBody::RepoTree { .. }
            | RequestBody::RepoBlob { .. } => Err(WireError::Unavailable {
                message: "the driver repository is served by the master".into(),
            }),
            RequestBody::UnsyncedEvents { after, limit } => {
                self.unsynced_events(after, limit).await
            }
            RequestBody::EventsSynced { ids } => {
                self.store.mark_synced(&ids).await.map_err(internal)?;
                Ok(ResponseBody::Done)
            }
            other => Err(WireError::Unavailable {
                message: format!("{} is not served by an edge", other.kind()),
            }),
        }
    }
}

impl EdgeHandler {
    async fn start_system(&self, system: Uuid) -> Result<ResponseBody, WireError> {
        if !self.control.is_running().await {
            return Err(WireError::Unavailable {
                message: "this edge stands by: the master controls its site".into(),
            });
        }
        // The system's documents (its `stopped` field included) are the
        // replica's; the reconciler follows them.
        self.system(system).await?;
        self.control.follow_documents().await;
        Ok(ResponseBody::Done)
    }

    async fn reload_driver(
        &self,
        name: String,
        source: Option<String>,
    ) -> Result<ResponseBody, WireError> {
        let report = self
            .runtime
            .reload_driver(&name, source)
            .await
            .map_err(runtime_err)?;
        if let Some((id, why)) = report.failed.first() {
            return Err(WireError::failed(format!(
                "module {id} kept the old {name}: {why}"
            )));
        }
        Ok(ResponseBody::Reloaded {
            drivers: vec![report.driver],
        })
    }

    /// Fetches `commit`'s changed driver files from the master, then
    /// reloads the drivers that changed.
    async fn sync_repository(
        &self,
        ctx: &RequestCtx,
        commit: &str,
    ) -> Result<ResponseBody, WireError> {
        let report = self
            .repo
            .sync(&ctx.peer, commit, REPO_REQUEST)
            .await
            .map_err(|e| WireError::failed(e.to_string()))?;
        let mut reloaded = Vec::new();
        for driver in report.changed_drivers() {
            match self.runtime.reload_driver(&driver, None).await {
                Ok(_) => reloaded.push(driver),
                // A driver no module uses yet has nothing to reload.
                Err(e) => tracing::warn!(%driver, error = %e, "synced driver not reloaded"),
            }
        }
        tracing::info!(commit = %report.commit, reloaded = ?reloaded, "driver repository synced");
        Ok(ResponseBody::Commit {
            commit: report.commit,
            changed: reloaded,
        })
    }

    /// Passive sync: a page of this edge's unsynced events.
    async fn unsynced_events(&self, after: i64, limit: u32) -> Result<ResponseBody, WireError> {
        let page = self
            .store
            .unsynced_events(after, limit.clamp(1, 10_000))
            .await
            .map_err(internal)?;
        Ok(ResponseBody::Events {
            events: page.into_iter().map(super::event_log::to_wire).collect(),
        })
    }
}
