//! The smallest HTTP/1.1 client the command line needs: one request on a
//! fresh plain-TCP connection to the master's API, read to its end.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

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
    let body = body.unwrap_or("");
    let content_type = if body.is_empty() {
        ""
    } else {
        "Content-Type: application/json\r\n"
    };
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {authority}\r\nAuthorization: Bearer {key}\r\n\
         {content_type}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(authority)
            .await
            .map_err(|e| e.to_string())?;
        stream
            .write_all(request.as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        let mut raw = Vec::new();
        stream
            .read_to_end(&mut raw)
            .await
            .map_err(|e| e.to_string())?;
        Ok::<_, String>(raw)
    };
    let raw = tokio::time::timeout(TIMEOUT, exchange)
        .await
        .map_err(|_| format!("no answer within {} s", TIMEOUT.as_secs()))??;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or("the answer is not HTTP")?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or("the answer has no status")?;
    let chunked = head.lines().any(|l| {
        l.to_ascii_lowercase()
            .starts_with("transfer-encoding: chunked")
    });
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_owned()
    };
    Ok((status, body))
}

/// `host:port` of an `http://host:port` base URL.
pub fn authority(base: &str) -> Result<&str, String> {
    Ok(base
        .strip_prefix("http://")
        .ok_or_else(|| format!("'{base}' must start with http://"))?
        .trim_end_matches('/'))
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}
