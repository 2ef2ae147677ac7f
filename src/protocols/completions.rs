//! OpenAI's legacy completions (`POST /v1/completions`), for every model behind the gateway.
//!
//! **Native**: to a provider that serves completions (a provider capability: OpenAI, the fake, presets
//! that do), the request goes as the caller wrote it (model rewritten, usage always asked for on a
//! stream) and the answer comes back as the provider wrote it.
//!
//! **Translated**, to any other provider, through the canonical chat request: each prompt string becomes
//! one user message; `max_tokens` (16 when absent, as OpenAI's default), `n`, `stop`, `temperature`,
//! `top_p`, `seed`, penalties and `user` carry over. A list of prompts is one chat call per prompt, made
//! together, their choices indexed `prompt * n + choice` as OpenAI orders them (not streamed: a stream of
//! several prompts is refused). Refused with 400 naming the parameter, because a chat model cannot honour
//! them and a made-up answer would mislead: `echo`, `logprobs`, `suffix`, `best_of` > 1, token-id prompts.
//! Dropped: `logit_bias` (token ids are the model's own). Chat answers come back as `text_completion`s.
//! Reference: OpenAI API reference, "Completions (legacy)".

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::error::{ErrorKind, ProviderError};
use super::{ErrorReply, Invalid, StreamEncoder, StreamItem, StreamMapper, StreamStep};
use crate::schema::{ChatChunk, ChatRequest, ChatResponse, Content, Message, Role, Stop, StreamOptions, Usage};
use crate::sse::{DONE_FRAME, SseEvent, data_frame};

/// `POST /v1/completions` request body.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CompletionRequest {
    pub model: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt: Option<Prompt>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suffix: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub best_of: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logprobs: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub echo: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop: Option<Stop>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_options: Option<StreamOptions>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f64>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl CompletionRequest {
    pub fn is_streaming(&self) -> bool {
        self.stream == Some(true)
    }

    pub fn wants_stream_usage(&self) -> bool {
        self.stream_options.as_ref().and_then(|o| o.include_usage) == Some(true)
    }
}

/// `prompt`: a string, strings, token ids, or lists of token ids.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Prompt {
    One(String),
    Many(Vec<String>),
    Tokens(Vec<u32>),
    TokenBatches(Vec<Vec<u32>>),
}

impl Prompt {
    /// The prompts as texts; token-id prompts have none.
    pub fn texts(&self) -> Option<Vec<&str>> {
        match self {
            Prompt::One(s) => Some(vec![s.as_str()]),
            Prompt::Many(v) => Some(v.iter().map(String::as_str).collect()),
            Prompt::Tokens(_) | Prompt::TokenBatches(_) => None,
        }
    }

    /// How many prompts: each gets `n` choices.
    pub fn count(&self) -> usize {
        match self {
            Prompt::One(_) | Prompt::Tokens(_) => 1,
            Prompt::Many(v) => v.len(),
            Prompt::TokenBatches(v) => v.len(),
        }
    }
}

/// A `text_completion`: a whole answer, and each chunk of a stream.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Completion {
    #[serde(default)]
    pub id: String,
    #[serde(default = "text_completion")]
    pub object: String,
    #[serde(default)]
    pub created: u64,
    #[serde(default)]
    pub model: String,
    #[serde(default)]
    pub choices: Vec<CompletionChoice>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

