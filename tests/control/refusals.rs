//! An edge the master refuses: with a wrong secret it says why at ERROR and
//! runs its site (a credentials mistake never darkens a site); with its
//! location deleted at the master that serves its store, it stands down
//! and stays dark.

use std::time::Duration;

use outpost::sim::{PjlinkOptions, PjlinkSim};
use serde_json::json;

use crate::http::request;
use crate::roles::{EdgeProcess, Room, Site, device, eventually};

/// A site `name` whose one room drives a simulated projector.
async fn projector_room(site: &Site, name: &str) -> (PjlinkSim, Room) {
    let sim = PjlinkSim::start("127.0.0.1:0".parse().unwrap(), PjlinkOptions::default())
        .await
        .unwrap();
    let room = site
        .one_room(
            json!({"name": name}),
            &[device("Projector", "pjlink.lua", Some(sim.addr()))],
        )
        .await;
    (sim, room)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edge_with_a_wrong_secret_says_why_and_runs_its_site() {
    let site = Site::new();
    let (sim, room) = projector_room(&site, "Sydney").await;
    site.seed_replica(room.edge_id).await;
    let admin = "a".repeat(48);
    let mut config = site.master_config();
    config.admin_key = Some(outpost::config::SecretString::new(admin.clone()));
    let master = outpost::master::start(config).await.unwrap();
    let wrong = outpost::secret::EdgeSecret::generate();
    let edge =
        EdgeProcess::spawn(&site.edge_config(room.edge_id, wrong.expose(), master.link_addr));
    eventually(20, "the edge runs its site on its own", async || {
        sim.connections() == 1
    })
    .await;
    let log = edge.log_text();
    let refusal = log
        .lines()
        .find(|l| l.contains("the master refused this edge"))
        .unwrap_or_else(|| panic!("no refusal in the edge's log:\n{log}"));
    assert!(refusal.contains("ERROR"), "{refusal}");
    assert!(refusal.contains("wrong edge proof"), "{refusal}");
    // The master shows why the site is lost although its edge is alive.
    let auth = format!("Bearer {admin}");
    let path = format!("/api/v1/edges/{}/status", room.edge_id);
    let status = request(
        master.api_addr,
        "GET",
        &path,
        &[("Authorization", &auth)],
        None,
    )
    .await;
    let refusals = &status.json()["refusals"];
    assert!(refusals["count"].as_u64() >= Some(1), "{}", status.body);
    assert!(
        refusals["last_reason"]
            .as_str()
            .is_some_and(|r| r.contains("wrong edge proof")),
        "{}",
        status.body
    );
    assert!(refusals["last_at_ms"].as_i64() > Some(0), "{}", status.body);
    edge.kill().await;
    master.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edge_that_cannot_verify_the_master_names_its_certificate_and_runs_its_site() {
    let site = Site::new();
    let other = Site::new(); // another development CA
    let (sim, room) = projector_room(&site, "Sydney").await;
    site.seed_replica(room.edge_id).await;
    let master = outpost::master::start(site.master_config()).await.unwrap();
    let mut config = site.edge_config(room.edge_id, &room.secret, master.link_addr);
    config.ca_cert = other.path().join("certs").join("ca.pem");
    let edge = EdgeProcess::spawn(&config);
    eventually(20, "the edge runs its site on its own", async || {
        sim.connections() == 1
    })
    .await;
    let log = edge.log_text();
    let refusal = log
        .lines()
        .find(|l| l.contains("could not be verified"))
        .unwrap_or_else(|| panic!("no verification failure in the edge's log:\n{log}"));
    assert!(refusal.contains("ERROR"), "{refusal}");
    assert!(refusal.contains("CN=Outpost master"), "{refusal}");
    assert!(refusal.contains("CN=Outpost development CA"), "{refusal}");
    edge.kill().await;
    master.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edge_whose_location_was_deleted_stands_down() {
    let site = Site::new();
    let (sim, room) = projector_room(&site, "Sydney").await;
    let admin = "a".repeat(48);
    let mut config = site.master_config();
    config.admin_key = Some(outpost::config::SecretString::new(admin.clone()));
    let master = outpost::master::start(config).await.unwrap();
    let edge_config = site.edge_config(room.edge_id, &room.secret, master.link_addr);
    let edge = EdgeProcess::spawn(&edge_config);
    eventually(20, "the edge drives its projector", async || {
        sim.connections() == 1
    })
    .await;
    // Powered off while the location is deleted: its replica still holds
    // the site, so only the master's word keeps it dark.
    edge.kill().await;
    let auth = format!("Bearer {admin}");
    for path in [
        format!("/api/v1/systems/{}", room.system.id),
        format!("/api/v1/edges/{}", room.edge_id),
    ] {
        let r = request(
            master.api_addr,
            "DELETE",
            &path,
            &[("Authorization", &auth), ("If-Match", "\"1\"")],
            None,
        )
        .await;
        assert!(
            r.status == 200 || r.status == 204,
            "{path}: {} {}",
            r.status,
            r.body
        );
    }
    let connections_before = sim.total_connections();
    let edge = EdgeProcess::spawn(&edge_config);
    eventually(20, "the edge says its location was deleted", async || {
        edge.log_text().contains("location was deleted")
    })
    .await;
    // Past the dead interval and a reconnect, when an edge refused for any
    // other reason runs its site on its own.
    tokio::time::sleep(Duration::from_millis(
        edge_config.dead_after_ms + 2 * edge_config.reconnect_ms,
    ))
    .await;
    assert_eq!(
        sim.total_connections(),
        connections_before,
        "the decommissioned edge drove its projector"
    );
    edge.kill().await;
    master.stop().await;
}

/// A connection that the network closes in the middle of the TLS handshake
/// is an outage, not a refusal: the edge runs its site and says nothing at
/// ERROR (a cut once read as "the master refused this edge").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_cut_during_tls_is_an_outage_not_a_refusal() {
    let site = Site::new();
    let (sim, room) = projector_room(&site, "Perth").await;
    site.seed_replica(room.edge_id).await;
    let master = outpost::master::start(site.master_config()).await.unwrap();
    let proxy = crate::proxy::Proxy::start(master.link_addr).await;
    proxy.cut();
    let edge = EdgeProcess::spawn(&site.edge_config(room.edge_id, &room.secret, proxy.addr()));
    eventually(20, "the edge runs its site on its own", async || {
        sim.connections() == 1
    })
    .await;
    eventually(20, "the edge tried the master more than once", async || {
        proxy.accepted() >= 2
    })
    .await;
    let log = edge.log_text();
    assert!(
        !log.contains("the master refused this edge"),
        "a cut is not a refusal:\n{log}"
    );
    edge.kill().await;
    master.stop().await;
}
