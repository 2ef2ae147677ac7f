//! `/v1/files` and `/v1/batches`, passed to the provider `[files] provider` names (an OpenAI-compatible
//! one), each file and batch owned by the organisation whose key made it. The upstream account is
//! shared, so the gateway keeps its own table of who owns what (`store::objects`): a file or batch
//! another organisation made is answered exactly like one that does not exist (404), whether it is read,
//! downloaded, deleted, cancelled or named as a batch's input. A batch's output and error files become
//! its owner's when the batch is read. Files are listed from the gateway's table (a file does not change
//! once made); batches are read again from the provider, as their status moves.
//!
//! Uploads are multipart and spooled (`http::upload`), never held in memory. An upload and a batch
//! leave a ledger row each (no tokens: a batch's work is done and billed upstream, not here).

use std::sync::Arc;

use axum::Extension;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::StreamExt;
use http::{HeaderMap, HeaderValue, Method};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use tokio::time::Instant;

use super::GatewayError;
use super::body::Query;
use super::observe::RequestId;
use crate::app::AppState;
use crate::protocols::{ForwardBody, path_segment};
use crate::providers::{Provider, exec};
use crate::store::StoreError;
use crate::store::objects::ObjectKind;
use crate::tenancy::ActiveKey;
use crate::usage::{Outcome, Prices, UsageGuard};

/// The largest JSON answer read whole (a list of batches, a file's object).
const MAX_ANSWER: usize = 16 * 1024 * 1024;
/// The longest a file's download may run.
const DOWNLOAD_DEADLINE: std::time::Duration = std::time::Duration::from_secs(6 * 3600);
/// Batches read from the provider at once when listing.
const READS_AT_ONCE: usize = 8;

/// Who is asking: the organisation ('' for the master key) and the key ('' likewise).
fn owner(key: &Option<Extension<Arc<ActiveKey>>>) -> (&str, &str) {
    key.as_deref().map_or(("", ""), |k| (k.organization_id.as_str(), k.id.as_str()))
}

fn store_failed(e: StoreError) -> GatewayError {
    tracing::error!(error = %e, "the table of files and batches cannot be reached");
    GatewayError::database_unavailable()
}

fn not_found(kind: ObjectKind, id: &str) -> GatewayError {
    let what = if kind == ObjectKind::File { "File" } else { "Batch" };
    GatewayError::not_found(format!("No such {what} object: {id}"))
}

/// The caller's organisation may not send its data to `provider` (blocked providers, allowed regions).
fn permitted(key: &Option<Extension<Arc<ActiveKey>>>, provider: &Provider) -> Result<(), GatewayError> {
    let Some(k) = key.as_deref() else { return Ok(()) };
    // A provider that names no region is global, as its models are (`routing::catalog`).
    let region = provider.region.as_deref().unwrap_or(crate::config::GLOBAL_REGION);
    match k.caller.excludes_provider(&provider.name, region) {
        Some(why) => {
            Err(GatewayError::forbidden(format!("Files and batches go to provider \"{}\": {why}.", provider.name)))
        }
        None => Ok(()),
    }
}

fn provider(state: &AppState, name: Option<&str>) -> Result<Arc<Provider>, GatewayError> {
    let live = state.live();
    let name = name.unwrap_or(&live.config.files.provider);
    live.catalog.provider(name).cloned().ok_or_else(|| {
        GatewayError::provider_unavailable(&format!(
            "Files and batches go to provider \"{name}\", which is not configured (set [files] provider)."
        ))
    })
}

/// One call to the provider, within `total`; its 2xx answer as it arrives.
async fn call(
    provider: &Provider,
    method: Method,
    path: &str,
    content: Option<(HeaderValue, ForwardBody)>,
    total: std::time::Duration,
) -> Result<exec::RawStream, GatewayError> {
    let deadline = Instant::now() + total;
    let (content_type, body) = content.map_or((None, ForwardBody::Empty), |(t, body)| (Some(t), body));
    exec::forward(
        provider,
        &provider.timeouts,
        |ep| provider.adapter().forward_request(method, path, content_type, body, ep),
        deadline,
    )
    .await
    .map_err(|e| GatewayError::from_provider(&e))
}

