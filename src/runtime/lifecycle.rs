//! Lifecycle of modules: load, start, stop, unload, update, and live
//! reloads of driver code.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use super::module::{self, Cmd, Code, Spawn};
use super::shared::ModuleShared;
use super::{DriverError, Entry, LoadReport, ReloadReport, Runtime, RuntimeError};
use crate::model::{Endpoint, Module, check_driver_name};
use crate::util::{Unpoisoned, UnpoisonedRw};

impl Runtime {
    /// The compiled driver: from the cache, or read and compiled once, off
    /// the runtime. Loads that ask while it compiles wait for that one
    /// compilation (a failed one is not cached: the next load tries again).
    async fn driver_code(&self, name: &str) -> Result<Code, DriverError> {
        check_driver_name(name).map_err(|_| DriverError::BadName(name.to_owned()))?;
        let cell = self
            .inner
            .drivers
            .lock_unpoisoned()
            .entry(name.to_owned())
            .or_default()
            .clone();
        cell.get_or_try_init(|| self.compile_driver(name, None))
            .await
            .cloned()
    }

    /// Reads (unless `text` is given) and compiles a driver on the
    /// executor's blocking threads.
    async fn compile_driver(&self, name: &str, text: Option<String>) -> Result<Code, DriverError> {
        let path = self.inner.cfg.modules_dir.join(name);
        let driver = name.to_owned();
        let work = move || {
            let text = match text {
                Some(t) => t,
                None => std::fs::read_to_string(&path)
                    .map_err(|source| DriverError::Io { path, source })?,
            };
            module::compile(&driver, &text)
                .map_err(|message| DriverError::Compile { driver, message })
        };
        match self.inner.executor.handle.spawn_blocking(work).await {
            Ok(r) => {
                if r.is_ok() {
                    self.inner.compiled.fetch_add(1, Ordering::Relaxed);
                }
                r
            }
            Err(e) => Err(DriverError::Compile {
                driver: name.to_owned(),
                message: format!("compilation did not finish: {e}"),
            }),
        }
    }

