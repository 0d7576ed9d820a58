//! The nemesis: which faults exist, how one is picked from a seed, and how
//! each is applied and healed on a [`World`].

use std::time::Duration;

use crate::world::World;

#[derive(Debug, Clone, Copy)]
pub enum Fault {
    /// kill -9 of an edge, restarted after the hold.
    KillEdge(usize),
    /// SIGSTOP of an edge longer than the dead interval, then SIGCONT.
    StopEdge(usize),
    /// The edge's link refused and closed.
    Cut(usize),
    /// The edge's link forwards nothing and closes nothing (a partition).
    Blackhole(usize),
    /// Every chunk of the edge's link delayed.
    Delay(usize, Duration),
    /// The edge's link cut and healed several times in a row.
    Flap(usize),
    /// kill -9 of the master, restarted on the same ports after the hold.
    KillMaster,
    /// SIGSTOP of the master longer than the dead interval, then SIGCONT.
    StopMaster,
    /// Not a fault: an operator hands a site the master holds back to its
    /// edge, so that later faults find hand-backs to tear.
    Restore(usize),
}

impl Fault {
    pub fn pick(rng: &mut fastrand::Rng, edges: usize) -> Fault {
        let edge = rng.usize(..edges);
        match rng.u8(..9) {
            0 => Fault::KillEdge(edge),
            1 => Fault::StopEdge(edge),
            2 => Fault::Cut(edge),
            3 => Fault::Blackhole(edge),
            4 => Fault::Delay(edge, Duration::from_millis(rng.u64(100..=2_000))),
            5 => Fault::Flap(edge),
            6 => Fault::KillMaster,
            7 => Fault::StopMaster,
            _ => Fault::Restore(edge),
        }
    }

    /// Applies the fault, holds it for `hold`, and heals it.
    pub async fn run(self, world: &mut World, rng: &mut fastrand::Rng, hold: Duration) {
        match self {
            Fault::KillEdge(i) => {
                world.edges[i].kill().await;
                tokio::time::sleep(hold).await;
                world.edges[i].spawn();
            }
            Fault::StopEdge(i) => {
                let pid = world.edges[i].pid();
                signal("-STOP", pid);
                tokio::time::sleep(hold.max(world.dead_after * 2)).await;
                signal("-CONT", pid);
            }
            Fault::Cut(i) => held(world, i, hold, |p| p.cut()).await,
            Fault::Blackhole(i) => held(world, i, hold, |p| p.blackhole()).await,
            Fault::Delay(i, by) => held(world, i, hold, |p| p.delay(by)).await,
            Fault::Flap(i) => {
                for _ in 0..rng.u8(3..8) {
                    world.edges[i].proxy.cut();
                    tokio::time::sleep(Duration::from_millis(rng.u64(50..300))).await;
                    world.edges[i].proxy.heal();
                    tokio::time::sleep(Duration::from_millis(rng.u64(50..300))).await;
                }
            }
            Fault::KillMaster => {
                world.master.kill().await;
                tokio::time::sleep(hold).await;
                world.spawn_master();
            }
            Fault::Restore(i) => world.restore(i).await,
            Fault::StopMaster => {
                let pid = world.master.pid();
                signal("-STOP", pid);
                tokio::time::sleep(hold.max(world.dead_after * 2)).await;
                signal("-CONT", pid);
            }
        }
    }
}

async fn held(world: &World, i: usize, hold: Duration, apply: impl Fn(&crate::proxy::Proxy)) {
    apply(&world.edges[i].proxy);
    tokio::time::sleep(hold).await;
    world.edges[i].proxy.heal();
}

/// Sends a signal with kill(1): the tests forbid unsafe code, and this is
/// what an operator's `kill` does.
pub fn signal(sig: &str, pid: u32) {
    let status = std::process::Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .expect("kill(1) runs");
    assert!(status.success(), "kill {sig} {pid} failed");
}
