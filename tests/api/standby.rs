//! A STANDBY master node's API: reads from its own store, writes and live
//! reads handed to the MASTER (proxied, or 307 with `redirect_to_master`),
//! 503 with `Retry-After` when no MASTER is known or it does not answer.
//! The MASTER is a real master; the standby is a real API on a store of its
//! own, whose leadership watch the test moves as the cluster would.

use outpost::api::{Ops, RunningApi};
use outpost::config::{Config, Role, SecretString};
use outpost::control::leadership::LeaderAddress;
use outpost::control::{Leadership, NodeState};
use outpost::runtime::{Runtime, RuntimeConfig};
use serde_json::json;
use tokio::sync::watch;

use crate::http::{Reply, request};
use crate::roles::Site;

fn standby_view(api: Option<String>) -> Leadership {
    Leadership {
        state: NodeState::Standby,
        term: 7,
        leader: Some(LeaderAddress {
            node_id: "m1".into(),
            api,
            link: None,
        }),
    }
}

/// A second node's API on its own SQLite store, standing by as `view` says.
async fn standby(
    site: &Site,
    name: &str,
    key: &str,
    redirect: bool,
    view: watch::Receiver<Leadership>,
) -> (RunningApi, Runtime) {
    let dir = site.path().join(name);
    let config = Config {
        admin_key: Some(SecretString::new(key)),
        data_dir: dir.clone(),
        database_url: Some(format!("sqlite://{}", dir.join("store.db").display())),
        redirect_to_master: redirect,
        ..site.master_config()
    };
    std::fs::create_dir_all(&dir).unwrap();
    let store = crate::roles::open_store(&config).await;
    // A standby writes nothing, not even the admin key: in a cluster the
    // store is shared and the MASTER put it there. This one's store is its
    // own, so the test puts it there.
    outpost::api::bootstrap_admin(&store, Some(key), &dir)
        .await
        .unwrap();
    let runtime = Runtime::new(RuntimeConfig::from_config(&config));
    let ops = Ops {
        leadership: Some(view),
        ..Ops::new(runtime.clone(), None, &config)
    };
    let api = outpost::api::start(&config, &store, Role::Master, ops)
        .await
        .unwrap();
    (api, runtime)
}

