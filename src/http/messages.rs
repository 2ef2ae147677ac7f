//! Anthropic's front door: `POST /v1/messages` (and `/v1/messages/count_tokens`), so the Anthropic SDKs
//! and tools built on them reach any model behind Switchyard, Anthropic's or not. To an Anthropic
//! upstream the request passes through as it came (with the caller's `anthropic-version` and
//! `anthropic-beta`), so nothing is lost; to any other, it is translated (`protocols::anthropic`).
//! Errors, from any layer, leave in Anthropic's shape (the router's error layer).

use std::sync::Arc;

use axum::Extension;
use axum::body::Body;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::HeaderMap;
use serde_json::{Value, json};
use tokio::time::Instant;

use super::chat::{ChatDoor, Passthrough, serve_chat};
use super::observe::RequestId;
use super::relay::{self, Relayed};
use super::resume::{Continuable, Progress, add_earlier};
use super::{GatewayError, body};
use crate::app::AppState;
use crate::protocols::anthropic::inbound::{Messages, MessagesEvents, Translated, to_chat};
use crate::protocols::anthropic::native;
use crate::protocols::anthropic::outbound::FORWARDED_HEADERS;
use crate::protocols::anthropic::wire::{MessagesRequest, StreamEvent, TokenCount};
use crate::protocols::{ChunkTranslator, Native, StreamEncoder, StreamMapper};
use crate::providers::ProviderError;
use crate::routing::{Caller, RequestFeatures};
use crate::schema::Usage;
use crate::tenancy::ActiveKey;
use crate::usage::{Prices, Segment, UsageGuard};

