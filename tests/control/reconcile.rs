//! The reconciler with real roles and simulators: edits through the API
//! reach the devices on a running master without a restart, an import by
//! another process (the real binary) is picked up, a burst of edits is
//! applied once each, and a master killed mid-way converges on restart.

use std::net::SocketAddr;
use std::time::Duration;

use outpost::config::SecretString;
use outpost::model::{ControlSystem, Module, new_id};
use outpost::runtime::ModuleState;
use outpost::sim::{PjlinkOptions, PjlinkSim};
use serde_json::json;

use crate::http::{Reply, request};
use crate::roles::{Killable, Site, device, eventually};

async fn call(addr: SocketAddr, key: &str, method: &str, path: &str, body: Option<&str>) -> Reply {
    let auth = format!("Bearer {key}");
    request(
        addr,
        method,
        path,
        &[("Authorization", auth.as_str())],
        body,
    )
    .await
}

async fn projector() -> PjlinkSim {
    PjlinkSim::start(
        "127.0.0.1:0".parse().unwrap(),
        PjlinkOptions {
            warmup: Duration::from_millis(10),
            ..PjlinkOptions::default()
        },
    )
    .await
    .unwrap()
}

fn state(master: &outpost::master::Master, id: uuid::Uuid) -> Option<ModuleState> {
    master.runtime.module_info(id).map(|i| i.state)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_edits_reach_the_devices_of_a_running_master() {
    let site = Site::new();
    let sim = projector().await;
    let other = projector().await;
    let admin = "a".repeat(48);
    let mut config = site.master_config();
    config.admin_key = Some(SecretString::new(admin.clone()));
    let master = outpost::master::start(config).await.unwrap();
    let m = master.api_addr;

    // Create a module and a system: the device connects without a restart.
    let uri = format!("tcp://{}", sim.addr());
    let r = call(
        m,
        &admin,
        "POST",
        "/api/v1/modules",
        Some(&json!({"name": "Projector", "driver": "pjlink.lua", "uri": uri}).to_string()),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let module: uuid::Uuid = r.json()["id"].as_str().unwrap().parse().unwrap();
    let r = call(
        m,
        &admin,
        "POST",
        "/api/v1/systems",
        Some(&json!({"name": "Room", "module_ids": [module]}).to_string()),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let system: uuid::Uuid = r.json()["id"].as_str().unwrap().parse().unwrap();
    eventually(10, "the projector to connect", async || {
        sim.connections() == 1
    })
    .await;
    assert_eq!(state(&master, module), Some(ModuleState::Running));

    // Settings: the driver is told, the connection is kept.
    let before = master.reconciler.actions();
    let path = format!("/api/v1/modules/{module}");
    let r = call(
        m,
        &admin,
        "PATCH",
        &path,
        Some(&json!({"rev": 1, "settings": {"x": 1}}).to_string()),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    eventually(10, "the settings to be applied", async || {
        master.reconciler.actions().updates == before.updates + 1
    })
    .await;
    assert_eq!((sim.connections(), sim.total_connections()), (1, 1));

    // A new uri: the module reconnects to the other device.
    let uri = format!("tcp://{}", other.addr());
    let r = call(
        m,
        &admin,
        "PATCH",
        &path,
        Some(&json!({"rev": 2, "uri": uri}).to_string()),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    eventually(10, "the move to the other device", async || {
        other.connections() == 1 && sim.connections() == 0
    })
    .await;

    // Stop and start the system: a field of its document.
    let r = call(
        m,
        &admin,
        "POST",
        &format!("/api/v1/systems/{system}/stop"),
        Some(""),
    )
    .await;
    assert_eq!(
        (r.status, r.json()["state"].as_str()),
        (200, Some("stopped")),
        "{}",
        r.body
    );
    assert_eq!(
        state(&master, module),
        Some(ModuleState::Stopped),
        "answered once stopped"
    );
    eventually(10, "the connection to close", async || {
        other.connections() == 0
    })
    .await;
    let doc = master.store.get(system).await.unwrap().unwrap();
    assert!(doc.parse::<ControlSystem>().unwrap().stopped);
    let r = call(
        m,
        &admin,
        "POST",
        &format!("/api/v1/systems/{system}/start"),
        Some(""),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(state(&master, module), Some(ModuleState::Running));
    eventually(10, "the projector to reconnect", async || {
        other.connections() == 1
    })
    .await;

    // Disabled: stopped. Removed from its system: unloaded.
    let r = call(
        m,
        &admin,
        "PATCH",
        &path,
        Some(&json!({"rev": 3, "enabled": false}).to_string()),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    eventually(10, "the disabled module to stop", async || {
        other.connections() == 0
    })
    .await;
    let auth = format!("Bearer {admin}");
    let r = request(
        m,
        "DELETE",
        &format!("/api/v1/systems/{system}"),
        &[("Authorization", auth.as_str()), ("If-Match", "\"3\"")],
        None,
    )
    .await;
    assert!(
        r.status == 200 || r.status == 204,
        "{} {}",
        r.status,
        r.body
    );
    eventually(10, "the module to be unloaded", async || {
        state(&master, module).is_none()
    })
    .await;
    master.stop().await;
}

/// Logic modules (no device) in `systems` systems of `per` modules each.
fn logic_site(systems: usize, per: usize) -> outpost::admin::SiteFile {
    let mut site = outpost::admin::SiteFile::default();
    for s in 0..systems {
        let modules: Vec<Module> = (0..per)
            .map(|i| device(&format!("Logic {s}-{i}"), "room.lua", None))
            .collect();
        site.systems.push(ControlSystem {
            id: new_id(),
            name: format!("Room {s}"),
            description: String::new(),
            edge_id: None,
            module_ids: modules.iter().map(|m| m.id).collect(),
            settings: Default::default(),
            stopped: false,
        });
        site.modules.extend(modules);
    }
    site
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_import_by_another_process_is_picked_up_and_a_burst_applied_once_each() {
    let site = Site::new();
    let master = outpost::master::start(site.master_config()).await.unwrap();
    let mut file = logic_site(10, 100);
    let path = site.path().join("site.json");
    std::fs::write(&path, serde_json::to_string(&file).unwrap()).unwrap();
    let config = site.master_config();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_outpost"))
        .args(["admin", "import"])
        .arg(&path)
        .env("OUTPOST_DATABASE_URL", config.database_url())
        .env("OUTPOST_MODULES_DIR", &config.modules_dir)
        .env("OUTPOST_DATA_DIR", &config.data_dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    eventually(20, "1,000 imported modules to run", async || {
        master.reconciler.actions().starts >= 1000
            && file
                .modules
                .iter()
                .all(|m| state(&master, m.id) == Some(ModuleState::Running))
    })
    .await;
    let before = master.reconciler.actions();
    assert_eq!((before.loads, before.starts), (1000, 1000));

    // 1,000 edits in one import: each applied once, nothing restarted.
    for m in &mut file.modules {
        m.settings.insert("label".into(), json!("edited"));
    }
    let other = site.master_store().await;
    outpost::admin::import(&other, &file, &crate::support::example_drivers())
        .await
        .unwrap();
    other.close().await;
    eventually(20, "the edits to be applied", async || {
        master.reconciler.actions().updates == before.updates + 1000
    })
    .await;
    master.reconciler.settle().await;
    let after = master.reconciler.actions();
    assert_eq!(after.updates, before.updates + 1000);
    assert_eq!(
        (after.loads, after.starts, after.stops, after.unloads),
        (before.loads, before.starts, before.stops, before.unloads)
    );
    master.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_killed_mid_reconcile_converges_without_starting_twice() {
    let site = Site::new();
    let sims: Vec<PjlinkSim> = futures_util::future::join_all((0..20).map(|_| projector())).await;
    let config = site.master_config();
    let killable = Killable::start(outpost::master::start(config.clone())).await;
    assert!(killable.get().is_ok());
    let modules: Vec<Module> = sims
        .iter()
        .enumerate()
        .map(|(i, s)| device(&format!("P{i}"), "pjlink.lua", Some(s.addr())))
        .collect();
    let file = outpost::admin::SiteFile {
        systems: vec![ControlSystem {
            id: new_id(),
            name: "Hall".into(),
            description: String::new(),
            edge_id: None,
            module_ids: modules.iter().map(|m| m.id).collect(),
            settings: Default::default(),
            stopped: false,
        }],
        modules,
        ..Default::default()
    };
    let store = site.master_store().await;
    outpost::admin::import(&store, &file, &crate::support::example_drivers())
        .await
        .unwrap();
    store.close().await;
    // Killed as soon as the first device connects: the pass is mid-way.
    eventually(20, "a first device to connect", async || {
        sims.iter().any(|s| s.connections() == 1)
    })
    .await;
    killable.kill();
    eventually(10, "the killed master's connections to close", async || {
        sims.iter().all(|s| s.connections() == 0)
    })
    .await;
    let master = outpost::master::start(config).await.unwrap();
    eventually(20, "every device connected once", async || {
        sims.iter().all(|s| s.connections() == 1)
    })
    .await;
    assert!(
        sims.iter().all(|s| s.max_connections_seen() == 1),
        "no device ever had two connections"
    );
    assert_eq!(
        master.reconciler.actions().starts,
        20,
        "each module started once"
    );
    master.stop().await;
}

/// Creates a projector module at `sim` and adds it to `system` (the
/// edge's), through the master's API; returns the module's id.
async fn add_projector(
    m: SocketAddr,
    admin: &str,
    system: uuid::Uuid,
    sim: &PjlinkSim,
) -> uuid::Uuid {
    let uri = format!("tcp://{}", sim.addr());
    let r = call(
        m,
        admin,
        "POST",
        "/api/v1/modules",
        Some(&json!({"name": "Projector", "driver": "pjlink.lua", "uri": uri}).to_string()),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let module: uuid::Uuid = r.json()["id"].as_str().unwrap().parse().unwrap();
    let path = format!("/api/v1/systems/{system}");
    let r = call(m, admin, "GET", &path, None).await;
    let rev = r.json()["rev"].as_i64().unwrap();
    let r = call(
        m,
        admin,
        "PATCH",
        &path,
        Some(&json!({"rev": rev, "module_ids": [module]}).to_string()),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    module
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edits_at_the_master_reach_the_devices_of_an_edge() {
    let site = Site::new();
    let sim = projector().await;
    let room = site.one_room(json!({"name": "Sydney"}), &[]).await;
    site.seed_replica(room.edge_id).await;
    let admin = "a".repeat(48);
    let mut config = site.master_config();
    config.admin_key = Some(SecretString::new(admin.clone()));
    let master = outpost::master::start(config).await.unwrap();
    let m = master.api_addr;
    let edge = outpost::edge::start(site.edge_config(room.edge_id, &room.secret, master.link_addr))
        .await
        .unwrap();
    eventually(20, "the edge to control its site", async || {
        master.control.state(room.edge_id).map(|s| s.controller)
            == Some(outpost::control::Side::Edge)
    })
    .await;

    let module = add_projector(m, &admin, room.system.id, &sim).await;
    let at_edge = |id| edge.runtime.module_info(id).map(|i| i.state);
    eventually(20, "the projector to connect at the edge", async || {
        sim.connections() == 1 && at_edge(module) == Some(ModuleState::Running)
    })
    .await;
    assert!(
        master.runtime.module_info(module).is_none(),
        "the master does not run it"
    );

    // Settings: told to the driver, the connection kept.
    let before = edge.reconciler.actions();
    let r = call(
        m,
        &admin,
        "PATCH",
        &format!("/api/v1/modules/{module}"),
        Some(&json!({"rev": 1, "settings": {"x": 2}}).to_string()),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    eventually(20, "the edge to apply the settings", async || {
        edge.reconciler.actions().updates == before.updates + 1
    })
    .await;
    assert_eq!((sim.connections(), sim.total_connections()), (1, 1));

    // A stop written at the master holds at the edge.
    let system = room.system.id;
    let r = call(
        m,
        &admin,
        "POST",
        &format!("/api/v1/systems/{system}/stop"),
        Some(""),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    eventually(20, "the projector to disconnect", async || {
        sim.connections() == 0 && at_edge(module) == Some(ModuleState::Stopped)
    })
    .await;
    let r = call(
        m,
        &admin,
        "POST",
        &format!("/api/v1/systems/{system}/start"),
        Some(""),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    eventually(20, "the projector to reconnect", async || {
        sim.connections() == 1
    })
    .await;

    // Removed from the system: unloaded at the edge.
    let path = format!("/api/v1/systems/{system}");
    let rev = call(m, &admin, "GET", &path, None).await.json()["rev"]
        .as_i64()
        .unwrap();
    let r = call(
        m,
        &admin,
        "PATCH",
        &path,
        Some(&json!({"rev": rev, "module_ids": []}).to_string()),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    eventually(20, "the module to be unloaded at the edge", async || {
        at_edge(module).is_none() && sim.connections() == 0
    })
    .await;
    edge.stop().await;
    master.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_holding_a_site_follows_edits_to_it() {
    let site = Site::new();
    let sim = projector().await;
    let room = site
        .one_room(
            json!({"name": "Sydney", "failover": true, "failover_timeout_ms": 0}),
            &[],
        )
        .await;
    let admin = "a".repeat(48);
    let mut config = site.master_config();
    config.admin_key = Some(SecretString::new(admin.clone()));
    let master = outpost::master::start(config).await.unwrap();
    // The edge never came: the master took the site over at boot.
    eventually(20, "the master to hold the site", async || {
        master.control.state(room.edge_id).map(|s| s.controller)
            == Some(outpost::control::Side::Master)
    })
    .await;
    let module = add_projector(master.api_addr, &admin, room.system.id, &sim).await;
    eventually(20, "the master to connect the new projector", async || {
        sim.connections() == 1 && state(&master, module) == Some(ModuleState::Running)
    })
    .await;
    master.stop().await;
}

/// A driver change reloads the module under its new driver (here onto
/// another kind of device); a module deleted from the only system that
/// listed it is unloaded, and its document can then be deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_driver_change_reloads_and_a_deleted_module_is_unloaded() {
    let site = Site::new();
    let sim = projector().await;
    let line = outpost::sim::LineSim::start(
        "127.0.0.1:0".parse().unwrap(),
        outpost::sim::LineOptions::default(),
    )
    .await
    .unwrap();
    let admin = "a".repeat(48);
    let mut config = site.master_config();
    config.admin_key = Some(SecretString::new(admin.clone()));
    let master = outpost::master::start(config).await.unwrap();
    let m = master.api_addr;
    let uri = format!("tcp://{}", sim.addr());
    let r = call(
        m,
        &admin,
        "POST",
        "/api/v1/modules",
        Some(&json!({"name": "Device", "driver": "pjlink.lua", "uri": uri}).to_string()),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let module: uuid::Uuid = r.json()["id"].as_str().unwrap().parse().unwrap();
    let r = call(
        m,
        &admin,
        "POST",
        "/api/v1/systems",
        Some(&json!({"name": "Room", "module_ids": [module]}).to_string()),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let system: uuid::Uuid = r.json()["id"].as_str().unwrap().parse().unwrap();
    eventually(10, "the projector to connect", async || {
        sim.connections() == 1
    })
    .await;

    // Another driver (and its device): the projector is let go, the line
    // device taken, and the module runs the new driver.
    let uri = format!("tcp://{}", line.addr());
    let path = format!("/api/v1/modules/{module}");
    let r = call(
        m,
        &admin,
        "PATCH",
        &path,
        Some(&json!({"rev": 1, "driver": "line.lua", "uri": uri}).to_string()),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    // The new driver's device connects before the runtime records the
    // module as running again: wait for both.
    eventually(
        10,
        "the move to the line device, running line.lua",
        async || {
            let info = master.runtime.module_info(module);
            line.connections() == 1
                && sim.connections() == 0
                && info.is_some_and(|i| i.state == ModuleState::Running && i.driver == "line.lua")
        },
    )
    .await;

    // Out of its only system: unloaded. Then the document can go too.
    let r = call(
        m,
        &admin,
        "PATCH",
        &format!("/api/v1/systems/{system}"),
        Some(&json!({"rev": 1, "module_ids": []}).to_string()),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    eventually(10, "the module to be unloaded", async || {
        state(&master, module).is_none() && line.connections() == 0
    })
    .await;
    let auth = format!("Bearer {admin}");
    let r = request(
        m,
        "DELETE",
        &path,
        &[("Authorization", auth.as_str()), ("If-Match", "\"2\"")],
        None,
    )
    .await;
    assert!(
        r.status == 200 || r.status == 204,
        "{} {}",
        r.status,
        r.body
    );
    assert!(state(&master, module).is_none());
    master.stop().await;
}

/// A safety stop (a site released to the other side) takes the
/// reconciler's pause; a pass in progress gives way to it between chunks
/// of actions instead of finishing first, so a release never waits for a
/// whole pass (here: loading 1,000 modules), and the pass runs again after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_safety_stop_never_waits_for_a_whole_reconcile_pass() {
    let site = Site::new();
    let master = outpost::master::start(site.master_config()).await.unwrap();
    let file = logic_site(10, 100);
    let other = site.master_store().await;
    outpost::admin::import(&other, &file, &crate::support::example_drivers())
        .await
        .unwrap();
    other.close().await;
    // The pass that follows the import has begun loading.
    let started = tokio::time::Instant::now();
    while master.reconciler.actions().loads == 0 {
        assert!(started.elapsed() < Duration::from_secs(20), "no pass began");
        tokio::task::yield_now().await;
    }
    let paused = master.reconciler.pause().await;
    let at_pause = master.reconciler.actions();
    assert!(
        at_pause.loads < 1000 && at_pause.starts == 0,
        "the stop waited for the whole pass: {at_pause:?}"
    );
    drop(paused);
    // A start is counted once its whole chunk has answered, so the pass
    // has finished when the count (not only the modules' state) says so.
    eventually(20, "the pass to run again and finish", async || {
        master.reconciler.actions().starts >= 1000
            && file
                .modules
                .iter()
                .all(|m| state(&master, m.id) == Some(ModuleState::Running))
    })
    .await;
    let after = master.reconciler.actions();
    assert_eq!((after.loads, after.starts), (1000, 1000));
    master.stop().await;
}
