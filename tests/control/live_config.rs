//! What a running master answers about live configuration: the API from
//! the first second of boot (`booting`, reads, 503 with `Retry-After` for
//! sites not decided yet), drivers added to `modules/` after start, the
//! WebSocket `control` topic's current controllers, and why a module that
//! exists does not run.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use outpost::config::{Config, SecretString};
use outpost::control::{Reason, Side};
use outpost::sim::{PjlinkOptions, PjlinkSim};
use serde_json::json;

use crate::http::{Reply, request};
use crate::roles::{Site, device, eventually};
use crate::ws;

const ADMIN: &str = "adminadminadminadminadminadminadminadmin";

async fn call(addr: SocketAddr, method: &str, path: &str, body: Option<&str>) -> Reply {
    let auth = format!("Bearer {ADMIN}");
    request(
        addr,
        method,
        path,
        &[("Authorization", auth.as_str())],
        body,
    )
    .await
}

fn reserve() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

fn config(site: &Site) -> Config {
    Config {
        admin_key: Some(SecretString::new(ADMIN)),
        ..site.master_config()
    }
}

/// A modules directory of this test's own: the repository's drivers.
fn modules_dir(site: &Site) -> PathBuf {
    let dir = site.path().join("modules");
    std::fs::create_dir_all(&dir).unwrap();
    for name in ["pjlink.lua", "line.lua", "room.lua"] {
        std::fs::copy(repo_driver(name), dir.join(name)).unwrap();
    }
    dir
}

