//! The Anthropic adapter: canonical chat requests as Messages requests, and Messages answers and stream
//! events back as canonical responses and chunks. What is mapped and dropped is in the protocol's header.

use http::{HeaderMap, HeaderValue, StatusCode, header};
use serde_json::{Map, Value, json};

use super::errors::{classify, in_stream};
use super::wire::{
    Block, ErrorEnvelope, InputMessage, Message as WireMessage, MessageContent, MessagesRequest, Metadata,
    Role as WireRole, Source, StreamEvent, System, Thinking, ToolChoice as WireToolChoice, ToolDef, ToolResultContent,
    Usage as WireUsage,
};
use crate::protocols::error::{ErrorKind, ProviderError, retry_after};
use crate::protocols::tool_blocks::{ToolBlocks, json_tool_name, json_tool_schema};
use crate::protocols::{Adapter, Endpoint, Native, NativeCall, StreamMapper, StreamStep, UpstreamRequest, bad_request};
use crate::schema::{
    ChatChunk, ChatRequest, ChatResponse, Choice, CompletionTokensDetails, Content, Delta, FunctionCall, Message,
    PromptTokensDetails, ResponseMessage, Role, Stop, ToolCall, ToolChoice, ToolChoiceMode, Usage, inline_image,
};
use crate::sse::SseEvent;

pub const DEFAULT_VERSION: &str = "2023-06-01";
const DEFAULT_MAX_TOKENS: u32 = 4096;

#[derive(Debug)]
pub struct AnthropicAdapter {
    /// The `anthropic-version` header sent unless the operator's headers set one.
    pub version: String,
}

impl AnthropicAdapter {
    /// JSON, the key in `x-api-key`, and `anthropic-version` (the operator's, else the caller's, else ours).
    fn headers(&self, endpoint: &Endpoint<'_>, forwarded: &HeaderMap) -> Result<HeaderMap, ProviderError> {
        let mut headers = endpoint.headers.clone();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        for name in FORWARDED_HEADERS {
            if let Some(v) = forwarded.get(*name).filter(|_| !headers.contains_key(*name)) {
                headers.insert(*name, v.clone());
            }
        }
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
        Ok(headers)
    }
}

/// The caller's Messages headers that travel with a request passed through natively.
pub const FORWARDED_HEADERS: &[&str] = &["anthropic-version", "anthropic-beta"];

fn messages_url(endpoint: &Endpoint<'_>) -> String {
    format!("{}/v1/messages", endpoint.base_url.trim_end_matches('/'))
}

impl Adapter for AnthropicAdapter {
    fn chat_request(&self, req: &ChatRequest, endpoint: &Endpoint<'_>) -> Result<UpstreamRequest, ProviderError> {
        let body = translate_request(req)?;
        let body = crate::protocols::encode(&body)?;
        Ok(UpstreamRequest { url: messages_url(endpoint), headers: self.headers(endpoint, &HeaderMap::new())?, body })
    }

    fn speaks(&self, protocol: Native) -> bool {
        protocol == Native::Messages
    }

    fn native_request(
        &self,
        protocol: Native,
        call: NativeCall<'_>,
        endpoint: &Endpoint<'_>,
    ) -> Result<UpstreamRequest, ProviderError> {
        if protocol != Native::Messages {
            return Err(bad_request("Anthropic speaks the Messages API only.", "model"));
        }
        Ok(UpstreamRequest {
            url: messages_url(endpoint),
            headers: self.headers(endpoint, call.forwarded)?,
            body: call.body,
        })
    }

