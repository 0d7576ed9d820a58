//! The edge's bounded event log and the master's idempotent collection.

use outpost::model::new_id;
use outpost::store::{Appended, Event, EventKind, Store};
use uuid::Uuid;

crate::both_backends!(
    status_changes_coalesce_while_unsynced,
    a_full_log_drops_status_first_and_never_control,
    a_batch_coalesces_within_itself_and_the_kept_size_holds_the_bound,
    collection_is_idempotent_and_moves_the_cursor_with_the_events,
    batches_larger_than_one_statement_are_stored_and_marked_once,
    only_the_controlling_side_writes_history,
    retention_counts_from_when_the_master_stored_an_event,
);

/// The master's clock when the tests below store what they collect.
const NOW: i64 = 1_795_341_600_000;
const DAY: i64 = 86_400_000;

fn event(edge: Uuid, module: Uuid, kind: EventKind, key: Option<&str>, body: &str) -> Event {
    Event {
        id: new_id(),
        edge_id: edge,
        at_ms: 1,
        module_id: Some(module),
        kind,
        key: key.map(String::from),
        epoch: Some(1),
        body: body.into(),
    }
}

async fn status_changes_coalesce_while_unsynced(store: &Store) {
    let (edge, module) = (new_id(), new_id());
    store
        .log_event(
            &event(edge, module, EventKind::Status, Some("power"), "\"on\""),
            100,
        )
        .await
        .unwrap();
    store
        .log_event(
            &event(edge, module, EventKind::Status, Some("input"), "\"hdmi1\""),
            100,
        )
        .await
        .unwrap();
    store
        .log_event(
            &event(edge, module, EventKind::Status, Some("power"), "\"off\""),
            100,
        )
        .await
        .unwrap();
    let log = store.unsynced_events(0, 100).await.unwrap();
    let bodies: Vec<&str> = log.iter().map(|e| e.event.body.as_str()).collect();
    assert_eq!(
        bodies,
        vec!["\"hdmi1\"", "\"off\""],
        "only the latest power value is kept"
    );
    // Once synced, a value is history: a new change is a new event.
    store.mark_synced(&[log[1].event.id]).await.unwrap();
    store
        .log_event(
            &event(edge, module, EventKind::Status, Some("power"), "\"on\""),
            100,
        )
        .await
        .unwrap();
    let unsynced = store.unsynced_events(0, 100).await.unwrap();
    assert_eq!(unsynced.len(), 2);
    assert_eq!(store.event_counts().await.unwrap(), (2, 0));
    // Paging by position in the log.
    let rest = store.unsynced_events(unsynced[0].seq, 100).await.unwrap();
    assert_eq!(rest.len(), 1);
    // Appending the same event twice keeps one.
    let e = event(edge, module, EventKind::Exec, None, "{}");
    let a = store.log_event(&e, 100).await.unwrap();
    let b = store.log_event(&e, 100).await.unwrap();
    assert_eq!(a, b);
    assert_eq!(store.event_counts().await.unwrap(), (3, 0));
}

/// One transaction per batch: a status change superseded in the same batch
/// is never stored, and the size the store keeps (counted once, then kept
/// by the appends) bounds the log as a count would.
async fn a_batch_coalesces_within_itself_and_the_kept_size_holds_the_bound(store: &Store) {
    let (edge, module) = (new_id(), new_id());
    let max = 5;
    let status = |key: &str, body: &str| event(edge, module, EventKind::Status, Some(key), body);
    let exec = |body: &str| event(edge, module, EventKind::Exec, None, body);
    let batch = vec![
        status("power", "\"on\""),
        status("power", "\"off\""),
        exec("\"e1\""),
        status("input", "\"a\""),
        exec("\"e2\""),
        exec("\"e3\""),
        exec("\"e4\""),
    ];
    let a = store.append_events(&batch, max).await.unwrap();
    assert_eq!(
        a,
        Appended {
            added: 6,
            dropped: 1,
            size: 5
        }
    );
    let bodies = |log: Vec<outpost::store::LoggedEvent>| -> Vec<String> {
        log.into_iter().map(|e| e.event.body).collect()
    };
    assert_eq!(
        bodies(store.unsynced_events(0, 100).await.unwrap()),
        ["\"e1\"", "\"a\"", "\"e2\"", "\"e3\"", "\"e4\""],
        "\"on\" was superseded in its batch; \"off\" was the oldest status change"
    );
    let controls: Vec<Event> = (0..3)
        .map(|i| event(edge, module, EventKind::Control, None, &format!("{i}")))
        .collect();
    let a = store.append_events(&controls, max).await.unwrap();
    assert_eq!(
        a,
        Appended {
            added: 3,
            dropped: 3,
            size: 5
        }
    );
    assert_eq!(
        bodies(store.unsynced_events(0, 100).await.unwrap()),
        ["\"e3\"", "\"e4\"", "0", "1", "2"]
    );
    assert_eq!(store.event_counts().await.unwrap(), (5, 4));
    // A status change replacing a stored one does not grow the log.
    store
        .append_events(&[status("power", "1")], max)
        .await
        .unwrap();
    let a = store
        .append_events(&[status("power", "2")], max)
        .await
        .unwrap();
    assert_eq!((a.added, a.size), (1, 5));
}