fn text_completion() -> String {
    "text_completion".to_owned()
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CompletionChoice {
    #[serde(default)]
    pub text: String,
    #[serde(default)]
    pub index: u32,
    #[serde(default)]
    pub logprobs: Option<Value>,
    #[serde(default)]
    pub finish_reason: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// The most prompts one request may hold (OpenAI's own limit).
pub const MAX_PROMPTS: usize = 2048;

/// What a chat model cannot honour, named by parameter; `max_calls` bounds the chat calls one request
/// may become (prompts × `n`).
pub fn untranslatable(req: &CompletionRequest, max_calls: u32) -> Option<Invalid> {
    let why = |param: &str, what: &str| {
        Some(Invalid::new(
            format!("'{param}' {what} is not supported for this model (it is served through chat)."),
            param,
        ))
    };
    if req.echo == Some(true) {
        return why("echo", "(repeating the prompt with its log probabilities)");
    }
    if req.logprobs.as_ref().is_some_and(|v| !v.is_null()) {
        return why("logprobs", "(log probabilities of prompt and completion tokens)");
    }
    if req.suffix.as_deref().is_some_and(|s| !s.is_empty()) {
        return why("suffix", "(text to insert before)");
    }
    if req.best_of.is_some_and(|b| b > 1) {
        return why("best_of", "(choosing the best of several completions)");
    }
    if req.prompt.as_ref().is_some_and(|p| p.texts().is_none()) {
        return why("prompt", "as token ids");
    }
    if req.is_streaming() && req.prompt.as_ref().is_some_and(|p| p.count() > 1) {
        return why("prompt", "as several prompts in one stream");
    }
    let calls = req.prompt.as_ref().map_or(1, Prompt::count).saturating_mul(req.n.unwrap_or(1).max(1) as usize);
    if calls > max_calls as usize {
        return Some(Invalid::new(
            format!("{calls} prompts and choices would be {calls} chat calls; at most {max_calls} for this model."),
            "prompt",
        ));
    }
    None
}

/// One prompt as the canonical chat request.
pub fn to_chat(req: &CompletionRequest, prompt: &str) -> ChatRequest {
    let mut extra = Map::new();
    let carried =
        ["user", "seed", "presence_penalty", "frequency_penalty"].into_iter().chain(crate::schema::OWN_FIELDS);
    for field in carried {
        if let Some(v) = req.extra.get(field) {
            extra.insert(field.into(), v.clone());
        }
    }
    ChatRequest {
        model: req.model.clone(),
        messages: vec![Message {
            role: Role::User,
            content: Some(Content::Text(prompt.to_owned())),
            name: None,
            tool_calls: None,
            tool_call_id: None,
            extra: Map::new(),
        }],
        stream: req.is_streaming().then_some(true),
        stream_options: None,
        max_tokens: Some(req.max_tokens.unwrap_or(DEFAULT_MAX_TOKENS)),
        max_completion_tokens: None,
        temperature: req.temperature,
        top_p: req.top_p,
        n: req.n,
        stop: req.stop.clone(),
        tools: None,
        tool_choice: None,
        parallel_tool_calls: None,
        response_format: None,
        extra,
    }
}

/// OpenAI's default `max_tokens` for completions.
pub const DEFAULT_MAX_TOKENS: u32 = 16;

/// Chat answers, one per prompt in order, as one `text_completion` with OpenAI's choice indices.
pub fn from_chat(answers: &[ChatResponse], n: u32, model: &str) -> Completion {
    let mut choices = Vec::new();
    let mut usage: Option<Usage> = None;
    for (p, answer) in answers.iter().enumerate() {
        for c in &answer.choices {
            choices.push(CompletionChoice {
                text: c.message.content.clone().unwrap_or_default(),
                index: p as u32 * n + c.index,
                logprobs: None,
                finish_reason: c.finish_reason.clone(),
                extra: Map::new(),
            });
        }
        if let Some(u) = &answer.usage {
            usage.get_or_insert_with(Usage::default).add(u);
        }
    }
    Completion {
        id: format!("cmpl-{}", uuid::Uuid::now_v7().simple()),
        object: text_completion(),
        created: super::unix_now(),
        model: model.to_owned(),
        choices,
        usage,
        extra: Map::new(),
    }
}

impl StreamItem for Completion {
    fn is_final(&self) -> bool {
        self.choices.iter().any(|c| c.finish_reason.is_some())
    }

    fn is_preamble(&self) -> bool {
        self.usage.is_none() && self.choices.iter().all(|c| c.text.is_empty() && c.finish_reason.is_none())
    }
}

/// Reads a completions provider's stream: `data:` chunks, an in-band `{"error": …}`, `[DONE]`.
#[derive(Debug, Default)]
pub struct NativeMapper;

impl StreamMapper<Completion> for NativeMapper {
    fn map(&mut self, event: &SseEvent, out: &mut Vec<Completion>) -> Result<StreamStep, ProviderError> {
        let data = event.data.trim();
        if data == "[DONE]" {
            return Ok(StreamStep::Done);
        }
        if data.is_empty() {
            return Ok(StreamStep::Continue);
        }
        let mut chunk: Completion = serde_json::from_str(data)
            .map_err(|e| ProviderError::new(ErrorKind::InvalidResponse, format!("unreadable completion chunk: {e}")))?;
        if let Some(error) = chunk.extra.remove("error") {
            let message =
                error.get("message").and_then(Value::as_str).unwrap_or("the provider reported an error mid-stream");
            return Err(ProviderError::new(ErrorKind::StreamInterrupted, message));
        }
        out.push(chunk);
        Ok(StreamStep::Continue)
    }
}

/// A provider's completion chunks as they are (the public model already set), the usage chunk only
/// when the caller asked for it, and `[DONE]`.
pub struct NativeStream {
    pub wants_usage: bool,
}

impl StreamEncoder<Completion> for NativeStream {
    fn chunk(&mut self, chunk: &Completion, out: &mut Vec<Bytes>) {
        if chunk.usage.is_some() && !self.wants_usage {
            if chunk.choices.is_empty() {
                return;
            }
            let mut chunk = chunk.clone();
            chunk.usage = None;
            out.push(data_frame(&serde_json::to_vec(&chunk).unwrap_or_default()));
            return;
        }
        out.push(data_frame(&serde_json::to_vec(chunk).unwrap_or_default()));
    }

    fn done(&mut self, out: &mut Vec<Bytes>) {
        out.push(Bytes::from_static(DONE_FRAME));
    }

    fn error(&mut self, e: &ErrorReply<'_>) -> Bytes {
        data_frame(&super::openai::render_error(e))
    }
}

/// Chat chunks as completion chunks: each text delta a `text_completion` chunk, the usage chunk when the
/// caller asked for it, then `[DONE]`.
pub struct TranslatedStream {
    pub id: String,
    pub model: String,
    pub created: u64,
    pub wants_usage: bool,
}

impl StreamEncoder for TranslatedStream {
    fn chunk(&mut self, chunk: &ChatChunk, out: &mut Vec<Bytes>) {
        let choices: Vec<Value> = chunk
            .choices
            .iter()
            .filter(|c| c.delta.content.as_deref().is_some_and(|t| !t.is_empty()) || c.finish_reason.is_some())
            .map(|c| {
                json!({"text": c.delta.content.clone().unwrap_or_default(), "index": c.index, "logprobs": null,
                       "finish_reason": c.finish_reason})
            })
            .collect();
        let usage = chunk.usage.as_ref().filter(|_| self.wants_usage);
        if choices.is_empty() && usage.is_none() {
            return;
        }
        let mut body = json!({"id": self.id, "object": "text_completion", "created": self.created, "model": self.model, "choices": choices});
        if let Some(u) = usage {
            body["usage"] = serde_json::to_value(u).unwrap_or_default();
        }
        out.push(data_frame(body.to_string().as_bytes()));
    }

    fn done(&mut self, out: &mut Vec<Bytes>) {
        out.push(Bytes::from_static(DONE_FRAME));
    }

    fn error(&mut self, e: &ErrorReply<'_>) -> Bytes {
        data_frame(&super::openai::render_error(e))
    }
}
