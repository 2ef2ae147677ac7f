//! The Messages door's translation: an Anthropic request into the canonical chat request, and canonical
//! answers back into a Messages object or the Messages stream (`message_start`, `content_block_*`,
//! `message_delta`, `message_stop`). What is mapped and dropped is in the protocol's header.

use bytes::Bytes;
use serde_json::{Map, Value, json};

use super::errors;
use super::wire::{
    Block, Delta, InputMessage, Message, MessageContent, MessagesRequest, Role as WireRole, StreamEvent, System,
    ToolResultContent, Usage as WireUsage,
};
use crate::protocols::{ChunkTranslator, Dialect, ErrorReply, Invalid, StreamEncoder};
use crate::schema::{
    ChatChunk, ChatRequest, ChatResponse, Content, ContentPart, FunctionCall, FunctionDef, ImageUrl,
    Message as ChatMessage, Role, Stop, Tool, ToolCall, ToolChoice, Usage,
};
use crate::sse::named_frame;

/// A Messages request as a chat request, for a model of another protocol.
pub struct Translated {
    pub chat: ChatRequest,
    /// The first thing the chat request cannot carry (a block type, a server tool): a translated
    /// attempt is refused with it, while an Anthropic upstream gets the request as it is.
    pub problem: Option<Invalid>,
}

/// Anthropic's request as the canonical chat request. An `Err` is a request Anthropic itself would
/// refuse.
pub fn to_chat(req: &MessagesRequest) -> Result<Translated, Invalid> {
    let mut problem = None;
    if req.max_tokens == 0 {
        return Err(Invalid::new("max_tokens: must be at least 1.", "max_tokens"));
    }
    if req.messages.is_empty() {
        return Err(Invalid::new("messages: at least one message is required.", "messages"));
    }
    let mut messages = Vec::with_capacity(req.messages.len() + 1);
    let system = match &req.system {
        Some(System::Text(t)) => Some(t.clone()),
        Some(System::Blocks(blocks)) => {
            Some(blocks.iter().filter_map(|b| b.text.as_deref()).collect::<Vec<_>>().join("\n\n"))
        }
        None => None,
    };
    if let Some(text) = system.filter(|t| !t.is_empty()) {
        messages.push(message(Role::System, Some(Content::Text(text))));
    }
    for (i, InputMessage { role, content, .. }) in req.messages.iter().enumerate() {
        let blocks = match content {
            MessageContent::Text(t) => {
                let role = if *role == WireRole::User { Role::User } else { Role::Assistant };
                messages.push(message(role, Some(Content::Text(t.clone()))));
                continue;
            }
            MessageContent::Blocks(blocks) => blocks,
        };
        match role {
            WireRole::User => user_blocks(i, blocks, &mut messages, &mut problem),
            WireRole::Assistant => messages.push(assistant_blocks(i, blocks, &mut problem)),
        }
    }
    let mut tools = Vec::new();
    for (i, t) in req.tools.iter().flatten().enumerate() {
        if let Some(kind) = t.kind.as_deref().filter(|k| *k != "custom") {
            problem.get_or_insert_with(|| {
                Invalid::new(
                    format!("tools.{i}: server tools ({kind}) are only available on Anthropic models."),
                    format!("tools.{i}.type"),
                )
            });
            continue;
        }
        tools.push(Tool {
            kind: "function".into(),
            function: Some(FunctionDef {
                name: t.name.clone(),
                description: t.description.clone(),
                parameters: t.input_schema.clone(),
                strict: None,
                extra: Map::new(),
            }),
            extra: Map::new(),
        });
    }
    let tools = req.tools.is_some().then_some(tools);
    let mut parallel_tool_calls = None;
    let tool_choice = match req.tool_choice.clone() {
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
                        .ok_or_else(|| Invalid::new("tool_choice.name: required for type tool.", "tool_choice.name"))?;
                    let mut named = Map::new();
                    named.insert("type".into(), json!("function"));
                    named.insert("function".into(), json!({"name": name}));
                    ToolChoice::Named(named)
                }
                other => {
                    return Err(Invalid::new(format!("tool_choice.type: unknown type '{other}'."), "tool_choice.type"));
                }
            })
        }
    };
    let mut extra = Map::new();
    if let Some(user) = req.metadata.as_ref().and_then(|m| m.user_id.clone()) {
        extra.insert("user".into(), json!(user));
    }
    if let Some(t) = req.thinking.as_ref().filter(|t| t.kind == "enabled") {
        let effort = match t.budget_tokens.unwrap_or(4096) {
            0..=2048 => "low",
            2049..=8192 => "medium",
            _ => "high",
        };
        extra.insert("reasoning_effort".into(), json!(effort));
    }
    // Switchyard's own routing fields work on this door too.
    for field in crate::schema::OWN_FIELDS {
        if let Some(v) = req.extra.get(field) {
            extra.insert(field.into(), v.clone());
        }
    }
    let chat = ChatRequest {
        model: req.model.clone(),
        messages,
        stream: req.stream,
        stream_options: None,
        max_tokens: Some(req.max_tokens),
        max_completion_tokens: None,
        temperature: req.temperature,
        top_p: req.top_p,
        n: None,
        stop: req.stop_sequences.clone().filter(|s| !s.is_empty()).map(Stop::Many),
        tools,
        tool_choice,
        parallel_tool_calls,
        response_format: None,
        extra,
    };
    Ok(Translated { chat, problem })
}

