//! The response cache (opt-in): an exact-match cache of chat answers, per organisation, after
//! authentication and admission, so a hit still counts a prompt (and shows in usage, at zero upstream
//! cost, its ledger row's usage source `cache`). It holds canonical chat answers, so one cached answer
//! serves every chat-shaped door (chat, Messages and Gemini translated, Azure), whole or streamed; a
//! streamed hit is replayed as a stream with a new id.
//!
//! Opt-in: the key's `response_cache_ttl_seconds` (else its organisation's), or the request's
//! `Cache-Control: max-age=N` (which also refuses a kept answer older than N seconds; a hit says its
//! `Age`); `Cache-Control: no-store` bypasses it, `no-cache` does not read it (the answer is still kept). The key is a hash of the organisation, the resolved target (the plan's
//! first) and the whole normalised request without `stream`, `stream_options`, `user` and `metadata`
//! (so `tools`, `response_format`, reasoning effort, every sampling field change it). Never kept: errors,
//! partial streams, `n` > 1, an answer passed through in a door's own protocol; a request with a
//! temperature above 0 (or none, which is the provider's default of 1) only when the request itself
//! asks. `x-switchyard-cache` says `hit`, `miss` or `bypass` whenever the cache was asked.
//!
//! Entries live in this replica's memory and, with Redis, in Redis for every replica (`response_cache`):
//! losing one is harmless, and a replica that misses asks the provider.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::protocols::{ErrorReply, StreamEncoder};
use crate::response_cache::ResponseCache;
use crate::schema::{ChatChunk, ChatRequest, ChatResponse, ChunkChoice, Delta, FunctionCallDelta, ToolCallDelta};
use crate::tenancy::ActiveKey;

/// The longest TTL an organisation or a request may ask for.
pub const MAX_TTL_SECONDS: i64 = 30 * 24 * 3600;
/// Fields that do not change the answer, left out of the key.
const NOT_IN_KEY: [&str; 5] = ["stream", "stream_options", "user", "metadata", "model"];

/// What the cache does for one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Use {
    /// Not asked for: no header.
    Off,
    /// Asked for, but not for this request, and why.
    Bypass(&'static str),
    /// Read (unless the request said `no-cache`; only answers at most `max_age` seconds old when the
    /// request said `max-age`) and, on a miss, keep the answer for `ttl`.
    On { key: String, read: bool, max_age: Option<i64>, ttl: Duration },
}

impl Use {
    /// The `x-switchyard-cache` value for an answer that did not come from the cache.
    pub fn miss_header(&self) -> Option<HeaderValue> {
        match self {
            Use::Off => None,
            Use::Bypass(_) => Some(HeaderValue::from_static("bypass")),
            Use::On { .. } => Some(HeaderValue::from_static("miss")),
        }
    }

    /// The key and TTL to keep the answer under, if it is to be kept.
    pub fn keep(&self) -> Option<(&str, Duration)> {
        match self {
            Use::On { key, ttl, .. } => Some((key, *ttl)),
            _ => None,
        }
    }
}

/// How the cache treats `req`, going to `target`, for `key`'s organisation.
pub fn decide(key: Option<&ActiveKey>, headers: &HeaderMap, req: &ChatRequest, target: &str, native: bool) -> Use {
    let mut asked: Option<i64> = None;
    let mut read = true;
    for directive in headers.get_all(http::header::CACHE_CONTROL).iter().filter_map(|v| v.to_str().ok()) {
        for d in directive.split(',').map(|d| d.trim().to_ascii_lowercase()) {
            match d.as_str() {
                "no-store" => return Use::Bypass("the request said no-store"),
                "no-cache" => read = false,
                _ => {
                    if let Some(n) = d.strip_prefix("max-age=").and_then(|n| n.trim_matches('"').parse::<i64>().ok()) {
                        asked = Some(n.clamp(0, MAX_TTL_SECONDS));
                    }
                }
            }
        }
    }
    // The key's own setting, else its organisation's (a key's 0 is its own "off").
    let org_ttl = key.and_then(|k| k.cache_ttl_seconds).filter(|t| *t > 0);
    let ttl = match asked {
        // `max-age=0`: nothing older than now; read nothing, keep for the organisation's TTL if it has one.
        Some(0) => {
            read = false;
            match org_ttl {
                Some(t) => t,
                None => return Use::Bypass("the request said max-age=0"),
            }
        }
        Some(n) => n,
        None => match org_ttl {
            Some(t) => t,
            None => return Use::Off,
        },
    };
    if req.n.unwrap_or(1) > 1 {
        return Use::Bypass("several choices");
    }
    if native {
        return Use::Bypass("the answer is passed through in the door's own protocol");
    }
    if asked.is_none_or(|n| n <= 0) && req.temperature.is_none_or(|t| t > 0.0) {
        return Use::Bypass("a sampled answer (temperature above 0) is cached only when the request asks");
    }
    let Ok(Value::Object(mut fields)) = serde_json::to_value(req) else { return Use::Bypass("unreadable request") };
    for name in NOT_IN_KEY {
        fields.remove(name);
    }
    let mut h = Sha256::new();
    h.update(key.map_or("", |k| k.organization_id.as_str()).as_bytes());
    h.update([0]);
    h.update(target.as_bytes());
    h.update([0]);
    h.update(serde_json::to_vec(&fields).unwrap_or_default());
    let key = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
    Use::On { key, read, max_age: asked, ttl: Duration::from_secs(ttl.unsigned_abs()) }
}

