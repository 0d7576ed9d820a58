//! Replication over the real link: a fresh edge receives its snapshot and
//! starts its site; a change committed at the master reaches it at once; an
//! edge that was offline catches up to exactly the master's documents.

use std::time::Duration;

use outpost::model::Kind;
use outpost::sim::{LineOptions, LineSim, PjlinkOptions, PjlinkSim};
use outpost::store::{Document, Expect, Store, StoreOptions, Write};
use serde_json::json;

use crate::roles::{Room, Site, device, eventually};

async fn all(store: &Store) -> Vec<Document> {
    let mut docs = Vec::new();
    for kind in Kind::ALL {
        docs.extend(store.list_all(kind).await.unwrap());
    }
    docs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_edge_gets_its_data_and_follows_the_master() {
    let site = Site::new();
    let projector_sim = PjlinkSim::start("127.0.0.1:0".parse().unwrap(), PjlinkOptions::default())
        .await
        .unwrap();
    let line_sim = LineSim::start("127.0.0.1:0".parse().unwrap(), LineOptions::default())
        .await
        .unwrap();
    let projector = device("Projector", "pjlink.lua", Some(projector_sim.addr()));
    let Room {
        edge_id,
        system: mut room,
        secret,
    } = site
        .one_room(json!({}), std::slice::from_ref(&projector))
        .await;

    let master = outpost::master::start(site.master_config()).await.unwrap();
    let edge_config = site.edge_config(edge_id, &secret, master.link_addr);
    // No replica: the edge starts empty and waits for its first sync.
    let edge = outpost::edge::start(edge_config.clone()).await.unwrap();
    eventually(
        10,
        "the snapshot to start the edge's projector",
        async || projector_sim.connections() == 1,
    )
    .await;
    assert_eq!(
        all(&edge.store).await,
        all(&master.store).await,
        "the snapshot is the master's data"
    );

    // A change committed at the master reaches the running edge: a new
    // device joins the room.
    let display = device("Display", "line.lua", Some(line_sim.addr()));
    room.module_ids.push(display.id);
    master
        .store
        .apply(&[
            Write::put(&display, Expect::Absent),
            Write::put(&room, Expect::Rev(1)),
        ])
        .await
        .unwrap();
    eventually(10, "the new display to connect from the edge", async || {
        line_sim.connections() == 1
    })
    .await;
    assert_eq!(
        master.runtime.modules().len(),
        0,
        "the master runs none of the edge's modules"
    );

    // Offline while the master changes: the display leaves the room.
    edge.stop().await;
    eventually(10, "the edge to release its devices", async || {
        line_sim.connections() == 0
    })
    .await;
    room.module_ids.retain(|m| *m != display.id);
    master
        .store
        .apply(&[Write::put(&room, Expect::Rev(2))])
        .await
        .unwrap();
    let edge = outpost::edge::start(edge_config).await.unwrap();
    eventually(10, "the edge to catch up", async || {
        edge.store.last_seq().await.unwrap() == master.store.last_seq().await.unwrap()
    })
    .await;
    // The display left the site with the room's change: the edge holds
    // the master's documents but that one (`site.rs` covers the rule).
    let mut site_docs = all(&master.store).await;
    site_docs.retain(|d| d.id != display.id);
    assert_eq!(all(&edge.store).await, site_docs);
    eventually(10, "the projector to reconnect", async || {
        projector_sim.connections() == 1
    })
    .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        line_sim.connections(),
        0,
        "the removed display is not started again"
    );

    edge.stop().await;
    master.stop().await;
    // A deleted replica file resyncs everything (store level: tests/replication/replica.rs).
    let replica = Store::open(&StoreOptions::new(
        site.edge_config(edge_id, &secret, master_link())
            .database_url(),
    ))
    .await
    .unwrap();
    assert!(replica.last_seq().await.unwrap() > 0);
    replica.close().await;
    projector_sim.shutdown().await;
    line_sim.shutdown().await;
}

