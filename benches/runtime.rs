//! Module runtime benchmark (issue 3). In one run:
//!
//! 1. start 10,000 modules (half logic modules, half line-protocol modules
//!    against line simulators on several ports) and time until all are
//!    loaded and connected; baseline: the same number of bare Lua states
//!    plus raw TCP connections to the same simulators;
//! 2. memory per idle module (process RSS delta, and Lua heap);
//! 3. exec round trips into a logic module, against a Rust closure sent
//!    through the same mailbox (`Runtime::exec_native`);
//! 4. exec into a TCP device module against the simulator, against a raw
//!    TCP request/response loop to the same simulator.
//!
//! Run: `cargo bench --bench runtime` (env `BENCH_MODULES` changes the
//! module count, `BENCH_EXECS` the exec count).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    unreachable_pub,
    missing_debug_implementations,
    reason = "tests and benchmarks fail loudly by design, and their items are not an API"
)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use outpost::model::Module;
use outpost::runtime::{Runtime, RuntimeConfig};
use outpost::sim::{LineOptions, LineSim};
use serde_json::{Map, Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use uuid::Uuid;

const LOGIC: &str = r#"
local M = {}
function M.echo(x) return x end
return M
"#;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn rss_bytes() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: usize = statm
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

fn module(name: String, driver: &str, uri: Option<String>) -> Module {
    Module {
        id: Uuid::now_v7(),
        name,
        driver: driver.into(),
        uri,
        settings: Map::new(),
        enabled: true,
    }
}

fn per_sec(n: usize, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64()
}

async fn load_all(rt: &Runtime, modules: Vec<Module>) {
    let sem = Arc::new(tokio::sync::Semaphore::new(64));
    let mut set = tokio::task::JoinSet::new();
    for m in modules {
        let rt = rt.clone();
        let permit = sem.clone().acquire_owned().await.unwrap();
        set.spawn(async move {
            rt.load(&m).await.expect("load");
            rt.start(m.id).await.expect("start");
            drop(permit);
        });
    }
    while let Some(r) = set.join_next().await {
        r.unwrap();
    }
}

/// Runs `total` calls from `callers` concurrent loops; returns the elapsed time.
async fn drive<F, Fut>(total: usize, callers: usize, f: F) -> Duration
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let f = Arc::new(f);
    let start = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..callers {
        let f = f.clone();
        let n = total / callers;
        set.spawn(async move {
            for _ in 0..n {
                f().await;
            }
        });
    }
    while let Some(r) = set.join_next().await {
        r.unwrap();
    }
    start.elapsed()
}