    fn parse_chat_response(&self, req: &ChatRequest, body: &[u8]) -> Result<ChatResponse, ProviderError> {
        let msg: WireMessage = serde_json::from_slice(body).map_err(|e| {
            ProviderError::new(ErrorKind::InvalidResponse, format!("unreadable Anthropic message: {e}"))
        })?;
        let json_tool = json_tool_name(req);
        let mut text = String::new();
        let mut reasoning = String::new();
        let mut calls = Vec::new();
        for block in msg.content {
            match block.kind.as_str() {
                "text" => text.push_str(block.text.as_deref().unwrap_or_default()),
                "thinking" => reasoning.push_str(block.thinking.as_deref().unwrap_or_default()),
                "tool_use" if block.name.is_some() && block.name == json_tool => {
                    text.push_str(&block.input.unwrap_or_else(|| json!({})).to_string());
                }
                "tool_use" => calls.push(ToolCall {
                    id: block.id.unwrap_or_default(),
                    kind: "function".to_owned(),
                    function: FunctionCall {
                        name: block.name.unwrap_or_default(),
                        arguments: block.input.unwrap_or_else(|| json!({})).to_string(),
                        extra: Map::new(),
                    },
                    extra: Map::new(),
                }),
                _ => {}
            }
        }
        let finish = finish_reason(msg.stop_reason.as_deref(), json_tool.is_some());
        Ok(ChatResponse {
            id: msg.id,
            object: "chat.completion".to_owned(),
            created: crate::protocols::unix_now(),
            model: msg.model,
            choices: vec![Choice {
                index: 0,
                message: ResponseMessage::assistant(text, reasoning, calls),
                finish_reason: Some(finish.to_owned()),
                extra: Map::new(),
            }],
            usage: Some(to_canonical(&msg.usage)),
            extra: Map::new(),
        })
    }

    fn stream_mapper(&self, req: &ChatRequest) -> Box<dyn StreamMapper> {
        Box::new(AnthropicStream { tools: ToolBlocks::for_request(req), ..AnthropicStream::default() })
    }

    /// A final assistant turn is a prefill: the model continues it.
    fn prefill(&self) -> crate::config::presets::Prefill {
        crate::config::presets::Prefill::AssistantTurn
    }

    /// Anthropic returns one choice: the gateway makes `n` calls.
    fn supports_n(&self) -> bool {
        false
    }

    fn classify_error(&self, status: StatusCode, headers: &HeaderMap, body: &[u8]) -> ProviderError {
        let detail = serde_json::from_slice::<ErrorEnvelope>(body).ok().map(|e| e.error);
        let kind_text = detail.as_ref().map(|d| d.kind.as_str()).unwrap_or_default();
        let upstream = detail.as_ref().map(|d| d.message.clone()).unwrap_or_default();
        classify(status.as_u16(), kind_text, &upstream, retry_after(headers))
    }
}

