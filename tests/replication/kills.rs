//! Kills over the real link: an edge killed mid-snapshot resumes from its
//! checkpoint; a master or an edge killed in the middle of either event
//! sync leaves every event stored once; a deleted replica resyncs in full;
//! concurrent writers at the master (SQLite and PostgreSQL) lose nothing on
//! the way to the edge. A kill drops every task of the role's runtime where
//! it stands (`roles::Killable`).

use std::time::Duration;

use outpost::model::{Kind, Module, new_id};
use outpost::store::{Document, Event, EventKind, Expect, Store, Write};
use serde_json::json;
use uuid::Uuid;

use crate::roles::{Killable, Room, Site, WriteLock, device, eventually, master_on, open_store};

async fn all(store: &Store) -> Vec<Document> {
    let mut docs = Vec::new();
    for kind in Kind::ALL {
        docs.extend(store.list_all(kind).await.unwrap());
    }
    docs
}

/// Modules no system lists: data the edge replicates but does not run.
async fn add_modules(store: &Store, n: usize) -> Vec<Module> {
    let modules: Vec<Module> = (0..n)
        .map(|i| device(&format!("spare {i}"), "line.lua", None))
        .collect();
    for chunk in modules.chunks(1000) {
        let writes: Vec<Write> = chunk
            .iter()
            .map(|m| Write::put(m, Expect::Absent))
            .collect();
        store.apply(&writes).await.unwrap();
    }
    modules
}

/// The master replicating every document: these tests follow the feed's
/// checkpoints page by page, which a site snapshot only moves at its end
/// (`site.rs` covers that one).
fn full_copy(mut config: outpost::config::Config) -> outpost::config::Config {
    config.replica_scope = outpost::proto::ReplicaScope::All;
    config
}