async fn a_full_log_drops_status_first_and_never_control(store: &Store) {
    let (edge, module) = (new_id(), new_id());
    let max = 6;
    let control = event(edge, module, EventKind::Control, None, "{\"to\":\"edge\"}");
    store.log_event(&control, max).await.unwrap();
    let synced = event(edge, module, EventKind::Exec, None, "\"synced\"");
    store.log_event(&synced, max).await.unwrap();
    store.mark_synced(&[synced.id]).await.unwrap();
    for i in 0..4 {
        store
            .log_event(
                &event(edge, module, EventKind::Status, Some(&format!("k{i}")), "1"),
                max,
            )
            .await
            .unwrap();
    }
    // Full (6). One more: the synced row goes first, nothing is lost.
    store
        .log_event(&event(edge, module, EventKind::Exec, None, "\"e1\""), max)
        .await
        .unwrap();
    assert_eq!(store.event_counts().await.unwrap(), (6, 0));
    // Then the oldest status changes, counted as dropped.
    store
        .log_event(&event(edge, module, EventKind::Exec, None, "\"e2\""), max)
        .await
        .unwrap();
    store
        .log_event(
            &event(
                edge,
                module,
                EventKind::Control,
                None,
                "{\"to\":\"master\"}",
            ),
            max,
        )
        .await
        .unwrap();
    assert_eq!(store.event_counts().await.unwrap(), (6, 2));
    let kinds: Vec<EventKind> = store
        .unsynced_events(0, 100)
        .await
        .unwrap()
        .iter()
        .map(|e| e.event.kind.clone())
        .collect();
    assert_eq!(
        kinds,
        vec![
            EventKind::Control,
            EventKind::Status,
            EventKind::Status,
            EventKind::Exec,
            EventKind::Exec,
            EventKind::Control
        ]
    );
    // Only control changes left to give up: they are kept beyond the bound.
    for _ in 0..6 {
        store
            .log_event(&event(edge, module, EventKind::Control, None, "{}"), max)
            .await
            .unwrap();
    }
    let kinds: Vec<EventKind> = store
        .unsynced_events(0, 100)
        .await
        .unwrap()
        .iter()
        .map(|e| e.event.kind.clone())
        .collect();
    assert_eq!(
        kinds.iter().filter(|k| **k == EventKind::Control).count(),
        8
    );
    assert!(kinds.iter().all(|k| *k == EventKind::Control));
    assert_eq!(store.event_counts().await.unwrap().1, 6);
}

async fn collection_is_idempotent_and_moves_the_cursor_with_the_events(store: &Store) {
    let (edge, module) = (new_id(), new_id());
    assert_eq!(store.sync_cursor(edge).await.unwrap(), 0);
    let batch: Vec<Event> = (0..5)
        .map(|i| event(edge, module, EventKind::Exec, None, &i.to_string()))
        .collect();
    assert_eq!(
        store
            .collect_events(edge, &batch[..3], Some(3), NOW)
            .await
            .unwrap(),
        3
    );
    // A retried batch (the ack was lost) stores nothing twice.
    assert_eq!(
        store
            .collect_events(edge, &batch, Some(5), NOW)
            .await
            .unwrap(),
        2
    );
    assert_eq!(store.sync_cursor(edge).await.unwrap(), 5);
    // The cursor never moves back.
    store.collect_events(edge, &[], Some(2), NOW).await.unwrap();
    assert_eq!(store.sync_cursor(edge).await.unwrap(), 5);
    let stored = store.events_of(edge, 0, 100).await.unwrap();
    assert_eq!(stored.len(), 5);
    assert!(stored.iter().all(|e| e.synced));
    assert_eq!(
        stored.iter().map(|e| e.event.id).collect::<Vec<_>>(),
        batch.iter().map(|e| e.id).collect::<Vec<_>>()
    );
    assert!(store.events_of(new_id(), 0, 100).await.unwrap().is_empty());
}

