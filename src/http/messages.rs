//! Anthropic's front door: `POST /v1/messages` (and `/v1/messages/count_tokens`), so the Anthropic SDKs
//! and tools built on them reach any model behind Switchyard, Anthropic's or not.
//!
//! The request is translated to the canonical (OpenAI) chat request and served by the same path as
//! `/v1/chat/completions` (routing, admission, fallback, accounting); only the rendering differs: a
//! Messages object, or the Messages stream (`message_start`, `content_block_*`, `message_delta`,
//! `message_stop`). Errors use Anthropic's shape (`{"type":"error","error":{"type","message"}}`).
//!
//! Maps: `system` (string or text blocks) → a system message; `text`, `image` (base64 or URL), `tool_use`
//! and `tool_result` blocks → OpenAI parts, tool calls and tool messages; `tools` → functions;
//! `tool_choice` (`any` → `required`, `tool` → a named function, `disable_parallel_tool_use` →
//! `parallel_tool_calls: false`); `stop_sequences` → `stop`; `metadata.user_id` → `user`; `thinking` →
//! `reasoning_effort`. Thinking comes back as `thinking` blocks. Dropped: `top_k`, `cache_control`,
//! `service_tier`. Refused (400): `document` and other block types, server tools.

use std::sync::Arc;

use axum::Extension;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::HeaderMap;
use serde::Deserialize;
use serde_json::{Map, Value, json};
use tokio::time::Instant;

use super::chat::{Dialect, StreamEncoder, serve_chat};
use super::observe::RequestId;
use super::{GatewayError, body};
use crate::app::AppState;
use crate::routing::{Caller, RequestFeatures};
use crate::schema::{
    ChatChunk, ChatRequest, ChatResponse, Content, ContentPart, FunctionCall, FunctionDef, ImageUrl, Message, Role,
    Stop, Tool, ToolCall, ToolChoice, Usage,
};
use crate::tenancy::ActiveKey;

