//! The Anthropic Messages API (`POST /v1/messages`, `x-api-key`, `anthropic-version`).
//!
//! Maps: system and developer messages → `system`; user/assistant/tool turns → alternating messages with
//! `text`, `image` (base64 from `data:` URLs, `url` sources for https), `tool_use` and `tool_result` blocks;
//! `tools`, `tool_choice` (`required` → `any`), `parallel_tool_calls: false` → `disable_parallel_tool_use`;
//! `stop` → `stop_sequences`; `temperature`, `top_p`, `top_k`; `max_completion_tokens`/`max_tokens`
//! (required by Anthropic: 4096 when absent); `reasoning_effort` → a `thinking` budget; `user` →
//! `metadata.user_id`; `response_format` `json_schema` → a forced tool whose input becomes the message
//! text, `json_object` → a system instruction. Thinking comes back as `reasoning_content`.
//! Drops (no Anthropic equivalent): `logit_bias`, `logprobs`, `top_logprobs`, penalties, `seed`, `store`,
//! `service_tier`, `metadata`, `prediction`, `modalities`, and other unknown fields.
//! Refuses with 400: `n` > 1, audio and file content parts.
//! Reference: Anthropic API docs, "Messages", "Streaming Messages", "Errors".

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, StatusCode, header};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::error::{ErrorKind, ProviderError, TimeoutPhase, retry_after};
use super::{Adapter, Endpoint, StreamMapper, StreamStep, UpstreamRequest, bad_request};
use crate::schema::{
    ChatChunk, ChatRequest, ChatResponse, Choice, ChunkChoice, CompletionTokensDetails, Content, Delta, FunctionCall,
    FunctionCallDelta, Message, PromptTokensDetails, ResponseMessage, Role, Stop, ToolCall, ToolCallDelta, ToolChoice,
    ToolChoiceMode, Usage, inline_image,
};
use crate::sse::SseEvent;

pub const DEFAULT_VERSION: &str = "2023-06-01";
const DEFAULT_MAX_TOKENS: u32 = 4096;

#[derive(Debug)]
pub struct AnthropicAdapter {
    /// The `anthropic-version` header sent unless the operator's headers set one.
    pub version: String,
}

/// The forced tool that carries a `json_schema` response, when one was requested.
fn json_tool_name(req: &ChatRequest) -> Option<String> {
    let format = req.response_format.as_ref().filter(|f| f.kind == "json_schema")?;
    let name = format.extra.get("json_schema").and_then(|s| s.get("name")).and_then(Value::as_str);
    Some(name.unwrap_or("json_response").to_owned())
}

impl Adapter for AnthropicAdapter {
    fn chat_request(&self, req: &ChatRequest, endpoint: &Endpoint<'_>) -> Result<UpstreamRequest, ProviderError> {
        let body = translate_request(req)?;
        let mut headers = endpoint.headers.clone();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if !headers.contains_key("anthropic-version") {
            let version = HeaderValue::from_str(&self.version)
                .map_err(|_| ProviderError::new(ErrorKind::BadRequest, "api_version is not a valid header value"))?;
            headers.insert("anthropic-version", version);
        }
        if let Some(key) = endpoint.api_key {
            let mut value = HeaderValue::from_str(key.expose()).map_err(|_| {
                ProviderError::new(ErrorKind::Authentication, "the provider key is not a valid header value")
            })?;
            value.set_sensitive(true);
            headers.insert("x-api-key", value);
        }
        Ok(UpstreamRequest {
            url: format!("{}/v1/messages", endpoint.base_url.trim_end_matches('/')),
            headers,
            body: Bytes::from(body.to_string()),
        })
    }

