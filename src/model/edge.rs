//! `EdgeLocation`: a site with its own edge controller, its failover settings
//! and its restore window.

use std::str::FromStr;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::validate::{Checker, Invalid};
use super::{Doc, Kind, ValidationContext};

/// Longest failover timeout accepted: a week. Anything longer is almost
/// certainly a unit mistake (seconds typed as milliseconds the other way).
pub(super) const MAX_FAILOVER_TIMEOUT_MS: u64 = 7 * 24 * 3600 * 1000;
/// Longest restore window accepted: a week.
pub(super) const MAX_WINDOW_LENGTH_MS: u64 = 7 * 24 * 3600 * 1000;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EdgeLocation {
    pub id: Uuid,
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// May the master take over this site's devices when the edge is lost?
    #[serde(default)]
    pub failover: bool,
    /// How long the master waits after losing the edge before it takes over.
    #[serde(default = "default_failover_timeout_ms")]
    pub failover_timeout_ms: u64,
    /// Cron string (5 fields, or 6 with seconds) in `timezone`: when a restore
    /// window opens. None: control only comes back by a manual restore.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window_start: Option<String>,
    /// How long a restore window stays open; required with `window_start`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window_length_ms: Option<u64>,
    /// IANA time zone name for `window_start`.
    #[serde(default = "default_timezone")]
    pub timezone: String,
    /// User ids who may administer this location.
    #[serde(default)]
    pub admins: Vec<String>,
    /// The driver repository commit this location runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
}

pub(super) fn default_failover_timeout_ms() -> u64 {
    30_000
}

fn default_timezone() -> String {
    "UTC".to_owned()
}

/// A parsed restore window: cron schedule, length and time zone.
#[derive(Debug, Clone)]
pub struct RestoreWindow {
    cron: Cron,
    length: chrono::Duration,
    tz: Tz,
}

/// The cron dialect we accept: standard 5-field crontab (real weekday
/// numbers, 0 and 7 are Sunday), optionally with a leading seconds field; no
/// year field.
fn cron_parser() -> CronParser {
    CronParser::builder()
        .seconds(Seconds::Optional)
        .year(Year::Disallowed)
        .build()
}

impl RestoreWindow {
    pub fn parse(start: &str, length_ms: u64, timezone: &str) -> Result<Self, (String, String)> {
        let tz = Tz::from_str(timezone).map_err(|_| {
            (
                "timezone".to_owned(),
                format!("'{timezone}' is not an IANA time zone name (e.g. Europe/Berlin)"),
            )
        })?;
        let cron = cron_parser().parse(start).map_err(|e| {
            (
                "window_start".to_owned(),
                format!("'{start}' is not a valid cron string: {e}"),
            )
        })?;
        let length_ms = i64::try_from(length_ms).unwrap_or(i64::MAX);
        Ok(Self {
            cron,
            length: chrono::Duration::milliseconds(length_ms),
            tz,
        })
    }

    /// The window containing `now`, as (opened, closes), if one is open.
    /// Computed in the location's time zone, so a daylight-saving change
    /// neither skips nor doubles a window.
    pub fn open_at(&self, now: DateTime<Utc>) -> Option<(DateTime<Utc>, DateTime<Utc>)> {
        let local = now.with_timezone(&self.tz);
        let opened = self.cron.find_previous_occurrence(&local, true).ok()?;
        let opened = opened.with_timezone(&Utc);
        let closes = opened + self.length;
        (opened <= now && now < closes).then_some((opened, closes))
    }

    /// The next time a window opens strictly after `now`.
    pub fn next_open(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let local = now.with_timezone(&self.tz);
        self.cron
            .find_next_occurrence(&local, false)
            .ok()
            .map(|t| t.with_timezone(&Utc))
    }
}

impl EdgeLocation {
    /// The restore window, if one is configured and valid.
    pub fn restore_window(&self) -> Option<RestoreWindow> {
        let start = self.window_start.as_deref()?;
        RestoreWindow::parse(start, self.window_length_ms?, &self.timezone).ok()
    }
}

impl Doc for EdgeLocation {
    super::doc_identity!(Kind::Edge);

    fn validate(&self, _ctx: &ValidationContext) -> Result<(), Invalid> {
        let mut c = Checker::new(Self::KIND, self.id);
        c.name("name", &self.name);
        if self.failover_timeout_ms > MAX_FAILOVER_TIMEOUT_MS {
            c.fail(
                "failover_timeout_ms",
                format!("must be at most {MAX_FAILOVER_TIMEOUT_MS} (7 days, in milliseconds)"),
            );
        }
        if Tz::from_str(&self.timezone).is_err() {
            c.fail(
                "timezone",
                format!(
                    "'{}' is not an IANA time zone name (e.g. Europe/Berlin)",
                    self.timezone
                ),
            );
        }
        match (&self.window_start, self.window_length_ms) {
            (Some(start), length) => {
                if let Err(e) = cron_parser().parse(start) {
                    c.fail(
                        "window_start",
                        format!("'{start}' is not a valid cron string: {e}"),
                    );
                }
                match length {
                    None | Some(0) => c.fail(
                        "window_length_ms",
                        "must be greater than 0 when window_start is set",
                    ),
                    Some(l) if l > MAX_WINDOW_LENGTH_MS => c.fail(
                        "window_length_ms",
                        format!("must be at most {MAX_WINDOW_LENGTH_MS} (7 days, in milliseconds)"),
                    ),
                    Some(_) => {}
                }
            }
            (None, Some(_)) => c.fail("window_length_ms", "is set but window_start is not"),
            (None, None) => {}
        }
        for (i, admin) in self.admins.iter().enumerate() {
            if admin.trim().is_empty() {
                c.fail(&format!("admins[{i}]"), "must not be empty");
            }
        }
        if let Some(commit) = &self.commit
            && (commit.is_empty() || commit.len() > 64 || commit.chars().any(char::is_whitespace))
        {
            c.fail("commit", "must be a commit id (1-64 characters, no spaces)");
        }
        c.finish()
    }
}
