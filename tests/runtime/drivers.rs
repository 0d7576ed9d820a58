//! Driver API basics on logic modules: exec with JSON in and out, typed
//! errors, timers, module-to-module calls.

use std::time::Duration;

use outpost::runtime::ExecError;
use serde_json::json;

use crate::support::*;

const ECHO: &str = r#"
local M = {}
function M.echo(...) return {...} end
function M.add(a, b)
  if type(a) ~= "number" or type(b) ~= "number" then bad_args("add expects two numbers") end
  return a + b
end
function M.boom() error("boom: something broke") end
function M.nap(ms) sleep(ms) return "rested" end
function M.bad_result() return function() end end
function M._private() return 1 end
function M.big_status() status.set("big", string.rep("x", 300000)) end
function M.on_load() status.set("loaded", true) end
return M
"#;

#[tokio::test]
async fn exec_returns_json_and_typed_errors() {
    let rt = runtime();
    driver(&rt, "echo.lua", ECHO).await;
    let m = module("echo", "echo.lua", None, json!({}));
    start(&rt, &m).await;
    assert_eq!(rt.status_key(m.id, "loaded").unwrap(), Some(json!(true)));
    assert_eq!(
        exec_ok(&rt, m.id, "echo", json!([1, "two", {"three": [3]}, null])).await,
        json!([1, "two", {"three": [3]}, null])
    );
    assert_eq!(exec_ok(&rt, m.id, "add", json!([2, 3.5])).await, json!(5.5));
    assert_eq!(
        exec_ok(&rt, m.id, "nap", json!([10])).await,
        json!("rested")
    );

    let other = uuid::Uuid::now_v7();
    assert_eq!(
        rt.exec(other, "echo", json!(null)).await,
        Err(ExecError::NoSuchModule { module: other })
    );
    for bad in ["nope", "on_load", "_private", ""] {
        assert!(
            matches!(
                rt.exec(m.id, bad, json!(null)).await,
                Err(ExecError::NoSuchMethod { .. })
            ),
            "{bad}"
        );
    }
    assert_eq!(
        rt.exec(m.id, "add", json!(["x", 1])).await,
        Err(ExecError::BadArguments {
            message: "add expects two numbers".into()
        })
    );
    let huge = json!(["x".repeat(2 * 1024 * 1024)]);
    assert!(matches!(
        rt.exec(m.id, "echo", huge).await,
        Err(ExecError::BadArguments { .. })
    ));
    match rt.exec(m.id, "boom", json!(null)).await {
        Err(ExecError::Driver { message }) => {
            assert!(message.contains("boom: something broke"), "{message}");
            assert!(
                message.contains("echo.lua:"),
                "names the file and line: {message}"
            );
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        rt.exec(m.id, "bad_result", json!(null)).await,
        Err(ExecError::Driver { .. })
    ));
    // Status lives outside the Lua memory limit, so its size is bounded.
    match rt.exec(m.id, "big_status", json!(null)).await {
        Err(ExecError::Driver { message }) => assert!(message.contains("larger than"), "{message}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(rt.status_key(m.id, "big").unwrap(), None);
    // None of that hurt the module.
    assert_eq!(exec_ok(&rt, m.id, "add", json!([1, 1])).await, json!(2));

    // The wire form of the error is stable JSON.
    let wire = serde_json::to_value(ExecError::Driver {
        message: "m".into(),
    })
    .unwrap();
    assert_eq!(wire, json!({"error": "driver", "message": "m"}));
    let back: ExecError = serde_json::from_value(wire).unwrap();
    assert_eq!(
        back,
        ExecError::Driver {
            message: "m".into()
        }
    );

    rt.stop(m.id).await.unwrap();
    assert_eq!(
        rt.exec(m.id, "echo", json!(null)).await,
        Err(ExecError::Stopped)
    );
    rt.unload(m.id).await.unwrap();
    assert!(matches!(
        rt.exec(m.id, "echo", json!(null)).await,
        Err(ExecError::NoSuchModule { .. })
    ));
}

const TICKER: &str = r#"
local M = {}
local ticks = 0
function M.on_load()
  after(500, function() status.set("once", true) end)
  every(100, function() ticks = ticks + 1 status.set("ticks", ticks) end)
end
return M
"#;

#[tokio::test(start_paused = true)]
async fn timers_fire_once_and_repeating_on_the_paused_clock() {
    let rt = runtime_on_test_clock();
    driver(&rt, "ticker.lua", TICKER).await;
    let m = module("ticker", "ticker.lua", None, json!({}));
    start(&rt, &m).await;
    tokio::time::sleep(Duration::from_millis(1050)).await;
    assert_eq!(rt.status_key(m.id, "once").unwrap(), Some(json!(true)));
    let ticks = rt
        .status_key(m.id, "ticks")
        .unwrap()
        .unwrap()
        .as_i64()
        .unwrap();
    assert!((9..=11).contains(&ticks), "ticks {ticks}");
    // Stopped modules run no timers.
    rt.stop(m.id).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let after = rt
        .status_key(m.id, "ticks")
        .unwrap()
        .unwrap()
        .as_i64()
        .unwrap();
    assert!(after - ticks <= 1, "timers ran while stopped");
}

const HANG: &str = r#"
local M = {}
function M.hang(ms)
  status.set("started", (status.get("started") or 0) + 1)
  sleep(ms)
  status.set("finished", true)
  return true
end
function M.quick() return "quick" end
return M
"#;

#[tokio::test]
async fn a_caller_that_gives_up_cancels_the_call_and_calls_are_bounded() {
    let rt = runtime();
    driver(&rt, "hang.lua", HANG).await;
    let m = module("hang", "hang.lua", None, json!({}));
    start(&rt, &m).await;

    let gave_up = tokio::time::timeout(
        Duration::from_millis(50),
        rt.exec(m.id, "hang", json!([300])),
    )
    .await;
    assert!(gave_up.is_err(), "the caller gave up");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(rt.status_key(m.id, "started").unwrap(), Some(json!(1)));
    assert_eq!(
        rt.status_key(m.id, "finished").unwrap(),
        None,
        "the call was cancelled"
    );

    // Suspended calls are bounded per module; lifecycle still works.
    let mut hanging = tokio::task::JoinSet::new();
    for _ in 0..256 {
        let rt = rt.clone();
        hanging.spawn(async move { rt.exec(m.id, "hang", json!([10_000])).await });
    }
    wait_until("256 calls running", || {
        rt.status_key(m.id, "started").unwrap() == Some(json!(257))
    })
    .await;
    match rt.exec(m.id, "quick", no_args()).await {
        Err(ExecError::Driver { message }) => {
            assert!(message.contains("too many calls"), "{message}")
        }
        other => panic!("{other:?}"),
    }
    rt.stop(m.id).await.unwrap();
    rt.start(m.id).await.unwrap();
    hanging.abort_all();
    while hanging.join_next().await.is_some() {}
    // The module notices its callers left and frees their calls.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(exec_ok(&rt, m.id, "quick", no_args()).await, json!("quick"));
    rt.unload(m.id).await.unwrap();
}

/// The driver examples in docs/drivers.md compile and load.
#[tokio::test]
async fn driver_examples_in_the_docs_load() {
    let doc = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/drivers.md"),
    )
    .unwrap();
    let rt = runtime();
    let mut n = 0;
    for block in doc.split("```lua\n").skip(1) {
        let code = block.split("```").next().unwrap();
        if !code.contains("return M") {
            continue;
        }
        n += 1;
        let name = format!("doc{n}.lua");
        driver(&rt, &name, code).await;
        let m = module(&name, &name, None, json!({}));
        rt.load(&m)
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}\n{code}"));
    }
    assert!(n >= 3, "found {n} examples");
}
