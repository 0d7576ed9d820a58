//! Every error answers the project's JSON error shape, axum's own
//! rejections included: a body over the limit, a path id that is not a
//! UUID, a query that does not parse, bad JSON, a method not allowed.

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::server::start_api;

/// Sends a request with a body of `len` bytes, writing while it reads the
/// answer (the server may answer before it has read the body).
async fn oversize(addr: std::net::SocketAddr, key: &str, path: &str, len: usize) -> (u16, String) {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut r, mut w) = stream.into_split();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nAuthorization: Bearer {key}\r\nContent-Type: application/json\r\nContent-Length: {len}\r\n\r\n"
    );
    let writer = tokio::spawn(async move {
        w.write_all(head.as_bytes()).await?;
        let chunk = vec![b' '; 64 * 1024];
        let mut left = len;
        while left > 0 {
            let n = left.min(chunk.len());
            w.write_all(&chunk[..n]).await?;
            left -= n;
        }
        std::io::Result::Ok(())
    });
    let mut raw = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
        }
    }
    writer.abort();
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").expect("an answer");
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/json"),
        "{head}"
    );
    (status, body.to_owned())
}

#[tokio::test]
async fn every_rejection_answers_the_json_error_shape() {
    let api = start_api().await;
    // (method, path, body, expected status, words the message must hold)
    let cases: [(&str, &str, Option<&str>, u16, &str); 7] = [
        ("GET", "/api/v1/edges/not-a-uuid", None, 400, "uuid"),
        ("GET", "/api/v1/edges?limit=abc", None, 400, "limit"),
        ("GET", "/api/v1/keys?after=nope", None, 400, "after"),
        ("GET", "/api/v1/edges/1/control-log?before=x", None, 400, ""),
        (
            "POST",
            "/api/v1/modules/0191e9a0-0000-7000-8000-000000000009/exec?timeout_ms=-1",
            Some("{}"),
            400,
            "timeout_ms",
        ),
        ("POST", "/api/v1/edges", Some("{not json"), 400, "json"),
        ("DELETE", "/api/v1/edges", None, 405, ""),
    ];
    for (method, path, body, status, words) in cases {
        let r = api.admin(method, path, body).await;
        assert_eq!(r.status, status, "{method} {path}: {}", r.body);
        assert!(
            r.header("content-type")
                .is_some_and(|c| c.starts_with("application/json")),
            "{method} {path}: {:?}",
            r.headers
        );
        let error = r.json()["error"]
            .as_str()
            .unwrap_or_default()
            .to_lowercase();
        assert!(!error.is_empty(), "{method} {path}: {}", r.body);
        assert!(error.contains(words), "{method} {path}: {error}");
    }
    // A 10 MB body: 413 in the same shape.
    let (status, body) = oversize(api.addr, &api.admin, "/api/v1/edges", 10 * 1024 * 1024).await;
    assert_eq!(status, 413, "{body}");
    let json: serde_json::Value =
        serde_json::from_str(body.trim()).unwrap_or_else(|e| panic!("{e}: {body}"));
    assert!(
        json["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{body}"
    );
}
