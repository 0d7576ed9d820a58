//! Document routes: create, read, replace, patch, delete, pagination, the
//! error statuses, secrets shown once, and keys and roles.

use serde_json::json;

use crate::server::start_api;

#[tokio::test]
async fn keys_and_roles_guard_every_write() {
    let api = start_api().await;
    // No key, a bad key: 401 with no detail.
    for key in [None, Some("not-a-key"), Some(&"x".repeat(64)[..])] {
        let r = api.call(key, "GET", "/api/v1/edges", None).await;
        assert_eq!(r.status, 401, "{}", r.body);
        assert_eq!(r.json()["error"], "unauthorized");
    }
    let r = api.call(None, "GET", "/api/v1/health", None).await;
    assert_eq!((r.status, r.json()["status"].as_str()), (200, Some("ok")));

    let viewer = api.key("vera", "viewer").await;
    let operator = api.key("otto", "operator").await;
    let edge = json!({"name": "Site"}).to_string();
    for key in [&viewer, &operator] {
        assert_eq!(
            api.call(Some(key), "GET", "/api/v1/edges", None)
                .await
                .status,
            200
        );
        let r = api
            .call(Some(key), "POST", "/api/v1/edges", Some(&edge))
            .await;
        assert_eq!(r.status, 403, "{}", r.body);
        assert_eq!(
            api.call(Some(key), "GET", "/api/v1/keys", None)
                .await
                .status,
            403
        );
    }
    // Keys are listed without their text or hash; a key cannot delete itself.
    let r = api.admin("GET", "/api/v1/keys", None).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["items"].as_array().unwrap().len(), 3);
    assert!(
        !r.body.contains(&viewer) && !r.body.contains("hash"),
        "{}",
        r.body
    );
    let admin_id = outpost::model::ApiKey::id_for(&api.admin);
    let r = api
        .admin("DELETE", &format!("/api/v1/keys/{admin_id}"), None)
        .await;
    assert_eq!(r.status, 409);
    let viewer_id = outpost::model::ApiKey::id_for(&viewer);
    assert_eq!(
        api.admin("DELETE", &format!("/api/v1/keys/{viewer_id}"), None)
            .await
            .status,
        204
    );
    assert_eq!(
        api.call(Some(&viewer), "GET", "/api/v1/edges", None)
            .await
            .status,
        401
    );
}

