//! The web API routes device operations to whoever runs the module: the
//! master's API proxies to the edge over the link; the edge's API answers
//! its own modules; an unreachable edge is a 503 naming the location.

use std::time::Duration;

use outpost::config::SecretString;
use outpost::sim::{PjlinkOptions, PjlinkSim, Power};
use serde_json::json;

use crate::http::request;
use crate::roles::{Room, Site, device, eventually};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_through_the_master_api_reaches_the_edge_controlled_projector() {
    let site = Site::new();
    let sim = PjlinkSim::start(
        "127.0.0.1:0".parse().unwrap(),
        PjlinkOptions {
            warmup: Duration::from_millis(200),
            ..PjlinkOptions::default()
        },
    )
    .await
    .unwrap();
    let projector_module = device("Projector", "pjlink.lua", Some(sim.addr()));
    let projector = projector_module.id;
    let Room {
        edge_id,
        system,
        secret,
    } = site
        .one_room(
            json!({"name": "Sydney", "admins": ["otto"]}),
            &[projector_module],
        )
        .await;
    let room = system.id;

    let admin = "a".repeat(48);
    let mut config = site.master_config();
    config.admin_key = Some(SecretString::new(admin.clone()));
    let master = outpost::master::start(config).await.unwrap();
    // Keys replicate to the edge with the documents.
    let call = |addr,
                key: Option<String>,
                method: &'static str,
                path: String,
                body: Option<String>| async move {
        let auth = key.map(|k| format!("Bearer {k}"));
        let headers: Vec<(&str, &str)> =
            auth.iter().map(|a| ("Authorization", a.as_str())).collect();
        request(addr, method, &path, &headers, body.as_deref()).await
    };
    let m = master.api_addr;
    let mk_key = |user: &'static str, role: &'static str| {
        let admin = admin.clone();
        async move {
            let r = call(
                m,
                Some(admin),
                "POST",
                "/api/v1/keys".into(),
                Some(json!({"name": user, "user": user, "role": role}).to_string()),
            )
            .await;
            assert_eq!(r.status, 201, "{}", r.body);
            r.json()["key"].as_str().unwrap().to_owned()
        }
    };
    let otto = mk_key("otto", "operator").await;
    let eve = mk_key("eve", "operator").await;
    let vera = mk_key("vera", "viewer").await;
    // The edge never connected (and the location has no failover): no
    // controller was ever decided.
    let r = call(
        m,
        Some(vera.clone()),
        "GET",
        format!("/api/v1/edges/{edge_id}/status"),
        None,
    )
    .await;
    assert_eq!(
        (
            r.json()["connected"].as_bool(),
            r.json()["controller"].as_str(),
            r.json()["epoch"].as_i64()
        ),
        (Some(false), Some("none"), Some(0)),
        "{}",
        r.body
    );
    let r = call(m, Some(vera.clone()), "GET", "/api/v1/sites".into(), None).await;
    assert_eq!(r.json()[0]["controller"], "none", "{}", r.body);
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
    // The edge, asked about itself, says it is linked.
    eventually(10, "the edge's own status to say connected", async || {
        let r = call(
            edge.api_addr,
            Some(vera.clone()),
            "GET",
            format!("/api/v1/edges/{edge_id}/status"),
            None,
        )
        .await;
        r.status == 200 && r.json()["connected"] == true && r.json()["controller"] == "edge"
    })
    .await;

    check_metrics(m).await;

    let exec_path = format!("/api/v1/modules/{projector}/exec");
    let power_on = Some(json!({"method": "power", "args": true}).to_string());
    // Who may operate this location: its admins' operators and admins.
    for (key, want) in [(&vera, 403), (&eve, 403)] {
        let r = call(
            m,
            Some(key.clone()),
            "POST",
            exec_path.clone(),
            power_on.clone(),
        )
        .await;
        assert_eq!(r.status, want, "{}", r.body);
    }
    assert_eq!(
        call(m, None, "POST", exec_path.clone(), power_on.clone())
            .await
            .status,
        401
    );
    let r = call(
        m,
        Some(otto.clone()),
        "POST",
        exec_path.clone(),
        power_on.clone(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.header("x-outpost-answered-by"), Some("edge"));
    assert_eq!(r.header("x-outpost-controller"), Some("edge"));
    assert!(
        matches!(r.json()["result"].as_str(), Some("on" | "warming")),
        "{}",
        r.body
    );
    eventually(10, "the projector to be on", async || {
        sim.power() == Power::On
    })
    .await;

    // Status through the master, and from the edge's own API (answered locally).
    let status_path = format!("/api/v1/modules/{projector}/status/power");
    eventually(10, "the status to say on", async || {
        let r = call(m, Some(vera.clone()), "GET", status_path.clone(), None).await;
        r.status == 200 && r.json()["value"] == "on"
    })
    .await;
    let r = call(
        edge.api_addr,
        Some(vera.clone()),
        "GET",
        format!("/api/v1/modules/{projector}/status"),
        None,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.header("x-outpost-answered-by"), Some("edge"));
    assert_eq!(r.json()["power"], "on");

    // Driver errors and unknown methods are typed.
    let r = call(
        m,
        Some(otto.clone()),
        "POST",
        exec_path.clone(),
        Some(json!({"method": "power", "args": "sideways"}).to_string()),
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.body);
    let r = call(
        m,
        Some(otto.clone()),
        "POST",
        exec_path.clone(),
        Some(json!({"method": "warp"}).to_string()),
    )
    .await;
    assert_eq!(r.status, 404, "{}", r.body);

    // Stop and start the room through the master's API.
    let r = call(
        m,
        Some(otto.clone()),
        "POST",
        format!("/api/v1/systems/{room}/stop"),
        Some(String::new()),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    eventually(10, "the projector connection to close", async || {
        sim.connections() == 0
    })
    .await;
    let r = call(
        m,
        Some(otto.clone()),
        "POST",
        format!("/api/v1/systems/{room}/start"),
        Some(String::new()),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    eventually(10, "the projector to reconnect", async || {
        sim.connections() == 1
    })
    .await;

    let r = call(
        m,
        Some(vera.clone()),
        "GET",
        format!("/api/v1/edges/{edge_id}/status"),
        None,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        (
            r.json()["connected"].as_bool(),
            r.json()["controller"].as_str()
        ),
        (Some(true), Some("edge"))
    );
    let r = call(
        m,
        Some(vera.clone()),
        "GET",
        format!("/api/v1/edges/{edge_id}/control-log"),
        None,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    // The first negotiation gave the site its first controller: the edge.
    let log = r.json();
    let log = log.as_array().unwrap();
    assert_eq!(log.len(), 1, "{log:?}");
    assert_eq!(
        (
            log[0]["epoch"].as_i64(),
            log[0]["from"].is_null(),
            log[0]["to"].as_str()
        ),
        (Some(1), true, Some("edge"))
    );

    // The edge goes away: the master says who controls the site.
    edge.stop().await;
    eventually(10, "the master to see the link lost", async || {
        master.registry.peer(edge_id).is_none()
    })
    .await;
    let r = call(
        m,
        Some(otto.clone()),
        "POST",
        exec_path.clone(),
        power_on.clone(),
    )
    .await;
    assert_eq!(r.status, 503, "{}", r.body);
    assert!(
        r.json()["error"].as_str().unwrap().contains("Sydney"),
        "{}",
        r.body
    );
    let r = call(
        m,
        Some(vera.clone()),
        "GET",
        format!("/api/v1/edges/{edge_id}/status"),
        None,
    )
    .await;
    assert_eq!(r.json()["connected"], false);
    master.stop().await;
    sim.shutdown().await;
}

/// `POST /api/v1/edges/{id}/restore` and `outpost admin restore`: a site the
/// master took over at boot goes back to its edge on an operator's word,
/// with the role rules of the location.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_restores_a_site_over_the_api_and_from_the_command_line() {
    let site = Site::new();
    let sim = PjlinkSim::start("127.0.0.1:0".parse().unwrap(), PjlinkOptions::default())
        .await
        .unwrap();
    let Room {
        edge_id, secret, ..
    } = site
        .one_room(
            json!({"name": "Oslo", "admins": ["otto"], "failover": true, "failover_timeout_ms": 0}),
            &[device("Projector", "pjlink.lua", Some(sim.addr()))],
        )
        .await;
    site.seed_replica(edge_id).await;
    let admin = "a".repeat(48);
    let mut config = site.master_config();
    config.admin_key = Some(SecretString::new(admin.clone()));
    let master = outpost::master::start(config.clone()).await.unwrap();
    // The edge was not there at boot: the master holds the site.
    eventually(10, "the master to drive the projector", async || {
        sim.connections() == 1
    })
    .await;
    let m = master.api_addr;
    let call = |key: Option<&str>, method: &'static str, path: String| {
        let auth = key.map(|k| format!("Bearer {k}"));
        async move {
            let headers: Vec<(&str, &str)> =
                auth.iter().map(|a| ("Authorization", a.as_str())).collect();
            request(m, method, &path, &headers, Some("")).await
        }
    };
    let mut keys = Vec::new();
    for (user, role) in [
        ("otto", "operator"),
        ("eve", "operator"),
        ("vera", "viewer"),
    ] {
        let r = request(
            m,
            "POST",
            "/api/v1/keys",
            &[("Authorization", &format!("Bearer {admin}"))],
            Some(&json!({"name": user, "user": user, "role": role}).to_string()),
        )
        .await;
        assert_eq!(r.status, 201, "{}", r.body);
        keys.push(r.json()["key"].as_str().unwrap().to_owned());
    }
    let (otto, eve, vera) = (&keys[0], &keys[1], &keys[2]);
    let restore = format!("/api/v1/edges/{edge_id}/restore");

    // Not connected yet: nothing to hand the site to.
    let r = call(Some(otto), "POST", restore.clone()).await;
    assert_eq!(r.status, 409, "{}", r.body);
    assert!(r.body.contains("not connected"), "{}", r.body);

    let edge = outpost::edge::start(site.edge_config(edge_id, &secret, master.link_addr))
        .await
        .unwrap();
    eventually(10, "the edge to connect", async || {
        master.registry.peer(edge_id).is_some()
    })
    .await;
    assert_eq!(call(None, "POST", restore.clone()).await.status, 401);
    assert_eq!(
        call(Some("nope"), "POST", restore.clone()).await.status,
        401
    );
    for key in [eve, vera] {
        assert_eq!(call(Some(key), "POST", restore.clone()).await.status, 403);
    }
    let missing = format!("/api/v1/edges/{}/restore", uuid::Uuid::now_v7());
    assert_eq!(call(Some(&admin), "POST", missing).await.status, 404);

    // The command line asks the running master, with the operator's key.
    sim.reset_max_connections();
    let key_file = site.path().join("otto.key");
    std::fs::write(&key_file, otto).unwrap();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_outpost"))
        .args(["admin", "restore", &edge_id.to_string(), "--api"])
        .arg(format!("http://{m}"))
        .arg("--key-file")
        .arg(&key_file)
        .env_clear()
        .env("OUTPOST_DATA_DIR", site.path().join("master"))
        .current_dir(site.path())
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stdout} {stderr}");
    assert!(
        stdout.contains("restored") && stdout.contains("epoch 2"),
        "{stdout}"
    );
    eventually(10, "the edge to drive the projector", async || {
        sim.connections() == 1 && edge.control.is_running().await
    })
    .await;
    assert_eq!(sim.max_connections_seen(), 1, "the restore overlapped");
    let log = master.store.control_log(edge_id, None, 10).await.unwrap();
    assert_eq!(
        log.iter().map(|r| r.reason.as_str()).collect::<Vec<_>>(),
        ["manual_restore", "boot"]
    );
    // The audit log names who restored the site: the key's user.
    assert_eq!(log[0].by.as_deref(), Some("otto"));
    assert_eq!(log[1].by, None);
    let r = call(
        Some(vera),
        "GET",
        format!("/api/v1/edges/{edge_id}/control-log"),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()[0]["by"], "otto", "{}", r.body);
    assert!(r.json()[1].get("by").is_none(), "{}", r.body);

    // Said again: the edge already controls the site (409 over the API,
    // exit status 1 and the reason from the command line).
    let r = call(Some(otto), "POST", restore.clone()).await;
    assert_eq!(r.status, 409, "{}", r.body);
    assert!(r.body.contains("already controls"), "{}", r.body);
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_outpost"))
        .args(["admin", "restore", &edge_id.to_string(), "--api"])
        .arg(format!("http://{m}"))
        .env_clear()
        .env("OUTPOST_ADMIN_KEY", &admin)
        .current_dir(site.path())
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("409") && stderr.contains("already controls"),
        "{stderr}"
    );
    edge.stop().await;
    master.stop().await;
    sim.shutdown().await;
}

