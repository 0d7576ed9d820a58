//! One process per database, and nothing driven before the listeners are
//! bound: a second master on the same SQLite database, or one whose port is
//! taken, fails at start with a clear error and never touches a device.

use std::time::Duration;

use outpost::sim::{PjlinkOptions, PjlinkSim};

use crate::roles::{Site, device, eventually};

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
