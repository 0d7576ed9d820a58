//! Liveness: heartbeats, dead peers, reconnects, the "disconnected" signal,
//! replace-on-duplicate, the master's boot wait.

use std::sync::Arc;
use std::time::Duration;

use outpost::link::edge::{self, EdgeLinkEvent};
use outpost::link::master::MasterLinkEvent;
use outpost::link::peer::{self, PeerConfig, PeerMeta, PeerRole};
use outpost::link::{CloseReason, LinkTiming};
use outpost::proto::{RequestBody, ResponseBody};
use serde_json::json;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::support::*;

fn meta() -> PeerMeta {
    PeerMeta {
        edge_id: Uuid::nil(),
        session: peer::next_session(),
        addr: ([127, 0, 0, 1], 1).into(),
        version: 1,
        remote_boot_id: Uuid::nil(),
    }
}

/// A session of each role over an in-memory pipe, not yet running: the
/// edge's first, then the master's.
fn piped_sessions(
    edge: &LinkTiming,
    master: &LinkTiming,
    root: &CancellationToken,
) -> (PipedSession, PipedSession) {
    let (a, b) = tokio::io::duplex(64 * 1024);
    let side = |io, role, timing: &LinkTiming| {
        peer::session(io, meta(), &PeerConfig::new(role, timing.clone()), 64, root)
    };
    (
        side(a, PeerRole::Edge, edge),
        side(b, PeerRole::Master, master),
    )
}

type PipedSession = (peer::Peer, peer::Session<tokio::io::DuplexStream>);

