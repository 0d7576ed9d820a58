//! What a master answers over the link: the driver repository's files for
//! an edge's sync, and exec, status and debug streams of the modules the
//! master runs (an edge proxies its clients' calls for those).

use tokio::sync::broadcast;
use uuid::Uuid;

use crate::answer::ModuleRequests;
use crate::link::repository::MasterRepo;
use crate::link::{Handler, Peer, RequestCtx};
use crate::proto::{DocChange, EventBody, RequestBody, ResponseBody, WireError};
use crate::runtime::Runtime;
use crate::store::Store;

/// Events from edges (debug streams), with the edge they came from.
pub type EdgeEvents = broadcast::Sender<(Uuid, EventBody)>;

pub struct MasterHandler {
    repo: MasterRepo,
    modules: ModuleRequests,
    events: EdgeEvents,
    store: Store,
}

/// Most documents one `changes` answer carries.
const MAX_PAGE: u32 = 2000;

impl MasterHandler {
    pub fn new(
        runtime: Runtime,
        modules_dir: std::path::PathBuf,
        events: EdgeEvents,
        store: Store,
    ) -> Self {
        Self {
            repo: MasterRepo::new(modules_dir),
            modules: ModuleRequests::new(runtime),
            events,
            store,
        }
    }

    /// A page of the change feed for an edge's replica.
    async fn changes(&self, after: i64, limit: u32) -> Result<ResponseBody, WireError> {
        let last_seq = self
            .store
            .last_seq()
            .await
            .map_err(crate::answer::internal)?;
        let docs = self
            .store
            .changes_since(after, limit.clamp(1, MAX_PAGE))
            .await
            .map_err(crate::answer::internal)?;
        Ok(ResponseBody::Changes {
            store_id: self.store.store_id(),
            docs: docs
                .into_iter()
                .map(|d| DocChange {
                    kind: d.kind,
                    id: d.id,
                    rev: d.rev,
                    seq: d.seq,
                    deleted: d.deleted,
                    owner: d.owner,
                    body: d.body,
                })
                .collect(),
            last_seq,
        })
    }
}

impl Handler for MasterHandler {
    /// Fans an edge's events out to whoever subscribed (a slow subscriber
    /// lags and loses lines; the link's reader never waits).
    fn event(&self, peer: &Peer, body: EventBody) {
        let _ = self.events.send((peer.meta().edge_id, body));
    }

    async fn handle(&self, ctx: RequestCtx, body: RequestBody) -> Result<ResponseBody, WireError> {
        match &body {
            // An edge fetches a commit's files; it never moves the master's
            // repository (that is an operator's call, on the master).
            RequestBody::RepoTree { .. } | RequestBody::RepoBlob { .. } => {
                return self
                    .repo
                    .handle(&body)
                    .await
                    .unwrap_or_else(|| Err(WireError::failed("unreachable")));
            }
            RequestBody::Changes { after, limit } => return self.changes(*after, *limit).await,
            RequestBody::Repository { .. } => {
                return Err(WireError::Unavailable {
                    message: "an edge cannot move the master's driver repository".into(),
                });
            }
            _ => {}
        }
        match self.modules.handle(&ctx, body).await {
            Ok(answer) => answer,
            Err(other) => Err(WireError::Unavailable {
                message: format!("{} is not served by a master", other.kind()),
            }),
        }
    }
}