    fn parse_chat_response(&self, req: &ChatRequest, body: &[u8]) -> Result<ChatResponse, ProviderError> {
        let msg: AnthropicMessage = serde_json::from_slice(body).map_err(|e| {
            ProviderError::new(ErrorKind::InvalidResponse, format!("unreadable Anthropic message: {e}"))
        })?;
        let json_tool = json_tool_name(req);
        let mut text = String::new();
        let mut reasoning = String::new();
        let mut calls = Vec::new();
        for block in msg.content {
            match block {
                Block::Text { text: t } => text.push_str(&t),
                Block::Thinking { thinking } => reasoning.push_str(&thinking),
                Block::ToolUse { id, name, input } if Some(&name) == json_tool.as_ref() => {
                    let _ = id;
                    text.push_str(&input.to_string());
                }
                Block::ToolUse { id, name, input } => calls.push(ToolCall {
                    id,
                    kind: "function".to_owned(),
                    function: FunctionCall { name, arguments: input.to_string(), extra: Map::new() },
                    extra: Map::new(),
                }),
                Block::Other => {}
            }
        }
        let finish = finish_reason(msg.stop_reason.as_deref(), json_tool.is_some());
        Ok(ChatResponse {
            id: msg.id,
            object: "chat.completion".to_owned(),
            created: super::unix_now(),
            model: msg.model,
            choices: vec![Choice {
                index: 0,
                message: ResponseMessage {
                    role: "assistant".to_owned(),
                    content: (!text.is_empty() || calls.is_empty()).then_some(text),
                    reasoning_content: (!reasoning.is_empty()).then_some(reasoning),
                    tool_calls: (!calls.is_empty()).then_some(calls),
                    extra: Map::new(),
                },
                finish_reason: Some(finish.to_owned()),
                extra: Map::new(),
            }],
            usage: Some(msg.usage.to_canonical()),
            extra: Map::new(),
        })
    }

    fn stream_mapper(&self, req: &ChatRequest) -> Box<dyn StreamMapper> {
        Box::new(AnthropicStream { json_tool: json_tool_name(req), ..AnthropicStream::default() })
    }

    fn classify_error(&self, status: StatusCode, headers: &HeaderMap, body: &[u8]) -> ProviderError {
        let detail = serde_json::from_slice::<ErrorEnvelope>(body).ok().map(|e| e.error);
        let kind_text = detail.as_ref().map(|d| d.kind.as_str()).unwrap_or_default();
        let upstream = detail.as_ref().map(|d| d.message.clone()).unwrap_or_default();
        classify(status.as_u16(), kind_text, &upstream, retry_after(headers))
    }
}

fn classify(status: u16, kind_text: &str, upstream: &str, retry_after: Option<std::time::Duration>) -> ProviderError {
    let lower = upstream.to_lowercase();
    let kind = match (status, kind_text) {
        (529, _) | (_, "overloaded_error") => ErrorKind::Overloaded,
        (429, _) | (_, "rate_limit_error") => ErrorKind::RateLimited,
        (401 | 403, _) | (_, "authentication_error" | "permission_error") => ErrorKind::Authentication,
        (402, _) | (_, "billing_error") => ErrorKind::QuotaExhausted,
        _ if lower.contains("credit balance") => ErrorKind::QuotaExhausted,
        (404, _) | (_, "not_found_error") => ErrorKind::NotFound,
        (408 | 504, _) | (_, "timeout_error") => ErrorKind::Timeout(TimeoutPhase::Total),
        (400 | 413, _) if lower.contains("prompt is too long") || lower.contains("too many tokens") => {
            ErrorKind::ContextTooLong
        }
        (400..=499, _) | (_, "invalid_request_error" | "request_too_large") => ErrorKind::BadRequest,
        _ => ErrorKind::ServerError,
    };
    let message = match kind {
        ErrorKind::BadRequest | ErrorKind::NotFound | ErrorKind::ContextTooLong if !upstream.is_empty() => {
            upstream.to_owned()
        }
        ErrorKind::BadRequest | ErrorKind::NotFound | ErrorKind::ContextTooLong => {
            format!("Anthropic rejected the request ({status})")
        }
        ErrorKind::Overloaded => "Anthropic is overloaded".to_owned(),
        ErrorKind::RateLimited => "Anthropic is rate limiting requests".to_owned(),
        ErrorKind::Authentication => "Anthropic rejected the gateway's credentials".to_owned(),
        ErrorKind::QuotaExhausted => "the Anthropic account's credit is exhausted".to_owned(),
        _ => format!("Anthropic failed with HTTP {status}"),
    };
    ProviderError { kind, status: Some(status), retry_after, message, code: None, param: None }
}

