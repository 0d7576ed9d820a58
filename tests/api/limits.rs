//! The API's HTTP server under slow and greedy clients: half a header and
//! then nothing is closed by the header timeout, one address cannot hold
//! more than its share of connections, and the API keeps answering others
//! meanwhile.

use std::net::SocketAddr;
use std::time::Duration;

use outpost::api::{ApiState, HttpLimits};
use outpost::config::Role;
use outpost::util::AdmissionLimits;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpSocket, TcpStream};

use crate::support::{TestStore, example_drivers};

/// A bound for waits that must end; never a figure the test checks.
const GUARD: Duration = Duration::from_secs(60);

async fn start(limits: HttpLimits) -> (SocketAddr, TestStore, tokio::sync::oneshot::Sender<()>) {
    let store = TestStore::sqlite().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let state = ApiState::new(store.store.clone(), Role::Master, example_drivers());
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(outpost::api::serve_with(listener, state, limits, async {
        let _ = rx.await;
    }));
    (addr, store, tx)
}

/// `GET /api/v1/health` from `from`, on a connection of its own.
async fn health_from(from: &str, api: SocketAddr) -> String {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(format!("{from}:0").parse().unwrap()).unwrap();
    let mut s = socket.connect(api).await.unwrap();
    s.write_all(b"GET /api/v1/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = String::new();
    tokio::time::timeout(GUARD, s.read_to_string(&mut answer))
        .await
        .unwrap()
        .unwrap();
    answer
}

/// True once the server has closed `s` (whatever it said before closing).
async fn closed_by_server(s: &mut TcpStream) -> bool {
    let mut sink = Vec::new();
    tokio::time::timeout(GUARD, s.read_to_end(&mut sink))
        .await
        .is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_a_header_is_closed_by_the_header_timeout_while_the_api_serves() {
    let (api, _store, _stop) = start(HttpLimits {
        header_read_timeout: Duration::from_millis(300),
        ..HttpLimits::default()
    })
    .await;
    let mut slow = Vec::new();
    for _ in 0..200 {
        let mut s = TcpStream::connect(api).await.unwrap();
        s.write_all(b"GET /api/v1/health HTTP/1.1\r\nHost: x\r\n")
            .await
            .unwrap();
        slow.push(s);
    }
    let answer = health_from("127.0.0.1", api).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    for s in &mut slow {
        assert!(closed_by_server(s).await, "a slow client stayed open");
    }
    // An idle keep-alive connection is closed the same way.
    let mut idle = TcpStream::connect(api).await.unwrap();
    idle.write_all(b"GET /api/v1/health HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    assert!(closed_by_server(&mut idle).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_holds_at_most_its_share_of_connections() {
    let (api, _store, _stop) = start(HttpLimits {
        header_read_timeout: Duration::from_secs(600),
        connections: AdmissionLimits {
            max_unauthenticated: 100,
            per_source: 8,
        },
    })
    .await;
    let mut greedy = Vec::new();
    for _ in 0..30 {
        greedy.push(TcpStream::connect(api).await.unwrap());
    }
    // Past its share, the greedy address's connections are closed at once;
    // the first eight stay open (their header timeout is ten minutes away).
    for s in &mut greedy[8..] {
        assert!(closed_by_server(s).await);
    }
    let answer = health_from("127.0.0.2", api).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_websocket_holds_at_most_its_share_of_subscriptions() {
    let api = crate::server::start_api().await;
    let mut client = crate::ws::connect(api.addr, Some(&api.admin))
        .await
        .unwrap();
    for id in 1..=65 {
        crate::ws::send(
            &mut client,
            serde_json::json!({"op": "subscribe", "id": id, "topic": "control"}),
        )
        .await;
    }
    let refusal = crate::ws::until(&mut client, "the 65th subscription's refusal", |v| {
        v["type"] == "error" && v["id"] == 65
    })
    .await;
    assert!(refusal.to_string().contains("at most 64"), "{refusal}");
}
