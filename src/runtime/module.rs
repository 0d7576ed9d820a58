//! The task of one module: it owns the module's Lua state, transport,
//! command queue and timers, and serves its mailbox. Every driver call is a
//! Lua coroutine polled from this task's select loop, charged against the
//! instruction budget on every resume.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use mlua::chunk::ChunkMode;
use mlua::{Function, Lua, LuaSerdeExt, MultiValue, Table, Value as LuaValue};
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::lua::{
    self, Budget, Classified, DriverSpec, Host, Limits, classify, exec_error, new_state,
};
use super::queue::{FrameFor, Queue, RequestError};
use super::shared::{ModuleShared, escape};
use super::transport::{ConnectionEvent, DeviceConnection};
use super::{DebugEvent, ExecError, Inner, LogLevel, ModuleState, RuntimeConfig, RuntimeError};
use crate::model::{Endpoint, Module};
use crate::util::Unpoisoned;

type ExecReply = oneshot::Sender<Result<Value, ExecError>>;
/// The reply of a running exec, shared between the task (to answer it on
/// reload or failure) and the call's future (to notice the caller left).
type SharedReply = Arc<std::sync::Mutex<Option<ExecReply>>>;

/// Driver calls one module may have running (suspended in `request`,
/// `sleep`, `call`) at once; further execs are refused rather than letting
/// suspended coroutines pile up to the memory limit.
const MAX_CALLS: usize = 256;

/// What a module task is asked to do.
pub(crate) enum Cmd {
    Start(oneshot::Sender<Result<(), RuntimeError>>),
    Stop(oneshot::Sender<()>),
    Exec {
        method: String,
        args: Value,
        reply: ExecReply,
    },
    /// Benchmark baseline: a Rust closure through the same mailbox.
    Native {
        f: Box<dyn FnOnce() -> Value + Send>,
        reply: ExecReply,
    },
    /// New driver text; answers whether the device connection was restarted.
    Reload {
        source: Code,
        reply: oneshot::Sender<Result<bool, String>>,
    },
    Update {
        module: Arc<Module>,
        endpoint: Endpoint,
        source: Option<Code>,
        reply: oneshot::Sender<Result<(), String>>,
    },
    Unload(oneshot::Sender<()>),
}

pub(crate) struct Spawn {
    pub module: Arc<Module>,
    pub endpoint: Endpoint,
    pub source: Code,
    pub shared: Arc<ModuleShared>,
    pub rt: Weak<Inner>,
    pub cfg: Arc<RuntimeConfig>,
    pub rx: mpsc::Receiver<Cmd>,
    pub ready: oneshot::Sender<Result<(), String>>,
}

/// Charges a Lua call's instruction budget across all its resumes: the
/// budget is installed before each poll and read back after, so calls
/// interleaving on one state each pay for their own work.
struct Budgeted<F> {
    inner: Pin<Box<F>>,
    lua: Lua,
    left: i64,
}

impl<F: Future> Future for Budgeted<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = &mut *self;
        if let Some(mut b) = this.lua.app_data_mut::<Budget>() {
            b.left = this.left;
            b.resumed_at = std::time::Instant::now();
            b.slice = lua::YIELD_EVERY;
        }
        let r = this.inner.as_mut().poll(cx);
        if let Some(b) = this.lua.app_data_ref::<Budget>() {
            this.left = b.left;
        }
        r
    }
}

