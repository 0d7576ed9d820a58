//! The API's live and operational parts with a real master and edge: the
//! WebSocket (status and debug of an edge-run projector through the
//! master, control and link notices, the close frame at shutdown), driver
//! reload and repository routes with their role matrix, an edge's calls
//! on master-controlled modules (proxied, or redirected), and the metrics
//! that activity leaves.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use outpost::config::SecretString;
use outpost::control::{Reason, Side};
use outpost::sim::{PjlinkOptions, PjlinkSim, Power};
use serde_json::json;

use crate::http::{Reply, request};
use crate::roles::{Room, Site, device, eventually};
use crate::ws::{self, Got};

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

/// Creates a key of `role` for `user` through the master's API.
async fn key(master: SocketAddr, admin: &str, user: &str, role: &str) -> String {
    let r = call(
        master,
        admin,
        "POST",
        "/api/v1/keys",
        Some(&json!({"name": user, "user": user, "role": role}).to_string()),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.body);
    r.json()["key"].as_str().unwrap().to_owned()
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_follows_an_edge_run_projector_through_the_master() {
    let site = Site::new();
    let sim = PjlinkSim::start(
        "127.0.0.1:0".parse().unwrap(),
        PjlinkOptions {
            warmup: Duration::from_millis(100),
            ..PjlinkOptions::default()
        },
    )
    .await
    .unwrap();
    let projector_module = device("Projector", "pjlink.lua", Some(sim.addr()));
    let projector = projector_module.id;
    let Room {
        edge_id, secret, ..
    } = site
        .one_room(json!({"name": "Sydney"}), &[projector_module])
        .await;
    let admin = "a".repeat(48);
    let mut config = site.master_config();
    config.admin_key = Some(SecretString::new(admin.clone()));
    let master = outpost::master::start(config).await.unwrap();
    let m = master.api_addr;
    let viewer = key(m, &admin, "vera", "viewer").await;
    site.seed_replica(edge_id).await;
    let edge = outpost::edge::start(site.edge_config(edge_id, &secret, master.link_addr))
        .await
        .unwrap();
    eventually(10, "the edge to connect", async || {
        master.registry.peer(edge_id).is_some() && edge.control.is_running().await
    })
    .await;
    eventually(10, "the projector to connect", async || {
        sim.connections() == 1
    })
    .await;

    // No key, a wrong key: refused before the upgrade.
    assert_eq!(ws::connect(m, None).await.err(), Some(401));
    assert_eq!(ws::connect(m, Some(&"z".repeat(48))).await.err(), Some(401));

    // A browser-style client (key in the query) follows the power status.
    let mut status = ws::connect_query(m, &viewer).await;
    ws::send(
        &mut status,
        json!({"op": "subscribe", "id": 1, "topic": "status", "module": projector, "key": "power"}),
    )
    .await;
    ws::until(&mut status, "subscribed", |v| {
        v["type"] == "subscribed" && v["id"] == 1
    })
    .await;
    let first = ws::until(&mut status, "the current value", |v| v["type"] == "status").await;
    assert_eq!(first["key"], "power", "{first}");
    // Viewers may not watch raw device traffic.
    ws::send(
        &mut status,
        json!({"op": "subscribe", "id": 2, "topic": "debug", "module": projector}),
    )
    .await;
    let refused = ws::until(&mut status, "an error", |v| v["type"] == "error").await;
    assert_eq!(refused["id"], 2, "{refused}");

    // The admin watches debug and control with the header key.
    let mut admin_ws = ws::connect(m, Some(&admin)).await.unwrap();
    ws::send(
        &mut admin_ws,
        json!({"op": "subscribe", "id": 7, "topic": "debug", "module": projector}),
    )
    .await;
    ws::send(
        &mut admin_ws,
        json!({"op": "subscribe", "id": 8, "topic": "control"}),
    )
    .await;
    // The two answers come in either order: the debug one crosses the link.
    let mut pending = vec![7, 8];
    while !pending.is_empty() {
        let v = ws::until(&mut admin_ws, "debug and control subscribed", |v| {
            v["type"] == "subscribed" && pending.iter().any(|id| v["id"] == *id)
        })
        .await;
        pending.retain(|id| v["id"] != *id);
    }

    let r = call(
        m,
        &admin,
        "POST",
        &format!("/api/v1/modules/{projector}/exec"),
        Some(&json!({"method": "power", "args": true}).to_string()),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    eventually(10, "the projector to be on", async || {
        sim.power() == Power::On
    })
    .await;
    // The change reaches the master through the edge's event push.
    ws::until(&mut status, "power on", |v| {
        v["type"] == "status" && v["value"] == "on" && v["id"] == 1
    })
    .await;
    // The command went out on the edge, and its debug line came back here.
    let line = ws::until(&mut admin_ws, "a debug line", |v| {
        v["type"] == "debug" && v["id"] == 7
    })
    .await;
    assert_eq!(line["module"], projector.to_string(), "{line}");
    ws::send(&mut admin_ws, json!({"op": "unsubscribe", "id": 7})).await;
    ws::until(&mut admin_ws, "unsubscribed", |v| {
        v["type"] == "unsubscribed"
    })
    .await;

    // A change of controller and a lost edge are pushed. (Written to the
    // store directly: the subscription is what is tested here; the control
    // loop's own changes are tested in `failover`.)
    let epoch = master
        .store
        .control_state(edge_id)
        .await
        .unwrap()
        .map(|s| s.epoch);
    master
        .store
        .change_controller(
            edge_id,
            epoch,
            Side::Master,
            Reason::FailoverTimeout,
            now_ms(),
        )
        .await
        .unwrap();
    let change = ws::until(&mut admin_ws, "the control change", |v| {
        v["type"] == "control"
    })
    .await;
    assert_eq!(
        (&change["edge_id"], &change["to"], &change["epoch"]),
        (
            &json!(edge_id),
            &json!("master"),
            &json!(epoch.unwrap_or(0) + 1)
        ),
        "{change}"
    );

    // Metrics after this activity: each family is present.
    let metrics = request(m, "GET", "/metrics", &[], None).await.body;
    for family in [
        "outpost_edges_connected 1",
        "outpost_location_controller_master{edge=\"",
        "outpost_control_changes_total{",
        "outpost_link_requests_total{",
        "outpost_link_request_seconds_bucket{",
        "outpost_modules{state=\"running\"}",
        "outpost_replication_lag{edge=\"",
        "outpost_http_requests_total{",
        "outpost_ws_clients",
    ] {
        assert!(metrics.contains(family), "{family} missing:\n{metrics}");
    }

    edge.stop().await;
    let lost = ws::until(&mut admin_ws, "the link lost", |v| {
        v["type"] == "link" && v["connected"] == false
    })
    .await;
    assert_eq!(lost["edge_id"], json!(edge_id), "{lost}");

    // A graceful stop closes each socket with 1001 (going away).
    master.stop().await;
    for socket in [&mut status, &mut admin_ws] {
        loop {
            match ws::next(socket, 10).await {
                Got::Close(frame) => {
                    assert_eq!(u16::from(frame.expect("a close frame").code), 1001);
                    break;
                }
                Got::Json(_) => {}
            }
        }
    }
    sim.shutdown().await;
}

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .env("GIT_AUTHOR_NAME", "t")
        .env("GIT_AUTHOR_EMAIL", "t@example.invalid")
        .env("GIT_COMMITTER_NAME", "t")
        .env("GIT_COMMITTER_EMAIL", "t@example.invalid")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

fn copy_drivers(to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for name in ["room.lua", "pjlink.lua", "line.lua"] {
        std::fs::copy(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("modules")
                .join(name),
            to.join(name),
        )
        .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn driver_reload_and_repository_routes_follow_the_role_matrix() {
    let site = Site::new();
    // The master's drivers are a git repository at commit A; commit B adds
    // a function to room.lua.
    // It is a clone of an origin, so `pull` has an upstream.
    let origin = site.path().join("origin");
    copy_drivers(&origin);
    git(&origin, &["init", "-q", "-b", "main"]);
    git(&origin, &["add", "-A"]);
    git(&origin, &["commit", "-q", "-m", "A"]);
    let repo = site.path().join("master-modules");
    git(
        site.path(),
        &[
            "clone",
            "-q",
            origin.to_str().unwrap(),
            repo.to_str().unwrap(),
        ],
    );
    let a = git(&repo, &["rev-parse", "HEAD"]);
    let room_text = std::fs::read_to_string(repo.join("room.lua")).unwrap();
    std::fs::write(
        repo.join("room.lua"),
        room_text.replace("return M", "function M.version() return 2 end\n\nreturn M"),
    )
    .unwrap();
    git(&repo, &["commit", "-q", "-am", "B"]);
    let b = git(&repo, &["rev-parse", "HEAD"]);
    git(&repo, &["reset", "-q", "--hard", &a]);

    let room_module = device("Room", "room.lua", None);
    let room = room_module.id;
    let Room {
        edge_id, secret, ..
    } = site
        .one_room(json!({"name": "Oslo", "admins": ["otto"]}), &[room_module])
        .await;
    let admin = "a".repeat(48);
    let mut config = site.master_config();
    config.admin_key = Some(SecretString::new(admin.clone()));
    config.modules_dir = repo.clone();
    let master = outpost::master::start(config).await.unwrap();
    let m = master.api_addr;
    let otto = key(m, &admin, "otto", "operator").await;
    let vera = key(m, &admin, "vera", "viewer").await;
    site.seed_replica(edge_id).await;
    let mut edge_config = site.edge_config(edge_id, &secret, master.link_addr);
    edge_config.modules_dir = site.path().join("edge-modules");
    copy_drivers(&edge_config.modules_dir);
    let edge = outpost::edge::start(edge_config).await.unwrap();
    eventually(10, "the edge to connect", async || {
        master.registry.peer(edge_id).is_some()
    })
    .await;
    eventually(10, "the edge to run the room", async || {
        edge.runtime.module_info(room).is_some() && edge.control.is_running().await
    })
    .await;

    // Reload: admins only, answered per side.
    let reload = "/api/v1/drivers/room.lua/reload";
    for (k, want) in [(&vera, 403), (&otto, 403)] {
        assert_eq!(call(m, k, "POST", reload, Some("")).await.status, want);
    }
    let r = call(m, &admin, "POST", reload, Some("")).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let sides = r.json()["sides"].as_array().unwrap().clone();
    assert_eq!(sides.len(), 2, "{}", r.body);
    assert_eq!(
        (&sides[0]["side"], &sides[0]["ok"]),
        (&json!("master"), &json!(true))
    );
    assert_eq!(
        (&sides[1]["side"], &sides[1]["ok"]),
        (&json!(edge_id.to_string()), &json!(true)),
        "{}",
        r.body
    );
    let broken = json!({"source": "this is not lua ("}).to_string();
    assert_eq!(
        call(m, &admin, "POST", reload, Some(&broken)).await.status,
        400
    );
    assert_eq!(
        call(
            m,
            &admin,
            "POST",
            "/api/v1/drivers/nothing.lua/reload",
            Some("")
        )
        .await
        .status,
        404
    );

    // Repository: admins only; the master moves, the edge syncs and reloads.
    let path = format!("/api/v1/edges/{edge_id}/repository");
    let to_b = json!({"op": "reset", "commit": b}).to_string();
    for (k, want) in [(&vera, 403), (&otto, 403)] {
        assert_eq!(call(m, k, "POST", &path, Some(&to_b)).await.status, want);
    }
    assert_eq!(
        call(
            m,
            &admin,
            "POST",
            &path,
            Some(&json!({"op": "reset", "commit": "f".repeat(40)}).to_string())
        )
        .await
        .status,
        400
    );
    assert_eq!(
        call(edge.api_addr, &admin, "POST", &path, Some(&to_b))
            .await
            .status,
        405,
        "an edge does not move repositories"
    );
    let r = call(m, &admin, "POST", &path, Some(&to_b)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["commit"], b, "{}", r.body);
    assert_eq!(r.json()["reloaded"], json!(["room.lua"]), "{}", r.body);
    assert_eq!(git(&repo, &["rev-parse", "HEAD"]), b);
    // The edge runs the new code.
    let r = call(
        m,
        &otto,
        "POST",
        &format!("/api/v1/modules/{room}/exec"),
        Some(&json!({"method": "version"}).to_string()),
    )
    .await;
    assert_eq!(
        (r.status, r.json()["result"].clone()),
        (200, json!(2)),
        "{}",
        r.body
    );
    assert_eq!(
        master.registry.info(edge_id).unwrap().commit.as_deref(),
        Some(b.as_str())
    );

    // Pull: the master moves to its upstream's newest commit.
    std::fs::write(
        origin.join("room.lua"),
        room_text.replace("return M", "function M.version() return 3 end\n\nreturn M"),
    )
    .unwrap();
    git(&origin, &["commit", "-q", "-am", "C"]);
    let c = git(&origin, &["rev-parse", "HEAD"]);
    let pull = json!({"op": "pull"}).to_string();
    assert_eq!(call(m, &otto, "POST", &path, Some(&pull)).await.status, 403);
    let r = call(m, &admin, "POST", &path, Some(&pull)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["commit"], c, "{}", r.body);
    let r = call(
        m,
        &otto,
        "POST",
        &format!("/api/v1/modules/{room}/exec"),
        Some(&json!({"method": "version"}).to_string()),
    )
    .await;
    assert_eq!(
        (r.status, r.json()["result"].clone()),
        (200, json!(3)),
        "{}",
        r.body
    );

    edge.stop().await;
    master.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edge_proxies_or_redirects_calls_on_modules_the_master_controls() {
    let site = Site::new();
    let room_module = device("Room", "room.lua", None);
    let room = room_module.id;
    let Room {
        edge_id,
        secret,
        system,
    } = site
        .one_room(json!({"name": "Lima"}), std::slice::from_ref(&room_module))
        .await;
    let admin = "a".repeat(48);
    let mut config = site.master_config();
    config.admin_key = Some(SecretString::new(admin.clone()));
    let master = outpost::master::start(config).await.unwrap();
    site.seed_replica(edge_id).await;
    let edge_config = site.edge_config(edge_id, &secret, master.link_addr);
    let edge = outpost::edge::start(edge_config.clone()).await.unwrap();
    eventually(10, "the edge to connect", async || {
        master.registry.peer(edge_id).is_some() && edge.control.is_running().await
    })
    .await;
    // The edge runs its room: answered there (and its route is cached).
    let exec = format!("/api/v1/modules/{room}/exec");
    let projectors = json!({"method": "projectors"}).to_string();
    let r = call(edge.api_addr, &admin, "POST", &exec, Some(&projectors)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.header("x-outpost-answered-by"), Some("edge"));

    // The master takes the location over for real: failover is switched
    // on, the edge goes away, and comes back to find the master holding
    // its site (it stands by).
    let loc = format!("/api/v1/edges/{edge_id}");
    let rev = call(master.api_addr, &admin, "GET", &loc, None)
        .await
        .json()["rev"]
        .clone();
    let patch = json!({"failover": true, "failover_timeout_ms": 0, "rev": rev}).to_string();
    let r = call(master.api_addr, &admin, "PATCH", &loc, Some(&patch)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    eventually(10, "the edge's replica to have the change", async || {
        edge.store
            .get(edge_id)
            .await
            .unwrap()
            .is_some_and(|d| d.body.contains("\"failover\":true"))
    })
    .await;
    edge.stop().await;
    eventually(10, "the master to take over", async || {
        master
            .control
            .state(edge_id)
            .is_some_and(|s| s.controller == Side::Master)
    })
    .await;
    let edge = outpost::edge::start(edge_config.clone()).await.unwrap();
    eventually(
        10,
        "the edge to stand by under the master's epoch",
        async || {
            master.registry.peer(edge_id).is_some()
                && edge.control.epoch() == master.control.state(edge_id).unwrap().epoch as u64
        },
    )
    .await;
    let _ = &system;

    // Proxied (the default): the edge's API answers with the master's runtime.
    let body = json!({"method": "power_on"}).to_string();
    let r = call(edge.api_addr, &admin, "POST", &exec, Some(&body)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.header("x-outpost-answered-by"), Some("master"));
    assert_eq!(r.header("x-outpost-controller"), Some("master"));
    assert_eq!(
        master.runtime.status_key(room, "power").unwrap(),
        Some(json!("on"))
    );
    assert_eq!(
        edge.runtime.status_key(room, "power").unwrap(),
        None,
        "the edge's own copy did not run it"
    );
    let r = call(
        edge.api_addr,
        &admin,
        "GET",
        &format!("/api/v1/modules/{room}/status/power"),
        None,
    )
    .await;
    assert_eq!((r.status, r.json()["value"].clone()), (200, json!("on")));
    assert_eq!(r.header("x-outpost-answered-by"), Some("master"));
    edge.stop().await;

    // Redirected: the same call is answered 307 to the master's API.
    let mut redirecting = edge_config;
    redirecting.redirect_to_master = true;
    redirecting.master_api = Some(format!("http://{}/", master.api_addr));
    let edge = outpost::edge::start(redirecting).await.unwrap();
    let r = call(
        edge.api_addr,
        &admin,
        "POST",
        &format!("{exec}?timeout_ms=5000"),
        Some(&body),
    )
    .await;
    assert_eq!(r.status, 307, "{}", r.body);
    assert_eq!(
        r.header("location"),
        Some(format!("http://{}{exec}?timeout_ms=5000", master.api_addr).as_str())
    );
    assert_eq!(r.header("x-outpost-controller"), Some("master"));
    edge.stop().await;
    master.stop().await;
}