#[derive(Debug, Deserialize)]
struct MessagesRequest {
    model: String,
    max_tokens: u32,
    messages: Vec<InMessage>,
    #[serde(default)]
    system: Option<System>,
    #[serde(default)]
    stop_sequences: Option<Vec<String>>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    temperature: Option<f64>,
    #[serde(default)]
    top_p: Option<f64>,
    #[serde(default)]
    tools: Option<Vec<InTool>>,
    #[serde(default)]
    tool_choice: Option<InToolChoice>,
    #[serde(default)]
    metadata: Option<Map<String, Value>>,
    #[serde(default)]
    thinking: Option<Thinking>,
    /// Switchyard's own routing fields work here too.
    #[serde(default)]
    prefer: Option<Value>,
    #[serde(default)]
    models: Option<Value>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum System {
    Text(String),
    Blocks(Vec<TextBlock>),
}

#[derive(Debug, Deserialize)]
struct TextBlock {
    text: String,
}

#[derive(Debug, Deserialize)]
struct InMessage {
    role: InRole,
    content: InContent,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum InRole {
    User,
    Assistant,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum InContent {
    Text(String),
    Blocks(Vec<Value>),
}

#[derive(Debug, Deserialize)]
struct InTool {
    name: String,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    input_schema: Option<Value>,
    #[serde(default, rename = "type")]
    kind: Option<String>,
}

#[derive(Debug, Deserialize)]
struct InToolChoice {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    disable_parallel_tool_use: Option<bool>,
}

#[derive(Debug, Deserialize)]
struct Thinking {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    budget_tokens: Option<u32>,
}

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
    Ok(axum::Json(json!({"input_tokens": features.prompt_tokens().await})).into_response())
}

fn invalid(message: impl Into<String>, param: &str) -> GatewayError {
    GatewayError::invalid_value(message, param)
}

/// Anthropic's request as the canonical chat request.
fn to_chat(req: MessagesRequest) -> Result<ChatRequest, GatewayError> {
    if req.max_tokens == 0 {
        return Err(invalid("max_tokens: must be at least 1.", "max_tokens"));
    }
    if req.messages.is_empty() {
        return Err(invalid("messages: at least one message is required.", "messages"));
    }
    let mut messages = Vec::with_capacity(req.messages.len() + 1);
    let system = match req.system {
        Some(System::Text(t)) => Some(t),
        Some(System::Blocks(blocks)) => Some(blocks.into_iter().map(|b| b.text).collect::<Vec<_>>().join("\n\n")),
        None => None,
    };
    if let Some(text) = system.filter(|t| !t.is_empty()) {
        messages.push(message(Role::System, Some(Content::Text(text))));
    }
    for (i, m) in req.messages.into_iter().enumerate() {
        let blocks = match m.content {
            InContent::Text(t) => {
                let role = if m.role == InRole::User { Role::User } else { Role::Assistant };
                messages.push(message(role, Some(Content::Text(t))));
                continue;
            }
            InContent::Blocks(blocks) => blocks,
        };
        match m.role {
            InRole::User => user_blocks(i, blocks, &mut messages)?,
            InRole::Assistant => messages.push(assistant_blocks(i, blocks)?),
        }
    }
    let tools = match req.tools {
        Some(tools) => Some(
            tools
                .into_iter()
                .enumerate()
                .map(|(i, t)| {
                    if t.kind.as_deref().is_some_and(|k| k != "custom") {
                        return Err(invalid(
                            format!("tools.{i}: server tools ({}) are not supported.", t.kind.unwrap_or_default()),
                            &format!("tools.{i}.type"),
                        ));
                    }
                    Ok(Tool {
                        kind: "function".into(),
                        function: Some(FunctionDef {
                            name: t.name,
                            description: t.description,
                            parameters: t.input_schema,
                            strict: None,
                            extra: Map::new(),
                        }),
                        extra: Map::new(),
                    })
                })
                .collect::<Result<Vec<_>, _>>()?,
        ),
        None => None,
    };
    let mut parallel_tool_calls = None;
    let tool_choice = match req.tool_choice {
        None => None,
        Some(c) => {
            if c.disable_parallel_tool_use == Some(true) {
                parallel_tool_calls = Some(false);
            }
            Some(match c.kind.as_str() {
                "auto" => ToolChoice::Mode("auto".into()),
                "any" => ToolChoice::Mode("required".into()),
                "none" => ToolChoice::Mode("none".into()),
                "tool" => {
                    let name = c
                        .name
                        .ok_or_else(|| invalid("tool_choice.name: required for type tool.", "tool_choice.name"))?;
                    let mut named = Map::new();
                    named.insert("type".into(), json!("function"));
                    named.insert("function".into(), json!({"name": name}));
                    ToolChoice::Named(named)
                }
                other => return Err(invalid(format!("tool_choice.type: unknown type '{other}'."), "tool_choice.type")),
            })
        }
    };
    let mut extra = Map::new();
    if let Some(user) = req.metadata.as_ref().and_then(|m| m.get("user_id")).and_then(Value::as_str) {
        extra.insert("user".into(), json!(user));
    }
    if let Some(t) = req.thinking.filter(|t| t.kind == "enabled") {
        let effort = match t.budget_tokens.unwrap_or(4096) {
            0..=2048 => "low",
            2049..=8192 => "medium",
            _ => "high",
        };
        extra.insert("reasoning_effort".into(), json!(effort));
    }
    if let Some(prefer) = req.prefer {
        extra.insert("prefer".into(), prefer);
    }
    if let Some(models) = req.models {
        extra.insert("models".into(), models);
    }
    Ok(ChatRequest {
        model: req.model,
        messages,
        stream: req.stream,
        stream_options: None,
        max_tokens: Some(req.max_tokens),
        max_completion_tokens: None,
        temperature: req.temperature,
        top_p: req.top_p,
        n: None,
        stop: req.stop_sequences.filter(|s| !s.is_empty()).map(Stop::Many),
        tools,
        tool_choice,
        parallel_tool_calls,
        response_format: None,
        extra,
    })
}

fn message(role: Role, content: Option<Content>) -> Message {
    Message { role, content, name: None, tool_calls: None, tool_call_id: None, extra: Map::new() }
}

fn block_type(block: &Value) -> &str {
    block.get("type").and_then(Value::as_str).unwrap_or("")
}

fn text_of(block: &Value) -> Option<&str> {
    block.get("text").and_then(Value::as_str)
}

/// A user turn: tool results become tool messages (first, answering the previous assistant turn), the
/// rest one user message.
fn user_blocks(i: usize, blocks: Vec<Value>, out: &mut Vec<Message>) -> Result<(), GatewayError> {
    let mut parts = Vec::new();
    for (j, block) in blocks.iter().enumerate() {
        let at = format!("messages.{i}.content.{j}");
        match block_type(block) {
            "text" => parts.push(text_part(text_of(block).unwrap_or_default())),
            "image" => parts.push(image_part(block, &at)?),
            "tool_result" => {
                let id = block
                    .get("tool_use_id")
                    .and_then(Value::as_str)
                    .ok_or_else(|| invalid(format!("{at}.tool_use_id: required."), &format!("{at}.tool_use_id")))?;
                let text = match block.get("content") {
                    Some(Value::String(s)) => s.clone(),
                    Some(Value::Array(inner)) => inner.iter().filter_map(text_of).collect::<Vec<_>>().join("\n"),
                    _ => String::new(),
                };
                let is_error = block.get("is_error").and_then(Value::as_bool) == Some(true);
                let text = if is_error { format!("Error: {text}") } else { text };
                let mut m = message(Role::Tool, Some(Content::Text(text)));
                m.tool_call_id = Some(id.to_owned());
                out.push(m);
            }
            other => {
                return Err(invalid(
                    format!("{at}.type: content blocks of type '{other}' are not supported here."),
                    &format!("{at}.type"),
                ));
            }
        }
    }
    if !parts.is_empty() {
        out.push(message(Role::User, Some(Content::Parts(parts))));
    }
    Ok(())
}

fn assistant_blocks(i: usize, blocks: Vec<Value>) -> Result<Message, GatewayError> {
    let mut text = String::new();
    let mut calls = Vec::new();
    for (j, block) in blocks.iter().enumerate() {
        let at = format!("messages.{i}.content.{j}");
        match block_type(block) {
            "text" => text.push_str(text_of(block).unwrap_or_default()),
            "tool_use" => {
                let field = |name: &str| {
                    block
                        .get(name)
                        .and_then(Value::as_str)
                        .map(str::to_owned)
                        .ok_or_else(|| invalid(format!("{at}.{name}: required."), &format!("{at}.{name}")))
                };
                let input = block.get("input").cloned().unwrap_or_else(|| json!({}));
                calls.push(ToolCall {
                    id: field("id")?,
                    kind: "function".into(),
                    function: FunctionCall { name: field("name")?, arguments: input.to_string(), extra: Map::new() },
                    extra: Map::new(),
                });
            }
            // Earlier reasoning is not sent back upstream (providers sign their own).
            "thinking" | "redacted_thinking" => {}
            other => {
                return Err(invalid(
                    format!("{at}.type: content blocks of type '{other}' are not supported here."),
                    &format!("{at}.type"),
                ));
            }
        }
    }
    let mut m = message(Role::Assistant, (!text.is_empty()).then_some(Content::Text(text)));
    if !calls.is_empty() {
        m.tool_calls = Some(calls);
    }
    Ok(m)
}

fn text_part(text: &str) -> ContentPart {
    ContentPart { kind: "text".into(), text: Some(text.to_owned()), image_url: None, extra: Map::new() }
}

fn image_part(block: &Value, at: &str) -> Result<ContentPart, GatewayError> {
    let source = block.get("source").unwrap_or(&Value::Null);
    let url = match source.get("type").and_then(Value::as_str) {
        Some("base64") => {
            let media = source.get("media_type").and_then(Value::as_str).unwrap_or("image/png");
            let data = source.get("data").and_then(Value::as_str).unwrap_or_default();
            format!("data:{media};base64,{data}")
        }
        Some("url") => source.get("url").and_then(Value::as_str).unwrap_or_default().to_owned(),
        _ => {
            return Err(invalid(
                format!("{at}.source: an image needs a base64 or url source."),
                &format!("{at}.source"),
            ));
        }
    };
    Ok(ContentPart {
        kind: "image_url".into(),
        text: None,
        image_url: Some(ImageUrl { url, detail: None, extra: Map::new() }),
        extra: Map::new(),
    })
}

/// OpenAI's finish reason as Anthropic's stop reason.
fn stop_reason(finish: Option<&str>) -> Option<&'static str> {
    Some(match finish? {
        "length" => "max_tokens",
        "tool_calls" | "function_call" => "tool_use",
        "content_filter" => "refusal",
        _ => "end_turn",
    })
}

/// Anthropic counts input without cache reads and writes; OpenAI's prompt tokens include them.
fn usage_json(u: Option<&Usage>) -> Value {
    let Some(u) = u else { return json!({"input_tokens": 0, "output_tokens": 0}) };
    let (cached, written) = (u.cached_tokens(), u.cache_write_tokens());
    let mut v = json!({
        "input_tokens": u.prompt_tokens.saturating_sub(cached + written),
        "output_tokens": u.completion_tokens,
        "cache_read_input_tokens": cached,
        "cache_creation_input_tokens": written,
    });
    if let Some(cost) = u.extra.get("cost") {
        v["cost"] = cost.clone();
    }
    v
}

fn message_id(upstream_id: &str) -> String {
    if upstream_id.starts_with("msg_") {
        upstream_id.to_owned()
    } else {
        format!("msg_{}", uuid::Uuid::now_v7().simple())
    }
}

/// Renders answers as Anthropic's Messages API.
struct Messages {
    model: String,
}

impl Dialect for Messages {
    fn whole(&self, resp: &ChatResponse) -> Result<Vec<u8>, GatewayError> {
        let choice = resp.choices.first();
        let mut content = Vec::new();
        if let Some(m) = choice.map(|c| &c.message) {
            if let Some(thinking) = m.reasoning_content.as_deref().filter(|t| !t.is_empty()) {
                content.push(json!({"type": "thinking", "thinking": thinking, "signature": ""}));
            }
            if let Some(text) = m.content.as_deref().filter(|t| !t.is_empty()) {
                content.push(json!({"type": "text", "text": text}));
            }
            for call in m.tool_calls.iter().flatten() {
                let input: Value = serde_json::from_str(&call.function.arguments).unwrap_or_else(|_| json!({}));
                content.push(json!({"type": "tool_use", "id": call.id, "name": call.function.name, "input": input}));
            }
        }
        let body = json!({
            "id": message_id(&resp.id),
            "type": "message",
            "role": "assistant",
            "model": if resp.model.is_empty() { &self.model } else { &resp.model },
            "content": content,
            "stop_reason": stop_reason(choice.and_then(|c| c.finish_reason.as_deref())).unwrap_or("end_turn"),
            "stop_sequence": null,
            "usage": usage_json(resp.usage.as_ref()),
        });
        serde_json::to_vec(&body).map_err(|_| GatewayError::internal())
    }

