//! generateContent passed through to a Gemini upstream as the caller wrote it: safety settings,
//! `topK`, `candidateCount`, cached content, thought signatures and every other field reach Gemini, and
//! every response comes back as Gemini wrote it, with the public model name as `modelVersion`.

use bytes::Bytes;

use super::errors::in_stream;
use super::outbound::to_canonical;
use super::wire::{ErrorEnvelope, GenerateRequest, GenerateResponse};
use crate::protocols::error::{ErrorKind, ProviderError};
use crate::protocols::{ErrorReply, StreamEncoder, StreamItem, StreamMapper, StreamStep};
use crate::schema::Usage;
use crate::sse::{SseEvent, data_frame};

/// The body as it came (the model is in Gemini's URL, not its body).
pub fn body(req: &GenerateRequest) -> Bytes {
    let mut req = req.clone();
    crate::schema::strip_own_fields(&mut req.extra);
    Bytes::from(serde_json::to_vec(&req).unwrap_or_default())
}

/// A whole answer and its usage in canonical terms, with the public model name put in.
pub fn whole(body: &[u8], public_model: &str) -> Result<(GenerateResponse, Option<Usage>), ProviderError> {
    let mut resp: GenerateResponse = serde_json::from_slice(body)
        .map_err(|e| ProviderError::new(ErrorKind::InvalidResponse, format!("unreadable Gemini response: {e}")))?;
    resp.model_version = Some(public_model.to_owned());
    let usage = resp.usage_metadata.as_ref().map(to_canonical);
    Ok((resp, usage))
}

impl StreamItem for GenerateResponse {
    fn is_final(&self) -> bool {
        self.candidates.iter().any(|c| c.finish_reason.is_some())
    }

    fn is_preamble(&self) -> bool {
        !self.is_final()
            && self.candidates.iter().all(|c| {
                c.content.as_ref().is_none_or(|content| {
                    content
                        .parts
                        .iter()
                        .all(|p| p.text.as_deref().is_none_or(str::is_empty) && p.function_call.is_none())
                })
            })
    }
}

/// Reads Gemini's streamed responses as they are; an error object is a failed attempt.
#[derive(Debug, Default)]
pub struct NativeMapper;

impl StreamMapper<GenerateResponse> for NativeMapper {
    fn map(&mut self, event: &SseEvent, out: &mut Vec<GenerateResponse>) -> Result<StreamStep, ProviderError> {
        if let Ok(ErrorEnvelope { error }) = serde_json::from_str::<ErrorEnvelope>(&event.data) {
            return Err(in_stream(&error));
        }
        let resp = serde_json::from_str(&event.data).map_err(|e| {
            ProviderError::new(ErrorKind::InvalidResponse, format!("unreadable Gemini stream event: {e}"))
        })?;
        out.push(resp);
        Ok(StreamStep::Continue)
    }
}

/// How a Gemini stream is framed for the caller: server-sent events (`alt=sse`), or Google's default,
/// one JSON array whose elements arrive as they are made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    Sse,
    JsonArray,
}

impl Framing {
    /// The frame for one response, the `n`th of the stream.
    pub fn frame(self, json: &[u8], n: u64) -> Bytes {
        match self {
            Framing::Sse => data_frame(json),
            Framing::JsonArray => {
                let mut buf = Vec::with_capacity(json.len() + 4);
                buf.extend_from_slice(if n == 0 { b"[" } else { b"\n,\r\n" });
                buf.extend_from_slice(json);
                Bytes::from(buf)
            }
        }
    }

    /// What ends a complete stream, after `n` responses.
    pub fn end(self, n: u64) -> Option<Bytes> {
        match self {
            Framing::Sse => None,
            Framing::JsonArray if n == 0 => Some(Bytes::from_static(b"[]")),
            Framing::JsonArray => Some(Bytes::from_static(b"\n]")),
        }
    }

    /// A failure after the stream started: an error object as the next frame (the array stays open, as
    /// Google's does when it cuts a stream).
    pub fn error(self, json: &[u8], n: u64) -> Bytes {
        self.frame(json, n)
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Framing::Sse => "text/event-stream",
            Framing::JsonArray => "application/json",
        }
    }
}

/// Re-emits Gemini's responses in the caller's framing.
pub struct NativeStream {
    pub framing: Framing,
    pub sent: u64,
}

impl StreamEncoder<GenerateResponse> for NativeStream {
    fn chunk(&mut self, resp: &GenerateResponse, out: &mut Vec<Bytes>) {
        out.push(self.framing.frame(&serde_json::to_vec(resp).unwrap_or_default(), self.sent));
        self.sent += 1;
    }

    fn done(&mut self, out: &mut Vec<Bytes>) {
        out.extend(self.framing.end(self.sent));
    }

    fn error(&mut self, e: &ErrorReply<'_>) -> Bytes {
        self.framing.error(&super::errors::render(e), self.sent)
    }
}