/// One call whose answer is a JSON object.
async fn call_json(
    provider: &Provider,
    method: Method,
    path: &str,
    content: Option<(HeaderValue, ForwardBody)>,
) -> Result<Value, GatewayError> {
    let body = call(provider, method, path, content, provider.timeouts.total).await?;
    let body = body.read_all(MAX_ANSWER).await.map_err(|e| GatewayError::from_provider(&e))?;
    serde_json::from_slice::<Value>(&body).ok().filter(Value::is_object).ok_or_else(|| {
        GatewayError::from_provider(&crate::providers::ProviderError::new(
            crate::providers::ErrorKind::InvalidResponse,
            "the provider's answer is not a JSON object",
        ))
    })
}

fn json_response(v: &Value) -> Response {
    ([(http::header::CONTENT_TYPE, "application/json")], v.to_string()).into_response()
}

/// A ledger row for a call that made something upstream.
fn ledger(state: &AppState, request_id: &RequestId, key: &Option<Extension<Arc<ActiveKey>>>, what: &str) -> UsageGuard {
    let mut usage = UsageGuard::for_request(
        state.usage.clone(),
        &request_id.ledger_id,
        request_id.client_id.as_deref(),
        what,
        false,
        0,
        Instant::now().into_std(),
    );
    if let Some(k) = key.as_deref() {
        usage.set_caller(&k.organization_id, &k.id);
    }
    usage
}

/// Makes an object upstream and records its owner, carried to the end even if the caller leaves (an
/// object nobody owns could be neither read nor deleted by anyone); the ledger row says how it went.
/// When the owner cannot be recorded, the object is deleted (a file) or cancelled (a batch) again.
#[allow(clippy::too_many_arguments)]
async fn make(
    state: Arc<AppState>,
    provider: Arc<Provider>,
    kind: ObjectKind,
    path: &'static str,
    content: (HeaderValue, ForwardBody),
    scope: String,
    key_id: String,
    usage: UsageGuard,
) -> Result<Value, GatewayError> {
    let task = tokio::spawn(async move {
        let answer = match call_json(&provider, Method::POST, path, Some(content)).await {
            Ok(a) => a,
            Err(e) => {
                usage.finish(Outcome::Failed, e.status.as_u16(), e.code.as_deref().map(str::to_owned));
                return Err(e);
            }
        };
        let Some(id) = answer.get("id").and_then(Value::as_str).filter(|id| !id.is_empty()) else {
            usage.finish(Outcome::Failed, 502, Some("invalid_response".into()));
            return Err(GatewayError::from_provider(&crate::providers::ProviderError::new(
                crate::providers::ErrorKind::InvalidResponse,
                "the provider's answer names no id",
            )));
        };
        let recorded = state
            .store
            .record_object(
                kind,
                &provider.name,
                id,
                &scope,
                &key_id,
                crate::clock::now_ms(),
                &answer.to_string(),
                purpose_of(&answer),
            )
            .await;
        if let Err(e) = recorded {
            usage.finish(Outcome::Failed, 503, Some("database_unavailable".into()));
            let undo = match kind {
                ObjectKind::File => delete_upstream(&provider, id).await,
                ObjectKind::Batch => cancel_upstream(&provider, id).await,
            };
            if undo.is_err() {
                tracing::error!(provider = %provider.name, id, "an object whose owner could not be recorded is left upstream");
            }
            return Err(store_failed(e));
        }
        usage.finish(Outcome::Completed, 200, None);
        Ok(answer)
    });
    task.await.map_err(|_| GatewayError::internal())?
}

/// A file's purpose as its object says ('' for a batch).
fn purpose_of(object: &Value) -> &str {
    object.get("purpose").and_then(Value::as_str).unwrap_or_default()
}

/// `after` must name one of the caller's own objects of this kind.
async fn check_after(state: &AppState, kind: ObjectKind, after: Option<&str>, scope: &str) -> Result<(), GatewayError> {
    let Some(after) = after else { return Ok(()) };
    match state.store.owned_object(kind, after, scope).await.map_err(store_failed)? {
        Some(_) => Ok(()),
        None => Err(GatewayError::invalid_value(format!("'after' names no object of yours: {after}"), "after")),
    }
}

/// `DELETE files/{id}` at the provider.
async fn delete_upstream(provider: &Provider, id: &str) -> Result<Value, GatewayError> {
    call_json(provider, Method::DELETE, &format!("files/{}", path_segment(id)), None).await
}

