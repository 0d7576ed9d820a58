//! The lease deadline, on `CLOCK_BOOTTIME`: it keeps counting while the
//! process is stopped (SIGSTOP) or the machine suspended, where
//! `Instant` (`CLOCK_MONOTONIC`) would not, so a node resumed after its
//! lease may have expired finds its deadline past at its first clock read.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Time since boot, suspension included.
pub fn boottime() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Boottime);
    Duration::new(
        t.tv_sec.max(0) as u64,
        t.tv_nsec.clamp(0, 999_999_999) as u32,
    )
}

/// Until when (boot time, nanoseconds) this node may act; 0: not at all.
#[derive(Debug, Default, Clone)]
pub struct Deadline(Arc<AtomicU64>);

impl Deadline {
    /// A clock read against the deadline: what every device write asks.
    pub fn open(&self) -> bool {
        (boottime().as_nanos() as u64) < self.0.load(Ordering::Acquire)
    }

    /// Acting until `at` (boot time).
    pub fn extend_to(&self, at: Duration) {
        self.0.store(
            u64::try_from(at.as_nanos()).unwrap_or(u64::MAX),
            Ordering::Release,
        );
    }

    pub fn close(&self) {
        self.0.store(0, Ordering::Release);
    }

    /// Time left (zero when past).
    pub fn remaining(&self) -> Duration {
        let at = Duration::from_nanos(self.0.load(Ordering::Acquire));
        at.saturating_sub(boottime())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deadline_opens_until_its_time_and_closes_on_demand() {
        let d = Deadline::default();
        assert!(!d.open(), "a new deadline lets nothing through");
        d.extend_to(boottime() + Duration::from_secs(60));
        assert!(d.open());
        d.extend_to(boottime().saturating_sub(Duration::from_nanos(1)));
        assert!(!d.open(), "a deadline in the past is closed");
        d.extend_to(boottime() + Duration::from_secs(60));
        d.close();
        assert!(!d.open());
        assert_eq!(d.remaining(), Duration::ZERO);
    }
}
