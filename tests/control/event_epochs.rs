//! Events are owned by control epochs, not by clocks: an edge whose clock
//! is ten minutes behind the master's records events while it controls its
//! site, and the master keeps every one of them, accepted.

use std::time::Duration;

use outpost::control::{Clock, Side};
use outpost::proto::RequestBody;
use outpost::store::EventKind;
use serde_json::json;

use crate::failover::{T0, TIMEOUT_MS, failover_on, scene};
use crate::roles::eventually;

const SKEW_MS: i64 = 10 * 60_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edge_whose_clock_is_ten_minutes_off_loses_no_event() {
    let s = scene(failover_on()).await;
    let master = s.master().await;
    let edge_clock = Clock::manual(T0 - SKEW_MS);
    let config = s.edge_config(master.link_addr);
    let edge = outpost::edge::start_with_clock(config.clone(), edge_clock.clone())
        .await
        .unwrap();
    s.wait_controller(&master, Side::Edge, 1).await;
    edge.stop().await;
    s.wait_due(&master).await;
    s.clock.advance(Duration::from_millis(TIMEOUT_MS));
    s.wait_controller(&master, Side::Master, 2).await;

    // Eleven minutes of master control, then the edge gets its site back.
    // By its clock (ten minutes behind) it is still inside the master's
    // tenure: a judgement by time would refuse all it records now.
    s.clock.advance(Duration::from_millis(11 * 60_000));
    edge_clock.set(s.clock.now_ms() - SKEW_MS);
    let edge = outpost::edge::start_with_clock(config, edge_clock.clone())
        .await
        .unwrap();
    eventually(20, "the edge to connect", async || {
        master.registry.peer(s.room.edge_id).is_some()
    })
    .await;
    master.control.restore(s.room.edge_id).await.unwrap();
    s.wait_controller(&master, Side::Edge, 3).await;
    s.wait_connections(1).await;

    let peer = master.registry.peer(s.room.edge_id).unwrap();
    let exec = RequestBody::Exec {
        module: s.room.system.module_ids[0].to_string(),
        method: "power".into(),
        args: json!("on"),
        epoch: Some(3),
    };
    peer.request(exec, Duration::from_secs(10)).await.unwrap();
    eventually(20, "the exec to be stored at the master", async || {
        master
            .store
            .events_of(s.room.edge_id, 0, 10_000)
            .await
            .unwrap()
            .iter()
            .any(|e| e.event.kind == EventKind::Exec && e.event.epoch == Some(3))
    })
    .await;
    eventually(20, "the edge's log to be synced", async || {
        edge.store.event_counts().await.unwrap().0 == 0
    })
    .await;
    let stored = master
        .store
        .events_of(s.room.edge_id, 0, 10_000)
        .await
        .unwrap();
    let at_3: Vec<_> = stored.iter().filter(|e| e.event.epoch == Some(3)).collect();
    assert!(
        at_3.iter()
            .all(|e| e.event.at_ms < s.clock.now_ms() - SKEW_MS / 2),
        "stamped by the edge's clock"
    );
    assert!(at_3.iter().all(|e| e.refused.is_none()), "{at_3:?}");
    // Only what the edge recorded while the master held its site (epoch
    // 2: standing by) may be refused, and it is stored all the same.
    let refused: Vec<_> = stored.iter().filter(|e| e.refused.is_some()).collect();
    assert!(
        refused.iter().all(|e| e.event.epoch == Some(2)),
        "refused: {refused:?}"
    );
    edge.stop().await;
    master.stop().await;
}