async fn bench() {
    let n_modules = env("BENCH_MODULES", 10_000);
    let n_execs = env("BENCH_EXECS", 400_000);
    let n_logic = n_modules / 2;
    let n_line = n_modules - n_logic;
    let n_sims = 8;

    let mut sims = Vec::new();
    for _ in 0..n_sims {
        sims.push(
            LineSim::start("127.0.0.1:0".parse().unwrap(), LineOptions::default())
                .await
                .unwrap(),
        );
    }
    let modules_dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("modules");
    let mut cfg = RuntimeConfig::new(modules_dir);
    cfg.exec_timeout = Duration::from_secs(60);
    let rt = Runtime::new(cfg);
    rt.reload_driver("bench_logic.lua", Some(LOGIC.into()))
        .await
        .unwrap();

    // --- baseline for startup: bare Lua states and raw connections ---
    let t = Instant::now();
    let mut states = Vec::with_capacity(n_modules);
    for _ in 0..n_modules {
        states.push(
            mlua::Lua::new_with(
                mlua::StdLib::STRING
                    | mlua::StdLib::TABLE
                    | mlua::StdLib::MATH
                    | mlua::StdLib::UTF8
                    | mlua::StdLib::COROUTINE,
                mlua::LuaOptions::new(),
            )
            .unwrap(),
        );
    }
    let mut conns = Vec::with_capacity(n_line);
    for i in 0..n_line {
        conns.push(
            tokio::net::TcpStream::connect(sims[i % n_sims].addr())
                .await
                .unwrap(),
        );
    }
    let base_start = t.elapsed();
    drop(states);
    drop(conns);
    for s in &sims {
        while s.connections() > 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    // --- 1 and 2: start the modules, measure memory ---
    let rss0 = rss_bytes();
    let logic: Vec<Module> = (0..n_logic)
        .map(|i| module(format!("logic{i}"), "bench_logic.lua", None))
        .collect();
    let line: Vec<Module> = (0..n_line)
        .map(|i| {
            module(
                format!("line{i}"),
                "line.lua",
                Some(format!("tcp://{}", sims[i % n_sims].addr())),
            )
        })
        .collect();
    let logic_ids: Vec<Uuid> = logic.iter().map(|m| m.id).collect();
    let line_ids: Vec<Uuid> = line.iter().map(|m| m.id).collect();
    let t = Instant::now();
    load_all(&rt, logic).await;
    let t_logic = t.elapsed();
    let rss_logic = rss_bytes();
    load_all(&rt, line).await;
    loop {
        let c = rt.devices_connected(&line_ids);
        if c.connected == n_line {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let t_all = t.elapsed();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_all = rss_bytes();
    let sim_conns: usize = sims.iter().map(|s| s.connections()).sum();
    assert_eq!(sim_conns, n_line);
    let infos = rt.modules();
    let lua_logic: usize = infos
        .iter()
        .filter(|i| !i.has_device)
        .map(|i| i.lua_memory)
        .sum::<usize>()
        / n_logic.max(1);
    let lua_line: usize = infos
        .iter()
        .filter(|i| i.has_device)
        .map(|i| i.lua_memory)
        .sum::<usize>()
        / n_line.max(1);
    let per_logic = (rss_logic.saturating_sub(rss0)) / n_logic.max(1);
    let per_line = (rss_all.saturating_sub(rss_logic)) / n_line.max(1);
    let per_all = (rss_all.saturating_sub(rss0)) / n_modules.max(1);

    println!("## startup");
    println!(
        "modules: {n_modules} ({n_logic} logic, {n_line} line on {n_sims} simulators)\n\
         all loaded and connected: {:.2} s (logic half loaded in {:.2} s)\n\
         baseline ({n_modules} bare Lua states + {n_line} raw TCP connects): {:.2} s\n\
         ratio runtime/baseline: {:.2}",
        t_all.as_secs_f64(),
        t_logic.as_secs_f64(),
        base_start.as_secs_f64(),
        t_all.as_secs_f64() / base_start.as_secs_f64()
    );
    println!("## memory per idle module");
    println!(
        "RSS per logic module: {:.1} KiB (Lua heap {:.1} KiB)\n\
         RSS per line module incl. simulator side of its connection: {:.1} KiB (Lua heap {:.1} KiB)\n\
         RSS per module, all: {:.1} KiB   target <= 64 KiB",
        per_logic as f64 / 1024.0,
        lua_logic as f64 / 1024.0,
        per_line as f64 / 1024.0,
        lua_line as f64 / 1024.0,
        per_all as f64 / 1024.0,
    );

    // --- 3: exec into a logic module vs a Rust closure through the same mailbox ---
    let target = logic_ids[0];
    for callers in [1usize, 64] {
        let n = if callers == 1 { n_execs / 4 } else { n_execs };
        let r = rt.clone();
        let lua_t = drive(n, callers, move || {
            let r = r.clone();
            async move {
                let v = r.exec(target, "echo", json!([1])).await.unwrap();
                debug_assert_eq!(v, json!(1));
            }
        })
        .await;
        let r = rt.clone();
        let native_t = drive(n, callers, move || {
            let r = r.clone();
            async move {
                let arg = json!([1]);
                let v = r
                    .exec_native(target, move || match arg {
                        Value::Array(mut a) => a.swap_remove(0),
                        other => other,
                    })
                    .await
                    .unwrap();
                debug_assert_eq!(v, json!(1));
            }
        })
        .await;
        println!("## exec into a logic module, {callers} concurrent caller(s), {n} calls");
        println!(
            "Lua exec: {:.0}/s   Rust closure through the same mailbox: {:.0}/s   ratio lua/closure: {:.2}   target >= 100,000/s",
            per_sec(n, lua_t),
            per_sec(n, native_t),
            native_t.as_secs_f64() / lua_t.as_secs_f64()
        );
    }

    // Spread over every logic module: the runtime's aggregate exec rate.
    let ids = Arc::new(logic_ids.clone());
    let r = rt.clone();
    let counter = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let c2 = counter.clone();
    let spread_t = drive(n_execs, 64, move || {
        let r = r.clone();
        let ids = ids.clone();
        let i = c2.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        async move {
            r.exec(ids[i % ids.len()], "echo", json!([1]))
                .await
                .unwrap();
        }
    })
    .await;
    println!(
        "## exec spread over {n_logic} logic modules, 64 callers: {:.0}/s",
        per_sec(n_execs, spread_t)
    );

    // --- 4: exec into a TCP device module vs raw TCP request/response ---
    // Both loops run in a spawned task, as a client request would.
    let dev = line_ids[0];
    let n_tcp = n_execs / 20;
    let r = rt.clone();
    let exec_tcp = tokio::spawn(async move {
        let t = Instant::now();
        for _ in 0..n_tcp {
            let v = r.exec(dev, "request", json!(["ECHO x"])).await.unwrap();
            debug_assert_eq!(v, json!("x"));
        }
        t.elapsed()
    })
    .await
    .unwrap();
    let addr = sims[0].addr();
    let raw_tcp = tokio::spawn(async move {
        let mut raw = tokio::net::TcpStream::connect(addr).await.unwrap();
        raw.set_nodelay(true).unwrap();
        let (r, mut w) = raw.split();
        let mut r = BufReader::new(r);
        let mut line = String::new();
        let t = Instant::now();
        for _ in 0..n_tcp {
            w.write_all(b"ECHO x\n").await.unwrap();
            line.clear();
            r.read_line(&mut line).await.unwrap();
            debug_assert_eq!(line, "x\n");
        }
        t.elapsed()
    })
    .await
    .unwrap();
    println!("## exec into a TCP device module, sequential, {n_tcp} requests");
    println!(
        "exec request: {:.0}/s ({:.1} us each)   raw TCP request/response: {:.0}/s ({:.1} us each)   ratio exec/raw: {:.2}",
        per_sec(n_tcp, exec_tcp),
        exec_tcp.as_secs_f64() * 1e6 / n_tcp as f64,
        per_sec(n_tcp, raw_tcp),
        raw_tcp.as_secs_f64() * 1e6 / n_tcp as f64,
        raw_tcp.as_secs_f64() / exec_tcp.as_secs_f64()
    );

    let t = Instant::now();
    rt.shutdown().await;
    println!(
        "## shutdown of {n_modules} modules: {:.2} s",
        t.elapsed().as_secs_f64()
    );
}

fn main() {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(bench());
}
