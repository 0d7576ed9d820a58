//! The store suite, run against SQLite and PostgreSQL alike.

use std::collections::{BTreeMap, HashMap};

use outpost::model::{ControlSystem, Kind, Module, new_id};
use outpost::store::{Expect, Store, StoreError, Write};
use uuid::Uuid;

crate::both_backends!(
    put_then_get_round_trips,
    stale_revisions_conflict,
    tombstones_hide_documents_and_reach_the_feed,
    batches_are_all_or_nothing,
    list_paginates_by_id,
    owner_and_reference_indexes_follow_updates,
    change_feed_is_in_commit_order,
    credentials_stay_out_of_the_feed,
    credential_writes_never_overwrite_silently,
    credential_lifecycle_grace_log_and_scope,
    concurrent_writers_never_hide_a_change_from_the_feed,
);

fn module(name: &str) -> Module {
    Module {
        id: new_id(),
        name: name.into(),
        driver: "line.lua".into(),
        uri: Some("tcp://127.0.0.1:4000".into()),
        settings: Default::default(),
        enabled: true,
    }
}

fn system(name: &str, edge: Option<Uuid>, modules: &[Uuid]) -> ControlSystem {
    ControlSystem {
        id: new_id(),
        name: name.into(),
        description: String::new(),
        edge_id: edge,
        module_ids: modules.to_vec(),
        settings: Default::default(),
        stopped: false,
    }
}

async fn put_then_get_round_trips(store: &Store) {
    let m = module("projector");
    let done = store
        .apply(&[Write::put(&m, Expect::Absent)])
        .await
        .unwrap();
    assert_eq!(done.len(), 1);
    assert_eq!(done[0].rev, 1);
    let doc = store.get(m.id).await.unwrap().expect("stored");
    assert_eq!(doc.kind, "module");
    assert_eq!(doc.rev, 1);
    assert_eq!(doc.seq, done[0].seq);
    assert_eq!(doc.parse::<Module>().unwrap(), m);
    assert!(store.get(new_id()).await.unwrap().is_none());
    assert_eq!(store.count(Kind::Module).await.unwrap(), 1);
}

async fn stale_revisions_conflict(store: &Store) {
    let mut m = module("a");
    store
        .apply(&[Write::put(&m, Expect::Absent)])
        .await
        .unwrap();
    m.name = "b".into();
    let done = store
        .apply(&[Write::put(&m, Expect::Rev(1))])
        .await
        .unwrap();
    assert_eq!(done[0].rev, 2);
    m.name = "c".into();
    // A writer that read revision 1 must not overwrite revision 2.
    match store.apply(&[Write::put(&m, Expect::Rev(1))]).await {
        Err(StoreError::Conflict {
            id,
            expected,
            actual,
        }) => {
            assert_eq!(id, m.id);
            assert_eq!(expected, Expect::Rev(1));
            assert_eq!(actual, Some(2));
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
    // Creating what exists is a conflict too.
    assert!(matches!(
        store.apply(&[Write::put(&m, Expect::Absent)]).await,
        Err(StoreError::Conflict {
            actual: Some(2),
            ..
        })
    ));
    // Updating what does not exist.
    let ghost = module("ghost");
    assert!(matches!(
        store.apply(&[Write::put(&ghost, Expect::Rev(1))]).await,
        Err(StoreError::Conflict { actual: None, .. })
    ));
    let doc = store.get(m.id).await.unwrap().unwrap();
    assert_eq!(doc.parse::<Module>().unwrap().name, "b");
    // The same id under another kind is not the same document.
    let as_system = ControlSystem {
        id: m.id,
        ..system("clash", None, &[])
    };
    assert!(matches!(
        store.apply(&[Write::put(&as_system, Expect::Rev(2))]).await,
        Err(StoreError::Conflict { .. })
    ));
}

async fn tombstones_hide_documents_and_reach_the_feed(store: &Store) {
    let m = module("gone");
    store
        .apply(&[Write::put(&m, Expect::Absent)])
        .await
        .unwrap();
    assert!(matches!(
        store
            .apply(&[Write::Delete {
                id: m.id,
                expect: Expect::Rev(7)
            }])
            .await,
        Err(StoreError::Conflict {
            actual: Some(1),
            ..
        })
    ));
    let done = store
        .apply(&[Write::Delete {
            id: m.id,
            expect: Expect::Rev(1),
        }])
        .await
        .unwrap();
    assert_eq!(done[0].rev, 2);
    assert!(store.get(m.id).await.unwrap().is_none());
    assert!(store.list_all(Kind::Module).await.unwrap().is_empty());
    let feed = store.changes_since(0, 100).await.unwrap();
    assert_eq!(
        feed.len(),
        1,
        "the tombstone replaces the document in the feed"
    );
    assert!(feed[0].deleted);
    assert_eq!(feed[0].seq, done[0].seq);
    assert_eq!(feed[0].body, "null");
    // Deleting twice is a conflict, not a silent success.
    assert!(matches!(
        store
            .apply(&[Write::Delete {
                id: m.id,
                expect: Expect::Rev(2)
            }])
            .await,
        Err(StoreError::Conflict { actual: None, .. })
    ));
    // Recreating continues the revision count, so replicas can order it.
    let done = store
        .apply(&[Write::put(&m, Expect::Absent)])
        .await
        .unwrap();
    assert_eq!(done[0].rev, 3);
    assert!(
        store
            .changes_since(0, 100)
            .await
            .unwrap()
            .iter()
            .all(|d| !d.deleted)
    );
}

async fn batches_are_all_or_nothing(store: &Store) {
    let before = store.last_seq().await.unwrap();
    let a = module("a");
    let b = module("b");
    let stale = module("stale");
    let err = store
        .apply(&[
            Write::put(&a, Expect::Absent),
            Write::put(&b, Expect::Absent),
            Write::put(&stale, Expect::Rev(3)),
        ])
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict { id, .. } if id == stale.id));
    assert!(store.get(a.id).await.unwrap().is_none());
    assert!(store.get(b.id).await.unwrap().is_none());
    assert_eq!(
        store.last_seq().await.unwrap(),
        before,
        "no sequence numbers leak"
    );
    let done = store
        .apply(&[
            Write::put(&a, Expect::Absent),
            Write::put(&b, Expect::Absent),
        ])
        .await
        .unwrap();
    assert_eq!(done[1].seq, done[0].seq + 1);
    assert_eq!(store.last_seq().await.unwrap(), done[1].seq);
}

