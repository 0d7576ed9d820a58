//! What a master answers over the link: the driver repository's files for
//! an edge's sync, and exec, status and debug streams of the modules the
//! master runs (an edge proxies its clients' calls for those).

use tokio::sync::broadcast;
use uuid::Uuid;

use crate::answer::ModuleRequests;
use crate::link::repository::MasterRepo;
use crate::link::{Handler, Peer, RequestCtx};
use crate::proto::{EventBody, RequestBody, ResponseBody, WireError};
use crate::runtime::Runtime;

/// Events from edges (debug streams), with the edge they came from.
pub type EdgeEvents = broadcast::Sender<(Uuid, EventBody)>;

pub struct MasterHandler {
    repo: MasterRepo,
    modules: ModuleRequests,
    events: EdgeEvents,
}

impl MasterHandler {
    pub fn new(runtime: Runtime, modules_dir: std::path::PathBuf, events: EdgeEvents) -> Self {
        Self {
            repo: MasterRepo::new(modules_dir),
            modules: ModuleRequests::new(runtime),
            events,
        }
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
