//! The HTTP client of the command line, and of a standby master node that
//! hands a request to the acting one: one request on a fresh plain-TCP
//! connection to a running master's API (the API serves plain HTTP; TLS in
//! front of it belongs to a proxy of the operator's). hyper (already in the
//! tree for the server) does the protocol, so chunked answers, multi-byte
//! text and malformed replies are its well-tested business, not ours.

use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
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
    let mut builder = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header(hyper::header::AUTHORIZATION, format!("Bearer {key}"));
    if body.is_some() {
        builder = builder.header(hyper::header::CONTENT_TYPE, "application/json");
    }
    let request = builder
        .body(Bytes::from(body.unwrap_or("").to_owned()))
        .map_err(|e| format!("bad request: {e}"))?;
    let answer = send(base, request, TIMEOUT, usize::MAX).await?;
    let status = answer.status().as_u16();
    Ok((status, String::from_utf8_lossy(answer.body()).into_owned()))
}

/// Sends `request` (its URI a path and query) to the API at `base` and
/// reads the whole answer, at most `max_body` bytes of it, within `timeout`.
/// The `Host` header is set here.
pub async fn send(
    base: &str,
    mut request: hyper::Request<Bytes>,
    timeout: Duration,
    max_body: usize,
) -> Result<hyper::Response<Bytes>, String> {
    let authority = authority(base)?;
    let host = hyper::header::HeaderValue::from_str(authority)
        .map_err(|_| format!("'{base}' is not a valid address"))?;
    request.headers_mut().insert(hyper::header::HOST, host);
    let request = request.map(Full::new);
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
        let (parts, body) = answer.into_parts();
        let bytes = Limited::new(body, max_body)
            .collect()
            .await
            .map_err(|e| format!("reading the answer: {e}"))?
            .to_bytes();
        Ok::<_, String>(hyper::Response::from_parts(parts, bytes))
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| format!("no answer within {} s", timeout.as_secs()))?
}

/// `host:port` of an `http://host:port` base URL.
pub fn authority(base: &str) -> Result<&str, String> {
    Ok(base
        .strip_prefix("http://")
        .ok_or_else(|| format!("'{base}' must start with http://"))?
        .trim_end_matches('/'))
}