/// A loopback address nothing listens on now (a master started later takes it).
fn free_addr() -> std::net::SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edge_killed_mid_snapshot_resumes_from_its_checkpoint() {
    let site = Site::new();
    let Room {
        edge_id, secret, ..
    } = site.one_room(json!({}), &[]).await;
    let store = site.master_store().await;
    add_modules(&store, 4000).await;
    store.close().await;
    let master = outpost::master::start(full_copy(site.master_config()))
        .await
        .unwrap();
    let last = master.store.last_seq().await.unwrap();

    let mut config = site.edge_config(edge_id, &secret, master.link_addr);
    // Small pages: many checkpoints, so the kill lands between two of them.
    config.replica_page_size = 5;
    let probe = open_store(&config).await;
    let edge = {
        let config = config.clone();
        Killable::start(async move { outpost::edge::start(config).await.unwrap() }).await
    };
    eventually(30, "the snapshot to be under way", async || {
        probe.last_seq().await.unwrap() > 0
    })
    .await;
    edge.kill();
    // A commit already handed to SQLite's connection thread still lands
    // (as a commit the kernel had already taken would): let it settle.
    let mut checkpoint = probe.last_seq().await.unwrap();
    loop {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let now = probe.last_seq().await.unwrap();
        if now == checkpoint {
            break;
        }
        checkpoint = now;
    }
    assert!(
        checkpoint > 0 && checkpoint < last,
        "the kill landed mid-snapshot ({checkpoint} of {last})"
    );
    // The checkpoint covers exactly what was applied with it.
    let copied = all(&probe).await;
    assert!(copied.iter().all(|d| d.seq <= checkpoint));
    assert_eq!(
        copied.len(),
        master
            .store
            .changes_since(0, 10_000)
            .await
            .unwrap()
            .iter()
            .filter(|d| d.seq <= checkpoint)
            .count(),
        "every page up to the checkpoint, nothing after it"
    );

    // A new edge on the same data directory goes on from the checkpoint:
    // it never starts again from nothing (which would reset it to 0 first).
    let watch = {
        let probe = probe.clone();
        tokio::spawn(async move {
            let mut lowest = i64::MAX;
            loop {
                let seq = probe.last_seq().await.unwrap();
                lowest = lowest.min(seq);
                if seq >= last {
                    return lowest;
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
    };
    let edge = outpost::edge::start(config).await.unwrap();
    let mut applied = edge.store.subscribe_commits();
    let mut seen = vec![*applied.borrow_and_update()];
    while *seen.last().unwrap() < last {
        tokio::time::timeout(Duration::from_secs(30), applied.changed())
            .await
            .expect("the snapshot to finish")
            .unwrap();
        seen.push(*applied.borrow_and_update());
    }
    let lowest = watch.await.unwrap();
    assert!(
        lowest >= checkpoint,
        "resumed from {checkpoint}, never went back (lowest seen {lowest})"
    );
    assert!(seen.iter().all(|s| *s >= checkpoint), "{seen:?}");
    assert_eq!(all(&edge.store).await, all(&master.store).await);
    edge.stop().await;
    probe.close().await;
    master.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_replica_file_is_resynced_in_full() {
    let site = Site::new();
    let Room {
        edge_id,
        secret,
        system: mut room,
    } = site.one_room(json!({}), &[]).await;
    let store = site.master_store().await;
    let spare = add_modules(&store, 50).await;
    store.close().await;
    let master = outpost::master::start(full_copy(site.master_config()))
        .await
        .unwrap();
    let config = site.edge_config(edge_id, &secret, master.link_addr);
    let edge = outpost::edge::start(config.clone()).await.unwrap();
    eventually(10, "the snapshot", async || {
        edge.store.last_seq().await.unwrap() == master.store.last_seq().await.unwrap()
    })
    .await;
    edge.stop().await;

    // The replica is lost while the master's data changes.
    let db = config
        .database_url()
        .trim_start_matches("sqlite://")
        .to_owned();
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{db}{suffix}"));
    }
    room.module_ids.push(spare[0].id);
    master
        .store
        .apply(&[
            Write::put(&room, Expect::Rev(1)),
            Write::Delete {
                id: spare[1].id,
                expect: Expect::Rev(1),
            },
        ])
        .await
        .unwrap();

    let edge = outpost::edge::start(config).await.unwrap();
    eventually(10, "a full resync", async || {
        edge.store.last_seq().await.unwrap() == master.store.last_seq().await.unwrap()
    })
    .await;
    assert_eq!(all(&edge.store).await, all(&master.store).await);
    assert_eq!(
        edge.store.upstream().await.unwrap(),
        Some(master.store.store_id())
    );
    edge.stop().await;
    master.stop().await;
}

/// Writers commit at the master concurrently while an edge follows: at
/// the end the edge has every document at its latest revision.
async fn concurrent_writers(master_url: Option<String>) {
    let site = Site::new();
    let mut master_config = full_copy(site.master_config());
    if master_url.is_some() {
        master_config.database_url = master_url;
    }
    let store = outpost::store::Store::open(&outpost::store::StoreOptions::new(
        master_config.database_url(),
    ))
    .await
    .unwrap();
    let Room {
        edge_id, secret, ..
    } = one_room_in(&store).await;
    store.close().await;
    let master = outpost::master::start(master_config).await.unwrap();
    let edge = outpost::edge::start(site.edge_config(edge_id, &secret, master.link_addr))
        .await
        .unwrap();

    let writers: Vec<_> = (0..4)
        .map(|w| {
            let store = master.store.clone();
            tokio::spawn(async move {
                for i in 0..30 {
                    let mut m = device(&format!("w{w} m{i}"), "line.lua", None);
                    store
                        .apply(&[Write::put(&m, Expect::Absent)])
                        .await
                        .unwrap();
                    m.name.push_str(" renamed");
                    store
                        .apply(&[Write::put(&m, Expect::Rev(1))])
                        .await
                        .unwrap();
                    if i % 3 == 0 {
                        store
                            .apply(&[Write::Delete {
                                id: m.id,
                                expect: Expect::Rev(2),
                            }])
                            .await
                            .unwrap();
                    }
                }
            })
        })
        .collect();
    for w in writers {
        w.await.unwrap();
    }
    eventually(20, "the edge to catch up", async || {
        edge.store.last_seq().await.unwrap() == master.store.last_seq().await.unwrap()
    })
    .await;
    let (at_edge, at_master) = (all(&edge.store).await, all(&master.store).await);
    assert_eq!(at_edge.len(), at_master.len());
    assert_eq!(at_edge, at_master, "no change missing at the edge");
    let feed = |docs: &[Document]| {
        let mut v: Vec<(Uuid, i64, bool)> = docs.iter().map(|d| (d.id, d.rev, d.deleted)).collect();
        v.sort();
        v
    };
    assert_eq!(
        feed(&edge.store.changes_since(0, 10_000).await.unwrap()),
        feed(&master.store.changes_since(0, 10_000).await.unwrap()),
        "tombstones too"
    );
    edge.stop().await;
    master.stop().await;
}

/// `Site::one_room` for a store that is not the site's SQLite file.
async fn one_room_in(store: &Store) -> Room {
    let edge_id = new_id();
    let system = outpost::model::ControlSystem {
        id: new_id(),
        name: "Room".into(),
        description: String::new(),
        edge_id: Some(edge_id),
        module_ids: vec![],
        settings: Default::default(),
        stopped: false,
    };
    let site = outpost::admin::SiteFile {
        edges: vec![serde_json::from_value(json!({"id": edge_id, "name": "Site"})).unwrap()],
        systems: vec![system.clone()],
        modules: vec![],
    };
    let report = outpost::admin::import(store, &site, &Default::default())
        .await
        .unwrap();
    Room {
        edge_id,
        system,
        secret: report.secrets[0].2.expose().to_owned(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_miss_nothing_at_the_edge_sqlite() {
    concurrent_writers(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_miss_nothing_at_the_edge_postgres() {
    let Some(pg) = crate::support::TestStore::postgres().await else {
        return;
    };
    let schema = pg.schema().unwrap().to_owned();
    let url = format!(
        "{}?options=-c%20search_path%3D{schema}",
        crate::support::pg_url().unwrap()
    );
    concurrent_writers(Some(url)).await;
    pg.cleanup().await;
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Sync {
    /// The edge pushes, the master stores and answers, the edge marks.
    Active,
    /// The master pulls a batch, stores it with its cursor, tells the edge.
    Passive,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Victim {
    Edge,
    Master,
}

enum Running<T> {
    Here(T),
    Killable(Killable<T>),
}

/// Events in the edge's log, stored by the master, not yet marked synced
/// at the edge (its writes wait behind a lock the test holds): then one
/// side is killed, the lock released, the side started again. Every event
/// ends at the master exactly once and synced at the edge.
async fn kill_mid_batch(sync: Sync, victim: Victim) {
    let site = Site::new();
    let Room {
        edge_id, secret, ..
    } = site.one_room(json!({}), &[]).await;
    site.seed_replica(edge_id).await;
    let link = free_addr();
    let mut master_config = site.master_config();
    master_config.sync_batch_size = 10;
    master_config.sync_step_sleep_ms = 1;
    master_config.sync_interval_ms = match sync {
        Sync::Passive => 50,
        Sync::Active => 3_600_000,
    };
    let mut edge_config = site.edge_config(edge_id, &secret, link);
    edge_config.event_retry_ms = match sync {
        Sync::Active => 50,
        Sync::Passive => 3_600_000,
    };

    // The edge runs before the master, so nothing syncs while the test
    // fills its log and takes the lock.
    let edge = match victim {
        Victim::Edge => {
            let c = edge_config.clone();
            Running::Killable(
                Killable::start(async move { outpost::edge::start(c).await.unwrap() }).await,
            )
        }
        Victim::Master => Running::Here(outpost::edge::start(edge_config.clone()).await.unwrap()),
    };
    let edge_log = open_store(&edge_config).await;
    let mut ids = Vec::new();
    for i in 0..25 {
        let e = Event {
            id: new_id(),
            edge_id,
            // Recent: the restarted master's retention keeps 90 days.
            at_ms: outpost::util::unix_ms() + i,
            module_id: Some(new_id()),
            kind: EventKind::Exec,
            key: None,
            epoch: None,
            body: json!({"method": "m", "ok": true, "result": i.to_string()}).to_string(),
        };
        ids.push(e.id);
        edge_log.log_event(&e, 1000).await.unwrap();
    }
    ids.sort();
    let lock = WriteLock::take(&edge_config).await;

    let master_log = open_store(&master_config).await;
    let master = match victim {
        Victim::Master => {
            let c = master_config.clone();
            Running::Killable(Killable::start(async move { master_on(c, link).await }).await)
        }
        Victim::Edge => Running::Here(master_on(master_config.clone(), link).await),
    };
    eventually(20, "the master to store a batch", async || {
        let stored = master_log
            .events_of(edge_id, 0, 1000)
            .await
            .unwrap()
            .iter()
            .filter(|e| e.event.kind != outpost::store::EventKind::Control)
            .count();
        match sync {
            Sync::Active => stored == ids.len(),
            Sync::Passive => stored >= 10 && master_log.sync_cursor(edge_id).await.unwrap() >= 10,
        }
    })
    .await;

    // The kill, while the edge waits to mark the batch synced (reads pass
    // the lock: nothing is marked yet).
    // Only the test's events count: the edge's own control record may
    // have been logged and pushed on its own schedule.
    let unsynced_exec = edge_log
        .unsynced_events(0, 1000)
        .await
        .unwrap()
        .iter()
        .filter(|e| e.event.kind != EventKind::Control)
        .count();
    assert_eq!(
        unsynced_exec,
        ids.len(),
        "the master stored a batch the edge has not marked"
    );
    let (edge, master) = match (edge, master, victim) {
        (Running::Killable(e), Running::Here(m), Victim::Edge) => {
            e.kill();
            lock.release().await;
            assert_eq!(
                edge_log.event_counts().await.unwrap().0,
                ids.len() as i64,
                "killed before it marked anything"
            );
            let e = outpost::edge::start(edge_config.clone()).await.unwrap();
            (e, m)
        }
        (Running::Here(e), Running::Killable(m), Victim::Master) => {
            m.kill();
            // Long enough for the edge to see the link die (a killed
            // process's sockets close) and abort what the master asked.
            tokio::time::sleep(Duration::from_millis(1_000)).await;
            // (The edge's pusher, which had its answer before the kill,
            // may now mark what it pushed; the passive job's request died
            // with the link.)
            lock.release().await;
            let m = master_on(master_config.clone(), link).await;
            (e, m)
        }
        _ => unreachable!(),
    };
    eventually(20, "every event synced at the edge", async || {
        edge_log.event_counts().await.unwrap().0 == 0
    })
    .await;
    // Offered again after the restart, stored once.
    let mut stored: Vec<Uuid> = master
        .store
        .events_of(edge_id, 0, 1000)
        .await
        .unwrap()
        .iter()
        // The edge's own control changes (first negotiation) travel too.
        .filter(|e| e.event.kind != outpost::store::EventKind::Control)
        .map(|e| e.event.id)
        .collect();
    stored.sort();
    assert_eq!(stored, ids, "every event stored exactly once");
    edge_log.close().await;
    master_log.close().await;
    edge.stop().await;
    master.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edge_killed_mid_push_stores_each_event_once() {
    kill_mid_batch(Sync::Active, Victim::Edge).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn master_killed_mid_push_stores_each_event_once() {
    kill_mid_batch(Sync::Active, Victim::Master).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edge_killed_mid_passive_batch_stores_each_event_once() {
    kill_mid_batch(Sync::Passive, Victim::Edge).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn master_killed_mid_passive_batch_stores_each_event_once() {
    kill_mid_batch(Sync::Passive, Victim::Master).await;
}
