//! Responses passed through to a provider that speaks Responses itself (OpenAI, Azure OpenAI, and the
//! OpenAI-compatible presets that do), so reasoning items, hosted tools and every field survive.
//!
//! Outbound, the request is the caller's with the conversation expanded (the provider does not know
//! the gateway's response ids), `store: false` (the gateway keeps the conversation) and
//! `reasoning.encrypted_content` included (so reasoning can be sent back on a later turn). Inbound,
//! events and bodies are the provider's, with the gateway's response id, the public model name and the
//! caller's `store` and `previous_response_id` put back; encrypted reasoning the caller did not ask for
//! is kept for the store and not shown.

use bytes::Bytes;
use serde_json::{Map, Value, json};

use super::inbound::ResponsesEvents;
use super::wire::{Event, Item, ResponsesRequest};
use crate::protocols::error::{ErrorKind, ProviderError};
use crate::protocols::{ChunkTranslator, ErrorReply, StreamEncoder, StreamItem, StreamMapper, StreamStep};
use crate::schema::{ChatChunk, CompletionTokensDetails, PromptTokensDetails, Usage};
use crate::sse::{SseEvent, named_frame};

pub const ENCRYPTED_REASONING: &str = "reasoning.encrypted_content";

/// The body sent upstream (without its model, set per attempt): the caller's request with `items` as
/// its whole input.
pub fn upstream_body(req: &ResponsesRequest, items: Vec<Item>) -> Map<String, Value> {
    let mut body = req.clone();
    body.input = Some(super::wire::Input::Items(items));
    body.previous_response_id = None;
    body.store = Some(false);
    let include = body.include.get_or_insert_with(Vec::new);
    if !include.iter().any(|i| i == ENCRYPTED_REASONING) {
        include.push(ENCRYPTED_REASONING.to_owned());
    }
    crate::schema::strip_own_fields(&mut body.extra);
    match serde_json::to_value(body) {
        Ok(Value::Object(map)) => map,
        _ => Map::new(),
    }
}

/// A provider's usage report (`response.usage`) in canonical terms.
pub fn usage_of(response: &Value) -> Option<Usage> {
    let u = response.get("usage").filter(|u| u.is_object())?;
    let n = |v: Option<&Value>| v.and_then(Value::as_u64).unwrap_or(0);
    let input = n(u.get("input_tokens"));
    let output = n(u.get("output_tokens"));
    Some(Usage {
        prompt_tokens: input,
        completion_tokens: output,
        total_tokens: input + output,
        prompt_tokens_details: Some(PromptTokensDetails {
            cached_tokens: Some(n(u.pointer("/input_tokens_details/cached_tokens"))),
            cache_write_tokens: None,
            extra: Map::new(),
        }),
        completion_tokens_details: Some(CompletionTokensDetails {
            reasoning_tokens: Some(n(u.pointer("/output_tokens_details/reasoning_tokens"))),
            extra: Map::new(),
        }),
        extra: Map::new(),
    })
}

/// What the gateway puts back into the provider's response objects.
#[derive(Debug, Clone)]
pub struct Rewrite {
    /// The gateway's response id.
    pub id: String,
    /// The model as the caller named it.
    pub model: String,
    pub store: bool,
    pub previous_response_id: Option<String>,
    /// The caller asked for encrypted reasoning itself.
    pub show_encrypted: bool,
}

impl Rewrite {
    /// Puts the gateway's id, the model asked for, `store` and `previous_response_id` into a response
    /// object.
    pub fn response(&self, response: &mut Value) {
        if let Some(obj) = response.as_object_mut() {
            obj.insert("id".into(), json!(self.id));
            obj.insert("model".into(), json!(self.model));
            obj.insert("store".into(), json!(self.store));
            obj.insert("previous_response_id".into(), json!(self.previous_response_id));
        }
    }

    /// The client's copy of an item or response: without encrypted reasoning it did not ask for.
    pub fn for_client(&self, value: &mut Value) {
        if self.show_encrypted {
            return;
        }
        let strip = |item: &mut Value| {
            if let Some(obj) = item.as_object_mut()
                && obj.get("type").and_then(Value::as_str) == Some("reasoning")
            {
                obj.remove("encrypted_content");
            }
        };
        if let Some(items) = value.get_mut("output").and_then(Value::as_array_mut) {
            items.iter_mut().for_each(strip);
        }
        strip(value);
    }
}

/// Classifies an `error` event or a `response.failed` in a provider's stream.
fn in_stream(error: &Value) -> ProviderError {
    let code = error.get("code").and_then(Value::as_str).unwrap_or_default();
    let message = error.get("message").and_then(Value::as_str).filter(|m| !m.is_empty());
    let kind = match code {
        "rate_limit_exceeded" => ErrorKind::RateLimited,
        "insufficient_quota" => ErrorKind::QuotaExhausted,
        "context_length_exceeded" => ErrorKind::ContextTooLong,
        _ => ErrorKind::StreamInterrupted,
    };
    let mut e = ProviderError::new(kind, message.unwrap_or("the provider's response failed").to_owned());
    e.code = (!code.is_empty()).then(|| code.to_owned());
    e
}

/// One event of a provider's Responses stream, kept as the provider wrote it.
#[derive(Debug, Clone)]
pub struct NativeEvent {
    pub kind: String,
    pub data: Value,
}

impl NativeEvent {
    /// The response snapshot a lifecycle event carries.
    pub fn response_mut(&mut self) -> Option<&mut Value> {
        self.data.get_mut("response").filter(|r| r.is_object())
    }
}

