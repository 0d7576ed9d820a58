//! `cluster_failsafe`: a MASTER that cannot reach PostgreSQL keeps acting
//! while every other node confirms, over the link, that it cannot reach it
//! either; without that confirmation it stops by its deadline as before.
//! A node that confirmed takes no lease for a lease after its answer, and
//! the MASTER renews its own expired lease when the database returns.

use std::time::Duration;

use outpost::cluster::Cluster;
use outpost::cluster::clock::boottime;
use outpost::config::Config;
use outpost::control::leadership::NodeState;
use outpost::link::ProbeResponder as _;
use outpost::sim::{PjlinkOptions, PjlinkSim};
use outpost::store::{Store, StoreOptions};

use crate::import_room;
use crate::nodes::{get_ok, history_terms};
use crate::outage::OwnPostgres;
use crate::{Database, Node, NodeSpec, certs, eventually, states};

/// Two failsafe nodes on a PostgreSQL of the test's own, one MASTER
/// driving a projector: (nodes, index of the MASTER).
async fn two_nodes(pg: &OwnPostgres, dir: &std::path::Path, sim: &PjlinkSim) -> (Vec<Node>, usize) {
    import_room(&pg.url(), sim.addr(), false).await;
    let spec = NodeSpec {
        id: String::new(),
        database_url: pg.url(),
        dir: dir.to_owned(),
        certs: certs(dir),
        lease_ms: 1200,
        renew_ms: 300,
        priority: 0,
        preempt: false,
        lock_file: None,
        failsafe: true,
    };
    let nodes: Vec<Node> = ["a", "b"]
        .iter()
        .map(|id| {
            Node::spawn(&NodeSpec {
                id: (*id).into(),
                ..spec.clone()
            })
        })
        .collect();
    let master = crate::one_master(&nodes).await;
    eventually(20, "the MASTER to connect the projector", async || {
        sim.connections() == 1
    })
    .await;
    // Both nodes' heartbeats are in the table the MASTER asks from.
    eventually(20, "both nodes in /ha/states", async || {
        let body = get_ok(&nodes[master], "/api/v1/ha/states").await;
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        v["nodes"].as_array().is_some_and(|n| n.len() == 2)
    })
    .await;
    (nodes, master)
}

