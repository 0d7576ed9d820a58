//! The command line's HTTP client: one request on a fresh plain-TCP
//! connection to a running master's API. hyper (already in the tree for the
//! server) does the protocol, so chunked answers, multi-byte text and
//! malformed replies are its well-tested business, not ours.

use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;

/// How long one command-line request may take.
const TIMEOUT: Duration = Duration::from_secs(60);

/// `POST path` with an empty body and a bearer key; the status and body.
pub async fn post(base: &str, path: &str, key: &str) -> Result<(u16, String), String> {
    request(base, "POST", path, key, None).await
}

/// One request with a bearer key and an optional JSON body; the status and
/// body of the answer.
pub async fn request(
    base: &str,
    method: &str,
    path: &str,
    key: &str,
    body: Option<&str>,
) -> Result<(u16, String), String> {
    let authority = authority(base)?;
    let mut builder = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header(hyper::header::HOST, authority)
        .header(hyper::header::AUTHORIZATION, format!("Bearer {key}"));
    if body.is_some() {
        builder = builder.header(hyper::header::CONTENT_TYPE, "application/json");
    }
    let request = builder
        .body(Full::new(Bytes::from(body.unwrap_or("").to_owned())))
        .map_err(|e| format!("bad request: {e}"))?;
    let exchange = async {
        let stream = tokio::net::TcpStream::connect(authority)
            .await
            .map_err(|e| format!("cannot connect to {authority}: {e}"))?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
        // The connection task ends when the answer has been read.
        tokio::spawn(connection);
        let answer = sender
            .send_request(request)
            .await
            .map_err(|e| e.to_string())?;
        let status = answer.status().as_u16();
        let bytes = answer
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        Ok::<_, String>((status, String::from_utf8_lossy(&bytes).into_owned()))
    };
    tokio::time::timeout(TIMEOUT, exchange)
        .await
        .map_err(|_| format!("no answer within {} s", TIMEOUT.as_secs()))?
}

/// `host:port` of an `http://host:port` base URL.
pub fn authority(base: &str) -> Result<&str, String> {
    Ok(base
        .strip_prefix("http://")
        .ok_or_else(|| format!("'{base}' must start with http://"))?
        .trim_end_matches('/'))
}
