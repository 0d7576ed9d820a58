//! The negotiation rules of the design ("On connection"), as a pure
//! function: facts in, winner and deciding rule out.
//!
//! 1. The edge has its modules loaded and devices connected: the edge wins
//!    (it assumes a master or network outage). "Devices connected" means it
//!    reaches at least one of its devices and no fewer than the master does:
//!    a site with one broken projector still counts, an edge cut off from
//!    its own LAN does not.
//! 2. Inside the edge's restore window: the edge wins.
//! 3. The master is booting and has not loaded the edge's modules: the edge
//!    wins.
//! 4. Otherwise the master wins if it already holds control; if it does not,
//!    the edge wins. The master never *gains* control by negotiation.
//!
//! The hold-down (ours, against a flapping link) qualifies rule 1: while a
//! location is held down (it changed controller `max_control_changes_per_minute`
//! times in the last minute) a master that holds control keeps it even from
//! an edge whose devices are connected; the edge stands by. An open restore
//! window lifts it; rules 2–4 are unaffected.

use serde::{Deserialize, Serialize};

use super::Side;

/// What negotiation looks at, gathered from both sides at connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Facts {
    /// The edge is running this location's modules.
    pub edge_modules_loaded: bool,
    /// Devices of this location the edge reaches.
    pub edge_devices_connected: u32,
    /// Devices of this location the master reaches.
    pub master_devices_connected: u32,
    /// Now is inside the location's restore window.
    pub in_restore_window: bool,
    /// The master is still booting.
    pub master_booting: bool,
    /// The master has loaded this location's modules.
    pub master_modules_loaded: bool,
    /// The master holds control of this location (took over, and no window
    /// or restore has handed it back since).
    pub master_holds_control: bool,
    /// The location changed controller too often in the last minute.
    pub held_down: bool,
}

/// The rule that decided a negotiation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Rule {
    /// Rule 1.
    EdgeDevicesConnected,
    /// Rule 2.
    RestoreWindow,
    /// Rule 3.
    MasterBooting,
    /// Rule 4, master side: it already holds control.
    MasterHoldsControl,
    /// Rule 4, edge side: the master does not hold control.
    MasterNotInControl,
    /// Rule 1 held back: the master keeps control of a flapping location.
    HoldDown,
}

impl Rule {
    pub fn as_str(self) -> &'static str {
        match self {
            Rule::EdgeDevicesConnected => "edge_devices_connected",
            Rule::RestoreWindow => "in_restore_window",
            Rule::MasterBooting => "master_booting",
            Rule::MasterHoldsControl => "master_holds_control",
            Rule::MasterNotInControl => "master_not_in_control",
            Rule::HoldDown => "hold_down",
        }
    }

    pub fn parse(s: &str) -> Option<Rule> {
        [
            Rule::EdgeDevicesConnected,
            Rule::RestoreWindow,
            Rule::MasterBooting,
            Rule::MasterHoldsControl,
            Rule::MasterNotInControl,
            Rule::HoldDown,
        ]
        .into_iter()
        .find(|r| r.as_str() == s)
    }
}

/// The outcome of a negotiation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub winner: Side,
    pub rule: Rule,
}