#[tokio::test]
async fn edge_locations_round_trip_with_revisions_and_a_secret_shown_once() {
    let api = start_api().await;
    let r = api
        .admin(
            "POST",
            "/api/v1/edges",
            Some(&json!({"name": "Sydney", "failover": true, "admins": ["otto"]}).to_string()),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.header("etag"), Some("\"1\""));
    let created = r.json();
    let id = created["id"].as_str().unwrap().to_owned();
    let secret = created["secret"].as_str().unwrap().to_owned();
    assert_eq!(secret.len(), 64);
    assert_eq!(created["rev"], 1);
    // The store keeps only the derived key, and it matches the secret shown.
    let uuid: uuid::Uuid = id.parse().unwrap();
    let key = api.store.store.link_key(uuid).await.unwrap().unwrap();
    let shown = outpost::secret::EdgeSecret::from_string(secret.clone()).unwrap();
    assert_eq!(key, shown.link_key(uuid).as_bytes().to_vec());

    let path = format!("/api/v1/edges/{id}");
    let r = api.admin("GET", &path, None).await;
    assert_eq!(r.status, 200);
    assert!(
        !r.body.contains(&secret) && !r.body.contains("secret"),
        "never again: {}",
        r.body
    );
    assert_eq!(r.json()["failover_timeout_ms"], 30000);

    // Replace: If-Match required; stale is 409; current works.
    let body = json!({"name": "Sydney office", "failover": true}).to_string();
    assert_eq!(api.admin("PUT", &path, Some(&body)).await.status, 428);
    let stale = api
        .call_with(
            Some(&api.admin),
            "PUT",
            &path,
            &[("If-Match", "\"7\"")],
            Some(&body),
        )
        .await;
    assert_eq!(stale.status, 409, "{}", stale.body);
    let r = api
        .call_with(
            Some(&api.admin),
            "PUT",
            &path,
            &[("If-Match", "\"1\"")],
            Some(&body),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["rev"], 2);
    assert_eq!(
        r.json()["admins"],
        json!([]),
        "PUT replaces the whole document"
    );

    // Patch: merge onto the current document, revision in the body.
    let r = api
        .admin(
            "PATCH",
            &path,
            Some(
                &json!({"rev": 2, "window_start": "0 2 * * 1-5", "window_length_ms": 3600000})
                    .to_string(),
            ),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        (r.json()["rev"].as_i64(), r.json()["name"].as_str()),
        (Some(3), Some("Sydney office"))
    );

    // Validation: 422 naming the field; bad JSON is 400.
    for (patch, field) in [
        (
            json!({"rev": 3, "window_start": "0 25 * * *"}),
            "window_start",
        ),
        (
            json!({"rev": 3, "failover_timeout_ms": "soon"}),
            "failover_timeout_ms",
        ),
        (json!({"rev": 3, "timezone": "Mars/Olympus"}), "timezone"),
        (json!({"rev": 3, "failovr": true}), "."),
        (
            json!({"rev": 3, "id": "0191e9a0-0000-7000-8000-000000000001"}),
            "id",
        ),
    ] {
        let r = api.admin("PATCH", &path, Some(&patch.to_string())).await;
        assert_eq!(r.status, 422, "{patch}: {}", r.body);
        let fields = r.json()["fields"].clone();
        let got = fields[0]["field"].as_str().unwrap().to_owned();
        assert!(
            got == field
                || (field == "." && fields[0]["message"].as_str().unwrap().contains("failovr")),
            "{patch}: {fields}"
        );
    }
    let r = api.admin("PATCH", &path, Some("{not json")).await;
    assert_eq!(r.status, 400);
    assert_eq!(
        api.admin("GET", &path, None).await.json()["rev"],
        3,
        "nothing was written"
    );

    // Rotation shows a new secret once; the old one no longer matches.
    let r = api.admin("POST", &format!("{path}/secret"), None).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let rotated = r.json()["secret"].as_str().unwrap().to_owned();
    assert_ne!(rotated, secret);
    let key = api.store.store.link_key(uuid).await.unwrap().unwrap();
    assert_ne!(key, shown.link_key(uuid).as_bytes().to_vec());
    assert_eq!(
        api.admin(
            "POST",
            "/api/v1/edges/0191e9a0-0000-7000-8000-000000000009/secret",
            None
        )
        .await
        .status,
        404
    );

    // Delete with the current revision.
    assert_eq!(
        api.call_with(
            Some(&api.admin),
            "DELETE",
            &path,
            &[("If-Match", "3")],
            None
        )
        .await
        .status,
        204
    );
    assert_eq!(api.admin("GET", &path, None).await.status, 404);
}

