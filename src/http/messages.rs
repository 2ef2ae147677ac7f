//! Anthropic's front door: `POST /v1/messages` (and `/v1/messages/count_tokens`), so the Anthropic SDKs
//! and tools built on them reach any model behind Switchyard, Anthropic's or not. The translation is
//! `protocols::anthropic`; errors, from any layer, leave in Anthropic's shape (the router's error layer).

use std::sync::Arc;

use axum::Extension;
use axum::body::Body;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use http::HeaderMap;
use serde_json::{Value, json};
use tokio::time::Instant;

use super::chat::serve_chat;
use super::observe::RequestId;
use super::{GatewayError, body};
use crate::app::AppState;
use crate::protocols::anthropic::inbound::{Messages, to_chat};
use crate::protocols::anthropic::wire::{MessagesRequest, TokenCount};
use crate::routing::{Caller, RequestFeatures};
use crate::tenancy::ActiveKey;

/// `POST /v1/messages`.
pub async fn create_message(
    State(state): State<Arc<AppState>>,
    Extension(request_id): Extension<RequestId>,
    key: Option<Extension<Arc<ActiveKey>>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, GatewayError> {
    let started = Instant::now();
    let req: MessagesRequest = body::read_json(&headers, body, state.body_limits).await?;
    let chat = to_chat(req)?;
    let dialect = Messages { model: chat.model.clone() };
    serve_chat(&state, &request_id, key.map(|Extension(k)| k), chat, started, Box::new(dialect), &headers).await
}

/// `POST /v1/messages/count_tokens`: the prompt's tokens as Switchyard counts them (o200k), for clients
/// that size their requests with it.
pub async fn count_tokens(
    State(state): State<Arc<AppState>>,
    key: Option<Extension<Arc<ActiveKey>>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, GatewayError> {
    let mut value: Value = body::read_json(&headers, body, state.body_limits).await?;
    // The endpoint takes no max_tokens; the translation needs one.
    if let Some(obj) = value.as_object_mut() {
        obj.entry("max_tokens").or_insert(json!(1));
    }
    let req: MessagesRequest = serde_json::from_value(value)
        .map_err(|e| GatewayError::invalid_body(format!("Invalid request body: {e}"), None))?;
    let chat = to_chat(req)?;
    let features = RequestFeatures::for_chat(&chat)
        .map_err(|field| GatewayError::invalid_value(format!("'{field}' has an invalid value."), &field))?;
    // The model must exist for the caller, as Anthropic's endpoint requires.
    let caller = key.as_ref().map_or_else(Caller::default, |Extension(k)| k.caller.clone());
    state.catalog.route(&chat.model, &caller, &features).await?;
    Ok(axum::Json(TokenCount { input_tokens: features.prompt_tokens().await }).into_response())
}
