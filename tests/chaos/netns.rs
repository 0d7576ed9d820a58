//! Real partitions: each edge of the fault suite runs in a network
//! namespace of its own, joined to the root namespace (where the master,
//! the fault proxy and the simulators run) by two veth pairs:
//!
//! - the *uplink* carries the edge's link to the master (through the fault
//!   proxy, which listens on the uplink's root-side address, so every
//!   proxy fault still applies). [`EdgeNet::partition`] cuts it;
//! - the *device LAN* carries the edge's traffic to its simulators, which
//!   listen on the LAN's root-side address. A partition never touches it:
//!   an edge sits beside its devices, and it is the master it loses.
//!
//! The master keeps its loopback address: the proxy forwards to it, so it
//! need not listen on 0.0.0.0, and the other faults keep working on every
//! edge. The partition sits between the edge's kernel and the proxy's;
//! the proxy passes on what arrives (nothing) and closes nothing, so the
//! master, like the edge, only learns of it by silence (`dead_after`).
//!
//! Addresses are link-local (169.254.0.0/16, one /30 per veth pair), not
//! 127.x with `route_localnet`: in the root namespace every 127.0.0.0/8
//! address is local (the `local 127.0.0.0/8 dev lo` route wins over any
//! route to a veth), so replies to an edge at a 127.x address would never
//! leave `lo`. Link-local addresses are never forwarded by a router, and
//! the only routes to them are the /30 of each veth pair, which ends in
//! a namespace on this host: no packet can leave the machine. The /30s
//! are taken from 169.254.64.0/18, clear of 169.254.169.254 (a cloud's
//! metadata service).
//!
//! How packets are dropped: both ends of the uplink have permanent
//! neighbour entries for each other. A partition replaces both with a MAC
//! address that no interface has, so every frame either way is sent with a
//! destination that the receiving veth drops as "other host" (`ip_rcv`
//! drops `PACKET_OTHERHOST` silently): no RST, no ICMP, the carrier stays
//! up, the routes stay, and each side's TCP retransmits into the void as
//! across a broken WAN. Heal puts the right addresses back. Why not
//! `tc qdisc ... netem loss 100%`: this machine's kernel has no netem (nor
//! the gact/matchall actions, nor an nft/iptables binary), while
//! neighbour entries work on any kernel that has veth and namespaces. It
//! is a silent drop, not a "link down" (which would tell both kernels).
//!
//! Names are unique per run: namespaces are `outpost-chaos-<pid>-<n>`, and
//! a veth pair is claimed by creating its root-side name (`ocu<slot>`,
//! `ocl<slot>`), which fails if another test binary holds that slot; the
//! slot gives the addresses. Everything goes in [`Drop`] (a panicking run
//! too). A namespace left by a crashed run (its pid gone) is removed,
//! with any process still in it, before the first namespace is made, and
//! a slot a remnant still holds is skipped.
//!
//! Needs root and a working `ip netns`; checked once per test binary. The
//! suite runs without namespaces (and without the partition fault),
//! saying so once, where they are unavailable or `CHAOS_NETNS=0`.

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};

const PREFIX: &str = "outpost-chaos-";
/// Slots of 8 addresses (two /30s) in 169.254.64.0/18.
const SLOTS: u32 = 2048;
/// A unicast, locally administered MAC no interface here has.
const NOWHERE: &str = "02:6f:63:ff:ff:00";

/// One edge's namespace and its two veth pairs.
#[derive(Debug)]
pub struct EdgeNet {
    ns: String,
    slot: u32,
}

/// Where `ip` is (the edge starts with an empty environment, so no PATH).
fn ip_path() -> Option<&'static PathBuf> {
    static IP: OnceLock<Option<PathBuf>> = OnceLock::new();
    IP.get_or_init(|| {
        ["/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip", "/bin/ip"]
            .iter()
            .map(PathBuf::from)
            .find(|p| p.exists())
    })
    .as_ref()
}

