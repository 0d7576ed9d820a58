//! A replica follows the master's change feed page by page and ends up with
//! exactly the master's documents, tombstones and indexes.

use outpost::model::{Kind, index_document};
use outpost::store::{Document, Expect, Replicated, Store, Write};

use crate::support::{TestStore, example_drivers, example_site};

/// Pulls every change after the replica's checkpoint, in pages.
async fn catch_up(master: &Store, replica: &Store, page: u32) {
    let mut cursor = replica.begin_replication(master.store_id()).await.unwrap();
    loop {
        let docs = master.changes_since(cursor, page).await.unwrap();
        let Some(last) = docs.last() else { break };
        cursor = last.seq;
        let batch: Vec<Replicated> = docs
            .into_iter()
            .map(|doc| {
                let refs = index_document(&doc.kind, &doc.body).unwrap().refs;
                Replicated { doc, refs }
            })
            .collect();
        replica.apply_replicated(&batch, cursor).await.unwrap();
    }
}

async fn all(store: &Store) -> Vec<Document> {
    let mut docs = Vec::new();
    for kind in Kind::ALL {
        docs.extend(store.list_all(kind).await.unwrap());
    }
    docs
}

async fn check_replica(master: &TestStore, replica: &TestStore) {
    let (m, r) = (&master.store, &replica.store);
    outpost::admin::import(m, &example_site(), &example_drivers())
        .await
        .unwrap();
    catch_up(m, r, 5).await;
    assert_eq!(all(r).await, all(m).await);
    assert_eq!(r.last_seq().await.unwrap(), m.last_seq().await.unwrap());
    assert_eq!(r.upstream().await.unwrap(), Some(m.store_id()));
    let projector = "0191e9a0-0000-7000-8000-000000000101".parse().unwrap();
    assert_eq!(
        r.referencing(Kind::System, projector).await.unwrap(),
        m.referencing(Kind::System, projector).await.unwrap(),
        "the replica's reference index is derived like the master's"
    );

    // The master changes while the replica is away: an update, a delete, a
    // new document. The replica catches up from its checkpoint only.
    let before = r.last_seq().await.unwrap();
    let doc = m.get(projector).await.unwrap().unwrap();
    let mut module: outpost::model::Module = doc.parse().unwrap();
    module.name = "renamed".into();
    let lobby = m
        .list_all(Kind::System)
        .await
        .unwrap()
        .into_iter()
        .find(|d| d.body.contains("Head office lobby"))
        .unwrap();
    let added = outpost::model::Module {
        id: outpost::model::new_id(),
        name: "new".into(),
        ..module.clone()
    };
    m.apply(&[
        Write::put(&module, Expect::Rev(doc.rev)),
        Write::Delete {
            id: lobby.id,
            expect: Expect::Rev(lobby.rev),
        },
        Write::put(&added, Expect::Absent),
    ])
    .await
    .unwrap();
    // The lobby's modules changed site with it (none, now): they are
    // re-stamped, so a per-site feed can tell the edge that had them.
    let lobby_modules = lobby
        .parse::<outpost::model::ControlSystem>()
        .unwrap()
        .module_ids
        .into_iter()
        .filter(|id| *id != module.id)
        .collect::<std::collections::HashSet<_>>();
    assert_eq!(
        m.changes_since(before, 1000).await.unwrap().len(),
        3 + lobby_modules.len(),
        "only the changes are pending, with the modules whose site changed"
    );
    catch_up(m, r, 3).await;
    assert_eq!(all(r).await, all(m).await);
    assert!(
        r.get(lobby.id).await.unwrap().is_none(),
        "the tombstone reached the replica"
    );
    assert!(
        r.referencing(Kind::System, projector)
            .await
            .unwrap()
            .is_empty()
    );

    // Applying an old page again changes nothing.
    let old: Vec<Replicated> = m
        .changes_since(0, 1000)
        .await
        .unwrap()
        .into_iter()
        .map(|doc| Replicated { refs: vec![], doc })
        .collect();
    let snapshot = all(r).await;
    r.apply_replicated(&old, 1).await.unwrap();
    assert_eq!(all(r).await, snapshot);
    assert_eq!(
        r.last_seq().await.unwrap(),
        m.last_seq().await.unwrap(),
        "the checkpoint never moves back"
    );

    // A replaced master database: the replica starts again from nothing.
    assert_eq!(
        r.begin_replication(outpost::model::new_id()).await.unwrap(),
        0
    );
    assert!(all(r).await.is_empty());
}

#[tokio::test]
async fn sqlite_replica_of_sqlite_master() {
    let (m, r) = (TestStore::sqlite().await, TestStore::sqlite().await);
    check_replica(&m, &r).await;
    m.cleanup().await;
    r.cleanup().await;
}

#[tokio::test]
async fn sqlite_replica_of_postgres_master() {
    let Some(m) = TestStore::postgres().await else {
        return;
    };
    let r = TestStore::sqlite().await;
    check_replica(&m, &r).await;
    m.cleanup().await;
    r.cleanup().await;
}

#[tokio::test]
async fn store_ids_are_stable_and_distinct() {
    let a = TestStore::sqlite().await;
    let b = TestStore::sqlite().await;
    assert_ne!(a.store.store_id(), b.store.store_id());
    assert!(!a.store.store_id().is_nil());
    a.cleanup().await;
    b.cleanup().await;
}
