//! The sandboxed Lua state of one module and the driver API installed in it.
//!
//! Each module owns its own `mlua::Lua`: a driver cannot see another
//! module's globals, and a memory limit or a runaway loop is contained to
//! one state. Only base, string, table, math, utf8 and coroutine are loaded;
//! `load` is text-only, `dofile`, `loadfile`, `string.dump` are gone. An
//! instruction hook charges every call a budget; once a call exceeds it (or
//! the memory limit is hit) the error cannot be caught by `pcall` and the
//! module is marked failed.

use std::collections::{BinaryHeap, HashMap};
use std::sync::{Arc, Weak};
use std::time::Duration;

use md5::{Digest, Md5};
use mlua::{
    AppDataRefMut, Function, HookTriggers, Lua, LuaOptions, LuaSerdeExt, MultiValue, StdLib, Table,
    Value as LuaValue, Variadic, VmState,
};
use serde_json::{Map, Value};
use tokio::time::Instant;
use uuid::Uuid;

use super::framing::Framing;
use super::queue::{Command, Queue, RequestError};
use super::shared::ModuleShared;
use super::{ExecError, Inner, LogLevel, Runtime};

/// The hook runs every this many VM instructions; the budget is charged in
/// these steps.
pub(crate) const HOOK_EVERY: u32 = 1000;

/// A driver call yields back to the module task (and the task to the
/// executor) after this many instructions, so busy drivers take turns: a
/// driver burning its whole budget delays another module by one slice, not
/// by its whole call.
pub(crate) const YIELD_EVERY: i64 = 10 * HOOK_EVERY as i64;

/// Registry name of the set of coroutines a driver made itself.
const DRIVER_THREADS: &str = "outpost.driver_threads";

/// Most timers one module may have pending at once.
const MAX_TIMERS: usize = 1024;

/// Instruction budget of the call that is running (set by the module task
/// before every resume of a driver coroutine).
pub(crate) struct Budget {
    pub left: i64,
    /// When the current resume started: a driver may not hold the thread
    /// longer than the time limit without yielding, even if each
    /// instruction is cheap (a loop around an expensive library call).
    pub resumed_at: std::time::Instant,
    /// Instructions left in the current slice (see [`YIELD_EVERY`]).
    pub slice: i64,
    /// Set once a call broke a limit; from then on every error is rethrown
    /// past `pcall`, and the module task marks the module failed.
    pub tripped: Option<String>,
}

/// Errors the engine raises into Lua that must keep their meaning when
/// they come back out.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Raised {
    #[error("instruction budget exceeded: a call ran more than {0} Lua instructions")]
    Budget(u64),
    #[error("time limit exceeded: a call ran for more than {0:?} without yielding")]
    Time(Duration),
    #[error("{0}")]
    BadArgs(String),
    #[error(transparent)]
    Request(#[from] RequestError),
    #[error("{target}.{method}: {error}")]
    Call {
        target: String,
        method: String,
        error: ExecError,
    },
}

/// Per-command options a driver did not give: the driver table's `queue`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct CommandDefaults {
    pub timeout: Duration,
    pub retries: u32,
    pub wait: bool,
    pub priority: i32,
}

impl Default for CommandDefaults {
    fn default() -> Self {
        CommandDefaults {
            timeout: Duration::from_secs(5),
            retries: 0,
            wait: false,
            priority: 0,
        }
    }
}

/// What the engine reads from a driver's returned table.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct DriverSpec {
    pub framing: Framing,
    pub defaults: CommandDefaults,
}

pub(crate) struct Timer {
    pub func: Function,
    pub every: Option<Duration>,
    pub at: Instant,
}

/// Pending `after`/`every` timers of one module.
#[derive(Default)]
pub(crate) struct Timers {
    next_id: u64,
    heap: BinaryHeap<std::cmp::Reverse<(Instant, u64)>>,
    map: HashMap<u64, Timer>,
    /// Repeating timers whose last call has not finished: a call is
    /// time-sliced, so a tick may come due while the previous one still
    /// runs; it is skipped rather than piling calls up.
    running: std::collections::HashSet<u64>,
}