/// The master's `/metrics` with an edge connected: every family described,
/// the build's identity, `outpost_control_changes_total` always with both
/// labels, and `promtool check metrics` content (skipped, loudly, without
/// promtool: Debian's `prometheus` package; .ci/run installs it).
async fn check_metrics(master: std::net::SocketAddr) {
    let text = request(master, "GET", "/metrics", &[], None).await.body;
    for family in text.lines().filter_map(|l| l.strip_prefix("# TYPE ")) {
        let name = family.split(' ').next().unwrap();
        assert!(
            text.contains(&format!("# HELP {name} ")),
            "{name} has no HELP: {text}"
        );
    }
    for needed in [
        "outpost_build_info{",
        "outpost_ws_dropped_total",
        "outpost_edges_connected 1",
        "outpost_control_changes_total{",
    ] {
        assert!(text.contains(needed), "{needed} missing: {text}");
    }
    for line in text
        .lines()
        .filter(|l| l.starts_with("outpost_control_changes_total"))
    {
        assert!(
            line.contains("to=\"") && line.contains("reason=\""),
            "{line}"
        );
    }
    let promtool = std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .map(|d| d.join("promtool"))
        .find(|p| p.is_file());
    let Some(promtool) = promtool else {
        assert!(
            std::env::var_os("CI").is_none(),
            "promtool is not installed, and under CI a skip is a failure"
        );
        eprintln!(
            "\n********\nSKIPPED: promtool check metrics: `promtool` is not installed (apt-get install prometheus; .ci/run installs it)\n********\n"
        );
        return;
    };
    let mut child = tokio::process::Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use tokio::io::AsyncWriteExt as _;
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(text.as_bytes()).await.unwrap();
    drop(stdin);
    let out = child.wait_with_output().await.unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