async fn call(
    addr: std::net::SocketAddr,
    key: &str,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> Reply {
    let auth = format!("Bearer {key}");
    request(addr, method, path, &[("Authorization", &auth)], body).await
}

#[tokio::test]
async fn a_standby_serves_reads_and_hands_writes_to_the_master() {
    let site = Site::new();
    let key = "s".repeat(40);
    let leader = outpost::master::start(Config {
        admin_key: Some(SecretString::new(&key)),
        ..site.master_config()
    })
    .await
    .unwrap();
    let base = format!("http://{}", leader.api_addr);
    let (tx, rx) = watch::channel(standby_view(Some(base.clone())));
    let (node, runtime) = standby(&site, "standby", &key, false, rx.clone()).await;

    // A write through the standby lands at the MASTER, answered as it answered.
    let edge = json!({"name": "Harbour"}).to_string();
    let created = call(node.addr, &key, "POST", "/api/v1/edges", Some(&edge)).await;
    assert_eq!(created.status, 201, "{}", created.body);
    assert_eq!(created.header("x-outpost-proxied"), Some("master"));
    let id = created.json()["id"].as_str().unwrap().to_owned();
    let at_master = call(
        leader.api_addr,
        &key,
        "GET",
        &format!("/api/v1/edges/{id}"),
        None,
    )
    .await;
    assert_eq!(at_master.status, 200, "{}", at_master.body);
    assert_eq!(at_master.json()["name"], "Harbour");
    // A replace keeps its method, path, body and If-Match.
    let rev = at_master.header("etag").map(str::to_owned);
    let renamed = json!({"name": "Harbour West"}).to_string();
    let mut headers = vec![("Authorization".to_owned(), format!("Bearer {key}"))];
    if let Some(rev) = &rev {
        headers.push(("If-Match".to_owned(), rev.clone()));
    }
    let headers: Vec<(&str, &str)> = headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let path = format!("/api/v1/edges/{id}");
    let replaced = request(node.addr, "PUT", &path, &headers, Some(&renamed)).await;
    assert_eq!(replaced.status, 200, "{}", replaced.body);
    let at_master = call(leader.api_addr, &key, "GET", &path, None).await;
    assert_eq!(at_master.json()["name"], "Harbour West");

    // A document read is the standby's own (its store, here not shared).
    let local = call(node.addr, &key, "GET", &path, None).await;
    assert_eq!(local.status, 404, "{}", local.body);
    assert_eq!(local.header("x-outpost-proxied"), None);
    // A live read (the sites and their links) is the MASTER's.
    let sites = call(node.addr, &key, "GET", "/api/v1/sites", None).await;
    assert_eq!(sites.status, 200, "{}", sites.body);
    assert!(sites.body.contains(&id), "{}", sites.body);
    // The standby judges the key before it hands anything on: a wrong one
    // is refused there, throttled by the caller's address, and never
    // reaches the MASTER (whose throttle would count it against the
    // standby's address, shared by every proxied call).
    for _ in 0..3 {
        let refused = call(
            node.addr,
            &"x".repeat(40),
            "POST",
            "/api/v1/edges",
            Some(&edge),
        )
        .await;
        assert_eq!(refused.status, 401, "{}", refused.body);
        assert_eq!(refused.header("x-outpost-proxied"), None);
    }
    let missing = request(node.addr, "POST", "/api/v1/edges", &[], Some(&edge)).await;
    assert_eq!(missing.status, 401, "{}", missing.body);
    assert_eq!(missing.header("x-outpost-proxied"), None);

    // With redirect_to_master: 307 to the same path and query at the MASTER.
    let (redirecting, runtime2) = standby(&site, "standby-redirect", &key, true, rx).await;
    let moved = call(
        redirecting.addr,
        &key,
        "POST",
        "/api/v1/modules/00000000-0000-0000-0000-000000000001/exec?timeout_ms=5",
        Some("{}"),
    )
    .await;
    assert_eq!(moved.status, 307, "{}", moved.body);
    assert_eq!(
        moved.header("location"),
        Some(
            format!("{base}/api/v1/modules/00000000-0000-0000-0000-000000000001/exec?timeout_ms=5")
                .as_str()
        )
    );

    // No MASTER known: 503 with Retry-After, for writes and live reads alike.
    tx.send_replace(Leadership {
        state: NodeState::Standby,
        term: 7,
        leader: None,
    });
    for (method, path) in [("POST", "/api/v1/edges"), ("GET", "/api/v1/sites")] {
        let r = call(node.addr, &key, method, path, Some(&edge)).await;
        assert_eq!(r.status, 503, "{method} {path}: {}", r.body);
        assert!(r.header("retry-after").is_some(), "{method} {path}");
        assert!(
            r.json()["error"].as_str().unwrap().contains("STANDBY"),
            "{}",
            r.body
        );
    }
    // A MASTER that does not answer: 503 too, naming it.
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let gone = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    tx.send_replace(standby_view(Some(gone.clone())));
    let r = call(node.addr, &key, "POST", "/api/v1/edges", Some(&edge)).await;
    assert_eq!(r.status, 503, "{}", r.body);
    assert!(
        r.json()["error"].as_str().unwrap().contains(&gone),
        "{}",
        r.body
    );

    // The description says so on the routes a standby hands on.
    let spec = call(node.addr, &key, "GET", "/api/v1/openapi.json", None)
        .await
        .json();
    let responses = |path: &str, method: &str| spec["paths"][path][method]["responses"].clone();
    for (path, method) in [
        ("/api/v1/edges", "post"),
        ("/api/v1/sites", "get"),
        ("/api/v1/modules/{id}/exec", "post"),
    ] {
        let r = responses(path, method);
        assert!(
            r.get("307").is_some() && r.get("503").is_some(),
            "{method} {path}: {r}"
        );
    }
    assert!(responses("/api/v1/edges", "get").get("307").is_none());

    // Promoted: this node acts, and answers writes itself.
    tx.send_replace(Leadership::alone());
    let mine = call(node.addr, &key, "POST", "/api/v1/edges", Some(&edge)).await;
    assert_eq!(mine.status, 201, "{}", mine.body);
    assert_eq!(mine.header("x-outpost-proxied"), None);

    node.stop(std::time::Duration::from_secs(2)).await;
    redirecting.stop(std::time::Duration::from_secs(2)).await;
    runtime.shutdown().await;
    runtime2.shutdown().await;
    leader.stop().await;
}