impl Timers {
    pub(crate) fn add(
        &mut self,
        at: Instant,
        every: Option<Duration>,
        func: Function,
    ) -> mlua::Result<u64> {
        if self.map.len() >= MAX_TIMERS {
            return Err(mlua::Error::runtime(format!(
                "too many timers (limit {MAX_TIMERS})"
            )));
        }
        self.next_id += 1;
        let id = self.next_id;
        self.heap.push(std::cmp::Reverse((at, id)));
        self.map.insert(id, Timer { func, every, at });
        Ok(id)
    }

    pub(crate) fn cancel(&mut self, id: u64) -> bool {
        self.map.remove(&id).is_some()
    }

    pub(crate) fn clear(&mut self) {
        *self = Timers::default();
    }

    pub(crate) fn next_deadline(&mut self) -> Option<Instant> {
        // Drop heap entries of cancelled timers so they do not wake us.
        while let Some(std::cmp::Reverse((at, id))) = self.heap.peek().copied() {
            match self.map.get(&id) {
                Some(t) if t.at == at => return Some(at),
                _ => {
                    self.heap.pop();
                }
            }
        }
        None
    }

    /// The call of timer `id` has finished.
    pub(crate) fn finished(&mut self, id: u64) {
        self.running.remove(&id);
    }

    /// Takes the functions of every timer due at `now` (with their ids),
    /// rescheduling repeating ones; a repeating timer whose previous call
    /// still runs skips this tick.
    pub(crate) fn due(&mut self, now: Instant) -> Vec<(u64, Function)> {
        let mut out = Vec::new();
        while let Some(at) = self.next_deadline() {
            if at > now {
                break;
            }
            let Some(std::cmp::Reverse((_, id))) = self.heap.pop() else {
                break;
            };
            let Some(t) = self.map.get_mut(&id) else {
                continue;
            };
            match t.every {
                Some(every) => {
                    if self.running.insert(id) {
                        out.push((id, t.func.clone()));
                    }
                    // Skip missed ticks rather than firing a burst.
                    t.at = (t.at + every).max(now);
                    self.heap.push(std::cmp::Reverse((t.at, id)));
                }
                None => {
                    out.push((id, t.func.clone()));
                    self.map.remove(&id);
                }
            }
        }
        out
    }
}

/// The module's side of the API: what driver callbacks read and change.
/// Lives in the Lua state's app data, so it dies with the state.
pub(crate) struct Host {
    pub id: Uuid,
    pub name: String,
    pub queue: Queue,
    pub connected: bool,
    pub has_transport: bool,
    pub defaults: CommandDefaults,
    pub timers: Timers,
    pub settings: Arc<Map<String, Value>>,
    pub shared: Arc<ModuleShared>,
    pub runtime: Weak<Inner>,
    /// Wakes the module task after a call queued a command or changed a
    /// timer, so it writes the command or re-arms its deadline at once.
    pub wake: Arc<tokio::sync::Notify>,
}

fn host(lua: &Lua) -> mlua::Result<AppDataRefMut<'_, Host>> {
    lua.app_data_mut::<Host>()
        .ok_or_else(|| mlua::Error::runtime("module host is gone"))
}

/// Limits of one state.
pub(crate) struct Limits {
    pub memory: usize,
    pub instructions: u64,
    pub time: Duration,
}