#[tokio::test]
async fn systems_enforce_references_and_one_owner_per_module() {
    let api = start_api().await;
    let create = |kind: &'static str, body: serde_json::Value| {
        let api = &api;
        async move {
            let r = api
                .admin("POST", &format!("/api/v1/{kind}"), Some(&body.to_string()))
                .await;
            assert_eq!(r.status, 201, "{}", r.body);
            r.json()["id"].as_str().unwrap().to_owned()
        }
    };
    let edge = create("edges", json!({"name": "Site"})).await;
    let projector = create(
        "modules",
        json!({"name": "Projector", "driver": "pjlink.lua", "uri": "tcp://127.0.0.1:4352"}),
    )
    .await;
    let r = api
        .admin(
            "POST",
            "/api/v1/modules",
            Some(&json!({"name": "X", "driver": "nope.lua"}).to_string()),
        )
        .await;
    assert_eq!(
        (r.status, r.json()["fields"][0]["field"].as_str()),
        (422, Some("driver"))
    );

    let missing = "0191e9a0-0000-7000-8000-0000000000ff";
    let r = api
        .admin(
            "POST",
            "/api/v1/systems",
            Some(
                &json!({"name": "Room", "edge_id": missing, "module_ids": [projector, missing]})
                    .to_string(),
            ),
        )
        .await;
    assert_eq!(r.status, 422, "{}", r.body);
    let fields: Vec<String> = r.json()["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["field"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(fields, vec!["edge_id", "module_ids[1]"]);

    let room = create(
        "systems",
        json!({"name": "Room", "edge_id": edge, "module_ids": [projector]}),
    )
    .await;
    // The same owner may list it again; the master may not.
    create(
        "systems",
        json!({"name": "Room 2", "edge_id": edge, "module_ids": [projector]}),
    )
    .await;
    let r = api
        .admin(
            "POST",
            "/api/v1/systems",
            Some(&json!({"name": "Lobby", "module_ids": [projector]}).to_string()),
        )
        .await;
    assert_eq!(r.status, 422, "{}", r.body);
    assert!(
        r.json()["fields"][0]["message"]
            .as_str()
            .unwrap()
            .contains("already listed")
    );

    // Referenced documents cannot be deleted.
    let r = api
        .call_with(
            Some(&api.admin),
            "DELETE",
            &format!("/api/v1/modules/{projector}"),
            &[("If-Match", "1")],
            None,
        )
        .await;
    assert_eq!(r.status, 409, "{}", r.body);
    let r = api
        .call_with(
            Some(&api.admin),
            "DELETE",
            &format!("/api/v1/edges/{edge}"),
            &[("If-Match", "1")],
            None,
        )
        .await;
    assert_eq!(r.status, 409, "{}", r.body);
    assert_eq!(
        api.call_with(
            Some(&api.admin),
            "DELETE",
            &format!("/api/v1/systems/{room}"),
            &[("If-Match", "1")],
            None
        )
        .await
        .status,
        204
    );
}

#[tokio::test]
async fn lists_paginate_and_unknown_things_are_404() {
    let api = start_api().await;
    let mut ids = Vec::new();
    for i in 0..5 {
        let r = api
            .admin(
                "POST",
                "/api/v1/modules",
                Some(&json!({"name": format!("m{i}"), "driver": "room.lua"}).to_string()),
            )
            .await;
        ids.push(r.json()["id"].as_str().unwrap().to_owned());
    }
    let mut seen = Vec::new();
    let mut next: Option<String> = None;
    loop {
        let path = match &next {
            Some(after) => format!("/api/v1/modules?limit=2&after={after}"),
            None => "/api/v1/modules?limit=2".to_owned(),
        };
        let page = api.admin("GET", &path, None).await.json();
        for item in page["items"].as_array().unwrap() {
            seen.push(item["id"].as_str().unwrap().to_owned());
            assert!(item["rev"].is_i64());
        }
        match page["next"].as_str() {
            Some(n) => next = Some(n.to_owned()),
            None => break,
        }
    }
    ids.sort();
    assert_eq!(seen, ids);
    assert_eq!(
        api.admin(
            "GET",
            "/api/v1/modules/0191e9a0-0000-7000-8000-000000000009",
            None
        )
        .await
        .status,
        404
    );
    assert_eq!(
        api.admin("GET", "/api/v1/modules/not-a-uuid", None)
            .await
            .status,
        400
    );
    assert_eq!(api.admin("GET", "/api/v1/nothing", None).await.status, 404);
}

#[tokio::test]
async fn an_edge_serves_documents_read_only() {
    let api = crate::server::start_api_as(outpost::config::Role::Edge).await;
    let r = api.admin("GET", "/api/v1/edges", None).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = api
        .admin(
            "POST",
            "/api/v1/edges",
            Some(&json!({"name": "Site"}).to_string()),
        )
        .await;
    assert_eq!(r.status, 405, "{}", r.body);
    assert!(r.json()["error"].as_str().unwrap().contains("master"));
    let r = api
        .admin(
            "POST",
            "/api/v1/keys",
            Some(&json!({"name": "k", "user": "u", "role": "viewer"}).to_string()),
        )
        .await;
    assert_eq!(r.status, 405);
    assert_eq!(
        api.call(None, "GET", "/api/v1/health", None).await.json()["role"],
        "edge"
    );
}