/// With paused time: an edge and a master peer over an in-memory pipe
/// stay up across many heartbeat intervals; when the edge side goes
/// silent (its driver stops but the pipe stays open), the master declares
/// it dead.
#[tokio::test(start_paused = true)]
async fn heartbeats_keep_a_quiet_link_up_and_silence_kills_it() {
    let timing = LinkTiming::default();
    let root = CancellationToken::new();
    let ((edge_peer, edge_session), (master_peer, master_session)) =
        piped_sessions(&timing, &timing, &root);
    let edge_task = tokio::spawn(edge_session.run(Arc::new(TestHandler::default())));
    let master_task = tokio::spawn(master_session.run(Arc::new(TestHandler::default())));
    // Thirty seconds of idle link: pings keep both sides alive.
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert!(!edge_peer.is_closed() && !master_peer.is_closed());
    let r = master_peer
        .request(
            RequestBody::Exec {
                module: "echo".into(),
                method: "m".into(),
                args: json!(1),
                epoch: None,
            },
            Duration::from_secs(1),
        )
        .await
        .unwrap();
    assert_eq!(r, ResponseBody::Value { value: json!(1) });
    // The edge goes away: the master's session ends.
    edge_task.abort();
    let reason = master_task.await.unwrap();
    assert!(
        matches!(reason, CloseReason::PeerClosed | CloseReason::Dead(_)),
        "{reason}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_silent_peer_on_an_open_pipe_is_dead_after_the_timeout() {
    let timing = LinkTiming::default();
    let (_keep_open, b) = tokio::io::duplex(64 * 1024);
    let root = CancellationToken::new();
    let (master_peer, master_session) = peer::session(
        b,
        meta(),
        &PeerConfig::new(PeerRole::Master, timing.clone()),
        64,
        &root,
    );
    let reason = master_session.run(Arc::new(TestHandler::default())).await;
    assert_eq!(reason, CloseReason::Dead(timing.dead_after));
    assert!(master_peer.is_closed());
    let r = master_peer
        .request(
            RequestBody::Exec {
                module: "echo".into(),
                method: "m".into(),
                args: json!(1),
                epoch: None,
            },
            Duration::from_secs(1),
        )
        .await;
    assert_eq!(r, Err(outpost::link::CallError::Closed));
}

/// With paused time: a peer that reads nothing and answers nothing. Each
/// call fails at its own deadline, to the tick: one issued later with an
/// earlier deadline too (it wakes the link's expiry task sooner), and one
/// issued after the others expired (a new expiry task). Nothing is left
/// waiting.
#[tokio::test(start_paused = true)]
async fn calls_to_a_silent_peer_fail_each_at_its_own_deadline() {
    let (_silent, b) = tokio::io::duplex(64 * 1024);
    let root = CancellationToken::new();
    let config = PeerConfig::new(PeerRole::Master, LinkTiming::default());
    let (master_peer, session) = peer::session(b, meta(), &config, 64, &root);
    tokio::spawn(session.run(Arc::new(TestHandler::default())));
    let call = |ms: u64| {
        let p = master_peer.clone();
        tokio::spawn(async move {
            let start = tokio::time::Instant::now();
            let body = RequestBody::Exec {
                module: "echo".into(),
                method: "m".into(),
                args: json!(ms),
                epoch: None,
            };
            let r = p.request(body, Duration::from_millis(ms)).await;
            (r, start.elapsed())
        })
    };
    let late = call(900);
    tokio::time::sleep(Duration::from_millis(10)).await;
    let early = call(100);
    let middle = call(500);
    for (task, ms) in [(early, 100), (middle, 500), (late, 900)] {
        let (r, took) = task.await.unwrap();
        assert_eq!(r, Err(outpost::link::CallError::DeadlineExceeded));
        assert_eq!(took, Duration::from_millis(ms), "the {ms} ms call");
    }
    assert_eq!(master_peer.pending_requests(), 0);
    let (r, took) = call(200).await.unwrap();
    assert_eq!(r, Err(outpost::link::CallError::DeadlineExceeded));
    assert_eq!(took, Duration::from_millis(200));
    assert!(!master_peer.is_closed(), "{:?}", master_peer.close_reason());
}

/// With paused time: calls made one at a time share one expiry task
/// (it used to end with each call, and starting one per call cost 40 % of
/// the throughput at one in flight); once the link is idle the task ends
/// within a second, and the next call starts another.
#[tokio::test(start_paused = true)]
async fn calls_one_at_a_time_share_one_expiry_task_which_ends_when_idle() {
    let timing = LinkTiming::default();
    let root = CancellationToken::new();
    let ((_edge_peer, edge_session), (master_peer, master_session)) =
        piped_sessions(&timing, &timing, &root);
    tokio::spawn(edge_session.run(Arc::new(TestHandler::default())));
    tokio::spawn(master_session.run(Arc::new(TestHandler::default())));
    let echo = async |n: u64| {
        let body = RequestBody::Exec {
            module: "echo".into(),
            method: "m".into(),
            args: json!(n),
            epoch: None,
        };
        let r = master_peer.request(body, Duration::from_secs(5)).await;
        assert_eq!(r, Ok(ResponseBody::Value { value: json!(n) }));
    };
    for n in 0..100 {
        echo(n).await;
    }
    assert_eq!(master_peer.expiry_tasks(), (1, true), "100 calls, one task");
    tokio::time::sleep(Duration::from_millis(1001)).await;
    assert_eq!(
        master_peer.expiry_tasks(),
        (1, false),
        "idle: the task ended"
    );
    echo(100).await;
    assert_eq!(
        master_peer.expiry_tasks(),
        (2, true),
        "a call starts another"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_connections_replace_the_old_one_and_never_clobber_the_new() {
    let certs = dev_certs();
    let id = EdgeIdentity::new();
    let mut m = start_master(&certs, MasterOpts::new(keys(&[&id]))).await;
    let cfg = edge_config(&certs, &id, vec![m.addr.to_string()]);
    let handler = Arc::new(TestHandler::default());
    let root = CancellationToken::new();

    // Eight connections of the same edge race each other.
    let mut connects = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let (cfg, handler, root) = (cfg.clone(), handler.clone(), root.clone());
        let master = m.addr.to_string();
        connects.spawn(async move {
            let (peer, session) = edge::connect(&cfg, &master, &root).await.unwrap();
            let p = peer.clone();
            let task = tokio::spawn(session.run(handler));
            (p, task)
        });
    }
    let mut sessions = Vec::new();
    while let Some(r) = within("connects", connects.join_next()).await {
        sessions.push(r.unwrap());
    }
    // Collect the master's view: 8 ups, 7 replacements.
    let mut ups = Vec::new();
    let mut replaced = Vec::new();
    while ups.len() < 8 || replaced.len() < 7 {
        match m.next_event().await {
            MasterLinkEvent::LinkUp { info, .. } => ups.push(info.session),
            MasterLinkEvent::LinkLost {
                session, reason, ..
            } => {
                assert_eq!(reason, CloseReason::Replaced);
                replaced.push(session);
            }
            MasterLinkEvent::AuthFailed { reason, .. } => panic!("{reason}"),
        }
    }
    let winner = *ups.last().unwrap();
    assert!(!replaced.contains(&winner));
    // Every replaced edge-side session ends; exactly one survives.
    within("replaced sessions to end", async {
        while sessions.iter().filter(|(p, _)| p.is_closed()).count() < 7 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    let (alive, ended): (Vec<_>, Vec<_>) = sessions.into_iter().partition(|(p, _)| !p.is_closed());
    assert_eq!(alive.len(), 1);
    for (p, task) in ended {
        assert_eq!(
            within("replaced session end", task).await.unwrap(),
            CloseReason::PeerClosed,
            "{:?}",
            p.close_reason()
        );
    }
    // The old sessions' teardowns have run: the entry is still the newest.
    let info = m
        .registry
        .info(id.id)
        .expect("the newest link stays registered");
    assert_eq!(info.session, winner);
    assert_eq!(m.registry.len(), 1);
    let to_edge = m.registry.peer(id.id).unwrap();
    assert!(!to_edge.is_closed());
    let r = to_edge
        .request(
            RequestBody::Exec {
                module: "echo".into(),
                method: "m".into(),
                args: json!("still here"),
                epoch: None,
            },
            Duration::from_secs(10),
        )
        .await
        .unwrap();
    assert_eq!(
        r,
        ResponseBody::Value {
            value: json!("still here")
        }
    );
    root.cancel();
    m.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn master_restart_edge_reconnects_and_disconnected_is_raised_once() {
    let certs = dev_certs();
    let id = EdgeIdentity::new();
    let mut opts = MasterOpts::new(keys(&[&id]));
    opts.timing = fast_timing();
    let mut m = start_master(&certs, opts).await;
    let addr = m.addr;
    let mut cfg = edge_config(&certs, &id, vec!["127.0.0.1:1".into(), addr.to_string()]);
    cfg.peer.timing = fast_timing();
    cfg.reconnect = Duration::from_millis(150);
    let mut e = start_edge(cfg, TestHandler::default());
    e.connected().await;
    m.next_up().await;

    m.stop().await;
    // Lost, then failed reconnects; "disconnected" once the dead time has
    // passed and a reconnect failed.
    let mut lost = false;
    let mut failures_after_lost = 0;
    loop {
        match e.next_event().await {
            EdgeLinkEvent::ConnectionLost { .. } => lost = true,
            EdgeLinkEvent::ConnectFailed { .. } if lost => failures_after_lost += 1,
            EdgeLinkEvent::Disconnected { .. } => break,
            EdgeLinkEvent::Connected { .. } => panic!("connected to a stopped master"),
            _ => {}
        }
    }
    assert!(lost && failures_after_lost >= 1);

    // The master comes back on the same address.
    let mut opts = MasterOpts::new(keys(&[&id]));
    opts.timing = fast_timing();
    opts.addr = Some(addr);
    let mut m = start_master(&certs, opts).await;
    let peer = loop {
        match e.next_event().await {
            EdgeLinkEvent::Connected { peer, master, .. } => {
                assert_eq!(master, addr.to_string());
                break peer;
            }
            EdgeLinkEvent::Disconnected { .. } => panic!("disconnected raised twice"),
            _ => {}
        }
    };
    let (edge, _, _) = m.next_up().await;
    assert_eq!(edge, id.id);
    let r = peer
        .request(
            RequestBody::Exec {
                module: "echo".into(),
                method: "m".into(),
                args: json!(2),
                epoch: None,
            },
            Duration::from_secs(10),
        )
        .await
        .unwrap();
    assert_eq!(r, ResponseBody::Value { value: json!(2) });
    e.stop().await;
    m.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_reports_edges_and_the_boot_wait_names_the_missing() {
    let certs = dev_certs();
    let a = EdgeIdentity::new();
    let b = EdgeIdentity::new();
    let mut m = start_master(&certs, MasterOpts::new(keys(&[&a, &b]))).await;
    let cfg = edge_config(&certs, &a, vec![m.addr.to_string()]);
    *cfg.commit.write().unwrap() = Some("abc123".into());
    let boot_id = cfg.boot_id;
    let registry = m.registry.clone();
    let wait =
        tokio::spawn(async move { registry.wait_for(&[a.id], Duration::from_secs(15)).await });
    let mut e = start_edge(cfg, TestHandler::default());
    e.connected().await;
    m.next_up().await;
    assert_eq!(within("boot wait", wait).await.unwrap(), Vec::<Uuid>::new());
    let info = m.registry.info(a.id).unwrap();
    assert_eq!(info.boot_id, boot_id);
    assert_eq!(info.commit.as_deref(), Some("abc123"));
    assert_eq!(info.version, outpost::proto::PROTOCOL_VERSION);
    assert!(info.addr.ip().is_loopback());
    let missing = m
        .registry
        .wait_for(&[a.id, b.id], Duration::from_millis(100))
        .await;
    assert_eq!(missing, vec![b.id]);
    e.stop().await;
    let (edge, _, reason) = m.next_lost().await;
    assert_eq!(edge, a.id);
    assert_eq!(reason, CloseReason::PeerClosed);
    m.stop().await;
}

#[test]
fn reconnect_jitter_stays_within_twenty_percent() {
    let base = Duration::from_secs(3);
    let waits: Vec<_> = (0..1000).map(|_| edge::jittered(base)).collect();
    assert!(
        waits
            .iter()
            .all(|w| *w >= base.mul_f64(0.8) && *w <= base.mul_f64(1.2))
    );
    assert!(waits.iter().any(|w| *w != waits[0]), "no jitter");
}

/// An edge and a master (swept, as the master's links are) whose timings
/// differ: each side hears the other within its own `dead_after`, so a
/// healthy idle link stays up whichever side detects faster.
#[tokio::test(start_paused = true)]
async fn a_quiet_link_stays_up_when_the_two_sides_time_differently() {
    let fast = LinkTiming {
        heartbeat: Duration::from_millis(200),
        dead_after: Duration::from_millis(600),
        ..LinkTiming::default()
    };
    let slow = LinkTiming::default();
    for (edge_timing, master_timing) in [(fast.clone(), slow.clone()), (slow, fast)] {
        let root = CancellationToken::new();
        let sweeper = peer::Sweeper::new(master_timing.clone());
        tokio::spawn(sweeper.clone().run(root.clone()));
        let ((edge_peer, edge_session), (master_peer, master_session)) =
            piped_sessions(&edge_timing, &master_timing, &root);
        let master_session = master_session.swept_by(&sweeper);
        let edge_task = tokio::spawn(edge_session.run(Arc::new(TestHandler::default())));
        let master_task = tokio::spawn(master_session.run(Arc::new(TestHandler::default())));
        tokio::time::sleep(Duration::from_secs(30)).await;
        assert!(
            !edge_peer.is_closed() && !master_peer.is_closed(),
            "edge {edge_timing:?}, master {master_timing:?}: edge {:?}, master {:?}",
            edge_peer.close_reason(),
            master_peer.close_reason()
        );
        root.cancel();
        let _ = (edge_task.await, master_task.await);
    }
}

/// A master that answers nothing (a listener that never speaks) holds a
/// connect round for the whole handshake timeout; the edge says it is
/// disconnected once `dead_after` has passed, before that round ends, so
/// its site does not wait for the handshake timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edge_says_disconnected_while_a_silent_master_holds_its_connect_round() {
    let certs = dev_certs();
    let id = EdgeIdentity::new();
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut cfg = edge_config(&certs, &id, vec![silent.local_addr().unwrap().to_string()]);
    cfg.peer.timing = fast_timing();
    cfg.peer.timing.handshake_timeout = Duration::from_secs(60);
    let mut e = start_edge(cfg, TestHandler::default());
    match e.next_event().await {
        EdgeLinkEvent::Disconnected { .. } => {}
        other => panic!("before \"disconnected\": {other:?}"),
    }
    drop(silent);
}
