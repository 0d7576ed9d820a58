//! Events a master does not accept, over the real link: a kind this build
//! does not know is stored as it came on both sync paths (active push and
//! passive pull), and an event produced under an epoch the edge did not
//! control is stored marked refused, with the reason, and counted.

use outpost::store::{Event, EventKind, LoggedEvent};
use serde_json::json;
use uuid::Uuid;

use crate::http::request;
use crate::roles::{Room, Site, eventually};

fn teleport(edge_id: Uuid, epoch: i64) -> Event {
    Event {
        id: outpost::model::new_id(),
        edge_id,
        at_ms: 1,
        module_id: None,
        kind: EventKind::Other("teleport".into()),
        key: None,
        epoch: Some(epoch),
        body: "{\"to\":\"mars\"}".into(),
    }
}

async fn stored(master: &outpost::master::Master, edge_id: Uuid, id: Uuid) -> Option<LoggedEvent> {
    master
        .store
        .events_of(edge_id, 0, 10_000)
        .await
        .unwrap()
        .into_iter()
        .find(|e| e.event.id == id)
}

/// A master and a connected edge running its site at epoch 1, with its own
/// events synced; the edge retries unsynced events every `retry_ms`.
async fn connected(
    site: &Site,
    master_config: outpost::config::Config,
    retry_ms: u64,
) -> (outpost::master::Master, outpost::edge::Edge, Uuid) {
    let Room {
        edge_id, secret, ..
    } = site.one_room(json!({}), &[]).await;
    let master = outpost::master::start(master_config).await.unwrap();
    let edge_config = outpost::config::Config {
        event_retry_ms: retry_ms,
        ..site.edge_config(edge_id, &secret, master.link_addr)
    };
    let edge = outpost::edge::start(edge_config).await.unwrap();
    eventually(
        20,
        "the edge to run its site and sync its control record",
        async || edge.control.is_running().await && edge.store.event_counts().await.unwrap().0 == 0,
    )
    .await;
    assert_eq!(edge.control.epoch(), 1);
    (master, edge, edge_id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_kind_pulled_by_passive_sync_is_stored_as_it_came() {
    let site = Site::new();
    let config = outpost::config::Config {
        sync_interval_ms: 50,
        sync_step_sleep_ms: 1,
        ..site.master_config()
    };
    let (master, edge, edge_id) = connected(&site, config, 3_600_000).await;
    // In the log without waking the edge's pusher: only the passive job
    // takes it.
    let event = teleport(edge_id, 1);
    edge.store.log_event(&event, 1000).await.unwrap();
    eventually(10, "the passive job to store it", async || {
        stored(&master, edge_id, event.id).await.is_some()
    })
    .await;
    let got = stored(&master, edge_id, event.id).await.unwrap();
    assert_eq!(got.event.kind, EventKind::Other("teleport".into()));
    assert_eq!(
        (got.event.body.as_str(), got.refused),
        (event.body.as_str(), None)
    );
    eventually(10, "the edge to mark it synced", async || {
        edge.store.event_counts().await.unwrap().0 == 0
    })
    .await;
    edge.stop().await;
    master.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushed_events_of_unknown_kinds_are_stored_and_refused_ones_kept_and_counted() {
    let site = Site::new();
    // The passive job stays out of the way: only the edge's push delivers.
    let config = outpost::config::Config {
        sync_interval_ms: 3_600_000,
        ..site.master_config()
    };
    let (master, edge, edge_id) = connected(&site, config, 3_600_000).await;
    let refused_total = async || {
        let text = request(master.api_addr, "GET", "/metrics", &[], None)
            .await
            .body;
        text.lines()
            .find_map(|l| l.strip_prefix("outpost_events_refused_total "))
            .map_or(0.0, |v| v.trim().parse::<f64>().unwrap())
    };
    let before = refused_total().await;

    // One of a kind this master does not know, under the edge's epoch; one
    // under an epoch the master never gave (not the edge's to write).
    let unknown = teleport(edge_id, 1);
    let stray = Event {
        kind: EventKind::Exec,
        ..teleport(edge_id, 7)
    };
    for e in [&unknown, &stray] {
        edge.store.log_event(e, 1000).await.unwrap();
    }
    edge.event_log.look_again();
    eventually(10, "the edge's push to be acknowledged", async || {
        edge.store.event_counts().await.unwrap().0 == 0
    })
    .await;
    let got = stored(&master, edge_id, unknown.id).await.expect("stored");
    assert_eq!(got.event.kind, EventKind::Other("teleport".into()));
    assert_eq!(got.refused, None);
    let got = stored(&master, edge_id, stray.id)
        .await
        .expect("a refused event is stored too");
    assert_eq!(
        got.refused.as_deref(),
        Some("produced under epoch 7, which the master never recorded")
    );
    assert!(
        refused_total().await > before,
        "the refusal is counted in outpost_events_refused_total"
    );
    edge.stop().await;
    master.stop().await;
}

/// The pusher pushes what the recorder hands it from memory; an event
/// written to the log by any other means (and nobody calling
/// `look_again`) still goes, at the next retry, when the log is read
/// again whatever memory holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_written_behind_the_pushers_back_goes_at_the_next_retry() {
    let site = Site::new();
    // The passive job stays out of the way: only the edge's push delivers.
    let config = outpost::config::Config {
        sync_interval_ms: 3_600_000,
        ..site.master_config()
    };
    let (master, edge, edge_id) = connected(&site, config, 200).await;
    let event = teleport(edge_id, 1);
    edge.store.log_event(&event, 1000).await.unwrap();
    eventually(10, "the retry to push it", async || {
        stored(&master, edge_id, event.id).await.is_some()
    })
    .await;
    edge.stop().await;
    master.stop().await;
}
