//! Calls into modules: `exec` (the one path of every driver call, which
//! reports each finished exec as an `Activity`) and `exec_native`.

use serde_json::Value;
use tokio::sync::oneshot;
use uuid::Uuid;

use super::module::Cmd;
use super::shared::json_size;
use super::types::cut;
use super::{Activity, Entry, ExecError, ModuleState, Runtime};

impl Runtime {
    /// Calls a public function of a module's driver with JSON arguments (an
    /// array is spread into positional arguments, `null` passes none).
    pub async fn exec(&self, id: Uuid, method: &str, args: Value) -> Result<Value, ExecError> {
        let result = self.exec_inner(id, method, args).await;
        let tx = &self.inner.activity;
        if tx.receiver_count() > 0 && !matches!(result, Err(ExecError::NoSuchModule { .. })) {
            let _ = tx.send(Activity::Exec {
                module: id,
                method: cut(method.to_owned()),
                result: match &result {
                    Ok(v) => Ok(cut(v.to_string())),
                    Err(e) => Err(e.clone()),
                },
            });
        }
        result
    }

    async fn exec_inner(&self, id: Uuid, method: &str, args: Value) -> Result<Value, ExecError> {
        let entry = self
            .entry(id)
            .ok_or(ExecError::NoSuchModule { module: id })?;
        match entry.shared.state() {
            ModuleState::Running => {}
            ModuleState::Failed => return Err(entry.shared.ended_error()),
            _ => return Err(ExecError::Stopped),
        }
        let limit = self.inner.cfg.max_exec_args;
        if json_size(&args, limit) > limit {
            return Err(ExecError::BadArguments {
                message: format!("arguments larger than {limit} bytes"),
            });
        }
        let (tx, rx) = oneshot::channel();
        let cmd = Cmd::Exec {
            method: method.to_owned(),
            args,
            reply: tx,
        };
        self.call(&entry, cmd, rx).await
    }

    async fn call(
        &self,
        entry: &Entry,
        cmd: Cmd,
        rx: oneshot::Receiver<Result<Value, ExecError>>,
    ) -> Result<Value, ExecError> {
        let fut = async {
            entry
                .tx
                .send(cmd)
                .await
                .map_err(|_| entry.shared.ended_error())?;
            rx.await.map_err(|_| entry.shared.ended_error())?
        };
        tokio::time::timeout(self.inner.cfg.exec_timeout, fut)
            .await
            .map_err(|_| ExecError::Timeout)?
    }

    /// Runs a Rust closure inside a module's task, through the same mailbox
    /// as [`Runtime::exec`]. It exists as the baseline the benchmark compares
    /// Lua exec against; it is not a way to extend drivers.
    pub async fn exec_native(
        &self,
        id: Uuid,
        f: impl FnOnce() -> Value + Send + 'static,
    ) -> Result<Value, ExecError> {
        let entry = self
            .entry(id)
            .ok_or(ExecError::NoSuchModule { module: id })?;
        let (tx, rx) = oneshot::channel();
        let cmd = Cmd::Native {
            f: Box::new(f),
            reply: tx,
        };
        self.call(&entry, cmd, rx).await
    }
}
