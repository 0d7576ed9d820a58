//! Credential lifecycle through a real master (store, API, link): a
//! deleted location's edge is cut off and cannot come back, a rotation
//! cuts the live session, the old secret works during its grace (with a
//! warning in status) and not after a rotation without grace, changes made
//! by another process reach the running master, and a credential without
//! its location authenticates nothing.

use std::time::Duration;

use outpost::config::SecretString;
use outpost::link::EdgeLinkEvent;
use outpost::secret::EdgeSecret;
use serde_json::json;
use uuid::Uuid;

use crate::http::{Reply, request};
use crate::roles;
use crate::support::*;

const ADMIN: &str = "credentials-test-admin-key-0123456789abcdef";

async fn call(m: &outpost::master::Master, method: &str, path: &str) -> Reply {
    let auth = format!("Bearer {ADMIN}");
    request(
        m.api_addr,
        method,
        path,
        &[("Authorization", auth.as_str())],
        None,
    )
    .await
}

/// A master with one edge location (no systems); its id and secret.
async fn master_with_location(site: &roles::Site) -> (outpost::master::Master, Uuid, String) {
    let id = outpost::model::new_id();
    let file = outpost::admin::SiteFile {
        edges: vec![serde_json::from_value(json!({"id": id, "name": "Quito"})).unwrap()],
        ..Default::default()
    };
    let store = site.master_store().await;
    let report = outpost::admin::import(&store, &file, &Default::default())
        .await
        .unwrap();
    store.close().await;
    let mut config = site.master_config();
    config.admin_key = Some(SecretString::new(ADMIN));
    let master = outpost::master::start(config).await.unwrap();
    (master, id, report.secrets[0].2.expose().to_owned())
}

/// A link-level edge of location `id` holding `secret`.
fn edge_with(site: &roles::Site, m: &outpost::master::Master, id: Uuid, secret: &str) -> Edge {
    let mut cfg = edge_config_with_ca(
        &site.path().join("certs/ca.pem"),
        &EdgeIdentity::new(),
        vec![m.link_addr.to_string()],
    );
    cfg.edge_id = id;
    cfg.key = EdgeSecret::from_string(secret.to_owned())
        .unwrap()
        .link_key(id);
    start_edge(cfg, TestHandler::default())
}

/// Waits for the link to go down, then for `n` refused reconnects with no
/// connection in between.
async fn cut_off_and_denied(edge: &mut Edge, n: usize) {
    loop {
        if let EdgeLinkEvent::ConnectionLost { .. } = edge.next_event().await {
            break;
        }
    }
    let mut denied = 0;
    while denied < n {
        match edge.next_event().await {
            EdgeLinkEvent::Connected { .. } => panic!("the edge connected again"),
            EdgeLinkEvent::Refused { .. } => denied += 1,
            EdgeLinkEvent::ConnectFailed { error, .. } => panic!("not a refusal: {error}"),
            _ => {}
        }
    }
}