async fn list_paginates_by_id(store: &Store) {
    let mut ids = Vec::new();
    let writes: Vec<Write> = (0..25)
        .map(|i| {
            let m = module(&format!("m{i}"));
            ids.push(m.id);
            Write::put(&m, Expect::Absent)
        })
        .collect();
    store.apply(&writes).await.unwrap();
    store
        .apply(&[Write::put(&system("s", None, &[]), Expect::Absent)])
        .await
        .unwrap();
    ids.sort();
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = store.list(Kind::Module, after, 10).await.unwrap();
        if page.is_empty() {
            break;
        }
        assert!(page.len() <= 10);
        after = page.last().map(|d| d.id);
        seen.extend(page.into_iter().map(|d| d.id));
    }
    assert_eq!(seen, ids);
    let many = store.get_many(&[ids[3], new_id(), ids[1]]).await.unwrap();
    assert_eq!(
        many.iter().map(|d| d.id).collect::<Vec<_>>(),
        vec![ids[1], ids[3]]
    );
}

async fn owner_and_reference_indexes_follow_updates(store: &Store) {
    let edge = new_id();
    let (m1, m2, m3) = (module("1"), module("2"), module("3"));
    let mut s1 = system("edge room", Some(edge), &[m1.id, m2.id]);
    let s2 = system("master room", None, &[m2.id, m3.id]);
    store
        .apply(&[
            Write::put(&m1, Expect::Absent),
            Write::put(&m2, Expect::Absent),
            Write::put(&m3, Expect::Absent),
            Write::put(&s1, Expect::Absent),
            Write::put(&s2, Expect::Absent),
        ])
        .await
        .unwrap();
    let ids =
        |docs: Vec<outpost::store::Document>| docs.into_iter().map(|d| d.id).collect::<Vec<_>>();
    assert_eq!(
        ids(store.by_owner(Kind::System, edge).await.unwrap()),
        vec![s1.id]
    );
    assert_eq!(
        ids(store.with_any_owner(Kind::System).await.unwrap()),
        vec![s1.id]
    );
    assert_eq!(
        ids(store.without_owner(Kind::System).await.unwrap()),
        vec![s2.id]
    );
    let mut both = vec![s1.id, s2.id];
    both.sort();
    assert_eq!(
        ids(store.referencing(Kind::System, m2.id).await.unwrap()),
        both
    );
    assert_eq!(
        ids(store.referencing(Kind::System, m1.id).await.unwrap()),
        vec![s1.id]
    );

    // Moving the system to the master and dropping m1 updates both indexes.
    s1.edge_id = None;
    s1.module_ids = vec![m2.id];
    store
        .apply(&[Write::put(&s1, Expect::Rev(1))])
        .await
        .unwrap();
    assert!(store.by_owner(Kind::System, edge).await.unwrap().is_empty());
    assert!(
        store
            .referencing(Kind::System, m1.id)
            .await
            .unwrap()
            .is_empty()
    );
    store
        .apply(&[Write::Delete {
            id: s2.id,
            expect: Expect::Rev(1),
        }])
        .await
        .unwrap();
    assert_eq!(
        ids(store.referencing(Kind::System, m2.id).await.unwrap()),
        vec![s1.id]
    );
    assert!(
        store
            .referencing(Kind::System, m3.id)
            .await
            .unwrap()
            .is_empty()
    );
}