/// Creates a sandboxed state with the driver API and `host` installed.
pub(crate) fn new_state(host: Host, limits: &Limits) -> mlua::Result<Lua> {
    let libs = StdLib::STRING | StdLib::TABLE | StdLib::MATH | StdLib::UTF8 | StdLib::COROUTINE;
    // A small coroutine pool: most calls finish at once, so two recycled
    // threads serve them without allocating one per call.
    let lua = Lua::new_with(libs, LuaOptions::new().thread_pool_size(2))?;
    // Nothing built here is garbage yet; collecting while building only
    // costs time. The module task restarts the collector once the driver
    // is loaded.
    lua.gc_stop();
    lua.set_app_data(Budget {
        left: limits.instructions as i64,
        resumed_at: std::time::Instant::now(),
        slice: YIELD_EVERY,
        tripped: None,
    });
    let budget = limits.instructions;
    let time = limits.time;
    lua.set_global_hook(
        HookTriggers::new().every_nth_instruction(HOOK_EVERY),
        move |lua, _| {
            let Some(mut b) = lua.app_data_mut::<Budget>() else {
                return Ok(VmState::Continue);
            };
            b.left -= i64::from(HOOK_EVERY);
            let broken = if b.left < 0 {
                Some(Raised::Budget(budget))
            } else if b.resumed_at.elapsed() > time {
                Some(Raised::Time(time))
            } else {
                None
            };
            if let Some(t) = &b.tripped {
                return Err(mlua::Error::runtime(t.clone()));
            }
            if let Some(r) = broken {
                b.tripped = Some(r.to_string());
                return Err(mlua::Error::external(r));
            }
            b.slice -= i64::from(HOOK_EVERY);
            if b.slice > 0 {
                return Ok(VmState::Continue);
            }
            b.slice = YIELD_EVERY;
            drop(b);
            // Where Lua cannot yield (a C call, the main thread) mlua ignores
            // the request; a coroutine of the driver's own would take the
            // engine's yield for its own, so it runs on.
            if in_driver_coroutine(lua) {
                return Ok(VmState::Continue);
            }
            Ok(VmState::Yield)
        },
    )?;
    let threads = lua.create_table()?;
    let weak = lua.create_table()?;
    weak.set("__mode", "k")?;
    threads.set_metatable(Some(weak))?;
    lua.set_named_registry_value(DRIVER_THREADS, &threads)?;
    lua.globals().set("__threads", threads)?;
    install_api(&lua, &host)?;
    lua.set_app_data(host);
    lua.load(sandbox_code())
        .set_name("=sandbox")
        .set_mode(mlua::chunk::ChunkMode::Binary)
        .exec()?;
    lua.set_memory_limit(limits.memory)?;
    Ok(lua)
}

/// Whether the running Lua thread is a coroutine the driver created.
fn in_driver_coroutine(lua: &Lua) -> bool {
    match lua.named_registry_value::<Option<Table>>(DRIVER_THREADS) {
        Ok(Some(threads)) => threads.contains_key(lua.current_thread()).unwrap_or(true),
        _ => true,
    }
}

/// Lua-side part of the sandbox: `pcall`, `xpcall` and `coroutine.resume`
/// rethrow once a limit is broken, so a driver cannot catch its way around
/// the budget; `load` only takes text; coroutines a driver makes are
/// registered, so the time-slicing yield leaves them alone.
const SANDBOX: &str = r#"
local rawpcall, rawxpcall, rawresume, contained = pcall, xpcall, coroutine.resume, __contained
local rawload, rawcollect, error = load, collectgarbage, error
__contained = nil
local function pass(ok, ...)
  if not ok and contained((...)) then error((...), 0) end
  return ok, ...
end
pcall = function(f, ...) return pass(rawpcall(f, ...)) end
xpcall = function(f, h, ...) return pass(rawxpcall(f, h, ...)) end
coroutine.resume = function(co, ...) return pass(rawresume(co, ...)) end
local resume, rawcreate, threads = coroutine.resume, coroutine.create, __threads
__threads = nil
coroutine.create = function(f)
  local co = rawcreate(f)
  threads[co] = true
  return co
end
local function unwrap(ok, ...)
  if ok then return ... end
  error((...), 0)
end
coroutine.wrap = function(f)
  local co = coroutine.create(f)
  return function(...) return unwrap(resume(co, ...)) end
end
load = function(chunk, name, _mode, env) return rawload(chunk, name, "t", env) end
collectgarbage = function(opt, ...)
  if opt == nil or opt == "collect" or opt == "count" or opt == "step" then
    return rawcollect(opt, ...)
  end
  error("collectgarbage('" .. tostring(opt) .. "') is not allowed in a driver", 2)
end
dofile, loadfile, string.dump = nil, nil, nil
"#;