/// Decides who controls a location's devices after the edge connects.
pub fn negotiate(f: &Facts) -> Decision {
    let decide = |winner, rule| Decision { winner, rule };
    let edge_has_devices = f.edge_modules_loaded
        && f.edge_devices_connected > 0
        && f.edge_devices_connected >= f.master_devices_connected;
    if edge_has_devices && f.master_holds_control && f.held_down && !f.in_restore_window {
        decide(Side::Master, Rule::HoldDown)
    } else if edge_has_devices {
        decide(Side::Edge, Rule::EdgeDevicesConnected)
    } else if f.in_restore_window {
        decide(Side::Edge, Rule::RestoreWindow)
    } else if f.master_booting && !f.master_modules_loaded {
        decide(Side::Edge, Rule::MasterBooting)
    } else if f.master_holds_control {
        decide(Side::Master, Rule::MasterHoldsControl)
    } else {
        decide(Side::Edge, Rule::MasterNotInControl)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every combination of the boolean facts, with the device counts that
    /// matter for rule 1 (none, fewer than the master, as many, more).
    #[test]
    fn exhaustive_table() {
        let counts = [(0, 0), (0, 3), (1, 3), (3, 3), (3, 1), (2, 0)];
        let mut cases = 0;
        for bits in 0u32..64 {
            let bit = |i: u32| bits & (1 << i) != 0;
            for (edge_dev, master_dev) in counts {
                let f = Facts {
                    edge_modules_loaded: bit(0),
                    in_restore_window: bit(1),
                    master_booting: bit(2),
                    master_modules_loaded: bit(3),
                    master_holds_control: bit(4),
                    held_down: bit(5),
                    edge_devices_connected: edge_dev,
                    master_devices_connected: master_dev,
                };
                let d = negotiate(&f);
                // The rules, written independently as the design states them.
                let rule1 = f.edge_modules_loaded && edge_dev >= 1 && edge_dev >= master_dev;
                let held = f.master_holds_control && f.held_down && !f.in_restore_window;
                let expected = if rule1 && held {
                    (Side::Master, Rule::HoldDown)
                } else if rule1 {
                    (Side::Edge, Rule::EdgeDevicesConnected)
                } else if f.in_restore_window {
                    (Side::Edge, Rule::RestoreWindow)
                } else if f.master_booting && !f.master_modules_loaded {
                    (Side::Edge, Rule::MasterBooting)
                } else if f.master_holds_control {
                    (Side::Master, Rule::MasterHoldsControl)
                } else {
                    (Side::Edge, Rule::MasterNotInControl)
                };
                assert_eq!((d.winner, d.rule), expected, "{f:?}");
                // The master never gains control by negotiation.
                if d.winner == Side::Master {
                    assert!(f.master_holds_control, "{f:?}");
                }
                cases += 1;
            }
        }
        assert_eq!(cases, 64 * counts.len());
    }

    #[test]
    fn named_cases() {
        let check = |f: Facts, winner: Side, rule: Rule| {
            assert_eq!(negotiate(&f), Decision { winner, rule }, "{f:?}");
        };
        let normal_start = Facts::default();
        check(normal_start, Side::Edge, Rule::MasterNotInControl);
        // Took over during an outage; the edge returns with nothing running.
        let taken_over = Facts {
            master_holds_control: true,
            master_modules_loaded: true,
            master_devices_connected: 4,
            ..Facts::default()
        };
        check(taken_over, Side::Master, Rule::MasterHoldsControl);
        check(
            Facts {
                in_restore_window: true,
                ..taken_over
            },
            Side::Edge,
            Rule::RestoreWindow,
        );
        // A partition: both drove the devices; the edge still reaches them.
        check(
            Facts {
                edge_modules_loaded: true,
                edge_devices_connected: 4,
                ..taken_over
            },
            Side::Edge,
            Rule::EdgeDevicesConnected,
        );
        // One broken projector at the site still counts as connected.
        check(
            Facts {
                edge_modules_loaded: true,
                edge_devices_connected: 3,
                master_devices_connected: 3,
                ..taken_over
            },
            Side::Edge,
            Rule::EdgeDevicesConnected,
        );
        // An edge cut off from its own LAN does not.
        check(
            Facts {
                edge_modules_loaded: true,
                edge_devices_connected: 0,
                ..taken_over
            },
            Side::Master,
            Rule::MasterHoldsControl,
        );
        // Reaching fewer devices than the master does not either.
        check(
            Facts {
                edge_modules_loaded: true,
                edge_devices_connected: 1,
                ..taken_over
            },
            Side::Master,
            Rule::MasterHoldsControl,
        );
        check(
            Facts {
                master_booting: true,
                master_holds_control: true,
                ..Facts::default()
            },
            Side::Edge,
            Rule::MasterBooting,
        );
        // A flapping link: the master keeps what it took over...
        let flapping = Facts {
            edge_modules_loaded: true,
            edge_devices_connected: 4,
            held_down: true,
            ..taken_over
        };
        check(flapping, Side::Master, Rule::HoldDown);
        // ...but an open window still hands control back,
        check(
            Facts {
                in_restore_window: true,
                ..flapping
            },
            Side::Edge,
            Rule::EdgeDevicesConnected,
        );
        check(
            Facts {
                edge_modules_loaded: false,
                in_restore_window: true,
                ..flapping
            },
            Side::Edge,
            Rule::RestoreWindow,
        );
        // and the hold-down never gives the master control it does not hold.
        check(
            Facts {
                master_holds_control: false,
                ..flapping
            },
            Side::Edge,
            Rule::EdgeDevicesConnected,
        );
    }

    #[test]
    fn rule_and_reason_names_round_trip() {
        use super::super::Reason;
        for r in [
            Rule::EdgeDevicesConnected,
            Rule::RestoreWindow,
            Rule::MasterBooting,
            Rule::MasterHoldsControl,
            Rule::MasterNotInControl,
            Rule::HoldDown,
        ] {
            assert_eq!(Rule::parse(r.as_str()), Some(r));
            let reason = Reason::Negotiation(r);
            assert_eq!(Reason::parse(reason.as_str()), Some(reason));
        }
        for reason in [
            Reason::FailoverTimeout,
            Reason::Boot,
            Reason::RestoreWindow,
            Reason::ManualRestore,
            Reason::HandBackUnconfirmed,
            Reason::ManualHandover,
        ] {
            assert_eq!(Reason::parse(reason.as_str()), Some(reason));
            // What an edge of the previous version knows.
            assert!(matches!(
                reason.for_older_edge(),
                Reason::FailoverTimeout
                    | Reason::Boot
                    | Reason::RestoreWindow
                    | Reason::ManualRestore
            ));
        }
    }
}