enum CallKind {
    Exec(u64),
    /// The exec's caller went away; its call was dropped.
    Cancelled(u64),
    Hook(&'static str),
    /// A call of the timer with this id.
    Timer(u64),
}

struct CallDone {
    kind: CallKind,
    result: mlua::Result<LuaValue>,
}

type CallFuture = Pin<Box<dyn Future<Output = CallDone> + Send>>;

enum Flow {
    Continue,
    Exit,
}

struct Task {
    module: Arc<Module>,
    cfg: Arc<RuntimeConfig>,
    rt: Weak<Inner>,
    shared: Arc<ModuleShared>,
    lua: Lua,
    table: Table,
    spec: DriverSpec,
    connection: Option<DeviceConnection>,
    running: bool,
    failed: bool,
    calls: FuturesUnordered<CallFuture>,
    /// Exec callers waiting for a driver call, by call id: kept outside the
    /// call futures so a reload or a failure can still answer them.
    waiting: HashMap<u64, SharedReply>,
    next_call: u64,
    wake: Arc<tokio::sync::Notify>,
    /// One reusable timer for the nearest deadline (queue or driver timer),
    /// created on first use and re-armed only when the deadline moves.
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
    timer_at: Option<Instant>,
    /// Unsolicited frames seen in the current flood window.
    flood_start: Instant,
    flood_frames: usize,
}

/// A compiled driver (Lua bytecode with debug information, so errors
/// still name file and line).
pub(crate) type Code = Arc<[u8]>;

/// Compiles driver text once, without running it: a broken reload is
/// rejected before any module is touched, and every module loads the same
/// bytecode instead of parsing the text again. Only the engine loads
/// bytecode; drivers cannot (`load` is text-only).
pub(crate) fn compile(name: &str, source: &str) -> Result<Code, String> {
    let lua =
        Lua::new_with(mlua::StdLib::NONE, mlua::LuaOptions::new()).map_err(|e| e.to_string())?;
    lua.load(source)
        .set_name(format!("@{name}"))
        .set_mode(ChunkMode::Text)
        .into_function()
        .map(|f| Arc::from(f.dump(false)))
        .map_err(|e| lua::strip_traceback(&e.to_string()))
}

fn limits(cfg: &RuntimeConfig) -> Limits {
    Limits {
        memory: cfg.memory_limit,
        instructions: cfg.instruction_budget,
        time: cfg.time_limit,
    }
}

/// Builds a state and runs the driver's top-level code.
fn build(
    module: &Module,
    wake: &Arc<tokio::sync::Notify>,
    has_transport: bool,
    source: &[u8],
    shared: &Arc<ModuleShared>,
    rt: &Weak<Inner>,
    cfg: &RuntimeConfig,
) -> Result<(Lua, Table, DriverSpec), String> {
    let host = Host {
        id: module.id,
        name: module.name.clone(),
        queue: Queue::new(
            cfg.command_queue,
            cfg.transport.max_outbound.max(64 * 1024) * 4,
        ),
        connected: false,
        has_transport,
        defaults: Default::default(),
        timers: Default::default(),
        settings: Arc::new(module.settings.clone()),
        shared: shared.clone(),
        runtime: rt.clone(),
        wake: wake.clone(),
    };
    let lua = new_state(host, &limits(cfg)).map_err(|e| format!("cannot create Lua state: {e}"))?;
    let tripped = || lua.app_data_ref::<Budget>().and_then(|b| b.tripped.clone());
    let describe =
        |e: mlua::Error, tripped: Option<String>| classify(&e, tripped.as_deref()).message();
    let value: LuaValue = lua
        .load(source)
        .set_name(format!("@{}", module.driver))
        .set_mode(ChunkMode::Binary)
        .call(())
        .map_err(|e| describe(e, tripped()))?;
    let LuaValue::Table(table) = value else {
        return Err(format!(
            "driver {} must return a table (got {})",
            module.driver,
            value.type_name()
        ));
    };
    let spec =
        lua::driver_spec(&lua, &table, &module.settings).map_err(|e| describe(e, tripped()))?;
    if let Some(mut h) = lua.app_data_mut::<Host>() {
        h.defaults = spec.defaults.clone();
    }
    lua.gc_restart();
    Ok((lua, table, spec))
}

fn make_connection(
    endpoint: &Endpoint,
    spec: &DriverSpec,
    cfg: &RuntimeConfig,
) -> Option<DeviceConnection> {
    match endpoint {
        Endpoint::None => None,
        Endpoint::Tcp { host, port } => Some(DeviceConnection::new(
            host.clone(),
            *port,
            spec.framing.clone(),
            cfg.transport.clone(),
        )),
    }
}

pub(crate) async fn run(s: Spawn) {
    let has_transport = s.endpoint != Endpoint::None;
    let wake = Arc::new(tokio::sync::Notify::new());
    let (lua, table, spec) = match build(
        &s.module,
        &wake,
        has_transport,
        &s.source,
        &s.shared,
        &s.rt,
        &s.cfg,
    ) {
        Ok(x) => x,
        Err(msg) => {
            let _ = s.ready.send(Err(msg));
            return;
        }
    };
    let connection = make_connection(&s.endpoint, &spec, &s.cfg);
    let task = Task {
        module: s.module,
        cfg: s.cfg,
        rt: s.rt,
        shared: s.shared,
        lua,
        table,
        spec,
        connection,
        running: false,
        failed: false,
        calls: FuturesUnordered::new(),
        waiting: HashMap::new(),
        next_call: 0,
        wake,
        timer: None,
        timer_at: None,
        flood_start: Instant::now(),
        flood_frames: 0,
    };
    // `on_load` completes before the load is reported, so a driver that
    // cannot initialise is refused rather than half-loaded.
    if let Some(f) = task.hook_fn("on_load") {
        let fut = task.budgeted(f, MultiValue::new());
        let res = tokio::time::timeout(task.cfg.exec_timeout, fut).await;
        let err = match res {
            Err(_) => Some("on_load timed out".to_owned()),
            Ok(Err(e)) => Some(classify(&e, task.tripped().as_deref()).message()),
            Ok(Ok(_)) => None,
        };
        if let Some(msg) = err {
            let _ = s.ready.send(Err(format!("on_load failed: {msg}")));
            return;
        }
    }
    task.shared.set_state(ModuleState::Loaded);
    task.shared.set_lua_memory(task.lua.used_memory());
    if task.connection.is_some() {
        task.shared.set_connected(false);
    }
    let _ = s.ready.send(Ok(()));
    task.run(s.rx).await;
}

async fn connection_next(connection: &mut Option<DeviceConnection>) -> ConnectionEvent {
    match connection {
        Some(l) => l.next().await,
        None => std::future::pending().await,
    }
}

async fn fire(timer: &mut Option<Pin<Box<tokio::time::Sleep>>>, armed: bool) {
    match timer {
        Some(t) if armed => t.as_mut().await,
        _ => std::future::pending().await,
    }
}

impl Task {
    async fn run(mut self, mut rx: mpsc::Receiver<Cmd>) {
        loop {
            self.pump();
            let deadline = self.next_deadline();
            if deadline != self.timer_at {
                self.timer_at = deadline;
                if let Some(at) = deadline {
                    match &mut self.timer {
                        Some(t) => t.as_mut().reset(at),
                        None => self.timer = Some(Box::pin(tokio::time::sleep_until(at))),
                    }
                }
            }
            tokio::select! {
                cmd = rx.recv() => match cmd {
                    Some(cmd) => {
                        if let Flow::Exit = self.on_cmd(cmd).await {
                            break;
                        }
                    }
                    None => {
                        self.unload().await;
                        break;
                    }
                },
                Some(done) = self.calls.next(), if !self.calls.is_empty() => self.on_done(done),
                ev = connection_next(&mut self.connection) => self.on_connection(ev),
                () = fire(&mut self.timer, self.timer_at.is_some()) => {
                    self.timer_at = None;
                    self.on_deadline();
                }
                () = self.wake.notified() => {}
            }
        }
    }

