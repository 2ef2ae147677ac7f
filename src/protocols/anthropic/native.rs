//! Messages passed through to an Anthropic upstream as the caller wrote them: every field (`top_k`,
//! `cache_control` anywhere, `metadata`, `stop_sequences`, `thinking` with its budget, server tools,
//! documents, signed thinking blocks sent back) reaches Anthropic, and every event comes back as
//! Anthropic wrote it, with the public model name. Only the model is rewritten.

use bytes::Bytes;

use super::errors::{in_stream, render};
use super::outbound::to_canonical;
use super::wire::{Message, MessagesRequest, StreamEvent};
use crate::protocols::error::{ErrorKind, ProviderError};
use crate::protocols::{ErrorReply, StreamEncoder, StreamItem, StreamMapper, StreamStep};
use crate::schema::Usage;
use crate::sse::{SseEvent, named_frame};

/// The body for the upstream `model`: the caller's request as it came, Switchyard's own routing fields
/// aside.
pub fn body(req: &MessagesRequest, model: &str) -> Bytes {
    let mut req = req.clone();
    req.model = model.to_owned();
    crate::schema::strip_own_fields(&mut req.extra);
    Bytes::from(serde_json::to_vec(&req).unwrap_or_default())
}

/// A whole Messages answer and its usage in canonical terms, with the public model name put in.
pub fn whole(body: &[u8], public_model: &str) -> Result<(Message, Usage), ProviderError> {
    let mut message: Message = serde_json::from_slice(body)
        .map_err(|e| ProviderError::new(ErrorKind::InvalidResponse, format!("unreadable Anthropic message: {e}")))?;
    message.model = public_model.to_owned();
    let usage = to_canonical(&message.usage);
    Ok((message, usage))
}

/// Usage in canonical terms after `event`, given what was known before (a `message_start` reports the
/// input, a `message_delta` the output so far).
pub fn usage_after(event: &StreamEvent, before: Option<&Usage>) -> Option<Usage> {
    match event.kind.as_str() {
        "message_start" => event.message.as_ref().map(|m| to_canonical(&m.usage)),
        "message_delta" => {
            let delta = event.usage.as_ref()?;
            let reports_input = delta.input_tokens > 0
                || delta.cache_read_input_tokens.is_some()
                || delta.cache_creation_input_tokens.is_some();
            if reports_input {
                return Some(to_canonical(delta));
            }
            let mut u = before.cloned().unwrap_or_default();
            u.completion_tokens = delta.output_tokens;
            u.total_tokens = u.prompt_tokens + u.completion_tokens;
            Some(u)
        }
        _ => None,
    }
}

impl StreamItem for StreamEvent {
    fn is_final(&self) -> bool {
        self.kind == "message_stop"
    }

    fn is_preamble(&self) -> bool {
        match self.kind.as_str() {
            "message_start" | "ping" => true,
            // A block's start shows nothing yet; its first delta does.
            "content_block_start" => true,
            _ => false,
        }
    }
}

/// Reads an Anthropic stream's events as they are; an `error` event is a failed attempt.
#[derive(Debug, Default)]
pub struct NativeMapper;

impl StreamMapper<StreamEvent> for NativeMapper {
    fn map(&mut self, event: &SseEvent, out: &mut Vec<StreamEvent>) -> Result<StreamStep, ProviderError> {
        let ev: StreamEvent = serde_json::from_str(&event.data).map_err(|e| {
            ProviderError::new(ErrorKind::InvalidResponse, format!("unreadable Anthropic stream event: {e}"))
        })?;
        if ev.kind == "error" {
            return Err(in_stream(&ev.error.unwrap_or_default()));
        }
        let last = ev.kind == "message_stop";
        out.push(ev);
        Ok(if last { StreamStep::Done } else { StreamStep::Continue })
    }
}

/// Re-emits Anthropic's events, each under its own `event:` name.
#[derive(Debug, Default)]
pub struct NativeStream;

impl StreamEncoder<StreamEvent> for NativeStream {
    fn chunk(&mut self, event: &StreamEvent, out: &mut Vec<Bytes>) {
        out.push(named_frame(&event.kind, &serde_json::to_vec(event).unwrap_or_default()));
    }

    fn done(&mut self, _out: &mut Vec<Bytes>) {
        // Anthropic's own `message_stop` has been relayed.
    }

    fn error(&mut self, e: &ErrorReply<'_>) -> Bytes {
        named_frame("error", &render(e))
    }
}
