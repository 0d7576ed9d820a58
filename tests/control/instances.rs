//! One process per database, and nothing driven before the listeners are
//! bound: a second master on the same SQLite database, or one whose port is
//! taken, fails at start with a clear error and never touches a device.
//! Two edge processes with one id never drive their site together.

use std::time::Duration;

use outpost::sim::{PjlinkOptions, PjlinkSim};

use crate::http::request;
use crate::roles::{EdgeProcess, Site, device, eventually};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_master_on_one_database_or_one_port_drives_nothing() {
    let site = Site::new();
    let sim = PjlinkSim::start("127.0.0.1:0".parse().unwrap(), PjlinkOptions::default())
        .await
        .unwrap();
    let config = site.master_config();
    site.master_room(
        &config,
        &[device("Projector", "pjlink.lua", Some(sim.addr()))],
    )
    .await;
    let first = outpost::master::start(config.clone()).await.unwrap();
    eventually(
        10,
        "the first master connects to the projector",
        async || sim.total_connections() == 1,
    )
    .await;

    // The same database, other ports.
    let err = outpost::master::start(config.clone())
        .await
        .err()
        .expect("a second master on the same database must not start");
    let text = err.to_string();
    assert!(
        text.contains("another outpost process already runs on"),
        "{text}"
    );
    assert!(text.contains("store.db.lock"), "{text}");

    // Another database with the same room, but the first master's API port.
    let mut other = site.master_config();
    other.data_dir = site.path().join("other");
    other.database_url = Some(format!(
        "sqlite://{}",
        other.data_dir.join("store.db").display()
    ));
    other.api_addr = first.api_addr;
    site.master_room(
        &other,
        &[device("Projector", "pjlink.lua", Some(sim.addr()))],
    )
    .await;
    let err = outpost::master::start(other.clone())
        .await
        .err()
        .expect("a master whose API port is taken must not start");
    assert!(err.to_string().contains("cannot listen"), "{err}");

    // Neither failed start reached the device. (A start that drove it
    // before failing would have connected by now: the first one did within
    // this test's boot wait of 50 ms.)
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        sim.total_connections(),
        1,
        "only the first master drives the projector"
    );

    // Stopped, the first master releases the database to the next one.
    first.stop().await;
    let next = outpost::master::start(config).await.unwrap();
    next.stop().await;
}

/// Two edge processes with one id and the correct secret (a cloned box, a
/// forgotten test install): from the first replacement on, exactly one of
/// them drives the projector, the older one says why at ERROR, and the
/// master shows the duplicate in status and metrics.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_edge_processes_with_one_id_never_drive_the_site_together() {
    let site = Site::new();
    let sim = PjlinkSim::start("127.0.0.1:0".parse().unwrap(), PjlinkOptions::default())
        .await
        .unwrap();
    let room = site
        .one_room(
            serde_json::json!({"name": "Sydney"}),
            &[device("Projector", "pjlink.lua", Some(sim.addr()))],
        )
        .await;
    let admin = "a".repeat(48);
    let mut config = site.master_config();
    config.admin_key = Some(outpost::config::SecretString::new(admin.clone()));
    let master = outpost::master::start(config).await.unwrap();
    let first_config = site.edge_config(room.edge_id, &room.secret, master.link_addr);
    let first = EdgeProcess::spawn(&first_config);
    eventually(20, "the first edge drives the projector", async || {
        sim.connections() == 1
    })
    .await;

    sim.reset_max_connections();
    let mut second_config = first_config.clone();
    second_config.data_dir = site.path().join("second-edge");
    second_config.database_url = Some(format!(
        "sqlite://{}",
        second_config.data_dir.join("store.db").display()
    ));
    let second = EdgeProcess::spawn(&second_config);
    let auth = format!("Bearer {admin}");
    let status_path = format!("/api/v1/edges/{}/status", room.edge_id);
    eventually(20, "the master records the duplicate", async || {
        let r = request(
            master.api_addr,
            "GET",
            &status_path,
            &[("Authorization", &auth)],
            None,
        )
        .await;
        r.json()["duplicate_sessions"]["count"].as_u64() >= Some(1)
    })
    .await;
    eventually(20, "the first edge says why it stands by", async || {
        first
            .log_text()
            .contains("another process with this edge's id and secret connected to the master")
    })
    .await;
    eventually(20, "the second edge drives the projector", async || {
        second.log_text().contains("device connected") && sim.connections() == 1
    })
    .await;
    let metrics = request(master.api_addr, "GET", "/metrics", &[], None)
        .await
        .body;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("outpost_edge_duplicate_sessions_total") && !l.ends_with(" 0")),
        "{metrics}"
    );
    assert_eq!(
        sim.max_connections_seen(),
        1,
        "the two processes drove the projector at the same time"
    );
    let audit_path = format!("/api/v1/edges/{}/audit", room.edge_id);
    eventually(20, "the duplicate is in the site's audit log", async || {
        let r = request(
            master.api_addr,
            "GET",
            &audit_path,
            &[("Authorization", &auth)],
            None,
        )
        .await;
        r.json()
            .as_array()
            .is_some_and(|a| a.iter().any(|e| e["action"] == "duplicate_session"))
    })
    .await;
    second.kill().await;
    first.kill().await;
    master.stop().await;
}
