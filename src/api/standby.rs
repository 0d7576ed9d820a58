//! The API of a STANDBY master node: it answers reads from the shared
//! store itself, and hands everything else to the acting node (MASTER):
//! every write, and every read whose answer is the acting node's live
//! state (a device's status, a module's runtime state, an edge's link).
//! By default the request is proxied to the MASTER's `advertise_api`
//! (method, path, query, body and the caller's key kept), once this node
//! has checked the key itself (a wrong one is answered 401 here and
//! throttled by the caller's address, not counted at the MASTER against
//! this node's, which every proxied request shares); with
//! `redirect_to_master` it is answered 307 to the same path there. With no
//! MASTER known, or one that does not answer, 503 with `Retry-After`.
//!
//! WebSocket status and debug subscriptions, which stream device traffic,
//! are refused on a standby with the MASTER's address (`devices_elsewhere`).
//!
//! One layer around every route, so no handler has to remember it; a
//! master without a cluster (`Ops::leadership` `None`) always acts.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderName, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::ApiState;
use super::error::ApiError;
use crate::control::leadership::LeaderAddress;

/// Largest request or answer body carried between nodes: the API's own
/// request limit (axum's default, 2 MiB).
pub(super) const MAX_PROXIED_BODY: usize = 2 * 1024 * 1024;

/// How long a proxied call may take beyond the deadline the caller gave
/// (`timeout_ms`), for the hop itself.
const HOP_MARGIN: Duration = Duration::from_secs(5);
/// A proxied call's limit when the caller gave no deadline: the API's
/// default device-call deadline and the hop.
const DEFAULT_HOP: Duration = Duration::from_secs(35);
/// The longest deadline a caller may give (`timeout_ms`, clamped the same
/// way by the handlers).
const MAX_DEADLINE: Duration = Duration::from_secs(600);

/// Reads answered from the acting node's memory, not the store: a
/// standby's own answer would be wrong (no device, no edge link).
const LIVE_READS: &[&str] = &[
    "/api/v1/modules/{id}/status",
    "/api/v1/modules/{id}/status/{key}",
    "/api/v1/modules/{id}/state",
    "/api/v1/edges/{id}/status",
    "/api/v1/sites",
];

/// Headers that belong to one hop, never forwarded (RFC 9110 §7.6.1).
const HOP_BY_HOP: &[HeaderName] = &[
    header::CONNECTION,
    header::HOST,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::PROXY_AUTHORIZATION,
    header::PROXY_AUTHENTICATE,
    header::CONTENT_LENGTH,
];

/// Whether this node answers a request itself: always when it acts;
/// as a standby, reads that the shared store answers.
fn served_here(method: &Method, route: Option<&str>) -> bool {
    let read = method == Method::GET || method == Method::HEAD;
    read && !route.is_some_and(|r| LIVE_READS.contains(&r))
}

/// The layer: passes the request on when this node acts or can answer it,
/// hands it to the MASTER otherwise.
pub(super) async fn gate(State(s): State<Arc<ApiState>>, req: Request, next: Next) -> Response {
    let Some(view) = s
        .ops
        .as_ref()
        .and_then(|o| o.leadership.as_ref())
        .map(|w| w.borrow().clone())
    else {
        return next.run(req).await;
    };
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(MatchedPath::as_str);
    if view.acting() || served_here(req.method(), route) {
        return next.run(req).await;
    }
    let state = view.state.as_str();
    let Some((leader, base)) = view.leader.as_ref().and_then(|l| Some((l, l.api.clone()?))) else {
        return ApiError::NoLeader(format!(
            "this master node is {state} and knows no MASTER to hand the request to; retry shortly"
        ))
        .into_response();
    };
    let redirect = s.ops.as_ref().is_some_and(|o| o.redirect_to_master);
    if redirect {
        return temporary_redirect(&base, req.uri());
    }
    // Every request handed on needs a key (all writes and live reads do).
    // It is checked here, where the caller's address is known, so a wrong
    // key is throttled per caller and never counted at the MASTER against
    // this node's address, which all proxied requests share.
    let ip = super::auth::client_ip(req.extensions());
    if let Err(e) = super::auth::authenticate(&s, ip, super::auth::bearer(req.headers())).await {
        return e.into_response();
    }
    match forward(&base, req).await {
        Ok(answer) => answer,
        Err(why) => {
            tracing::warn!(master = %leader.node_id, api = %base, error = %why, "cannot hand a request to the MASTER");
            ApiError::NoLeader(unreachable(leader, &base, &why)).into_response()
        }
    }
}

/// On a standby, why device traffic is not served here (a WebSocket
/// status or debug subscription, which cannot be proxied message by
/// message): subscribe at the MASTER, named when known. `None` when this
/// node acts.
pub(super) fn devices_elsewhere(s: &ApiState) -> Option<String> {
    let view = s.ops.as_ref()?.leadership.as_ref()?.borrow().clone();
    if view.acting() {
        return None;
    }
    let at = view.leader.and_then(|l| l.api).map_or_else(
        || "no MASTER is known yet".to_owned(),
        |api| format!("subscribe at the MASTER, {api}"),
    );
    Some(format!(
        "this master node is {} and drives no device: {at}",
        view.state.as_str()
    ))
}

fn unreachable(leader: &LeaderAddress, base: &str, why: &str) -> String {
    format!(
        "this master node is a STANDBY and the MASTER ({} at {base}) did not answer: {why}; retry shortly",
        leader.node_id
    )
}