/// The AURA rule, by epochs: events the edge produced under an epoch whose
/// control record gives the site to the master are refused (whatever their
/// time says), and stored all the same, marked with the reason; events
/// under the edge's epochs, before any record, and its own control records
/// are accepted. Events without an epoch (an older edge) are judged by
/// time, as before.
async fn only_the_controlling_side_writes_history(store: &Store) {
    use outpost::control::{Reason, Side};
    let (edge, module) = (new_id(), new_id());
    let under = |epoch: Option<i64>, ms: i64| Event {
        at_ms: ms,
        epoch,
        ..event(edge, module, EventKind::Exec, None, &ms.to_string())
    };
    let kept = |events: Vec<Event>| {
        let store = store.clone();
        async move {
            outpost::master::accept_from_controller(&store, edge, events)
                .await
                .unwrap()
                .into_iter()
                .map(|e| e.at_ms)
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(
        kept(vec![under(Some(0), 1), under(None, 2)]).await,
        vec![1, 2],
        "no takeover recorded"
    );
    store
        .change_controller(edge, None, Side::Edge, Reason::Boot, 1_000)
        .await
        .unwrap();
    store
        .change_controller(edge, Some(1), Side::Master, Reason::FailoverTimeout, 2_000)
        .await
        .unwrap();
    store
        .change_controller(edge, Some(2), Side::Edge, Reason::RestoreWindow, 3_000)
        .await
        .unwrap();
    // Times that would mislead: the edge's clock is far off.
    assert_eq!(
        kept(vec![
            under(Some(0), 9_000),
            under(Some(1), 2_500),
            under(Some(2), 500),
            under(Some(3), 2_400),
            under(Some(4), 3_500),
        ])
        .await,
        vec![9_000, 2_500, 2_400],
        "only the edge's epochs count, never the time"
    );
    assert_eq!(
        kept(vec![
            under(None, 500),
            under(None, 2_500),
            under(None, 3_500)
        ])
        .await,
        vec![500, 3_500],
        "without an epoch, the time decides"
    );

    // Refused events are stored, marked with the reason; the edge's control
    // records under the master's epoch (its autonomy) are accepted.
    let autonomy = Event {
        epoch: Some(2),
        ..event(
            edge,
            module,
            EventKind::Control,
            None,
            "{\"event\":\"autonomy\"}",
        )
    };
    let batch = vec![under(Some(2), 10), under(Some(3), 11), autonomy];
    let judged = outpost::master::judge_events(store, edge, batch)
        .await
        .unwrap();
    let rows: Vec<(&Event, Option<&str>)> =
        judged.iter().map(|(e, why)| (e, why.as_deref())).collect();
    assert_eq!(
        store.collect_judged(edge, &rows, None, NOW).await.unwrap(),
        3
    );
    let stored = store.events_of(edge, 0, 100).await.unwrap();
    let reasons: Vec<Option<&str>> = stored.iter().map(|e| e.refused.as_deref()).collect();
    assert_eq!(
        reasons,
        [
            Some("produced under epoch 2, when the master controlled the location"),
            None,
            None
        ]
    );
}

/// Batches span several multi-row statements: counts, duplicates and
/// marking still hold across their edges.
async fn batches_larger_than_one_statement_are_stored_and_marked_once(store: &Store) {
    let (edge, module) = (new_id(), new_id());
    let batch: Vec<Event> = (0..130)
        .map(|i| event(edge, module, EventKind::Exec, None, &i.to_string()))
        .collect();
    assert_eq!(
        store
            .collect_events(edge, &batch[..70], None, NOW)
            .await
            .unwrap(),
        70
    );
    // Overlapping, with a duplicate inside the batch itself.
    let mut again = batch[40..].to_vec();
    again.push(batch[100].clone());
    assert_eq!(
        store
            .collect_events(edge, &again, Some(9), NOW)
            .await
            .unwrap(),
        60
    );
    let stored = store.events_of(edge, 0, 1000).await.unwrap();
    assert_eq!(
        stored.iter().map(|e| e.event.id).collect::<Vec<_>>(),
        batch.iter().map(|e| e.id).collect::<Vec<_>>()
    );

    // The edge's side: marking more ids than one statement holds.
    let (edge, module) = (new_id(), new_id());
    let mut ids = Vec::new();
    for i in 0..80 {
        let e = event(edge, module, EventKind::Exec, None, &i.to_string());
        ids.push(e.id);
        store.log_event(&e, 1000).await.unwrap();
    }
    assert_eq!(store.event_counts().await.unwrap().0, 80);
    store.mark_synced(&ids[..61]).await.unwrap();
    let left = store.unsynced_events(0, 1000).await.unwrap();
    assert_eq!(
        left.iter().map(|e| e.event.id).collect::<Vec<_>>(),
        ids[61..].to_vec()
    );
}

/// A full disk fails writes, and nothing more: once there is room again,
/// the next write is committed and seen by another connection (another
/// process). SQLite rolls a transaction back by itself when the disk is
/// full; before the writer pool checked for it, the store's connection was
/// left inside a transaction that nothing committed, holding the write
/// lock for good (found by the fault suite's disk-full fault).
#[tokio::test]
async fn a_full_disk_fails_writes_and_leaves_the_store_writable() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let Some(disk) = crate::disk::Disk::mount(&data) else {
        println!("skipped: this process may not mount a tmpfs (needs root)");
        return;
    };
    let url = format!("sqlite://{}", data.join("store.db").display());
    let store = Store::open(&outpost::store::StoreOptions::new(url.clone()))
        .await
        .unwrap();
    let (edge, module) = (new_id(), new_id());
    let big = format!("\"{}\"", "x".repeat(64 * 1024));
    disk.fill();
    let mut failures = 0;
    for n in 0..50 {
        let key = format!("k{n}");
        let batch: Vec<Event> = (0..4)
            .map(|_| event(edge, module, EventKind::Exec, Some(&key), &big))
            .collect();
        if store.append_events(&batch, 1_000_000).await.is_err() {
            failures += 1;
        }
    }
    assert!(failures > 0, "a full disk fails some writes");
    disk.free();
    let after = event(edge, module, EventKind::Control, None, "{}");
    store.log_event(&after, 1_000_000).await.unwrap();
    let other = Store::open(&outpost::store::StoreOptions::new(url))
        .await
        .expect("another connection opens the store (no write lock left held)");
    let seen = other.unsynced_events(0, 1_000).await.unwrap();
    assert!(
        seen.iter().any(|e| e.event.id == after.id),
        "the write after the disk was freed is committed"
    );
    other.close().await;
    store.close().await;
    drop(disk);
}

/// The master's retention by age reads when the master stored each event
/// (`stored_ms`, its own clock), not the edge's stamp: an edge whose clock
/// is 100 days behind loses nothing at the next prune, one 100 days ahead
/// keeps nothing past its time, and a retried event keeps its first stamp.
async fn retention_counts_from_when_the_master_stored_an_event(store: &Store) {
    let (edge, module) = (new_id(), new_id());
    let stamped = |at_ms: i64, body: &str| Event {
        at_ms,
        ..event(edge, module, EventKind::Exec, None, body)
    };
    let ahead = stamped(NOW + 100 * DAY, "ahead");
    let early = [ahead.clone(), stamped(NOW, "on time")];
    store
        .collect_events(edge, &early, None, NOW - 91 * DAY)
        .await
        .unwrap();
    let behind = [stamped(NOW - 100 * DAY, "behind"), stamped(1, "1970")];
    store
        .collect_events(edge, &behind, None, NOW)
        .await
        .unwrap();
    // A retry of an event stored long ago does not make it new.
    assert_eq!(
        store
            .collect_events(edge, &[ahead], None, NOW)
            .await
            .unwrap(),
        0
    );
    let bodies = async || -> Vec<String> {
        let log = store.events_of(edge, 0, 100).await.unwrap();
        log.into_iter().map(|e| e.event.body).collect()
    };

    // Ninety days, as the master's retention computes it from its now.
    assert_eq!(store.prune_events(NOW - 90 * DAY, 0).await.unwrap(), 2);
    assert_eq!(bodies().await, ["behind", "1970"]);
    // Nothing else is past ninety days until the master's clock says so.
    assert_eq!(store.prune_events(NOW - 90 * DAY, 0).await.unwrap(), 0);
    assert_eq!(store.prune_events(NOW, 0).await.unwrap(), 0);
    assert_eq!(store.prune_events(NOW + 1, 0).await.unwrap(), 2);
    assert!(bodies().await.is_empty());
}