/// `POST batches/{id}/cancel` at the provider.
async fn cancel_upstream(provider: &Provider, id: &str) -> Result<Value, GatewayError> {
    let path = format!("batches/{}/cancel", path_segment(id));
    call_json(provider, Method::POST, &path, Some(json_body(Bytes::from_static(b"{}")))).await
}

fn json_body(body: Bytes) -> (HeaderValue, ForwardBody) {
    (HeaderValue::from_static("application/json"), ForwardBody::Whole(body))
}

/// The provider of `scope`'s object `id`, or the 404 a stranger gets.
async fn owned(state: &AppState, kind: ObjectKind, id: &str, scope: &str) -> Result<Arc<Provider>, GatewayError> {
    match state.store.owned_object(kind, id, scope).await.map_err(store_failed)? {
        Some(name) => provider(state, Some(&name)),
        None => Err(not_found(kind, id)),
    }
}

// --- files ---

/// `POST /v1/files`: a multipart upload (`file`, `purpose`), sent on from the spool.
pub async fn upload_file(
    State(state): State<Arc<AppState>>,
    Extension(request_id): Extension<RequestId>,
    key: Option<Extension<Arc<ActiveKey>>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, GatewayError> {
    let upload = super::upload::read(&headers, body, super::upload::Limits::of(&state)).await?;
    if !upload.has_file("file") {
        return Err(GatewayError::invalid_value("'file' is required: the file to upload.", "file"));
    }
    if upload.text("purpose").is_none_or(|p| p.trim().is_empty()) {
        return Err(GatewayError::invalid_value("'purpose' is required (batch, fine-tune, assistants, …).", "purpose"));
    }
    let provider = provider(&state, None)?;
    permitted(&key, &provider)?;
    let (content_type, body) = upload.body(None).map_err(|e| {
        tracing::error!(error = %e, "a spooled upload could not be read back");
        GatewayError::internal()
    })?;
    let mut usage = ledger(&state, &request_id, &key, "files");
    usage.set_served("", &provider.name, Prices::default());
    let (scope, key_id) = owner(&key);
    let content = (content_type, body);
    let answer =
        make(state.clone(), provider, ObjectKind::File, "files", content, scope.into(), key_id.into(), usage).await?;
    Ok(json_response(&answer))
}

#[derive(Debug, Deserialize)]
pub struct ListQuery {
    after: Option<String>,
    limit: Option<i64>,
    purpose: Option<String>,
}

/// One page of `scope`'s objects (`limit` from 1 to `max`, `default` when not given; `after` one of
/// theirs), and whether more follow.
async fn owned_page(
    state: &AppState,
    kind: ObjectKind,
    scope: &str,
    q: &ListQuery,
    default: i64,
    max: i64,
) -> Result<(Vec<crate::store::objects::ObjectRow>, bool), GatewayError> {
    let limit = q.limit.unwrap_or(default);
    if !(1..=max).contains(&limit) {
        return Err(GatewayError::invalid_value(format!("'limit' must be from 1 to {max}."), "limit"));
    }
    check_after(state, kind, q.after.as_deref(), scope).await?;
    let purpose = q.purpose.as_deref().filter(|_| kind == ObjectKind::File);
    let mut rows =
        state.store.owned_objects(kind, scope, q.after.as_deref(), purpose, limit + 1).await.map_err(store_failed)?;
    let has_more = rows.len() as i64 > limit;
    rows.truncate(limit as usize);
    Ok((rows, has_more))
}

/// `GET /v1/files`: the caller's files, newest first (`limit` 1-10000, default 10000; `after` an id).
pub async fn list_files(
    State(state): State<Arc<AppState>>,
    key: Option<Extension<Arc<ActiveKey>>>,
    Query(q): Query<ListQuery>,
) -> Result<Response, GatewayError> {
    let (scope, _) = owner(&key);
    let (rows, has_more) = owned_page(&state, ObjectKind::File, scope, &q, 10_000, 10_000).await?;
    let data: Vec<Value> = rows.iter().filter_map(|r| serde_json::from_str::<Value>(&r.object).ok()).collect();
    Ok(json_response(&page(data, has_more)))
}

fn page(data: Vec<Value>, has_more: bool) -> Value {
    let id = |v: Option<&Value>| v.and_then(|v| v.get("id")).cloned().unwrap_or(Value::Null);
    json!({"object": "list", "first_id": id(data.first()), "last_id": id(data.last()), "has_more": has_more, "data": data})
}

/// `GET /v1/files/{id}`.
pub async fn retrieve_file(
    State(state): State<Arc<AppState>>,
    key: Option<Extension<Arc<ActiveKey>>>,
    Path(id): Path<String>,
) -> Result<Response, GatewayError> {
    let provider = owned(&state, ObjectKind::File, &id, owner(&key).0).await?;
    let answer = call_json(&provider, Method::GET, &format!("files/{}", path_segment(&id)), None).await?;
    Ok(json_response(&answer))
}

/// `GET /v1/files/{id}/content`: the file's bytes as the provider sends them.
pub async fn file_content(
    State(state): State<Arc<AppState>>,
    key: Option<Extension<Arc<ActiveKey>>>,
    Path(id): Path<String>,
) -> Result<Response, GatewayError> {
    let provider = owned(&state, ObjectKind::File, &id, owner(&key).0).await?;
    // A batch's output may be large: bounded by the idle timeout between pieces, not the provider's total.
    let path = format!("files/{}/content", path_segment(&id));
    let raw = call(&provider, Method::GET, &path, None, DOWNLOAD_DEADLINE).await?;
    let content_type = raw.content_type.clone().unwrap_or_else(|| HeaderValue::from_static("application/octet-stream"));
    let pieces = futures_util::stream::try_unfold(raw, |mut raw| async move {
        Ok::<_, std::io::Error>(raw.next().await.map_err(|e| std::io::Error::other(e.message))?.map(|p| (p, raw)))
    });
    let mut response = Response::new(Body::from_stream(pieces));
    response.headers_mut().insert(http::header::CONTENT_TYPE, content_type);
    Ok(response)
}

/// `DELETE /v1/files/{id}`.
pub async fn delete_file(
    State(state): State<Arc<AppState>>,
    key: Option<Extension<Arc<ActiveKey>>>,
    Path(id): Path<String>,
) -> Result<Response, GatewayError> {
    let scope = owner(&key).0;
    let provider = owned(&state, ObjectKind::File, &id, scope).await?;
    let answer = match delete_upstream(&provider, &id).await {
        // Gone upstream already (expired): gone here too.
        Err(e) if e.status == http::StatusCode::NOT_FOUND => {
            state.store.forget_object(ObjectKind::File, &id, scope).await.map_err(store_failed)?;
            return Err(e);
        }
        other => other?,
    };
    if answer.get("deleted").and_then(Value::as_bool) == Some(true) {
        state.store.forget_object(ObjectKind::File, &id, scope).await.map_err(store_failed)?;
    }
    Ok(json_response(&answer))
}

// --- batches ---

/// `POST /v1/batches`: a batch over one of the caller's own files, run by the provider that keeps it.
pub async fn create_batch(
    State(state): State<Arc<AppState>>,
    Extension(request_id): Extension<RequestId>,
    key: Option<Extension<Arc<ActiveKey>>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, GatewayError> {
    let req: Map<String, Value> = super::body::read_json(&headers, body, state.live().body_limits).await?;
    let text = |field: &str| -> Result<&str, GatewayError> {
        req.get(field)
            .and_then(Value::as_str)
            .filter(|s| !s.trim().is_empty())
            .ok_or_else(|| GatewayError::invalid_value(format!("'{field}' is required and must be a string."), field))
    };
    let input = text("input_file_id")?;
    let endpoint = text("endpoint")?;
    text("completion_window")?;
    let (scope, key_id) = owner(&key);
    let provider = owned(&state, ObjectKind::File, input, scope).await.map_err(|e| match e.status {
        http::StatusCode::NOT_FOUND => e.with_param(Some("input_file_id".into())),
        _ => e,
    })?;
    permitted(&key, &provider)?;
    // A batch's requests run upstream, out of the gateway's sight: a key the gateway holds to a list of
    // models or to a budget could not be held to them there.
    if let Some(k) = key.as_deref()
        && (k.caller.allowed_models.is_some() || k.limits.budget_micros.is_some())
    {
        return Err(GatewayError::forbidden(
            "This key is limited to some models or to a budget, which a batch's requests (run by the \
             provider, not the gateway) could not be held to; use a key without those limits.",
        ));
    }
    let mut usage = ledger(&state, &request_id, &key, "batches");
    usage.set_served(endpoint, &provider.name, Prices::default());
    let content = json_body(Bytes::from(Value::Object(req.clone()).to_string()));
    let answer =
        make(state.clone(), provider, ObjectKind::Batch, "batches", content, scope.into(), key_id.into(), usage)
            .await?;
    Ok(json_response(&answer))
}

/// A batch as the provider now says it is; its output and error files become its owner's.
async fn read_batch(
    state: &AppState,
    provider: &Provider,
    id: &str,
    scope: &str,
    key_id: &str,
) -> Result<Value, GatewayError> {
    let batch = call_json(provider, Method::GET, &format!("batches/{}", path_segment(id)), None).await?;
    adopt(state, provider, &batch, scope, key_id).await?;
    Ok(batch)
}

async fn adopt(
    state: &AppState,
    provider: &Provider,
    batch: &Value,
    scope: &str,
    key_id: &str,
) -> Result<(), GatewayError> {
    let store = &state.store;
    if let Some(id) = batch.get("id").and_then(Value::as_str) {
        store.update_object(ObjectKind::Batch, &provider.name, id, &batch.to_string()).await.map_err(store_failed)?;
    }
    for field in ["output_file_id", "error_file_id"] {
        let Some(file) = batch.get(field).and_then(Value::as_str).filter(|f| !f.is_empty()) else { continue };
        if store.owned_object(ObjectKind::File, file, scope).await.map_err(store_failed)?.is_some() {
            continue;
        }
        let object = call_json(provider, Method::GET, &format!("files/{}", path_segment(file)), None).await?;
        let now = crate::clock::now_ms();
        store
            .record_object(
                ObjectKind::File,
                &provider.name,
                file,
                scope,
                key_id,
                now,
                &object.to_string(),
                purpose_of(&object),
            )
            .await
            .map_err(store_failed)?;
    }
    Ok(())
}

/// `GET /v1/batches/{id}`.
pub async fn retrieve_batch(
    State(state): State<Arc<AppState>>,
    key: Option<Extension<Arc<ActiveKey>>>,
    Path(id): Path<String>,
) -> Result<Response, GatewayError> {
    let (scope, key_id) = owner(&key);
    let provider = owned(&state, ObjectKind::Batch, &id, scope).await?;
    Ok(json_response(&read_batch(&state, &provider, &id, scope, key_id).await?))
}

/// `POST /v1/batches/{id}/cancel`.
pub async fn cancel_batch(
    State(state): State<Arc<AppState>>,
    key: Option<Extension<Arc<ActiveKey>>>,
    Path(id): Path<String>,
) -> Result<Response, GatewayError> {
    let (scope, key_id) = owner(&key);
    let provider = owned(&state, ObjectKind::Batch, &id, scope).await?;
    let batch = cancel_upstream(&provider, &id).await?;
    adopt(&state, &provider, &batch, scope, key_id).await?;
    Ok(json_response(&batch))
}

/// `GET /v1/batches`: the caller's batches, newest first (`limit` 1-100, default 20; `after` an id),
/// each read again from its provider.
pub async fn list_batches(
    State(state): State<Arc<AppState>>,
    key: Option<Extension<Arc<ActiveKey>>>,
    Query(q): Query<ListQuery>,
) -> Result<Response, GatewayError> {
    let (scope, key_id) = owner(&key);
    let (rows, has_more) = owned_page(&state, ObjectKind::Batch, scope, &q, 20, 100).await?;
    let state = &state;
    let data: Vec<Value> = futures_util::stream::iter(rows)
        .map(|row| async move {
            // A batch the provider cannot tell about right now is listed as it was last seen.
            let fresh = match provider(state, Some(&row.provider)) {
                Ok(p) => read_batch(state, &p, &row.id, scope, key_id).await.ok(),
                Err(_) => None,
            };
            fresh.unwrap_or_else(|| serde_json::from_str(&row.object).unwrap_or(Value::Null))
        })
        .buffered(READS_AT_ONCE)
        .collect()
        .await;
    Ok(json_response(&page(data, has_more)))
}