    fn stream(&self) -> Box<dyn StreamEncoder> {
        Box::new(MessagesStream {
            model: self.model.clone(),
            started: false,
            open: None,
            next_index: 0,
            stop_reason: None,
            usage: None,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Block {
    Thinking,
    Text,
    /// A tool call, by its OpenAI index.
    Tool(u32),
}

/// The Messages stream, built from chat chunks: blocks open and close as the kind of content changes.
struct MessagesStream {
    model: String,
    started: bool,
    open: Option<(u32, Block)>,
    next_index: u32,
    stop_reason: Option<&'static str>,
    usage: Option<Usage>,
}

fn event(name: &str, data: &Value) -> Bytes {
    let mut buf = Vec::with_capacity(64);
    buf.extend_from_slice(b"event: ");
    buf.extend_from_slice(name.as_bytes());
    buf.extend_from_slice(b"\ndata: ");
    buf.extend_from_slice(data.to_string().as_bytes());
    buf.extend_from_slice(b"\n\n");
    Bytes::from(buf)
}

impl MessagesStream {
    fn start(&mut self, id: &str, model: &str, out: &mut Vec<Bytes>) {
        if self.started {
            return;
        }
        self.started = true;
        let model = if model.is_empty() { &self.model } else { model };
        out.push(event(
            "message_start",
            &json!({"type": "message_start", "message": {
                "id": message_id(id), "type": "message", "role": "assistant", "model": model,
                "content": [], "stop_reason": null, "stop_sequence": null,
                "usage": {"input_tokens": 0, "output_tokens": 0},
            }}),
        ));
    }

    fn close(&mut self, out: &mut Vec<Bytes>) {
        if let Some((index, _)) = self.open.take() {
            out.push(event("content_block_stop", &json!({"type": "content_block_stop", "index": index})));
        }
    }

    /// Makes `kind` the open block (closing another), returning its index.
    fn open(&mut self, kind: Block, start: Value, out: &mut Vec<Bytes>) -> u32 {
        if let Some((index, open)) = self.open
            && open == kind
        {
            return index;
        }
        self.close(out);
        let index = self.next_index;
        self.next_index += 1;
        self.open = Some((index, kind));
        out.push(event(
            "content_block_start",
            &json!({"type": "content_block_start", "index": index, "content_block": start}),
        ));
        index
    }

    fn delta(index: u32, delta: Value, out: &mut Vec<Bytes>) {
        out.push(event("content_block_delta", &json!({"type": "content_block_delta", "index": index, "delta": delta})));
    }
}

impl StreamEncoder for MessagesStream {
    fn chunk(&mut self, chunk: &ChatChunk, out: &mut Vec<Bytes>) {
        self.start(&chunk.id, &chunk.model, out);
        if let Some(u) = &chunk.usage {
            self.usage = Some(u.clone());
        }
        let Some(choice) = chunk.choices.iter().find(|c| c.index == 0) else { return };
        let d = &choice.delta;
        if let Some(thinking) = d.reasoning_content.as_deref().filter(|t| !t.is_empty()) {
            let index = self.open(Block::Thinking, json!({"type": "thinking", "thinking": "", "signature": ""}), out);
            Self::delta(index, json!({"type": "thinking_delta", "thinking": thinking}), out);
        }
        if let Some(text) = d.content.as_deref().filter(|t| !t.is_empty()) {
            let index = self.open(Block::Text, json!({"type": "text", "text": ""}), out);
            Self::delta(index, json!({"type": "text_delta", "text": text}), out);
        }
        for call in d.tool_calls.iter().flatten() {
            let function = call.function.as_ref();
            let is_open = matches!(self.open, Some((_, Block::Tool(i))) if i == call.index);
            let index = if is_open {
                self.open.map_or(0, |(index, _)| index)
            } else {
                let name = function.and_then(|f| f.name.as_deref()).unwrap_or_default();
                let id = call.id.clone().unwrap_or_else(|| format!("toolu_{}", uuid::Uuid::now_v7().simple()));
                self.open(
                    Block::Tool(call.index),
                    json!({"type": "tool_use", "id": id, "name": name, "input": {}}),
                    out,
                )
            };
            if let Some(args) = function.and_then(|f| f.arguments.as_deref()).filter(|a| !a.is_empty()) {
                Self::delta(index, json!({"type": "input_json_delta", "partial_json": args}), out);
            }
        }
        if let Some(reason) = stop_reason(choice.finish_reason.as_deref()) {
            self.stop_reason = Some(reason);
        }
    }

    fn done(&mut self, out: &mut Vec<Bytes>) {
        self.start("", "", out);
        self.close(out);
        out.push(event(
            "message_delta",
            &json!({"type": "message_delta",
                    "delta": {"stop_reason": self.stop_reason.unwrap_or("end_turn"), "stop_sequence": null},
                    "usage": usage_json(self.usage.as_ref())}),
        ));
        out.push(event("message_stop", &json!({"type": "message_stop"})));
    }

    fn error(&mut self, e: &GatewayError) -> Bytes {
        event("error", &anthropic_error(e.status.as_u16(), e.kind, &e.message))
    }
}

/// Anthropic's error object for a status and an OpenAI error type.
fn anthropic_error(status: u16, openai_type: &str, message: &str) -> Value {
    let kind = match status {
        400 | 413 | 415 | 422 => "invalid_request_error",
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        408 => "timeout_error",
        429 => "rate_limit_error",
        503 | 529 => "overloaded_error",
        _ if openai_type == "rate_limit_error" => "rate_limit_error",
        _ => "api_error",
    };
    json!({"type": "error", "error": {"type": kind, "message": message}})
}

/// Every error answered on the Messages routes, from any layer (auth, body limits, routing, providers),
/// in Anthropic's shape; OpenAI's `code` and `param` are kept beside it for diagnosis.
pub async fn anthropic_errors(req: Request, next: Next) -> Response {
    super::error::rewrite_error(next.run(req).await, |status, err| {
        let mut out = anthropic_error(
            status,
            err["type"].as_str().unwrap_or_default(),
            err["message"].as_str().unwrap_or("Request failed."),
        );
        for field in ["code", "param"] {
            if let Some(v) = err.get(field).filter(|v| !v.is_null()) {
                out["error"][field] = v.clone();
            }
        }
        out
    })
    .await
}
