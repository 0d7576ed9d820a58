//! The operator's web console, served by the master at `/` from files
//! embedded in the binary (plain HTML, CSS and JavaScript modules: no build
//! step, no CDN). Everything it shows comes from the web API under
//! `/api/v1/` and, live, from `/api/v1/ws`.
//!
//! These are static files, not API routes: they live outside `/api/v1/`,
//! need no key (the page asks for one and keeps it in `sessionStorage`),
//! and have no OpenAPI description. An edge serves no console.
//!
//! Every answer carries a strict Content-Security-Policy (scripts and
//! styles from this origin only, nothing inline; connections to this
//! origin and its WebSocket), refuses framing, and turns off content-type
//! sniffing, so the console is safe to expose where the API is.

use axum::Router;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::config::Role;

/// One embedded file: its URL path, content type and bytes.
struct Asset {
    path: &'static str,
    mime: &'static str,
    body: &'static str,
}

macro_rules! assets {
    ($(($path:literal, $file:literal, $mime:expr)),* $(,)?) => {
        &[$(Asset { path: $path, mime: $mime, body: include_str!(concat!("assets/", $file)) }),*]
    };
}

const JS: &str = "text/javascript; charset=utf-8";

/// Every file of the console. `/` is the page; the rest sit under
/// `/console/`, out of the API's namespace.
static ASSETS: &[Asset] = assets![
    ("/", "index.html", "text/html; charset=utf-8"),
    ("/console/style.css", "style.css", "text/css; charset=utf-8"),
    ("/console/app.js", "app.js", JS),
    ("/console/api.js", "api.js", JS),
    ("/console/dom.js", "dom.js", JS),
    ("/console/overview.js", "overview.js", JS),
    ("/console/site.js", "site.js", JS),
    ("/console/module.js", "module.js", JS),
    ("/console/documents.js", "documents.js", JS),
    ("/console/cluster.js", "cluster.js", JS),
    ("/console/favicon.svg", "favicon.svg", "image/svg+xml"),
];

/// The console's routes on a master; nothing on an edge (API only, as the
/// mission says).
pub fn router<S: Clone + Send + Sync + 'static>(role: Role) -> Router<S> {
    let mut router = Router::new();
    if role != Role::Master {
        return router;
    }
    for asset in ASSETS {
        router = router.route(asset.path, get(move |h: HeaderMap| serve(asset, h)));
    }
    router
}

/// Total bytes of the console's files (the first load, uncompressed).
pub fn total_bytes() -> usize {
    ASSETS.iter().map(|a| a.body.len()).sum()
}

/// The paths of the console's files.
pub fn paths() -> impl Iterator<Item = &'static str> {
    ASSETS.iter().map(|a| a.path)
}

async fn serve(asset: &'static Asset, headers: HeaderMap) -> Response {
    let mut r = (StatusCode::OK, asset.body).into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(asset.mime));
    // The files change only with the binary: revalidate, never serve stale.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        csp(headers.get(header::HOST)),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    r
}

/// The policy, with this origin's WebSocket named explicitly: browsers that
/// predate CSP level 3 do not count `ws:` as `'self'`. A Host header that is
/// not a plain host name (or address) and port is left out, so it can never
/// inject a directive.
fn csp(host: Option<&HeaderValue>) -> HeaderValue {
    let host = host.and_then(|h| h.to_str().ok()).filter(|h| {
        !h.is_empty()
            && h.len() <= 255
            && h.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']'))
    });
    let ws = host.map_or(String::new(), |h| format!(" ws://{h} wss://{h}"));
    let policy = format!(
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
         connect-src 'self'{ws}; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    );
    HeaderValue::from_str(&policy).unwrap_or_else(|_| {
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; frame-ancestors 'none'",
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_policy_names_this_origins_websocket_and_nothing_a_host_header_injects() {
        let ok = csp(Some(&HeaderValue::from_static("127.0.0.1:8080")));
        let ok = ok.to_str().unwrap();
        assert!(ok.contains("connect-src 'self' ws://127.0.0.1:8080 wss://127.0.0.1:8080;"));
        assert!(ok.contains("frame-ancestors 'none'"));
        assert!(!ok.contains("unsafe-inline"));
        let bad = csp(Some(&HeaderValue::from_static("evil; script-src *")));
        assert!(bad.to_str().unwrap().contains("connect-src 'self';"));
    }

    #[test]
    fn the_first_load_stays_under_150_kib() {
        assert!(total_bytes() < 150 * 1024, "{} bytes", total_bytes());
    }
}