fn translate_request(req: &ChatRequest) -> Result<Value, ProviderError> {
    if req.n.is_some_and(|n| n > 1) {
        return Err(bad_request("Anthropic models return one choice; 'n' must be 1.", "n"));
    }
    let mut system: Vec<Value> = Vec::new();
    let mut messages: Vec<Value> = Vec::new();
    for (i, m) in req.messages.iter().enumerate() {
        match m.role {
            Role::System | Role::Developer => system.extend(text_blocks(m, i)?),
            Role::User => push_turn(&mut messages, "user", content_blocks(m, i)?),
            Role::Assistant => {
                let mut blocks = match &m.content {
                    Some(_) => content_blocks(m, i)?,
                    None => Vec::new(),
                };
                for call in m.tool_calls.iter().flatten() {
                    let input: Value = serde_json::from_str(&call.function.arguments).unwrap_or_else(|_| json!({}));
                    blocks.push(json!({"type": "tool_use", "id": call.id, "name": call.function.name, "input": input}));
                }
                push_turn(&mut messages, "assistant", blocks);
            }
            Role::Tool | Role::Function => {
                let id = m.tool_call_id.clone().or_else(|| m.name.clone()).unwrap_or_default();
                let content = m.content.as_ref().map(Content::to_text).unwrap_or_default();
                push_turn(
                    &mut messages,
                    "user",
                    vec![json!({"type": "tool_result", "tool_use_id": id, "content": content})],
                );
            }
        }
    }
    let mut body = Map::new();
    body.insert("model".into(), json!(req.model));
    body.insert("messages".into(), Value::Array(messages));
    let mut max_tokens = req.max_output_tokens().unwrap_or(DEFAULT_MAX_TOKENS);
    if let Some(effort) = req.extra.get("reasoning_effort").and_then(Value::as_str) {
        let budget = match effort {
            "minimal" | "low" => 1024,
            "medium" => 4096,
            _ => 16384,
        };
        max_tokens = max_tokens.max(budget + 1024);
        body.insert("thinking".into(), json!({"type": "enabled", "budget_tokens": budget}));
    }
    body.insert("max_tokens".into(), json!(max_tokens));
    if let Some(format) = &req.response_format {
        match format.kind.as_str() {
            "json_object" => {
                system.push(json!({"type": "text", "text": "Respond with one valid JSON object and nothing else."}))
            }
            "json_schema" => {}
            _ => {}
        }
    }
    if !system.is_empty() {
        body.insert("system".into(), Value::Array(system));
    }
    if let Some(t) = req.temperature {
        body.insert("temperature".into(), json!(t));
    }
    if let Some(p) = req.top_p {
        body.insert("top_p".into(), json!(p));
    }
    if let Some(k) = req.extra.get("top_k") {
        body.insert("top_k".into(), k.clone());
    }
    match &req.stop {
        Some(Stop::One(s)) => {
            body.insert("stop_sequences".into(), json!([s]));
        }
        Some(Stop::Many(v)) if !v.is_empty() => {
            body.insert("stop_sequences".into(), json!(v));
        }
        _ => {}
    }
    if let Some(user) = req.extra.get("user").and_then(Value::as_str) {
        body.insert("metadata".into(), json!({"user_id": user}));
    }
    let mut tools: Vec<Value> = req
        .tools
        .iter()
        .flatten()
        .filter_map(|t| t.function.as_ref())
        .map(|f| {
            let mut tool = json!({"name": f.name, "input_schema": f.parameters.clone().unwrap_or_else(|| json!({"type": "object"}))});
            if let Some(d) = &f.description {
                tool["description"] = json!(d);
            }
            tool
        })
        .collect();
    let mut tool_choice = match req.tool_choice.as_ref().map(ToolChoice::mode).transpose() {
        Err(why) => return Err(bad_request(why, "tool_choice")),
        Ok(None) => None,
        Ok(Some(ToolChoiceMode::Auto)) => Some(json!({"type": "auto"})),
        Ok(Some(ToolChoiceMode::Required)) => Some(json!({"type": "any"})),
        Ok(Some(ToolChoiceMode::None)) => Some(json!({"type": "none"})),
        Ok(Some(ToolChoiceMode::Function(name))) => Some(json!({"type": "tool", "name": name})),
    };
    if let Some(name) = json_tool_name(req) {
        let schema = req
            .response_format
            .as_ref()
            .and_then(|f| f.extra.get("json_schema"))
            .and_then(|s| s.get("schema"))
            .cloned()
            .unwrap_or_else(|| json!({"type": "object"}));
        tools.push(json!({"name": name, "description": "Respond with the final answer as this tool's input.", "input_schema": schema}));
        tool_choice = Some(json!({"type": "tool", "name": name}));
    }
    if req.parallel_tool_calls == Some(false) && !tools.is_empty() {
        let mut choice = tool_choice.take().unwrap_or_else(|| json!({"type": "auto"}));
        choice["disable_parallel_tool_use"] = json!(true);
        tool_choice = Some(choice);
    }
    if !tools.is_empty() {
        body.insert("tools".into(), Value::Array(tools));
    }
    if let Some(choice) = tool_choice {
        body.insert("tool_choice".into(), choice);
    }
    if req.is_streaming() {
        body.insert("stream".into(), json!(true));
    }
    Ok(Value::Object(body))
}

