//! Control of an edge location's devices: who holds them (the edge or the
//! master), the rules that decide it on connection, and the reasons and
//! epochs recorded at every change.
//!
//! [`negotiate`] is a pure function of a few facts; everything that acts on
//! its decision (stopping the loser's modules before the winner connects)
//! lives with the roles. Epochs and the audit log are persisted by the store
//! ([`crate::store::Store::change_controller`]).

mod clock;
pub mod leadership;
mod negotiate;

pub use clock::Clock;
pub use leadership::{Leadership, LeadershipWatch, NodeState};
pub use negotiate::{Decision, Facts, Rule, negotiate};

/// Whether a location is held down: it changed controller at least
/// `limit` times in the minute before `now_ms` (`changes_ms`: the times of
/// its recent changes). A `limit` of 0 turns the hold-down off.
pub fn held_down(changes_ms: &[i64], now_ms: i64, limit: u32) -> bool {
    limit > 0
        && changes_ms
            .iter()
            .filter(|&&at| at > now_ms - HOLD_DOWN_PERIOD_MS)
            .count()
            >= limit as usize
}

/// The period the hold-down counts changes over.
pub const HOLD_DOWN_PERIOD_MS: i64 = 60_000;

use serde::{Deserialize, Serialize};

/// Which side holds a location's devices.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Side {
    Edge,
    Master,
}

impl Side {
    pub fn as_str(self) -> &'static str {
        match self {
            Side::Edge => "edge",
            Side::Master => "master",
        }
    }

    pub fn parse(s: &str) -> Option<Side> {
        match s {
            "edge" => Some(Side::Edge),
            "master" => Some(Side::Master),
            _ => None,
        }
    }
}

impl std::fmt::Display for Side {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why control changed hands (or was confirmed), as recorded in the audit log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// A negotiation on connection, decided by this rule.
    Negotiation(Rule),
    /// The master took over after the edge was lost for `failover_timeout_ms`.
    FailoverTimeout,
    /// At master boot the edge did not come within the boot wait.
    Boot,
    /// A restore window opened and the master handed control back.
    RestoreWindow,
    /// An operator restored the site.
    ManualRestore,
    /// The edge did not confirm a hand-back within the location's failover
    /// timeout on a healthy link: the master took the site back (it starts
    /// only once the edge confirms its release, or its link is dead).
    HandBackUnconfirmed,
    /// An operator handed the site to the master on purpose (planned work
    /// on the edge): the edge released it first.
    ManualHandover,
}

impl Reason {
    /// The stable text stored in the audit log.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Negotiation(rule) => rule.as_str(),
            Reason::FailoverTimeout => "failover_timeout",
            Reason::Boot => "boot",
            Reason::RestoreWindow => "restore_window",
            Reason::ManualRestore => "manual_restore",
            Reason::HandBackUnconfirmed => "hand_back_unconfirmed",
            Reason::ManualHandover => "manual_handover",
        }
    }

    /// The reason an edge of the previous protocol version understands in
    /// a `control_assume` or `control_release` (it refuses a reason it does
    /// not know as a bad request): the newer reasons as the older ones
    /// closest to them. The master's own log keeps the true reason.
    pub fn for_older_edge(self) -> Reason {
        match self {
            Reason::HandBackUnconfirmed => Reason::FailoverTimeout,
            Reason::ManualHandover => Reason::ManualRestore,
            other => other,
        }
    }

    pub fn parse(s: &str) -> Option<Reason> {
        Some(match s {
            "failover_timeout" => Reason::FailoverTimeout,
            "boot" => Reason::Boot,
            "restore_window" => Reason::RestoreWindow,
            "manual_restore" => Reason::ManualRestore,
            "hand_back_unconfirmed" => Reason::HandBackUnconfirmed,
            "manual_handover" => Reason::ManualHandover,
            other => Reason::Negotiation(Rule::parse(other)?),
        })
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
