//! One throttle for every door a stranger can knock on (the link's
//! handshake, the API's keys): after a few recent failures from one
//! address, each new attempt from it waits, doubling up to a cap.
//!
//! Not a rate limiter such as `governor`'s GCRA: well-behaved clients are
//! never slowed, whatever their rate; only failures count, and a success
//! forgets them.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use super::Unpoisoned;

/// How a throttle counts and punishes failures.
#[derive(Debug, Clone, Copy)]
pub struct ThrottlePolicy {
    /// Failures allowed within `window` before attempts wait.
    pub free: u32,
    /// Failures older than this are forgotten.
    pub window: Duration,
    /// The first wait; each further failure doubles it.
    pub base: Duration,
    /// The longest wait.
    pub cap: Duration,
    /// Addresses tracked at most: a flood of new addresses evicts the
    /// oldest entries instead of growing the table.
    pub max_tracked: usize,
}

/// Failures per source address (IPv6 per /64, since one host commonly
/// holds a whole /64).
#[derive(Debug)]
pub struct FailureThrottle {
    policy: ThrottlePolicy,
    failures: Mutex<HashMap<IpAddr, (u32, Instant)>>,
}

impl FailureThrottle {
    pub fn new(policy: ThrottlePolicy) -> Self {
        Self {
            policy,
            failures: Mutex::new(HashMap::new()),
        }
    }

    pub fn policy(&self) -> ThrottlePolicy {
        self.policy
    }

    /// How long a new attempt from `ip` waits at `now`.
    pub fn penalty(&self, ip: IpAddr, now: Instant) -> Duration {
        let p = self.policy;
        match self.failures.lock_unpoisoned().get(&source_of(ip)) {
            Some(&(n, last)) if now.duration_since(last) < p.window && n >= p.free => {
                let doublings = (n - p.free).min(16);
                p.base.saturating_mul(1 << doublings).min(p.cap)
            }
            _ => Duration::ZERO,
        }
    }

    /// Records a failure from `ip` at `now`.
    pub fn failure(&self, ip: IpAddr, now: Instant) {
        let p = self.policy;
        let mut map = self.failures.lock_unpoisoned();
        if map.len() >= p.max_tracked {
            map.retain(|_, (_, last)| now.duration_since(*last) < p.window);
        }
        if map.len() >= p.max_tracked {
            evict_oldest(&mut map);
        }
        let e = map.entry(source_of(ip)).or_insert((0, now));
        if now.duration_since(e.1) >= p.window {
            e.0 = 0;
        }
        e.0 = e.0.saturating_add(1);
        e.1 = now;
    }

    /// Forgets the failures of `ip`.
    pub fn success(&self, ip: IpAddr) {
        self.failures.lock_unpoisoned().remove(&source_of(ip));
    }

    /// Addresses tracked now.
    pub fn tracked(&self) -> usize {
        self.failures.lock_unpoisoned().len()
    }
}

/// The key an address is counted under: itself for IPv4, its /64 for IPv6
/// (one host commonly holds a whole /64).
pub fn source_of(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let prefix = u128::from(v6) & !((1u128 << 64) - 1);
                IpAddr::V6(prefix.into())
            }
        },
    }
}

fn evict_oldest(map: &mut HashMap<IpAddr, (u32, Instant)>) {
    if let Some(oldest) = map.iter().min_by_key(|(_, (_, at))| *at).map(|(ip, _)| *ip) {
        map.remove(&oldest);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(max_tracked: usize) -> ThrottlePolicy {
        ThrottlePolicy {
            free: 2,
            window: Duration::from_secs(60),
            base: Duration::from_millis(250),
            cap: Duration::from_secs(2),
            max_tracked,
        }
    }

    #[test]
    fn waits_double_after_the_free_failures_up_to_the_cap() {
        let t = FailureThrottle::new(policy(10));
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let now = Instant::now();
        let mut seen = Vec::new();
        for _ in 0..6 {
            seen.push(t.penalty(ip, now).as_millis());
            t.failure(ip, now);
        }
        assert_eq!(seen, [0, 0, 250, 500, 1000, 2000]);
        t.success(ip);
        assert_eq!(t.penalty(ip, now), Duration::ZERO);
    }

    #[test]
    fn the_table_never_grows_past_its_bound() {
        let t = FailureThrottle::new(policy(100));
        let now = Instant::now();
        for i in 0..10_000u32 {
            t.failure(IpAddr::V4(i.into()), now);
        }
        assert_eq!(t.tracked(), 100);
    }

    #[test]
    fn an_ipv6_slash_64_counts_as_one_source() {
        let t = FailureThrottle::new(policy(10));
        let now = Instant::now();
        for i in 0..4u16 {
            let ip: IpAddr = format!("2001:db8:1:2::{i:x}").parse().unwrap();
            t.failure(ip, now);
        }
        let sibling: IpAddr = "2001:db8:1:2:ffff::1".parse().unwrap();
        let stranger: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert!(t.penalty(sibling, now) > Duration::ZERO);
        assert_eq!(t.penalty(stranger, now), Duration::ZERO);
        assert_eq!(t.tracked(), 1);
    }
}