/// Anthropic merges consecutive turns of one role; doing it here keeps tool results for parallel calls in
/// one user turn, as the API requires.
fn push_turn(messages: &mut Vec<Value>, role: &str, blocks: Vec<Value>) {
    if let Some(last) = messages.last_mut()
        && last["role"] == role
        && let Some(content) = last["content"].as_array_mut()
    {
        content.extend(blocks);
        return;
    }
    messages.push(json!({"role": role, "content": blocks}));
}

fn text_blocks(m: &Message, i: usize) -> Result<Vec<Value>, ProviderError> {
    Ok(content_blocks(m, i)?.into_iter().filter(|b| b["type"] == "text").collect())
}

fn content_blocks(m: &Message, i: usize) -> Result<Vec<Value>, ProviderError> {
    match &m.content {
        None => Ok(Vec::new()),
        Some(Content::Text(t)) => Ok(vec![json!({"type": "text", "text": t})]),
        Some(Content::Parts(parts)) => parts
            .iter()
            .enumerate()
            .map(|(j, p)| {
                let mut block = match (p.kind.as_str(), &p.text, &p.image_url) {
                    ("text", Some(t), _) => json!({"type": "text", "text": t}),
                    ("image_url", _, Some(img)) => image_block(&img.url).ok_or_else(|| {
                        bad_request(
                            "Images must be https URLs or base64 data: URLs.",
                            &format!("messages[{i}].content[{j}].image_url"),
                        )
                    })?,
                    (other, _, _) => {
                        return Err(bad_request(
                            format!("Content parts of type '{other}' cannot be sent to Anthropic models."),
                            &format!("messages[{i}].content[{j}]"),
                        ));
                    }
                };
                if let Some(cache) = p.extra.get("cache_control") {
                    block["cache_control"] = cache.clone();
                }
                Ok(block)
            })
            .collect(),
    }
}

/// Images are passed by reference or inline; the gateway never fetches a caller's URL itself.
fn image_block(url: &str) -> Option<Value> {
    if url.starts_with("data:") {
        let (media_type, data) = inline_image(url)?;
        return Some(json!({"type": "image", "source": {"type": "base64", "media_type": media_type, "data": data}}));
    }
    url.starts_with("https://").then(|| json!({"type": "image", "source": {"type": "url", "url": url}}))
}

