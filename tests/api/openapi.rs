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

/// Where `tool` is on `PATH`, if it is.
fn tool(name: &str) -> Option<std::path::PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

fn skipped(what: &str, tool: &str) {
    assert!(
        std::env::var_os("CI").is_none(),
        "{what}: `{tool}` is not installed, and under CI a skip is a failure"
    );
    eprintln!(
        "\n********\nSKIPPED: {what}: `{tool}` is not installed (pip install {tool}; .ci/run installs it)\n********\n"
    );
}

#[tokio::test]
async fn query_parameters_are_in_the_query_and_operation_ids_are_unique() {
    let api = start_api().await;
    let spec = api
        .call(None, "GET", "/api/v1/openapi.json", None)
        .await
        .json();
    let mut ids = std::collections::BTreeMap::new();
    let mut queries = std::collections::BTreeSet::new();
    for (path, item) in spec["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let where_ = format!("{method} {path}");
            let id = op["operationId"].as_str().unwrap_or_default().to_owned();
            assert!(!id.is_empty(), "{where_}: no operationId");
            if let Some(other) = ids.insert(id.clone(), where_.clone()) {
                panic!("operationId {id} on both {other} and {where_}");
            }
            assert!(
                op["summary"].as_str().is_some_and(|s| !s.is_empty()),
                "{where_}: no summary"
            );
            for p in op["parameters"].as_array().into_iter().flatten() {
                let name = p["name"].as_str().unwrap();
                match p["in"].as_str().unwrap() {
                    "path" => assert!(
                        path.contains(&format!("{{{name}}}")),
                        "{where_}: path parameter {name} is not in the path"
                    ),
                    "query" => {
                        queries.insert(format!("{where_} {name}"));
                    }
                    other => panic!("{where_}: {name} in {other}"),
                }
            }
        }
    }
    for expected in [
        "get /api/v1/edges after",
        "get /api/v1/edges limit",
        "get /api/v1/systems limit",
        "get /api/v1/modules after",
        "get /api/v1/keys limit",
        "get /api/v1/edges/{id}/control-log before",
        "get /api/v1/edges/{id}/control-log limit",
        "post /api/v1/modules/{id}/exec timeout_ms",
        "get /api/v1/ws key",
    ] {
        assert!(
            queries.contains(expected),
            "{expected} not a query parameter: {queries:?}"
        );
    }
    for id in [
        "list_edges",
        "create_system",
        "get_module",
        "replace_edge",
        "patch_system",
        "delete_module",
    ] {
        assert!(ids.contains_key(id), "{id} missing: {ids:?}");
    }
}

/// A driver with one public function, for the generated client's exec.
const ECHO: &str = "local M = {}\nfunction M.echo(x) return x end\nreturn M\n";

/// The document passes `openapi-spec-validator`, and a client generated from
/// it by `openapi-python-client` lists, creates and executes against a
/// running API (each step skipped, loudly, when its tool is missing).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_document_validates_and_a_generated_client_works() {
    use outpost::api::{ApiState, Ops};
    use outpost::config::{Config, Role};
    use outpost::runtime::{Runtime, RuntimeConfig};

    let api = start_api().await;
    let spec = api
        .call(None, "GET", "/api/v1/openapi.json", None)
        .await
        .body;
    let dir = tempfile::tempdir().unwrap();
    let spec_path = dir.path().join("openapi.json");
    std::fs::write(&spec_path, &spec).unwrap();

    match tool("openapi-spec-validator") {
        None => skipped("validating the OpenAPI document", "openapi-spec-validator"),
        Some(validator) => {
            let out = std::process::Command::new(validator)
                .arg(&spec_path)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "openapi-spec-validator: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }

    let Some(generator) = tool("openapi-python-client") else {
        skipped("the generated client", "openapi-python-client");
        return;
    };
    let out = std::process::Command::new(generator)
        .args(["generate", "--path"])
        .arg(&spec_path)
        .args(["--output-path"])
        .arg(dir.path().join("client"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "openapi-python-client: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // A master's API with a running module whose driver echoes.
    let modules = dir.path().join("modules");
    std::fs::create_dir_all(&modules).unwrap();
    std::fs::write(modules.join("echo.lua"), ECHO).unwrap();
    let module = outpost::model::Module {
        id: outpost::model::new_id(),
        name: "Echo".into(),
        driver: "echo.lua".into(),
        uri: None,
        settings: Default::default(),
        enabled: true,
    };
    let mut ctx = crate::support::example_drivers();
    ctx.drivers.as_mut().unwrap().insert("echo.lua".into());
    let site = outpost::admin::SiteFile {
        modules: vec![module.clone()],
        ..Default::default()
    };
    outpost::admin::import(&api.store.store, &site, &ctx)
        .await
        .unwrap();
    let runtime = Runtime::new(RuntimeConfig::new(&modules));
    runtime.load(&module).await.unwrap();
    runtime.start(module.id).await.unwrap();
    let ops = Ops::new(runtime, None, &Config::default());
    let state = ApiState::with_ops(api.store.store.clone(), Role::Master, ctx, Some(ops));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (_stop, stop) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(outpost::api::serve(listener, state, async {
        let _ = stop.await;
    }));

    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/openapi_client/smoke.py");
    let out = tokio::process::Command::new("python3")
        .arg(script)
        .arg(dir.path().join("client"))
        .arg(format!("http://{addr}"))
        .arg(&api.admin)
        .arg(module.id.to_string())
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "the generated client: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
