//! CRUD over the documents: `/api/v1/edges`, `/api/v1/systems`,
//! `/api/v1/modules`. Reads need any key; writes need an admin key.
//!
//! Every answer carries the document's revision (`rev`, and an `ETag` on a
//! single document). Replace, patch and delete need the revision they
//! expect, as `If-Match` or as `rev` in the body: a stale one is 409. A body
//! that is not JSON is 400; one that does not fit the document, or breaks a
//! rule, is 422 naming the field. An edge location's secret is in the answer
//! to its creation and to a rotation, never anywhere else. Secret settings
//! of modules and systems (`model/secrets.rs`) are write-only: every answer
//! shows `"<redacted>"`, and a write that omits them or sends that back
//! keeps the stored value.

use std::future::Future;
use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::ApiState;
use super::auth::Caller;
use super::error::ApiError;
use crate::model::{ControlSystem, Doc, EdgeLocation, FieldError, Kind, Module, new_id, secrets};
use crate::secret::EdgeSecret;
use crate::store::{Expect, Write};

/// Page size when none is asked for, and the largest allowed.
const DEFAULT_LIMIT: u32 = 100;
const MAX_LIMIT: u32 = 1000;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct PageQuery {
    /// Return documents with ids after this one (the `next` of the previous page).
    pub after: Option<Uuid>,
    /// At most this many (default 100, at most 1000).
    pub limit: Option<u32>,
}

impl PageQuery {
    /// The page size asked for, within bounds.
    pub(super) fn limit(&self) -> u32 {
        self.limit.unwrap_or(DEFAULT_LIMIT).clamp(1, MAX_LIMIT)
    }
}

/// A document with its revision.
#[derive(Debug, Serialize)]
pub(super) struct Versioned<D> {
    pub rev: i64,
    #[serde(flatten)]
    pub doc: D,
    /// Only in the answer that creates an edge location.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
}

#[derive(Debug, Serialize)]
pub(super) struct Page<D> {
    pub items: Vec<Versioned<D>>,
    /// Pass as `after` for the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next: Option<Uuid>,
}

/// A document kind served by the API, with its cross-document rules.
pub(super) trait ApiDoc: Doc + Send + Sync + 'static {
    /// Checks that need other documents (references, owners).
    fn check_put(
        _state: &ApiState,
        _doc: &Self,
    ) -> impl Future<Output = Result<(), ApiError>> + Send {
        async { Ok(()) }
    }

    /// Refuses a delete that would leave dangling references.
    fn check_delete(
        _state: &ApiState,
        _id: Uuid,
    ) -> impl Future<Output = Result<(), ApiError>> + Send {
        async { Ok(()) }
    }

    /// Extra writes for a creation, and a secret to show once.
    fn on_create(_doc: &Self) -> (Vec<Write>, Option<EdgeSecret>) {
        (Vec::new(), None)
    }
}

impl ApiDoc for Module {
    async fn check_delete(state: &ApiState, id: Uuid) -> Result<(), ApiError> {
        let users = state.store.referencing(Kind::System, id).await?;
        if let Some(system) = users.first() {
            return Err(ApiError::Conflict(format!(
                "module {id} is listed by system {} ({} system(s) in all); remove it there first",
                system.id,
                users.len()
            )));
        }
        Ok(())
    }
}

impl ApiDoc for EdgeLocation {
    async fn check_delete(state: &ApiState, id: Uuid) -> Result<(), ApiError> {
        let systems = state.store.by_owner(Kind::System, id).await?;
        if !systems.is_empty() {
            return Err(ApiError::Conflict(format!(
                "edge location {id} owns {} system(s); move or delete them first",
                systems.len()
            )));
        }
        Ok(())
    }

    fn on_create(doc: &Self) -> (Vec<Write>, Option<EdgeSecret>) {
        let secret = EdgeSecret::generate();
        let write = Write::SetCredential {
            id: doc.id,
            expect: Expect::Absent,
            link_key: secret.link_key(doc.id).as_bytes().to_vec(),
            grace_until_ms: None,
        };
        (vec![write], Some(secret))
    }
}

