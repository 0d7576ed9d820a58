//! `outpost admin maintenance EDGE on|off` and `PUT
//! /api/v1/edges/{id}/maintenance`: a site in maintenance is not taken over
//! however long its edge is away; out of maintenance, failover applies from
//! the loss as usual. Both are in the site's audit log and its status.

use std::time::Duration;

use outpost::control::Side;
use serde_json::json;

use crate::failover::{TIMEOUT_MS, failover_on, scene, settle};
use crate::http::request;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_site_in_maintenance_is_not_taken_over_until_it_is_out_of_it() {
    let s = scene(failover_on()).await;
    let admin = "m".repeat(48);
    let config = outpost::config::Config {
        admin_key: Some(outpost::config::SecretString::new(admin.clone())),
        ..s.master_config()
    };
    let master = outpost::master::start_with_clock(config, s.clock.clone())
        .await
        .unwrap();
    let id = s.room.edge_id;
    let auth = format!("Bearer {admin}");
    let call = async |method: &str, path: &str, body: Option<&str>| {
        request(
            master.api_addr,
            method,
            path,
            &[("Authorization", &auth)],
            body,
        )
        .await
    };
    let edge = s.edge(&master).await;
    s.wait_controller(&master, Side::Edge, 1).await;

    // The command line asks the running master.
    let key_file = s.site.path().join("admin.key");
    std::fs::write(&key_file, &admin).unwrap();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_outpost"))
        .args(["admin", "maintenance", &id.to_string(), "on", "--api"])
        .arg(format!("http://{}", master.api_addr))
        .arg("--key-file")
        .arg(&key_file)
        .env_clear()
        .current_dir(s.site.path())
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("in maintenance"), "{stdout}");
    let sites = call("GET", "/api/v1/sites", None).await.json();
    assert_eq!(sites[0]["maintenance_since_ms"], json!(s.clock.now_ms()));

    // The edge goes away for its servicing: no takeover, however long.
    edge.stop().await;
    crate::roles::eventually(10, "the master to see the edge gone", async || {
        master.control.absent_since(id).is_some()
    })
    .await;
    s.clock.advance(Duration::from_millis(3 * TIMEOUT_MS));
    settle().await;
    assert!(master.control.takeover_due(id).is_none());
    assert_eq!(s.state(&master).await.controller, Side::Edge);
    assert_eq!(s.sim.connections(), 0);

    // Out of maintenance: the loss is older than the timeout, so the
    // takeover is due at once.
    let path = format!("/api/v1/edges/{id}/maintenance");
    let r = call("PUT", &path, Some(r#"{"on":false}"#)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["maintenance"], json!(false));
    s.wait_controller(&master, Side::Master, 2).await;
    s.wait_connections(1).await;
    let sites = call("GET", "/api/v1/sites", None).await.json();
    assert_eq!(sites[0]["maintenance_since_ms"], json!(null));

    let audit = call("GET", &format!("/api/v1/edges/{id}/audit"), None)
        .await
        .json();
    let actions: Vec<&str> = audit
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["action"].as_str().unwrap())
        .collect();
    // The edge's graceful stop for its servicing is in the log too.
    assert_eq!(
        actions,
        ["maintenance_off", "planned_stop", "maintenance_on"]
    );
    assert!(audit[0]["by"].is_string(), "{audit}");
    master.stop().await;
}
