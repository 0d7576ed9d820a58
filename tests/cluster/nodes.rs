//! Real `outpost master` processes sharing one PostgreSQL database.

use outpost::sim::{PjlinkOptions, PjlinkSim};

use crate::{
    ADMIN_KEY, Database, Node, NodeSpec, certs, edge_connected, edge_locations, eventually, get,
    import_room, send, spawn_edge, states,
};

/// The lease of tests whose subject is not the lease's length. A MASTER
/// that cannot renew within it is fenced and exits; at 600 ms that
/// happened in CI runs on a saturated machine, twice, in two tests.
pub(crate) const LEASE_MS: u64 = 2_000;
pub(crate) const RENEW_MS: u64 = 400;

pub(crate) struct Cluster {
    pub(crate) db: Database,
    _dir: tempfile::TempDir,
    pub(crate) spec: NodeSpec,
}

impl Cluster {
    pub(crate) async fn new(lease_ms: u64, renew_ms: u64) -> Option<Cluster> {
        let db = Database::create().await?;
        let dir = tempfile::tempdir().unwrap();
        let spec = NodeSpec {
            id: String::new(),
            database_url: db.url.clone(),
            dir: dir.path().to_owned(),
            certs: certs(dir.path()),
            lease_ms,
            renew_ms,
            priority: 0,
            preempt: false,
            lock_file: None,
            failsafe: false,
        };
        Some(Cluster {
            db,
            _dir: dir,
            spec,
        })
    }

    pub(crate) fn node(&self, id: &str) -> Node {
        Node::spawn(&NodeSpec {
            id: id.into(),
            ..self.spec.clone()
        })
    }

    /// Waits until exactly one of `nodes` is MASTER and every other answers
    /// STANDBY; its index.
    pub(crate) async fn one_master(&self, nodes: &[Node]) -> usize {
        crate::one_master(nodes).await
    }

    pub(crate) async fn finish(self, nodes: Vec<Node>) {
        for mut n in nodes {
            n.kill().await;
        }
        self.db.drop_it().await;
    }
}

/// A master-run PJLink projector in the cluster's database.
async fn projector(db: &Database) -> PjlinkSim {
    let sim = PjlinkSim::start("127.0.0.1:0".parse().unwrap(), PjlinkOptions::default())
        .await
        .unwrap();
    import_room(&db.url, sim.addr(), false).await;
    sim
}

/// A viewer's GET, once the MASTER has stored the configured key (its
/// API bootstraps it when it starts acting).
pub(crate) async fn get_ok(node: &Node, path: &str) -> String {
    let mut answer = String::new();
    eventually(20, "an answer with the admin key", async || {
        match get(node.api, path, Some(ADMIN_KEY)).await {
            Some((200, body)) => {
                answer = body;
                true
            }
            _ => false,
        }
    })
    .await;
    answer
}

/// A node's own `outpost_modules{state=…}` gauge (a standby answers
/// `/metrics` itself).
async fn modules(node: &Node, state: &str) -> Option<u64> {
    metric(node, &format!("outpost_modules{{state=\"{state}\"}}")).await
}

/// One series of a node's own `/metrics`, by its name and labels.
async fn metric(node: &Node, series: &str) -> Option<u64> {
    let (_, text) = get(node.api, "/metrics", Some(ADMIN_KEY)).await?;
    let series = format!("{series} ");
    text.lines()
        .find_map(|l| l.strip_prefix(series.as_str()))
        .and_then(|v| v.trim().parse().ok())
}

