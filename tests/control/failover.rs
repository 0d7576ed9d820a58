//! Control end to end: a master, an edge (in this process, or as its own
//! `outpost edge` process when it must be killed), a PJLink simulator that
//! counts its concurrent controller connections, real TLS, and a
//! fault-injecting proxy on the link. Control decisions read a manual
//! clock, so failover timeouts and restore windows pass when the test says.

use std::time::Duration;

use outpost::control::{Clock, Side};
use outpost::master::Master;
use outpost::proto::{RequestBody, WireError};
use outpost::sim::{PjlinkOptions, PjlinkSim};
use outpost::store::{ControlState, Expect, Write};
use serde_json::json;

use crate::proxy::Proxy;
use crate::roles::{EdgeProcess, Room, Site, device, eventually};

/// 2026-11-22 10:00 UTC: outside the 03:00 window.
pub(crate) const T0: i64 = 1_795_341_600_000;
/// The next 03:00 UTC after T0.
const WINDOW: i64 = 1_795_402_800_000;
pub(crate) const TIMEOUT_MS: u64 = 30_000;

pub(crate) struct Scene {
    pub(crate) site: Site,
    pub(crate) sim: PjlinkSim,
    pub(crate) room: Room,
    pub(crate) clock: Clock,
}

pub(crate) async fn scene(location: serde_json::Value) -> Scene {
    let site = Site::new();
    let sim = PjlinkSim::start("127.0.0.1:0".parse().unwrap(), PjlinkOptions::default())
        .await
        .unwrap();
    let room = site
        .one_room(
            location,
            &[device("Projector", "pjlink.lua", Some(sim.addr()))],
        )
        .await;
    site.seed_replica(room.edge_id).await;
    Scene {
        site,
        sim,
        room,
        clock: Clock::manual(T0),
    }
}

pub(crate) fn failover_on() -> serde_json::Value {
    json!({
        "failover": true,
        "failover_timeout_ms": TIMEOUT_MS,
        "window_start": "0 3 * * *",
        "window_length_ms": 3_600_000,
        "timezone": "UTC",
    })
}

impl Scene {
    pub(crate) fn master_config(&self) -> outpost::config::Config {
        outpost::config::Config {
            heartbeat_ms: 200,
            dead_after_ms: 600,
            ..self.site.master_config()
        }
    }

    pub(crate) async fn master(&self) -> Master {
        outpost::master::start_with_clock(self.master_config(), self.clock.clone())
            .await
            .unwrap()
    }

    /// Starts a master on `link` in the background, with a boot wait long
    /// enough for an edge started next to connect within it.
    fn spawn_master(&self, link: std::net::SocketAddr) -> tokio::task::JoinHandle<Master> {
        let config = outpost::config::Config {
            link_addr: link,
            boot_wait_ms: 10_000,
            ..self.master_config()
        };
        let clock = self.clock.clone();
        tokio::spawn(async move {
            outpost::master::start_with_clock(config, clock)
                .await
                .unwrap()
        })
    }

    /// A master on `link` and an edge in this process reaching it through
    /// `edge_link` (the link itself, or a proxy in front of it), once the
    /// edge controls its site.
    async fn master_and_edge(
        &self,
        link: std::net::SocketAddr,
        edge_link: std::net::SocketAddr,
    ) -> (Master, outpost::edge::Edge) {
        let master = self.spawn_master(link);
        let edge = outpost::edge::start_with_clock(self.edge_config(edge_link), self.clock.clone())
            .await
            .unwrap();
        let master = master.await.unwrap();
        self.wait_controller(&master, Side::Edge, 1).await;
        (master, edge)
    }

    pub(crate) fn edge_config(&self, master_link: std::net::SocketAddr) -> outpost::config::Config {
        self.site
            .edge_config(self.room.edge_id, &self.room.secret, master_link)
    }

    pub(crate) async fn state(&self, master: &Master) -> ControlState {
        master
            .store
            .control_state(self.room.edge_id)
            .await
            .unwrap()
            .expect("a controller is recorded")
    }

    pub(crate) async fn wait_controller(&self, master: &Master, side: Side, epoch: i64) {
        let what = format!("{side} to control at epoch {epoch}");
        eventually(20, &what, async || {
            master
                .control
                .state(self.room.edge_id)
                .is_some_and(|s| s.controller == side && s.epoch == epoch)
        })
        .await;
    }

