//! Wall-clock time for timestamps that are only ever displayed or stored.
//! Timers and deadlines that decide behaviour read `control::Clock` instead,
//! so tests can move them by hand.

/// Milliseconds since the Unix epoch; 0 for a clock set before 1970.
pub fn unix_ms() -> i64 {
    unix_ms_of(std::time::SystemTime::now())
}

/// Milliseconds since the Unix epoch of `at`; 0 before 1970.
pub fn unix_ms_of(at: std::time::SystemTime) -> i64 {
    at.duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}
