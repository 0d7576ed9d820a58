//! Answers to link requests that act on the local module runtime, the same
//! on both sides of the link: exec, status, and debug streams forwarded as
//! events. Runtime errors become wire errors here; internal error values
//! never cross the link.

use std::collections::HashMap;
use std::sync::Mutex;

use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::link::{Peer, RequestCtx};
use crate::proto::{EventBody, RequestBody, ResponseBody, WireError};
use crate::runtime::{DebugEvent, ExecError, ModuleState, Runtime, RuntimeError};
use crate::util::Unpoisoned;

/// Exec, status and debug requests on one runtime.
pub struct ModuleRequests {
    runtime: Runtime,
    /// Debug streams being forwarded, by link session and module: a new
    /// link (a reconnect) subscribes afresh without touching the old one's.
    debug: Mutex<HashMap<(u64, Uuid), CancellationToken>>,
}

impl ModuleRequests {
    pub fn new(runtime: Runtime) -> Self {
        Self {
            runtime,
            debug: Mutex::new(HashMap::new()),
        }
    }

    /// Answers `body` if it is an exec, status or debug request; gives any
    /// other kind back.
    pub async fn handle(
        &self,
        ctx: &RequestCtx,
        body: RequestBody,
    ) -> Result<Result<ResponseBody, WireError>, RequestBody> {
        Ok(match body {
            RequestBody::Exec {
                module,
                method,
                args,
                epoch: _,
            } => {
                // Each role checks the epoch before it gets here
                // (`SiteControl::check_epoch` on an edge, the master handler).
                match module_id(&module) {
                    Ok(id) => self
                        .runtime
                        .exec(id, &method, args)
                        .await
                        .map(|value| ResponseBody::Value { value })
                        .map_err(exec_err),
                    Err(e) => Err(e),
                }
            }
            RequestBody::Status { module, key } => self.status(&module, key),
            RequestBody::ModuleState { module } => self.state(&module),
            RequestBody::DebugSubscribe { module } => self.subscribe(&ctx.peer, module),
            RequestBody::DebugUnsubscribe { module } => module_id(&module).and_then(|id| {
                let key = (ctx.peer.meta().session, id);
                match self.debug.lock_unpoisoned().remove(&key) {
                    Some(token) => {
                        token.cancel();
                        Ok(ResponseBody::Done)
                    }
                    None => Err(WireError::not_found(format!(
                        "debug subscription for module {id}"
                    ))),
                }
            }),
            other => return Err(other),
        })
    }

    fn status(&self, module: &str, key: Option<String>) -> Result<ResponseBody, WireError> {
        let id = module_id(module)?;
        match key {
            None => Ok(ResponseBody::Status {
                values: self.runtime.status(id).map_err(exec_err)?,
            }),
            Some(key) => Ok(ResponseBody::Value {
                value: self
                    .runtime
                    .status_key(id, &key)
                    .map_err(exec_err)?
                    .unwrap_or_default(),
            }),
        }
    }

    fn state(&self, module: &str) -> Result<ResponseBody, WireError> {
        let id = module_id(module)?;
        let info = self
            .runtime
            .module_info(id)
            .ok_or_else(|| WireError::not_found(format!("module {id} is not loaded here")))?;
        Ok(ResponseBody::ModuleState {
            state: state_name(info.state).to_owned(),
            failure: info.failure,
            has_device: info.has_device,
            connected: info.connected,
        })
    }

    /// Forwards a module's debug stream to `peer` as events until
    /// unsubscribed, replaced, or the link closes.
    fn subscribe(&self, peer: &Peer, module: String) -> Result<ResponseBody, WireError> {
        let id = module_id(&module)?;
        let mut rx = self.runtime.debug_stream(id).map_err(exec_err)?;
        let token = CancellationToken::new();
        let key = (peer.meta().session, id);
        {
            let mut debug = self.debug.lock_unpoisoned();
            // Forget forwarders that ended with their link.
            debug.retain(|_, t| !t.is_cancelled());
            if let Some(old) = debug.insert(key, token.clone()) {
                old.cancel();
            }
        }
        let peer = peer.clone();
        tokio::spawn(async move {
            loop {
                let ev = tokio::select! {
                    () = token.cancelled() => break,
                    () = peer.closed() => break,
                    ev = rx.recv() => ev,
                };
                let body = match ev {
                    Ok(ev) => debug_body(ev),
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => EventBody::Debug {
                        module: module.clone(),
                        level: "warn".into(),
                        message: format!(
                            "{n} debug lines dropped (the link was slower than the module)"
                        ),
                    },
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
                };
                if peer.event(body).await.is_err() {
                    break;
                }
            }
            token.cancel();
        });
        Ok(ResponseBody::Done)
    }
}

/// A module state's name on the wire and in the API.
pub fn state_name(state: ModuleState) -> &'static str {
    match state {
        ModuleState::Loaded => "loaded",
        ModuleState::Running => "running",
        ModuleState::Stopped => "stopped",
        ModuleState::Failed => "failed",
    }
}

/// Logs an internal failure and answers without its details.
pub fn internal(e: impl std::error::Error) -> WireError {
    tracing::error!(error = %crate::util::describe(&e), "link request failed");
    WireError::failed("internal error (see this side's log)")
}

pub fn module_id(s: &str) -> Result<Uuid, WireError> {
    Uuid::parse_str(s).map_err(|_| WireError::bad_request(format!("'{s}' is not a module id")))
}

/// The runtime's typed exec error, as the wire's. The message is the
/// driver's or the runtime's own (safe to show).
pub fn exec_err(e: ExecError) -> WireError {
    match e {
        ExecError::NoSuchModule { .. } | ExecError::NoSuchMethod { .. } => {
            WireError::not_found(e.to_string())
        }
        ExecError::BadArguments { .. } => WireError::bad_request(e.to_string()),
        ExecError::Timeout => WireError::DeadlineExceeded,
        ExecError::Stopped => WireError::Unavailable {
            message: e.to_string(),
        },
        other => WireError::failed(other.to_string()),
    }
}

pub fn runtime_err(e: RuntimeError) -> WireError {
    WireError::failed(e.to_string())
}

fn debug_body(ev: DebugEvent) -> EventBody {
    match ev {
        DebugEvent::Log {
            module,
            level,
            message,
        } => EventBody::Debug {
            module: module.to_string(),
            level: format!("{level:?}").to_lowercase(),
            message,
        },
        DebugEvent::Rx { module, data } => EventBody::Debug {
            module: module.to_string(),
            level: "rx".into(),
            message: data,
        },
        DebugEvent::Tx { module, data } => EventBody::Debug {
            module: module.to_string(),
            level: "tx".into(),
            message: data,
        },
    }
}
