//! A rolling upgrade across protocol versions (README.md, "Cluster" and
//! "Upgrades"): edges of the previous release, which speak link protocol
//! version 1, stay with a cluster of this build while its nodes are
//! stopped and started again one by one, as an operator upgrades them.
//!
//! The edges are the previous release's own binary, built from the landed
//! commit by `.ci/run` and named by `PREVIOUS_OUTPOST_BIN`: nothing of this
//! build speaks for them. A version-1 edge does not know the standby's
//! redirect; the standby denies it, and it goes on to its next address.

use std::path::PathBuf;

use crate::nodes::{Cluster, LEASE_MS, RENEW_MS};
use crate::{connected_edges, edge_locations, eventually, spawn_edge_of};

/// The previous release's `outpost`, required under CI.
fn previous_release() -> Option<PathBuf> {
    match std::env::var_os("PREVIOUS_OUTPOST_BIN") {
        Some(path) => Some(path.into()),
        None if std::env::var_os("CI").is_some() => {
            panic!("under CI, PREVIOUS_OUTPOST_BIN must name the previous release's binary")
        }
        None => {
            eprintln!(
                "SKIPPED: set PREVIOUS_OUTPOST_BIN to the previous release's outpost binary (see .ci/run)"
            );
            None
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edges_of_the_previous_version_follow_a_rolling_upgrade_of_the_cluster() {
    let Some(previous) = previous_release() else {
        return;
    };
    let Some(c) = Cluster::new(LEASE_MS, RENEW_MS).await else {
        return;
    };
    let located = edge_locations(&c.db.url, 2).await;
    let ids: std::collections::HashSet<String> =
        located.iter().map(|(id, _)| id.to_string()).collect();
    let mut nodes = vec![c.node("a"), c.node("b")];
    let m = c.one_master(&nodes).await;
    // The standby first: each edge is denied there and goes on.
    let masters = format!("{},{}", nodes[1 - m].link, nodes[m].link);
    let mut edges: Vec<_> = located
        .iter()
        .map(|(id, secret)| spawn_edge_of(&previous, &c.spec, *id, secret, &masters))
        .collect();
    let all_on = async |node: &crate::Node| {
        connected_edges(node)
            .await
            .is_some_and(|c| ids.is_subset(&c))
    };
    eventually(30, "the old edges to connect to the MASTER", async || {
        all_on(&nodes[m]).await
    })
    .await;

    // Each node in turn: stopped (it hands over at once), "upgraded",
    // started again as a standby; the old edges follow the MASTER.
    for _ in 0..2 {
        let m = c.one_master(&nodes).await;
        nodes[m].signal("TERM");
        let status = nodes[m].exited().await;
        assert!(status.success(), "{}", nodes[m].log_text());
        let next = 1 - m;
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
        eventually(31, "the old edges to follow the new MASTER", async || {
            if tokio::time::Instant::now() > deadline {
                for (id, _) in &located {
                    let log = c.spec.dir.join(format!("edge-{id}")).join("edge.log");
                    let text = std::fs::read_to_string(log).unwrap_or_default();
                    eprintln!("--- old edge {id} ---\n{text}");
                }
                eprintln!("--- new MASTER ---\n{}", nodes[next].log_text());
                panic!("the old edges did not follow");
            }
            all_on(&nodes[next]).await
        })
        .await;
        nodes[m] = nodes[m].restart();
    }
    c.one_master(&nodes).await;
    for edge in &mut edges {
        assert!(
            edge.try_wait().unwrap().is_none(),
            "an old edge exited during the upgrade"
        );
        edge.kill().await.unwrap();
    }
    c.finish(nodes).await;
}
