//! Hand-overs that cannot be torn: an edge's assume or release runs to
//! completion whatever happens to the master's call (it timed out, it was
//! cancelled), a repeated or late one is answered with the edge's state,
//! and the master follows an unconfirmed change up by asking the edge,
//! never by guessing. The edge's start is made slow by holding its
//! reconciler ([`outpost::reconciler::Reconciler::pause`]), as a long
//! reconcile pass would: a real hold on the real code, not a mock.

use std::time::Duration;

use outpost::control::Side;
use outpost::master::Master;
use outpost::proto::{RequestBody, ResponseBody};

use crate::failover::{Scene, TIMEOUT_MS, failover_on, scene, settle};
use crate::http::request;
use crate::roles::eventually;

/// The master's control calls time out after this (real time).
const CALL_MS: u64 = 1_000;

async fn master(s: &Scene) -> Master {
    let config = outpost::config::Config {
        control_call_ms: CALL_MS,
        ..s.master_config()
    };
    outpost::master::start_with_clock(config, s.clock.clone())
        .await
        .unwrap()
}

/// The master holds the site (the edge missed the boot wait and its
/// timeout), and the edge has come back and stands by.
async fn master_holds_edge_stands_by(s: &Scene) -> (Master, outpost::edge::Edge) {
    let master = master(s).await;
    s.wait_due(&master).await;
    s.clock.advance(Duration::from_millis(TIMEOUT_MS));
    s.wait_controller(&master, Side::Master, 1).await;
    s.wait_connections(1).await;
    let edge = s.edge(&master).await;
    eventually(20, "the edge to connect", async || {
        master.registry.peer(s.room.edge_id).is_some()
    })
    .await;
    settle().await;
    assert!(!edge.control.is_running().await);
    s.sim.reset_max_connections();
    (master, edge)
}