/// The sandbox prelude, compiled once per process.
#[allow(
    clippy::expect_used,
    reason = "the prelude is a constant compiled into a fresh bare state: only an allocation failure, which aborts anyway, could fail it, and tests load it on every state"
)]
fn sandbox_code() -> &'static [u8] {
    static CODE: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    CODE.get_or_init(|| {
        let lua = Lua::new_with(StdLib::NONE, LuaOptions::new()).expect("bare Lua state");
        lua.load(SANDBOX)
            .set_name("=sandbox")
            .into_function()
            .expect("the sandbox prelude compiles")
            .dump(false)
    })
}

fn json_of(lua: &Lua, v: LuaValue) -> mlua::Result<Value> {
    lua.from_value(v)
}

fn join_args(args: Variadic<LuaValue>) -> mlua::Result<String> {
    let mut s = String::new();
    for (i, v) in args.iter().enumerate() {
        if i > 0 {
            s.push(' ');
        }
        s.push_str(&v.to_string()?);
    }
    Ok(s)
}

fn command_from(
    lua: &Lua,
    data: mlua::LuaString,
    opts: Option<Table>,
    defaults: &CommandDefaults,
    request: bool,
) -> mlua::Result<Command> {
    let _ = lua;
    let mut cmd = Command {
        data: data.as_bytes().to_vec(),
        wait: defaults.wait || request,
        timeout: defaults.timeout,
        retries: defaults.retries,
        priority: defaults.priority,
        expect: None,
        reply: None,
    };
    if let Some(o) = opts {
        if let Some(w) = o.get::<Option<bool>>("wait")? {
            cmd.wait = w || request;
        }
        if let Some(ms) = o.get::<Option<u64>>("timeout")? {
            cmd.timeout = Duration::from_millis(ms.max(1));
        }
        if let Some(r) = o.get::<Option<u32>>("retries")? {
            cmd.retries = r.min(10);
        }
        if let Some(p) = o.get::<Option<i32>>("priority")? {
            cmd.priority = p;
        }
        if let Some(e) = o.get::<Option<mlua::LuaString>>("expect")? {
            cmd.expect = Some(e.as_bytes().to_vec());
        }
    }
    Ok(cmd)
}

fn install_api(lua: &Lua, h: &Host) -> mlua::Result<()> {
    let g = lua.globals();
    install_basics(lua, &g, h)?;
    install_device(lua, &g)?;
    install_status(lua, &g)?;
    install_log(lua, &g)?;
    install_timers(lua, &g)?;
    install_calls(lua, &g)?;
    install_helpers(lua, &g)?;
    Ok(())
}

/// `null`, the containment marker and the `module` table.
fn install_basics(lua: &Lua, g: &Table, h: &Host) -> mlua::Result<()> {
    g.set("null", LuaValue::NULL)?;

    g.set(
        "__contained",
        lua.create_function(|lua, e: LuaValue| {
            let Some(mut b) = lua.app_data_mut::<Budget>() else {
                return Ok(false);
            };
            if b.tripped.is_some() {
                return Ok(true);
            }
            if let LuaValue::String(s) = &e
                && s.as_bytes().as_ref() == b"not enough memory"
            {
                b.tripped = Some("memory limit exceeded".into());
                return Ok(true);
            }
            Ok(false)
        })?,
    )?;

    let module = lua.create_table()?;
    module.set("id", h.id.to_string())?;
    module.set("name", h.name.as_str())?;
    g.set("module", module)?;
    Ok(())
}

