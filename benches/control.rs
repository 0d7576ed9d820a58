//! Control benchmark: one edge location with 1,000 modules spread over 100
//! PJLink simulators (10 connections each), `failover_timeout_ms = 0`, a
//! real master in this process and the edge as its own `outpost edge`
//! process (release build).
//!
//! - **Takeover**: SIGKILL the edge; time until all 1,000 modules are
//!   connected at the master. Reported with p50 over the runs and as a ratio
//!   to the configured dead-peer interval (`dead_after_ms`), and beside the
//!   time the master took to see the link lost (measured in the same run).
//! - **Hand-back at a window**: the restarted edge stands by; the manual
//!   clock moves to the window's opening; the simulators' connection logs
//!   give, per device, the overlap (most connections open at once beyond
//!   one side's 10: target 0) and the gap (from the master's last
//!   connection closing to the edge's first opening: target ≤ 300 ms).
//!
//! Run: `cargo bench --bench control` (BENCH_RUNS, default 5).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    unreachable_pub,
    missing_debug_implementations,
    reason = "tests and benchmarks fail loudly by design, and their items are not an API"
)]

#[path = "../tests/support/roles.rs"]
mod roles;

use std::time::{Duration, Instant};

use outpost::control::{Clock, Side};
use outpost::sim::{PjlinkOptions, PjlinkSim};
use serde_json::json;

use roles::{EdgeProcess, Site, device};

const DEVICES: usize = 100;
const PER_DEVICE: usize = 10;
const MODULES: usize = DEVICES * PER_DEVICE;
/// 2026-11-22 10:00 UTC; windows open daily at 03:00 UTC.
const T0: i64 = 1_795_341_600_000;
const DAY: i64 = 86_400_000;
const FIRST_WINDOW: i64 = 1_795_402_800_000;

fn main() {
    let runs: usize = std::env::var("BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(bench(runs));
}

fn percentile(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    v[((v.len() - 1) as f64 * p).round() as usize]
}

async fn wait(what: &str, secs: u64, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

async fn bench(runs: usize) {
    let site = Site::new();
    let mut sims = Vec::new();
    for _ in 0..DEVICES {
        sims.push(
            PjlinkSim::start("127.0.0.1:0".parse().unwrap(), PjlinkOptions::default())
                .await
                .unwrap(),
        );
    }
    let modules: Vec<_> = (0..MODULES)
        .map(|i| {
            device(
                &format!("Projector {i}"),
                "pjlink.lua",
                Some(sims[i % DEVICES].addr()),
            )
        })
        .collect();
    let room = site
        .one_room(
            json!({
                "failover": true,
                "failover_timeout_ms": 0,
                "window_start": "0 3 * * *",
                "window_length_ms": 3_600_000,
                "timezone": "UTC",
            }),
            &modules,
        )
        .await;
    site.seed_replica(room.edge_id).await;
    let clock = Clock::manual(T0);
    let master_config = outpost::config::Config {
        // Hand-overs follow each other quickly here; a flapping link is
        // not what this measures.
        max_control_changes_per_minute: 0,
        log: "warn".into(),
        ..site.master_config()
    };
    let dead_after = master_config.dead_after_ms as f64;
    let master = outpost::master::start_with_clock(master_config, clock.clone())
        .await
        .unwrap();
    let edge_config = outpost::config::Config {
        reconnect_ms: 500,
        ..site.edge_config(room.edge_id, &room.secret, master.link_addr)
    };
    let edge_id = room.edge_id;
    let total = || sims.iter().map(|s| s.connections()).sum::<usize>();
    let at_master = || master.runtime.location_devices(Some(edge_id)).connected;
    let controller = || master.control.state(edge_id).map(|s| s.controller);

    // The master took the site at boot (the edge was not there); the
    // edge's first connection puts it on stand-by; the first window hands
    // the site to it.
    wait("the master to run the site", 60, || at_master() == MODULES).await;
    let mut edge = EdgeProcess::spawn(&edge_config);

    let mut takeover = Vec::new();
    let mut lost = Vec::new();
    let mut gaps_p50 = Vec::new();
    let mut gaps_max = Vec::new();
    let mut overlaps = 0usize;
    for run in 0..=runs {
        // Hand-back at the window of day `run`.
        wait("the edge to connect", 60, || {
            master.registry.peer(edge_id).is_some()
        })
        .await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        for s in &sims {
            s.reset_max_connections();
        }
        let opened = Instant::now();
        clock.set(FIRST_WINDOW + run as i64 * DAY);
        wait("the hand-back", 60, || {
            controller() == Some(Side::Edge) && at_master() == 0 && total() == MODULES
        })
        .await;
        let handback = opened.elapsed();
        let mut gaps = Vec::new();
        for s in &sims {
            if s.max_connections_seen() > PER_DEVICE {
                overlaps += 1;
            }
            let log = s.connection_log();
            // The last time the device had no connection, and the first
            // connection after it.
            if let Some(zero) = log.iter().rposition(|&(_, n)| n == 0)
                && let Some(&(reopened, _)) = log.get(zero + 1)
            {
                gaps.push((reopened - log[zero].0).as_secs_f64() * 1e3);
            }
        }
        let p50 = percentile(&mut gaps, 0.5);
        let max = percentile(&mut gaps, 1.0);
        println!(
            "hand-back {run}: {:.0} ms from the window opening to all {MODULES} modules at the edge; per-device gap p50 {p50:.1} ms, max {max:.1} ms",
            handback.as_secs_f64() * 1e3
        );
        if run > 0 {
            gaps_p50.push(p50);
            gaps_max.push(max);
        }
        if run == runs {
            break;
        }
        // Close the window, then kill the edge.
        clock.set(FIRST_WINDOW + run as i64 * DAY + 2 * 3_600_000);
        tokio::time::sleep(Duration::from_millis(200)).await;
        let killed = Instant::now();
        edge.kill().await;
        wait("the master to see the link lost", 60, || {
            master.registry.peer(edge_id).is_none()
        })
        .await;
        let seen = killed.elapsed();
        wait("the takeover", 60, || at_master() == MODULES).await;
        let took = killed.elapsed();
        println!(
            "takeover {run}: link lost seen after {:.1} ms; all {MODULES} modules connected at the master after {:.0} ms",
            seen.as_secs_f64() * 1e3,
            took.as_secs_f64() * 1e3
        );
        lost.push(seen.as_secs_f64() * 1e3);
        takeover.push(took.as_secs_f64() * 1e3);
        edge = EdgeProcess::spawn(&edge_config);
    }
    let p50 = percentile(&mut takeover, 0.5);
    println!();
    println!(
        "takeover p50 {p50:.0} ms (target ≤ 1500 ms) = {:.2}× the dead-peer interval ({dead_after:.0} ms); link loss seen in {:.1} ms p50",
        p50 / dead_after,
        percentile(&mut lost, 0.5)
    );
    println!(
        "hand-back: devices with overlap {overlaps} of {} (target 0); gap p50 {:.1} ms, worst run's max {:.1} ms (target ≤ 300 ms)",
        DEVICES * (runs + 1),
        percentile(&mut gaps_p50, 0.5),
        percentile(&mut gaps_max, 1.0),
    );
    edge.kill().await;
    master.stop().await;
}
