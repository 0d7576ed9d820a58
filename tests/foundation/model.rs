//! Model validation as data tables: a document (JSON) and the fields that
//! must be reported.

use chrono::{TimeZone, Utc};
use outpost::model::{
    Catalog, ControlSystem, Doc, EdgeLocation, Module, RestoreWindow, ValidationContext,
};
use serde_json::json;

const EDGE: &str = "0191e9a0-0000-7000-8000-0000000000e1";

/// Parses `doc` as `D`, validates it, and compares the reported fields.
fn check<D: Doc>(doc: serde_json::Value, expected_fields: &[&str]) {
    let parsed: D = serde_json::from_value(doc.clone()).unwrap_or_else(|e| panic!("{doc}: {e}"));
    let fields: Vec<String> = match parsed.validate(&crate::support::example_drivers()) {
        Ok(()) => vec![],
        Err(invalid) => {
            for e in &invalid.errors {
                assert!(!e.message.is_empty());
            }
            invalid.errors.into_iter().map(|e| e.field).collect()
        }
    };
    assert_eq!(fields, expected_fields, "{doc}");
}

#[test]
fn edge_locations() {
    let base = || json!({"id": EDGE, "name": "Site"});
    let with = |patch: serde_json::Value| {
        let mut v = base();
        v.as_object_mut()
            .unwrap()
            .extend(patch.as_object().unwrap().clone());
        v
    };
    check::<EdgeLocation>(base(), &[]);
    check::<EdgeLocation>(with(json!({"name": " "})), &["name"]);
    check::<EdgeLocation>(with(json!({"name": "a\nb"})), &["name"]);
    check::<EdgeLocation>(with(json!({"failover_timeout_ms": 0})), &[]);
    check::<EdgeLocation>(
        with(json!({"failover_timeout_ms": 604_800_001u64})),
        &["failover_timeout_ms"],
    );
    check::<EdgeLocation>(
        with(json!({"window_start": "0 2 * * 1-5", "window_length_ms": 3_600_000})),
        &[],
    );
    check::<EdgeLocation>(
        with(json!({"window_start": "30 0 2 * * 1-5", "window_length_ms": 1000})),
        &[],
    );
    check::<EdgeLocation>(
        with(json!({"window_start": "0 2 * *", "window_length_ms": 1})),
        &["window_start"],
    );
    check::<EdgeLocation>(
        with(json!({"window_start": "0 25 * * *", "window_length_ms": 1})),
        &["window_start"],
    );
    check::<EdgeLocation>(
        with(json!({"window_start": "0 2 * * * 2030", "window_length_ms": 1})),
        &["window_start"],
    );
    check::<EdgeLocation>(
        with(json!({"window_start": "0 2 * * *"})),
        &["window_length_ms"],
    );
    check::<EdgeLocation>(
        with(json!({"window_start": "0 2 * * *", "window_length_ms": 0})),
        &["window_length_ms"],
    );
    check::<EdgeLocation>(with(json!({"window_length_ms": 10})), &["window_length_ms"]);
    check::<EdgeLocation>(with(json!({"timezone": "Europe/Berlin"})), &[]);
    check::<EdgeLocation>(with(json!({"timezone": "Mars/Olympus"})), &["timezone"]);
    check::<EdgeLocation>(with(json!({"admins": ["alice", ""]})), &["admins[1]"]);
    check::<EdgeLocation>(with(json!({"commit": "has space"})), &["commit"]);
    check::<EdgeLocation>(
        with(json!({"name": "", "timezone": "x"})),
        &["name", "timezone"],
    );
    assert!(serde_json::from_value::<EdgeLocation>(with(json!({"failovr": true}))).is_err());
}