    pub(crate) async fn wait_connections(&self, n: usize) {
        eventually(20, &format!("{n} projector connection(s)"), async || {
            self.sim.connections() == n
        })
        .await;
    }

    /// Waits until the master has scheduled the takeover of the lost edge.
    pub(crate) async fn wait_due(&self, master: &Master) {
        eventually(10, "the takeover to be scheduled", async || {
            master.control.takeover_due(self.room.edge_id).is_some()
        })
        .await;
    }

    /// Edits the location's document in the master's store, as an API
    /// write or an import would.
    async fn edit(&self, store: &outpost::store::Store, change: serde_json::Value) {
        let doc = store.get(self.room.edge_id).await.unwrap().unwrap();
        let mut body: serde_json::Value = serde_json::from_str(&doc.body).unwrap();
        body.as_object_mut()
            .unwrap()
            .extend(change.as_object().unwrap().clone());
        let location: outpost::model::EdgeLocation = serde_json::from_value(body).unwrap();
        store
            .apply(&[Write::put(&location, Expect::Rev(doc.rev))])
            .await
            .unwrap();
    }

    /// An edge in this process, on the test's clock.
    pub(crate) async fn edge(&self, master: &Master) -> outpost::edge::Edge {
        outpost::edge::start_with_clock(self.edge_config(master.link_addr), self.clock.clone())
            .await
            .unwrap()
    }

    async fn wait_lost(&self, master: &Master) {
        eventually(10, "the master to see the link lost", async || {
            master.control.absent_since(self.room.edge_id).is_some()
        })
        .await;
    }

    pub(crate) async fn reasons(&self, master: &Master) -> Vec<String> {
        let mut log = master
            .store
            .control_log(self.room.edge_id, None, 100)
            .await
            .unwrap();
        log.reverse();
        log.iter()
            .map(|r| format!("{}:{}", r.to, r.reason))
            .collect()
    }
}

/// A free loopback port for a master's link, so an edge (or a proxy) can
/// be pointed at it before the master starts.
fn reserve() -> std::net::SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

