//! Gemini's front door: `POST /v1beta/models/{model}:generateContent` and `:streamGenerateContent`
//! (server-sent events, as `alt=sse` asks), so Gemini clients reach any model behind Switchyard. The
//! translation is `protocols::gemini`. The key comes in `x-goog-api-key` (or `?key=`); errors, from any
//! layer, leave in Google's shape (the router's error layer).

use std::sync::Arc;

use axum::Extension;
use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use http::{HeaderMap, HeaderValue};
use tokio::time::Instant;

use super::chat::serve_chat;
use super::observe::RequestId;
use super::{GatewayError, body};
use crate::app::AppState;
use crate::protocols::gemini::inbound::{Gemini, to_chat};
use crate::protocols::gemini::wire::GenerateRequest;
use crate::tenancy::ActiveKey;

/// `POST /v1beta/models/{model}:{generateContent|streamGenerateContent}`.
pub async fn generate(
    State(state): State<Arc<AppState>>,
    Extension(request_id): Extension<RequestId>,
    key: Option<Extension<Arc<ActiveKey>>>,
    Path(target): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, GatewayError> {
    let started = Instant::now();
    let (model, action) =
        target.rsplit_once(':').ok_or_else(|| GatewayError::not_found(format!("No such method: {target}")))?;
    let stream = match action {
        "generateContent" => false,
        "streamGenerateContent" => true,
        other => return Err(GatewayError::not_found(format!("Method '{other}' is not supported."))),
    };
    let model = model.strip_prefix("models/").unwrap_or(model).to_owned();
    let req: GenerateRequest = body::read_json(&headers, body, state.body_limits).await?;
    let chat = to_chat(model.clone(), stream, req)?;
    let dialect = Gemini { model };
    serve_chat(&state, &request_id, key.map(|Extension(k)| k), chat, started, Box::new(dialect), &headers).await
}

/// A key in `?key=` is taken as `x-goog-api-key`, as Google's API allows.
pub async fn key_from_query(mut req: Request, next: Next) -> Response {
    let from_query =
        req.uri().query().and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("key=")).map(|k| k.to_owned()));
    if let Some(key) = from_query
        && !req.headers().contains_key("x-goog-api-key")
        && let Ok(mut v) = HeaderValue::from_str(&key)
    {
        v.set_sensitive(true);
        req.headers_mut().insert("x-goog-api-key", v);
    }
    next.run(req).await
}
