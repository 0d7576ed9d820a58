//! Persisted control epochs: a change of controller is a compare-and-set on
//! the epoch plus an audit record, in one transaction.

use outpost::control::{Reason, Rule, Side};
use outpost::model::new_id;
use outpost::store::{Store, StoreError};

crate::both_backends!(
    epochs_go_up_at_every_change_and_stale_decisions_lose,
    audit_log_pages_newest_first,
    racing_decisions_have_one_winner,
);

async fn epochs_go_up_at_every_change_and_stale_decisions_lose(store: &Store) {
    let edge = new_id();
    assert_eq!(store.control_state(edge).await.unwrap(), None);
    let first = store
        .change_controller(
            edge,
            None,
            Side::Edge,
            Reason::Negotiation(Rule::MasterNotInControl),
            1_000,
        )
        .await
        .unwrap();
    assert_eq!((first.epoch, first.from, first.to), (1, None, Side::Edge));
    // Someone who also believed nobody held the site is too late.
    match store
        .change_controller(edge, None, Side::Master, Reason::Boot, 1_001)
        .await
    {
        Err(StoreError::EpochConflict {
            expected: None,
            actual: Some(1),
            ..
        }) => {}
        other => panic!("expected an epoch conflict, got {other:?}"),
    }
    let takeover = store
        .change_controller(edge, Some(1), Side::Master, Reason::FailoverTimeout, 2_000)
        .await
        .unwrap();
    assert_eq!(
        (takeover.epoch, takeover.from, takeover.to),
        (2, Some(Side::Edge), Side::Master)
    );
    // A decision taken at epoch 1 is stale now.
    assert!(matches!(
        store
            .change_controller(edge, Some(1), Side::Edge, Reason::ManualRestore, 2_500)
            .await,
        Err(StoreError::EpochConflict {
            expected: Some(1),
            actual: Some(2),
            ..
        })
    ));
    let state = store.control_state(edge).await.unwrap().unwrap();
    assert_eq!(
        (state.controller, state.epoch, state.since_ms),
        (Side::Master, 2, 2_000)
    );
    let other = new_id();
    store
        .change_controller(other, None, Side::Master, Reason::Boot, 3_000)
        .await
        .unwrap();
    let all = store.control_states().await.unwrap();
    assert_eq!(all.len(), 2);
    assert!(
        all.iter()
            .any(|s| s.edge_id == edge && s.controller == Side::Master)
    );
}

async fn audit_log_pages_newest_first(store: &Store) {
    let edge = new_id();
    let reasons = [
        (Side::Edge, Reason::Negotiation(Rule::MasterNotInControl)),
        (Side::Master, Reason::FailoverTimeout),
        (Side::Edge, Reason::RestoreWindow),
        (Side::Master, Reason::FailoverTimeout),
        (Side::Edge, Reason::ManualRestore),
    ];
    let mut epoch = None;
    for (i, (to, reason)) in reasons.iter().enumerate() {
        let r = store
            .change_controller(edge, epoch, *to, *reason, i as i64)
            .await
            .unwrap();
        epoch = Some(r.epoch);
    }
    // Another location's history stays separate.
    store
        .change_controller(new_id(), None, Side::Edge, Reason::Boot, 0)
        .await
        .unwrap();
    let page = store.control_log(edge, None, 2).await.unwrap();
    assert_eq!(page.iter().map(|r| r.epoch).collect::<Vec<_>>(), vec![5, 4]);
    assert_eq!(page[0].reason, Reason::ManualRestore);
    assert_eq!(page[0].from, Some(Side::Master));
    let rest = store.control_log(edge, Some(4), 10).await.unwrap();
    assert_eq!(
        rest.iter().map(|r| r.epoch).collect::<Vec<_>>(),
        vec![3, 2, 1]
    );
    assert_eq!(
        rest[2].reason,
        Reason::Negotiation(Rule::MasterNotInControl)
    );
    assert_eq!(rest[2].from, None);
}

async fn racing_decisions_have_one_winner(store: &Store) {
    let edge = new_id();
    store
        .change_controller(edge, None, Side::Edge, Reason::Boot, 0)
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for i in 0..8 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let to = if i % 2 == 0 { Side::Master } else { Side::Edge };
            store
                .change_controller(edge, Some(1), to, Reason::FailoverTimeout, i)
                .await
        }));
    }
    let mut won = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(r) => {
                won += 1;
                assert_eq!(r.epoch, 2);
            }
            Err(StoreError::EpochConflict {
                actual: Some(2), ..
            }) => {}
            Err(e) => panic!("unexpected error: {e}"),
        }
    }
    assert_eq!(won, 1, "exactly one decision wins an epoch");
    assert_eq!(store.control_log(edge, None, 10).await.unwrap().len(), 2);
}
