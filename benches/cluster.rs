//! Master cluster failover: two `outpost master` processes (release build)
//! on one PostgreSQL database, a master-run PJLink projector.
//!
//! - **kill -9 → acting**: SIGKILL the MASTER; time until the other node's
//!   API accepts a write (201) and the projector is connected again.
//! - **SIGTERM → acting**: the same after a graceful stop (the lease is
//!   released, not waited out).
//! - **Split brain**: trials in which the projector saw two connections at
//!   once after the fault (commands from two nodes possible), counted over
//!   all trials. Target 0.
//!
//! - **kill -9 → every edge on the new MASTER**: `CLUSTER_EDGES` (100)
//!   `outpost edge` processes list both nodes; time from the kill until
//!   the new MASTER's `/api/v1/sites` shows every one connected.
//!
//! Each figure is p50 and p99 over the trials, as a ratio to `lease_ms`
//! measured in the same run. The killed node is started again as a
//! standby before the next trial.
//!
//! Run: `TEST_PG_URL=postgres://… cargo bench --bench cluster`
//! (CLUSTER_ONLY=kill|term|edges: one phase; CLUSTER_DETAIL: each trial)
//! (CLUSTER_TRIALS, default 50; `--quick`: 5; CLUSTER_LEASE_MS, default
//! 2000, and CLUSTER_RENEW_MS, default 500: the configuration's defaults).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    unreachable_pub,
    missing_debug_implementations,
    reason = "tests and benchmarks fail loudly by design, and their items are not an API"
)]

#[path = "../tests/cluster/node.rs"]
mod node;
#[path = "../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use node::{
    ADMIN_KEY, Database, Node, NodeSpec, certs, connected_edges, edge_locations, import_room,
    one_master, send, spawn_edge,
};
use outpost::sim::{PjlinkOptions, PjlinkSim};

fn percentile(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i.min(v.len() - 1)]
}