/// (master_id, term) as `/api/v1/ha/states` says.
async fn master_and_term(node: &Node) -> (String, i64) {
    let body = get_ok(node, "/api/v1/ha/states").await;
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    (
        v["master_id"].as_str().unwrap_or_default().to_owned(),
        v["term"].as_i64().unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_failsafe_the_master_rides_out_an_outage_every_node_confirms() {
    let Some(pg) = OwnPostgres::start() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let sim = PjlinkSim::start("127.0.0.1:0".parse().unwrap(), PjlinkOptions::default())
        .await
        .unwrap();
    let (mut nodes, master) = two_nodes(&pg, dir.path(), &sim).await;
    let other = 1 - master;
    let (master_id, term) = master_and_term(&nodes[master]).await;
    assert_eq!(master_id, nodes[master].spec.id);
    let history = history_terms(&nodes[master]).await;
    let connected = sim.total_connections();

    pg.down();
    eventually(20, "the MASTER to stay MASTER by failsafe", async || {
        nodes[master]
            .log_text()
            .contains("staying MASTER (cluster_failsafe)")
    })
    .await;
    // More than three leases without the database: the MASTER acts on,
    // the standby stays a standby.
    let outage = tokio::time::Instant::now();
    while outage.elapsed() < Duration::from_millis(3 * 1200 + 600) {
        let s = states(&nodes).await;
        assert_eq!(
            s[master].as_deref(),
            Some("MASTER"),
            "{}",
            nodes[master].log_text()
        );
        assert_eq!(
            s[other].as_deref(),
            Some("STANDBY"),
            "{}",
            nodes[other].log_text()
        );
        assert_eq!(sim.connections(), 1, "{}", nodes[master].log_text());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        sim.total_connections(),
        connected,
        "the projector was never let go"
    );
    assert!(!nodes[master].log_text().contains("lease lost"));

    pg.up();
    eventually(20, "the MASTER to renew its own lease again", async || {
        nodes[master]
            .log_text()
            .contains("PostgreSQL reachable again")
    })
    .await;
    assert_eq!(
        master_and_term(&nodes[master]).await,
        (master_id, term),
        "the same MASTER at the same term"
    );
    assert_eq!(
        history_terms(&nodes[master]).await,
        history,
        "no change of MASTER recorded"
    );
    assert_eq!(nodes[other].state().await.as_deref(), Some("STANDBY"));
    assert_eq!(sim.total_connections(), connected);
    for n in &mut nodes {
        n.kill().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_failsafe_a_master_whose_standby_is_gone_stops_by_its_deadline() {
    let Some(pg) = OwnPostgres::start() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let sim = PjlinkSim::start("127.0.0.1:0".parse().unwrap(), PjlinkOptions::default())
        .await
        .unwrap();
    let (mut nodes, master) = two_nodes(&pg, dir.path(), &sim).await;
    nodes[1 - master].kill().await;

    pg.down();
    // The standby cannot confirm anything: as without failsafe.
    let status = nodes[master].exited().await;
    let log = nodes[master].log_text();
    assert!(!status.success(), "{log}");
    assert!(log.contains("lease lost"), "{log}");
    assert!(!log.contains("staying MASTER"), "{log}");
    eventually(20, "the projector to be released", async || {
        sim.connections() == 0
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_renews_its_own_expired_lease_unless_another_was_granted_it() {
    let Some(db) = Database::create().await else {
        return;
    };
    let store = Store::open(&StoreOptions::new(db.url.clone()))
        .await
        .unwrap();
    let term = store
        .acquire_lease("a", 0, 50, "granted")
        .await
        .unwrap()
        .unwrap();
    eventually(10, "the lease to expire at the server", async || {
        !store.lease().await.unwrap().live
    })
    .await;
    // Without failsafe an expired lease is lost; with it, renewed at the
    // same term while nobody else was granted it.
    assert_eq!(
        store
            .renew_lease("a", term, 60_000, 0, false)
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        store.renew_lease("a", term, 60_000, 0, true).await.unwrap(),
        Some(None)
    );
    let view = store.lease().await.unwrap();
    assert!(view.live);
    assert_eq!((view.holder.as_deref(), view.term), (Some("a"), term));
    let history = store.cluster_history(10).await.unwrap();
    assert_eq!(
        history.len(),
        1,
        "no history entry for a renewal: {history:?}"
    );
    // Nobody else may be granted it now.
    assert_eq!(
        store.acquire_lease("b", 0, 50, "granted").await.unwrap(),
        None
    );

    // Once another node was granted it, the old holder cannot renew.
    assert!(store.release_lease("a", term).await.unwrap());
    let next = store
        .acquire_lease("b", 0, 50, "granted")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(next, term + 1);
    eventually(10, "b's lease to expire", async || {
        !store.lease().await.unwrap().live
    })
    .await;
    assert_eq!(
        store.renew_lease("a", term, 60_000, 0, true).await.unwrap(),
        None
    );
    store.close().await;
    db.drop_it().await;
}

/// In process, on the clock the cluster code uses: a standby that answered
/// a probe "cannot reach the database" takes a free lease only a lease
/// after that answer, even once the database is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_that_confirmed_takes_no_lease_within_a_lease_of_its_answer() {
    let Some(pg) = OwnPostgres::start() else {
        return;
    };
    let lease = Duration::from_millis(5_000);
    let a = Store::open(&StoreOptions::new(pg.url())).await.unwrap();
    let term = a
        .acquire_lease("a", 0, 600_000, "granted")
        .await
        .unwrap()
        .unwrap();
    let config = Config {
        node_id: Some("b".into()),
        database_url: Some(pg.url()),
        lease_ms: lease.as_millis() as u64,
        renew_ms: 300,
        ..Config::default()
    };
    let b_store = Store::open(&StoreOptions::new(pg.url())).await.unwrap();
    let b = Cluster::join(&config, &b_store);
    let mut watch = b.watch();
    tokio::time::timeout(
        Duration::from_secs(20),
        watch.wait_for(|l| l.state == NodeState::Standby),
    )
    .await
    .unwrap()
    .unwrap();
    let witness = b.witness();
    assert!(witness.answer().reaches_database);

    pg.down();
    let mut asked = Duration::ZERO;
    eventually(
        20,
        "b to answer that it cannot reach the database",
        async || {
            asked = boottime();
            !witness.answer().reaches_database
        },
    )
    .await;
    assert!(witness.promised_until() >= asked + lease);

    pg.up();
    a.release_lease("a", term).await.unwrap();
    tokio::time::timeout(
        Duration::from_secs(30),
        watch.wait_for(|l| l.state == NodeState::Master),
    )
    .await
    .expect("b takes the lease in the end")
    .unwrap();
    let became = boottime();
    assert!(
        became >= asked + lease,
        "b acted {:?} after its answer, within the lease it promised",
        became - asked
    );
    b.release().await;
    a.close().await;
    b_store.close().await;
}

/// A holder's link listener that answers probes in the state the test
/// sets, counting them.
struct FakeHolder {
    state: std::sync::Mutex<&'static str>,
    asked: std::sync::atomic::AtomicUsize,
}

impl outpost::link::ProbeResponder for FakeHolder {
    fn answer(&self) -> outpost::link::ProbeStatus {
        self.asked.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        outpost::link::ProbeStatus {
            node_id: "a".into(),
            state: (*self.state.lock().unwrap()).into(),
            reaches_database: false,
        }
    }
}

struct NoRequests;

impl outpost::link::Handler for NoRequests {
    async fn handle(
        &self,
        _ctx: outpost::link::RequestCtx,
        _body: outpost::proto::RequestBody,
    ) -> Result<outpost::proto::ResponseBody, outpost::proto::WireError> {
        Err(outpost::proto::WireError::Unavailable {
            message: "test".into(),
        })
    }
}

/// A node that joined too late to be asked by a failsafe MASTER does not
/// take the lease that expired under it while that holder says, over its
/// link, that it is MASTER; once it no longer does, the node takes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failsafe_node_waits_for_an_expired_holder_that_still_acts() {
    use outpost::link::{LinkTiming, MasterLinkConfig, PeerConfig, PeerRole, Registry, tls};
    use std::sync::atomic::Ordering;

    let Some(db) = Database::create().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let certs = certs(dir.path());
    let holder = std::sync::Arc::new(FakeHolder {
        state: std::sync::Mutex::new("MASTER"),
        asked: Default::default(),
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let link = format!("127.0.0.1:{}", listener.local_addr().unwrap().port());
    let cfg = MasterLinkConfig {
        tls: tls::server_config(
            &certs.join("master.pem"),
            &certs.join("master-key.pem"),
            None,
        )
        .unwrap(),
        peer: PeerConfig::new(PeerRole::Master, LinkTiming::default()),
        boot_id: uuid::Uuid::now_v7(),
        max_handshakes: 16,
        admission: Default::default(),
        store_id: None,
        failure_report_interval: Duration::ZERO,
        shutdown_grace: Duration::from_secs(1),
        leadership: outpost::control::leadership::alone_watch(),
        probe: Some(holder.clone()),
    };
    let stop = tokio_util::sync::CancellationToken::new();
    let (tx, _events) = tokio::sync::mpsc::channel(16);
    tokio::spawn(outpost::link::master::serve(
        listener,
        cfg,
        std::sync::Arc::new(std::collections::HashMap::<
            uuid::Uuid,
            outpost::secret::LinkKey,
        >::new()),
        std::sync::Arc::new(NoRequests),
        Registry::new(tx),
        stop.clone(),
    ));

    // "a" holds a lease that has expired at the database, and advertises
    // the fake listener.
    let a = Store::open(&StoreOptions::new(db.url.clone()))
        .await
        .unwrap();
    a.cluster_heartbeat(&outpost::store::Heartbeat {
        node_id: "a",
        state: "MASTER",
        priority: 0,
        preempt: false,
        api: None,
        link: Some(&link),
    })
    .await
    .unwrap();
    let term = a
        .acquire_lease("a", 0, 1, "granted")
        .await
        .unwrap()
        .unwrap();
    eventually(10, "a's lease to expire", async || {
        !a.lease().await.unwrap().live
    })
    .await;

    let config = Config {
        node_id: Some("n".into()),
        database_url: Some(db.url.clone()),
        lease_ms: 900,
        renew_ms: 300,
        cluster_failsafe: true,
        ca_cert: certs.join("ca.pem"),
        ..Config::default()
    };
    let n_store = Store::open(&StoreOptions::new(db.url.clone()))
        .await
        .unwrap();
    let n = Cluster::join(&config, &n_store);
    let watch = n.watch();
    eventually(20, "n to ask the holder three times", async || {
        holder.asked.load(Ordering::SeqCst) >= 3
    })
    .await;
    assert_eq!(watch.borrow().state, NodeState::Standby);
    let view = a.lease().await.unwrap();
    assert_eq!((view.holder.as_deref(), view.term), (Some("a"), term));

    *holder.state.lock().unwrap() = "FAILED";
    let mut watch = n.watch();
    tokio::time::timeout(
        Duration::from_secs(20),
        watch.wait_for(|l| l.state == NodeState::Master),
    )
    .await
    .expect("n takes the lease once the holder no longer acts")
    .unwrap();
    assert_eq!(watch.borrow().term, term as u64 + 1);
    n.release().await;
    stop.cancel();
    a.close().await;
    n_store.close().await;
    db.drop_it().await;
}