impl ApiDoc for ControlSystem {
    async fn check_put(state: &ApiState, system: &Self) -> Result<(), ApiError> {
        let store = &state.store;
        let mut errors = Vec::new();
        let mut fail = |field: String, message: String| {
            errors.push(FieldError {
                kind: Kind::System.as_str(),
                id: system.id,
                field,
                message,
            })
        };
        if let Some(edge) = system.edge_id {
            match store.get(edge).await? {
                Some(d) if d.kind == Kind::Edge.as_str() => {}
                _ => fail(
                    "edge_id".into(),
                    format!("edge location {edge} does not exist"),
                ),
            }
        }
        for (i, module) in system.module_ids.iter().enumerate() {
            match store.get(*module).await? {
                Some(d) if d.kind == Kind::Module.as_str() => {}
                _ => {
                    fail(
                        format!("module_ids[{i}]"),
                        format!("module {module} does not exist"),
                    );
                    continue;
                }
            }
            for other in store.referencing(Kind::System, *module).await? {
                if other.id == system.id {
                    continue;
                }
                let other: ControlSystem = other.parse()?;
                if other.edge_id != system.edge_id {
                    let owner = |o: Option<Uuid>| {
                        o.map_or("the master".to_owned(), |e| format!("edge location {e}"))
                    };
                    fail(
                        format!("module_ids[{i}]"),
                        format!(
                            "module {module} is already listed by system {} of {}; a module cannot belong to {} as well",
                            other.id,
                            owner(other.edge_id),
                            owner(system.edge_id)
                        ),
                    );
                    break;
                }
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(ApiError::Invalid(errors))
        }
    }
}

/// Reads the expected revision from `If-Match` (`"3"`, `3` or `W/"3"`) or,
/// failing that, from `rev` in the body.
fn expected_rev(headers: &HeaderMap, body: Option<&Value>) -> Result<i64, ApiError> {
    let from_header = match headers.get(header::IF_MATCH) {
        None => None,
        Some(v) => {
            let text = v.to_str().unwrap_or("");
            let digits = text.trim().trim_start_matches("W/").trim_matches('"');
            Some(digits.parse::<i64>().map_err(|_| {
                ApiError::BadRequest(format!("If-Match '{text}' is not a revision"))
            })?)
        }
    };
    let from_body = body.and_then(|b| b.get("rev")).map(|r| {
        r.as_i64()
            .ok_or_else(|| ApiError::BadRequest("rev in the body must be an integer".into()))
    });
    match (from_header, from_body.transpose()?) {
        (Some(h), Some(b)) if h != b => Err(ApiError::BadRequest(format!(
            "If-Match ({h}) and rev in the body ({b}) disagree"
        ))),
        (Some(r), _) | (None, Some(r)) => Ok(r),
        (None, None) => Err(ApiError::PreconditionRequired),
    }
}

fn parse_json(bytes: &[u8]) -> Result<Value, ApiError> {
    let v: Value = serde_json::from_slice(bytes)
        .map_err(|e| ApiError::BadRequest(format!("the body is not valid JSON: {e}")))?;
    if !v.is_object() {
        return Err(ApiError::BadRequest(
            "the body must be a JSON object".into(),
        ));
    }
    Ok(v)
}

/// Turns a JSON object into a typed document with id `id`; a type error or
/// an unknown field is a 422 naming the field.
fn into_doc<D: Doc>(mut v: Value, id: Uuid) -> Result<D, ApiError> {
    let Some(obj) = v.as_object_mut() else {
        return Err(ApiError::BadRequest(
            "the body must be a JSON object".into(),
        ));
    };
    obj.remove("rev");
    obj.remove("secret");
    match obj.get("id") {
        None => {
            obj.insert("id".into(), Value::String(id.to_string()));
        }
        Some(given) if given.as_str() == Some(id.to_string().as_str()) => {}
        Some(_) => {
            return Err(invalid::<D>(id, "id", "does not match the id in the path"));
        }
    }
    serde_path_to_error::deserialize::<_, D>(v).map_err(|e| {
        let path = e.path().to_string();
        let field = if path == "." { "body".to_owned() } else { path };
        invalid::<D>(id, &field, &e.into_inner().to_string())
    })
}

fn invalid<D: Doc>(id: Uuid, field: &str, message: &str) -> ApiError {
    ApiError::Invalid(vec![FieldError {
        kind: D::KIND.as_str(),
        id,
        field: field.to_owned(),
        message: message.to_owned(),
    }])
}

fn with_etag<T: Serialize>(status: StatusCode, rev: i64, body: T) -> Response {
    (status, [(header::ETAG, format!("\"{rev}\""))], Json(body)).into_response()
}

async fn fetch<D: ApiDoc>(state: &ApiState, id: Uuid) -> Result<(i64, D), ApiError> {
    match state.store.get(id).await? {
        Some(doc) if doc.kind == D::KIND.as_str() => Ok((doc.rev, doc.parse()?)),
        _ => Err(ApiError::NotFound(format!("no {} with id {id}", D::KIND))),
    }
}

/// Validates and writes a document under the API's write lock, so checks
/// that read other documents cannot race another API write.
async fn put<D: ApiDoc>(
    state: &ApiState,
    mut doc: D,
    expect: Expect,
    keep_secrets: bool,
) -> Result<Response, ApiError> {
    state.require_writable()?;
    // Secret settings are write-only: omitted or sent back redacted, the
    // stored value stays (a patch was merged onto the stored values).
    if keep_secrets {
        let stored = match expect {
            Expect::Rev(_) => fetch::<D>(state, doc.id()).await.ok().map(|(_, d)| d),
            Expect::Absent => None,
        };
        secrets::keep_doc(&mut doc, stored.as_ref(), &declared(state));
    }
    doc.validate(&state.validation)?;
    let _guard = state.write_lock.lock().await;
    D::check_put(state, &doc).await?;
    let (mut writes, secret) = match expect {
        Expect::Absent => D::on_create(&doc),
        Expect::Rev(_) => (Vec::new(), None),
    };
    writes.insert(0, Write::put(&doc, expect));
    let done = state.store.apply(&writes).await?;
    let status = if expect == Expect::Absent {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let rev = done[0].rev;
    secrets::redact_doc(&mut doc, &declared(state));
    Ok(with_etag(
        status,
        rev,
        Versioned {
            rev,
            doc,
            secret: secret.map(|s| s.expose().to_owned()),
        },
    ))
}

/// The settings each driver declares secret, read from the modules
/// directory this process validates against.
fn declared(state: &ApiState) -> impl Fn(&str) -> Vec<String> + '_ {
    |driver| state.validation.declared_secrets(driver)
}

pub(super) async fn list<D: ApiDoc>(
    state: &ApiState,
    _caller: &Caller,
    q: PageQuery,
) -> Result<Json<Page<D>>, ApiError> {
    let limit = q.limit();
    let docs = state.store.list(D::KIND, q.after, limit).await?;
    let next = (docs.len() == limit as usize)
        .then(|| docs.last().map(|d| d.id))
        .flatten();
    let items = docs
        .iter()
        .map(|d| {
            let mut doc: D = d.parse()?;
            secrets::redact_doc(&mut doc, &declared(state));
            Ok(Versioned {
                rev: d.rev,
                doc,
                secret: None,
            })
        })
        .collect::<Result<Vec<_>, ApiError>>()?;
    Ok(Json(Page { items, next }))
}

pub(super) async fn get<D: ApiDoc + Serialize>(
    state: &ApiState,
    _caller: &Caller,
    id: Uuid,
) -> Result<Response, ApiError> {
    let (rev, mut doc) = fetch::<D>(state, id).await?;
    secrets::redact_doc(&mut doc, &declared(state));
    Ok(with_etag(
        StatusCode::OK,
        rev,
        Versioned {
            rev,
            doc,
            secret: None,
        },
    ))
}

pub(super) async fn create<D: ApiDoc>(
    state: &ApiState,
    caller: &Caller,
    body: &[u8],
) -> Result<Response, ApiError> {
    caller.require_admin()?;
    let v = parse_json(body)?;
    let id = match v.get("id") {
        None => new_id(),
        Some(given) => given
            .as_str()
            .and_then(|s| Uuid::parse_str(s).ok())
            .ok_or_else(|| invalid::<D>(Uuid::nil(), "id", "must be a uuid"))?,
    };
    let doc = into_doc::<D>(v, id)?;
    put(state, doc, Expect::Absent, true).await
}

pub(super) async fn replace<D: ApiDoc>(
    state: &ApiState,
    caller: &Caller,
    id: Uuid,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Response, ApiError> {
    caller.require_admin()?;
    let v = parse_json(body)?;
    let rev = expected_rev(headers, Some(&v))?;
    fetch::<D>(state, id).await?;
    let doc = into_doc::<D>(v, id)?;
    put(state, doc, Expect::Rev(rev), true).await
}

/// JSON merge patch (RFC 7386) onto the current document.
pub(super) async fn patch<D: ApiDoc + Serialize>(
    state: &ApiState,
    caller: &Caller,
    id: Uuid,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Response, ApiError> {
    caller.require_admin()?;
    let patch = parse_json(body)?;
    let rev = expected_rev(headers, Some(&patch))?;
    let (_, current) = fetch::<D>(state, id).await?;
    let mut v = serde_json::to_value(&current).map_err(|e| ApiError::Internal(e.to_string()))?;
    let mut patch = patch;
    if let Some(obj) = patch.as_object_mut() {
        obj.remove("rev");
        // A redacted secret sent back changes nothing; `null` removes it.
        if let Some(Value::Object(settings)) = obj.get_mut("settings") {
            secrets::strip_redacted(settings);
        }
    }
    merge_patch(&mut v, &patch);
    let doc = into_doc::<D>(v, id)?;
    put(state, doc, Expect::Rev(rev), false).await
}

/// JSON merge patch (RFC 7396). Ours rather than the `json-patch` crate's:
/// it is this one function, and the crate brings a JSON-pointer library
/// with it; the RFC's examples are its test.
fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(p) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(serde_json::Map::new());
    }
    if let Value::Object(t) = target {
        for (k, v) in p {
            if v.is_null() {
                t.remove(k);
            } else {
                merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
    }
}

pub(super) async fn delete<D: ApiDoc>(
    state: &ApiState,
    caller: &Caller,
    id: Uuid,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    caller.require_admin()?;
    state.require_writable()?;
    let rev = expected_rev(headers, None)?;
    fetch::<D>(state, id).await?;
    let _guard = state.write_lock.lock().await;
    D::check_delete(state, id).await?;
    state
        .store
        .apply(&[Write::Delete {
            id,
            expect: Expect::Rev(rev),
        }])
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// The answer to a secret rotation.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(super) struct SecretOut {
    pub id: Uuid,
    /// Shown once: set it as `OUTPOST_EDGE_SECRET` on the edge.
    pub secret: String,
}

/// Generates, for one document kind, the handlers with their OpenAPI paths
/// and the router that serves them.
macro_rules! document_routes {
    ($module:ident, $ty:ty, $tag:tt, $list:tt, $item:tt,
     ids: [$list_id:tt, $create_id:tt, $get_id:tt, $replace_id:tt, $patch_id:tt, $delete_id:tt],
     summaries: [$list_s:tt, $create_s:tt, $get_s:tt, $replace_s:tt, $patch_s:tt, $delete_s:tt]) => {
        pub(crate) mod $module {
            use super::*;

            #[utoipa::path(get, path = $list, tag = $tag, operation_id = $list_id, summary = $list_s, params(PageQuery),
                responses((status = 200, description = "A page of documents, each with its `rev`")),
                security(("bearer" = [])))]
            pub(crate) async fn list(State(s): State<Arc<ApiState>>, caller: Caller, Query(q): Query<PageQuery>) -> Result<Json<Page<$ty>>, ApiError> {
                super::list::<$ty>(&s, &caller, q).await
            }

            #[utoipa::path(post, path = $list, tag = $tag, operation_id = $create_id, summary = $create_s, request_body = $ty,
                responses((status = 201, description = "Created", body = $ty), (status = 422, body = super::super::error::ErrorBody)),
                security(("bearer" = [])))]
            pub(crate) async fn create(State(s): State<Arc<ApiState>>, caller: Caller, body: Bytes) -> Result<Response, ApiError> {
                super::create::<$ty>(&s, &caller, &body).await
            }

            #[utoipa::path(get, path = $item, tag = $tag, operation_id = $get_id, summary = $get_s, params(("id" = Uuid, Path)),
                responses((status = 200, body = $ty), (status = 404, body = super::super::error::ErrorBody)),
                security(("bearer" = [])))]
            pub(crate) async fn get(State(s): State<Arc<ApiState>>, caller: Caller, Path(id): Path<Uuid>) -> Result<Response, ApiError> {
                super::get::<$ty>(&s, &caller, id).await
            }

            #[utoipa::path(put, path = $item, tag = $tag, operation_id = $replace_id, summary = $replace_s, params(("id" = Uuid, Path)), request_body = $ty,
                responses((status = 200, body = $ty), (status = 409, body = super::super::error::ErrorBody), (status = 422, body = super::super::error::ErrorBody)),
                security(("bearer" = [])))]
            pub(crate) async fn replace(State(s): State<Arc<ApiState>>, caller: Caller, Path(id): Path<Uuid>, headers: HeaderMap, body: Bytes) -> Result<Response, ApiError> {
                super::replace::<$ty>(&s, &caller, id, &headers, &body).await
            }

            #[utoipa::path(patch, path = $item, tag = $tag, operation_id = $patch_id, summary = $patch_s, params(("id" = Uuid, Path)), request_body = Object,
                responses((status = 200, body = $ty), (status = 409, body = super::super::error::ErrorBody), (status = 422, body = super::super::error::ErrorBody)),
                security(("bearer" = [])))]
            pub(crate) async fn patch(State(s): State<Arc<ApiState>>, caller: Caller, Path(id): Path<Uuid>, headers: HeaderMap, body: Bytes) -> Result<Response, ApiError> {
                super::patch::<$ty>(&s, &caller, id, &headers, &body).await
            }

            #[utoipa::path(delete, path = $item, tag = $tag, operation_id = $delete_id, summary = $delete_s, params(("id" = Uuid, Path)),
                responses((status = 204, description = "Deleted"), (status = 409, body = super::super::error::ErrorBody)),
                security(("bearer" = [])))]
            pub(crate) async fn delete(State(s): State<Arc<ApiState>>, caller: Caller, Path(id): Path<Uuid>, headers: HeaderMap) -> Result<Response, ApiError> {
                super::delete::<$ty>(&s, &caller, id, &headers).await
            }

            pub(crate) fn routes() -> OpenApiRouter<Arc<ApiState>> {
                OpenApiRouter::new()
                    .routes(routes!(list, create))
                    .routes(routes!(get, replace, patch, delete))
            }
        }
    };
}

