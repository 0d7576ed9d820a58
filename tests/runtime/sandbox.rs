//! Containment: the sandbox hides what a driver must not reach, and a
//! driver that loops, allocates without bound or throws fails alone.

use outpost::runtime::{ExecError, ModuleState};
use serde_json::json;

use crate::support::*;

const PROBE: &str = r#"
local M = {}
function M.probe()
  local ok_bin = pcall(load, "\27Lua\84\0", "bin", "b")
  local f, err = load("\27Lua\84\0\25\147\r\n\26\n", "bin", "b")
  return {
    io = type(io), os = type(os), package = type(package), debug = type(debug),
    require = type(require), dofile = type(dofile), loadfile = type(loadfile),
    dump = type(string.dump), text_load = load("return 1 + 1")(),
    binary_load = f == nil, binary_error = tostring(err),
    collect_stop = pcall(collectgarbage, "stop"),
  }
end
return M
"#;

#[tokio::test]
async fn sandbox_hides_io_os_package_debug_and_bytecode() {
    let rt = runtime();
    driver(&rt, "probe.lua", PROBE).await;
    let m = module("probe", "probe.lua", None, json!({}));
    start(&rt, &m).await;
    let r = exec_ok(&rt, m.id, "probe", no_args()).await;
    for k in [
        "io", "os", "package", "debug", "require", "dofile", "loadfile", "dump",
    ] {
        assert_eq!(r[k], json!("nil"), "{k} must be absent: {r}");
    }
    assert_eq!(r["text_load"], json!(2));
    assert_eq!(r["binary_load"], json!(true), "{r}");
    assert!(
        r["binary_error"].as_str().unwrap().contains("binary"),
        "{r}"
    );
    assert_eq!(r["collect_stop"], json!(false));
}

const BAD: &str = r#"
local M = {}
function M.spin() while true do end end
function M.sneaky()
  -- Tries to swallow the budget error and keep going.
  while true do pcall(function() while true do end end) end
