//! A bound on connections a stranger can open, in all and per source
//! address: the link's connections that have not yet authenticated, and the
//! API's open connections. A flood of silent or slow sockets costs a fixed
//! amount of memory and descriptors and cannot crowd out other addresses.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::{Unpoisoned, source_of};

/// Limits on connections held at once.
#[derive(Debug, Clone, Copy)]
pub struct AdmissionLimits {
    /// Connections held at once, in all. More are closed at once (an edge
    /// retries in a few seconds; an HTTP client sees a reset).
    pub max_unauthenticated: usize,
    /// The same, per source address (IPv6 per /64): one host cannot take
    /// every slot.
    pub per_source: usize,
}

impl Default for AdmissionLimits {
    /// The link's defaults: 1,024 handshakes in progress, 64 per source.
    fn default() -> Self {
        Self {
            max_unauthenticated: 1024,
            per_source: 64,
        }
    }
}

/// Why a connection was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Every slot is taken.
    Full,
    /// This source holds its share already.
    SourceFull,
}

impl Refusal {
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::Full => "full",
            Refusal::SourceFull => "source_full",
        }
    }
}

/// The connections now held, by source. Clones share the count.
#[derive(Debug, Clone)]
pub struct Admission(Arc<Counts>);

#[derive(Debug)]
struct Counts {
    limits: AdmissionLimits,
    open: Mutex<(usize, HashMap<IpAddr, usize>)>,
    refused: AtomicU64,
}

/// A slot, given back when dropped.
#[derive(Debug)]
pub struct Ticket {
    counts: Arc<Counts>,
    source: IpAddr,
}

impl Admission {
    pub fn new(limits: AdmissionLimits) -> Self {
        Self(Arc::new(Counts {
            limits,
            open: Mutex::new((0, HashMap::new())),
            refused: AtomicU64::new(0),
        }))
    }

    pub fn try_admit(&self, ip: IpAddr) -> Result<Ticket, Refusal> {
        let source = source_of(ip);
        let c = &self.0;
        let mut open = c.open.lock_unpoisoned();
        let (total, by_source) = &mut *open;
        let refusal = if *total >= c.limits.max_unauthenticated {
            Some(Refusal::Full)
        } else if by_source.get(&source).copied().unwrap_or(0) >= c.limits.per_source {
            Some(Refusal::SourceFull)
        } else {
            None
        };
        if let Some(r) = refusal {
            c.refused.fetch_add(1, Ordering::Relaxed);
            return Err(r);
        }
        *total += 1;
        *by_source.entry(source).or_default() += 1;
        Ok(Ticket {
            counts: c.clone(),
            source,
        })
    }

    /// Connections refused since start.
    pub fn refused(&self) -> u64 {
        self.0.refused.load(Ordering::Relaxed)
    }

    /// Unauthenticated connections open now.
    pub fn open(&self) -> usize {
        self.0.open.lock_unpoisoned().0
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut open = self.counts.open.lock_unpoisoned();
        let (total, by_source) = &mut *open;
        *total = total.saturating_sub(1);
        if let Some(n) = by_source.get_mut(&self.source) {
            *n -= 1;
            if *n == 0 {
                by_source.remove(&self.source);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_bounded_in_all_and_per_source_and_come_back_on_drop() {
        let a = Admission::new(AdmissionLimits {
            max_unauthenticated: 3,
            per_source: 2,
        });
        let one: IpAddr = "192.0.2.1".parse().unwrap();
        let two: IpAddr = "192.0.2.2".parse().unwrap();
        let t1 = a.try_admit(one).unwrap();
        let _t2 = a.try_admit(one).unwrap();
        assert_eq!(a.try_admit(one).unwrap_err(), Refusal::SourceFull);
        let _t3 = a.try_admit(two).unwrap();
        assert_eq!(a.try_admit(two).unwrap_err(), Refusal::Full);
        drop(t1);
        assert_eq!(a.open(), 2);
        assert!(a.try_admit(two).is_ok());
        assert_eq!(a.refused(), 2);
    }
}