/// 307 to the same path and query on the API at `base`: the client repeats
/// its request (body and method kept) there. The one redirect of the API:
/// a standby's to the MASTER, an edge's to its master.
pub(super) fn temporary_redirect(base: &str, uri: &axum::http::Uri) -> Response {
    let target = format!(
        "{}{}",
        base.trim_end_matches('/'),
        uri.path_and_query().map_or(uri.path(), |p| p.as_str())
    );
    match HeaderValue::try_from(target) {
        Ok(location) => (
            StatusCode::TEMPORARY_REDIRECT,
            [(header::LOCATION, location)],
        )
            .into_response(),
        Err(_) => ApiError::Internal(format!("the API address '{base}' is not a valid URL"))
            .into_response(),
    }
}

/// The caller's deadline (`timeout_ms`) and the hop: how long the proxied
/// call may take.
fn hop_limit(req: &Request) -> Duration {
    let given = req.uri().query().and_then(|q| {
        q.split('&')
            .find_map(|kv| kv.strip_prefix("timeout_ms="))
            .and_then(|v| v.parse::<u64>().ok())
    });
    match given {
        Some(ms) => Duration::from_millis(ms).min(MAX_DEADLINE) + HOP_MARGIN,
        None => DEFAULT_HOP,
    }
}

/// Sends the request to the MASTER's API as the caller sent it (its key
/// included) and answers with what the MASTER answered.
async fn forward(base: &str, req: Request) -> Result<Response, String> {
    let limit = hop_limit(&req);
    let (parts, body) = req.into_parts();
    let Ok(body) = axum::body::to_bytes(body, MAX_PROXIED_BODY).await else {
        // Plain text: the API's error layer answers it in the JSON shape.
        let why = format!("the request body is larger than {MAX_PROXIED_BODY} bytes");
        return Ok((StatusCode::PAYLOAD_TOO_LARGE, why).into_response());
    };
    let path = parts
        .uri
        .path_and_query()
        .map_or_else(|| parts.uri.path().to_owned(), |p| p.as_str().to_owned());
    let mut out = hyper::Request::builder()
        .method(parts.method)
        .uri(path)
        .body(body)
        .map_err(|e| e.to_string())?;
    copy_headers(&parts.headers, out.headers_mut());
    let answer = crate::http::send(base, out, limit, MAX_PROXIED_BODY).await?;
    let (parts, body) = answer.into_parts();
    let mut response = (parts.status, body).into_response();
    copy_headers(&parts.headers, response.headers_mut());
    response
        .headers_mut()
        .insert("x-outpost-proxied", HeaderValue::from_static("master"));
    Ok(response)
}

fn copy_headers(from: &axum::http::HeaderMap, to: &mut axum::http::HeaderMap) {
    for (name, value) in from {
        if !HOP_BY_HOP.contains(name) {
            to.append(name.clone(), value.clone());
        }
    }
}

/// Adds what a standby answers instead of the MASTER to every operation
/// it hands on (307 with `redirect_to_master`, 503 without a MASTER), so
/// the description says it once for all routes.
pub(super) fn document(openapi: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::ResponseBuilder;
    use utoipa::openapi::path::HttpMethod;
    for (path, item) in openapi.paths.paths.iter_mut() {
        let live = LIVE_READS.contains(&path.as_str());
        let operations = [
            (HttpMethod::Get, item.get.as_mut()),
            (HttpMethod::Post, item.post.as_mut()),
            (HttpMethod::Put, item.put.as_mut()),
            (HttpMethod::Patch, item.patch.as_mut()),
            (HttpMethod::Delete, item.delete.as_mut()),
        ];
        for (method, op) in operations {
            let Some(op) = op else { continue };
            if method == HttpMethod::Get && !live {
                continue;
            }
            let responses = &mut op.responses.responses;
            responses.entry("307".into()).or_insert_with(|| {
                ResponseBuilder::new()
                    .description(
                        "a standby master node with redirect_to_master: ask the MASTER (Location)",
                    )
                    .build()
                    .into()
            });
            responses.entry("503".into()).or_insert_with(|| {
                ResponseBuilder::new()
                    .description("a standby master node knows no MASTER, or the MASTER does not answer (Retry-After)")
                    .build()
                    .into()
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_standby_serves_store_reads_and_hands_on_the_rest() {
        let check = |method: Method, route: Option<&str>, here: bool| {
            assert_eq!(served_here(&method, route), here, "{method} {route:?}");
        };
        check(Method::GET, Some("/api/v1/modules/{id}"), true);
        check(Method::GET, Some("/api/v1/edges"), true);
        check(Method::GET, Some("/api/v1/ws"), true);
        check(Method::GET, None, true);
        check(Method::HEAD, Some("/api/v1/systems/{id}"), true);
        check(Method::GET, Some("/api/v1/modules/{id}/status"), false);
        check(
            Method::GET,
            Some("/api/v1/modules/{id}/status/{key}"),
            false,
        );
        check(Method::GET, Some("/api/v1/modules/{id}/state"), false);
        check(Method::GET, Some("/api/v1/edges/{id}/status"), false);
        check(Method::GET, Some("/api/v1/sites"), false);
        check(Method::PUT, Some("/api/v1/modules/{id}"), false);
        check(Method::POST, Some("/api/v1/modules/{id}/exec"), false);
        check(Method::DELETE, Some("/api/v1/keys/{id}"), false);
        check(Method::PATCH, Some("/api/v1/edges/{id}"), false);
    }
}