/// Whether an answer may be kept: one choice, finished.
pub fn keepable(resp: &ChatResponse) -> bool {
    resp.choices.len() == 1 && resp.choices.iter().all(|c| c.finish_reason.is_some())
}

/// A kept answer as a stream's chunks: the role and the whole content, the tool calls, the finish, the
/// usage.
pub fn chunks_of(resp: &ChatResponse) -> Vec<ChatChunk> {
    let chunk = |choices: Vec<ChunkChoice>| ChatChunk {
        id: resp.id.clone(),
        object: "chat.completion.chunk".to_owned(),
        created: resp.created,
        model: resp.model.clone(),
        choices,
        usage: None,
        extra: Default::default(),
    };
    let mut out = Vec::new();
    for c in &resp.choices {
        let m = &c.message;
        let tool_calls = m.tool_calls.as_ref().map(|calls| {
            calls
                .iter()
                .enumerate()
                .map(|(i, t)| ToolCallDelta {
                    index: i as u32,
                    id: Some(t.id.clone()),
                    kind: Some(t.kind.clone()),
                    function: Some(FunctionCallDelta {
                        name: Some(t.function.name.clone()),
                        arguments: Some(t.function.arguments.clone()),
                        extra: Default::default(),
                    }),
                    extra: Default::default(),
                })
                .collect()
        });
        let delta = Delta {
            role: Some("assistant".to_owned()),
            content: m.content.clone(),
            reasoning_content: m.reasoning_content.clone(),
            tool_calls,
            ..Delta::default()
        };
        out.push(chunk(vec![ChunkChoice { index: c.index, delta, finish_reason: None, extra: Default::default() }]));
        out.push(chunk(vec![ChunkChoice {
            index: c.index,
            delta: Delta::default(),
            finish_reason: c.finish_reason.clone(),
            extra: Default::default(),
        }]));
    }
    let mut last = chunk(Vec::new());
    last.usage.clone_from(&resp.usage);
    out.push(last);
    out
}

/// A stream's encoder that also gathers the answer the client read, and keeps it once the stream ended
/// properly (never after an error).
pub struct Gathering {
    inner: Box<dyn StreamEncoder>,
    cache: Arc<ResponseCache>,
    key: String,
    ttl: Duration,
    answer: Answer,
}

/// A chat answer gathered from its chunks.
#[derive(Default)]
struct Answer {
    first: Option<ChatChunk>,
    text: String,
    reasoning: String,
    /// By index: id, name, arguments.
    calls: std::collections::BTreeMap<u32, (String, String, String)>,
    finish: Option<String>,
    usage: Option<crate::schema::Usage>,
    several: bool,
}

impl Gathering {
    pub fn new(inner: Box<dyn StreamEncoder>, cache: Arc<ResponseCache>, key: &str, ttl: Duration) -> Self {
        Gathering { inner, cache, key: key.to_owned(), ttl, answer: Answer::default() }
    }
}

impl StreamEncoder for Gathering {
    fn chunk(&mut self, c: &ChatChunk, out: &mut Vec<Bytes>) {
        let a = &mut self.answer;
        if a.first.is_none() {
            a.first = Some(ChatChunk { choices: Vec::new(), usage: None, ..c.clone() });
        }
        for choice in &c.choices {
            a.several |= choice.index != 0;
            let d = &choice.delta;
            a.text.push_str(d.content.as_deref().unwrap_or_default());
            a.reasoning.push_str(d.reasoning_content.as_deref().unwrap_or_default());
            for t in d.tool_calls.iter().flatten() {
                let entry = a.calls.entry(t.index).or_default();
                if let Some(id) = &t.id {
                    entry.0.clone_from(id);
                }
                if let Some(f) = &t.function {
                    entry.1.push_str(f.name.as_deref().unwrap_or_default());
                    entry.2.push_str(f.arguments.as_deref().unwrap_or_default());
                }
            }
            if choice.finish_reason.is_some() {
                a.finish.clone_from(&choice.finish_reason);
            }
        }
        if c.usage.is_some() {
            a.usage.clone_from(&c.usage);
        }
        self.inner.chunk(c, out);
    }

    fn done(&mut self, out: &mut Vec<Bytes>) {
        let a = std::mem::take(&mut self.answer);
        // A stream continued on another target is not the first target's answer.
        let continued = a.usage.as_ref().is_some_and(|u| u.extra.contains_key("continuation"));
        if let (Some(first), Some(finish), false, false) = (a.first, a.finish, a.several, continued) {
            let calls: Vec<crate::schema::ToolCall> = a
                .calls
                .into_values()
                .map(|(id, name, arguments)| crate::schema::ToolCall {
                    id,
                    kind: "function".to_owned(),
                    function: crate::schema::FunctionCall { name, arguments, extra: Default::default() },
                    extra: Default::default(),
                })
                .collect();
            let resp = ChatResponse {
                id: first.id,
                object: "chat.completion".to_owned(),
                created: first.created,
                model: first.model,
                choices: vec![crate::schema::Choice {
                    index: 0,
                    message: crate::schema::ResponseMessage::assistant(a.text, a.reasoning, calls),
                    finish_reason: Some(finish),
                    extra: Default::default(),
                }],
                usage: a.usage,
                extra: Default::default(),
            };
            if let Ok(bytes) = serde_json::to_vec(&resp) {
                self.cache.put(std::mem::take(&mut self.key), Bytes::from(bytes), self.ttl);
            }
        }
        self.inner.done(out);
    }

    fn error(&mut self, e: &ErrorReply<'_>) -> Bytes {
        self.inner.error(e)
    }
}
