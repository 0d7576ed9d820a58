//! Drivers take turns: module tasks run on the runtime's own executor, and
//! a driver call yields to it every few thousand instructions, so a driver
//! that loops delays other modules by a slice, never by its whole call.

use std::time::Duration;

use outpost::runtime::Runtime;
use serde_json::json;

use crate::support::*;

const SPIN: &str = r#"
local M = {}
function M.spin()
  status.set("spinning", true)
  while true do end
end
function M.ok() return "fine" end
return M
"#;

const HEALTHY: &str = r#"
local M = {}
function M.ping() return "pong" end
return M
"#;

/// One driver thread, a call that never ends on one module: another
/// module's exec is still answered, while the loop is still running.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_looping_driver_does_not_hold_the_executor_from_other_modules() {
    let mut cfg = config();
    cfg.driver_threads = 1;
    cfg.instruction_budget = u64::MAX / 2;
    cfg.time_limit = Duration::from_secs(600);
    let rt = Runtime::new(cfg);
    driver(&rt, "spin.lua", SPIN).await;
    driver(&rt, "healthy.lua", HEALTHY).await;
    let spinner = module("spinner", "spin.lua", None, json!({}));
    let healthy = module("healthy", "healthy.lua", None, json!({}));
    start(&rt, &spinner).await;
    start(&rt, &healthy).await;
    let spinning = tokio::spawn({
        let rt = rt.clone();
        async move { rt.exec(spinner.id, "spin", no_args()).await }
    });
    wait_until("the loop to run", || {
        rt.status_key(spinner.id, "spinning").ok().flatten() == Some(json!(true))
    })
    .await;
    // A generous guard only: without slicing this exec waits for a loop
    // that never ends.
    let pong = tokio::time::timeout(
        Duration::from_secs(30),
        rt.exec(healthy.id, "ping", no_args()),
    )
    .await
    .expect("the healthy module answers while the other driver loops");
    assert_eq!(pong.unwrap(), json!("pong"));
    assert!(!spinning.is_finished(), "the loop is still running");
    spinning.abort();
    rt.shutdown().await;
}

const LOCALS: &str = r#"
local M = {}
function M.sum(n)
  local kept = { value = 7 }
  local s = 0
  for i = 1, n do s = s + i end
  return { sum = s, kept = kept.value }
end
function M.churn(rounds)
  for r = 1, rounds do
    local garbage = {}
    for i = 1, 200 do garbage[i] = { i } end
    collectgarbage("collect")
  end
  return "churned"
end
return M
"#;

/// A call suspended by the slicing yield keeps its locals while other calls
/// on the same Lua state allocate and collect garbage (mlua before 0.12.1
/// truncated the suspended coroutine's stack, so a collection cleared them).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sliced_call_keeps_its_locals_through_garbage_collections() {
    let mut cfg = config();
    cfg.instruction_budget = 100_000_000;
    cfg.time_limit = Duration::from_secs(60);
    let rt = Runtime::new(cfg);
    driver(&rt, "locals.lua", LOCALS).await;
    let m = module("locals", "locals.lua", None, json!({}));
    start(&rt, &m).await;
    let n: u64 = 2_000_000;
    let (sum, churn) = tokio::join!(
        rt.exec(m.id, "sum", json!([n])),
        rt.exec(m.id, "churn", json!([200])),
    );
    assert_eq!(churn.unwrap(), json!("churned"));
    assert_eq!(sum.unwrap(), json!({"sum": n * (n + 1) / 2, "kept": 7}));
    rt.shutdown().await;
}

/// A coroutine the driver made itself is not interrupted by the engine's
/// yields: its `resume` sees only its own yields.
#[tokio::test]
async fn driver_coroutines_see_only_their_own_yields() {
    let rt = runtime();
    driver(
        &rt,
        "co.lua",
        r#"
local M = {}
function M.run()
  local co = coroutine.create(function()
    local s = 0
    for i = 1, 100000 do s = s + i end
    coroutine.yield(s)
    return "done"
  end)
  local ok1, first = coroutine.resume(co)
  local ok2, second = coroutine.resume(co)
  local gen = coroutine.wrap(function() for i = 1, 3 do
    local x = 0
    for j = 1, 50000 do x = x + j end
    coroutine.yield(i)
  end end)
  return { first = first, second = second, ok = ok1 and ok2, a = gen(), b = gen(), c = gen() }
end
return M
"#,
    )
    .await;
    let m = module("co", "co.lua", None, json!({}));
    start(&rt, &m).await;
    let r = exec_ok(&rt, m.id, "run", no_args()).await;
    assert_eq!(
        r,
        json!({"first": 5000050000u64, "second": "done", "ok": true, "a": 1, "b": 2, "c": 3})
    );
}

/// 64 modules of a driver nobody has loaded yet, loaded at once: the
/// driver is read and compiled once, and the others wait for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_loads_compile_a_driver_once() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("fresh.lua"),
        "local M = {}\nfunction M.ping() return 'pong' end\nreturn M\n",
    )
    .unwrap();
    let mut cfg = config();
    cfg.modules_dir = dir.path().to_owned();
    let rt = Runtime::new(cfg);
    let modules: Vec<_> = (0..64)
        .map(|i| module(&format!("m{i}"), "fresh.lua", None, json!({})))
        .collect();
    let report = rt.load_many(&modules).await;
    assert_eq!(report.loaded, 64, "{:?}", report.failed);
    assert_eq!(rt.compilations(), 1);
    rt.shutdown().await;
}