fn ip(args: &[&str]) -> Output {
    Command::new(ip_path().expect("ip(8) was found"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("ip(8) runs")
}

/// Runs `ip args`; `Err` with its message when it fails.
fn ip_ok(args: &[&str]) -> Result<(), String> {
    let out = ip(args);
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Runs `ip args` that must succeed: the namespaces exist by then.
fn ip_must(args: &[&str]) {
    if let Err(e) = ip_ok(args) {
        panic!("{e}");
    }
}

fn v4(slot: u32, host: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(Ipv4Addr::new(169, 254, 64, 0)) + slot * 8 + host)
}

fn mac(slot: u32, end: u8) -> String {
    format!("02:6f:63:{:02x}:{:02x}:{end:02x}", slot >> 8, slot & 0xff)
}

/// Whether edges get namespaces in this test binary. The first call
/// removes what crashed runs left and probes; it says once why not.
pub fn available() -> bool {
    static AVAILABLE: OnceLock<bool> = OnceLock::new();
    *AVAILABLE.get_or_init(|| match probe() {
        Ok(()) => true,
        Err(why) => {
            eprintln!(
                "chaos: netns faults skipped (edges share the root network namespace): {why}"
            );
            false
        }
    })
}

fn probe() -> Result<(), String> {
    if std::env::var("CHAOS_NETNS").is_ok_and(|v| v == "0") {
        return Err("CHAOS_NETNS=0".into());
    }
    if ip_path().is_none() {
        return Err("no ip(8)".into());
    }
    reap_stale();
    let ns = format!("{PREFIX}{}-probe", std::process::id());
    ip_ok(&["netns", "add", &ns])?;
    let veth = ip_ok(&[
        "-n", &ns, "link", "add", "name", "probe0", "type", "veth", "peer", "name", "probe1",
    ]);
    let _ = ip_ok(&["netns", "del", &ns]);
    veth
}

/// Deletes the namespaces of test binaries that are gone, killing what
/// still runs in them (edges a crashed run could not kill).
fn reap_stale() {
    let list = ip(&["netns", "list"]);
    for line in String::from_utf8_lossy(&list.stdout).lines() {
        let Some(name) = line.split_whitespace().next() else {
            continue;
        };
        let Some(owner) = name
            .strip_prefix(PREFIX)
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if std::path::Path::new(&format!("/proc/{owner}")).exists() {
            continue;
        }
        let pids = ip(&["netns", "pids", name]);
        for pid in String::from_utf8_lossy(&pids.stdout).split_whitespace() {
            let _ = Command::new("kill").args(["-KILL", pid]).status();
        }
        let _ = remove(name);
        eprintln!("chaos: removed network namespace {name} left by a run that is gone");
    }
}

impl EdgeNet {
    /// A namespace with its uplink and device LAN, or `None` when
    /// namespaces are unavailable here.
    pub fn create() -> Option<EdgeNet> {
        if !available() {
            return None;
        }
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let ns = format!(
            "{PREFIX}{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        ip_must(&["netns", "add", &ns]);
        // From here on, Drop removes the namespace and the veths in it.
        let mut net = EdgeNet { ns, slot: SLOTS };
        net.slot = (0..SLOTS)
            .find(|&slot| net.claim(slot))
            .expect("a free veth slot");
        let ns = net.ns.as_str();
        ip_must(&["-n", ns, "link", "set", "lo", "up"]);
        for (dev, peer, root, edge) in [(net.uplink(), "uplink", 1, 2), (net.lan(), "lan", 5, 6)] {
            let (slot, root_ip, edge_ip) = (net.slot, v4(net.slot, root), v4(net.slot, edge));
            ip_must(&["addr", "add", &format!("{root_ip}/30"), "dev", &dev]);
            ip_must(&["link", "set", &dev, "up"]);
            let edge_cidr = format!("{edge_ip}/30");
            ip_must(&["-n", ns, "addr", "add", &edge_cidr, "dev", peer]);
            ip_must(&["-n", ns, "link", "set", peer, "up"]);
            // Permanent neighbours: no ARP, and a partition is one
            // replace on each side.
            let (root_mac, edge_mac) = (mac(slot, root as u8), mac(slot, edge as u8));
            let (root_ip, edge_ip) = (root_ip.to_string(), edge_ip.to_string());
            neighbour(None, &edge_ip, &edge_mac, &dev);
            neighbour(Some(ns), &root_ip, &root_mac, peer);
        }
        Some(net)
    }

    /// Creates both veth pairs of `slot`, their edge ends in the
    /// namespace. `false` when another run holds the slot.
    fn claim(&self, slot: u32) -> bool {
        let pair = |dev: &str, peer: &str, root: u8, edge: u8| {
            ip_ok(&[
                "link",
                "add",
                "name",
                dev,
                "address",
                &mac(slot, root),
                "type",
                "veth",
                "peer",
                "name",
                peer,
                "address",
                &mac(slot, edge),
                "netns",
                &self.ns,
            ])
        };
        let (uplink, lan) = (format!("ocu{slot}"), format!("ocl{slot}"));
        if pair(&uplink, "uplink", 1, 2).is_err() {
            return false;
        }
        if pair(&lan, "lan", 5, 6).is_err() {
            let _ = ip_ok(&["link", "del", &uplink]);
            return false;
        }
        true
    }

    fn uplink(&self) -> String {
        format!("ocu{}", self.slot)
    }

    fn lan(&self) -> String {
        format!("ocl{}", self.slot)
    }

    /// The root side of the uplink: the fault proxy to the master listens
    /// here for this edge.
    pub fn uplink_addr(&self) -> IpAddr {
        v4(self.slot, 1).into()
    }

    /// The root side of the device LAN: this edge's simulators listen here.
    pub fn lan_addr(&self) -> IpAddr {
        v4(self.slot, 5).into()
    }

    /// `program` to be run inside the namespace (`ip netns exec` execs it:
    /// same pid, so signals reach the program itself).
    pub fn command(&self, program: &std::path::Path) -> tokio::process::Command {
        let mut c = tokio::process::Command::new(ip_path().expect("ip(8) was found"));
        c.args(["netns", "exec", &self.ns]).arg(program);
        c
    }

    /// Every packet between the edge and the master dropped, both ways,
    /// silently.
    pub fn partition(&self) {
        self.uplink_neighbours(NOWHERE, NOWHERE);
    }

    /// The uplink carries packets again.
    pub fn heal(&self) {
        self.uplink_neighbours(&mac(self.slot, 2), &mac(self.slot, 1));
    }

    fn uplink_neighbours(&self, edge_mac: &str, root_mac: &str) {
        let (edge_ip, root_ip) = (v4(self.slot, 2).to_string(), v4(self.slot, 1).to_string());
        neighbour(None, &edge_ip, edge_mac, &self.uplink());
        neighbour(Some(&self.ns), &root_ip, root_mac, "uplink");
    }
}

fn neighbour(ns: Option<&str>, addr: &str, mac: &str, dev: &str) {
    let mut args = Vec::new();
    if let Some(ns) = ns {
        args.extend(["-n", ns]);
    }
    args.extend([
        "neigh",
        "replace",
        addr,
        "lladdr",
        mac,
        "dev",
        dev,
        "nud",
        "permanent",
    ]);
    ip_must(&args);
}

/// Deletes a namespace's veth pairs, then the namespace. The pairs would
/// go with the namespace, but only once nothing refers to it, and a TCP
/// socket its edge left behind (closing, retransmitting across a
/// partition) does so for minutes: deleting the pairs frees their slot now.
fn remove(ns: &str) -> Result<(), String> {
    for dev in ["uplink", "lan"] {
        let _ = ip_ok(&["-n", ns, "link", "del", dev]);
    }
    ip_ok(&["netns", "del", ns])
}

impl Drop for EdgeNet {
    fn drop(&mut self) {
        // No panic here: this may run while a failed run unwinds.
        if let Err(e) = remove(&self.ns) {
            eprintln!("chaos: {e}");
        }
    }
}