    fn tripped(&self) -> Option<String> {
        self.lua
            .app_data_ref::<Budget>()
            .and_then(|b| b.tripped.clone())
    }

    #[allow(
        clippy::expect_used,
        reason = "new_state installs the Host before the task exists and nothing removes it; only a borrow held across this call could fail it, and none is"
    )]
    fn host(&self) -> mlua::AppDataRefMut<'_, Host> {
        self.lua
            .app_data_mut::<Host>()
            .expect("host is installed at state creation")
    }

    fn hook_fn(&self, name: &str) -> Option<Function> {
        self.table.get::<Option<Function>>(name).ok().flatten()
    }

    fn budgeted(
        &self,
        f: Function,
        args: MultiValue,
    ) -> Budgeted<impl Future<Output = mlua::Result<LuaValue>> + Send + use<>> {
        Budgeted {
            inner: Box::pin(f.call_async::<LuaValue>(args)),
            lua: self.lua.clone(),
            left: self.cfg.instruction_budget as i64,
        }
    }

    fn spawn_call(&mut self, f: Function, args: MultiValue, kind: CallKind) {
        let fut = self.budgeted(f, args);
        self.calls.push(Box::pin(async move {
            CallDone {
                kind,
                result: fut.await,
            }
        }));
    }

    fn hook(&mut self, name: &'static str, args: MultiValue) {
        if self.failed {
            return;
        }
        if let Some(f) = self.hook_fn(name) {
            self.spawn_call(f, args, CallKind::Hook(name));
        }
    }

    /// Hands queued commands to the transport while it has room.
    fn pump(&mut self) {
        let Some(conn) = &mut self.connection else {
            return;
        };
        if !conn.is_connected() {
            return;
        }
        let now = Instant::now();
        let debug = self.shared.debug_enabled();
        let Some(mut h) = self.lua.app_data_mut::<Host>() else {
            return;
        };
        while conn.write_room() > 0 {
            let Some(data) = h.queue.next_to_send(now) else {
                break;
            };
            if debug {
                self.shared.debug(DebugEvent::Tx {
                    module: self.module.id,
                    data: escape(&data),
                });
            }
            conn.write(&data);
        }
    }

    fn next_deadline(&mut self) -> Option<Instant> {
        let running = self.running;
        let mut h = self.host();
        let q = h.queue.deadline();
        let t = if running {
            h.timers.next_deadline()
        } else {
            None
        };
        match (q, t) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn on_deadline(&mut self) {
        let now = Instant::now();
        let (retry, due) = {
            let mut h = self.host();
            let retry = h.queue.on_timeout(now);
            let due = if self.running {
                h.timers.due(now)
            } else {
                Vec::new()
            };
            (retry, due)
        };
        if let Some(data) = retry {
            self.shared.log(
                LogLevel::Debug,
                format!("no response in time, retrying {}", escape(&data)),
            );
            if let Some(conn) = &mut self.connection {
                conn.write(&data);
            }
        }
        for (id, f) in due {
            self.spawn_call(f, MultiValue::new(), CallKind::Timer(id));
        }
    }

    fn on_connection(&mut self, ev: ConnectionEvent) {
        match ev {
            ConnectionEvent::Connected => {
                self.host().connected = true;
                self.shared.set_connected(true);
                self.shared.log(LogLevel::Info, "device connected".into());
                self.hook("on_connect", MultiValue::new());
            }
            ConnectionEvent::ConnectFailed(msg) => {
                self.shared
                    .log(LogLevel::Debug, format!("connect failed: {msg}"));
            }
            ConnectionEvent::Frames(frames) => {
                let debug = self.shared.debug_enabled();
                for frame in frames {
                    if debug {
                        self.shared.debug(DebugEvent::Rx {
                            module: self.module.id,
                            data: escape(&frame),
                        });
                    }
                    let to = self.host().queue.on_frame(&frame);
                    if to == FrameFor::Unsolicited && self.flooded() {
                        let t = &self.cfg.transport;
                        let reason = format!(
                            "device flooded: more than {} unsolicited frames within {:?}",
                            t.flood_frames, t.flood_window
                        );
                        if let Some(conn) = &mut self.connection {
                            let ev = conn.cut(reason);
                            self.on_connection(ev);
                        }
                        return;
                    }
                    if to != FrameFor::Request {
                        match self.lua.create_string(&frame) {
                            Ok(s) => self
                                .hook("on_received", MultiValue::from_iter([LuaValue::String(s)])),
                            Err(e) => self.fail(format!("cannot hold received data: {e}")),
                        }
                    }
                }
            }
            ConnectionEvent::Disconnected { reason, error } => {
                self.lost_device();
                let level = if error {
                    LogLevel::Error
                } else {
                    LogLevel::Info
                };
                self.shared
                    .log(level, format!("device disconnected: {reason}"));
            }
        }
    }

    /// Counts one unsolicited frame; true when the window's limit is passed.
    fn flooded(&mut self) -> bool {
        let now = Instant::now();
        if now.duration_since(self.flood_start) > self.cfg.transport.flood_window {
            self.flood_start = now;
            self.flood_frames = 0;
        }
        self.flood_frames += 1;
        self.flood_frames > self.cfg.transport.flood_frames
    }

    /// The device connection is gone (or was closed by us).
    fn lost_device(&mut self) {
        let was = {
            let mut h = self.host();
            h.queue.fail_all(RequestError::Disconnected);
            std::mem::replace(&mut h.connected, false)
        };
        if was {
            self.shared.set_connected(false);
            self.hook("on_disconnect", MultiValue::new());
        }
    }

    fn on_done(&mut self, done: CallDone) {
        self.shared.set_lua_memory(self.lua.used_memory());
        if let CallKind::Timer(id) = done.kind {
            self.host().timers.finished(id);
        }
        let reply = match &done.kind {
            CallKind::Exec(id) => self
                .waiting
                .remove(id)
                .and_then(|r| r.lock_unpoisoned().take()),
            CallKind::Cancelled(id) => {
                self.waiting.remove(id);
                self.shared.log(
                    LogLevel::Debug,
                    "exec caller gave up; its call was cancelled".into(),
                );
                return;
            }
            _ => None,
        };
        match done.result {
            Ok(v) => {
                if let Some(reply) = reply {
                    let r = self
                        .lua
                        .from_value::<Value>(v)
                        .map_err(|e| ExecError::Driver {
                            message: format!("the driver returned a value that is not JSON: {e}"),
                        });
                    let _ = reply.send(r);
                }
            }
            Err(e) => {
                let c = classify(&e, self.tripped().as_deref());
                // Failed before anyone hears of it: a caller on another
                // thread that reads the state next sees it.
                if let Classified::Contained(msg) = &c {
                    self.fail(msg.clone());
                }
                match (&done.kind, reply) {
                    (CallKind::Exec(_), Some(reply)) => {
                        let _ = reply.send(Err(exec_error(&c)));
                    }
                    (CallKind::Hook(name), _) => {
                        let msg = format!("{name} failed: {}", c.message());
                        if !matches!(c, Classified::Contained(_)) {
                            self.shared.driver_error(&msg, false);
                        }
                        self.shared.log(LogLevel::Error, msg);
                    }
                    (CallKind::Timer(_), _) => {
                        let msg = format!("timer failed: {}", c.message());
                        if !matches!(c, Classified::Contained(_)) {
                            self.shared.driver_error(&msg, false);
                        }
                        self.shared.log(LogLevel::Error, msg);
                    }
                    _ => {}
                }
            }
        }
    }

    /// Marks the module failed: no more driver code runs, the device is
    /// released, every waiting caller is answered.
    fn fail(&mut self, msg: String) {
        if self.failed {
            return;
        }
        self.failed = true;
        self.running = false;
        self.shared.set_failure(Some(msg.clone()));
        if let Some(conn) = &mut self.connection {
            conn.stop();
        }
        self.lost_device();
        self.calls = FuturesUnordered::new();
        self.host().timers.clear();
        // Last, once the device is released: a reader on another thread
        // that sees the state sees the rest.
        self.shared.set_state(ModuleState::Failed);
        self.shared.driver_error(&msg, true);
        self.shared
            .log(LogLevel::Error, format!("module failed: {msg}"));
        for (_, reply) in self.waiting.drain() {
            if let Some(r) = reply.lock_unpoisoned().take() {
                let _ = r.send(Err(ExecError::Failed {
                    message: msg.clone(),
                }));
            }
        }
        // Give back what a runaway allocation took.
        let _ = self.lua.gc_collect();
    }

    async fn on_cmd(&mut self, cmd: Cmd) -> Flow {
        match cmd {
            Cmd::Start(reply) => {
                if self.failed {
                    let _ = reply.send(Err(RuntimeError::Failed {
                        module: self.module.id,
                        message: self.shared.failure().unwrap_or_default(),
                    }));
                    return Flow::Continue;
                }
                self.running = true;
                self.shared.set_state(ModuleState::Running);
                if let Some(conn) = &mut self.connection {
                    conn.start();
                }
                let _ = reply.send(Ok(()));
            }
            Cmd::Stop(reply) => {
                self.stop();
                let _ = reply.send(());
            }
            Cmd::Exec {
                method,
                args,
                reply,
            } => self.exec(method, args, reply),
            Cmd::Native { f, reply } => {
                let r = if self.running {
                    Ok(f())
                } else {
                    Err(self.shared.ended_error())
                };
                let _ = reply.send(r);
            }
            Cmd::Reload { source, reply } => {
                let _ = reply.send(self.reload(&source));
            }
            Cmd::Update {
                module,
                endpoint,
                source,
                reply,
            } => {
                let _ = reply.send(self.update(module, endpoint, source));
            }
            Cmd::Unload(reply) => {
                self.unload().await;
                let _ = reply.send(());
                return Flow::Exit;
            }
        }
        Flow::Continue
    }

    fn stop(&mut self) {
        if self.failed {
            return;
        }
        self.running = false;
        self.shared.set_state(ModuleState::Stopped);
        if let Some(conn) = &mut self.connection {
            conn.stop();
        }
        self.lost_device();
    }

    fn exec(&mut self, method: String, args: Value, reply: ExecReply) {
        if self.failed || !self.running {
            let _ = reply.send(Err(self.shared.ended_error()));
            return;
        }
        // Hooks and private helpers are not callable from outside.
        let public = !method.is_empty() && !method.starts_with("on_") && !method.starts_with('_');
        let f = if public {
            self.table
                .get::<Option<Function>>(method.as_str())
                .ok()
                .flatten()
        } else {
            None
        };
        let Some(f) = f else {
            let _ = reply.send(Err(ExecError::NoSuchMethod { method }));
            return;
        };
        if self.calls.len() >= MAX_CALLS {
            let _ = reply.send(Err(ExecError::Driver {
                message: format!("too many calls in progress on this module ({MAX_CALLS})"),
            }));
            return;
        }
        let args = match lua::exec_args(&self.lua, &args) {
            Ok(a) => a,
            Err(e) => {
                let _ = reply.send(Err(ExecError::BadArguments {
                    message: lua::strip_traceback(&e.to_string()),
                }));
                return;
            }
        };
        self.next_call += 1;
        let id = self.next_call;
        let reply: SharedReply = Arc::new(std::sync::Mutex::new(Some(reply)));
        self.waiting.insert(id, reply.clone());
        let fut = self.budgeted(f, args);
        self.calls.push(Box::pin(async move {
            // Dropping the exec's future on the caller side cancels the
            // driver call here (a request whose caller gave up stops).
            let gone = std::future::poll_fn(|cx| match reply.lock_unpoisoned().as_mut() {
                Some(s) => s.poll_closed(cx),
                None => Poll::Pending,
            });
            tokio::select! {
                result = fut => CallDone { kind: CallKind::Exec(id), result },
                () = gone => CallDone { kind: CallKind::Cancelled(id), result: Ok(LuaValue::Nil) },
            }
        }));
    }

    /// Drops every running call of the current state, answering its caller.
    fn drop_calls(&mut self, why: &str) {
        self.calls = FuturesUnordered::new();
        for (_, reply) in self.waiting.drain() {
            if let Some(r) = reply.lock_unpoisoned().take() {
                let _ = r.send(Err(ExecError::Driver {
                    message: why.to_owned(),
                }));
            }
        }
    }

    fn reload(&mut self, source: &[u8]) -> Result<bool, String> {
        let (lua, table, spec) = build(
            &self.module,
            &self.wake,
            self.connection.is_some(),
            source,
            &self.shared,
            &self.rt,
            &self.cfg,
        )?;
        self.install(lua, table, spec);
        // A reload also revives a failed module: it is the way out of failure.
        if self.failed {
            self.failed = false;
            self.shared.set_failure(None);
            self.shared.set_state(ModuleState::Stopped);
        }
        let reconnected =
            self.connection.as_ref().is_some_and(|l| l.is_active()) && !self.host().connected;
        self.hook("on_load", MultiValue::new());
        if self.host().connected {
            self.hook("on_connect", MultiValue::new());
        }
        Ok(reconnected)
    }

    /// Swaps in a new state, keeping the device connection when the framing
    /// is unchanged.
    fn install(&mut self, lua: Lua, table: Table, spec: DriverSpec) {
        let was_connected = {
            let mut h = self.host();
            h.queue.fail_all(RequestError::Disconnected);
            h.connected
        };
        self.drop_calls("the driver was reloaded while the call was running");
        let mut keep = was_connected;
        if let Some(conn) = &mut self.connection
            && conn.framing() != &spec.framing
        {
            conn.set_framing(spec.framing.clone());
            if conn.is_active() {
                conn.stop();
                keep = false;
                if self.running {
                    conn.start();
                }
            }
        }
        self.lua = lua;
        self.table = table;
        self.spec = spec;
        self.host().connected = keep;
        if was_connected && !keep {
            self.shared.set_connected(false);
        }
    }

    fn update(
        &mut self,
        module: Arc<Module>,
        endpoint: Endpoint,
        source: Option<Code>,
    ) -> Result<(), String> {
        let old = std::mem::replace(&mut self.module, module.clone());
        if let Some(src) = source
            && let Err(e) = self.reload(&src)
        {
            self.module = old;
            return Err(e);
        }
        let old_endpoint = self.connection.as_ref().map(|l| {
            let (h, p) = l.endpoint();
            Endpoint::Tcp {
                host: h.to_owned(),
                port: p,
            }
        });
        let old_endpoint = old_endpoint.unwrap_or(Endpoint::None);
        if old_endpoint != endpoint {
            if let Some(conn) = &mut self.connection {
                conn.stop();
            }
            self.lost_device();
            self.connection = make_connection(&endpoint, &self.spec, &self.cfg);
            self.host().has_transport = self.connection.is_some();
            if self.running
                && let Some(conn) = &mut self.connection
            {
                conn.start();
            }
        }
        if old.settings != module.settings {
            self.host().settings = Arc::new(module.settings.clone());
            if let Ok(spec) = lua::driver_spec(&self.lua, &self.table, &module.settings)
                && spec != self.spec
            {
                self.host().defaults = spec.defaults.clone();
                if let Some(conn) = &mut self.connection
                    && conn.framing() != &spec.framing
                {
                    conn.set_framing(spec.framing.clone());
                    if conn.is_active() {
                        conn.stop();
                        conn.start();
                    }
                }
                self.spec = spec;
            }
            match self.lua.to_value(&module.settings) {
                Ok(s) => self.hook("on_settings", MultiValue::from_iter([s])),
                Err(e) => return Err(e.to_string()),
            }
        }
        if !module.enabled && self.running {
            self.stop();
        }
        Ok(())
    }

    async fn unload(&mut self) {
        if !self.failed
            && let Some(f) = self.hook_fn("on_unload")
        {
            let fut = self.budgeted(f, MultiValue::new());
            if let Ok(Err(e)) = tokio::time::timeout(Duration::from_secs(1), fut).await {
                self.shared.log(
                    LogLevel::Error,
                    format!("on_unload failed: {}", lua::strip_traceback(&e.to_string())),
                );
            }
            self.pump();
        }
        if let Some(conn) = &mut self.connection {
            conn.flush(Duration::from_millis(200)).await;
            conn.stop();
        }
        self.running = false;
        self.shared
            .connected
            .store(false, std::sync::atomic::Ordering::Release);
        self.shared.set_state(ModuleState::Stopped);
        self.calls = FuturesUnordered::new();
        for (_, reply) in self.waiting.drain() {
            if let Some(r) = reply.lock_unpoisoned().take() {
                let _ = r.send(Err(ExecError::Stopped));
            }
        }
    }
}
