//! Log lines a stranger cannot multiply: an occurrence (a failed handshake,
//! a refused connection) is reported once per source per interval, with
//! the number of occurrences since the last report; the rest are counted.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use super::{Unpoisoned, source_of};

/// Occurrences per source (IPv6 per /64) since their last report.
#[derive(Debug)]
pub struct Noise {
    interval: Duration,
    max_tracked: usize,
    sources: Mutex<HashMap<IpAddr, Source>>,
}

#[derive(Debug, Clone, Copy)]
struct Source {
    reported_at: Instant,
    /// Occurrences since `reported_at` not reported yet.
    held: u64,
}

impl Noise {
    /// Reports each source at most once per `interval`, tracking at most
    /// `max_tracked` sources (beyond that, new sources are not reported
    /// until old ones age out: a flood of addresses cannot grow the table
    /// or the log).
    pub fn new(interval: Duration, max_tracked: usize) -> Noise {
        Noise {
            interval,
            max_tracked,
            sources: Mutex::new(HashMap::new()),
        }
    }

    /// Notes one occurrence from `ip` at `now`. `Some(n)`: report it now,
    /// as `n` occurrences (this one and those held back since the last
    /// report); `None`: it is held back.
    pub fn note(&self, ip: IpAddr, now: Instant) -> Option<u64> {
        let key = source_of(ip);
        let mut sources = self.sources.lock_unpoisoned();
        if let Some(s) = sources.get_mut(&key) {
            if now.duration_since(s.reported_at) < self.interval {
                s.held += 1;
                return None;
            }
            let n = s.held + 1;
            *s = Source {
                reported_at: now,
                held: 0,
            };
            return Some(n);
        }
        if sources.len() >= self.max_tracked {
            let interval = self.interval;
            sources.retain(|_, s| now.duration_since(s.reported_at) < interval);
            if sources.len() >= self.max_tracked {
                return None;
            }
        }
        sources.insert(
            key,
            Source {
                reported_at: now,
                held: 0,
            },
        );
        Some(1)
    }

    /// Sources tracked now (tests).
    pub fn tracked(&self) -> usize {
        self.sources.lock_unpoisoned().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_report_per_source_per_interval_with_the_count() {
        let noise = Noise::new(Duration::from_secs(60), 2);
        let t0 = Instant::now();
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "2001:db8::1".parse().unwrap();
        let b2: IpAddr = "2001:db8::2".parse().unwrap();
        assert_eq!(noise.note(a, t0), Some(1));
        assert_eq!(noise.note(a, t0), None);
        assert_eq!(noise.note(a, t0), None);
        assert_eq!(noise.note(b, t0), Some(1));
        assert_eq!(noise.note(b2, t0), None, "same /64");
        let c: IpAddr = "10.0.0.3".parse().unwrap();
        assert_eq!(noise.note(c, t0), None, "table full: held back");
        let later = t0 + Duration::from_secs(61);
        assert_eq!(noise.note(a, later), Some(3));
        assert_eq!(
            noise.note(c, later),
            Some(1),
            "an aged-out source made room"
        );
        assert!(noise.tracked() <= 2);
    }
}
