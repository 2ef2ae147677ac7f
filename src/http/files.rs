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
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt};
use http::{HeaderMap, HeaderValue, Method};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use tokio::time::Instant;

use super::GatewayError;
use super::observe::RequestId;
use crate::app::AppState;
use crate::protocols::ForwardBody;
use crate::providers::{Provider, exec};
use crate::store::StoreError;
use crate::store::objects::ObjectKind;
use crate::tenancy::ActiveKey;
use crate::usage::{Outcome, Prices, UsageGuard};

/// The largest JSON answer read whole (a list of batches, a file's object).
const MAX_ANSWER: usize = 16 * 1024 * 1024;
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

fn provider(state: &AppState, name: Option<&str>) -> Result<Arc<Provider>, GatewayError> {
    let live = state.live();
    let name = name.unwrap_or(&live.config.files.provider);
    live.catalog.provider(name).cloned().ok_or_else(|| {
        GatewayError::provider_unavailable(&format!(
            "Files and batches go to provider \"{name}\", which is not configured (set [files] provider)."
        ))
    })
}

/// One call to the provider; its 2xx answer as it arrives.
async fn call(
    provider: &Provider,
    method: Method,
    path: &str,
    content: Option<(HeaderValue, Option<u64>, ForwardBody)>,
) -> Result<exec::RawStream, GatewayError> {
    let deadline = Instant::now() + provider.timeouts.total;
    let (content_type, len, body) = match content {
        Some((t, len, body)) => (Some(t), len, body),
        None => (None, None, ForwardBody::Empty),
    };
    exec::forward(
        provider,
        &provider.timeouts,
        |ep| {
            let mut req = provider.adapter().forward_request(method, path, content_type, body, ep)?;
            if let Some(len) = len {
                req.headers.insert(http::header::CONTENT_LENGTH, len.into());
            }
            Ok(req)
        },
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
    content: Option<(HeaderValue, Option<u64>, ForwardBody)>,
) -> Result<Value, GatewayError> {
    let body = call(provider, method, path, content).await?;
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

/// The id of an object the provider made, and its JSON as text.
fn made(v: &Value) -> Result<(&str, String), GatewayError> {
    let id = v.get("id").and_then(Value::as_str).filter(|id| !id.is_empty()).ok_or_else(|| {
        GatewayError::from_provider(&crate::providers::ProviderError::new(
            crate::providers::ErrorKind::InvalidResponse,
            "the provider's answer names no id",
        ))
    })?;
    Ok((id, v.to_string()))
}

/// The provider of `scope`'s object `id`, or the 404 a stranger gets.
async fn owned(state: &AppState, kind: ObjectKind, id: &str, scope: &str) -> Result<Arc<Provider>, GatewayError> {
    match state.store.owned_object(kind, id, scope).await.map_err(store_failed)? {
        Some(name) => provider(state, Some(&name)),
        None => Err(not_found(kind, id)),
    }
}

/// A path segment from a caller's id (ids go into the provider's URL).
fn segment(id: &str) -> String {
    crate::protocols::path_segment(id)
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
    let (limit, idle) = {
        let live = state.live();
        (live.config.server.upload_limit_bytes, live.body_limits.read_timeout)
    };
    let upload = super::upload::read(&headers, body, limit, idle).await?;
    if !upload.has_file("file") {
        return Err(GatewayError::invalid_value("'file' is required: the file to upload.", "file"));
    }
    if upload.text("purpose").is_none_or(|p| p.trim().is_empty()) {
        return Err(GatewayError::invalid_value("'purpose' is required (batch, fine-tune, assistants, …).", "purpose"));
    }
    let provider = provider(&state, None)?;
    let mut usage = ledger(&state, &request_id, &key, "files");
    usage.set_served("", &provider.name, Prices::default());
    let (content_type, len, body) = upload.body(None).map_err(|e| {
        tracing::error!(error = %e, "a spooled upload could not be read back");
        GatewayError::internal()
    })?;
    let answer = match call_json(&provider, Method::POST, "files", Some((content_type, Some(len), body))).await {
        Ok(a) => a,
        Err(e) => {
            usage.finish(Outcome::Failed, e.status.as_u16(), e.code.as_deref().map(str::to_owned));
            return Err(e);
        }
    };
    let (scope, key_id) = owner(&key);
    let (id, object) = made(&answer)?;
    let now = crate::clock::now_ms();
    state
        .store
        .record_object(ObjectKind::File, &provider.name, id, scope, key_id, now, &object)
        .await
        .map_err(store_failed)?;
    usage.finish(Outcome::Completed, 200, None);
    Ok(json_response(&answer))
}

#[derive(Debug, Deserialize)]
pub struct ListQuery {
    after: Option<String>,
    limit: Option<i64>,
    purpose: Option<String>,
}

/// `GET /v1/files`: the caller's files, newest first (`limit` 1-10000, default 10000; `after` an id).
pub async fn list_files(
    State(state): State<Arc<AppState>>,
    key: Option<Extension<Arc<ActiveKey>>>,
    Query(q): Query<ListQuery>,
) -> Result<Response, GatewayError> {
    let limit = q.limit.unwrap_or(10_000);
    if !(1..=10_000).contains(&limit) {
        return Err(GatewayError::invalid_value("'limit' must be from 1 to 10000.", "limit"));
    }
    let (scope, _) = owner(&key);
    let rows = state
        .store
        .owned_objects(ObjectKind::File, scope, q.after.as_deref(), limit + 1)
        .await
        .map_err(store_failed)?;
    let has_more = rows.len() as i64 > limit;
    let data: Vec<Value> = rows
        .iter()
        .take(limit as usize)
        .filter_map(|r| serde_json::from_str::<Value>(&r.object).ok())
        .filter(|f| q.purpose.as_deref().is_none_or(|p| f.get("purpose").and_then(Value::as_str) == Some(p)))
        .collect();
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
    let answer = call_json(&provider, Method::GET, &format!("files/{}", segment(&id)), None).await?;
    Ok(json_response(&answer))
}

/// `GET /v1/files/{id}/content`: the file's bytes as the provider sends them.
pub async fn file_content(
    State(state): State<Arc<AppState>>,
    key: Option<Extension<Arc<ActiveKey>>>,
    Path(id): Path<String>,
) -> Result<Response, GatewayError> {
    let provider = owned(&state, ObjectKind::File, &id, owner(&key).0).await?;
    let raw = call(&provider, Method::GET, &format!("files/{}/content", segment(&id)), None).await?;
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
    let answer = call_json(&provider, Method::DELETE, &format!("files/{}", segment(&id)), None).await?;
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
    let provider = match state.store.owned_object(ObjectKind::File, input, scope).await.map_err(store_failed)? {
        Some(name) => provider(&state, Some(&name))?,
        None => {
            return Err(GatewayError::not_found(format!("No such File object: {input}"))
                .with_param(Some("input_file_id".into())));
        }
    };
    let mut usage = ledger(&state, &request_id, &key, "batches");
    usage.set_served(endpoint, &provider.name, Prices::default());
    let body = ForwardBody::Whole(Bytes::from(Value::Object(req.clone()).to_string()));
    let content = Some((HeaderValue::from_static("application/json"), None, body));
    let answer = match call_json(&provider, Method::POST, "batches", content).await {
        Ok(a) => a,
        Err(e) => {
            usage.finish(Outcome::Failed, e.status.as_u16(), e.code.as_deref().map(str::to_owned));
            return Err(e);
        }
    };
    let (id, object) = made(&answer)?;
    let now = crate::clock::now_ms();
    state
        .store
        .record_object(ObjectKind::Batch, &provider.name, id, scope, key_id, now, &object)
        .await
        .map_err(store_failed)?;
    usage.finish(Outcome::Completed, 200, None);
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
    let batch = call_json(provider, Method::GET, &format!("batches/{}", segment(id)), None).await?;
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
        let object = call_json(provider, Method::GET, &format!("files/{}", segment(file)), None).await?;
        let now = crate::clock::now_ms();
        store
            .record_object(ObjectKind::File, &provider.name, file, scope, key_id, now, &object.to_string())
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
    let content =
        Some((HeaderValue::from_static("application/json"), None, ForwardBody::Whole(Bytes::from_static(b"{}"))));
    let batch = call_json(&provider, Method::POST, &format!("batches/{}/cancel", segment(&id)), content).await?;
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
    let limit = q.limit.unwrap_or(20);
    if !(1..=100).contains(&limit) {
        return Err(GatewayError::invalid_value("'limit' must be from 1 to 100.", "limit"));
    }
    let (scope, key_id) = owner(&key);
    let rows = state
        .store
        .owned_objects(ObjectKind::Batch, scope, q.after.as_deref(), limit + 1)
        .await
        .map_err(store_failed)?;
    let has_more = rows.len() as i64 > limit;
    let state = &state;
    let data: Vec<Value> = futures_util::stream::iter(rows.into_iter().take(limit as usize))
        .map(|row| async move {
            let provider = provider(state, Some(&row.provider))?;
            read_batch(state, &provider, &row.id, scope, key_id).await
        })
        .buffered(READS_AT_ONCE)
        .try_collect()
        .await?;
    Ok(json_response(&page(data, has_more)))
}