end
function M.hog()
  local t = {}
  while true do t[#t + 1] = string.rep("x", 4096) .. #t end
end
function M.big_string() return string.rep("x", 64 * 1024 * 1024) end
function M.ok() return "fine" end
return M
"#;

async fn bad_module(rt: &outpost::runtime::Runtime, name: &str) -> uuid::Uuid {
    let m = module(name, "bad.lua", None, json!({}));
    start(rt, &m).await;
    m.id
}

#[tokio::test]
async fn runaway_script_fails_its_module_only() {
    let rt = runtime();
    driver(&rt, "bad.lua", BAD).await;
    driver(
        &rt,
        "good.lua",
        "return { hello = function() return 'hi' end }",
    )
    .await;
    let good = module("good", "good.lua", None, json!({}));
    start(&rt, &good).await;

    for method in ["spin", "sneaky"] {
        let id = bad_module(&rt, method).await;
        match within(20, rt.exec(id, method, no_args())).await {
            Err(ExecError::Failed { message }) => {
                assert!(message.contains("instruction budget"), "{message}")
            }
            other => panic!("{method}: expected Failed, got {other:?}"),
        }
        let info = rt.module_info(id).unwrap();
        assert_eq!(info.state, ModuleState::Failed);
        assert!(info.failure.unwrap().contains("instruction budget"));
        assert!(matches!(
            rt.exec(id, "ok", no_args()).await,
            Err(ExecError::Failed { .. })
        ));
        assert_eq!(exec_ok(&rt, good.id, "hello", no_args()).await, json!("hi"));
    }
}

#[tokio::test]
async fn unbounded_allocation_is_contained() {
    let rt = runtime();
    driver(&rt, "bad.lua", BAD).await;
    driver(
        &rt,
        "good.lua",
        "return { hello = function() return 'hi' end }",
    )
    .await;
    let good = module("good", "good.lua", None, json!({}));
    start(&rt, &good).await;
    for method in ["hog", "big_string"] {
        let id = bad_module(&rt, method).await;
        match within(20, rt.exec(id, method, no_args())).await {
            Err(ExecError::Failed { message }) => assert!(message.contains("memory"), "{message}"),
            other => panic!("{method}: expected Failed, got {other:?}"),
        }
        assert_eq!(rt.module_info(id).unwrap().state, ModuleState::Failed);
        assert_eq!(exec_ok(&rt, good.id, "hello", no_args()).await, json!("hi"));
        // Reloading the driver is the way back from failure.
        let report = rt
            .reload_driver("bad.lua", Some(BAD.to_owned()))
            .await
            .unwrap();
        assert!(report.updated.contains(&id), "{report:?}");
        rt.start(id).await.unwrap();
        assert_eq!(exec_ok(&rt, id, "ok", no_args()).await, json!("fine"));
        rt.unload(id).await.unwrap();
    }
}

#[tokio::test]
async fn driver_that_fails_to_load_is_refused_with_its_error() {
    let rt = runtime();
    driver(
        &rt,
        "loadfail.lua",
        "local M = {} function M.on_load() error('no config') end return M",
    )
    .await;
    let m = module("lf", "loadfail.lua", None, json!({}));
    let err = rt.load(&m).await.unwrap_err().to_string();
    assert!(err.contains("no config"), "{err}");
    assert!(rt.module_info(m.id).is_none());

    driver(&rt, "notable.lua", "return 42").await;
    let m = module("nt", "notable.lua", None, json!({}));
    let err = rt.load(&m).await.unwrap_err().to_string();
    assert!(err.contains("must return a table"), "{err}");

    driver(&rt, "toploop.lua", "while true do end").await;
    let m = module("tl", "toploop.lua", None, json!({}));
    let err = within(20, rt.load(&m)).await.unwrap_err().to_string();
    assert!(err.contains("instruction budget"), "{err}");

    let m = module("missing", "missing.lua", None, json!({}));
    assert!(rt.load(&m).await.is_err());
}

const HOOKS: &str = r#"
local M = {}
M.framing = { delimiter = "\n" }
function M.arm() after(10, function() while true do end end) return true end
function M.on_received(line) if line == "loop" then while true do end end end
return M
"#;

#[tokio::test]
async fn runaway_timer_or_hook_fails_the_module_and_releases_its_device() {
    let sim = outpost::sim::LineSim::start("127.0.0.1:0".parse().unwrap(), Default::default())
        .await
        .unwrap();
    let rt = runtime();
    driver(&rt, "hooks.lua", HOOKS).await;
    let timer = module("timer", "hooks.lua", None, json!({}));
    start(&rt, &timer).await;
    exec_ok(&rt, timer.id, "arm", no_args()).await;
    wait_until("timer module failed", || {
        rt.module_info(timer.id).unwrap().state == ModuleState::Failed
    })
    .await;

    let dev = module("dev", "hooks.lua", tcp(sim.addr()), json!({}));
    start(&rt, &dev).await;
    wait_connected(&rt, dev.id).await;
    // The module runs on another thread: the simulator may not have taken
    // the connection yet when the module says it is connected.
    wait_until("the simulator to hold the connection", || {
        sim.connections() == 1
    })
    .await;
    sim.push_line("loop");
    wait_until("hook module failed", || {
        rt.module_info(dev.id).unwrap().state == ModuleState::Failed
    })
    .await;
    let info = rt.module_info(dev.id).unwrap();
    assert!(info.failure.unwrap().contains("instruction budget"));
    assert!(!info.connected);
    wait_until("device released", || sim.connections() == 0).await;
    // A failed module cannot be started again until it is reloaded.
    assert!(matches!(
        rt.start(dev.id).await,
        Err(outpost::runtime::RuntimeError::Failed { .. })
    ));
}

#[tokio::test]
async fn a_call_that_holds_the_thread_too_long_is_stopped() {
    let mut cfg = config();
    // Instructions alone would let this loop run for minutes.
    cfg.instruction_budget = u64::MAX / 2;
    cfg.time_limit = std::time::Duration::from_millis(200);
    let rt = outpost::runtime::Runtime::new(cfg);
    driver(
        &rt,
        "slow.lua",
        "return { slow = function() while true do local s = string.rep('x', 200000) end end,
                  nap = function() sleep(400) return 'awake' end }",
    )
    .await;
    let m = module("slow", "slow.lua", None, json!({}));
    start(&rt, &m).await;
    // Waiting is not running: a call may be suspended longer than the limit.
    assert_eq!(exec_ok(&rt, m.id, "nap", no_args()).await, json!("awake"));
    let t = std::time::Instant::now();
    match within(20, rt.exec(m.id, "slow", no_args())).await {
        Err(ExecError::Failed { message }) => assert!(message.contains("time limit"), "{message}"),
        other => panic!("expected Failed, got {other:?}"),
    }
    assert!(t.elapsed() < std::time::Duration::from_secs(5));
}
