//! Test helpers: a runtime over the shipped `modules/`, module documents,
//! and polling waits with a deadline (so a broken behaviour fails instead of
//! hanging).

use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use outpost::model::Module;
use outpost::runtime::{Runtime, RuntimeConfig};
use serde_json::{Map, Value, json};
use uuid::Uuid;

pub fn modules_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("modules")
}

pub fn config() -> RuntimeConfig {
    let mut cfg = RuntimeConfig::new(modules_dir());
    cfg.instruction_budget = 2_000_000;
    cfg.exec_timeout = Duration::from_secs(10);
    cfg.transport.backoff_min = Duration::from_millis(20);
    cfg.transport.backoff_max = Duration::from_millis(200);
    cfg.transport.connect_timeout = Duration::from_secs(2);
    cfg
}

pub fn runtime() -> Runtime {
    Runtime::new(config())
}

/// A runtime whose modules run on the test's own tokio runtime, so they
/// follow its paused clock (the driver executor has a clock of its own).
pub fn runtime_on_test_clock() -> Runtime {
    let mut cfg = config();
    cfg.driver_threads = 0;
    Runtime::new(cfg)
}

pub fn module(name: &str, driver: &str, uri: Option<String>, settings: Value) -> Module {
    let settings: Map<String, Value> = match settings {
        Value::Object(m) => m,
        _ => Map::new(),
    };
    Module {
        id: Uuid::now_v7(),
        name: name.to_owned(),
        driver: driver.to_owned(),
        uri,
        settings,
        enabled: true,
    }
}

pub fn tcp(addr: std::net::SocketAddr) -> Option<String> {
    Some(format!("tcp://{addr}"))
}

/// Loads and starts a module, panicking with the reason if it cannot.
pub async fn start(rt: &Runtime, m: &Module) {
    rt.load(m).await.expect("load");
    rt.start(m.id).await.expect("start");
}

/// Registers an inline test driver under `name`.
pub async fn driver(rt: &Runtime, name: &str, source: &str) {
    rt.reload_driver(name, Some(source.to_owned()))
        .await
        .expect("test driver compiles");
}

/// Polls `f` every few milliseconds until it is true, or panics after 10 s.
pub async fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !f() {
        if tokio::time::Instant::now() > deadline {
            panic!("timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

pub async fn wait_connected(rt: &Runtime, id: Uuid) {
    wait_until("device connected", || rt.device_connected(id) == Some(true)).await;
}

/// Runs an exec, panicking with the error if it fails.
pub async fn exec_ok(rt: &Runtime, id: Uuid, method: &str, args: Value) -> Value {
    match rt.exec(id, method, args).await {
        Ok(v) => v,
        Err(e) => panic!("exec {method} failed: {e:?}"),
    }
}

/// A future with a deadline, so a hung call fails the test.
pub async fn within<T>(secs: u64, f: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(secs), f)
        .await
        .expect("took too long")
}

pub fn no_args() -> Value {
    json!(null)
}
