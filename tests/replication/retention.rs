//! The master's collected events are kept by age and by count: pruned at
//! start and then every hour of the control clock (moved by hand here).
//! Age counts from when the master stored an event, by its own clock, never
//! from the edge's stamp.

use std::time::Duration;

use outpost::control::Clock;
use outpost::model::new_id;
use outpost::proto::RequestBody;
use outpost::store::{Event, EventKind, Store};
use serde_json::json;
use uuid::Uuid;

use crate::http::request;
use crate::roles::{Room, Site, device, eventually};

/// 2026-11-22 10:00 UTC.
const T0: i64 = 1_795_341_600_000;
const DAY: i64 = 86_400_000;
const HOUR: i64 = 3_600_000;

fn event(edge: Uuid, at_ms: i64, body: &str) -> Event {
    Event {
        id: new_id(),
        edge_id: edge,
        at_ms,
        module_id: Some(new_id()),
        kind: EventKind::Exec,
        key: None,
        epoch: Some(1),
        body: format!("\"{body}\""),
    }
}

async fn kept(store: &Store, edge: Uuid) -> Vec<String> {
    let log = store.events_of(edge, 0, 100).await.unwrap();
    log.into_iter()
        .map(|e| e.event.body.trim_matches('"').to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collected_events_are_pruned_by_age_and_by_count() {
    let site = Site::new();
    let edge = new_id();
    let store = site.master_store().await;
    let old = [
        event(edge, T0 - 91 * DAY, "a"),
        event(edge, T0 - 89 * DAY, "b"),
        event(edge, T0 - DAY, "c"),
        event(edge, T0 - HOUR, "d"),
    ];
    // Each stored by the master when its edge stamped it.
    for e in &old {
        let one = std::slice::from_ref(e);
        store
            .collect_events(edge, one, None, e.at_ms)
            .await
            .unwrap();
    }
    store.close().await;

    let clock = Clock::manual(T0);
    let config = outpost::config::Config {
        event_retention_max: 3,
        ..site.master_config()
    };
    let master = outpost::master::start_with_clock(config, clock.clone())
        .await
        .unwrap();
    // At start: "a" is past 90 days.
    eventually(10, "the 91-day-old event to go", async || {
        kept(&master.store, edge).await == ["b", "c", "d"]
    })
    .await;

    // A fourth: an hour later the oldest goes, however recent.
    master
        .store
        .collect_events(edge, &[event(edge, T0, "e")], None, clock.now_ms())
        .await
        .unwrap();
    assert_eq!(kept(&master.store, edge).await, ["b", "c", "d", "e"]);
    clock.advance(Duration::from_millis(HOUR as u64));
    eventually(10, "the count bound to hold", async || {
        kept(&master.store, edge).await == ["c", "d", "e"]
    })
    .await;

    // 89 days on, "c" (a day older than the rest) is past 90 days.
    clock.advance(Duration::from_millis(89 * DAY as u64));
    eventually(10, "the age bound to hold", async || {
        kept(&master.store, edge).await == ["d", "e"]
    })
    .await;

    let metrics = request(master.api_addr, "GET", "/metrics", &[], None).await;
    let pruned: f64 = metrics
        .body
        .lines()
        .find(|l| l.starts_with("outpost_events_pruned_total"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .expect("outpost_events_pruned_total is exported");
    assert!(pruned >= 3.0, "{pruned}");
    master.stop().await;
}

/// Issue 13: an edge whose clock is 100 days behind the master's. What it
/// records reaches the master, the master's hourly retention runs, and
/// every event is still there: the age bound counts from when the master
/// stored them. They go when the master's own clock has them 90 days old.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edge_whose_clock_is_100_days_behind_loses_no_event_to_retention() {
    let site = Site::new();
    let Room {
        edge_id,
        system,
        secret,
    } = site
        .one_room(json!({}), &[device("room", "room.lua", None)])
        .await;
    // Witnesses, from another edge, stored by this master (by its clock)
    // before the test: "stale" is past 90 days when the master starts;
    // "due" passes 90 days within the next hour, so its going shows that
    // the hourly prune has run.
    let other = new_id();
    let stale = event(other, T0 - 91 * DAY, "stale");
    let due = event(other, T0 - 90 * DAY + HOUR / 2, "due");
    let store = site.master_store().await;
    for e in [&stale, &due] {
        let one = std::slice::from_ref(e);
        store
            .collect_events(other, one, None, e.at_ms)
            .await
            .unwrap();
    }
    store.close().await;

    let clock = Clock::manual(T0);
    let config = outpost::config::Config {
        sync_interval_ms: 50,
        sync_step_sleep_ms: 1,
        ..site.master_config()
    };
    let master = outpost::master::start_with_clock(config, clock.clone())
        .await
        .unwrap();
    eventually(10, "the prune at start", async || {
        kept(&master.store, other).await == ["due"]
    })
    .await;

    let edge_clock = Clock::manual(T0 - 100 * DAY);
    let edge_config = site.edge_config(edge_id, &secret, master.link_addr);
    let edge = outpost::edge::start_with_clock(edge_config, edge_clock.clone())
        .await
        .unwrap();
    eventually(20, "the edge to run its site", async || {
        edge.control.is_running().await && master.registry.peer(edge_id).is_some()
    })
    .await;
    // Its control record, an exec and the status changes the exec makes.
    let peer = master.registry.peer(edge_id).unwrap();
    let exec = RequestBody::Exec {
        module: system.module_ids[0].to_string(),
        method: "power_on".into(),
        args: json!(null),
        epoch: Some(edge.control.epoch()),
    };
    // (The site runs before its modules have all loaded.)
    eventually(20, "the room module to answer", async || {
        let call = peer.request(exec.clone(), Duration::from_secs(10)).await;
        call.is_ok()
    })
    .await;
    let collected = async || master.store.events_of(edge_id, 0, 10_000).await.unwrap();
    eventually(20, "the edge's events to reach the master", async || {
        let kinds: Vec<EventKind> = collected()
            .await
            .into_iter()
            .map(|e| e.event.kind)
            .collect();
        [EventKind::Control, EventKind::Exec, EventKind::Status]
            .iter()
            .all(|k| kinds.contains(k))
            && edge.store.event_counts().await.unwrap().0 == 0
    })
    .await;
    let stored = collected().await;
    assert!(
        stored
            .iter()
            .all(|e| e.event.at_ms <= T0 - 100 * DAY + HOUR),
        "stamped by the edge's clock: {stored:?}"
    );
    let ids = |log: &[outpost::store::LoggedEvent]| -> Vec<Uuid> {
        log.iter().map(|e| e.event.id).collect()
    };
    let ours = ids(&stored);

    // An hour on, the master prunes: "due" goes, the edge's events stay.
    clock.advance(Duration::from_millis(HOUR as u64));
    eventually(10, "the hourly prune", async || {
        kept(&master.store, other).await.is_empty()
    })
    .await;
    let still = ids(&collected().await);
    assert!(
        ours.iter().all(|id| still.contains(id)),
        "retention deleted events of an edge whose clock is behind: kept {} of {}",
        ours.iter().filter(|id| still.contains(id)).count(),
        ours.len()
    );

    // Ninety days on by the master's clock, they are past retention.
    edge.stop().await;
    clock.advance(Duration::from_millis(90 * DAY as u64));
    eventually(10, "the edge's events to age out", async || {
        let left = ids(&collected().await);
        ours.iter().all(|id| !left.contains(id))
    })
    .await;
    master.stop().await;
}
