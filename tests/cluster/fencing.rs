//! A write of a node whose term is over fails in its own transaction, even
//! when it was delayed past a new grant: the delay is a lock the test holds
//! on the store's sequence counter, which the write needs before it checks
//! its term (as `WriteLock` holds SQLite's write lock elsewhere).

use outpost::model::{ControlSystem, new_id};
use outpost::store::{Expect, Store, StoreError, StoreOptions, Write};
use sqlx::Connection as _;

use crate::{Database, eventually};

fn system(name: &str) -> ControlSystem {
    ControlSystem {
        id: new_id(),
        name: name.into(),
        description: String::new(),
        edge_id: None,
        module_ids: Vec::new(),
        settings: Default::default(),
        stopped: false,
    }
}

async fn writers_waiting_on_locks(db: &Database, admin: &sqlx::PgPool) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND wait_event_type = 'Lock'",
    )
    .bind(&db.name)
    .fetch_one(admin)
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delayed_write_of_a_fenced_node_is_refused_by_its_term() {
    let Some(db) = Database::create().await else {
        return;
    };
    let a = Store::open(&StoreOptions::new(db.url.clone()))
        .await
        .unwrap();
    let b = Store::open(&StoreOptions::new(db.url.clone()))
        .await
        .unwrap();
    a.fence_as("a");
    b.fence_as("b");
    let early = system("refused before any grant");
    let refused = a.apply(&[Write::put(&early, Expect::Absent)]).await;
    assert!(
        matches!(refused, Err(StoreError::Fenced { term: 0 })),
        "{refused:?}"
    );

    let term_a = a
        .acquire_lease("a", 0, 300, "granted")
        .await
        .unwrap()
        .unwrap();
    a.set_fence_term(term_a);
    let first = system("written in term a");
    a.apply(&[Write::put(&first, Expect::Absent)])
        .await
        .unwrap();

    // The test holds the sequence counter: A's next write waits there,
    // before its term check.
    let mut hold = sqlx::PgConnection::connect(&db.url).await.unwrap();
    let mut held = hold.begin().await.unwrap();
    sqlx::query("SELECT value FROM outpost_meta WHERE key = 'seq' FOR UPDATE")
        .execute(&mut *held)
        .await
        .unwrap();
    let late = system("delayed past the new term");
    let delayed = {
        let (a, late) = (a.clone(), late.clone());
        tokio::spawn(async move { a.apply(&[Write::put(&late, Expect::Absent)]).await })
    };
    let admin = sqlx::PgPool::connect(&db.url).await.unwrap();
    eventually(10, "A's write to wait on the held counter", async || {
        writers_waiting_on_locks(&db, &admin).await >= 1
    })
    .await;

    // A does not renew: once its lease is over at the server, B is granted
    // the next term.
    let mut term_b = None;
    eventually(10, "B to be granted the lease", async || {
        term_b = b.acquire_lease("b", 0, 30_000, "granted").await.unwrap();
        term_b.is_some()
    })
    .await;
    let term_b = term_b.unwrap();
    assert_eq!(term_b, term_a + 1, "each grant raises the term");
    b.set_fence_term(term_b);

    held.rollback().await.unwrap();
    let result = delayed.await.unwrap();
    assert!(
        matches!(result, Err(StoreError::Fenced { term }) if term == term_a),
        "the delayed write must fail on its term: {result:?}"
    );
    assert!(
        b.get(late.id).await.unwrap().is_none(),
        "nothing of it committed"
    );
    assert!(b.get(first.id).await.unwrap().is_some());
    // B's writes pass; A's stay refused.
    b.apply(&[Write::put(&system("written in term b"), Expect::Absent)])
        .await
        .unwrap();
    let again = a
        .apply(&[Write::put(&system("after"), Expect::Absent)])
        .await;
    assert!(matches!(again, Err(StoreError::Fenced { .. })), "{again:?}");
    let history = b.cluster_history(10).await.unwrap();
    let terms: Vec<(String, i64)> = history
        .iter()
        .map(|h| (h.node_id.clone(), h.term))
        .collect();
    assert_eq!(
        terms,
        vec![("b".to_owned(), term_b), ("a".to_owned(), term_a)]
    );

    admin.close().await;
    drop(hold);
    a.close().await;
    b.close().await;
    db.drop_it().await;
}