async fn change_feed_is_in_commit_order(store: &Store) {
    assert_eq!(store.last_seq().await.unwrap(), 0);
    let mut a = module("a");
    let b = module("b");
    let c = module("c");
    for m in [&a, &b, &c] {
        store.apply(&[Write::put(m, Expect::Absent)]).await.unwrap();
    }
    a.name = "a2".into();
    store
        .apply(&[Write::put(&a, Expect::Rev(1))])
        .await
        .unwrap();
    let feed = store.changes_since(0, 100).await.unwrap();
    let order: Vec<Uuid> = feed.iter().map(|d| d.id).collect();
    assert_eq!(
        order,
        vec![b.id, c.id, a.id],
        "an update moves a document to the end"
    );
    assert!(feed.windows(2).all(|w| w[0].seq < w[1].seq));
    assert_eq!(store.last_seq().await.unwrap(), feed.last().unwrap().seq);
    let page = store.changes_since(0, 2).await.unwrap();
    assert_eq!(page.len(), 2);
    let rest = store.changes_since(page[1].seq, 100).await.unwrap();
    assert_eq!(rest.iter().map(|d| d.id).collect::<Vec<_>>(), vec![a.id]);
    assert!(
        store
            .changes_since(feed.last().unwrap().seq, 100)
            .await
            .unwrap()
            .is_empty()
    );
}

async fn credentials_stay_out_of_the_feed(store: &Store) {
    let edge = new_id();
    let before = store.last_seq().await.unwrap();
    let set = |expect, key: u8| Write::SetCredential {
        id: edge,
        expect,
        link_key: vec![key; 32],
        grace_until_ms: None,
    };
    store.apply(&[set(Expect::Absent, 7)]).await.unwrap();
    assert_eq!(store.link_key(edge).await.unwrap(), Some(vec![7; 32]));
    assert_eq!(store.last_seq().await.unwrap(), before);
    assert!(store.changes_since(0, 100).await.unwrap().is_empty());
    assert_eq!(store.credential_rev(edge).await.unwrap(), Some(1));
    store.apply(&[set(Expect::Rev(1), 9)]).await.unwrap();
    assert_eq!(store.link_key(edge).await.unwrap(), Some(vec![9; 32]));
    assert_eq!(store.link_key(new_id()).await.unwrap(), None);
    assert_eq!(store.credential_rev(new_id()).await.unwrap(), None);
}

/// A credential write states what it replaces, as a document write does: a
/// second creation or a rotation from a stale revision is a conflict and
/// leaves the key as it was.
async fn credential_writes_never_overwrite_silently(store: &Store) {
    let edge = new_id();
    let set = |expect, key: u8| Write::SetCredential {
        id: edge,
        expect,
        link_key: vec![key; 32],
        grace_until_ms: None,
    };
    store.apply(&[set(Expect::Absent, 1)]).await.unwrap();
    for (expect, actual) in [(Expect::Absent, Some(1)), (Expect::Rev(5), Some(1))] {
        match store.apply(&[set(expect, 2)]).await {
            Err(StoreError::Conflict {
                id,
                expected,
                actual: found,
            }) => {
                assert_eq!((id, expected, found), (edge, expect, actual));
            }
            other => panic!("expected a conflict, got {other:?}"),
        }
    }
    assert_eq!(store.link_key(edge).await.unwrap(), Some(vec![1; 32]));
    match store.apply(&[set(Expect::Rev(1), 3)]).await {
        Err(StoreError::Conflict { actual: None, .. }) => panic!("the credential exists"),
        other => assert!(other.is_ok(), "{other:?}"),
    }
    assert_eq!(store.credential_rev(edge).await.unwrap(), Some(2));
    let other = new_id();
    let missing = store
        .apply(&[Write::SetCredential {
            id: other,
            expect: Expect::Rev(1),
            link_key: vec![4; 32],
            grace_until_ms: None,
        }])
        .await;
    assert!(
        matches!(missing, Err(StoreError::Conflict { actual: None, .. })),
        "{missing:?}"
    );
}

