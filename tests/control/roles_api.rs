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
    site.seed_replica(edge_id).await;
    let edge = outpost::edge::start(site.edge_config(edge_id, &secret, master.link_addr))
        .await
        .unwrap();
    eventually(10, "the edge to connect", async || {
        master.registry.peer(edge_id).is_some()
    })
    .await;
    eventually(10, "the projector to connect", async || {
        sim.connections() == 1
    })
    .await;

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
