//! The request kinds served by the module runtime: a [`Handler`] that maps
//! each [`RequestBody`] onto [`Runtime`] calls, for either role.
//!
//! Seams left to the control issue: `start_system` needs the system's
//! document (pass a lookup with [`RuntimeHandler::with_systems`]); the
//! control epoch carried by `exec` is not checked here.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::peer::{Handler, Peer, RequestCtx};
use super::repository::{EdgeRepo, MasterRepo};
use crate::model::ControlSystem;
use crate::proto::{EventBody, RepoOp, RequestBody, ResponseBody, WireError};
use crate::runtime::{DebugEvent, ExecError, Runtime, RuntimeError};

type SystemLookup = Arc<dyn Fn(Uuid) -> Option<ControlSystem> + Send + Sync>;

/// Serves requests from a [`Runtime`] (and, when given, the repositories).
pub struct RuntimeHandler {
    runtime: Runtime,
    edge_repo: Option<EdgeRepo>,
    master_repo: Option<MasterRepo>,
    systems: Option<SystemLookup>,
    /// Debug subscriptions by (link session, module).
    debug: Mutex<HashMap<(u64, Uuid), CancellationToken>>,
    /// Deadline for each file fetch of a repository sync.
    pub fetch_timeout: Duration,
}

impl RuntimeHandler {
    pub fn new(runtime: Runtime) -> Self {
        Self {
            runtime,
            edge_repo: None,
            master_repo: None,
            systems: None,
            debug: Mutex::new(HashMap::new()),
            fetch_timeout: Duration::from_secs(30),
        }
    }

    /// An edge: `sync` writes into this modules directory.
    pub fn with_edge_repo(mut self, repo: EdgeRepo) -> Self {
        self.edge_repo = Some(repo);
        self
    }

    /// A master: `pull`, `reset`, `repo_tree`, `repo_blob` from this repository.
    pub fn with_master_repo(mut self, repo: MasterRepo) -> Self {
        self.master_repo = Some(repo);
        self
    }

    /// Where `start_system` finds the system document.
    pub fn with_systems(
        mut self,
        f: impl Fn(Uuid) -> Option<ControlSystem> + Send + Sync + 'static,
    ) -> Self {
        self.systems = Some(Arc::new(f));
        self
    }

    fn subscribe(&self, peer: &Peer, module: Uuid) -> Result<(), WireError> {
        let mut rx = self.runtime.debug_stream(module).map_err(exec_error)?;
        let token = CancellationToken::new();
        let key = (peer.meta().session, module);
        if let Some(old) = self.debug.lock().unwrap().insert(key, token.clone()) {
            old.cancel();
        }
        let peer = peer.clone();
        tokio::spawn(async move {
            loop {
                let ev = tokio::select! {
                    _ = token.cancelled() => return,
                    _ = peer.closed() => return,
                    ev = rx.recv() => ev,
                };
                let body = match ev {
                    Ok(DebugEvent::Log { level, message, .. }) => EventBody::Debug {
                        module: module.to_string(),
                        level: format!("{level:?}").to_lowercase(),
                        message,
                    },
                    Ok(DebugEvent::Rx { data, .. }) => EventBody::Debug {
                        module: module.to_string(),
                        level: "rx".into(),
                        message: data,
                    },
                    Ok(DebugEvent::Tx { data, .. }) => EventBody::Debug {
                        module: module.to_string(),
                        level: "tx".into(),
                        message: data,
                    },
                    // A slow link skips lines rather than holding memory.
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(_) => return,
                };
                if peer.event(body).await.is_err() {
                    return;
                }
            }
        });
        Ok(())
    }
}

fn module_id(s: &str) -> Result<Uuid, WireError> {
    s.parse()
        .map_err(|_| WireError::bad_request(format!("'{s}' is not a module id")))
}

fn exec_error(e: ExecError) -> WireError {
    match e {
        ExecError::NoSuchModule { module } => WireError::not_found(format!("module {module}")),
        ExecError::NoSuchMethod { method } => WireError::not_found(format!("method {method}")),
        ExecError::Stopped => WireError::Unavailable {
            message: "module is stopped".into(),
        },
        ExecError::Timeout => WireError::DeadlineExceeded,
        ExecError::BadArguments { message } => WireError::bad_request(message),
        ExecError::Driver { message } => WireError::failed(message),
        ExecError::Failed { message } => WireError::failed(format!("module failed: {message}")),
    }
}