/// Moves the control clock on until `done` (the master's follow-ups are
/// timed on it).
async fn advance_until(s: &Scene, what: &str, done: impl AsyncFn() -> bool) {
    eventually(30, what, async || {
        if done().await {
            return true;
        }
        s.clock.advance(Duration::from_millis(1_000));
        tokio::time::sleep(Duration::from_millis(40)).await;
        false
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_control_call_cancelled_in_the_middle_of_assume_leaves_the_edge_fully_running() {
    let s = scene(failover_on()).await;
    let (master, edge) = master_holds_edge_stands_by(&s).await;

    // The edge's start hangs (a long reconcile pass): the master's assume
    // times out and is cancelled at the edge while the edge is half way
    // (the epoch recorded, the modules not started yet).
    let hold = edge.reconciler.pause().await;
    master.control.restore(s.room.edge_id).await.unwrap_err();
    assert_eq!(s.sim.connections(), 0, "the master stopped first");
    settle().await;
    assert!(!edge.control.is_running().await);

    // The hold ends: the edge finishes what it began, all of it.
    drop(hold);
    eventually(20, "the edge to run its site fully", async || {
        edge.control.is_running().await && s.sim.connections() == 1
    })
    .await;
    // The master asks the edge for its state and finds its hand-back done.
    advance_until(&s, "the master to learn the edge runs", async || {
        master
            .control
            .state(s.room.edge_id)
            .is_some_and(|st| st.controller == Side::Edge && st.epoch == 2)
    })
    .await;
    settle().await;
    assert!(edge.control.is_running().await);
    assert_eq!(s.sim.connections(), 1);
    assert_eq!(s.sim.max_connections_seen(), 1, "both held the device");
    assert_eq!(
        s.reasons(&master).await,
        ["master:boot", "edge:manual_restore"]
    );
    edge.stop().await;
    master.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_or_late_assume_or_release_is_answered_with_the_current_state() {
    let s = scene(failover_on()).await;
    let master = master(&s).await;
    let edge = s.edge(&master).await;
    s.wait_controller(&master, Side::Edge, 1).await;
    s.wait_connections(1).await;
    eventually(10, "the edge to run its site", async || {
        edge.control.is_running().await
    })
    .await;

    let peer = master.registry.peer(s.room.edge_id).unwrap();
    let call = Duration::from_secs(10);
    let running_at_1 = |answer: ResponseBody| match answer {
        ResponseBody::ControlReport {
            running,
            epoch,
            devices_connected,
            pending,
        } => {
            assert!(running, "still running");
            assert_eq!((epoch, devices_connected, pending), (1, 1, None));
        }
        other => panic!("not the edge's state: {other:?}"),
    };
    // Said again (an answer the master lost): the same state, nothing redone.
    let again = RequestBody::ControlAssume {
        epoch: 1,
        reason: "manual_restore".into(),
    };
    running_at_1(peer.request(again, call).await.unwrap());
    // A release under an older epoch (it arrives after the assume that
    // superseded it): answered, not carried out.
    let late = RequestBody::ControlRelease {
        epoch: 0,
        reason: "failover_timeout".into(),
    };
    running_at_1(peer.request(late, call).await.unwrap());
    let late = RequestBody::ControlAssume {
        epoch: 0,
        reason: "manual_restore".into(),
    };
    running_at_1(peer.request(late, call).await.unwrap());
    settle().await;
    assert_eq!(s.sim.connections(), 1);
    assert_eq!(s.sim.max_connections_seen(), 1);
    assert_eq!(s.state(&master).await.epoch, 1);
    edge.stop().await;
    master.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hand_back_whose_call_times_out_ends_with_exactly_one_controller() {
    let s = scene(failover_on()).await;
    let (master, edge) = master_holds_edge_stands_by(&s).await;

    // The assume hangs at the edge, longer than the failover timeout.
    let hold = edge.reconciler.pause().await;
    master.control.restore(s.room.edge_id).await.unwrap_err();
    // The master asks, finds the assume still under way, and after the
    // location's failover timeout takes the site back: recorded at once,
    // but it runs nothing until the edge has released.
    s.clock.advance(Duration::from_millis(TIMEOUT_MS + 1_000));
    s.wait_controller(&master, Side::Master, 3).await;
    settle().await;
    assert_eq!(
        s.sim.connections(),
        0,
        "the master started before the edge released"
    );

    // The hold ends: the edge finishes its assume, then the release queued
    // behind it; the master starts once the edge confirms.
    drop(hold);
    advance_until(&s, "the master to run the site", async || {
        s.sim.connections() == 1 && !edge.control.is_running().await
    })
    .await;
    settle().await;
    assert_eq!(s.sim.connections(), 1);
    assert!(!edge.control.is_running().await);
    assert_eq!(edge.control.epoch(), 3);
    assert_eq!(
        s.sim.max_connections_seen(),
        1,
        "the edge and the master held the device at once"
    );
    assert_eq!(
        s.reasons(&master).await,
        [
            "master:boot",
            "edge:manual_restore",
            "master:hand_back_unconfirmed"
        ]
    );
    edge.stop().await;
    master.stop().await;
}

/// `POST /api/v1/edges/{id}/handover` and `outpost admin handover`: the
/// mirror of a restore, for planned work on an edge. The edge stops first,
/// then the master runs the site; never both at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_hands_a_site_to_the_master_with_no_overlap() {
    let s = scene(failover_on()).await;
    let admin = "h".repeat(48);
    let config = outpost::config::Config {
        admin_key: Some(outpost::config::SecretString::new(admin.clone())),
        control_call_ms: CALL_MS,
        ..s.master_config()
    };
    let master = outpost::master::start_with_clock(config, s.clock.clone())
        .await
        .unwrap();
    let handover = format!("/api/v1/edges/{}/handover", s.room.edge_id);
    let post = async |path: &str| {
        let auth = format!("Bearer {admin}");
        request(
            master.api_addr,
            "POST",
            path,
            &[("Authorization", &auth)],
            Some(""),
        )
        .await
    };
    // No edge to release it yet.
    let r = post(&handover).await;
    assert_eq!(r.status, 409, "{}", r.body);
    assert!(r.body.contains("not connected"), "{}", r.body);

    let edge = s.edge(&master).await;
    s.wait_controller(&master, Side::Edge, 1).await;
    s.wait_connections(1).await;
    eventually(10, "the edge to run its site", async || {
        edge.control.is_running().await
    })
    .await;
    s.sim.reset_max_connections();

    // The command line asks the running master.
    let key_file = s.site.path().join("admin.key");
    std::fs::write(&key_file, &admin).unwrap();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_outpost"))
        .args(["admin", "handover", &s.room.edge_id.to_string(), "--api"])
        .arg(format!("http://{}", master.api_addr))
        .arg("--key-file")
        .arg(&key_file)
        .env_clear()
        .current_dir(s.site.path())
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stdout} {stderr}");
    assert!(
        stdout.contains("handed over") && stdout.contains("master controls it at epoch 2"),
        "{stdout}"
    );
    s.wait_connections(1).await;
    settle().await;
    assert!(!edge.control.is_running().await);
    assert_eq!(edge.control.epoch(), 2);
    assert_eq!(s.sim.max_connections_seen(), 1, "the handover overlapped");
    let log = master
        .store
        .control_log(s.room.edge_id, None, 10)
        .await
        .unwrap();
    assert_eq!(log[0].reason.as_str(), "manual_handover");
    assert!(log[0].by.is_some(), "the audit log names who did it");

    // Again: the master already has it.
    let r = post(&handover).await;
    assert_eq!(r.status, 409, "{}", r.body);
    assert!(r.body.contains("already controls"), "{}", r.body);
    // The work is done: a restore gives it back the same way.
    let r = post(&format!("/api/v1/edges/{}/restore", s.room.edge_id)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    eventually(10, "the edge to run its site again", async || {
        edge.control.is_running().await && s.sim.connections() == 1
    })
    .await;
    assert_eq!(s.sim.max_connections_seen(), 1, "the restore overlapped");
    edge.stop().await;
    master.stop().await;
}

/// A graceful stop of an edge (SIGTERM) tells the master it is a restart:
/// recorded as planned, not as a loss, and the master still waits the
/// failover timeout, because a restart usually comes back within it. A
/// kill is a loss.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigterm_of_an_edge_is_a_planned_stop_and_a_kill_is_a_loss() {
    let s = scene(failover_on()).await;
    let master = master(&s).await;
    let config = s.edge_config(master.link_addr);
    let edge = crate::roles::EdgeProcess::spawn(&config);
    s.wait_controller(&master, Side::Edge, 1).await;
    s.wait_connections(1).await;
    let id = s.room.edge_id;
    let sites = async || {
        let key = std::fs::read_to_string(s.site.path().join("master/admin-key")).unwrap();
        let auth = format!("Bearer {}", key.trim());
        let r = request(
            master.api_addr,
            "GET",
            "/api/v1/sites",
            &[("Authorization", &auth)],
            None,
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.body);
        r.json()[0]["last_stop"].clone()
    };
    assert_eq!(sites().await, serde_json::Value::Null, "connected");

    edge.terminate().await;
    s.wait_due(&master).await;
    assert_eq!(master.control.last_stop(id), Some("planned"));
    assert_eq!(sites().await, "planned");
    assert_eq!(
        master.control.takeover_due(id),
        Some(master.control.absent_since(id).unwrap() + TIMEOUT_MS as i64),
        "a planned stop waits the failover timeout as usual"
    );
    assert_eq!(s.state(&master).await.controller, Side::Edge);

    // Back within the timeout: the site is its again; then it is killed.
    let edge = crate::roles::EdgeProcess::spawn(&config);
    eventually(20, "the edge to return", async || {
        master.control.last_stop(id).is_none()
    })
    .await;
    s.wait_connections(1).await;
    edge.kill().await;
    s.wait_due(&master).await;
    assert_eq!(master.control.last_stop(id), Some("lost"));
    assert_eq!(sites().await, "lost");
    master.stop().await;
}

/// A handover whose release the edge has not confirmed within the call
/// (502) still names its author in the control log: the control loop
/// records the caller with the change it commits, before the release.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unconfirmed_handover_keeps_its_author() {
    let s = scene(failover_on()).await;
    let admin = "h".repeat(48);
    let config = outpost::config::Config {
        admin_key: Some(outpost::config::SecretString::new(admin.clone())),
        control_call_ms: CALL_MS,
        ..s.master_config()
    };
    let master = outpost::master::start_with_clock(config, s.clock.clone())
        .await
        .unwrap();
    let edge = s.edge(&master).await;
    s.wait_controller(&master, Side::Edge, 1).await;
    eventually(10, "the edge to run its site", async || {
        edge.control.is_running().await
    })
    .await;
    // The edge's release hangs (a long reconcile pass holds its runtime).
    let hold = edge.reconciler.pause().await;
    let auth = format!("Bearer {admin}");
    let path = format!("/api/v1/edges/{}/handover", s.room.edge_id);
    let r = request(
        master.api_addr,
        "POST",
        &path,
        &[("Authorization", &auth)],
        Some(""),
    )
    .await;
    assert_eq!(r.status, 502, "{}", r.body);
    let log = master
        .store
        .control_log(s.room.edge_id, None, 10)
        .await
        .unwrap();
    assert_eq!(log[0].reason.as_str(), "manual_handover");
    assert!(
        log[0].by.is_some(),
        "the unconfirmed handover lost its author"
    );
    drop(hold);
    advance_until(&s, "the master to run the site", async || {
        s.sim.connections() == 1 && !edge.control.is_running().await
    })
    .await;
    edge.stop().await;
    master.stop().await;
}

/// A planned stop is in the site's audit log, so a master restarted while
/// the edge is away still reports it (`last_stop`, `last_planned_stop_ms`
/// in the site's status, which the console shows).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_planned_stop_is_remembered_across_a_restart_of_the_master() {
    let s = scene(failover_on()).await;
    let first = master(&s).await;
    let config = s.edge_config(first.link_addr);
    let edge = crate::roles::EdgeProcess::spawn(&config);
    s.wait_controller(&first, Side::Edge, 1).await;
    s.wait_connections(1).await;
    let id = s.room.edge_id;
    edge.terminate().await;
    s.wait_due(&first).await;
    let at = first.control.last_planned_stop(id).expect("recorded");
    first.stop().await;

    let again = master(&s).await;
    assert_eq!(again.control.last_stop(id), Some("planned"));
    assert_eq!(again.control.last_planned_stop(id), Some(at));
    let key = std::fs::read_to_string(s.site.path().join("master/admin-key")).unwrap();
    let auth = format!("Bearer {}", key.trim());
    let path = format!("/api/v1/edges/{id}/status");
    let r = request(
        again.api_addr,
        "GET",
        &path,
        &[("Authorization", &auth)],
        None,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let status = r.json();
    assert_eq!(status["last_stop"], "planned", "{status}");
    assert_eq!(status["last_planned_stop_ms"], at, "{status}");
    assert_eq!(status["maintenance_since_ms"], serde_json::Value::Null);
    let audit = format!("/api/v1/edges/{id}/audit");
    let r = request(
        again.api_addr,
        "GET",
        &audit,
        &[("Authorization", &auth)],
        None,
    )
    .await;
    assert_eq!(r.json()[0]["action"], "planned_stop", "{}", r.body);
    again.stop().await;
}