pub(crate) async fn history_terms(node: &Node) -> Vec<(String, i64, String)> {
    let body = get_ok(node, "/api/v1/ha/history").await;
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|h| {
            (
                h["node_id"].as_str().unwrap().to_owned(),
                h["term"].as_i64().unwrap(),
                h["reason"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_nodes_started_at_once_make_exactly_one_master() {
    let Some(c) = Cluster::new(LEASE_MS, RENEW_MS).await else {
        return;
    };
    let nodes: Vec<Node> = (1..=5).map(|i| c.node(&format!("n{i}"))).collect();
    let m = c.one_master(&nodes).await;
    let body = get_ok(&nodes[m], "/api/v1/ha/states").await;
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["master_id"], nodes[m].spec.id.as_str());
    assert_eq!(v["own_id"], nodes[m].spec.id.as_str());
    assert_eq!(v["nodes"].as_array().unwrap().len(), 5, "{body}");
    // A standby serves reads itself and hands writes to the MASTER.
    let standby = &nodes[(m + 1) % 5];
    let (status, _) = get(standby.api, "/api/v1/systems", Some(ADMIN_KEY))
        .await
        .unwrap();
    assert_eq!(status, 200);
    // Once it has seen the MASTER's grant (its next turn), it proxies.
    eventually(
        20,
        "a write on the standby proxied to the MASTER",
        async || {
            let answer = send(
                standby.api,
                "POST",
                "/api/v1/systems",
                Some(ADMIN_KEY),
                Some(r#"{"name":"Lobby"}"#),
            )
            .await;
            matches!(answer, Some((201, _)))
        },
    )
    .await;
    let (status, body) = get(nodes[m].api, "/api/v1/systems", Some(ADMIN_KEY))
        .await
        .unwrap();
    assert_eq!(status, 200);
    assert!(body.contains("Lobby"), "the MASTER stored it: {body}");
    c.finish(nodes).await;
}

/// Nodes starting at once on one database agree on the secret of their
/// link's session tickets: the first makes it, every other reads it, so
/// an edge resumes its TLS session on whichever node becomes MASTER.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_starting_at_once_share_one_ticket_secret() {
    let Some(c) = Cluster::new(LEASE_MS, RENEW_MS).await else {
        return;
    };
    let open = || async {
        let options = outpost::store::StoreOptions::new(c.db.url.clone());
        let store = outpost::store::Store::open(&options).await.unwrap();
        let secret = store.link_ticket_secret().await.unwrap();
        store.close().await;
        secret
    };
    let secrets = futures_util::future::join_all((0..4).map(|_| open())).await;
    assert!(secrets.iter().all(|s| *s == secrets[0]), "{secrets:?}");
    c.finish(Vec::new()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_the_master_promotes_a_standby_which_drives_the_projector() {
    let Some(c) = Cluster::new(LEASE_MS, RENEW_MS).await else {
        return;
    };
    let sim = projector(&c.db).await;
    let mut nodes = vec![c.node("a"), c.node("b")];
    let m = c.one_master(&nodes).await;
    eventually(20, "the MASTER to connect the projector", async || {
        sim.connections() == 1
    })
    .await;
    // Hot standby: the projector's module is loaded there, not started.
    let other = 1 - m;
    eventually(20, "the standby to load the MASTER's module", async || {
        modules(&nodes[other], "loaded").await == Some(1)
    })
    .await;
    assert_eq!(modules(&nodes[other], "running").await, Some(0));
    assert_eq!(sim.connections(), 1, "the standby drove the projector");
    let old_term = history_terms(&nodes[m]).await[0].1;
    nodes[m].kill().await;
    eventually(20, "the standby to become MASTER", async || {
        nodes[other].state().await.as_deref() == Some("MASTER")
    })
    .await;
    let history = history_terms(&nodes[other]).await;
    assert_eq!(
        history[0],
        (nodes[other].spec.id.clone(), old_term + 1, "granted".into())
    );
    eventually(20, "the new MASTER to connect the projector", async || {
        sim.connections() == 1
    })
    .await;
    assert_eq!(modules(&nodes[other], "running").await, Some(1));
    let (status, body) = send(
        nodes[other].api,
        "POST",
        "/api/v1/systems",
        Some(ADMIN_KEY),
        Some(r#"{"name":"Lobby"}"#),
    )
    .await
    .unwrap();
    assert_eq!(status, 201, "{body}");
    c.finish(nodes).await;
}

/// Promotion rule: the MASTER held a site (handed over by an operator)
/// whose edge stood by on its link; it is killed, and the edge runs its
/// site on its own as soon as no master answers. The new MASTER does not
/// start the site while the edge may run it: it waits for the edge and
/// negotiates. The projector never has two controllers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_a_master_holding_a_site_waits_for_its_edge_to_negotiate() {
    let Some(c) = Cluster::new(LEASE_MS, RENEW_MS).await else {
        return;
    };
    let sim = PjlinkSim::start("127.0.0.1:0".parse().unwrap(), PjlinkOptions::default())
        .await
        .unwrap();
    let (id, secret) = import_room(&c.db.url, sim.addr(), true).await.unwrap();
    let mut nodes = vec![c.node("a"), c.node("b")];
    let m = c.one_master(&nodes).await;
    let masters = format!("{},{}", nodes[m].link, nodes[1 - m].link);
    let mut edge = spawn_edge(&c.spec, id, &secret, &masters);
    eventually(30, "the edge to drive its projector", async || {
        edge_connected(&nodes[m], id).await && sim.connections() == 1
    })
    .await;
    let path = format!("/api/v1/edges/{id}/handover");
    let (status, body) = send(nodes[m].api, "POST", &path, Some(ADMIN_KEY), None)
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    eventually(20, "the MASTER to drive the projector", async || {
        sim.connections() == 1
    })
    .await;
    sim.reset_max_connections();

    nodes[m].kill().await;
    let other = 1 - m;
    eventually(30, "the edge to reach the new MASTER", async || {
        edge_connected(&nodes[other], id).await
    })
    .await;
    // Negotiated: the edge keeps its site if it had started it, or the
    // MASTER runs it once the edge has released. Either way, one at a time.
    eventually(20, "one controller of the projector", async || {
        sim.connections() == 1
    })
    .await;
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert_eq!(sim.connections(), 1);
    assert_eq!(sim.max_connections_seen(), 1, "two controllers at once");
    edge.kill().await.unwrap();
    c.finish(nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_of_the_master_hands_over_without_waiting_out_the_lease() {
    // A lease far longer than the test may wait: the standby can only be
    // MASTER in time because the old one released it.
    let Some(c) = Cluster::new(120_000, 500).await else {
        return;
    };
    let mut nodes = vec![c.node("a"), c.node("b")];
    let m = c.one_master(&nodes).await;
    let old_term = history_terms(&nodes[m]).await[0].1;
    nodes[m].signal("TERM");
    let status = nodes[m].exited().await;
    assert!(status.success(), "{status}: {}", nodes[m].log_text());
    let other = 1 - m;
    eventually(20, "the standby to become MASTER", async || {
        nodes[other].state().await.as_deref() == Some("MASTER")
    })
    .await;
    let history = history_terms(&nodes[other]).await;
    let old = nodes[m].spec.id.clone();
    assert_eq!(
        history[..2],
        [
            (nodes[other].spec.id.clone(), old_term + 1, "granted".into()),
            (old, old_term, "released".into()),
        ],
        "the release comes before the next grant"
    );
    c.finish(nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_stopped_past_its_lease_is_fenced_and_drops_its_device() {
    let Some(c) = Cluster::new(LEASE_MS, RENEW_MS).await else {
        return;
    };
    let sim = projector(&c.db).await;
    let mut nodes = vec![c.node("a"), c.node("b")];
    let m = c.one_master(&nodes).await;
    eventually(20, "the MASTER to connect the projector", async || {
        sim.connections() == 1
    })
    .await;
    // Stopped only once its promotion has finished (it writes), so that
    // what it finds on waking is the lost lease, not a half-done start.
    eventually(20, "the MASTER to accept writes", async || {
        let answer = send(
            nodes[m].api,
            "POST",
            "/api/v1/systems",
            Some(ADMIN_KEY),
            Some(r#"{"name":"Lobby"}"#),
        )
        .await;
        matches!(answer, Some((201, _)))
    })
    .await;
    nodes[m].signal("STOP");
    let other = 1 - m;
    eventually(20, "the standby to become MASTER", async || {
        nodes[other].state().await.as_deref() == Some("MASTER")
    })
    .await;
    // The stopped node's socket is still open: both are connected.
    eventually(
        20,
        "the new MASTER to connect the projector too",
        async || sim.connections() == 2,
    )
    .await;
    nodes[m].signal("CONT");
    let status = nodes[m].exited().await;
    let log = nodes[m].log_text();
    assert!(
        !status.success(),
        "a fenced node exits with an error: {log}"
    );
    assert!(log.contains("lease lost"), "{log}");
    eventually(
        20,
        "the fenced node's device connection to close",
        async || sim.connections() == 1,
    )
    .await;
    assert_eq!(nodes[other].state().await.as_deref(), Some("MASTER"));
    c.finish(nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edge_given_only_a_standby_ends_on_the_master_and_follows_a_failover() {
    let Some(c) = Cluster::new(LEASE_MS, RENEW_MS).await else {
        return;
    };
    let (id, secret) = edge_locations(&c.db.url, 1).await.remove(0);
    let mut nodes = vec![c.node("a"), c.node("b")];
    let m = c.one_master(&nodes).await;
    let standby = 1 - m;
    let mut edge = spawn_edge(&c.spec, id, &secret, &nodes[standby].link.to_string());
    eventually(
        20,
        "the edge to reach the MASTER through the standby",
        async || edge_connected(&nodes[m], id).await,
    )
    .await;
    // The session ticket the standby issued opens at the MASTER: the nodes
    // share the database's ticket secret, so the edge resumed its session.
    // (Polled: one slow `/metrics` answer on a loaded machine reads None.)
    let resumed = r#"outpost_link_tls_handshakes_total{kind="resumed"}"#;
    eventually(20, "a resumed handshake at the MASTER", async || {
        metric(&nodes[m], resumed).await >= Some(1)
    })
    .await;
    // The MASTER dies: the edge's one address is now the MASTER's.
    nodes[m].kill().await;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    eventually(21, "the edge to connect to the new MASTER", async || {
        if tokio::time::Instant::now() > deadline {
            let log = c.spec.dir.join(format!("edge-{id}")).join("edge.log");
            eprintln!(
                "--- edge ---\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
            panic!("not connected");
        }
        edge_connected(&nodes[standby], id).await
    })
    .await;
    edge.kill().await.unwrap();
    c.finish(nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_higher_priority_node_with_preempt_takes_over_a_running_master() {
    let Some(c) = Cluster::new(LEASE_MS, RENEW_MS).await else {
        return;
    };
    let mut nodes = vec![c.node("low")];
    c.one_master(&nodes).await;
    let high = Node::spawn(&NodeSpec {
        id: "high".into(),
        priority: 10,
        preempt: true,
        ..c.spec.clone()
    });
    eventually(30, "the higher-priority node to take over", async || {
        high.state().await.as_deref() == Some("MASTER")
    })
    .await;
    let status = nodes[0].exited().await;
    assert!(!status.success(), "{}", nodes[0].log_text());
    assert!(nodes[0].log_text().contains("preempted by high"));
    let history = history_terms(&high).await;
    assert_eq!(history[0].0, "high");
    nodes.push(high);
    c.finish(nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_masters_on_one_sqlite_file_take_turns_by_the_lock_file() {
    let dir = tempfile::tempdir().unwrap();
    let spec = NodeSpec {
        id: String::new(),
        database_url: format!("sqlite://{}", dir.path().join("shared.db").display()),
        dir: dir.path().to_owned(),
        certs: certs(dir.path()),
        lease_ms: 600,
        renew_ms: 200,
        priority: 0,
        preempt: false,
        lock_file: Some(dir.path().join("cluster.lock")),
        failsafe: false,
    };
    let node = |id: &str| {
        Node::spawn(&NodeSpec {
            id: id.into(),
            ..spec.clone()
        })
    };
    // The second starts once the first has created the database (two
    // first starts at once race on SQLite's migrations: a known limit).
    let mut nodes = vec![node("a")];
    eventually(20, "the first node to act", async || {
        nodes[0].state().await.as_deref() == Some("MASTER")
    })
    .await;
    nodes.push(node("b"));
    let mut m = 0;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    eventually(21, "one MASTER and one STANDBY", async || {
        let s = states(&nodes).await;
        // Each node's log is printed as it is dropped.
        assert!(tokio::time::Instant::now() <= deadline, "{s:?}");
        match s.iter().position(|x| x.as_deref() == Some("MASTER")) {
            Some(i) => {
                m = i;
                s.iter().filter(|x| x.as_deref() == Some("STANDBY")).count() == 1
            }
            None => false,
        }
    })
    .await;
    nodes[m].kill().await;
    eventually(20, "the other to take the lock and act", async || {
        nodes[1 - m].state().await.as_deref() == Some("MASTER")
    })
    .await;
    for n in &mut nodes {
        n.kill().await;
    }
}
