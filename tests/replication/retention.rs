//! The master's collected events are kept by age and by count: pruned at
//! start and then every hour of the control clock (moved by hand here).

use std::time::Duration;

use outpost::control::Clock;
use outpost::model::new_id;
use outpost::store::{Event, EventKind, Store};
use uuid::Uuid;

use crate::http::request;
use crate::roles::{Site, eventually};

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
    store.collect_events(edge, &old, None).await.unwrap();
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
        .collect_events(edge, &[event(edge, T0, "e")], None)
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
