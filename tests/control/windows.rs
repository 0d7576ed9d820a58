//! Restore windows across daylight-saving changes: a window is neither
//! skipped (its local start time does not exist) nor doubled (its local
//! start time happens twice).

use chrono::{DateTime, TimeZone, Utc};
use outpost::model::RestoreWindow;

fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, mo, d, h, mi, 0).unwrap()
}

/// Windows opening between `from` and `to`, found by stepping `next_open`.
fn openings(w: &RestoreWindow, from: DateTime<Utc>, to: DateTime<Utc>) -> Vec<DateTime<Utc>> {
    let mut out = Vec::new();
    let mut t = from;
    while let Some(n) = w.next_open(t) {
        if n > to {
            break;
        }
        out.push(n);
        t = n;
    }
    out
}

#[test]
fn spring_forward_moves_a_missing_start_to_the_first_valid_instant() {
    // Berlin, 2026-03-29: 02:00 CET jumps to 03:00 CEST; 02:30 never happens.
    let w = RestoreWindow::parse("30 2 * * *", 3_600_000, "Europe/Berlin").unwrap();
    let got = openings(&w, utc(2026, 3, 27, 12, 0), utc(2026, 3, 30, 12, 0));
    assert_eq!(
        got,
        vec![
            utc(2026, 3, 28, 1, 30), // 02:30 CET
            utc(2026, 3, 29, 1, 0),  // 03:00 CEST: the day's window still opens
            utc(2026, 3, 30, 0, 30), // 02:30 CEST
        ]
    );
    assert_eq!(
        w.open_at(utc(2026, 3, 29, 1, 20)),
        Some((utc(2026, 3, 29, 1, 0), utc(2026, 3, 29, 2, 0)))
    );
}

#[test]
fn fall_back_opens_a_repeated_start_once() {
    // Berlin, 2026-10-25: 03:00 CEST goes back to 02:00 CET; 02:30 happens twice.
    let w = RestoreWindow::parse("30 2 * * *", 1_800_000, "Europe/Berlin").unwrap();
    let got = openings(&w, utc(2026, 10, 24, 12, 0), utc(2026, 10, 26, 12, 0));
    assert_eq!(
        got,
        vec![utc(2026, 10, 25, 0, 30), utc(2026, 10, 26, 1, 30)]
    );
    for (at, open) in [
        (utc(2026, 10, 25, 0, 40), true),  // first 02:30-03:00, CEST
        (utc(2026, 10, 25, 1, 40), false), // second 02:40, CET: no second window
        (utc(2026, 10, 26, 1, 40), true),
    ] {
        assert_eq!(w.open_at(at).is_some(), open, "{at}");
    }
}
