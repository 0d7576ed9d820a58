//! The per-site replica over real links (`replica_scope`): an edge holds its
//! own site and nothing of another's, follows documents that leave or join
//! its site (a module or a system moved, a key revoked, an operator no
//! longer among the location's admins), converges from a full copy without
//! a wipe, survives a link cut in the middle of its site snapshot, and gets
//! the full copy again with `replica_scope = "all"`.

use std::collections::HashSet;
use std::time::Duration;

use outpost::model::{ApiKey, ControlSystem, EdgeLocation, KeyRole, Kind, Module};
use outpost::proto::ReplicaScope;
use outpost::store::{Expect, Store, Write};
use serde_json::json;
use uuid::Uuid;

use crate::proxy::Proxy;
use crate::roles::{Room, Site, device, eventually};
use crate::support::TestStore;

/// Two sites, each one room of two modules whose settings hold a secret
/// that names the site, one operator key per site's admin, and an admin
/// key.
struct Fleet {
    site: Site,
    a: Room,
    b: Room,
    a_modules: Vec<Module>,
    b_modules: Vec<Module>,
    alice: ApiKey,
}

fn module_with_secret(name: &str, secret: &str) -> Module {
    let mut m = device(name, "room.lua", None);
    m.settings = json!({"password": secret}).as_object().cloned().unwrap();
    m
}

async fn fleet() -> Fleet {
    let site = Site::new();
    let a_modules = vec![
        module_with_secret("A1", "secret-of-a"),
        module_with_secret("A2", "secret-of-a"),
    ];
    let b_modules = vec![
        module_with_secret("B1", "secret-of-b"),
        module_with_secret("B2", "secret-of-b"),
    ];
    let a = site
        .one_room(json!({"admins": ["alice"]}), &a_modules)
        .await;
    let b = site.one_room(json!({"admins": ["bob"]}), &b_modules).await;
    let alice = ApiKey::new("alice", "alice", KeyRole::Operator, &ApiKey::generate());
    let bob = ApiKey::new("bob", "bob", KeyRole::Operator, &ApiKey::generate());
    let carol = ApiKey::new("carol", "carol", KeyRole::Admin, &ApiKey::generate());
    let store = site.master_store().await;
    store
        .apply(&[
            Write::put(&alice, Expect::Absent),
            Write::put(&bob, Expect::Absent),
            Write::put(&carol, Expect::Absent),
        ])
        .await
        .unwrap();
    store.close().await;
    Fleet {
        site,
        a,
        b,
        a_modules,
        b_modules,
        alice,
    }
}

/// Every row of a replica, tombstones included: id → deleted.
async fn rows(store: &Store) -> Vec<(Uuid, bool, String)> {
    store
        .changes_since(0, 100_000)
        .await
        .unwrap()
        .into_iter()
        .map(|d| (d.id, d.deleted, d.body))
        .collect()
}

async fn live_ids(store: &Store) -> HashSet<Uuid> {
    let mut ids = HashSet::new();
    for kind in Kind::ALL {
        ids.extend(
            store
                .list_all(kind)
                .await
                .unwrap()
                .into_iter()
                .map(|d| d.id),
        );
    }
    ids
}

/// What the master says `edge` may hold: its location, systems, their
/// modules, and every key but other sites' operators.
async fn expected_site(master: &Store, edge: Uuid) -> HashSet<Uuid> {
    let location: EdgeLocation = master.get(edge).await.unwrap().unwrap().parse().unwrap();
    let mut ids = HashSet::from([edge]);
    for doc in master.by_owner(Kind::System, edge).await.unwrap() {
        let system: ControlSystem = doc.parse().unwrap();
        ids.insert(system.id);
        ids.extend(system.module_ids);
    }
    for doc in master.list_all(Kind::ApiKey).await.unwrap() {
        let key: ApiKey = doc.parse().unwrap();
        if key.role != KeyRole::Operator || location.admins.contains(&key.user) {
            ids.insert(key.id);
        }
    }
    ids
}

