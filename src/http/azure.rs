//! Azure OpenAI's paths, so `AzureOpenAI` clients and LangChain's `AzureChatOpenAI` work unchanged:
//! `POST /openai/deployments/{deployment}/{chat/completions,completions,embeddings}?api-version=…`, with
//! the deployment name as the model string, and `/openai/responses` (Azure serves Responses by resource,
//! the deployment being the body's `model`). The key comes in `api-key` (or `Authorization`). The
//! `api-version` is accepted whatever it is: the wire format is OpenAI's on every version.

use std::sync::Arc;

use axum::Extension;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::response::Response;
use http::{HeaderMap, header};
use serde_json::Value;

use super::observe::RequestId;
use super::{GatewayError, body, chat, completions, embeddings};
use crate::app::AppState;
use crate::tenancy::ActiveKey;

/// The request body with the deployment as its model.
async fn with_model(
    state: &AppState,
    headers: &mut HeaderMap,
    body: Body,
    deployment: &str,
) -> Result<Body, GatewayError> {
    let mut value: Value = body::read_json(headers, body, state.live().body_limits).await?;
    let Some(obj) = value.as_object_mut() else {
        return Err(GatewayError::invalid_body("The request body must be a JSON object.", None));
    };
    obj.insert("model".to_owned(), Value::String(deployment.to_owned()));
    headers.remove(header::CONTENT_LENGTH);
    Ok(Body::from(value.to_string()))
}

/// `POST /openai/deployments/{deployment}/chat/completions`.
pub async fn chat_completions(
    State(state): State<Arc<AppState>>,
    request_id: Extension<RequestId>,
    key: Option<Extension<Arc<ActiveKey>>>,
    Path(deployment): Path<String>,
    mut headers: HeaderMap,
    body: Body,
) -> Result<Response, GatewayError> {
    let body = with_model(&state, &mut headers, body, &deployment).await?;
    chat::create_chat_completion(State(state), request_id, key, headers, body).await
}

/// `POST /openai/deployments/{deployment}/completions`.
pub async fn completions(
    State(state): State<Arc<AppState>>,
    request_id: Extension<RequestId>,
    key: Option<Extension<Arc<ActiveKey>>>,
    Path(deployment): Path<String>,
    mut headers: HeaderMap,
    body: Body,
) -> Result<Response, GatewayError> {
    let body = with_model(&state, &mut headers, body, &deployment).await?;
    completions::create_completion(State(state), request_id, key, headers, body).await
}

/// `POST /openai/deployments/{deployment}/embeddings`.
pub async fn embeddings(
    State(state): State<Arc<AppState>>,
    request_id: Extension<RequestId>,
    key: Option<Extension<Arc<ActiveKey>>>,
    Path(deployment): Path<String>,
    mut headers: HeaderMap,
    body: Body,
) -> Result<Response, GatewayError> {
    let body = with_model(&state, &mut headers, body, &deployment).await?;
    embeddings::create_embeddings(State(state), request_id, key, headers, body).await
}