/// The device API: `send`, `request`, `connected`.
fn install_device(lua: &Lua, g: &Table) -> mlua::Result<()> {
    g.set(
        "send",
        lua.create_function(|lua, (data, opts): (mlua::LuaString, Option<Table>)| {
            let mut h = host(lua)?;
            if !h.has_transport {
                return Err(mlua::Error::external(Raised::Request(
                    RequestError::NoTransport,
                )));
            }
            if !h.connected {
                return Err(mlua::Error::external(Raised::Request(
                    RequestError::NotConnected,
                )));
            }
            let cmd = command_from(lua, data, opts, &h.defaults, false)?;
            h.queue
                .push(cmd)
                .map_err(|e| mlua::Error::external(Raised::Request(e)))?;
            h.wake.notify_one();
            Ok(())
        })?,
    )?;

    g.set(
        "request",
        lua.create_async_function(
            |lua, (data, opts): (mlua::LuaString, Option<Table>)| async move {
                let rx = {
                    let mut h = host(&lua)?;
                    if !h.has_transport {
                        return Err(mlua::Error::external(Raised::Request(
                            RequestError::NoTransport,
                        )));
                    }
                    if !h.connected {
                        return Err(mlua::Error::external(Raised::Request(
                            RequestError::NotConnected,
                        )));
                    }
                    let mut cmd = command_from(&lua, data, opts, &h.defaults, true)?;
                    let (tx, rx) = tokio::sync::oneshot::channel();
                    cmd.reply = Some(tx);
                    h.queue
                        .push(cmd)
                        .map_err(|e| mlua::Error::external(Raised::Request(e)))?;
                    h.wake.notify_one();
                    rx
                };
                match rx.await {
                    Ok(Ok(frame)) => lua.create_string(frame),
                    Ok(Err(e)) => Err(mlua::Error::external(Raised::Request(e))),
                    Err(_) => Err(mlua::Error::external(Raised::Request(
                        RequestError::Disconnected,
                    ))),
                }
            },
        )?,
    )?;

    g.set(
        "connected",
        lua.create_function(|lua, ()| Ok(host(lua)?.connected))?,
    )?;
    Ok(())
}

/// Status variables and settings: `status.*`, `setting`, `settings`.
fn install_status(lua: &Lua, g: &Table) -> mlua::Result<()> {
    let status = lua.create_table()?;
    status.set(
        "set",
        lua.create_function(|lua, (key, value): (String, LuaValue)| {
            let value = json_of(lua, value)
                .map_err(|e| mlua::Error::runtime(format!("status '{key}' is not JSON: {e}")))?;
            let shared = host(lua)?.shared.clone();
            shared.set_status(key, value).map_err(mlua::Error::runtime)
        })?,
    )?;
    status.set(
        "get",
        lua.create_function(|lua, key: String| {
            let v = host(lua)?.shared.status_key(&key);
            match v {
                Some(v) => lua.to_value(&v),
                None => Ok(LuaValue::Nil),
            }
        })?,
    )?;
    status.set(
        "all",
        lua.create_function(|lua, ()| {
            let all = host(lua)?.shared.status_all();
            lua.to_value(&all)
        })?,
    )?;
    g.set("status", status)?;

    g.set(
        "setting",
        lua.create_function(|lua, key: String| {
            let settings = host(lua)?.settings.clone();
            match settings.get(&key) {
                Some(v) => lua.to_value(v),
                None => Ok(LuaValue::Nil),
            }
        })?,
    )?;
    g.set(
        "settings",
        lua.create_function(|lua, ()| {
            let settings = host(lua)?.settings.clone();
            lua.to_value(&*settings)
        })?,
    )?;
    Ok(())
}

/// `log.*` and `print`.
fn install_log(lua: &Lua, g: &Table) -> mlua::Result<()> {
    let log = lua.create_table()?;
    for (name, level) in [
        ("debug", LogLevel::Debug),
        ("info", LogLevel::Info),
        ("warn", LogLevel::Warn),
        ("error", LogLevel::Error),
    ] {
        log.set(
            name,
            lua.create_function(move |lua, args: Variadic<LuaValue>| {
                let msg = join_args(args)?;
                let shared = host(lua)?.shared.clone();
                shared.log(level, msg);
                Ok(())
            })?,
        )?;
    }
    g.set("print", log.get::<Function>("info")?)?;
    g.set("log", log)?;
    Ok(())
}

