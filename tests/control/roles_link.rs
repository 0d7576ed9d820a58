//! A master and an edge over real TLS: every request kind of the link
//! reaches the edge's module runtime, which drives a PJLink simulator.

use std::time::Duration;

use outpost::proto::{EventBody, RequestBody, ResponseBody, WireError};
use outpost::sim::{PjlinkOptions, PjlinkSim, Power};
use serde_json::json;
use uuid::Uuid;

use crate::roles::{Room, Site, device, eventually};

const CALL: Duration = Duration::from_secs(10);

/// Writes a system's `stopped` field, as `POST /systems/{id}/stop` does.
async fn set_stopped(store: &outpost::store::Store, id: Uuid, stopped: bool) {
    use outpost::store::{Expect, Write};
    let doc = store.get(id).await.unwrap().unwrap();
    let mut system: outpost::model::ControlSystem = doc.parse().unwrap();
    system.stopped = stopped;
    store
        .apply(&[Write::put(&system, Expect::Rev(doc.rev))])
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn master_drives_an_edge_module_over_the_link() {
    let site = Site::new();
    let sim = PjlinkSim::start(
        "127.0.0.1:0".parse().unwrap(),
        PjlinkOptions {
            warmup: Duration::from_millis(300),
            cooldown: Duration::from_millis(300),
            ..PjlinkOptions::default()
        },
    )
    .await
    .unwrap();

    // One edge location with one room and its projector.
    let projector_module = device("Projector", "pjlink.lua", Some(sim.addr()));
    let projector = projector_module.id;
    let Room {
        edge_id,
        system,
        secret,
    } = site.one_room(json!({}), &[projector_module]).await;
    let room = system.id;
    site.seed_replica(edge_id).await;

    let master = outpost::master::start(site.master_config()).await.unwrap();
    assert_eq!(
        master.missing_at_boot,
        vec![edge_id],
        "the edge was not running during the boot wait"
    );
    assert_eq!(
        sim.connections(),
        0,
        "the master does not run an edge's modules"
    );
    let edge = outpost::edge::start(site.edge_config(edge_id, &secret, master.link_addr))
        .await
        .unwrap();

    eventually(10, "the edge to connect", async || {
        master.registry.peer(edge_id).is_some() && edge.control.is_running().await
    })
    .await;
    eventually(10, "the edge's projector to connect", async || {
        sim.connections() == 1
    })
    .await;
    let peer = master.registry.peer(edge_id).unwrap();
    let module = projector.to_string();

    // exec into the edge's runtime, which talks PJLink to the simulator.
    let answer = peer
        .request(
            RequestBody::Exec {
                module: module.clone(),
                method: "power".into(),
                args: json!(true),
                epoch: None,
            },
            CALL,
        )
        .await
        .unwrap();
    assert!(
        matches!(&answer, ResponseBody::Value { value } if value == "on" || value == "warming"),
        "{answer:?}"
    );
    eventually(10, "the projector to warm up", async || {
        sim.power() == Power::On
    })
    .await;

    // status: all, and one key.
    match peer
        .request(
            RequestBody::Status {
                module: module.clone(),
                key: None,
            },
            CALL,
        )
        .await
        .unwrap()
    {
        ResponseBody::Status { values } => assert!(values.contains_key("power"), "{values:?}"),
        other => panic!("{other:?}"),
    }
    // The driver polls the warm-up; its status catches up with the device.
    eventually(10, "the driver to report power on", async || {
        let power = peer
            .request(
                RequestBody::Status {
                    module: module.clone(),
                    key: Some("power".into()),
                },
                CALL,
            )
            .await
            .unwrap();
        power == ResponseBody::Value { value: json!("on") }
    })
    .await;

    // Typed errors, never a disconnect.
    let err = peer
        .request(
            RequestBody::Exec {
                module: module.clone(),
                method: "self_destruct".into(),
                args: json!(null),
                epoch: None,
            },
            CALL,
        )
        .await
        .unwrap_err();
    assert!(
        matches!(
            &err,
            outpost::link::CallError::Remote(WireError::NotFound { .. })
        ),
        "{err:?}"
    );
    let err = peer
        .request(
            RequestBody::Exec {
                module: "nope".into(),
                method: "power".into(),
                args: json!(true),
                epoch: None,
            },
            CALL,
        )
        .await
        .unwrap_err();
    assert!(
        matches!(
            &err,
            outpost::link::CallError::Remote(WireError::BadRequest { .. })
        ),
        "{err:?}"
    );

    // Debug proxy: lines flow back as events until unsubscribed.
    let mut events = master.edge_events.subscribe();
    peer.request(
        RequestBody::DebugSubscribe {
            module: module.clone(),
        },
        CALL,
    )
    .await
    .unwrap();
    peer.request(
        RequestBody::Exec {
            module: module.clone(),
            method: "lamp".into(),
            args: json!(null),
            epoch: None,
        },
        CALL,
    )
    .await
    .unwrap();
    let (from, line) = tokio::time::timeout(CALL, events.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(from, edge_id);
    assert!(
        matches!(&line, EventBody::Debug { module: m, .. } if *m == module),
        "{line:?}"
    );
    peer.request(
        RequestBody::DebugUnsubscribe {
            module: module.clone(),
        },
        CALL,
    )
    .await
    .unwrap();

    // Live reload from the edge's modules directory keeps the device connection.
    let before = sim.total_connections();
    match peer
        .request(
            RequestBody::ReloadDriver {
                name: "pjlink.lua".into(),
                source: None,
            },
            CALL,
        )
        .await
        .unwrap()
    {
        ResponseBody::Reloaded { drivers } => assert_eq!(drivers, vec!["pjlink.lua"]),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        sim.total_connections(),
        before,
        "the device connection survived the reload"
    );

    // Stop and start the system: its `stopped` field, written at the
    // master, reaches the edge through its replica. The link's requests
    // make the edge follow its replica at once; expire its cache too.
    set_stopped(&master.store, room, true).await;
    eventually(10, "the projector connection to close", async || {
        sim.connections() == 0
    })
    .await;
    peer.request(
        RequestBody::StopSystem {
            system: room,
            epoch: None,
        },
        CALL,
    )
    .await
    .unwrap();
    set_stopped(&master.store, room, false).await;
    eventually(10, "the projector to reconnect", async || {
        sim.connections() == 1
    })
    .await;
    peer.request(
        RequestBody::StartSystem {
            system: room,
            epoch: None,
        },
        CALL,
    )
    .await
    .unwrap();
    peer.request(RequestBody::ExpireSystemCache { system: room }, CALL)
        .await
        .unwrap();
    let err = peer
        .request(
            RequestBody::StartSystem {
                system: Uuid::nil(),
                epoch: None,
            },
            CALL,
        )
        .await
        .unwrap_err();
    assert!(
        matches!(
            &err,
            outpost::link::CallError::Remote(WireError::NotFound { .. })
        ),
        "{err:?}"
    );

    // A graceful stop of the edge releases the device.
    edge.stop().await;
    eventually(10, "the edge to release the projector", async || {
        sim.connections() == 0
    })
    .await;
    eventually(10, "the master to see the link lost", async || {
        master.registry.peer(edge_id).is_none()
    })
    .await;
    master.stop().await;
    sim.shutdown().await;
}