/// The change-feed trap: with concurrent writers, a sequence number must
/// never become visible after a higher one, or a reader that already passed
/// it misses the document forever. Writers create and update documents
/// concurrently while a reader tails the feed; every committed document must
/// reach the reader at its final revision, and every creation must be seen.
async fn concurrent_writers_never_hide_a_change_from_the_feed(store: &Store) {
    const WRITERS: usize = 8;
    const DOCS_PER_WRITER: usize = 60;
    let done = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let store = store.clone();
        let done = done.clone();
        writers.push(tokio::spawn(async move {
            let mut committed: HashMap<Uuid, i64> = HashMap::new();
            let mut mine: Vec<Module> = Vec::new();
            for i in 0..DOCS_PER_WRITER {
                let m = module(&format!("w{w}-{i}"));
                let c = store
                    .apply(&[Write::put(&m, Expect::Absent)])
                    .await
                    .unwrap();
                committed.insert(m.id, c[0].rev);
                mine.push(m);
                if i % 3 == 0 {
                    // Update an earlier document and create one more in the same batch.
                    let mut old = mine[i / 2].clone();
                    old.name.push('+');
                    let extra = module(&format!("w{w}-{i}-extra"));
                    let c = store
                        .apply(&[
                            Write::put(&old, Expect::Rev(committed[&old.id])),
                            Write::put(&extra, Expect::Absent),
                        ])
                        .await
                        .unwrap();
                    committed.insert(old.id, c[0].rev);
                    committed.insert(extra.id, c[1].rev);
                    mine[i / 2] = old;
                }
                tokio::task::yield_now().await;
            }
            done.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            committed
        }));
    }
    let reader = {
        let store = store.clone();
        let done = done.clone();
        tokio::spawn(async move {
            let mut cursor = 0i64;
            let mut seen: BTreeMap<Uuid, i64> = BTreeMap::new();
            let mut created_seen = std::collections::HashSet::new();
            loop {
                let finished = done.load(std::sync::atomic::Ordering::SeqCst) == WRITERS;
                let page = store.changes_since(cursor, 37).await.unwrap();
                for doc in &page {
                    assert!(doc.seq > cursor, "feed went backwards");
                    cursor = doc.seq;
                    let prev = seen.insert(doc.id, doc.rev);
                    assert!(prev.is_none_or(|p| p < doc.rev), "revision went backwards");
                    created_seen.insert(doc.id);
                }
                if page.is_empty() {
                    if finished {
                        break;
                    }
                    tokio::task::yield_now().await;
                }
            }
            (seen, created_seen)
        })
    };
    let mut committed = HashMap::new();
    for w in writers {
        committed.extend(w.await.unwrap());
    }
    let (seen, created_seen) = reader.await.unwrap();
    for (id, rev) in &committed {
        assert!(
            created_seen.contains(id),
            "the feed reader never saw document {id}"
        );
        assert_eq!(
            seen.get(id),
            Some(rev),
            "the feed reader missed the final revision of {id}"
        );
    }
    assert_eq!(seen.len(), committed.len());
}