/// Waits until `node` accepts a write and the projector is connected.
async fn acting(node: &Node, sim: &PjlinkSim, trial: usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let body = format!(r#"{{"name":"Trial {trial}"}}"#);
    let mut written = false;
    loop {
        if !written {
            written = matches!(
                send(
                    node.api,
                    "POST",
                    "/api/v1/systems",
                    Some(ADMIN_KEY),
                    Some(&body)
                )
                .await,
                Some((201, _))
            );
        }
        if written && sim.connections() == 1 {
            return;
        }
        assert!(Instant::now() < deadline, "the new MASTER did not act");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

struct Run {
    acting: Vec<f64>,
    split: usize,
}

async fn trials(kind: &str, n: usize, nodes: &mut [Node], sim: &PjlinkSim, lease_ms: f64) -> Run {
    let mut run = Run {
        acting: Vec::new(),
        split: 0,
    };
    for trial in 0..n {
        let m = one_master(nodes).await;
        acting(&nodes[m], sim, trial).await;
        sim.reset_max_connections();
        let t = Instant::now();
        match kind {
            "kill" => nodes[m].kill().await,
            _ => {
                nodes[m].signal("TERM");
                nodes[m].exited().await;
            }
        }
        let faulted = t.elapsed();
        acting(&nodes[1 - m], sim, trial).await;
        if std::env::var_os("CLUSTER_DETAIL").is_some() {
            println!(
                "  {kind} trial {trial}: faulted node gone after {:.0} ms, other acting after {:.0} ms",
                faulted.as_secs_f64() * 1e3,
                t.elapsed().as_secs_f64() * 1e3
            );
            if t.elapsed() > Duration::from_millis(300) {
                let tail =
                    |text: String| text.lines().rev().take(12).collect::<Vec<_>>().join("\n");
                println!("--- faulted ---\n{}", tail(nodes[m].log_text()));
                println!("--- other ---\n{}", tail(nodes[1 - m].log_text()));
            }
        }
        run.acting.push(t.elapsed().as_secs_f64() * 1e3 / lease_ms);
        if sim.max_connections_seen() > 1 {
            run.split += 1;
        }
        nodes[m] = nodes[m].restart();
    }
    run
}

/// Waits until `node` has a live link with each of `ids`.
async fn all_connected(node: &Node, ids: &std::collections::HashSet<String>) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if connected_edges(node)
            .await
            .is_some_and(|c| ids.is_subset(&c))
        {
            return;
        }
        assert!(Instant::now() < deadline, "the edges did not all connect");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// kill -9 of the MASTER → every edge connected to the new one.
async fn edge_trials(
    n: usize,
    nodes: &mut [Node],
    ids: &std::collections::HashSet<String>,
    lease_ms: f64,
) -> Run {
    let mut run = Run {
        acting: Vec::new(),
        split: 0,
    };
    for _ in 0..n {
        let m = one_master(nodes).await;
        all_connected(&nodes[m], ids).await;
        let t = Instant::now();
        nodes[m].kill().await;
        all_connected(&nodes[1 - m], ids).await;
        run.acting.push(t.elapsed().as_secs_f64() * 1e3 / lease_ms);
        nodes[m] = nodes[m].restart();
    }
    run
}

fn report(name: &str, run: &mut Run, lease_ms: f64) {
    let p50 = percentile(&mut run.acting, 0.5);
    let p99 = percentile(&mut run.acting, 0.99);
    println!(
        "{name}: {} trials, p50 {:.2} × lease_ms ({:.0} ms), p99 {:.2} × lease_ms ({:.0} ms), split-brain trials {}",
        run.acting.len(),
        p50,
        p50 * lease_ms,
        p99,
        p99 * lease_ms,
        run.split
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let n: usize = std::env::var("CLUSTER_TRIALS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if quick { 5 } else { 50 });
    let lease_ms: u64 = std::env::var("CLUSTER_LEASE_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    let renew_ms: u64 = std::env::var("CLUSTER_RENEW_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(500);
    let edges: usize = std::env::var("CLUSTER_EDGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    let Some(db) = Database::create().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let sim = PjlinkSim::start("127.0.0.1:0".parse().unwrap(), PjlinkOptions::default())
        .await
        .unwrap();
    import_room(&db.url, sim.addr(), false).await;
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
    let mut nodes: Vec<Node> = ["a", "b"]
        .iter()
        .map(|id| {
            Node::spawn(&NodeSpec {
                id: (*id).into(),
                ..spec.clone()
            })
        })
        .collect();
    println!("cluster failover: 2 nodes, lease_ms {lease_ms}, renew_ms {renew_ms}");
    let lease = lease_ms as f64;
    let only = std::env::var("CLUSTER_ONLY").unwrap_or_default();
    if only.is_empty() || only == "kill" {
        let mut kill = trials("kill", n, &mut nodes, &sim, lease).await;
        report("kill -9 → new MASTER acting", &mut kill, lease);
    }
    if only.is_empty() || only == "term" {
        let mut term = trials("term", n, &mut nodes, &sim, lease).await;
        report("SIGTERM → new MASTER acting", &mut term, lease);
    }
    if !(only.is_empty() || only == "edges") {
        for n in &mut nodes {
            n.kill().await;
        }
        db.drop_it().await;
        return;
    }

    let located = edge_locations(&db.url, edges).await;
    let masters = format!("{},{}", nodes[0].link, nodes[1].link);
    let mut children: Vec<_> = located
        .iter()
        .map(|(id, secret)| spawn_edge(&spec, *id, secret, &masters))
        .collect();
    let ids = located.iter().map(|(id, _)| id.to_string()).collect();
    let mut moved = edge_trials(n, &mut nodes, &ids, lease).await;
    report(
        &format!("kill -9 → {edges} edges connected to the new MASTER"),
        &mut moved,
        lease,
    );
    for c in &mut children {
        let _ = c.kill().await;
    }
    for n in &mut nodes {
        n.kill().await;
    }
    db.drop_it().await;
}