fn finish_reason(stop_reason: Option<&str>, json_mode: bool) -> &'static str {
    match stop_reason {
        Some("max_tokens") => "length",
        Some("tool_use") if json_mode => "stop",
        Some("tool_use") => "tool_calls",
        Some("refusal") => "content_filter",
        _ => "stop",
    }
}

#[derive(Deserialize)]
struct AnthropicMessage {
    id: String,
    model: String,
    #[serde(default)]
    content: Vec<Block>,
    stop_reason: Option<String>,
    #[serde(default)]
    usage: AnthropicUsage,
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Block {
    Text {
        text: String,
    },
    Thinking {
        thinking: String,
    },
    ToolUse {
        id: String,
        name: String,
        input: Value,
    },
    #[serde(other)]
    Other,
}

#[derive(Debug, Default, Clone, Deserialize)]
struct AnthropicUsage {
    #[serde(default)]
    input_tokens: u64,
    #[serde(default)]
    output_tokens: u64,
    #[serde(default)]
    cache_creation_input_tokens: Option<u64>,
    #[serde(default)]
    cache_read_input_tokens: Option<u64>,
}

impl AnthropicUsage {
    /// OpenAI counts cached prompt tokens inside `prompt_tokens`; Anthropic reports them apart.
    fn to_canonical(&self) -> Usage {
        let cached = self.cache_read_input_tokens.unwrap_or(0);
        let written = self.cache_creation_input_tokens.unwrap_or(0);
        let prompt = self.input_tokens + cached + written;
        Usage {
            prompt_tokens: prompt,
            completion_tokens: self.output_tokens,
            total_tokens: prompt + self.output_tokens,
            prompt_tokens_details: Some(PromptTokensDetails {
                cached_tokens: Some(cached),
                cache_write_tokens: Some(written),
                extra: Map::new(),
            }),
            completion_tokens_details: Some(CompletionTokensDetails { reasoning_tokens: None, extra: Map::new() }),
            extra: Map::new(),
        }
    }
}

#[derive(Deserialize)]
struct ErrorEnvelope {
    error: ErrorDetail,
}

#[derive(Deserialize)]
struct ErrorDetail {
    #[serde(rename = "type", default)]
    kind: String,
    #[serde(default)]
    message: String,
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum StreamEvent {
    MessageStart {
        message: StartMessage,
    },
    ContentBlockStart {
        index: u32,
        content_block: Value,
    },
    ContentBlockDelta {
        index: u32,
        delta: Value,
    },
    ContentBlockStop {},
    MessageDelta {
        delta: Value,
        #[serde(default)]
        usage: Option<AnthropicUsage>,
    },
    MessageStop {},
    Ping {},
    Error {
        error: ErrorDetail,
    },
    #[serde(other)]
    Unknown,
}

#[derive(Deserialize)]
struct StartMessage {
    id: String,
    model: String,
    #[serde(default)]
    usage: AnthropicUsage,
}

/// Per-stream state: which content block is which tool call, and the usage so far.
#[derive(Default)]
struct AnthropicStream {
    id: String,
    model: String,
    created: u64,
    usage: AnthropicUsage,
    /// Content block index → tool-call index in the OpenAI stream.
    tool_blocks: Vec<(u32, u32)>,
    tool_calls: u32,
    json_tool: Option<String>,
    json_block: Option<u32>,
    finish: Option<&'static str>,
}

impl AnthropicStream {
    fn chunk(&self, delta: Delta, finish: Option<&str>) -> ChatChunk {
        ChatChunk {
            id: self.id.clone(),
            object: "chat.completion.chunk".to_owned(),
            created: self.created,
            model: self.model.clone(),
            choices: vec![ChunkChoice { index: 0, delta, finish_reason: finish.map(str::to_owned), extra: Map::new() }],
            usage: None,
            extra: Map::new(),
        }
    }
}

impl StreamMapper for AnthropicStream {
    fn map(&mut self, event: &SseEvent, out: &mut Vec<ChatChunk>) -> Result<StreamStep, ProviderError> {
        let parsed: StreamEvent = serde_json::from_str(&event.data).map_err(|e| {
            ProviderError::new(ErrorKind::InvalidResponse, format!("unreadable Anthropic stream event: {e}"))
        })?;
        match parsed {
            StreamEvent::MessageStart { message } => {
                self.id = message.id;
                self.model = message.model;
                self.created = super::unix_now();
                self.usage = message.usage;
                out.push(self.chunk(
                    Delta { role: Some("assistant".to_owned()), content: Some(String::new()), ..Delta::default() },
                    None,
                ));
            }
            StreamEvent::ContentBlockStart { index, content_block } => {
                if content_block["type"] == "tool_use" {
                    let name = content_block["name"].as_str().unwrap_or_default().to_owned();
                    if Some(&name) == self.json_tool.as_ref() {
                        self.json_block = Some(index);
                        return Ok(StreamStep::Continue);
                    }
                    let call = self.tool_calls;
                    self.tool_calls += 1;
                    self.tool_blocks.push((index, call));
                    let delta = ToolCallDelta {
                        index: call,
                        id: content_block["id"].as_str().map(str::to_owned),
                        kind: Some("function".to_owned()),
                        function: Some(FunctionCallDelta {
                            name: Some(name),
                            arguments: Some(String::new()),
                            extra: Map::new(),
                        }),
                        extra: Map::new(),
                    };
                    out.push(self.chunk(Delta { tool_calls: Some(vec![delta]), ..Delta::default() }, None));
                }
            }
            StreamEvent::ContentBlockDelta { index, delta } => {
                let piece = |key: &str| delta[key].as_str().map(str::to_owned);
                let d = match delta["type"].as_str() {
                    Some("text_delta") => Delta { content: piece("text"), ..Delta::default() },
                    Some("thinking_delta") => Delta { reasoning_content: piece("thinking"), ..Delta::default() },
                    Some("input_json_delta") if self.json_block == Some(index) => {
                        Delta { content: piece("partial_json"), ..Delta::default() }
                    }
                    Some("input_json_delta") => {
                        let Some(&(_, call)) = self.tool_blocks.iter().find(|(b, _)| *b == index) else {
                            return Ok(StreamStep::Continue);
                        };
                        let args =
                            FunctionCallDelta { name: None, arguments: piece("partial_json"), extra: Map::new() };
                        Delta {
                            tool_calls: Some(vec![ToolCallDelta {
                                index: call,
                                id: None,
                                kind: None,
                                function: Some(args),
                                extra: Map::new(),
                            }]),
                            ..Delta::default()
                        }
                    }
                    _ => return Ok(StreamStep::Continue), // signature deltas and future types carry nothing to show
                };
                if !d.is_empty() {
                    out.push(self.chunk(d, None));
                }
            }
            StreamEvent::MessageDelta { delta, usage } => {
                if let Some(u) = usage {
                    self.usage.output_tokens = u.output_tokens;
                    if u.input_tokens > 0 {
                        self.usage.input_tokens = u.input_tokens;
                    }
                }
                let finish = finish_reason(delta["stop_reason"].as_str(), self.json_tool.is_some());
                self.finish = Some(finish);
                out.push(self.chunk(Delta::default(), Some(finish)));
            }
            StreamEvent::MessageStop {} => {
                let mut last = self.chunk(Delta::default(), None);
                last.choices.clear();
                last.usage = Some(self.usage.to_canonical());
                out.push(last);
                return Ok(StreamStep::Done);
            }
            StreamEvent::Error { error } => {
                let status = match error.kind.as_str() {
                    "overloaded_error" => 529,
                    "rate_limit_error" => 429,
                    _ => 500,
                };
                let mut e = classify(status, &error.kind, &error.message, None);
                if e.kind == ErrorKind::ServerError {
                    e.kind = ErrorKind::StreamInterrupted;
                }
                return Err(e);
            }
            StreamEvent::ContentBlockStop {} | StreamEvent::Ping {} | StreamEvent::Unknown => {}
        }
        Ok(StreamStep::Continue)
    }
}