/// `POST /v1/messages`.
pub async fn create_message(
    State(state): State<Arc<AppState>>,
    Extension(request_id): Extension<RequestId>,
    key: Option<Extension<Arc<ActiveKey>>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, GatewayError> {
    let started = Instant::now();
    let req: MessagesRequest = body::read_json(&headers, body, state.live().body_limits).await?;
    let Translated { chat, problem } = to_chat(&req)?;
    let mut forwarded = HeaderMap::new();
    for name in FORWARDED_HEADERS {
        if let Some(v) = headers.get(*name) {
            forwarded.insert(*name, v.clone());
        }
    }
    let door = ChatDoor {
        dialect: Box::new(Messages { model: chat.model.clone() }),
        native: Some(MessagesThrough { req, forwarded }),
        problem,
    };
    serve_chat(&state, &request_id, key.map(|Extension(k)| k), chat, started, door, &headers).await
}

/// A Messages request passed through to an Anthropic upstream as it came.
struct MessagesThrough {
    req: MessagesRequest,
    forwarded: HeaderMap,
}

impl Passthrough for MessagesThrough {
    type Event = StreamEvent;

    fn protocol(&self) -> Native {
        Native::Messages
    }

    fn body(&self, model: &str) -> Bytes {
        native::body(&self.req, model)
    }

    fn forwarded(&self) -> &HeaderMap {
        &self.forwarded
    }

    fn mapper(&self) -> Box<dyn StreamMapper<StreamEvent>> {
        Box::new(native::NativeMapper)
    }

    fn whole(
        &self,
        body: &[u8],
        public_model: &str,
        prices: Prices,
    ) -> Result<(Vec<u8>, Option<Usage>), ProviderError> {
        let (mut message, usage) = native::whole(body, public_model)?;
        if let Some(micros) = prices.cost_micros(usage.prompt_tokens, usage.cached_tokens(), usage.completion_tokens) {
            relay::put_cost(&mut message.usage.extra, micros);
        }
        Ok((serde_json::to_vec(&message).unwrap_or_default(), Some(usage)))
    }

    fn encoder(&self) -> Box<dyn StreamEncoder<StreamEvent>> {
        Box::new(native::NativeStream)
    }
}

impl Relayed for StreamEvent {
    fn prepare(&mut self, public_model: &str, prices: Prices, usage: &mut UsageGuard) {
        if let Some(message) = &mut self.message {
            message.model = public_model.to_owned();
        }
        if let Some(d) = &self.delta {
            let text = [&d.text, &d.partial_json, &d.thinking].iter().filter_map(|t| t.as_ref()).map(String::len).sum();
            usage.streamed_text(text);
        }
        if let Some(u) = native::usage_after(self, usage.reported()) {
            if self.kind != "message_delta" {
                // `message_start` counts the input; the output comes with `message_delta`.
                usage.partial_usage(&u);
                return;
            }
            if let (Some(reported), Some(micros)) =
                (self.usage.as_mut(), prices.cost_micros(u.prompt_tokens, u.cached_tokens(), u.completion_tokens))
            {
                relay::put_cost(&mut reported.extra, micros);
            }
            usage.provider_usage(&u);
        }
    }
}

/// `POST /v1/messages/count_tokens`: the prompt's tokens as Switchyard counts them (o200k), for clients
/// that size their requests with it.
pub async fn count_tokens(
    State(state): State<Arc<AppState>>,
    key: Option<Extension<Arc<ActiveKey>>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, GatewayError> {
    let mut value: Value = body::read_json(&headers, body, state.live().body_limits).await?;
    // The endpoint takes no max_tokens; the translation needs one.
    if let Some(obj) = value.as_object_mut() {
        obj.entry("max_tokens").or_insert(json!(1));
    }
    let req: MessagesRequest = serde_json::from_value(value)
        .map_err(|e| GatewayError::invalid_body(format!("Invalid request body: {e}"), None))?;
    let chat = to_chat(&req)?.chat;
    let features = RequestFeatures::for_chat(&chat)
        .map_err(|field| GatewayError::invalid_value(format!("'{field}' has an invalid value."), &field))?;
    // The model must exist for the caller, as Anthropic's endpoint requires.
    let caller = key.as_ref().map_or_else(Caller::default, |Extension(k)| k.caller.clone());
    state.live().catalog.route(&chat.model, &caller, &features).await?;
    Ok(axum::Json(TokenCount { input_tokens: features.prompt_tokens().await }).into_response())
}

/// Where an Anthropic stream stands beyond its text.
#[derive(Debug, Default)]
pub(super) struct BlockMark {
    /// The index of the text block still open, if one is.
    open_text: Option<u32>,
    /// The index the next block takes.
    next_index: u32,
}

impl Continuable for StreamEvent {
    type Mark = BlockMark;

    fn note(&self, p: &mut Progress, mark: &mut BlockMark) {
        match self.kind.as_str() {
            "content_block_start" => {
                let index = self.index.unwrap_or(mark.next_index);
                mark.next_index = mark.next_index.max(index + 1);
                mark.open_text = None;
                match self.content_block.as_ref().map(|b| b.kind.as_str()) {
                    Some("text") => mark.open_text = Some(index),
                    Some("thinking" | "redacted_thinking") => p.reasoning_open = true,
                    _ => p.blocked = Some("a tool call was being streamed"),
                }
            }
            "content_block_delta" => {
                if let Some(text) = self.delta.as_ref().and_then(|d| d.text.as_deref()) {
                    p.sent.push_str(text);
                }
            }
            "content_block_stop" => {
                mark.open_text = None;
                p.reasoning_open = false;
            }
            "message_delta"
                if self.delta.as_ref().is_some_and(|d| d.stop_reason.as_ref().is_some_and(Option::is_some)) =>
            {
                p.finished = true;
            }
            "message_stop" => p.finished = true,
            _ => {}
        }
    }

    fn translator(mark: &BlockMark) -> Box<dyn ChunkTranslator<StreamEvent>> {
        Box::new(MessagesEvents::continuing(mark.open_text, mark.next_index))
    }

    fn as_first(&mut self, _mark: &BlockMark, earlier: &[Segment]) {
        // The continuation's events carry no id: only its final count changes.
        if self.kind == "message_delta"
            && let Some(u) = &mut self.usage
        {
            add_earlier(earlier, &mut u.input_tokens, &mut u.output_tokens, &mut u.extra);
        }
    }
}
