//! The OpenAPI document describes every route, and every described route
//! is served; metrics count requests by route.

use crate::server::start_api;

#[tokio::test]
async fn every_route_is_described_and_every_description_is_served() {
    let api = start_api().await;
    let r = api.call(None, "GET", "/api/v1/openapi.json", None).await;
    assert_eq!(r.status, 200);
    let spec = r.json();
    let paths = spec["paths"].as_object().unwrap();
    for expected in [
        "/api/v1/health",
        "/api/v1/edges",
        "/api/v1/edges/{id}",
        "/api/v1/edges/{id}/secret",
        "/api/v1/systems",
        "/api/v1/systems/{id}",
        "/api/v1/modules",
        "/api/v1/modules/{id}",
        "/api/v1/keys",
        "/api/v1/keys/{id}",
        "/api/v1/ws",
        "/api/v1/drivers/{name}/reload",
        "/api/v1/edges/{id}/repository",
    ] {
        assert!(
            paths.contains_key(expected),
            "{expected} missing from the OpenAPI document"
        );
    }
    // Call every described operation: none may be unknown to the router.
    let id = "0191e9a0-0000-7000-8000-000000000009";
    let mut operations = 0;
    for (path, item) in paths {
        for method in item.as_object().unwrap().keys() {
            let url = path
                .replace("{id}", id)
                .replace("{name}", "room.lua")
                .replace("{key}", "power");
            let body = matches!(method.as_str(), "post" | "put" | "patch").then_some("{}");
            let r = api.admin(&method.to_uppercase(), &url, body).await;
            assert!(
                !(r.status == 404 && r.body.contains("no such route")) && r.status != 405,
                "{method} {path}: {} {}",
                r.status,
                r.body
            );
            operations += 1;
        }
    }
    assert!(operations >= 19, "{operations} operations");
    assert!(spec["components"]["securitySchemes"]["bearer"].is_object());

    let metrics = api.call(None, "GET", "/metrics", None).await;
    assert_eq!(metrics.status, 200);
    assert!(
        metrics.body.contains("outpost_http_requests_total"),
        "{}",
        metrics.body
    );
    assert!(
        metrics.body.contains("route=\"/api/v1/edges/{id}\""),
        "{}",
        metrics.body
    );
}