/// A rotation with grace keeps the old key until the grace ends; one
/// without clears it; a credential authenticates only while its location
/// exists; every change moves the counter and is in the credential log;
/// deleting the location deletes the credential. Sites: a system's owner,
/// and a module's through the systems that list it.
async fn credential_lifecycle_grace_log_and_scope(store: &Store) {
    let edge: outpost::model::EdgeLocation =
        serde_json::from_value(serde_json::json!({"id": new_id(), "name": "Lima"})).unwrap();
    let set = |expect, key: u8, grace| Write::SetCredential {
        id: edge.id,
        expect,
        link_key: vec![key; 32],
        grace_until_ms: grace,
    };
    let v0 = store.credentials_version().await.unwrap();
    store.apply(&[set(Expect::Absent, 1, None)]).await.unwrap();
    // No location yet: nothing authenticates.
    assert_eq!(store.edge_keys(edge.id, 0).await.unwrap(), None);
    store
        .apply(&[Write::put(&edge, Expect::Absent)])
        .await
        .unwrap();
    let keys = store.edge_keys(edge.id, 0).await.unwrap().unwrap();
    assert_eq!((keys.current, keys.previous), (vec![1; 32], None));
    store
        .apply(&[set(Expect::Rev(1), 2, Some(1_000))])
        .await
        .unwrap();
    let keys = store.edge_keys(edge.id, 999).await.unwrap().unwrap();
    assert_eq!(keys.current, vec![2; 32]);
    assert_eq!(keys.previous, Some((vec![1; 32], 1_000)));
    let later = store.edge_keys(edge.id, 1_000).await.unwrap().unwrap();
    assert_eq!(later.previous, None, "the grace is over");
    store.apply(&[set(Expect::Rev(2), 3, None)]).await.unwrap();
    let keys = store.edge_keys(edge.id, 0).await.unwrap().unwrap();
    assert_eq!((keys.current, keys.previous), (vec![3; 32], None));

    let room = module("room");
    let sys = system("Room", Some(edge.id), &[room.id]);
    let own = system("Lobby", None, &[]);
    store
        .apply(&[
            Write::put(&room, Expect::Absent),
            Write::put(&sys, Expect::Absent),
            Write::put(&own, Expect::Absent),
        ])
        .await
        .unwrap();
    use outpost::store::Site;
    assert_eq!(
        store.module_sites(room.id).await.unwrap(),
        vec![Site::Edge(edge.id)]
    );
    assert_eq!(
        store.system_site(sys.id).await.unwrap(),
        Some(Site::Edge(edge.id))
    );
    assert_eq!(store.system_site(own.id).await.unwrap(), Some(Site::Master));
    assert_eq!(store.system_site(room.id).await.unwrap(), None);
    assert!(store.module_sites(new_id()).await.unwrap().is_empty());

    let rev = store.get(edge.id).await.unwrap().unwrap().rev;
    store
        .apply(&[Write::Delete {
            id: edge.id,
            expect: Expect::Rev(rev),
        }])
        .await
        .unwrap();
    assert_eq!(store.link_key(edge.id).await.unwrap(), None);
    assert_eq!(store.credentials_version().await.unwrap(), v0 + 4);
    let log: Vec<String> = store
        .credential_log(edge.id, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.action)
        .collect();
    assert_eq!(log.len(), 4, "{log:?}");
    assert_eq!(log[0], "deleted");
    assert!(
        log[1].starts_with("rotated (the old secret stopped"),
        "{log:?}"
    );
    assert!(
        log[2].starts_with("rotated (the old secret works"),
        "{log:?}"
    );
    assert_eq!(log[3], "created");
}

/// The site audit log answers how each edge's last recorded stop went and
/// when it last stopped on purpose, on both backends.
async fn check_last_stops(s: &crate::support::TestStore) {
    let store = &s.store;
    let (a, b) = (uuid::Uuid::now_v7(), uuid::Uuid::now_v7());
    store
        .record_site_action(a, "planned_stop", 10, None)
        .await
        .unwrap();
    store
        .record_site_action(a, "maintenance_on", 15, Some("otto"))
        .await
        .unwrap();
    store
        .record_site_action(a, "lost_stop", 20, None)
        .await
        .unwrap();
    store
        .record_site_action(b, "planned_stop", 30, None)
        .await
        .unwrap();
    store
        .record_site_action(b, "planned_stop", 40, None)
        .await
        .unwrap();
    let (mut last, mut planned) = store.last_stops().await.unwrap();
    last.sort();
    planned.sort();
    let mut want_last = vec![
        (a, "lost_stop".to_owned(), 20),
        (b, "planned_stop".to_owned(), 40),
    ];
    want_last.sort();
    let mut want_planned = vec![(a, 10), (b, 40)];
    want_planned.sort();
    assert_eq!(last, want_last);
    assert_eq!(planned, want_planned);
}

#[tokio::test]
async fn last_stops_on_sqlite() {
    let s = crate::support::TestStore::sqlite().await;
    check_last_stops(&s).await;
    s.cleanup().await;
}

#[tokio::test]
async fn last_stops_on_postgres() {
    let Some(s) = crate::support::TestStore::postgres().await else {
        return;
    };
    check_last_stops(&s).await;
    s.cleanup().await;
}