document_routes!(
    edges,
    EdgeLocation,
    "edges",
    "/api/v1/edges",
    "/api/v1/edges/{id}",
    ids: ["list_edges", "create_edge", "get_edge", "replace_edge", "patch_edge", "delete_edge"],
    summaries: [
        "List edge locations (paged by id)",
        "Create an edge location",
        "Get an edge location with its revision",
        "Replace an edge location (If-Match or rev)",
        "Merge-patch an edge location (If-Match or rev)",
        "Delete an edge location (If-Match)"
    ]
);
document_routes!(
    systems,
    ControlSystem,
    "systems",
    "/api/v1/systems",
    "/api/v1/systems/{id}",
    ids: ["list_systems", "create_system", "get_system", "replace_system", "patch_system", "delete_system"],
    summaries: [
        "List control systems (paged by id)",
        "Create a control system",
        "Get a control system with its revision",
        "Replace a control system (If-Match or rev)",
        "Merge-patch a control system (If-Match or rev)",
        "Delete a control system (If-Match)"
    ]
);
document_routes!(
    modules,
    Module,
    "modules",
    "/api/v1/modules",
    "/api/v1/modules/{id}",
    ids: ["list_modules", "create_module", "get_module", "replace_module", "patch_module", "delete_module"],
    summaries: [
        "List modules (paged by id)",
        "Create a module",
        "Get a module with its revision",
        "Replace a module (If-Match or rev)",
        "Merge-patch a module (If-Match or rev)",
        "Delete a module (If-Match)"
    ]
);

