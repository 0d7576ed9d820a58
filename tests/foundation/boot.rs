//! Boot plans on the example site, for the master and for each edge.

use outpost::boot::{EdgeBoot, plan_edge, plan_master};
use uuid::Uuid;

use crate::support::{TestStore, example_drivers, example_site};

fn id(s: &str) -> Uuid {
    s.parse().unwrap()
}

async fn check_plans(s: &TestStore) {
    let store = &s.store;
    let report = outpost::admin::import(store, &example_site(), &example_drivers())
        .await
        .unwrap();
    assert_eq!(report.created, 14);
    assert_eq!(report.secrets.len(), 2);

    let plan = plan_master(store).await.unwrap();
    assert_eq!(plan.edges.len(), 2);
    assert_eq!(plan.edge_systems.len(), 3);
    assert_eq!(plan.edge_modules.len(), 6);
    assert_eq!(plan.master_systems.len(), 1);
    let mut master_modules: Vec<Uuid> = plan.master_modules.iter().map(|m| m.id).collect();
    master_modules.sort();
    assert_eq!(
        master_modules,
        vec![
            id("0191e9a0-0000-7000-8000-000000000101"),
            id("0191e9a0-0000-7000-8000-000000000102")
        ]
    );
    let sydney = id("0191e9a0-0000-7000-8000-0000000000e1");
    assert_eq!(
        plan.edge_modules[&id("0191e9a0-0000-7000-8000-000000000203")],
        sydney
    );
    assert_eq!(plan.timings.steps.len(), 5, "every boot step is timed");

    let EdgeBoot::Ready(edge) = plan_edge(store, sydney).await.unwrap() else {
        panic!("sydney is in the store");
    };
    assert_eq!(edge.location.name, "Sydney office");
    assert_eq!(edge.systems.len(), 2);
    let modules: Vec<Uuid> = edge.modules.iter().map(|m| m.id).collect();
    assert_eq!(
        modules,
        vec![
            id("0191e9a0-0000-7000-8000-000000000201"),
            id("0191e9a0-0000-7000-8000-000000000202"),
            id("0191e9a0-0000-7000-8000-000000000203"),
            id("0191e9a0-0000-7000-8000-000000000204"),
        ],
        "modules in the order the systems list them"
    );
    assert!(edge.missing_modules.is_empty());

    // An edge whose location has not been replicated yet waits.
    assert!(matches!(
        plan_edge(store, outpost::model::new_id()).await.unwrap(),
        EdgeBoot::Waiting
    ));
    // So does one given the id of a document of another kind.
    assert!(matches!(
        plan_edge(store, id("0191e9a0-0000-7000-8000-000000000101"))
            .await
            .unwrap(),
        EdgeBoot::Waiting
    ));
}

#[tokio::test]
async fn example_site_plans_on_sqlite() {
    let s = TestStore::sqlite().await;
    check_plans(&s).await;
    s.cleanup().await;
}

#[tokio::test]
async fn example_site_plans_on_postgres() {
    let Some(s) = TestStore::postgres().await else {
        return;
    };
    check_plans(&s).await;
    s.cleanup().await;
}

#[tokio::test]
async fn import_is_all_or_nothing_and_export_is_stable() {
    let s = TestStore::sqlite().await;
    let store = &s.store;
    let mut bad = example_site();
    // One bad field among many valid documents: nothing may be written.
    bad.modules[4].uri = Some("udp://x:1".into());
    let err = outpost::admin::import(store, &bad, &example_drivers())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("uri"), "{err}");
    assert_eq!(store.last_seq().await.unwrap(), 0);

    let mut dup = example_site();
    dup.modules.push(dup.modules[0].clone());
    let err = outpost::admin::import(store, &dup, &example_drivers())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("twice"), "{err}");

    outpost::admin::import(store, &example_site(), &example_drivers())
        .await
        .unwrap();
    let first = outpost::admin::export(store).await.unwrap();
    let second = outpost::admin::export(store).await.unwrap();
    assert_eq!(first, second);
    assert!(!first.contains("secret"), "secrets never appear in exports");
    // Re-importing the export changes nothing: every document is as stored.
    let again = outpost::admin::parse_site(&first).unwrap();
    let report = outpost::admin::import(store, &again, &example_drivers())
        .await
        .unwrap();
    assert_eq!(
        (report.created, report.replaced, report.unchanged),
        (0, 0, 14)
    );
    assert!(
        report.secrets.is_empty(),
        "existing edges keep their secret"
    );
    assert_eq!(outpost::admin::export(store).await.unwrap(), first);
    s.cleanup().await;
}

/// Files at rest: a fresh data directory is created 0700 and the database
/// with its WAL and SHM 0600; an existing directory and database with
/// looser modes (as an older version left them) are tightened at open.
#[cfg(unix)]
#[tokio::test]
async fn data_directory_and_database_files_are_private() {
    use std::os::unix::fs::PermissionsExt as _;
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    let root = tempfile::tempdir().unwrap();
    for role_file in ["master.db", "edge.db"] {
        // Fresh.
        let dir = root.path().join(format!("fresh-{role_file}")).join("data");
        let db = dir.join(role_file);
        let url = format!("sqlite://{}", db.display());
        let store = outpost::store::Store::open(&outpost::store::StoreOptions::new(&url))
            .await
            .unwrap();
        let m = outpost::model::new_id();
        let doc = outpost::model::Module {
            id: m,
            name: "m".into(),
            driver: "line.lua".into(),
            uri: None,
            settings: Default::default(),
            enabled: true,
        };
        store
            .apply(&[outpost::store::Write::put(
                &doc,
                outpost::store::Expect::Absent,
            )])
            .await
            .unwrap();
        assert_eq!(mode(&dir), 0o700, "{}", dir.display());
        for f in [
            role_file.to_owned(),
            format!("{role_file}-wal"),
            format!("{role_file}-shm"),
        ] {
            assert_eq!(mode(&dir.join(&f)), 0o600, "{f}");
        }
        store.close().await;

        // Existing, loose: tightened.
        let dir = root.path().join(format!("old-{role_file}"));
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let db = dir.join(role_file);
        std::fs::write(&db, b"").unwrap();
        std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o644)).unwrap();
        let url = format!("sqlite://{}", db.display());
        let store = outpost::store::Store::open(&outpost::store::StoreOptions::new(&url))
            .await
            .unwrap();
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&db), 0o600);
        store.close().await;
    }
    // The generated admin key's directory too.
    let data = root.path().join("keys");
    let store = crate::support::TestStore::sqlite().await;
    outpost::api::bootstrap_admin(&store.store, None, &data)
        .await
        .unwrap();
    assert_eq!(mode(&data), 0o700);
    assert_eq!(mode(&data.join("admin-key")), 0o600);
}