async fn holds_exactly_its_site(edge: &Store, master: &Store, edge_id: Uuid) -> bool {
    live_ids(edge).await == expected_site(master, edge_id).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_holds_its_own_site_and_follows_what_leaves_and_joins_it() {
    let f = fleet().await;
    let master = outpost::master::start(f.site.master_config())
        .await
        .unwrap();
    let link = master.link_addr;
    let edge_a = outpost::edge::start(f.site.edge_config(f.a.edge_id, &f.a.secret, link))
        .await
        .unwrap();
    let edge_b = outpost::edge::start(f.site.edge_config(f.b.edge_id, &f.b.secret, link))
        .await
        .unwrap();
    for (edge, id) in [(&edge_a, f.a.edge_id), (&edge_b, f.b.edge_id)] {
        eventually(10, "the edge to hold its site", async || {
            holds_exactly_its_site(&edge.store, &master.store, id).await
        })
        .await;
    }
    // Not even a tombstone of another site's documents, nor its secret.
    let b_ids: HashSet<Uuid> = expected_site(&master.store, f.b.edge_id)
        .await
        .difference(&expected_site(&master.store, f.a.edge_id).await)
        .copied()
        .collect();
    for (id, _, body) in rows(&edge_a.store).await {
        assert!(!b_ids.contains(&id), "site A's replica has a row of site B");
        assert!(!body.contains("secret-of-b"), "site B's secret at site A");
    }
    assert!(live_ids(&edge_a.store).await.contains(&f.alice.id));

    // A module moves from A's room to B's: gone from A, delivered to B.
    let moved = f.a_modules[0].id;
    let mut room_a = f.a.system.clone();
    let mut room_b = f.b.system.clone();
    room_a.module_ids.retain(|m| *m != moved);
    room_b.module_ids.push(moved);
    master
        .store
        .apply(&[
            Write::put(&room_a, Expect::Rev(1)),
            Write::put(&room_b, Expect::Rev(1)),
        ])
        .await
        .unwrap();
    eventually(10, "the module to move between replicas", async || {
        edge_a.store.get(moved).await.unwrap().is_none()
            && edge_b.store.get(moved).await.unwrap().is_some()
    })
    .await;

    // A's whole room moves to site B: it arrives whole, and leaves A.
    room_a.edge_id = Some(f.b.edge_id);
    master
        .store
        .apply(&[Write::put(&room_a, Expect::Rev(2))])
        .await
        .unwrap();
    for (edge, id) in [(&edge_a, f.a.edge_id), (&edge_b, f.b.edge_id)] {
        eventually(10, "both replicas to follow the room", async || {
            holds_exactly_its_site(&edge.store, &master.store, id).await
        })
        .await;
    }
    assert!(edge_b.store.get(f.a_modules[1].id).await.unwrap().is_some());
    assert!(edge_a.store.get(room_a.id).await.unwrap().is_none());

    // Alice is no longer among A's admins: her key leaves A's replica; a
    // revoked key leaves every replica.
    let doc = master.store.get(f.a.edge_id).await.unwrap().unwrap();
    let mut location: EdgeLocation = doc.parse().unwrap();
    location.admins.clear();
    let admin = master
        .store
        .list_all(Kind::ApiKey)
        .await
        .unwrap()
        .into_iter()
        .find(|d| d.parse::<ApiKey>().unwrap().role == KeyRole::Admin)
        .unwrap();
    master
        .store
        .apply(&[
            Write::put(&location, Expect::Rev(doc.rev)),
            Write::Delete {
                id: admin.id,
                expect: Expect::Rev(admin.rev),
            },
        ])
        .await
        .unwrap();
    eventually(10, "the keys to leave the replicas", async || {
        edge_a.store.get(f.alice.id).await.unwrap().is_none()
            && edge_a.store.get(admin.id).await.unwrap().is_none()
            && edge_b.store.get(admin.id).await.unwrap().is_none()
    })
    .await;
    for (edge, id) in [(&edge_a, f.a.edge_id), (&edge_b, f.b.edge_id)] {
        assert!(holds_exactly_its_site(&edge.store, &master.store, id).await);
    }
    // B's changes reached A as tombstones of documents A never held: no
    // row of them was left behind.
    let rows_a: Vec<Uuid> = rows(&edge_a.store).await.into_iter().map(|r| r.0).collect();
    for never in [
        f.b.edge_id,
        f.b.system.id,
        f.b_modules[0].id,
        f.b_modules[1].id,
    ] {
        assert!(!rows_a.contains(&never), "a row of site B at site A");
    }
    edge_a.stop().await;
    edge_b.stop().await;
    master.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_copy_from_before_the_upgrade_converges_to_the_site_without_a_wipe() {
    let f = fleet().await;
    // The edge's replica holds every document, as the full copy did.
    f.site.seed_replica(f.a.edge_id).await;
    let master = outpost::master::start(f.site.master_config())
        .await
        .unwrap();
    let edge = outpost::edge::start(
        f.site
            .edge_config(f.a.edge_id, &f.a.secret, master.link_addr),
    )
    .await
    .unwrap();
    eventually(10, "the replica to drop the other site", async || {
        holds_exactly_its_site(&edge.store, &master.store, f.a.edge_id).await
            && edge.store.last_seq().await.unwrap() >= master.store.last_seq().await.unwrap()
    })
    .await;
    // What it held of site B is now a tombstone without a body.
    for (id, deleted, body) in rows(&edge.store).await {
        if f.b_modules.iter().any(|m| m.id == id) {
            assert!(deleted && body == "null");
        }
    }
    edge.stop().await;
    master.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_cut_in_the_middle_of_a_site_snapshot_converges() {
    let f = fleet().await;
    let master = outpost::master::start(f.site.master_config())
        .await
        .unwrap();
    let proxy = Proxy::start(master.link_addr).await;
    proxy.delay(Duration::from_millis(100));
    let mut config = f.site.edge_config(f.a.edge_id, &f.a.secret, proxy.addr());
    config.replica_page_size = 1;
    let edge = outpost::edge::start(config).await.unwrap();
    // Some pages of the snapshot applied, its end (the checkpoint) not yet.
    eventually(20, "the snapshot to be under way", async || {
        !live_ids(&edge.store).await.is_empty()
    })
    .await;
    proxy.cut();
    assert_eq!(edge.store.last_seq().await.unwrap(), 0, "cut mid-snapshot");
    // Meanwhile a module of B joins A's room.
    let joined = f.b_modules[0].id;
    let mut room_a = f.a.system.clone();
    let mut room_b = f.b.system.clone();
    room_b.module_ids.retain(|m| *m != joined);
    room_a.module_ids.push(joined);
    master
        .store
        .apply(&[
            Write::put(&room_b, Expect::Rev(1)),
            Write::put(&room_a, Expect::Rev(1)),
        ])
        .await
        .unwrap();
    proxy.heal();
    eventually(20, "the replica to converge after the cut", async || {
        holds_exactly_its_site(&edge.store, &master.store, f.a.edge_id).await
            && edge.store.last_seq().await.unwrap() >= master.store.last_seq().await.unwrap()
    })
    .await;
    assert!(edge.store.get(joined).await.unwrap().is_some());
    edge.stop().await;
    master.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replica_scope_all_gives_every_edge_the_full_copy_and_site_takes_it_back() {
    let f = fleet().await;
    let mut config = f.site.master_config();
    config.replica_scope = ReplicaScope::All;
    let master = outpost::master::start(config.clone()).await.unwrap();
    let link = master.link_addr;
    let edge = outpost::edge::start(f.site.edge_config(f.a.edge_id, &f.a.secret, link))
        .await
        .unwrap();
    eventually(10, "the full copy", async || {
        live_ids(&edge.store).await == live_ids(&master.store).await
    })
    .await;
    master.stop().await;
    config.replica_scope = ReplicaScope::Site;
    let master = crate::roles::master_on(config.clone(), link).await;
    eventually(15, "the site only", async || {
        holds_exactly_its_site(&edge.store, &master.store, f.a.edge_id).await
    })
    .await;
    master.stop().await;
    config.replica_scope = ReplicaScope::All;
    let master = crate::roles::master_on(config, link).await;
    eventually(15, "the full copy again", async || {
        live_ids(&edge.store).await == live_ids(&master.store).await
    })
    .await;
    edge.stop().await;
    master.stop().await;
}

/// The store's side, on both backends: a site's reads select it alone (in
/// id order, in pages), a module moved between systems gets a new
/// sequence number with its revision unchanged, and a replica takes
/// tombstones only for what it holds and drops what a site snapshot did
/// not keep.
async fn check_site_reads(m: &Store, r: &Store) {
    let (a, b) = (outpost::model::new_id(), outpost::model::new_id());
    let modules: Vec<Module> = (0..4)
        .map(|i| device(&format!("M{i}"), "room.lua", None))
        .collect();
    let system = |owner: Uuid, ids: &[Uuid]| ControlSystem {
        id: outpost::model::new_id(),
        name: "room".into(),
        description: String::new(),
        edge_id: Some(owner),
        module_ids: ids.to_vec(),
        settings: Default::default(),
        stopped: false,
    };
    let location = |id: Uuid| -> EdgeLocation {
        serde_json::from_value(json!({"id": id, "name": "site"})).unwrap()
    };
    let mut sa = system(a, &[modules[0].id, modules[1].id]);
    let mut sb = system(b, &[modules[2].id]);
    let mut writes: Vec<Write> = modules
        .iter()
        .map(|x| Write::put(x, Expect::Absent))
        .collect();
    writes.extend([
        Write::put(&location(a), Expect::Absent),
        Write::put(&location(b), Expect::Absent),
        Write::put(&sa, Expect::Absent),
        Write::put(&sb, Expect::Absent),
    ]);
    m.apply(&writes).await.unwrap();
    let site_a = HashSet::from([a, sa.id, modules[0].id, modules[1].id]);
    assert_eq!(m.site_ids(a).await.unwrap(), site_a);
    let (first, complete) = m.site_page(a, None, 2).await.unwrap();
    assert!(!complete && first.len() == 2);
    let (rest, complete) = m.site_page(a, Some(first[1].id), 3).await.unwrap();
    assert!(complete && rest.len() == 2);
    let paged: Vec<Uuid> = first.iter().chain(&rest).map(|d| d.id).collect();
    let mut sorted: Vec<Uuid> = site_a.iter().copied().collect();
    sorted.sort();
    assert_eq!(paged, sorted, "the whole site, in id order");

    // The replica copies site A's documents.
    let snapshot: Vec<outpost::store::Replicated> = first
        .into_iter()
        .chain(rest)
        .map(|doc| outpost::store::Replicated {
            refs: outpost::model::index_document(&doc.kind, &doc.body)
                .unwrap()
                .refs,
            doc,
        })
        .collect();
    r.begin_replication(m.store_id()).await.unwrap();
    r.apply_site_page(&snapshot).await.unwrap();

    // M1 moves to B: it gets a new place in the feed, not a new revision.
    let before = m.last_seq().await.unwrap();
    let old = m.get(modules[1].id).await.unwrap().unwrap();
    sa.module_ids.truncate(1);
    sb.module_ids.push(modules[1].id);
    m.apply(&[
        Write::put(&sa, Expect::Rev(1)),
        Write::put(&sb, Expect::Rev(1)),
    ])
    .await
    .unwrap();
    let moved = m.get(modules[1].id).await.unwrap().unwrap();
    assert!(moved.seq > before && moved.rev == old.rev);
    assert!(m.site_ids(b).await.unwrap().contains(&modules[1].id));

    // As site A's feed says it: M1 and B's system as bare tombstones.
    let stub = |d: &outpost::store::Document| outpost::store::Replicated {
        doc: outpost::store::Document {
            deleted: true,
            owner: None,
            body: "null".into(),
            ..d.clone()
        },
        refs: vec![],
    };
    let sb_doc = m.get(sb.id).await.unwrap().unwrap();
    r.apply_site_changes(&[stub(&moved), stub(&sb_doc)], m.last_seq().await.unwrap())
        .await
        .unwrap();
    assert!(r.get(modules[1].id).await.unwrap().is_none(), "M1 left A");
    let held: Vec<Uuid> = r
        .changes_since(0, 100)
        .await
        .unwrap()
        .iter()
        .map(|d| d.id)
        .collect();
    assert!(
        !held.contains(&sb.id),
        "no row for a document it never held"
    );
    // At the same place, the master's word on membership wins both ways.
    let back = outpost::store::Replicated {
        refs: vec![],
        doc: moved.clone(),
    };
    r.apply_site_changes(std::slice::from_ref(&back), 0)
        .await
        .unwrap();
    assert!(r.get(modules[1].id).await.unwrap().is_some());

    // A snapshot that ends without M1 and M0 turns them into tombstones.
    let keep = HashSet::from([a, sa.id]);
    let dropped: HashSet<Uuid> = r
        .finish_site_resync(&keep, m.last_seq().await.unwrap())
        .await
        .unwrap()
        .into_iter()
        .collect();
    assert_eq!(dropped, HashSet::from([modules[0].id, modules[1].id]));
    assert!(r.replica_is_site().await.unwrap());
    assert_eq!(live_ids(r).await, keep);
    // Another master database: nothing is held, of a site or otherwise.
    r.begin_replication(outpost::model::new_id()).await.unwrap();
    assert!(!r.replica_is_site().await.unwrap());
}

#[tokio::test]
async fn site_reads_and_moves_sqlite() {
    let (m, r) = (TestStore::sqlite().await, TestStore::sqlite().await);
    check_site_reads(&m.store, &r.store).await;
    m.cleanup().await;
    r.cleanup().await;
}

#[tokio::test]
async fn site_reads_and_moves_postgres() {
    let Some(m) = TestStore::postgres().await else {
        return;
    };
    let r = TestStore::sqlite().await;
    check_site_reads(&m.store, &r.store).await;
    m.cleanup().await;
    r.cleanup().await;
}

/// A site's live documents as (id, rev, body), sorted.
async fn site_docs(store: &Store, ids: &HashSet<Uuid>) -> Vec<(Uuid, i64, String)> {
    let mut docs: Vec<(Uuid, i64, String)> = store
        .get_many(&ids.iter().copied().collect::<Vec<_>>())
        .await
        .unwrap()
        .into_iter()
        .map(|d| (d.id, d.rev, d.body))
        .collect();
    docs.sort();
    docs
}

/// One writer's work: modules created into its room at site A, renamed,
/// some moved to its room at site B, some deleted, each a commit of its own.
async fn move_modules_around(store: Store, mut room_a: ControlSystem, mut room_b: ControlSystem) {
    for i in 0..12 {
        let mut m = device(&format!("m{i}"), "room.lua", None);
        room_a.module_ids.push(m.id);
        let rev_a = store.get(room_a.id).await.unwrap().unwrap().rev;
        store
            .apply(&[
                Write::put(&m, Expect::Absent),
                Write::put(&room_a, Expect::Rev(rev_a)),
            ])
            .await
            .unwrap();
        m.name.push_str(" renamed");
        store
            .apply(&[Write::put(&m, Expect::Rev(1))])
            .await
            .unwrap();
        if i % 3 == 1 {
            room_a.module_ids.retain(|id| *id != m.id);
            room_b.module_ids.push(m.id);
            let rev_b = store.get(room_b.id).await.unwrap().unwrap().rev;
            store
                .apply(&[
                    Write::put(&room_a, Expect::Rev(rev_a + 1)),
                    Write::put(&room_b, Expect::Rev(rev_b)),
                ])
                .await
                .unwrap();
        } else if i % 3 == 2 {
            room_a.module_ids.retain(|id| *id != m.id);
            store
                .apply(&[
                    Write::put(&room_a, Expect::Rev(rev_a + 1)),
                    Write::Delete {
                        id: m.id,
                        expect: Expect::Rev(2),
                    },
                ])
                .await
                .unwrap();
        }
    }
}

/// Writers move modules between two sites while both edges follow: at the
/// end each edge holds exactly its site at the master's revisions.
async fn concurrent_moves(master_url: Option<String>) {
    let site = Site::new();
    let mut config = site.master_config();
    if master_url.is_some() {
        config.database_url = master_url;
    }
    let (a, b) = (outpost::model::new_id(), outpost::model::new_id());
    let room = |owner: Uuid| ControlSystem {
        id: outpost::model::new_id(),
        name: "room".into(),
        description: String::new(),
        edge_id: Some(owner),
        module_ids: vec![],
        settings: Default::default(),
        stopped: false,
    };
    let rooms: Vec<(ControlSystem, ControlSystem)> = (0..3).map(|_| (room(a), room(b))).collect();
    let file = outpost::admin::SiteFile {
        edges: [a, b]
            .iter()
            .map(|id| serde_json::from_value(json!({"id": id, "name": "site"})).unwrap())
            .collect(),
        systems: rooms
            .iter()
            .flat_map(|(x, y)| [x.clone(), y.clone()])
            .collect(),
        modules: vec![],
    };
    let store = crate::roles::open_store(&config).await;
    let report = outpost::admin::import(&store, &file, &Default::default())
        .await
        .unwrap();
    store.close().await;
    let secret = |id: Uuid| {
        let s = report.secrets.iter().find(|s| s.0 == id).unwrap();
        s.2.expose().to_owned()
    };
    let master = outpost::master::start(config).await.unwrap();
    let edges = [
        (
            a,
            outpost::edge::start(site.edge_config(a, &secret(a), master.link_addr))
                .await
                .unwrap(),
        ),
        (
            b,
            outpost::edge::start(site.edge_config(b, &secret(b), master.link_addr))
                .await
                .unwrap(),
        ),
    ];
    let writers: Vec<_> = rooms
        .into_iter()
        .map(|(x, y)| tokio::spawn(move_modules_around(master.store.clone(), x, y)))
        .collect();
    for w in writers {
        w.await.unwrap();
    }
    for (id, edge) in &edges {
        eventually(20, "the edge to catch up", async || {
            edge.store.last_seq().await.unwrap() >= master.store.last_seq().await.unwrap()
        })
        .await;
        let expected = expected_site(&master.store, *id).await;
        assert_eq!(live_ids(&edge.store).await, expected, "exactly its site");
        assert_eq!(
            site_docs(&edge.store, &expected).await,
            site_docs(&master.store, &expected).await,
            "at the master's revisions"
        );
    }
    for (_, edge) in edges {
        edge.stop().await;
    }
    master.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_moves_leave_each_edge_exactly_its_site_sqlite() {
    concurrent_moves(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_moves_leave_each_edge_exactly_its_site_postgres() {
    let Some(pg) = TestStore::postgres().await else {
        return;
    };
    let schema = pg.schema().unwrap().to_owned();
    let url = format!(
        "{}?options=-c%20search_path%3D{schema}",
        crate::support::pg_url().unwrap()
    );
    concurrent_moves(Some(url)).await;
    pg.cleanup().await;
}