/// Query of a secret rotation.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct RotateQuery {
    /// The old secret stops at once (a compromised secret) instead of
    /// working for `secret_rotation_grace_ms`.
    #[serde(default)]
    pub no_grace: bool,
}

/// Gives an edge location a new secret, shown once in the answer. The live
/// link of that edge is closed at once; the old secret keeps authenticating
/// for `secret_rotation_grace_ms` unless `no_grace` is set.
#[utoipa::path(post, path = "/api/v1/edges/{id}/secret", tag = "edges",
    params(("id" = Uuid, Path), RotateQuery),
    responses((status = 200, body = SecretOut), (status = 404, body = super::error::ErrorBody)),
    security(("bearer" = [])))]
pub(super) async fn rotate_secret(
    State(s): State<Arc<ApiState>>,
    caller: Caller,
    Path(id): Path<Uuid>,
    Query(q): Query<RotateQuery>,
) -> Result<Json<SecretOut>, ApiError> {
    caller.require_admin()?;
    let grace = match (&s.ops, q.no_grace) {
        (Some(ops), false) => ops.rotation_grace,
        (None, false) => std::time::Duration::from_millis(
            crate::config::Config::default().secret_rotation_grace_ms,
        ),
        (_, true) => std::time::Duration::ZERO,
    };
    let secret = crate::admin::rotate_secret(&s.store, id, grace)
        .await
        .map_err(|e| match e {
            crate::admin::AdminError::NoSuchEdge(id) => {
                ApiError::NotFound(format!("no edge with id {id}"))
            }
            other => ApiError::Internal(crate::util::describe(&other)),
        })?;
    tracing::warn!(edge = %id, grace_ms = grace.as_millis() as u64,
        "edge secret rotated through the API; its live link will be closed");
    Ok(Json(SecretOut {
        id,
        secret: secret.expose().to_owned(),
    }))
}