#[test]
fn modules() {
    let base = json!({"id": EDGE, "name": "Projector", "driver": "pjlink.lua", "uri": "tcp://10.0.0.5:4352"});
    let with = |patch: serde_json::Value| {
        let mut v = base.clone();
        for (k, val) in patch.as_object().unwrap() {
            if val.is_null() {
                v.as_object_mut().unwrap().remove(k);
            } else {
                v[k] = val.clone();
            }
        }
        v
    };
    check::<Module>(base.clone(), &[]);
    check::<Module>(with(json!({"uri": null, "driver": "room.lua"})), &[]);
    check::<Module>(with(json!({"uri": "tcp://[::1]:4352"})), &[]);
    check::<Module>(with(json!({"uri": "udp://10.0.0.5:4352"})), &["uri"]);
    check::<Module>(with(json!({"uri": "tcp://10.0.0.5"})), &["uri"]);
    check::<Module>(with(json!({"uri": "tcp://10.0.0.5:0"})), &["uri"]);
    check::<Module>(with(json!({"uri": "tcp://:80"})), &["uri"]);
    check::<Module>(with(json!({"uri": "10.0.0.5:4352"})), &["uri"]);
    check::<Module>(with(json!({"driver": "missing.lua"})), &["driver"]);
    check::<Module>(with(json!({"driver": "../etc/passwd.lua"})), &["driver"]);
    check::<Module>(with(json!({"driver": "pjlink.py"})), &["driver"]);
    check::<Module>(with(json!({"driver": "", "name": ""})), &["name", "driver"]);
    let m: Module = serde_json::from_value(base).unwrap();
    assert!(m.enabled, "modules are enabled unless said otherwise");
    // Without a modules directory to check against, any .lua name passes.
    assert!(
        Module {
            driver: "other.lua".into(),
            ..m
        }
        .validate(&ValidationContext::default())
        .is_ok()
    );
}

#[test]
fn systems() {
    let m = "0191e9a0-0000-7000-8000-000000000101";
    check::<ControlSystem>(json!({"id": EDGE, "name": "Room", "module_ids": [m]}), &[]);
    check::<ControlSystem>(
        json!({"id": EDGE, "name": "Room", "module_ids": [m, m]}),
        &["module_ids[1]"],
    );
    check::<ControlSystem>(json!({"id": EDGE, "name": ""}), &["name"]);
}

#[test]
fn catalog_rules_span_documents() {
    let site = crate::support::example_site();
    let mut catalog = Catalog::default();
    for e in site.edges {
        catalog.edges.insert(e.id, e);
    }
    for s in site.systems {
        catalog.systems.insert(s.id, s);
    }
    for m in site.modules {
        catalog.modules.insert(m.id, m);
    }
    catalog
        .validate(&crate::support::example_drivers())
        .unwrap();

    // A module listed by systems of two owners is rejected, naming both.
    let mut two_owners = catalog.clone();
    let lobby_projector = "0191e9a0-0000-7000-8000-000000000101".parse().unwrap();
    let studio = "0191e9a0-0000-7000-8000-0000000000a4".parse().unwrap();
    two_owners
        .systems
        .get_mut(&studio)
        .unwrap()
        .module_ids
        .push(lobby_projector);
    let err = two_owners.check_references().unwrap_err();
    assert_eq!(err.errors.len(), 1, "{err}");
    assert!(
        err.errors[0].message.contains("already listed by system"),
        "{err}"
    );
    assert!(err.errors[0].message.contains("the master"), "{err}");

    // References to missing documents.
    let mut missing = catalog.clone();
    let sys = missing.systems.get_mut(&studio).unwrap();
    sys.edge_id = Some(outpost::model::new_id());
    sys.module_ids.push(outpost::model::new_id());
    let err = missing.check_references().unwrap_err();
    let fields: Vec<&str> = err.errors.iter().map(|e| e.field.as_str()).collect();
    assert_eq!(fields, vec!["edge_id", "module_ids[2]"], "{err}");
}

/// `1-5` means Monday to Friday (the `cron` crate would read Sunday-Thursday).
#[test]
fn restore_windows_use_real_weekdays_and_time_zones() {
    let w = RestoreWindow::parse("0 2 * * 1-5", 3_600_000, "Australia/Sydney").unwrap();
    let syd = chrono_tz::Australia::Sydney;
    let at = |y, mo, d, h, mi| {
        syd.with_ymd_and_hms(y, mo, d, h, mi, 0)
            .unwrap()
            .with_timezone(&Utc)
    };
    for (when, open) in [
        (at(2026, 11, 23, 2, 30), true),  // Monday 02:30
        (at(2026, 11, 27, 2, 0), true),   // Friday 02:00 exactly
        (at(2026, 11, 27, 3, 0), false),  // Friday 03:00: closed (length 1 h)
        (at(2026, 11, 28, 2, 30), false), // Saturday
        (at(2026, 11, 22, 2, 30), false), // Sunday
        (at(2026, 11, 23, 1, 59), false), // Monday before the window
    ] {
        assert_eq!(w.open_at(when).is_some(), open, "{when}");
    }
    assert_eq!(
        w.next_open(at(2026, 11, 21, 12, 0)),
        Some(at(2026, 11, 23, 2, 0))
    );
}
