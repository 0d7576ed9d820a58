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
    /// The edge's link capped to this many bytes per second.
    Throttle(usize, u64),
    /// The master's disk full while an edge's link is cut past its
    /// failover timeout and healed again; then the disk is freed.
    MasterDiskFull(usize),
    /// An edge's disk full while its link is cut and healed; then freed.
    EdgeDiskFull(usize),
    /// The master restarted on its disk mounted read-only: it must refuse
    /// to start, saying why; then restarted on the writable disk.
    MasterReadOnly,
    /// Every packet between the edge's network namespace and the master
    /// dropped silently, both ways, by the kernel (no RST, no ICMP), for
    /// longer than the dead interval; then healed (netns.rs).
    Partition(usize),
}

impl Fault {
    /// A fault at random; the storage faults only when `disks` (the world
    /// could mount disks of its own), the partition only when `netns`
    /// (its edges run in network namespaces). Without either, a seed picks
    /// what it always did.
    pub fn pick(rng: &mut fastrand::Rng, edges: usize, disks: bool, netns: bool) -> Fault {
        let edge = rng.usize(..edges);
        let storage = if disks { 3 } else { 0 };
        let kinds = 10 + storage + u8::from(netns);
        match rng.u8(..kinds) {
            n if n >= 10 + storage => Fault::Partition(edge),
            0 => Fault::KillEdge(edge),
            1 => Fault::StopEdge(edge),
            2 => Fault::Cut(edge),
            3 => Fault::Blackhole(edge),
            4 => Fault::Delay(edge, Duration::from_millis(rng.u64(100..=2_000))),
            5 => Fault::Flap(edge),
            6 => Fault::KillMaster,
            7 => Fault::StopMaster,
            8 => Fault::Restore(edge),
            9 => Fault::Throttle(edge, rng.u64(2_000..=64_000)),
            10 => Fault::MasterDiskFull(edge),
            11 => Fault::EdgeDiskFull(edge),
            _ => Fault::MasterReadOnly,
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
            Fault::Throttle(i, rate) => held(world, i, hold, |p| p.throttle(rate)).await,
            Fault::MasterDiskFull(i) => {
                let disk = world
                    .master_disk
                    .as_ref()
                    .expect("storage faults need disks");
                full_while_cut(disk, world, i, hold).await;
            }
            Fault::EdgeDiskFull(i) => {
                let disk = world.edges[i]
                    .disk
                    .as_ref()
                    .expect("storage faults need disks");
                full_while_cut(disk, world, i, hold).await;
            }
            Fault::MasterReadOnly => world.restart_master_read_only(hold).await,
            Fault::StopMaster => {
                let pid = world.master.pid();
                signal("-STOP", pid);
                tokio::time::sleep(hold.max(world.dead_after * 2)).await;
                signal("-CONT", pid);
            }
            Fault::Partition(i) => {
                let net = world.edges[i]
                    .net
                    .as_ref()
                    .expect("partitions need network namespaces");
                net.partition();
                tokio::time::sleep(hold.max(world.dead_after * 2)).await;
                net.heal();
            }
        }
    }
}

/// A full disk while edge `i` is lost long enough to be taken over (the
/// failover timeout is 1 s) and comes back: every record of those changes
/// has to be written to a disk that refuses it.
async fn full_while_cut(disk: &crate::disk::Disk, world: &World, i: usize, hold: Duration) {
    disk.fill();
    world.edges[i].proxy.cut();
    tokio::time::sleep(hold.max(Duration::from_millis(1_500))).await;
    world.edges[i].proxy.heal();
    tokio::time::sleep(hold).await;
    disk.free();
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
