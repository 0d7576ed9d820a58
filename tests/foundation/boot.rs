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