pub(super) fn routes() -> OpenApiRouter<Arc<ApiState>> {
    OpenApiRouter::new()
        .merge(edges::routes())
        .merge(systems::routes())
        .merge(modules::routes())
        .routes(routes!(rotate_secret))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    /// RFC 7396, appendix A: every example.
    #[test]
    fn merge_patch_follows_the_rfc_examples() {
        let cases = [
            (json!({"a":"b"}), json!({"a":"c"}), json!({"a":"c"})),
            (json!({"a":"b"}), json!({"b":"c"}), json!({"a":"b","b":"c"})),
            (json!({"a":"b"}), json!({"a":null}), json!({})),
            (
                json!({"a":"b","b":"c"}),
                json!({"a":null}),
                json!({"b":"c"}),
            ),
            (json!({"a":["b"]}), json!({"a":"c"}), json!({"a":"c"})),
            (json!({"a":"c"}), json!({"a":["b"]}), json!({"a":["b"]})),
            (
                json!({"a":{"b":"c"}}),
                json!({"a":{"b":"d","c":null}}),
                json!({"a":{"b":"d"}}),
            ),
            (json!({"a":[{"b":"c"}]}), json!({"a":[1]}), json!({"a":[1]})),
            (json!(["a", "b"]), json!(["c", "d"]), json!(["c", "d"])),
            (json!({"a":"b"}), json!(["c"]), json!(["c"])),
            (json!({"a":"foo"}), json!(null), json!(null)),
            (json!({"a":"foo"}), json!("bar"), json!("bar")),
            (json!({"e":null}), json!({"a":1}), json!({"e":null,"a":1})),
            (json!([1, 2]), json!({"a":"b","c":null}), json!({"a":"b"})),
            (
                json!({}),
                json!({"a":{"bb":{"ccc":null}}}),
                json!({"a":{"bb":{}}}),
            ),
        ];
        for (mut target, patch, want) in cases {
            super::merge_patch(&mut target, &patch);
            assert_eq!(target, want, "patch {patch}");
        }
    }
}
