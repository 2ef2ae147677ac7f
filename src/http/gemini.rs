//! Gemini's front door, so Gemini clients reach any model behind Switchyard:
//! `POST /v1beta/models/{model}:generateContent`, `:streamGenerateContent` (server-sent events with
//! `alt=sse`, else Google's default JSON array), `:countTokens`, and `GET /v1beta/models[/{model}]`.
//! To a Gemini upstream the request passes through as it came; to any other it is translated
//! (`protocols::gemini`). The key comes in `x-goog-api-key` (or `?key=`); errors, from any layer, leave
//! in Google's shape (the router's error layer).

use std::sync::Arc;

use axum::Extension;
use axum::body::Body;
use axum::extract::{Path, Query, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Uri};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::time::Instant;

use super::chat::{ChatDoor, Passthrough, serve_chat};
use super::observe::RequestId;
use super::relay::Relayed;
use super::resume::{Continuable, Progress, add_earlier};
use super::{GatewayError, body};
use crate::app::AppState;
use crate::config::Capability;
use crate::protocols::gemini::inbound::{Framing, Gemini, GeminiEvents, Translated, to_chat};
use crate::protocols::gemini::native::{self, NativeStream};
use crate::protocols::gemini::outbound::to_canonical;
use crate::protocols::gemini::wire::{GenerateRequest, GenerateResponse};
use crate::protocols::{ChunkTranslator, Native, StreamEncoder, StreamMapper};
use crate::providers::ProviderError;
use crate::routing::{Caller, ModelEntry, RequestFeatures};
use crate::schema::Usage;
use crate::tenancy::ActiveKey;
use crate::usage::{Prices, Segment, UsageGuard};

