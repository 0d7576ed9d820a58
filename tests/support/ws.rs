//! A WebSocket client for `/api/v1/ws` tests: connect, send JSON, read
//! JSON messages with a deadline.

// Each test binary uses a different part of this module.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;

pub type Ws = WebSocketStream<TcpStream>;

/// Connects with the key in the `Authorization` header (`None`: no key).
pub async fn connect(addr: SocketAddr, key: Option<&str>) -> Result<Ws, u16> {
    connect_on(TcpStream::connect(addr).await.unwrap(), addr, key, "").await
}

/// Connects with the key in the query string, as browsers must.
pub async fn connect_query(addr: SocketAddr, key: &str) -> Ws {
    let stream = TcpStream::connect(addr).await.unwrap();
    connect_on(stream, addr, None, &format!("?key={key}"))
        .await
        .unwrap()
}

/// Connects over `stream` (e.g. a socket with a small receive buffer).
pub async fn connect_on(
    stream: TcpStream,
    addr: SocketAddr,
    key: Option<&str>,
    query: &str,
) -> Result<Ws, u16> {
    let mut req = format!("ws://{addr}/api/v1/ws{query}")
        .into_client_request()
        .unwrap();
    if let Some(k) = key {
        req.headers_mut()
            .insert("authorization", format!("Bearer {k}").parse().unwrap());
    }
    match tokio_tungstenite::client_async(req, stream).await {
        Ok((ws, _)) => Ok(ws),
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => Err(r.status().as_u16()),
        Err(e) => panic!("WebSocket handshake failed: {e}"),
    }
}

pub async fn send(ws: &mut Ws, msg: Value) {
    ws.send(Message::Text(msg.to_string().into()))
        .await
        .unwrap();
}

/// What the server sent next: a JSON message, or its close frame.
#[derive(Debug)]
pub enum Got {
    Json(Value),
    Close(Option<CloseFrame>),
}

pub async fn next(ws: &mut Ws, secs: u64) -> Got {
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(secs), ws.next())
            .await
            .expect("a WebSocket message in time")
            .expect("the socket is open")
            .expect("a readable message");
        match msg {
            Message::Text(t) => return Got::Json(serde_json::from_str(t.as_str()).unwrap()),
            Message::Close(frame) => return Got::Close(frame),
            _ => {}
        }
    }
}

/// The next JSON message that satisfies `want`, skipping others.
pub async fn until(ws: &mut Ws, what: &str, want: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        assert!(!left.is_zero(), "timed out waiting for {what}");
        match tokio::time::timeout(left, next(ws, 20)).await {
            Ok(Got::Json(v)) if want(&v) => return v,
            Ok(Got::Json(v)) if v["type"] == "error" => panic!("{v} while waiting for {what}"),
            Ok(Got::Json(_)) => {}
            Ok(Got::Close(f)) => panic!("closed ({f:?}) while waiting for {what}"),
            Err(_) => panic!("timed out waiting for {what}"),
        }
    }
}