fn runtime_error(e: RuntimeError) -> WireError {
    match e {
        RuntimeError::NoSuchModule(id) => WireError::not_found(format!("module {id}")),
        RuntimeError::NoSuchSystem(id) => WireError::not_found(format!("system {id}")),
        other => WireError::failed(other.to_string()),
    }
}

impl Handler for RuntimeHandler {
    async fn handle(&self, ctx: RequestCtx, body: RequestBody) -> Result<ResponseBody, WireError> {
        if let Some(repo) = &self.master_repo
            && let Some(r) = repo.handle(&body).await
        {
            return r;
        }
        let rt = &self.runtime;
        match body {
            RequestBody::Exec {
                module,
                method,
                args,
                ..
            } => {
                let value = rt
                    .exec(module_id(&module)?, &method, args)
                    .await
                    .map_err(exec_error)?;
                Ok(ResponseBody::Value { value })
            }
            RequestBody::Status { module, key } => {
                let id = module_id(&module)?;
                match key {
                    None => Ok(ResponseBody::Status {
                        values: rt.status(id).map_err(exec_error)?,
                    }),
                    Some(k) => match rt.status_key(id, &k).map_err(exec_error)? {
                        Some(value) => Ok(ResponseBody::Value { value }),
                        None => Err(WireError::not_found(format!("status {k}"))),
                    },
                }
            }
            RequestBody::StartSystem { system } => {
                let doc = self
                    .systems
                    .as_ref()
                    .and_then(|f| f(system))
                    .ok_or_else(|| WireError::not_found(format!("system {system}")))?;
                rt.start_system(&doc).await.map_err(runtime_error)?;
                Ok(ResponseBody::Done)
            }
            RequestBody::StopSystem { system } => {
                rt.stop_system(system).await.map_err(runtime_error)?;
                Ok(ResponseBody::Done)
            }
            RequestBody::ExpireSystemCache { system } => {
                // The runtime re-learns membership at the next start.
                rt.forget_system(system);
                Ok(ResponseBody::Done)
            }
            RequestBody::ReloadDriver { name, source } => {
                let report = rt
                    .reload_driver(&name, source)
                    .await
                    .map_err(runtime_error)?;
                if let Some((id, why)) = report.failed.first() {
                    return Err(WireError::failed(format!(
                        "{} module(s) kept the old code; {id}: {why}",
                        report.failed.len()
                    )));
                }
                Ok(ResponseBody::Reloaded {
                    drivers: vec![report.driver],
                })
            }
            RequestBody::DebugSubscribe { module } => {
                self.subscribe(&ctx.peer, module_id(&module)?)?;
                Ok(ResponseBody::Done)
            }
            RequestBody::DebugUnsubscribe { module } => {
                let key = (ctx.peer.meta().session, module_id(&module)?);
                if let Some(t) = self.debug.lock().unwrap().remove(&key) {
                    t.cancel();
                }
                Ok(ResponseBody::Done)
            }
            RequestBody::Repository {
                op: RepoOp::Sync { commit },
            } => {
                let repo = self
                    .edge_repo
                    .as_ref()
                    .ok_or_else(|| WireError::Unavailable {
                        message: "no modules repository here".into(),
                    })?;
                let report = repo
                    .sync(&ctx.peer, &commit, self.fetch_timeout)
                    .await
                    .map_err(WireError::from)?;
                let changed = report.changed_drivers();
                for name in &changed {
                    // A driver no module uses yet is compiled when first used.
                    if let Err(e) = rt.reload_driver(name, None).await {
                        tracing::warn!(driver = %name, error = %e, "reload after sync failed");
                    }
                }
                Ok(ResponseBody::Commit {
                    commit: report.commit,
                    changed,
                })
            }
            other => Err(WireError::Unavailable {
                message: format!("{} is not served here", other.kind()),
            }),
        }
    }
}