/// Timers: `after`, `every`, `cancel`, `sleep`.
fn install_timers(lua: &Lua, g: &Table) -> mlua::Result<()> {
    g.set(
        "after",
        lua.create_function(|lua, (ms, f): (u64, Function)| {
            let at = Instant::now() + Duration::from_millis(ms);
            let mut h = host(lua)?;
            h.wake.notify_one();
            h.timers.add(at, None, f)
        })?,
    )?;
    g.set(
        "every",
        lua.create_function(|lua, (ms, f): (u64, Function)| {
            let every = Duration::from_millis(ms.max(1));
            let mut h = host(lua)?;
            h.wake.notify_one();
            h.timers.add(Instant::now() + every, Some(every), f)
        })?,
    )?;
    g.set(
        "cancel",
        lua.create_function(|lua, id: u64| Ok(host(lua)?.timers.cancel(id)))?,
    )?;
    g.set(
        "sleep",
        lua.create_async_function(|_lua, ms: u64| async move {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            Ok(())
        })?,
    )?;
    Ok(())
}

/// Other modules: `call`, `system_modules`.
fn install_calls(lua: &Lua, g: &Table) -> mlua::Result<()> {
    g.set(
        "call",
        lua.create_async_function(
            |lua, (target, method, args): (String, String, Variadic<LuaValue>)| async move {
                let mut json = Vec::with_capacity(args.len());
                for a in args {
                    json.push(json_of(&lua, a)?);
                }
                let (rt, me) = {
                    let h = host(&lua)?;
                    (h.runtime.upgrade(), h.id)
                };
                let rt = Runtime {
                    inner: rt.ok_or_else(|| mlua::Error::runtime("runtime is gone"))?,
                };
                let raise = |error| {
                    mlua::Error::external(Raised::Call {
                        target: target.clone(),
                        method: method.clone(),
                        error,
                    })
                };
                let id = rt.resolve(me, &target).map_err(raise)?;
                let res = rt
                    .exec(id, &method, Value::Array(json))
                    .await
                    .map_err(raise)?;
                lua.to_value(&res)
            },
        )?,
    )?;

    g.set(
        "system_modules",
        lua.create_function(|lua, ()| {
            let (rt, me) = {
                let h = host(lua)?;
                (h.runtime.upgrade(), h.id)
            };
            let list = lua.create_table()?;
            let Some(inner) = rt else {
                return Ok(list);
            };
            let rt = Runtime { inner };
            for (i, info) in rt.system_mates(me).into_iter().enumerate() {
                let t = lua.create_table()?;
                t.set("id", info.id.to_string())?;
                t.set("name", info.name)?;
                t.set("driver", info.driver)?;
                t.set("connected", info.connected)?;
                t.set("running", info.running)?;
                list.set(i + 1, t)?;
            }
            Ok(list)
        })?,
    )?;
    Ok(())
}

/// Helpers: `md5_hex`, `bad_args`, `array`.
fn install_helpers(lua: &Lua, g: &Table) -> mlua::Result<()> {
    g.set(
        "md5_hex",
        lua.create_function(|_, s: mlua::LuaString| {
            let d = Md5::digest(s.as_bytes().as_ref());
            Ok(hex::encode(d))
        })?,
    )?;

    g.set(
        "bad_args",
        lua.create_function(|_, msg: String| -> mlua::Result<()> {
            Err(mlua::Error::external(Raised::BadArgs(msg)))
        })?,
    )?;

    g.set(
        "array",
        lua.create_function(|lua, t: Option<Table>| {
            let t = match t {
                Some(t) => t,
                None => lua.create_table()?,
            };
            t.set_metatable(Some(lua.array_metatable()))?;
            Ok(t)
        })?,
    )?;
    Ok(())
}

