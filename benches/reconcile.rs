//! Reconciler benchmark: how soon an edit reaches a device, with a real
//! master (and a real edge) in this process and PJLink simulators.
//!
//! - **Master, one module**: a module created through the API, then the
//!   system that lists it (the commit that makes it run) → the device's
//!   connection, p50/p99 over 200 trials (target p99 ≤ 100 ms). Timed from
//!   before the system's write is sent.
//! - **Master, import**: 1,000 modules in 100 systems (100 simulators, 10
//!   connections each) imported into the running master's store → all
//!   connected, timed from the import's return (its transaction committed;
//!   target ≤ 2 s), and as a ratio to the same modules at boot (measured
//!   first: a master started on a database holding them → all connected;
//!   target ≤ 1.5×).
//! - **Edge, one module**: the module created at the master and added to
//!   the edge's system (PATCH at the master) → connected at the edge, p50/p99
//!   over 200 trials (target p99 ≤ 150 ms).
//!
//! - **Safety stop during a pass** (issue 13): a pass loading 1,000 logic
//!   modules, and `Reconciler::pause` (what a release takes) asked for as
//!   soon as it has begun: how long the stop waits, as a ratio to the whole
//!   pass (what it waited before passes gave way; same run). Target ≤ 0.5×.
//!
//! Run: `cargo bench --bench reconcile` (BENCH_TRIALS, default 200).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    unreachable_pub,
    missing_debug_implementations,
    reason = "tests and benchmarks fail loudly by design, and their items are not an API"
)]

#[path = "../tests/support/http.rs"]
mod http;
#[path = "../tests/support/roles.rs"]
mod roles;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use outpost::config::{Config, SecretString};
use outpost::model::{ControlSystem, new_id};
use outpost::sim::{PjlinkOptions, PjlinkSim};
use serde_json::json;

use roles::{Site, device};

const DEVICES: usize = 100;
const PER_DEVICE: usize = 10;
const ADMIN: &str = "benchmark-admin-key-0123456789abcdef0123456789ab";

fn main() {
    let trials: usize = std::env::var("BENCH_TRIALS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            master_one(trials).await;
            master_import().await;
            edge_one(trials).await;
            safety_stop().await;
        });
}

/// 1,000 logic modules in 10 systems, imported into `site`'s master store
/// (as another process would); their ids.
async fn import_logic(site: &Site) -> Vec<uuid::Uuid> {
    let mut file = outpost::admin::SiteFile::default();
    for s in 0..10 {
        let modules: Vec<_> = (0..100)
            .map(|i| device(&format!("Logic {s}-{i}"), "room.lua", None))
            .collect();
        file.systems.push(ControlSystem {
            id: new_id(),
            name: format!("Room {s}"),
            description: String::new(),
            edge_id: None,
            module_ids: modules.iter().map(|m| m.id).collect(),
            settings: Default::default(),
            stopped: false,
        });
        file.modules.extend(modules);
    }
    let drivers = outpost::model::ValidationContext {
        drivers: Some(["room.lua".to_owned()].into_iter().collect()),
        dir: None,
    };
    let store = site.master_store().await;
    outpost::admin::import(&store, &file, &drivers)
        .await
        .unwrap();
    store.close().await;
    file.modules.iter().map(|m| m.id).collect()
}

async fn safety_stop() {
    let site = Site::new();
    let master = outpost::master::start(config(&site)).await.unwrap();
    let running = |ids: &[uuid::Uuid]| {
        ids.iter().all(|id| {
            master.runtime.module_info(*id).map(|i| i.state)
                == Some(outpost::runtime::ModuleState::Running)
        })
    };
    // The baseline: a whole pass, from the import's commit.
    let started = Instant::now();
    let ids = import_logic(&site).await;
    wait("the first 1,000 to run", 60, || running(&ids)).await;
    let pass = started.elapsed().as_secs_f64() * 1e3;
    // The stop, asked for as soon as the next pass has begun loading.
    let before = master.reconciler.actions().loads;
    let ids = import_logic(&site).await;
    wait("the pass to begin", 60, || {
        master.reconciler.actions().loads > before
    })
    .await;
    let asked = Instant::now();
    let paused = master.reconciler.pause().await;
    let stop = asked.elapsed().as_secs_f64() * 1e3;
    let loaded = master.reconciler.actions().loads - before;
    drop(paused);
    wait("the second 1,000 to run", 60, || running(&ids)).await;
    println!(
        "safety stop during a 1,000-module pass: waited {stop:.1} ms (the pass had loaded {loaded}); \
         the whole pass: {pass:.1} ms; ratio {:.2}× (target ≤ 0.5×)",
        stop / pass
    );
    master.stop().await;
}

fn percentile(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    v[((v.len() - 1) as f64 * p).round() as usize]
}

async fn wait(what: &str, secs: u64, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_micros(500)).await;
    }
}

async fn call(addr: SocketAddr, method: &str, path: &str, body: serde_json::Value) -> http::Reply {
    let auth = format!("Bearer {ADMIN}");
    let body = body.to_string();
    let r = http::request(
        addr,
        method,
        path,
        &[("Authorization", auth.as_str())],
        Some(&body),
    )
    .await;
    assert!(r.status < 300, "{method} {path}: {} {}", r.status, r.body);
    r
}

fn config(site: &Site) -> Config {
    Config {
        admin_key: Some(SecretString::new(ADMIN)),
        log: "warn".into(),
        ..site.master_config()
    }
}

async fn sim() -> PjlinkSim {
    PjlinkSim::start("127.0.0.1:0".parse().unwrap(), PjlinkOptions::default())
        .await
        .unwrap()
}