fn master_link() -> std::net::SocketAddr {
    "127.0.0.1:1".parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_events_reach_the_master_once_even_across_an_outage() {
    let site = Site::new();
    let line_sim = LineSim::start("127.0.0.1:0".parse().unwrap(), LineOptions::default())
        .await
        .unwrap();
    let display = device("Display", "line.lua", Some(line_sim.addr()));
    let Room {
        edge_id, secret, ..
    } = site.one_room(json!({}), &[display]).await;

    let master = outpost::master::start(site.master_config()).await.unwrap();
    let link = master.link_addr;
    let edge = outpost::edge::start(site.edge_config(edge_id, &secret, link))
        .await
        .unwrap();
    eventually(10, "the display to connect", async || {
        line_sim.connections() == 1
    })
    .await;

    // A device change becomes a status change at the edge, then an event
    // at the master, at once.
    let events_with = async |store: &Store, key: &str| {
        store
            .events_of(edge_id, 0, 1000)
            .await
            .unwrap()
            .into_iter()
            .filter(|e| e.event.key.as_deref() == Some(key))
            .count()
    };
    line_sim.set_value("volume", "10");
    eventually(10, "a status event at the master", async || {
        !master
            .store
            .events_of(edge_id, 0, 1000)
            .await
            .unwrap()
            .is_empty()
    })
    .await;
    eventually(10, "the edge's log to be synced", async || {
        edge.store.event_counts().await.unwrap().0 == 0
    })
    .await;

    // The master goes away; the edge keeps recording, unsynced.
    master.stop().await;
    let before = edge.store.event_counts().await.unwrap().0;
    for v in ["20", "30", "40"] {
        line_sim.set_value("volume", v);
    }
    line_sim.set_value("input", "hdmi2");
    eventually(10, "unsynced events at the edge", async || {
        edge.store.event_counts().await.unwrap().0 > before
    })
    .await;

    // Back on the same address: the backlog arrives, each event once.
    let mut config = site.master_config();
    config.link_addr = link;
    let master = outpost::master::start(config).await.unwrap();
    eventually(15, "the backlog to be synced", async || {
        edge.store.event_counts().await.unwrap().0 == 0
    })
    .await;
    let stored = master.store.events_of(edge_id, 0, 10_000).await.unwrap();
    let mut ids: Vec<_> = stored.iter().map(|e| e.event.id).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), stored.len(), "no event stored twice");
    assert!(events_with(&master.store, "volume").await >= 1);
    assert!(stored.iter().all(|e| e.event.edge_id == edge_id));

    edge.stop().await;
    master.stop().await;
    line_sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passive_sync_collects_what_the_edge_did_not_push() {
    let site = Site::new();
    let Room {
        edge_id, secret, ..
    } = site.one_room(json!({}), &[]).await;
    let mut config = site.master_config();
    config.sync_interval_ms = 50;
    config.sync_batch_size = 7;
    config.sync_step_sleep_ms = 1;
    let master = outpost::master::start(config).await.unwrap();
    // The pusher's retry is pushed out of the test's reach, so however
    // slowly a loaded machine runs it, only the passive job takes the events.
    let edge_config = outpost::config::Config {
        event_retry_ms: 3_600_000,
        ..site.edge_config(edge_id, &secret, master.link_addr)
    };
    let edge = outpost::edge::start(edge_config).await.unwrap();
    eventually(10, "the edge to connect", async || {
        master.registry.peer(edge_id).is_some()
    })
    .await;
    // The edge's own control events (it assumes its site) wake its pusher:
    // wait until they are pushed, so the pusher sleeps from here on.
    eventually(10, "the edge to control its site", async || {
        edge.control.is_running().await
    })
    .await;
    eventually(10, "the edge's control events to be pushed", async || {
        edge.store.event_counts().await.unwrap().0 == 0
    })
    .await;

    // The edge's own control record (the master's assume) wakes its
    // pusher: let that settle first, so nothing wakes it afterwards.
    eventually(
        10,
        "the edge to run its site and sync its control record",
        async || edge.control.is_running().await && edge.store.event_counts().await.unwrap().0 == 0,
    )
    .await;

    // Events that reach the log without waking the edge's pusher: only the
    // master's passive job can take them.
    let module = outpost::model::new_id();
    let mut ids = Vec::new();
    for i in 0..20 {
        let e = outpost::store::Event {
            id: outpost::model::new_id(),
            edge_id,
            at_ms: i,
            module_id: Some(module),
            kind: outpost::store::EventKind::Exec,
            key: None,
            epoch: None,
            body: i.to_string(),
        };
        ids.push(e.id);
        edge.store.log_event(&e, 1000).await.unwrap();
    }
    eventually(10, "the passive job to collect every event", async || {
        master
            .store
            .events_of(edge_id, 0, 1000)
            .await
            .unwrap()
            .iter()
            .filter(|e| e.event.kind != outpost::store::EventKind::Control)
            .count()
            == ids.len()
    })
    .await;
    assert!(
        master.store.sync_cursor(edge_id).await.unwrap() >= 20,
        "the job remembers where it got to"
    );
    eventually(10, "the edge to mark them synced", async || {
        edge.store.event_counts().await.unwrap().0 == 0
    })
    .await;
    let stored: Vec<_> = master
        .store
        .events_of(edge_id, 0, 1000)
        .await
        .unwrap()
        .into_iter()
        // The edge's own control changes travel the same way.
        .filter(|e| e.event.kind != outpost::store::EventKind::Control)
        .map(|e| e.event.id)
        .collect();
    assert_eq!(stored, ids, "in order, each once");
    edge.stop().await;
    master.stop().await;
}