/// Reads the engine-facing fields of a driver table.
pub(crate) fn driver_spec(
    lua: &Lua,
    table: &Table,
    settings: &Map<String, Value>,
) -> mlua::Result<DriverSpec> {
    let mut framing = Framing::None;
    let f: LuaValue = table.get("framing")?;
    let f = match f {
        LuaValue::Function(func) => {
            let s = lua.to_value(settings)?;
            func.call::<LuaValue>(s)?
        }
        other => other,
    };
    if let LuaValue::Table(t) = f {
        if let Some(d) = t.get::<Option<mlua::LuaString>>("delimiter")? {
            let d = d.as_bytes().to_vec();
            if d.is_empty() {
                return Err(mlua::Error::runtime("framing.delimiter must not be empty"));
            }
            framing = Framing::Delimiter(d);
        } else if let Some(n) = t.get::<Option<usize>>("length")? {
            if n == 0 || n > 1024 * 1024 {
                return Err(mlua::Error::runtime("framing.length must be 1..1048576"));
            }
            framing = Framing::Fixed(n);
        }
    }
    let mut defaults = CommandDefaults::default();
    if let Some(q) = table.get::<Option<Table>>("queue")? {
        if let Some(ms) = q.get::<Option<u64>>("timeout")? {
            defaults.timeout = Duration::from_millis(ms.max(1));
        }
        if let Some(r) = q.get::<Option<u32>>("retries")? {
            defaults.retries = r.min(10);
        }
        if let Some(w) = q.get::<Option<bool>>("wait")? {
            defaults.wait = w;
        }
        if let Some(p) = q.get::<Option<i32>>("priority")? {
            defaults.priority = p;
        }
    }
    Ok(DriverSpec { framing, defaults })
}

/// Converts exec arguments to Lua call arguments: an array is spread into
/// positional arguments, `null` means none, anything else is one argument.
pub(crate) fn exec_args(lua: &Lua, args: &Value) -> mlua::Result<MultiValue> {
    match args {
        Value::Null => Ok(MultiValue::new()),
        Value::Array(items) => items.iter().map(|v| lua.to_value(v)).collect(),
        other => Ok(MultiValue::from_iter([lua.to_value(other)?])),
    }
}

/// What a Lua error means for the caller and the module.
pub(crate) enum Classified {
    /// A limit was broken: the module must be marked failed.
    Contained(String),
    BadArgs(String),
    Timeout,
    Driver(String),
}

impl Classified {
    /// The one text of a Lua error for a log line, a driver error or a
    /// refused load: the message alone, without Lua's traceback.
    pub(crate) fn message(&self) -> String {
        match self {
            Classified::Contained(m) | Classified::BadArgs(m) | Classified::Driver(m) => m.clone(),
            Classified::Timeout => "timed out".to_owned(),
        }
    }
}

/// Classifies an error from a driver call. `tripped` is the budget flag
/// after the call, which wins over whatever the error says (a driver may have
/// wrapped it).
pub(crate) fn classify(err: &mlua::Error, tripped: Option<&str>) -> Classified {
    if let Some(t) = tripped {
        return Classified::Contained(t.to_owned());
    }
    let mut e = err;
    loop {
        match e {
            mlua::Error::CallbackError { cause, .. } => e = cause,
            mlua::Error::WithContext { cause, .. } => e = cause,
            mlua::Error::MemoryError(_) => {
                return Classified::Contained("memory limit exceeded".into());
            }
            mlua::Error::ExternalError(ext) => {
                if let Some(r) = ext.downcast_ref::<Raised>() {
                    return match r {
                        Raised::Budget(_) | Raised::Time(_) => Classified::Contained(r.to_string()),
                        Raised::BadArgs(m) => Classified::BadArgs(m.clone()),
                        Raised::Request(RequestError::Timeout) => Classified::Timeout,
                        Raised::Call {
                            error: ExecError::Timeout,
                            ..
                        } => Classified::Timeout,
                        other => Classified::Driver(other.to_string()),
                    };
                }
                return Classified::Driver(ext.to_string());
            }
            mlua::Error::RuntimeError(msg) => {
                return Classified::Driver(strip_traceback(msg));
            }
            other => return Classified::Driver(strip_traceback(&other.to_string())),
        }
    }
}

pub(crate) fn strip_traceback(msg: &str) -> String {
    msg.split("\nstack traceback")
        .next()
        .unwrap_or(msg)
        .trim()
        .to_owned()
}

/// Converts a Lua error to an `ExecError` for the caller.
pub(crate) fn exec_error(c: &Classified) -> ExecError {
    match c {
        Classified::Contained(m) => ExecError::Failed { message: m.clone() },
        Classified::BadArgs(m) => ExecError::BadArguments { message: m.clone() },
        Classified::Timeout => ExecError::Timeout,
        Classified::Driver(m) => ExecError::Driver { message: m.clone() },
    }
}