fn report(name: &str, mut ms: Vec<f64>, target: f64) {
    let p50 = percentile(&mut ms, 0.5);
    let p99 = percentile(&mut ms, 0.99);
    println!(
        "{name}: p50 {p50:.1} ms, p99 {p99:.1} ms over {} trials (target p99 ≤ {target} ms)",
        ms.len()
    );
}

/// Creates a module at `sim` through the API, then `run` (the commit
/// that makes it run); the time from that commit's request to the
/// device's new connection.
async fn one_trial(api: SocketAddr, sim: &PjlinkSim, run: impl AsyncFnOnce(uuid::Uuid)) -> f64 {
    let uri = format!("tcp://{}", sim.addr());
    let r = call(
        api,
        "POST",
        "/api/v1/modules",
        json!({"name": "Projector", "driver": "pjlink.lua", "uri": uri}),
    )
    .await;
    let id: uuid::Uuid = r.json()["id"].as_str().unwrap().parse().unwrap();
    let before = sim.total_connections();
    let t = Instant::now();
    run(id).await;
    wait("the device to connect", 10, || {
        sim.total_connections() > before
    })
    .await;
    t.elapsed().as_secs_f64() * 1e3
}

async fn master_one(trials: usize) {
    let site = Site::new();
    let device = sim().await;
    let master = outpost::master::start(config(&site)).await.unwrap();
    let api = master.api_addr;
    let mut ms = Vec::with_capacity(trials);
    for i in 0..trials {
        ms.push(
            one_trial(api, &device, async |id| {
                call(
                    api,
                    "POST",
                    "/api/v1/systems",
                    json!({"name": format!("Room {i}"), "module_ids": [id]}),
                )
                .await;
            })
            .await,
        );
    }
    report("master: one module, commit → connected", ms, 100.0);
    master.stop().await;
}

async fn master_import() {
    let site = Site::new();
    let mut sims = Vec::new();
    for _ in 0..DEVICES {
        sims.push(sim().await);
    }
    let mut file = outpost::admin::SiteFile::default();
    for (s, sim) in sims.iter().enumerate() {
        let modules: Vec<_> = (0..PER_DEVICE)
            .map(|i| device(&format!("P{s}-{i}"), "pjlink.lua", Some(sim.addr())))
            .collect();
        file.systems.push(ControlSystem {
            id: new_id(),
            name: format!("Room {s}"),
            description: String::new(),
            edge_id: None,
            module_ids: modules.iter().map(|m| m.id).collect(),
            settings: Default::default(),
            stopped: false,
        });
        file.modules.extend(modules);
    }
    let all = || sims.iter().map(|s| s.connections()).sum::<usize>() == DEVICES * PER_DEVICE;
    let none = || sims.iter().all(|s| s.connections() == 0);
    // Boot first (on simulators as fresh as the import's will be): the
    // same documents imported before a master starts on them.
    let store = site.master_store().await;
    outpost::admin::import(&store, &file, &Default::default())
        .await
        .unwrap();
    store.close().await;
    let t = Instant::now();
    let master = outpost::master::start(config(&site)).await.unwrap();
    wait("1,000 devices connected at boot", 60, all).await;
    let boot = t.elapsed().as_secs_f64() * 1e3;
    master.stop().await;
    wait("every connection closed", 30, none).await;

    // Then the import into a running master (a fresh database).
    let site = Site::new();
    let master = outpost::master::start(config(&site)).await.unwrap();
    let t = Instant::now();
    outpost::admin::import(&master.store, &file, &Default::default())
        .await
        .unwrap();
    // The import returns once its one transaction has committed.
    let commit = Instant::now();
    let import = (commit - t).as_secs_f64() * 1e3;
    wait("1,000 devices connected after the import", 60, all).await;
    let live = commit.elapsed().as_secs_f64() * 1e3;
    println!(
        "master: import of 1,000 modules in 100 systems ({import:.0} ms to commit), commit → all \
         connected: {live:.0} ms (target ≤ 2000 ms); at boot {boot:.0} ms; ratio {:.2} (target ≤ 1.5)",
        live / boot
    );
    master.stop().await;
}

async fn edge_one(trials: usize) {
    let site = Site::new();
    let device = sim().await;
    let room = site.one_room(json!({"name": "Sydney"}), &[]).await;
    site.seed_replica(room.edge_id).await;
    let master = outpost::master::start(config(&site)).await.unwrap();
    let edge_config = Config {
        log: "warn".into(),
        ..site.edge_config(room.edge_id, &room.secret, master.link_addr)
    };
    let edge = outpost::edge::start(edge_config).await.unwrap();
    wait("the edge to control its site", 30, || {
        master.control.state(room.edge_id).map(|s| s.controller)
            == Some(outpost::control::Side::Edge)
    })
    .await;
    let api = master.api_addr;
    let path = format!("/api/v1/systems/{}", room.system.id);
    let mut ms = Vec::with_capacity(trials);
    for _ in 0..trials {
        ms.push(
            one_trial(api, &device, async |id| {
                let r = http::request(
                    api,
                    "GET",
                    &path,
                    &[("Authorization", &format!("Bearer {ADMIN}"))],
                    None,
                )
                .await;
                let v = r.json();
                let mut ids = v["module_ids"].as_array().cloned().unwrap_or_default();
                ids.push(json!(id));
                call(
                    api,
                    "PATCH",
                    &path,
                    json!({"rev": v["rev"], "module_ids": ids}),
                )
                .await;
            })
            .await,
        );
    }
    report(
        "edge: one module, commit at the master → connected at the edge",
        ms,
        150.0,
    );
    edge.stop().await;
    master.stop().await;
}