/// `POST /v1beta/models/{model}:{generateContent|streamGenerateContent|countTokens}`.
pub async fn generate(
    State(state): State<Arc<AppState>>,
    Extension(request_id): Extension<RequestId>,
    key: Option<Extension<Arc<ActiveKey>>>,
    Path(target): Path<String>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, GatewayError> {
    let started = Instant::now();
    let (model, action) =
        target.rsplit_once(':').ok_or_else(|| GatewayError::not_found(format!("No such method: {target}")))?;
    let model = model.strip_prefix("models/").unwrap_or(model).to_owned();
    let stream = match action {
        "generateContent" => false,
        "streamGenerateContent" => true,
        "countTokens" => return count_tokens(&state, key, model, &headers, body).await,
        other => return Err(GatewayError::not_found(format!("Method '{other}' is not supported."))),
    };
    let framing = if query_has(&uri, "alt", "sse") { Framing::Sse } else { Framing::JsonArray };
    let req: GenerateRequest = body::read_json(&headers, body, state.live().body_limits).await?;
    let Translated { chat, problem } = to_chat(model.clone(), stream, req.clone())?;
    let door = ChatDoor {
        dialect: Box::new(Gemini { model, framing }),
        native: Some(GenerateThrough { req, framing, forwarded: HeaderMap::new() }),
        problem,
    };
    let mut response =
        serve_chat(&state, &request_id, key.map(|Extension(k)| k), chat, started, door, &headers).await?;
    if stream && framing == Framing::JsonArray {
        response.headers_mut().insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    }
    Ok(response)
}

fn query_has(uri: &Uri, key: &str, value: &str) -> bool {
    uri.query().is_some_and(|q| q.split('&').any(|kv| kv.split_once('=') == Some((key, value))))
}

/// A generateContent request passed through to a Gemini upstream as it came.
struct GenerateThrough {
    req: GenerateRequest,
    framing: Framing,
    forwarded: HeaderMap,
}

impl Passthrough for GenerateThrough {
    type Event = GenerateResponse;

    fn protocol(&self) -> Native {
        Native::GenerateContent
    }

    fn body(&self, _model: &str) -> Bytes {
        native::body(&self.req)
    }

    fn forwarded(&self) -> &HeaderMap {
        &self.forwarded
    }

    fn mapper(&self) -> Box<dyn StreamMapper<GenerateResponse>> {
        Box::new(native::NativeMapper)
    }

    fn whole(
        &self,
        body: &[u8],
        public_model: &str,
        prices: Prices,
    ) -> Result<(Vec<u8>, Option<Usage>), ProviderError> {
        let (mut resp, usage) = native::whole(body, public_model)?;
        add_cost(&mut resp, usage.as_ref(), prices);
        Ok((serde_json::to_vec(&resp).unwrap_or_default(), usage))
    }

    fn encoder(&self) -> Box<dyn StreamEncoder<GenerateResponse>> {
        Box::new(NativeStream { framing: self.framing, sent: 0 })
    }
}

/// The gateway's `cost` (USD at catalog prices) beside Gemini's usage.
fn add_cost(resp: &mut GenerateResponse, usage: Option<&Usage>, prices: Prices) {
    if let (Some(meta), Some(u)) = (resp.usage_metadata.as_mut(), usage)
        && let Some(micros) = prices.cost_micros(u.prompt_tokens, u.cached_tokens(), u.completion_tokens)
    {
        super::relay::put_cost(&mut meta.extra, micros);
    }
}

impl Relayed for GenerateResponse {
    fn prepare(&mut self, public_model: &str, prices: Prices, usage: &mut UsageGuard) {
        self.model_version = Some(public_model.to_owned());
        let text: usize = self
            .candidates
            .iter()
            .filter_map(|c| c.content.as_ref())
            .flat_map(|c| &c.parts)
            .filter_map(|p| p.text.as_ref())
            .map(String::len)
            .sum();
        usage.streamed_text(text);
        if let Some(u) = self.usage_metadata.as_ref().map(to_canonical) {
            // Gemini counts so far in every frame; the last one, with the finish reason, is final.
            if crate::protocols::StreamItem::is_final(self) {
                usage.provider_usage(&u);
            } else {
                usage.partial_usage(&u);
            }
            add_cost(self, Some(&u), prices);
        }
    }
}

impl Continuable for GenerateResponse {
    /// The first stream's `responseId`.
    type Mark = Option<String>;

    fn note(&self, p: &mut Progress, id: &mut Option<String>) {
        if id.is_none() {
            id.clone_from(&self.response_id);
        }
        for (i, candidate) in self.candidates.iter().enumerate() {
            if i > 0 || candidate.index.is_some_and(|index| index != 0) {
                p.blocked = Some("several choices");
            }
            for part in candidate.content.iter().flat_map(|c| &c.parts) {
                if part.function_call.is_some() {
                    p.blocked = Some("a tool call was being streamed");
                } else if let Some(text) = part.text.as_deref().filter(|t| !t.is_empty()) {
                    if part.is_thought() {
                        p.reasoning_open = true;
                    } else {
                        p.reasoning_open = false;
                        p.sent.push_str(text);
                    }
                }
            }
            if candidate.finish_reason.is_some() {
                p.finished = true;
            }
        }
    }

    fn translator(id: &Option<String>) -> Box<dyn ChunkTranslator<GenerateResponse>> {
        Box::new(GeminiEvents::continuing(id.clone()))
    }

    fn as_first(&mut self, _id: &Option<String>, earlier: &[Segment]) {
        // Only the last response counts the whole answer (the continuation's earlier ones carry none).
        if crate::protocols::StreamItem::is_final(self)
            && let Some(u) = &mut self.usage_metadata
        {
            add_earlier(earlier, &mut u.prompt_token_count, &mut u.candidates_token_count, &mut u.extra);
            u.total_token_count = u.prompt_token_count + u.candidates_token_count + u.thoughts_token_count;
        }
    }
}

/// `:countTokens`: the prompt's tokens as Switchyard counts them (o200k), for `contents` or a whole
/// `generateContentRequest`.
async fn count_tokens(
    state: &AppState,
    key: Option<Extension<Arc<ActiveKey>>>,
    model: String,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, GatewayError> {
    let mut value: Value = body::read_json(headers, body, state.live().body_limits).await?;
    if let Some(inner) = value.get_mut("generateContentRequest").map(Value::take) {
        value = inner;
    }
    let req: GenerateRequest = serde_json::from_value(value)
        .map_err(|e| GatewayError::invalid_body(format!("Invalid request body: {e}"), None))?;
    let chat = to_chat(model, false, req)?.chat;
    let features = RequestFeatures::for_chat(&chat)
        .map_err(|field| GatewayError::invalid_value(format!("'{field}' has an invalid value."), &field))?;
    // The model must exist for the caller, as Google's endpoint requires.
    let caller = key.as_ref().map_or_else(Caller::default, |Extension(k)| k.caller.clone());
    state.live().catalog.route(&chat.model, &caller, &features).await?;
    let tokens = features.prompt_tokens().await;
    Ok(axum::Json(json!({"totalTokens": tokens, "promptTokensDetails": [{"modality": "TEXT", "tokenCount": tokens}]}))
        .into_response())
}

/// A model in Google's shape.
fn model_object(m: &ModelEntry) -> Value {
    let methods: &[&str] = if m.dedicated_work().is_some() {
        // A rerank, image or speech model generates no content: none of Gemini's methods serve it.
        &[]
    } else if m.has(Capability::Embeddings) && !m.has(Capability::Tools) {
        &["embedContent", "batchEmbedContents"]
    } else {
        &["generateContent", "streamGenerateContent", "countTokens"]
    };
    let mut o = json!({
        "name": format!("models/{}", m.name),
        "version": "001",
        "displayName": m.name,
        "description": m.note.clone().unwrap_or_else(|| format!("{} served through Switchyard ({}).", m.name, m.provider.name)),
        "supportedGenerationMethods": methods,
    });
    if let Some(window) = m.context_window {
        o["inputTokenLimit"] = json!(window);
    }
    if let Some(max) = m.max_output {
        o["outputTokenLimit"] = json!(max);
    }
    o
}

/// The catalog models the calling key may use.
fn visible_models<'a>(live: &'a crate::app::Live, key: &Option<Extension<Arc<ActiveKey>>>) -> Vec<&'a ModelEntry> {
    let caller = key.as_ref().map(|Extension(k)| &k.caller);
    live.catalog.models().iter().filter(|m| caller.is_none_or(|c| c.may_use(m))).map(AsRef::as_ref).collect()
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListQuery {
    page_size: Option<usize>,
    page_token: Option<String>,
}

/// `GET /v1beta/models`: the models the key may use, `pageSize` (default 50, at most 1000) at a time.
pub async fn list_models(
    State(state): State<Arc<AppState>>,
    key: Option<Extension<Arc<ActiveKey>>>,
    Query(q): Query<ListQuery>,
) -> Result<Response, GatewayError> {
    let size = q.page_size.unwrap_or(50).clamp(1, 1000);
    let start = match q.page_token.as_deref() {
        None | Some("") => 0,
        Some(t) => {
            t.parse::<usize>().map_err(|_| GatewayError::invalid_value("pageToken is not valid.", "pageToken"))?
        }
    };
    let live = state.live();
    let models = visible_models(&live, &key);
    let page: Vec<Value> = models.iter().skip(start).take(size).map(|m| model_object(m)).collect();
    let mut body = json!({"models": page});
    let next = start.saturating_add(size);
    if next < models.len() {
        body["nextPageToken"] = json!(next.to_string());
    }
    Ok(axum::Json(body).into_response())
}

/// `GET /v1beta/models/{model}`.
pub async fn get_model(
    State(state): State<Arc<AppState>>,
    key: Option<Extension<Arc<ActiveKey>>>,
    Path(model): Path<String>,
) -> Result<Response, GatewayError> {
    let name = model.strip_prefix("models/").unwrap_or(&model);
    let live = state.live();
    visible_models(&live, &key)
        .into_iter()
        .find(|m| m.name == name)
        .map(|m| axum::Json(model_object(m)).into_response())
        .ok_or_else(|| GatewayError::not_found(format!("models/{name} is not found for API version v1beta.")))
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
