//! The WebSocket's queue per client: a client that does not read loses
//! messages, is told how many, and never slows the module producing them.

use std::time::Duration;

use outpost::api::{ApiState, Ops, bootstrap_admin};
use outpost::config::{Config, Role};
use outpost::runtime::{Runtime, RuntimeConfig};
use serde_json::json;

use crate::support::{TestStore, example_drivers};
use crate::ws::{self, Got};

/// A driver that writes `n` long debug lines in one call.
const SPAM: &str = r#"
local M = {}
function M.spam(n)
  local line = string.rep("x", 1000)
  for i = 1, n do log.info(line) end
  return n
end
return M
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_does_not_read_is_told_what_it_lost() {
    let store = TestStore::sqlite().await;
    let data = tempfile::tempdir().unwrap();
    let admin_path = bootstrap_admin(&store.store, None, data.path())
        .await
        .unwrap()
        .unwrap();
    let admin = std::fs::read_to_string(admin_path)
        .unwrap()
        .trim()
        .to_owned();
    let modules = data.path().join("modules");
    std::fs::create_dir_all(&modules).unwrap();
    std::fs::write(modules.join("spam.lua"), SPAM).unwrap();
    let module = outpost::model::Module {
        id: outpost::model::new_id(),
        name: "Spam".into(),
        driver: "spam.lua".into(),
        uri: None,
        settings: Default::default(),
        enabled: true,
    };
    let site = outpost::admin::SiteFile {
        edges: vec![],
        systems: vec![],
        modules: vec![module.clone()],
    };
    let mut ctx = example_drivers();
    ctx.drivers.as_mut().unwrap().insert("spam.lua".into());
    outpost::admin::import(&store.store, &site, &ctx)
        .await
        .unwrap();
    let runtime = Runtime::new(RuntimeConfig::new(&modules));
    runtime.load(&module).await.unwrap();
    runtime.start(module.id).await.unwrap();

    let config = Config {
        ws_queue: 4,
        ..Config::default()
    };
    let ops = Ops::new(runtime.clone(), None, &config);
    let state = ApiState::with_ops(store.store.clone(), Role::Master, ctx, Some(ops));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(outpost::api::serve(listener, state, async {
        let _ = stop_rx.await;
    }));

    // A small receive window: the server's writes back up quickly.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = socket.connect(addr).await.unwrap();
    let mut client = ws::connect_on(stream, addr, Some(&admin), "")
        .await
        .unwrap();
    ws::send(
        &mut client,
        json!({"op": "subscribe", "id": 1, "topic": "debug", "module": module.id}),
    )
    .await;
    ws::until(&mut client, "subscribed", |v| v["type"] == "subscribed").await;

    // The module is never held up by the client that does not read.
    let lines = 5000;
    let done = tokio::time::timeout(
        Duration::from_secs(20),
        runtime.exec(module.id, "spam", json!([lines])),
    )
    .await
    .expect("the module finishes while the client reads nothing")
    .unwrap();
    assert_eq!(done, json!(lines));

    // Now read: fewer lines than were written, and a notice of the rest.
    let mut received = 0u64;
    let mut dropped = 0u64;
    while received + dropped < lines {
        match ws::next(&mut client, 10).await {
            Got::Json(v) if v["type"] == "debug" => received += 1,
            Got::Json(v) if v["type"] == "dropped" => dropped += v["count"].as_u64().unwrap(),
            Got::Json(v) => panic!("unexpected {v}"),
            Got::Close(f) => panic!("closed: {f:?}"),
        }
    }
    assert!(dropped > 0, "nothing dropped ({received} received)");
    assert_eq!(received + dropped, lines);

    // A graceful stop closes the socket with 1001.
    let _ = stop_tx.send(());
    match ws::next(&mut client, 10).await {
        Got::Close(Some(f)) => assert_eq!(u16::from(f.code), 1001),
        other => panic!("expected a close frame, got {other:?}"),
    }
    server.await.unwrap().unwrap();
    runtime.shutdown().await;
    store.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_stop_lets_an_in_flight_exec_finish() {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt};

    let store = TestStore::sqlite().await;
    let data = tempfile::tempdir().unwrap();
    // A line device that answers only when the test says so.
    let device = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let module = outpost::model::Module {
        id: outpost::model::new_id(),
        name: "Line".into(),
        driver: "line.lua".into(),
        uri: Some(format!("tcp://{}", device.local_addr().unwrap())),
        settings: Default::default(),
        enabled: true,
    };
    let site = outpost::admin::SiteFile {
        edges: vec![],
        systems: vec![],
        modules: vec![module.clone()],
    };
    outpost::admin::import(&store.store, &site, &example_drivers())
        .await
        .unwrap();
    let modules_dir = concat!(env!("CARGO_MANIFEST_DIR"), "/modules");
    let runtime = Runtime::new(RuntimeConfig::new(modules_dir));
    runtime.load(&module).await.unwrap();
    runtime.start(module.id).await.unwrap();
    let (conn, _) = device.accept().await.unwrap();
    let (read, mut write) = conn.into_split();
    let mut lines = tokio::io::BufReader::new(read).lines();

    let admin = "k".repeat(48);
    let config = Config {
        admin_key: Some(outpost::config::SecretString::new(admin.clone())),
        api_addr: "127.0.0.1:0".parse().unwrap(),
        data_dir: data.path().to_owned(),
        modules_dir: modules_dir.into(),
        ..Config::default()
    };
    let ops = Ops::new(runtime.clone(), None, &config);
    let api = outpost::api::start(&config, &store.store, Role::Master, ops)
        .await
        .unwrap();
    let addr = api.addr;
    let path = format!("/api/v1/modules/{}/exec", module.id);
    let auth = format!("Bearer {admin}");
    let call = tokio::spawn(async move {
        let body = json!({"method": "request", "args": ["hello"]}).to_string();
        crate::http::request(
            addr,
            "POST",
            &path,
            &[("Authorization", &auth)],
            Some(&body),
        )
        .await
    });
    // The exec reached the device: it is in flight.
    assert_eq!(lines.next_line().await.unwrap().as_deref(), Some("hello"));
    let stopping = tokio::spawn(api.stop(Duration::from_secs(10)));
    // The server stops accepting...
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while tokio::net::TcpStream::connect(addr).await.is_ok() {
        assert!(tokio::time::Instant::now() < deadline, "still accepting");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // ...and the call in flight still gets its answer.
    write.write_all(b"world\n").await.unwrap();
    let reply = call.await.unwrap();
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.json()["result"], "world");
    stopping.await.unwrap();
    runtime.shutdown().await;
    store.cleanup().await;
}