/// Waits for the link to go down and come back.
async fn cut_and_back(edge: &mut Edge) {
    loop {
        if let EdgeLinkEvent::ConnectionLost { .. } = edge.next_event().await {
            break;
        }
    }
    edge.connected().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_locations_edge_is_cut_off_and_cannot_reconnect() {
    let site = roles::Site::new();
    let (master, id, secret) = master_with_location(&site).await;
    let mut edge = edge_with(&site, &master, id, &secret);
    edge.connected().await;
    let r = call(&master, "GET", &format!("/api/v1/edges/{id}")).await;
    let rev = r.json()["rev"].to_string();
    let auth = format!("Bearer {ADMIN}");
    let r = request(
        master.api_addr,
        "DELETE",
        &format!("/api/v1/edges/{id}"),
        &[("Authorization", auth.as_str()), ("If-Match", rev.as_str())],
        None,
    )
    .await;
    assert_eq!(r.status, 204, "{}", r.body);
    // The credential went in the same transaction as the document.
    assert_eq!(master.store.link_key(id).await.unwrap(), None);
    cut_off_and_denied(&mut edge, 2).await;
    assert!(master.registry.peer(id).is_none());
    edge.stop().await;
    master.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotation_cuts_the_session_and_the_old_secret_works_only_during_its_grace() {
    let site = roles::Site::new();
    let (master, id, secret) = master_with_location(&site).await;
    let mut edge = edge_with(&site, &master, id, &secret);
    edge.connected().await;
    let status = format!("/api/v1/edges/{id}/status");
    assert_eq!(
        call(&master, "GET", &status).await.json()["warning"],
        json!(null)
    );

    // Rotated with the default grace: the session is cut, and the edge,
    // still holding the old secret, keeps its link after reconnecting,
    // with a warning in status.
    let r = call(&master, "POST", &format!("/api/v1/edges/{id}/secret")).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let new_secret = r.json()["secret"].as_str().unwrap().to_owned();
    cut_and_back(&mut edge).await;
    roles::eventually(10, "the warning in status", async || {
        let s = call(&master, "GET", &status).await.json();
        s["connected"] == json!(true)
            && s["warning"]
                .as_str()
                .is_some_and(|w| w.contains("rotated secret"))
    })
    .await;
    let s = call(&master, "GET", &status).await.json();
    let actions: Vec<String> = s["credentials"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["action"].as_str().unwrap().to_owned())
        .collect();
    assert!(
        actions[0].starts_with("rotated (the old secret works"),
        "{actions:?}"
    );
    assert_eq!(actions.last().unwrap(), "created");

    // The new secret works too, without a warning.
    edge.stop().await;
    let mut edge = edge_with(&site, &master, id, &new_secret);
    edge.connected().await;
    roles::eventually(10, "the new session in status", async || {
        call(&master, "GET", &status).await.json()["warning"] == json!(null)
    })
    .await;
    edge.stop().await;

    // Rotated without grace (a compromised secret): neither older secret
    // authenticates any more.
    let mut edge = edge_with(&site, &master, id, &new_secret);
    edge.connected().await;
    let r = call(
        &master,
        "POST",
        &format!("/api/v1/edges/{id}/secret?no_grace=true"),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    cut_off_and_denied(&mut edge, 2).await;
    edge.stop().await;
    let mut old = edge_with(&site, &master, id, &secret);
    loop {
        match old.next_event().await {
            EdgeLinkEvent::Connected { .. } => panic!("the first secret still works"),
            EdgeLinkEvent::Refused { .. } => break,
            _ => {}
        }
    }
    old.stop().await;
    master.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotation_by_another_process_reaches_the_running_master() {
    let site = roles::Site::new();
    let (master, id, secret) = master_with_location(&site).await;
    let mut edge = edge_with(&site, &master, id, &secret);
    edge.connected().await;
    // `outpost admin rotate-secret --no-grace` does this on its own pool.
    let other = roles::open_store(&site.master_config()).await;
    outpost::admin::rotate_secret(&other, id, Duration::ZERO)
        .await
        .unwrap();
    other.close().await;
    cut_off_and_denied(&mut edge, 1).await;
    edge.stop().await;
    master.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_credential_without_its_location_authenticates_nothing() {
    let site = roles::Site::new();
    let (master, _, _) = master_with_location(&site).await;
    // Left behind by an older version: a key whose location does not exist.
    let orphan = outpost::model::new_id();
    let secret = EdgeSecret::generate();
    master
        .store
        .apply(&[outpost::store::Write::SetCredential {
            id: orphan,
            expect: outpost::store::Expect::Absent,
            link_key: secret.link_key(orphan).as_bytes().to_vec(),
            grace_until_ms: None,
        }])
        .await
        .unwrap();
    let mut edge = edge_with(&site, &master, orphan, secret.expose());
    loop {
        match edge.next_event().await {
            EdgeLinkEvent::Connected { .. } => panic!("an orphan credential authenticated"),
            EdgeLinkEvent::Refused { reason, .. } => {
                assert_eq!(reason, Some(outpost::proto::DenyReason::UnknownEdge));
                break;
            }
            _ => {}
        }
    }
    edge.stop().await;
    master.stop().await;
}

/// A link opened with a rotated secret during its grace is closed when the
/// grace ends, and the old secret is then denied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_opened_during_the_grace_is_closed_when_it_ends() {
    let site = roles::Site::new();
    let (master, id, secret) = master_with_location(&site).await;
    let mut edge = edge_with(&site, &master, id, &secret);
    edge.connected().await;
    outpost::admin::rotate_secret(&master.store, id, Duration::from_millis(3_000))
        .await
        .unwrap();
    cut_and_back(&mut edge).await;
    roles::eventually(10, "the grace warning in the registry", async || {
        master
            .registry
            .info(id)
            .is_some_and(|i| i.warning.is_some())
    })
    .await;
    cut_off_and_denied(&mut edge, 1).await;
    edge.stop().await;
    master.stop().await;
}