pub fn translate_request(req: &ChatRequest) -> Result<MessagesRequest, ProviderError> {
    if req.n.is_some_and(|n| n > 1) {
        return Err(bad_request("Anthropic models return one choice; 'n' must be 1.", "n"));
    }
    let mut system: Vec<Block> = Vec::new();
    let mut messages: Vec<InputMessage> = Vec::new();
    for (i, m) in req.messages.iter().enumerate() {
        match m.role {
            Role::System | Role::Developer => {
                system.extend(content_blocks(m, i)?.into_iter().filter(|b| b.kind == "text"));
            }
            Role::User => push_turn(&mut messages, WireRole::User, content_blocks(m, i)?),
            Role::Assistant => {
                let mut blocks = match &m.content {
                    Some(_) => content_blocks(m, i)?,
                    None => Vec::new(),
                };
                for call in m.tool_calls.iter().flatten() {
                    let input: Value = serde_json::from_str(&call.function.arguments).unwrap_or_else(|_| json!({}));
                    blocks.push(Block::tool_use(&call.id, &call.function.name, input));
                }
                push_turn(&mut messages, WireRole::Assistant, blocks);
            }
            Role::Tool | Role::Function => {
                let id = m.tool_call_id.clone().or_else(|| m.name.clone()).unwrap_or_default();
                let content = m.content.as_ref().map(Content::to_text).unwrap_or_default();
                let result = Block {
                    kind: "tool_result".into(),
                    tool_use_id: Some(id),
                    content: Some(ToolResultContent::Text(content)),
                    ..Block::default()
                };
                push_turn(&mut messages, WireRole::User, vec![result]);
            }
        }
    }
    let mut max_tokens = req.max_output_tokens().unwrap_or(DEFAULT_MAX_TOKENS);
    let thinking = req.extra.get("reasoning_effort").and_then(Value::as_str).map(|effort| {
        let budget = match effort {
            "minimal" | "low" => 1024,
            "medium" => 4096,
            _ => 16384,
        };
        max_tokens = max_tokens.max(budget + 1024);
        Thinking { kind: "enabled".into(), budget_tokens: Some(budget), extra: Map::new() }
    });
    let mut tools: Vec<ToolDef> = req
        .tools
        .iter()
        .flatten()
        .filter_map(|t| t.function.as_ref())
        .map(|f| ToolDef {
            name: f.name.clone(),
            description: f.description.clone(),
            input_schema: Some(f.parameters.clone().unwrap_or_else(|| json!({"type": "object"}))),
            ..ToolDef::default()
        })
        .collect();
    let choice = |kind: &str, name: Option<&str>| WireToolChoice {
        kind: kind.to_owned(),
        name: name.map(str::to_owned),
        ..WireToolChoice::default()
    };
    let mut tool_choice = match req.tool_choice.as_ref().map(ToolChoice::mode).transpose() {
        Err(why) => return Err(bad_request(why, "tool_choice")),
        Ok(None) => None,
        Ok(Some(ToolChoiceMode::Auto)) => Some(choice("auto", None)),
        Ok(Some(ToolChoiceMode::Required)) => Some(choice("any", None)),
        Ok(Some(ToolChoiceMode::None)) => Some(choice("none", None)),
        Ok(Some(ToolChoiceMode::Function(name))) => Some(choice("tool", Some(name))),
    };
    if let Some(name) = json_tool_name(req) {
        tools.push(ToolDef {
            name: name.clone(),
            description: Some("Respond with the final answer as this tool's input.".into()),
            input_schema: Some(json_tool_schema(req)),
            ..ToolDef::default()
        });
        tool_choice = Some(choice("tool", Some(&name)));
    }
    // Anthropic refuses thinking with a forced tool (`any` or a named one, JSON mode included): the forced
    // tool is what the caller's request means, so thinking gives way.
    let thinking =
        thinking.filter(|_| !tool_choice.as_ref().is_some_and(|c| matches!(c.kind.as_str(), "any" | "tool")));
    if thinking.is_none() && req.extra.contains_key("reasoning_effort") {
        max_tokens = req.max_output_tokens().unwrap_or(DEFAULT_MAX_TOKENS);
    }
    if req.parallel_tool_calls == Some(false) && !tools.is_empty() {
        let mut c = tool_choice.take().unwrap_or_else(|| choice("auto", None));
        c.disable_parallel_tool_use = Some(true);
        tool_choice = Some(c);
    }
    Ok(MessagesRequest {
        model: req.model.clone(),
        max_tokens,
        messages,
        system: (!system.is_empty()).then_some(System::Blocks(system)),
        stop_sequences: match &req.stop {
            Some(Stop::One(s)) => Some(vec![s.clone()]),
            Some(Stop::Many(v)) if !v.is_empty() => Some(v.clone()),
            _ => None,
        },
        stream: req.is_streaming().then_some(true),
        temperature: req.temperature,
        top_p: req.top_p,
        top_k: req.extra.get("top_k").and_then(Value::as_u64).map(|k| k.min(u64::from(u32::MAX)) as u32),
        tools: (!tools.is_empty()).then_some(tools),
        tool_choice,
        metadata: req
            .extra
            .get("user")
            .and_then(Value::as_str)
            .map(|u| Metadata { user_id: Some(u.to_owned()), extra: Map::new() }),
        thinking,
        extra: Map::new(),
    })
}

/// Anthropic merges consecutive turns of one role; doing it here keeps tool results for parallel calls in
/// one user turn, as the API requires.
fn push_turn(messages: &mut Vec<InputMessage>, role: WireRole, blocks: Vec<Block>) {
    if let Some(last) = messages.last_mut()
        && last.role == role
        && let MessageContent::Blocks(content) = &mut last.content
    {
        content.extend(blocks);
        return;
    }
    messages.push(InputMessage { role, content: MessageContent::Blocks(blocks), extra: Map::new() });
}