    /// Loads a module: creates its Lua state, runs the driver and its
    /// `on_load`. The module is not started (no device connection yet).
    pub async fn load(&self, module: &Module) -> Result<(), RuntimeError> {
        if self.inner.closing.load(Ordering::Acquire) {
            return Err(RuntimeError::ShuttingDown);
        }
        let endpoint = module
            .endpoint()
            .map_err(|message| RuntimeError::BadEndpoint {
                module: module.id,
                message,
            })?;
        let source = self.driver_code(&module.driver).await?;
        let shared = Arc::new(ModuleShared::new(
            module,
            endpoint != Endpoint::None,
            self.inner.events.clone(),
            self.inner.activity.clone(),
        ));
        let (tx, rx) = mpsc::channel(self.inner.cfg.mailbox);
        let module = Arc::new(module.clone());
        {
            let mut map = self.inner.modules.write_unpoisoned();
            if map.contains_key(&module.id) {
                return Err(RuntimeError::AlreadyLoaded(module.id));
            }
            map.insert(
                module.id,
                Entry {
                    module: module.clone(),
                    tx,
                    shared: shared.clone(),
                },
            );
        }
        let (ready_tx, ready_rx) = oneshot::channel();
        let task = module::run(Spawn {
            module: module.clone(),
            endpoint,
            source,
            shared,
            rt: Arc::downgrade(&self.inner),
            cfg: self.inner.cfg.clone(),
            rx,
            ready: ready_tx,
        });
        self.inner
            .tracker
            .spawn_on(task, &self.inner.executor.handle);
        let res = match ready_rx.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(message)) => Err(RuntimeError::LoadFailed {
                module: module.id,
                message,
            }),
            Err(_) => Err(RuntimeError::LoadFailed {
                module: module.id,
                message: "module task ended during load".into(),
            }),
        };
        if res.is_err() {
            self.inner.modules.write_unpoisoned().remove(&module.id);
        }
        res
    }

    /// Loads many modules, 64 at a time (a boot plan's modules). Modules
    /// already loaded count as loaded; failures are listed, not fatal.
    pub async fn load_many(&self, modules: &[Module]) -> LoadReport {
        let sem = Arc::new(tokio::sync::Semaphore::new(64));
        let mut set = tokio::task::JoinSet::new();
        for m in modules {
            let Ok(permit) = sem.clone().acquire_owned().await else {
                break;
            };
            let rt = self.clone();
            let m = m.clone();
            set.spawn(async move {
                let r = rt.load(&m).await;
                drop(permit);
                (m.id, r)
            });
        }
        let mut report = LoadReport::default();
        while let Some(res) = set.join_next().await {
            match res {
                Ok((_, Ok(()))) | Ok((_, Err(RuntimeError::AlreadyLoaded(_)))) => {
                    report.loaded += 1
                }
                Ok((id, Err(e))) => report.failed.push((id, e.to_string())),
                Err(e) => report.failed.push((Uuid::nil(), e.to_string())),
            }
        }
        report.failed.sort();
        report
    }

    async fn ask<T>(
        &self,
        id: Uuid,
        make: impl FnOnce(oneshot::Sender<T>) -> Cmd,
    ) -> Result<T, RuntimeError> {
        let entry = self.entry(id).ok_or(RuntimeError::NoSuchModule(id))?;
        let (tx, rx) = oneshot::channel();
        entry
            .tx
            .send(make(tx))
            .await
            .map_err(|_| RuntimeError::NoSuchModule(id))?;
        rx.await.map_err(|_| RuntimeError::NoSuchModule(id))
    }

    /// Starts a loaded module: it connects to its device (if any) and
    /// accepts exec. A disabled module is refused.
    pub async fn start(&self, id: Uuid) -> Result<(), RuntimeError> {
        let entry = self.entry(id).ok_or(RuntimeError::NoSuchModule(id))?;
        if !entry.module.enabled {
            return Err(RuntimeError::Disabled(id));
        }
        self.ask(id, Cmd::Start).await?
    }

    /// Stops a module: closes its device connection; status is kept.
    pub async fn stop(&self, id: Uuid) -> Result<(), RuntimeError> {
        self.ask(id, Cmd::Stop).await
    }

    /// Runs the driver's `on_unload`, closes the device and forgets the module.
    pub async fn unload(&self, id: Uuid) -> Result<(), RuntimeError> {
        let entry = self
            .inner
            .modules
            .write_unpoisoned()
            .remove(&id)
            .ok_or(RuntimeError::NoSuchModule(id))?;
        let (tx, rx) = oneshot::channel();
        if entry.tx.send(Cmd::Unload(tx)).await.is_ok() {
            let _ = rx.await;
        }
        Ok(())
    }

    /// Applies a changed module document: new settings call the driver's
    /// `on_settings`; a new uri moves the connection; a new driver reloads.
    pub async fn update(&self, module: &Module) -> Result<(), RuntimeError> {
        let entry = self
            .entry(module.id)
            .ok_or(RuntimeError::NoSuchModule(module.id))?;
        let endpoint = module
            .endpoint()
            .map_err(|message| RuntimeError::BadEndpoint {
                module: module.id,
                message,
            })?;
        let source = if entry.module.driver != module.driver {
            Some(self.driver_code(&module.driver).await?)
        } else {
            None
        };
        let new = Arc::new(module.clone());
        let res = self
            .ask(module.id, |reply| Cmd::Update {
                module: new.clone(),
                endpoint,
                source,
                reply,
            })
            .await?;
        res.map_err(|message| RuntimeError::Failed {
            module: module.id,
            message,
        })?;
        if let Some(e) = self.inner.modules.write_unpoisoned().get_mut(&module.id) {
            e.module = new;
        }
        Ok(())
    }

    /// Replaces a driver's code in every module using it, from the file in
    /// the modules directory or from `source`. Status and (when the framing
    /// did not change) device connections survive. Code that does not
    /// compile changes nothing and is reported; a module whose new code fails
    /// at load keeps its old code and is listed in `failed`.
    pub async fn reload_driver(
        &self,
        name: &str,
        source: Option<String>,
    ) -> Result<ReloadReport, RuntimeError> {
        check_driver_name(name).map_err(|_| DriverError::BadName(name.to_owned()))?;
        let text = self.compile_driver(name, source).await?;
        let cell = tokio::sync::OnceCell::new_with(Some(text.clone()));
        self.inner
            .drivers
            .lock_unpoisoned()
            .insert(name.to_owned(), Arc::new(cell));
        let users: Vec<Uuid> = {
            let map = self.inner.modules.read_unpoisoned();
            let mut v: Vec<Uuid> = map
                .values()
                .filter(|e| e.module.driver == name)
                .map(|e| e.module.id)
                .collect();
            v.sort_unstable();
            v
        };
        let mut report = ReloadReport {
            driver: name.to_owned(),
            ..ReloadReport::default()
        };
        for id in users {
            let source = text.clone();
            match self.ask(id, |reply| Cmd::Reload { source, reply }).await {
                Ok(Ok(reconnected)) => {
                    report.updated.push(id);
                    if reconnected {
                        report.reconnected.push(id);
                    }
                }
                Ok(Err(msg)) => report.failed.push((id, msg)),
                Err(e) => report.failed.push((id, e.to_string())),
            }
        }
        Ok(report)
    }
}