fn message(role: Role, content: Option<Content>) -> ChatMessage {
    ChatMessage { role, content, name: None, tool_calls: None, tool_call_id: None, extra: Map::new() }
}

fn unsupported(at: &str, kind: &str) -> Invalid {
    Invalid::new(format!("{at}.type: content blocks of type '{kind}' are not supported here."), format!("{at}.type"))
}

/// A user turn: tool results become tool messages (first, answering the previous assistant turn), the
/// rest one user message. A block that cannot be translated is left out and becomes the `problem`.
fn user_blocks(i: usize, blocks: &[Block], out: &mut Vec<ChatMessage>, problem: &mut Option<Invalid>) {
    let mut parts = Vec::new();
    for (j, block) in blocks.iter().enumerate() {
        let at = format!("messages.{i}.content.{j}");
        match block.kind.as_str() {
            "text" => parts.push(text_part(block.text.clone().unwrap_or_default())),
            "image" => match image_part(block, &at) {
                Ok(part) => parts.push(part),
                Err(e) => {
                    problem.get_or_insert(e);
                }
            },
            "tool_result" => {
                let Some(id) = block.tool_use_id.clone() else {
                    problem.get_or_insert(Invalid::new(
                        format!("{at}.tool_use_id: required."),
                        format!("{at}.tool_use_id"),
                    ));
                    continue;
                };
                let text = block.content.as_ref().map(ToolResultContent::to_text).unwrap_or_default();
                let text = if block.is_error == Some(true) { format!("Error: {text}") } else { text };
                let mut m = message(Role::Tool, Some(Content::Text(text)));
                m.tool_call_id = Some(id);
                out.push(m);
            }
            other => {
                problem.get_or_insert(unsupported(&at, other));
            }
        }
    }
    if !parts.is_empty() {
        out.push(message(Role::User, Some(Content::Parts(parts))));
    }
}

fn assistant_blocks(i: usize, blocks: &[Block], problem: &mut Option<Invalid>) -> ChatMessage {
    let mut text = String::new();
    let mut calls = Vec::new();
    for (j, block) in blocks.iter().enumerate() {
        let at = format!("messages.{i}.content.{j}");
        match block.kind.as_str() {
            "text" => text.push_str(block.text.as_deref().unwrap_or_default()),
            "tool_use" => {
                let (Some(id), Some(name)) = (block.id.clone(), block.name.clone()) else {
                    let field = if block.id.is_none() { "id" } else { "name" };
                    problem.get_or_insert(Invalid::new(format!("{at}.{field}: required."), format!("{at}.{field}")));
                    continue;
                };
                let input = block.input.clone().unwrap_or_else(|| json!({}));
                calls.push(ToolCall {
                    id,
                    kind: "function".into(),
                    function: FunctionCall { name, arguments: input.to_string(), extra: Map::new() },
                    extra: Map::new(),
                });
            }
            // Earlier reasoning is not sent to another provider (each signs its own).
            "thinking" | "redacted_thinking" => {}
            other => {
                problem.get_or_insert(unsupported(&at, other));
            }
        }
    }
    let mut m = message(Role::Assistant, (!text.is_empty()).then_some(Content::Text(text)));
    if !calls.is_empty() {
        m.tool_calls = Some(calls);
    }
    m
}

fn text_part(text: String) -> ContentPart {
    ContentPart { kind: "text".into(), text: Some(text), image_url: None, extra: Map::new() }
}