/// Secret settings are write-only: a viewer, an operator and an admin all
/// read `"<redacted>"` (single reads, lists, and the answer to a write);
/// GET-then-PUT and a patch that leaves them out keep the stored values;
/// `null` removes one. The same holds for system settings. No answer
/// carries a stored key hash.
#[tokio::test]
async fn secret_settings_are_write_only_for_every_role() {
    let api = start_api().await;
    let viewer = api.key("vera", "viewer").await;
    let operator = api.key("otto", "operator").await;
    let body = json!({"name": "Projector", "driver": "pjlink.lua", "uri": "tcp://127.0.0.1:4352",
        "settings": {"password": "hunter2", "poll_ms": 100, "auth": {"api_key": "k-123"}}});
    let r = api
        .admin("POST", "/api/v1/modules", Some(&body.to_string()))
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert!(
        !r.body.contains("hunter2") && !r.body.contains("k-123"),
        "{}",
        r.body
    );
    let id = r.json()["id"].as_str().unwrap().to_owned();
    let path = format!("/api/v1/modules/{id}");
    for key in [&viewer, &operator, &api.admin] {
        let r = api.call(Some(key), "GET", &path, None).await;
        assert_eq!(r.status, 200, "{}", r.body);
        let s = &r.json()["settings"];
        assert_eq!(s["password"], "<redacted>");
        assert_eq!(s["auth"]["api_key"], "<redacted>");
        assert_eq!(s["poll_ms"], 100);
        let r = api.call(Some(key), "GET", "/api/v1/modules", None).await;
        assert!(
            r.body.contains("<redacted>") && !r.body.contains("hunter2"),
            "{}",
            r.body
        );
    }
    let stored = |api: &crate::server::TestApi, id: String| {
        let store = api.store.store.clone();
        async move {
            let doc = store.get(id.parse().unwrap()).await.unwrap().unwrap();
            serde_json::from_str::<serde_json::Value>(&doc.body).unwrap()["settings"].clone()
        }
    };

    // GET-then-PUT, with one plain setting changed: the secrets stay.
    let mut doc = api.admin("GET", &path, None).await.json();
    doc["settings"]["poll_ms"] = json!(200);
    let r = api.admin("PUT", &path, Some(&doc.to_string())).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["settings"]["password"], "<redacted>");
    let s = stored(&api, id.clone()).await;
    assert_eq!(
        s,
        json!({"password": "hunter2", "poll_ms": 200, "auth": {"api_key": "k-123"}})
    );
    // A patch that does not name them keeps them; a new value replaces;
    // null removes.
    let patch = json!({"rev": 2, "settings": {"password": "swordfish", "auth": {"api_key": null}}});
    let r = api.admin("PATCH", &path, Some(&patch.to_string())).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let s = stored(&api, id.clone()).await;
    assert_eq!(s["password"], "swordfish");
    assert_eq!(s["auth"], json!({}));

    // System settings follow the same rule.
    let sys = json!({"name": "Room", "settings": {"token": "t-1", "label": "A"}});
    let r = api
        .admin("POST", "/api/v1/systems", Some(&sys.to_string()))
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.json()["settings"]["token"], "<redacted>");
    let sid = r.json()["id"].as_str().unwrap().to_owned();
    let spath = format!("/api/v1/systems/{sid}");
    let doc = api.call(Some(&viewer), "GET", &spath, None).await.json();
    assert_eq!(
        doc["settings"],
        json!({"token": "<redacted>", "label": "A"})
    );
    let r = api.admin("PUT", &spath, Some(&doc.to_string())).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(stored(&api, sid).await["token"], "t-1");

    // Stored key hashes are in no answer.
    let hashes: Vec<String> = api
        .store
        .store
        .list_all(outpost::model::Kind::ApiKey)
        .await
        .unwrap()
        .into_iter()
        .map(|d| d.parse::<outpost::model::ApiKey>().unwrap().hash)
        .collect();
    assert_eq!(hashes.len(), 3);
    for p in [
        "/api/v1/keys",
        "/api/v1/whoami",
        "/api/v1/modules",
        "/api/v1/systems",
    ] {
        let r = api.admin("GET", p, None).await;
        assert_eq!(r.status, 200, "{p}: {}", r.body);
        for h in &hashes {
            assert!(!r.body.contains(h.as_str()), "{p} answers a key hash");
        }
    }
}