/// Gives the control loop a moment to do what it must not do.
pub(crate) async fn settle() {
    tokio::time::sleep(Duration::from_millis(300)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_edge_is_taken_over_after_the_timeout_then_kept_until_the_window_opens() {
    let s = scene(failover_on()).await;
    let link = reserve();
    let master = s.spawn_master(link);
    let edge = EdgeProcess::spawn(&s.edge_config(link));
    let master = master.await.unwrap();
    s.wait_controller(&master, Side::Edge, 1).await;
    s.wait_connections(1).await;

    // Killed: no goodbye on the link.
    edge.kill().await;
    eventually(10, "the master to see the link lost", async || {
        master.registry.peer(s.room.edge_id).is_none()
    })
    .await;
    s.wait_connections(0).await;
    s.wait_due(&master).await;
    s.clock.advance(Duration::from_millis(TIMEOUT_MS - 1));
    settle().await;
    assert_eq!(s.sim.connections(), 0, "taken over before the timeout");
    assert_eq!(s.state(&master).await.controller, Side::Edge);
    s.clock.advance(Duration::from_millis(1));
    s.wait_controller(&master, Side::Master, 2).await;
    s.wait_connections(1).await;

    // The edge returns outside a window: the master keeps the site and
    // the edge holds no device connection.
    s.sim.reset_max_connections();
    let edge = EdgeProcess::spawn(&s.edge_config(master.link_addr));
    eventually(20, "the edge to reconnect", async || {
        master.registry.peer(s.room.edge_id).is_some()
    })
    .await;
    settle().await;
    assert_eq!(s.state(&master).await.epoch, 2, "{}", edge.log_text());
    assert_eq!(s.sim.connections(), 1);
    assert_eq!(
        s.sim.max_connections_seen(),
        1,
        "both sides held the device"
    );

    // The window opens: the master stops first, then the edge connects.
    s.sim.reset_max_connections();
    s.clock.set(WINDOW + 1_000);
    s.wait_controller(&master, Side::Edge, 3).await;
    s.wait_connections(1).await;
    settle().await;
    assert_eq!(s.sim.connections(), 1);
    assert_eq!(s.sim.max_connections_seen(), 1, "the hand-back overlapped");
    // The first negotiation may fall inside the boot wait or just after.
    assert_eq!(
        s.reasons(&master).await[1..],
        ["master:failover_timeout", "edge:restore_window"]
    );
    edge.kill().await;
    master.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edge_returning_inside_an_open_window_wins_at_once() {
    let s = scene(failover_on()).await;
    let link = reserve();
    let master = s.spawn_master(link);
    let edge = EdgeProcess::spawn(&s.edge_config(link));
    let master = master.await.unwrap();
    s.wait_controller(&master, Side::Edge, 1).await;
    // Lost inside the window: taken over after the timeout all the same.
    s.clock.set(WINDOW + 60_000);
    edge.kill().await;
    s.wait_due(&master).await;
    s.clock
        .set(master.control.takeover_due(s.room.edge_id).unwrap());
    s.wait_controller(&master, Side::Master, 2).await;
    s.wait_connections(1).await;

    s.sim.reset_max_connections();
    let edge = EdgeProcess::spawn(&s.edge_config(master.link_addr));
    s.wait_controller(&master, Side::Edge, 3).await;
    s.wait_connections(1).await;
    settle().await;
    assert_eq!(s.sim.max_connections_seen(), 1, "the hand-back overlapped");
    assert_eq!(
        s.reasons(&master).await.last().map(String::as_str),
        Some("edge:in_restore_window")
    );
    edge.kill().await;
    master.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_restarted_while_holding_a_site_still_holds_it() {
    let s = scene(failover_on()).await;
    let master = s.master().await;
    // The edge never came: taken over once its timeout passed after boot.
    s.wait_due(&master).await;
    s.clock.advance(Duration::from_millis(TIMEOUT_MS));
    s.wait_controller(&master, Side::Master, 1).await;
    s.wait_connections(1).await;
    master.stop().await;
    s.wait_connections(0).await;

    let master = s.master().await;
    assert_eq!(
        s.sim.connections(),
        1,
        "the site runs again before the boot wait"
    );
    let state = s.state(&master).await;
    assert_eq!((state.controller, state.epoch), (Side::Master, 1));

    // The edge comes back with nothing running: the master keeps the site.
    s.sim.reset_max_connections();
    let edge = outpost::edge::start_with_clock(s.edge_config(master.link_addr), s.clock.clone())
        .await
        .unwrap();
    eventually(20, "the edge to connect", async || {
        master.registry.peer(s.room.edge_id).is_some()
    })
    .await;
    settle().await;
    assert_eq!(s.state(&master).await.epoch, 1);
    assert_eq!(s.sim.max_connections_seen(), 1);
    assert!(!edge.control.is_running().await);
    assert_eq!(s.reasons(&master).await, ["master:boot"]);

    // An operator restores the site.
    let record = master.control.restore(s.room.edge_id).await.unwrap();
    assert_eq!((record.to, record.epoch), (Side::Edge, 2));
    s.wait_connections(1).await;
    assert!(edge.control.is_running().await);
    assert_eq!(s.sim.max_connections_seen(), 1, "the restore overlapped");
    let again = master.control.restore(s.room.edge_id).await.unwrap_err();
    assert!(again.to_string().contains("already controls"), "{again}");
    edge.stop().await;
    master.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edges_connecting_within_the_boot_wait_are_not_taken_over() {
    let s = scene(failover_on()).await;
    let link = reserve();
    let master = s.spawn_master(link);
    let edge = outpost::edge::start_with_clock(s.edge_config(link), s.clock.clone())
        .await
        .unwrap();
    let master = master.await.unwrap();
    assert!(master.missing_at_boot.is_empty());
    s.wait_connections(1).await;
    settle().await;
    assert!(
        s.reasons(&master)
            .await
            .iter()
            .all(|r| r.starts_with("edge:")),
        "{:?}",
        s.reasons(&master).await
    );
    assert_eq!(
        s.sim.max_connections_seen(),
        1,
        "the master touched the device"
    );
    edge.stop().await;
    master.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_location_without_failover_is_never_taken_over() {
    let s = scene(json!({"failover": false, "failover_timeout_ms": 0})).await;
    let master = s.master().await;
    assert!(master.missing_at_boot.contains(&s.room.edge_id));
    let edge = outpost::edge::start_with_clock(s.edge_config(master.link_addr), s.clock.clone())
        .await
        .unwrap();
    s.wait_controller(&master, Side::Edge, 1).await;
    s.wait_connections(1).await;
    edge.stop().await;
    s.wait_connections(0).await;
    s.clock.advance(Duration::from_secs(86_400));
    settle().await;
    assert_eq!(s.sim.connections(), 0);
    assert_eq!(s.state(&master).await.controller, Side::Edge);
    master.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_healed_partition_leaves_one_controller() {
    let s = scene(json!({"failover": true, "failover_timeout_ms": 0})).await;
    let link = reserve();
    let proxy = Proxy::start(link).await;
    let (master, edge) = s.master_and_edge(link, proxy.addr()).await;
    s.wait_connections(1).await;

    // Partition: nothing crosses, nothing closes. The master declares the
    // link dead and takes over; the edge keeps driving its devices (the
    // documented trade-off: both hold them until the partition heals).
    proxy.blackhole();
    s.wait_controller(&master, Side::Master, 2).await;
    s.wait_connections(2).await;
    assert!(edge.control.is_running().await);

    // Healed: the edge, whose devices are connected, wins (rule 1); the
    // master lets go.
    proxy.heal();
    s.wait_controller(&master, Side::Edge, 3).await;
    s.wait_connections(1).await;
    settle().await;
    assert_eq!(s.sim.connections(), 1);
    assert!(edge.control.is_running().await);
    assert_eq!(
        s.reasons(&master).await[1..],
        ["master:failover_timeout", "edge:edge_devices_connected"]
    );
    edge.stop().await;
    master.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flapping_link_changes_control_a_bounded_number_of_times() {
    let s = scene(json!({"failover": true, "failover_timeout_ms": 0})).await;
    let limit = s.master_config().max_control_changes_per_minute as usize;
    let link = reserve();
    let proxy = Proxy::start(link).await;
    let (master, edge) = s.master_and_edge(link, proxy.addr()).await;
    let started = tokio::time::Instant::now();
    let mut flaps = 0;
    while started.elapsed() < Duration::from_secs(10) {
        proxy.cut();
        tokio::time::sleep(Duration::from_millis(700)).await;
        proxy.heal();
        tokio::time::sleep(Duration::from_millis(700)).await;
        flaps += 1;
    }
    // Once the link holds, exactly one side drives the device.
    eventually(20, "the edge to be connected", async || {
        master.registry.peer(s.room.edge_id).is_some()
    })
    .await;
    s.wait_connections(1).await;
    settle().await;
    let reasons = s.reasons(&master).await;
    println!("{flaps} flaps: {reasons:?}");
    assert!(
        reasons.len() <= limit + 1,
        "{flaps} flaps, {} changes: {reasons:?}",
        reasons.len()
    );
    assert!(
        reasons.iter().any(|r| r == "master:failover_timeout"),
        "{reasons:?}"
    );
    assert_eq!(s.sim.connections(), 1);
    let holder = s.state(&master).await.controller;
    assert_eq!(edge.control.is_running().await, holder == Side::Edge);
    edge.stop().await;
    master.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_under_a_stale_epoch_is_refused() {
    let s = scene(failover_on()).await;
    let link = reserve();
    let (master, edge) = s.master_and_edge(link, link).await;
    edge.stop().await;
    s.wait_due(&master).await;
    s.clock.advance(Duration::from_millis(TIMEOUT_MS));
    s.wait_controller(&master, Side::Master, 2).await;
    let edge = outpost::edge::start_with_clock(s.edge_config(master.link_addr), s.clock.clone())
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
    let exec = |epoch| RequestBody::Exec {
        module: s.room.system.module_ids[0].to_string(),
        method: "power".into(),
        args: json!("on"),
        epoch: Some(epoch),
    };
    let err = peer
        .request(exec(1), Duration::from_secs(10))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            outpost::link::CallError::Remote(WireError::StaleEpoch {
                sent: 1,
                current: 3
            })
        ),
        "{err:?}"
    );
    peer.request(exec(3), Duration::from_secs(10))
        .await
        .expect("the current epoch is obeyed");
    edge.stop().await;
    master.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_edge_is_taken_over_at_boot_only_once_its_own_timeout_has_passed() {
    let s = scene(failover_on()).await;
    let master = s.master().await;
    assert!(master.missing_at_boot.contains(&s.room.edge_id));
    s.wait_due(&master).await;
    assert_eq!(
        master.control.takeover_due(s.room.edge_id),
        Some(T0 + TIMEOUT_MS as i64),
        "counted from the master's start"
    );
    s.clock.advance(Duration::from_millis(TIMEOUT_MS - 1));
    settle().await;
    assert_eq!(s.sim.connections(), 0, "taken over before the timeout");
    assert!(master.control.state(s.room.edge_id).is_none());
    s.clock.advance(Duration::from_millis(1));
    s.wait_controller(&master, Side::Master, 1).await;
    s.wait_connections(1).await;
    assert_eq!(s.reasons(&master).await, ["master:boot"]);
    master.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edge_that_comes_after_the_boot_wait_but_within_its_timeout_drives_its_site() {
    let s = scene(failover_on()).await;
    let master = s.master().await;
    assert!(master.missing_at_boot.contains(&s.room.edge_id));
    s.wait_due(&master).await;
    s.clock.advance(Duration::from_millis(TIMEOUT_MS / 2));
    let edge = s.edge(&master).await;
    s.wait_controller(&master, Side::Edge, 1).await;
    s.wait_connections(1).await;
    assert!(master.control.takeover_due(s.room.edge_id).is_none());
    s.clock.advance(Duration::from_millis(TIMEOUT_MS));
    settle().await;
    assert_eq!(s.state(&master).await.controller, Side::Edge);
    assert_eq!(
        s.sim.max_connections_seen(),
        1,
        "the master touched the device"
    );
    assert!(edge.control.is_running().await);
    edge.stop().await;
    master.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_turned_on_for_a_lost_edge_counts_from_when_it_was_lost() {
    let s = scene(json!({"failover": false, "failover_timeout_ms": TIMEOUT_MS})).await;
    let master = s.master().await;
    let edge = s.edge(&master).await;
    s.wait_controller(&master, Side::Edge, 1).await;
    edge.stop().await;
    s.wait_lost(&master).await;
    assert_eq!(master.control.absent_since(s.room.edge_id), Some(T0));
    s.clock.advance(Duration::from_millis(10_000));
    settle().await;
    assert!(master.control.takeover_due(s.room.edge_id).is_none());

    s.edit(&master.store, json!({"failover": true})).await;
    s.wait_due(&master).await;
    assert_eq!(
        master.control.takeover_due(s.room.edge_id),
        Some(T0 + TIMEOUT_MS as i64)
    );
    s.clock.set(T0 + TIMEOUT_MS as i64);
    s.wait_controller(&master, Side::Master, 2).await;
    s.wait_connections(1).await;
    assert_eq!(s.reasons(&master).await[1..], ["master:failover_timeout"]);
    master.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_turned_off_cancels_a_pending_takeover_but_never_drops_a_held_site() {
    let s = scene(failover_on()).await;
    let master = s.master().await;
    let edge = s.edge(&master).await;
    s.wait_controller(&master, Side::Edge, 1).await;
    edge.stop().await;
    s.wait_due(&master).await;

    s.edit(&master.store, json!({"failover": false})).await;
    eventually(10, "the takeover to be cancelled", async || {
        master.control.takeover_due(s.room.edge_id).is_none()
    })
    .await;
    s.clock.advance(Duration::from_millis(2 * TIMEOUT_MS));
    settle().await;
    assert_eq!(s.state(&master).await.controller, Side::Edge);
    assert_eq!(s.sim.connections(), 0);

    // On again, long after the loss: due at once.
    s.edit(&master.store, json!({"failover": true})).await;
    s.wait_controller(&master, Side::Master, 2).await;
    s.wait_connections(1).await;

    // Off while the master holds the site: it keeps it.
    s.edit(&master.store, json!({"failover": false})).await;
    settle().await;
    assert_eq!(s.state(&master).await.controller, Side::Master);
    assert_eq!(s.sim.connections(), 1);
    master.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edited_window_opens_at_its_new_time() {
    let s = scene(failover_on()).await;
    let master = s.master().await;
    let edge = s.edge(&master).await;
    s.wait_controller(&master, Side::Edge, 1).await;
    edge.stop().await;
    s.wait_due(&master).await;
    s.clock
        .set(master.control.takeover_due(s.room.edge_id).unwrap());
    s.wait_controller(&master, Side::Master, 2).await;
    s.wait_connections(1).await;

    // The edge returns outside its window (03:00): the master keeps the site.
    let edge = s.edge(&master).await;
    eventually(20, "the edge to reconnect", async || {
        master.registry.peer(s.room.edge_id).is_some()
    })
    .await;
    // 11:00:01, not in the 03:00 window: nothing happens.
    s.clock.set(T0 + 3_601_000);
    settle().await;
    assert_eq!(s.state(&master).await.epoch, 2);

    // The window moves to 11:00 UTC, written by another process (its own
    // store handle: no commit notice reaches this master, the feed does):
    // it is open now, and the site goes back.
    s.sim.reset_max_connections();
    let other = s.site.master_store().await;
    s.edit(&other, json!({"window_start": "0 11 * * *"})).await;
    other.close().await;
    s.wait_controller(&master, Side::Edge, 3).await;
    s.wait_connections(1).await;
    assert_eq!(s.sim.max_connections_seen(), 1, "the hand-back overlapped");
    assert_eq!(
        s.reasons(&master).await.last().map(String::as_str),
        Some("edge:restore_window")
    );
    edge.stop().await;
    master.stop().await;
}

/// The master holds the site (an operator handed it over) while the edge
/// stands by on its link; then the master stops, and the edge runs the
/// site on its own.
async fn held_with_the_edge_standing_by(
    s: &Scene,
    link: std::net::SocketAddr,
) -> outpost::edge::Edge {
    let (master, edge) = s.master_and_edge(link, link).await;
    let record = master.control.handover(s.room.edge_id).await.unwrap();
    assert_eq!((record.to, record.epoch), (Side::Master, 2));
    s.wait_connections(1).await;
    assert!(!edge.control.is_running().await);
    let links = master.store.edge_links().await.unwrap();
    assert!(
        links.iter().any(|(id, _)| *id == s.room.edge_id),
        "the link is recorded before the edge stands by: {links:?}"
    );
    master.stop().await;
    eventually(20, "the edge to run its site on its own", async || {
        edge.control.is_running().await
    })
    .await;
    s.wait_connections(1).await;
    s.sim.reset_max_connections();
    edge
}

/// Promotion rule: a master that starts holding a site whose edge was
/// linked to the master before it (and so runs the site on its own now)
/// does not start the site at once; it waits for the edge to reconnect and
/// negotiates, and the device never has two controllers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_holding_a_site_whose_edge_stood_by_waits_for_the_edge() {
    let s = scene(failover_on()).await;
    let link = reserve();
    let edge = held_with_the_edge_standing_by(&s, link).await;

    let master = s.spawn_master(link).await.unwrap();
    assert!(master.missing_at_boot.is_empty());
    s.wait_controller(&master, Side::Edge, 3).await;
    assert_eq!(
        s.reasons(&master).await.last().map(String::as_str),
        Some("edge:edge_devices_connected")
    );
    settle().await;
    assert_eq!(s.sim.connections(), 1);
    assert_eq!(s.sim.max_connections_seen(), 1, "two controllers at once");
    edge.stop().await;
    master.stop().await;
}

/// The same, with an edge that does not come back: the master starts the
/// site it holds once the location's failover timeout has passed since it
/// started, and not before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_holding_a_site_whose_edge_stood_by_starts_it_at_the_failover_timeout() {
    let s = scene(failover_on()).await;
    let edge = held_with_the_edge_standing_by(&s, reserve()).await;

    // On another link port: the edge cannot reach this master.
    let master = s.master().await;
    let now = s.clock.now_ms();
    s.wait_due(&master).await;
    assert_eq!(
        master.control.takeover_due(s.room.edge_id),
        Some(now + TIMEOUT_MS as i64)
    );
    settle().await;
    assert_eq!(s.sim.max_connections_seen(), 1, "started at once");
    edge.stop().await;
    s.wait_connections(0).await;

    s.clock.advance(Duration::from_millis(TIMEOUT_MS));
    s.wait_connections(1).await;
    let state = s.state(&master).await;
    assert_eq!((state.controller, state.epoch), (Side::Master, 2));
    master.stop().await;
}
