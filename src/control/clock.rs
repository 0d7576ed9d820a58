//! The wall clock that control decisions read: restore windows, failover
//! deadlines and the hold-down all use it, so tests can move time by hand
//! while the link and the devices run on real sockets in real time.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chrono::{DateTime, Utc};
use tokio::sync::watch;

/// Milliseconds since the Unix epoch, from the system or set by hand.
#[derive(Clone, Default)]
pub struct Clock(Option<Arc<watch::Sender<i64>>>);

impl std::fmt::Debug for Clock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            None => f.write_str("Clock::system"),
            Some(t) => write!(f, "Clock::manual({})", *t.borrow()),
        }
    }
}

impl Clock {
    /// The system's clock (the default).
    pub fn system() -> Clock {
        Clock(None)
    }

    /// A clock that stands at `now_ms` until [`Clock::set`] or
    /// [`Clock::advance`] moves it (tests).
    pub fn manual(now_ms: i64) -> Clock {
        Clock(Some(Arc::new(watch::channel(now_ms).0)))
    }

    pub fn now_ms(&self) -> i64 {
        match &self.0 {
            None => SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as i64),
            Some(t) => *t.borrow(),
        }
    }

    pub fn now(&self) -> DateTime<Utc> {
        DateTime::from_timestamp_millis(self.now_ms()).unwrap_or_default()
    }

    /// Moves a manual clock to `ms` (never backwards); no effect on the
    /// system clock.
    pub fn set(&self, ms: i64) {
        if let Some(t) = &self.0 {
            t.send_if_modified(|now| {
                let moved = ms > *now;
                *now = (*now).max(ms);
                moved
            });
        }
    }

    /// Moves a manual clock forward by `by`.
    pub fn advance(&self, by: Duration) {
        self.set(self.now_ms() + by.as_millis() as i64);
    }

    /// Completes once the clock reads `ms` or later.
    pub async fn sleep_until(&self, ms: i64) {
        match &self.0 {
            None => loop {
                let left = ms - self.now_ms();
                if left <= 0 {
                    return;
                }
                // Re-read the clock at least every minute: a suspended
                // machine or a stepped clock does not delay a window long.
                let wait = Duration::from_millis(left.min(60_000) as u64);
                tokio::time::sleep(wait).await;
            },
            Some(t) => {
                let mut rx = t.subscribe();
                let _ = rx.wait_for(|now| *now >= ms).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_manual_clock_wakes_sleepers_when_moved() {
        let clock = Clock::manual(1_000);
        let sleeper = tokio::spawn({
            let clock = clock.clone();
            async move { clock.sleep_until(1_500).await }
        });
        clock.advance(Duration::from_millis(400));
        tokio::task::yield_now().await;
        assert!(!sleeper.is_finished());
        clock.set(1_200); // backwards: ignored
        assert_eq!(clock.now_ms(), 1_400);
        clock.advance(Duration::from_millis(100));
        sleeper.await.unwrap();
        assert_eq!(clock.now_ms(), 1_500);
    }
}