fn repo_driver(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("modules")
        .join(name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_answers_while_the_master_boots() {
    let site = Site::new();
    let sim = PjlinkSim::start("127.0.0.1:0".parse().unwrap(), PjlinkOptions::default())
        .await
        .unwrap();
    let projector = device("Projector", "pjlink.lua", Some(sim.addr()));
    let room = site
        .one_room(
            json!({"failover": true, "failover_timeout_ms": 0}),
            std::slice::from_ref(&projector),
        )
        .await;
    site.seed_replica(room.edge_id).await;
    let api = reserve();
    let link = reserve();
    let config = Config {
        api_addr: api,
        link_addr: link,
        // Long: the edge, not the clock, ends this boot wait.
        boot_wait_ms: 600_000,
        ..config(&site)
    };
    let master = tokio::spawn(outpost::master::start(config));
    eventually(20, "the API to answer", async || {
        tokio::net::TcpStream::connect(api).await.is_ok()
    })
    .await;
    let health = request(api, "GET", "/api/v1/health", &[], None).await;
    assert_eq!(health.status, 200, "{}", health.body);
    assert_eq!(health.json()["status"], "booting");
    let doc = call(api, "GET", &format!("/api/v1/edges/{}", room.edge_id), None).await;
    assert_eq!(doc.status, 200, "{}", doc.body);
    let exec = format!("/api/v1/modules/{}/exec", projector.id);
    let body = json!({"method": "power_on"}).to_string();
    let r = call(api, "POST", &exec, Some(&body)).await;
    assert_eq!(r.status, 503, "{}", r.body);
    assert!(r.header("retry-after").is_some(), "{:?}", r.headers);
    assert!(!master.is_finished());

    // The edge comes: the boot wait ends, control is decided.
    let edge = outpost::edge::start(site.edge_config(room.edge_id, &room.secret, link))
        .await
        .unwrap();
    let master = master.await.unwrap().unwrap();
    let health = request(api, "GET", "/api/v1/health", &[], None).await;
    assert_eq!(health.json()["status"], "ok");
    eventually(20, "the edge to drive the projector", async || {
        sim.connections() == 1
    })
    .await;
    let r = call(
        api,
        "GET",
        &format!("/api/v1/modules/{}/status", projector.id),
        None,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    edge.stop().await;
    master.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_driver_file_added_after_start_can_be_used_at_once() {
    let site = Site::new();
    let dir = modules_dir(&site);
    let master = outpost::master::start(Config {
        modules_dir: dir.clone(),
        ..config(&site)
    })
    .await
    .unwrap();
    let module = json!({"name": "Signage", "driver": "signage.lua", "uri": "tcp://127.0.0.1:4000"})
        .to_string();
    let r = call(master.api_addr, "POST", "/api/v1/modules", Some(&module)).await;
    assert_eq!(r.status, 422, "{}", r.body);
    std::fs::copy(repo_driver("line.lua"), dir.join("signage.lua")).unwrap();
    let r = call(master.api_addr, "POST", "/api/v1/modules", Some(&module)).await;
    assert_eq!(r.status, 201, "{}", r.body);
    // Removed: refused again.
    std::fs::remove_file(dir.join("signage.lua")).unwrap();
    let r = call(master.api_addr, "POST", "/api/v1/modules", Some(&module)).await;
    assert_eq!(r.status, 422, "{}", r.body);
    master.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_control_topic_starts_with_every_current_controller() {
    let site = Site::new();
    let held = site.one_room(json!({"name": "Held"}), &[]).await;
    let free = site.one_room(json!({"name": "Free"}), &[]).await;
    let master = outpost::master::start(config(&site)).await.unwrap();
    master
        .store
        .change_controller(
            held.edge_id,
            None,
            Side::Master,
            Reason::ManualRestore,
            1_000,
        )
        .await
        .unwrap();
    let mut socket = ws::connect(master.api_addr, Some(ADMIN)).await.unwrap();
    ws::send(
        &mut socket,
        json!({"op": "subscribe", "id": 1, "topic": "control"}),
    )
    .await;
    ws::until(&mut socket, "subscribed", |v| v["type"] == "subscribed").await;
    let mut current = Vec::new();
    for _ in 0..2 {
        let v = ws::until(&mut socket, "a current controller", |v| {
            v["type"] == "control"
        })
        .await;
        assert_eq!(v["current"], true, "{v}");
        current.push((
            v["edge_id"].as_str().unwrap().to_owned(),
            v["to"].clone(),
            v["epoch"].clone(),
        ));
    }
    current.sort_by(|a, b| a.0.cmp(&b.0));
    let mut want = vec![
        (held.edge_id.to_string(), json!("master"), json!(1)),
        (free.edge_id.to_string(), json!("edge"), json!(0)),
    ];
    want.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(current, want);

    // Then each change.
    master
        .store
        .change_controller(
            free.edge_id,
            None,
            Side::Master,
            Reason::ManualRestore,
            2_000,
        )
        .await
        .unwrap();
    let v = ws::until(&mut socket, "the change", |v| v["type"] == "control").await;
    assert_eq!(v["edge_id"], json!(free.edge_id));
    assert_eq!(
        (v["to"].clone(), v["epoch"].clone()),
        (json!("master"), json!(1))
    );
    assert!(v.get("current").is_none(), "{v}");
    master.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_of_a_module_that_does_not_run_says_why() {
    let site = Site::new();
    let dir = modules_dir(&site);
    std::fs::copy(repo_driver("line.lua"), dir.join("gone.lua")).unwrap();
    let sim = PjlinkSim::start("127.0.0.1:0".parse().unwrap(), PjlinkOptions::default())
        .await
        .unwrap();
    let edge_module = device("Edge projector", "pjlink.lua", Some(sim.addr()));
    let room = site
        .one_room(
            json!({"name": "Sydney", "failover": false}),
            std::slice::from_ref(&edge_module),
        )
        .await;
    let master = outpost::master::start(Config {
        modules_dir: dir.clone(),
        ..config(&site)
    })
    .await
    .unwrap();
    let m = master.api_addr;
    let create = async |body: serde_json::Value| {
        let r = call(m, "POST", "/api/v1/modules", Some(&body.to_string())).await;
        assert_eq!(r.status, 201, "{}", r.body);
        r.json()["id"].as_str().unwrap().to_owned()
    };
    let disabled = create(json!({"name": "Off", "driver": "line.lua", "uri": "tcp://127.0.0.1:4000", "enabled": false})).await;
    let alone =
        create(json!({"name": "Alone", "driver": "line.lua", "uri": "tcp://127.0.0.1:4000"})).await;
    let gone =
        create(json!({"name": "Gone", "driver": "gone.lua", "uri": "tcp://127.0.0.1:4000"})).await;
    // Gone before the system that runs it exists: the reconciler cannot
    // have loaded it first.
    std::fs::remove_file(dir.join("gone.lua")).unwrap();
    let system = json!({"name": "Lobby", "module_ids": [disabled, gone]}).to_string();
    let r = call(m, "POST", "/api/v1/systems", Some(&system)).await;
    assert_eq!(r.status, 201, "{}", r.body);

    let status =
        async |id: &str| call(m, "GET", &format!("/api/v1/modules/{id}/status"), None).await;
    let r = status(&disabled).await;
    assert_eq!(r.status, 409, "{}", r.body);
    assert!(r.body.contains("disabled"), "{}", r.body);
    let r = status(&alone).await;
    assert_eq!(r.status, 409, "{}", r.body);
    assert!(r.body.contains("not in any system"), "{}", r.body);
    // Exec and one status variable say the same.
    let r = call(
        m,
        "POST",
        &format!("/api/v1/modules/{disabled}/exec"),
        Some(&json!({"method": "send"}).to_string()),
    )
    .await;
    assert_eq!(r.status, 409, "{}", r.body);
    assert!(r.body.contains("disabled"), "{}", r.body);
    let r = call(
        m,
        "GET",
        &format!("/api/v1/modules/{alone}/status/power"),
        None,
    )
    .await;
    assert_eq!(r.status, 409, "{}", r.body);
    assert!(r.body.contains("not in any system"), "{}", r.body);
    let r = status(&gone).await;
    assert_eq!(r.status, 409, "{}", r.body);
    assert!(r.body.contains("driver failed"), "{}", r.body);
    // The edge controls its site and is not connected.
    let r = status(&edge_module.id.to_string()).await;
    assert_eq!(r.status, 503, "{}", r.body);
    assert!(
        r.body.contains("site controlled by edge location 'Sydney'"),
        "{}",
        r.body
    );
    let r = status(&outpost::model::new_id().to_string()).await;
    assert_eq!(r.status, 404, "{}", r.body);
    let _ = room;
    master.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_driver_that_fails_to_load_is_named_in_the_status() {
    let site = Site::new();
    let dir = modules_dir(&site);
    std::fs::write(dir.join("broken.lua"), "this is not Lua (\n").unwrap();
    let master = outpost::master::start(Config {
        modules_dir: dir.clone(),
        ..config(&site)
    })
    .await
    .unwrap();
    let m = master.api_addr;
    let r = call(
        m,
        "POST",
        "/api/v1/modules",
        Some(&json!({"name": "Broken", "driver": "broken.lua"}).to_string()),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let id = r.json()["id"].as_str().unwrap().to_owned();
    let system = json!({"name": "Lobby", "module_ids": [id]}).to_string();
    let r = call(m, "POST", "/api/v1/systems", Some(&system)).await;
    assert_eq!(r.status, 201, "{}", r.body);
    master.reconciler.settle().await;
    let r = call(m, "GET", &format!("/api/v1/modules/{id}/status"), None).await;
    assert_eq!(r.status, 409, "{}", r.body);
    assert!(r.body.contains("driver failed"), "{}", r.body);
    master.stop().await;
}