impl StreamItem for NativeEvent {
    fn is_final(&self) -> bool {
        matches!(self.kind.as_str(), "response.completed" | "response.incomplete")
    }

    fn is_preamble(&self) -> bool {
        matches!(
            self.kind.as_str(),
            "response.created"
                | "response.in_progress"
                | "response.queued"
                | "response.output_item.added"
                | "response.content_part.added"
                | "response.reasoning_summary_part.added"
        )
    }
}

/// Reads a provider's Responses events; an `error` event or `response.failed` is a failed attempt
/// (before anything was sent, the pipeline falls back; after, the door ends the stream with its own).
#[derive(Debug, Default)]
pub struct NativeMapper;

impl StreamMapper<NativeEvent> for NativeMapper {
    fn map(&mut self, event: &SseEvent, out: &mut Vec<NativeEvent>) -> Result<StreamStep, ProviderError> {
        let text = event.data.trim();
        if text == "[DONE]" {
            return Ok(StreamStep::Done);
        }
        if text.is_empty() {
            return Ok(StreamStep::Continue);
        }
        let data: Value = serde_json::from_str(text)
            .map_err(|e| ProviderError::new(ErrorKind::InvalidResponse, format!("unreadable Responses event: {e}")))?;
        let kind = data
            .get("type")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .or_else(|| event.event.clone())
            .unwrap_or_default();
        match kind.as_str() {
            // An `error` event, or an OpenAI-style `{"error": …}` in a data line.
            _ if data.get("error").is_some_and(|e| e.is_object()) && data.get("response").is_none() => {
                Err(in_stream(&data["error"]))
            }
            "error" => Err(in_stream(&data)),
            "response.failed" => Err(in_stream(data.pointer("/response/error").unwrap_or(&Value::Null))),
            _ => {
                out.push(NativeEvent { kind, data });
                Ok(StreamStep::Continue)
            }
        }
    }
}

/// A continuation's chat chunks as a passed-through stream's events: [`ResponsesEvents`] seeded where
/// the stream stands, each event as the provider would have written it.
pub struct Continuing {
    events: ResponsesEvents,
    buf: Vec<Event>,
}

impl Continuing {
    pub fn new(events: ResponsesEvents) -> Self {
        Continuing { events, buf: Vec::new() }
    }

    fn convert(&mut self, out: &mut Vec<NativeEvent>) {
        for e in self.buf.drain(..) {
            let data = serde_json::to_value(&e).unwrap_or_default();
            out.push(NativeEvent { kind: e.kind, data });
        }
    }
}

impl ChunkTranslator<NativeEvent> for Continuing {
    fn chunk(&mut self, chunk: &ChatChunk, out: &mut Vec<NativeEvent>) {
        self.events.chunk(chunk, &mut self.buf);
        self.convert(out);
    }

    fn done(&mut self, out: &mut Vec<NativeEvent>) {
        self.events.done(&mut self.buf);
        self.convert(out);
    }
}

/// Called once with the final response object (the gateway's copy, encrypted reasoning included).
pub type OnComplete = Box<dyn FnOnce(&Value) + Send>;

/// Re-emits a provider's events with the gateway's envelope; the output items are collected as they
/// complete, for the store and for a `response.completed` that came without them.
pub struct NativeStream {
    rewrite: Rewrite,
    on_complete: Option<OnComplete>,
    items: Vec<Value>,
    last_sequence: Option<u64>,
    last_response: Option<Value>,
}

impl NativeStream {
    pub fn new(rewrite: Rewrite, on_complete: OnComplete) -> Self {
        NativeStream {
            rewrite,
            on_complete: Some(on_complete),
            items: Vec::new(),
            last_sequence: None,
            last_response: None,
        }
    }
}

impl StreamEncoder<NativeEvent> for NativeStream {
    fn chunk(&mut self, event: &NativeEvent, out: &mut Vec<Bytes>) {
        let mut data = event.data.clone();
        self.last_sequence = data.get("sequence_number").and_then(Value::as_u64).or(self.last_sequence);
        if event.kind == "response.output_item.done"
            && let Some(item) = data.get("item")
        {
            self.items.push(item.clone());
        }
        if let Some(response) = data.get_mut("response").filter(|r| r.is_object()) {
            self.rewrite.response(response);
            if event.is_final() {
                let empty = response.get("output").and_then(Value::as_array).is_none_or(Vec::is_empty);
                if empty && !self.items.is_empty() {
                    response["output"] = Value::Array(self.items.clone());
                }
                if let Some(store) = self.on_complete.take() {
                    store(response);
                }
            }
            self.last_response = Some(response.clone());
        }
        if let Some(item) = data.get_mut("item") {
            self.rewrite.for_client(item);
        }
        if let Some(response) = data.get_mut("response") {
            self.rewrite.for_client(response);
        }
        out.push(named_frame(&event.kind, &serde_json::to_vec(&data).unwrap_or_default()));
    }

    fn done(&mut self, _out: &mut Vec<Bytes>) {
        // The provider's own terminal event has been relayed.
    }

    fn error(&mut self, e: &ErrorReply<'_>) -> Bytes {
        let mut response =
            self.last_response.take().unwrap_or_else(|| json!({"id": self.rewrite.id, "object": "response"}));
        response["status"] = json!("failed");
        response["error"] = json!({"code": super::inbound::failure_code(e), "message": e.message});
        self.rewrite.for_client(&mut response);
        let sequence = self.last_sequence.map_or(0, |s| s + 1);
        let event = json!({"type": "response.failed", "sequence_number": sequence, "response": response});
        named_frame("response.failed", &serde_json::to_vec(&event).unwrap_or_default())
    }
}