fn content_blocks(m: &Message, i: usize) -> Result<Vec<Block>, ProviderError> {
    match &m.content {
        None => Ok(Vec::new()),
        Some(Content::Text(t)) => Ok(vec![Block::text(t)]),
        Some(Content::Parts(parts)) => parts
            .iter()
            .enumerate()
            .map(|(j, p)| {
                let mut block = match (p.kind.as_str(), &p.text, &p.image_url) {
                    ("text", Some(t), _) => Block::text(t),
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
                block.cache_control = p.extra.get("cache_control").cloned();
                Ok(block)
            })
            .collect(),
    }
}

/// Images are passed by reference or inline; the gateway never fetches a caller's URL itself.
fn image_block(url: &str) -> Option<Block> {
    let source = if url.starts_with("data:") {
        let (media_type, data) = inline_image(url)?;
        Source {
            kind: "base64".into(),
            media_type: Some(media_type.to_owned()),
            data: Some(data.to_owned()),
            ..Source::default()
        }
    } else if url.starts_with("https://") {
        Source { kind: "url".into(), url: Some(url.to_owned()), ..Source::default() }
    } else {
        return None;
    };
    Some(Block { kind: "image".into(), source: Some(source), ..Block::default() })
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

/// OpenAI counts cached prompt tokens inside `prompt_tokens`; Anthropic reports them apart.
pub(super) fn to_canonical(u: &WireUsage) -> Usage {
    let cached = u.cache_read_input_tokens.unwrap_or(0);
    let written = u.cache_creation_input_tokens.unwrap_or(0);
    let prompt = u.input_tokens + cached + written;
    Usage {
        prompt_tokens: prompt,
        completion_tokens: u.output_tokens,
        total_tokens: prompt + u.output_tokens,
        prompt_tokens_details: Some(PromptTokensDetails {
            cached_tokens: Some(cached),
            cache_write_tokens: Some(written),
            extra: Map::new(),
        }),
        completion_tokens_details: Some(CompletionTokensDetails { reasoning_tokens: None, extra: Map::new() }),
        extra: Map::new(),
    }
}

/// Per-stream state: which content block is which tool call, and the usage so far.
#[derive(Default)]
struct AnthropicStream {
    id: String,
    model: String,
    created: u64,
    usage: WireUsage,
    tools: ToolBlocks,
}

impl AnthropicStream {
    fn chunk(&self, delta: Delta, finish: Option<&str>) -> ChatChunk {
        ChatChunk::single(&self.id, self.created, &self.model, delta, finish)
    }
}

impl StreamMapper for AnthropicStream {
    fn map(&mut self, event: &SseEvent, out: &mut Vec<ChatChunk>) -> Result<StreamStep, ProviderError> {
        let ev: StreamEvent = serde_json::from_str(&event.data).map_err(|e| {
            ProviderError::new(ErrorKind::InvalidResponse, format!("unreadable Anthropic stream event: {e}"))
        })?;
        match ev.kind.as_str() {
            "message_start" => {
                let message = ev.message.ok_or_else(|| {
                    ProviderError::new(ErrorKind::InvalidResponse, "an Anthropic message_start without a message")
                })?;
                self.id = message.id;
                self.model = message.model;
                self.created = crate::protocols::unix_now();
                self.usage = message.usage;
                out.push(self.chunk(
                    Delta { role: Some("assistant".to_owned()), content: Some(String::new()), ..Delta::default() },
                    None,
                ));
            }
            "content_block_start" => {
                let (Some(index), Some(block)) = (ev.index, ev.content_block) else { return Ok(StreamStep::Continue) };
                if block.kind == "tool_use"
                    && let Some(delta) = self.tools.open(index, block.id, block.name.unwrap_or_default())
                {
                    out.push(self.chunk(delta, None));
                }
            }
            "content_block_delta" => {
                let (Some(index), Some(delta)) = (ev.index, ev.delta) else { return Ok(StreamStep::Continue) };
                let d = match delta.kind.as_deref() {
                    Some("text_delta") => Delta { content: delta.text, ..Delta::default() },
                    Some("thinking_delta") => Delta { reasoning_content: delta.thinking, ..Delta::default() },
                    Some("input_json_delta") => {
                        let Some(d) = self.tools.input(index, delta.partial_json) else {
                            return Ok(StreamStep::Continue);
                        };
                        d
                    }
                    _ => return Ok(StreamStep::Continue), // signature deltas and future types carry nothing to show
                };
                if !d.is_empty() {
                    out.push(self.chunk(d, None));
                }
            }
            "message_delta" => {
                if let Some(u) = ev.usage {
                    self.usage.output_tokens = u.output_tokens;
                    if u.input_tokens > 0 {
                        self.usage.input_tokens = u.input_tokens;
                    }
                }
                let stop = ev.delta.and_then(|d| d.stop_reason).flatten();
                let finish = finish_reason(stop.as_deref(), self.tools.json_mode());
                out.push(self.chunk(Delta::default(), Some(finish)));
            }
            "message_stop" => {
                out.push(ChatChunk::usage_only(&self.id, self.created, &self.model, to_canonical(&self.usage)));
                return Ok(StreamStep::Done);
            }
            "error" => return Err(in_stream(&ev.error.unwrap_or_default())),
            _ => {} // content_block_stop, ping, and future event types
        }
        Ok(StreamStep::Continue)
    }
}