fn image_part(block: &Block, at: &str) -> Result<ContentPart, Invalid> {
    let source = block.source.as_ref();
    let url = match source.map(|s| s.kind.as_str()) {
        Some("base64") => {
            let source = source.map(|s| (s.media_type.as_deref(), s.data.as_deref())).unwrap_or_default();
            format!("data:{};base64,{}", source.0.unwrap_or("image/png"), source.1.unwrap_or_default())
        }
        Some("url") => source.and_then(|s| s.url.clone()).unwrap_or_default(),
        _ => {
            return Err(Invalid::new(
                format!("{at}.source: an image needs a base64 or url source."),
                format!("{at}.source"),
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

/// Canonical usage in Anthropic's terms (input without cache reads and writes), with the gateway's
/// `cost` kept beside it.
fn wire_usage(u: Option<&Usage>) -> WireUsage {
    let Some(u) = u else { return WireUsage::default() };
    let (cached, written) = (u.cached_tokens(), u.cache_write_tokens());
    let mut usage = WireUsage {
        input_tokens: u.prompt_tokens.saturating_sub(cached + written),
        output_tokens: u.completion_tokens,
        cache_read_input_tokens: Some(cached),
        cache_creation_input_tokens: Some(written),
        extra: Map::new(),
    };
    if let Some(cost) = u.extra.get("cost") {
        usage.extra.insert("cost".into(), cost.clone());
    }
    usage
}

fn message_id(upstream_id: &str) -> String {
    if upstream_id.starts_with("msg_") {
        upstream_id.to_owned()
    } else {
        format!("msg_{}", uuid::Uuid::now_v7().simple())
    }
}

/// Renders answers as Anthropic's Messages API.
pub struct Messages {
    /// The model as the caller named it, for answers that do not say.
    pub model: String,
}

impl Dialect for Messages {
    fn param_names(&self) -> fn(&'static str) -> &'static str {
        |canonical| match canonical {
            "stop" => "stop_sequences",
            other => other,
        }
    }

    fn whole(&self, resp: &ChatResponse) -> Vec<u8> {
        let choice = resp.choices.first();
        let mut content = Vec::new();
        if let Some(m) = choice.map(|c| &c.message) {
            if let Some(thinking) = m.reasoning_content.as_deref().filter(|t| !t.is_empty()) {
                content.push(Block {
                    kind: "thinking".into(),
                    thinking: Some(thinking.to_owned()),
                    signature: Some(String::new()),
                    ..Block::default()
                });
            }
            if let Some(text) = m.content.as_deref().filter(|t| !t.is_empty()) {
                content.push(Block::text(text));
            }
            for call in m.tool_calls.iter().flatten() {
                let input: Value = serde_json::from_str(&call.function.arguments).unwrap_or_else(|_| json!({}));
                content.push(Block::tool_use(&call.id, &call.function.name, input));
            }
        }
        let message = Message {
            id: message_id(&resp.id),
            kind: "message".into(),
            role: "assistant".into(),
            model: if resp.model.is_empty() { self.model.clone() } else { resp.model.clone() },
            content,
            stop_reason: Some(
                stop_reason(choice.and_then(|c| c.finish_reason.as_deref())).unwrap_or("end_turn").into(),
            ),
            stop_sequence: None,
            usage: wire_usage(resp.usage.as_ref()),
            extra: Map::new(),
        };
        serde_json::to_vec(&message).unwrap_or_default()
    }

    fn stream(&self) -> Box<dyn StreamEncoder> {
        Box::new(MessagesStream {
            events: MessagesEvents {
                model: self.model.clone(),
                started: false,
                open: None,
                next_index: 0,
                stop_reason: None,
                usage: None,
            },
            buf: Vec::new(),
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Open {
    Thinking,
    Text,
    /// A tool call, by its OpenAI index.
    Tool(u32),
}

/// The Messages stream, built from chat chunks: blocks open and close as the kind of content changes.
pub struct MessagesEvents {
    model: String,
    started: bool,
    open: Option<(u32, Open)>,
    next_index: u32,
    stop_reason: Option<&'static str>,
    usage: Option<Usage>,
}

impl MessagesEvents {
    fn start(&mut self, id: &str, model: &str, out: &mut Vec<StreamEvent>) {
        if self.started {
            return;
        }
        self.started = true;
        let model = if model.is_empty() { &self.model } else { model };
        let message = Message {
            id: message_id(id),
            kind: "message".into(),
            role: "assistant".into(),
            model: model.to_owned(),
            content: Vec::new(),
            stop_reason: None,
            stop_sequence: None,
            usage: WireUsage::default(),
            extra: Map::new(),
        };
        out.push(StreamEvent { message: Some(message), ..StreamEvent::new("message_start") });
    }

    fn close(&mut self, out: &mut Vec<StreamEvent>) {
        if let Some((index, _)) = self.open.take() {
            out.push(StreamEvent { index: Some(index), ..StreamEvent::new("content_block_stop") });
        }
    }

    /// Makes `kind` the open block (closing another), returning its index.
    fn open(&mut self, kind: Open, start: Block, out: &mut Vec<StreamEvent>) -> u32 {
        if let Some((index, open)) = self.open
            && open == kind
        {
            return index;
        }
        self.close(out);
        let index = self.next_index;
        self.next_index += 1;
        self.open = Some((index, kind));
        out.push(StreamEvent {
            index: Some(index),
            content_block: Some(start),
            ..StreamEvent::new("content_block_start")
        });
        index
    }

    fn delta(index: u32, delta: Delta, out: &mut Vec<StreamEvent>) {
        out.push(StreamEvent { index: Some(index), delta: Some(delta), ..StreamEvent::new("content_block_delta") });
    }
}

impl ChunkTranslator<StreamEvent> for MessagesEvents {
    fn chunk(&mut self, chunk: &ChatChunk, out: &mut Vec<StreamEvent>) {
        self.start(&chunk.id, &chunk.model, out);
        if let Some(u) = &chunk.usage {
            self.usage = Some(u.clone());
        }
        let Some(choice) = chunk.choices.iter().find(|c| c.index == 0) else { return };
        let d = &choice.delta;
        if let Some(thinking) = d.reasoning_content.as_deref().filter(|t| !t.is_empty()) {
            let start = Block {
                kind: "thinking".into(),
                thinking: Some(String::new()),
                signature: Some(String::new()),
                ..Block::default()
            };
            let index = self.open(Open::Thinking, start, out);
            let delta =
                Delta { kind: Some("thinking_delta".into()), thinking: Some(thinking.to_owned()), ..Delta::default() };
            Self::delta(index, delta, out);
        }
        if let Some(text) = d.content.as_deref().filter(|t| !t.is_empty()) {
            let index = self.open(Open::Text, Block::text(""), out);
            Self::delta(
                index,
                Delta { kind: Some("text_delta".into()), text: Some(text.to_owned()), ..Delta::default() },
                out,
            );
        }
        for call in d.tool_calls.iter().flatten() {
            let function = call.function.as_ref();
            let index = match self.open {
                Some((index, Open::Tool(i))) if i == call.index => index,
                _ => {
                    let name = function.and_then(|f| f.name.as_deref()).unwrap_or_default();
                    let id = call.id.clone().unwrap_or_else(|| format!("toolu_{}", uuid::Uuid::now_v7().simple()));
                    self.open(Open::Tool(call.index), Block::tool_use(id, name, json!({})), out)
                }
            };
            if let Some(args) = function.and_then(|f| f.arguments.as_deref()).filter(|a| !a.is_empty()) {
                let delta = Delta {
                    kind: Some("input_json_delta".into()),
                    partial_json: Some(args.to_owned()),
                    ..Delta::default()
                };
                Self::delta(index, delta, out);
            }
        }
        if let Some(reason) = stop_reason(choice.finish_reason.as_deref()) {
            self.stop_reason = Some(reason);
        }
    }

    fn done(&mut self, out: &mut Vec<StreamEvent>) {
        self.start("", "", out);
        self.close(out);
        let delta = Delta {
            stop_reason: Some(Some(self.stop_reason.unwrap_or("end_turn").to_owned())),
            stop_sequence: Some(None),
            ..Delta::default()
        };
        out.push(StreamEvent {
            delta: Some(delta),
            usage: Some(wire_usage(self.usage.as_ref())),
            ..StreamEvent::new("message_delta")
        });
        out.push(StreamEvent::new("message_stop"));
    }
}

impl MessagesEvents {
    /// The events that continue a stream the client already has: its `message_start` sent, `open_text`
    /// the index of its text block still open (the continuation's text goes on in it), `next_index` the
    /// index a new block takes.
    pub fn continuing(open_text: Option<u32>, next_index: u32) -> Self {
        MessagesEvents {
            model: String::new(),
            started: true,
            open: open_text.map(|index| (index, Open::Text)),
            next_index,
            stop_reason: None,
            usage: None,
        }
    }
}

/// The Messages stream rendered from chat chunks: [`MessagesEvents`], each event as its frame.
struct MessagesStream {
    events: MessagesEvents,
    buf: Vec<StreamEvent>,
}

impl MessagesStream {
    fn frames(&mut self, out: &mut Vec<Bytes>) {
        for e in self.buf.drain(..) {
            out.push(named_frame(&e.kind, &serde_json::to_vec(&e).unwrap_or_default()));
        }
    }
}

impl StreamEncoder for MessagesStream {
    fn chunk(&mut self, chunk: &ChatChunk, out: &mut Vec<Bytes>) {
        self.events.chunk(chunk, &mut self.buf);
        self.frames(out);
    }

    fn done(&mut self, out: &mut Vec<Bytes>) {
        self.events.done(&mut self.buf);
        self.frames(out);
    }

    fn error(&mut self, e: &ErrorReply<'_>) -> Bytes {
        named_frame("error", &errors::render(e))
    }
}
