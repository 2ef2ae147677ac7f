//! The Responses door's translation for models that do not speak Responses: the request (with its
//! conversation already resolved) into the canonical chat request, and canonical answers back into a
//! response object or the full Responses event stream. What is mapped, dropped and refused is in the
//! protocol's header.

use std::collections::BTreeMap;

use bytes::Bytes;
use serde_json::{Map, Value, json};

use super::wire::{
    Content, Event, Format, IncompleteDetails, InputDetails, Item, OutputDetails, Part, Reasoning, Response,
    ResponseError, ResponsesRequest, TextConfig, Tool as WireTool, Usage as WireUsage,
};
use crate::protocols::{ChunkTranslator, ErrorReply, Invalid, StreamEncoder};
use crate::schema::{
    ChatChunk, ChatRequest, ChatResponse, Content as ChatContent, ContentPart, FunctionCall, FunctionDef, ImageUrl,
    Message, ResponseFormat, Role, Tool, ToolCall, ToolChoice, Usage,
};
use crate::sse::named_frame;

/// Hosted tools run by OpenAI itself: a model of another provider is not offered them.
const HOSTED_TOOLS: &[&str] = &[
    "web_search",
    "web_search_preview",
    "web_search_preview_2025_03_11",
    "file_search",
    "computer_use_preview",
    "code_interpreter",
    "image_generation",
    "mcp",
    "local_shell",
    "tool_search",
];

/// The items hosted tools leave in a conversation.
const HOSTED_CALLS: &[&str] = &[
    "web_search_call",
    "file_search_call",
    "code_interpreter_call",
    "image_generation_call",
    "mcp_list_tools",
    "mcp_call",
    "tool_search_call",
];

/// The schema a custom (free-form) tool becomes for a model that only has function tools.
fn custom_tool_parameters() -> Value {
    json!({"type": "object", "properties": {"input": {"type": "string", "description": "The tool's whole input, as free-form text."}}, "required": ["input"], "additionalProperties": false})
}

/// A Responses request as a chat request, for a model of another protocol.
pub struct Translated {
    pub chat: ChatRequest,
    /// The first thing the chat request cannot carry: a translated attempt is refused with it.
    pub problem: Option<Invalid>,
    /// Custom tools offered as functions: their calls go back to the client as `custom_tool_call`s.
    pub custom_tools: Vec<String>,
}

/// Translates `req` whose whole conversation is `history` (stored turns) then `input` (this request's
/// items, references resolved).
pub fn to_chat<'a>(
    req: &ResponsesRequest,
    history: impl IntoIterator<Item = &'a Item>,
    input: impl IntoIterator<Item = &'a Item>,
) -> Translated {
    let mut problem: Option<Invalid> = None;
    let mut refuse = |message: String, param: &str| {
        problem.get_or_insert_with(|| Invalid::new(message, param));
    };
    let mut messages: Vec<Message> = Vec::new();
    if let Some(text) = req.instructions.as_deref().filter(|t| !t.is_empty()) {
        messages.push(message(Role::System, Some(ChatContent::Text(text.to_owned()))));
    }
    let items = history.into_iter().map(|i| (i, "previous_response_id".to_owned()));
    let items = items.chain(input.into_iter().enumerate().map(|(n, i)| (i, format!("input[{n}]"))));
    for (item, at) in items {
        match item.kind() {
            "message" => match item_message(item, &at) {
                Ok(Some(m)) => messages.push(m),
                Ok(None) => {}
                Err(e) => refuse(e.message, &e.param),
            },
            kind @ ("function_call" | "custom_tool_call") => {
                let arguments = if kind == "custom_tool_call" {
                    json!({"input": item.input.clone().unwrap_or_default()}).to_string()
                } else {
                    item.arguments.clone().unwrap_or_else(|| "{}".to_owned())
                };
                let call = ToolCall {
                    id: item.call_id.clone().or_else(|| item.id.clone()).unwrap_or_default(),
                    kind: "function".into(),
                    function: FunctionCall {
                        name: item.name.clone().unwrap_or_default(),
                        arguments,
                        extra: Map::new(),
                    },
                    extra: Map::new(),
                };
                push_call(&mut messages, call);
            }
            "function_call_output" | "custom_tool_call_output" => {
                let mut m = message(
                    Role::Tool,
                    Some(ChatContent::Text(item.output.as_ref().map(Content::text).unwrap_or_default())),
                );
                m.tool_call_id = item.call_id.clone();
                messages.push(m);
            }
            // Each provider signs its own reasoning, and hosted tools' calls are the record of tools only
            // OpenAI ran (their results are in the messages that follow): neither is sent to another.
            "reasoning" => {}
            kind if HOSTED_CALLS.contains(&kind) => {}
            "item_reference" => refuse(format!("{at}: the referenced item was not found."), &at),
            other => refuse(format!("{at}: items of type '{other}' cannot be sent to this model."), &at),
        }
    }
    let mut custom_tools = Vec::new();
    let mut tools = Vec::new();
    for (i, t) in req.tools.iter().flatten().enumerate() {
        collect_tool(t, &format!("tools[{i}]"), &mut tools, &mut custom_tools, &mut refuse);
    }
    let mut tool_choice = None;
    match &req.tool_choice {
        None => {}
        Some(Value::String(mode)) if matches!(mode.as_str(), "auto" | "none" | "required") => {
            tool_choice = Some(ToolChoice::Mode(mode.clone()));
        }
        Some(Value::Object(choice)) => match choice.get("type").and_then(Value::as_str) {
            Some("function" | "custom") => {
                let name = choice.get("name").and_then(Value::as_str).unwrap_or_default();
                let mut named = Map::new();
                named.insert("type".into(), json!("function"));
                named.insert("function".into(), json!({"name": name}));
                tool_choice = Some(ToolChoice::Named(named));
            }
            Some("allowed_tools") => {
                let allowed: Vec<&str> = choice
                    .get("tools")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(|t| t.get("name").and_then(Value::as_str))
                    .collect();
                tools.retain(|t: &Tool| t.function.as_ref().is_some_and(|f| allowed.contains(&f.name.as_str())));
                let mode = choice.get("mode").and_then(Value::as_str).unwrap_or("auto");
                tool_choice = Some(ToolChoice::Mode(if mode == "required" { "required" } else { "auto" }.into()));
            }
            Some(kind) => refuse(
                format!("tool_choice: the hosted tool '{kind}' is only available on OpenAI models."),
                "tool_choice",
            ),
            None => refuse("tool_choice: a type is required.".into(), "tool_choice"),
        },
        Some(_) => refuse("tool_choice: must be auto, none, required or a tool.".into(), "tool_choice"),
    }
    let response_format = req.text.as_ref().and_then(|t| t.format.as_ref()).and_then(|f| match f.kind.as_str() {
        "json_object" => Some(ResponseFormat { kind: "json_object".into(), extra: Map::new() }),
        "json_schema" => {
            let mut schema = Map::new();
            schema.insert("name".into(), json!(f.name.as_deref().unwrap_or("response")));
            schema.insert("schema".into(), f.schema.clone().unwrap_or_else(|| json!({"type": "object"})));
            if let Some(strict) = f.strict {
                schema.insert("strict".into(), json!(strict));
            }
            if let Some(d) = &f.description {
                schema.insert("description".into(), json!(d));
            }
            let mut extra = Map::new();
            extra.insert("json_schema".into(), Value::Object(schema));
            Some(ResponseFormat { kind: "json_schema".into(), extra })
        }
        _ => None,
    });
    let mut extra = Map::new();
    if let Some(effort) = req.reasoning.as_ref().and_then(|r| r.effort.as_deref()).filter(|e| *e != "none") {
        extra.insert("reasoning_effort".into(), json!(effort));
    }
    if let Some(user) = req.safety_identifier.as_ref().or(req.user.as_ref()) {
        extra.insert("user".into(), json!(user));
    }
    // Kept for providers that read them; Switchyard's own routing fields work on this door too.
    for field in ["prompt_cache_key", "service_tier"].into_iter().chain(crate::schema::OWN_FIELDS) {
        if let Some(v) = req.extra.get(field) {
            extra.insert(field.into(), v.clone());
        }
    }
    for field in ["background", "conversation", "prompt"] {
        if req.extra.get(field).is_some_and(|v| !v.is_null() && *v != json!(false)) {
            refuse(format!("'{field}' is not supported for this model."), field);
        }
    }
    let chat = ChatRequest {
        model: req.model.clone(),
        messages,
        stream: req.is_streaming().then_some(true),
        stream_options: None,
        max_tokens: req.max_output_tokens,
        max_completion_tokens: None,
        temperature: req.temperature,
        top_p: req.top_p,
        n: None,
        stop: None,
        tools: (!tools.is_empty()).then_some(tools),
        tool_choice,
        parallel_tool_calls: req.parallel_tool_calls,
        response_format,
        extra,
    };
    Translated { chat, problem, custom_tools }
}

fn message(role: Role, content: Option<ChatContent>) -> Message {
    Message { role, content, name: None, tool_calls: None, tool_call_id: None, extra: Map::new() }
}

/// A message item as a chat message (`None` for an empty one).
fn item_message(item: &Item, at: &str) -> Result<Option<Message>, Invalid> {
    let role = match item.role.as_deref() {
        Some("user") => Role::User,
        Some("assistant") => Role::Assistant,
        Some("system") => Role::System,
        Some("developer") => Role::Developer,
        other => {
            return Err(Invalid::new(
                format!("{at}.role: must be user, assistant, system or developer, not {other:?}."),
                format!("{at}.role"),
            ));
        }
    };
    let content = match &item.content {
        None => return Ok(None),
        Some(Content::Text(t)) => ChatContent::Text(t.clone()),
        Some(Content::Other(_)) => {
            return Err(Invalid::new(
                format!("{at}.content: must be a string or a list of parts."),
                format!("{at}.content"),
            ));
        }
        Some(Content::Parts(parts)) if role != Role::User => {
            // Assistant, system and developer turns are text (output_text, refusal, input_text).
            ChatContent::Text(parts.iter().filter_map(|p| p.text.as_deref().or(p.refusal.as_deref())).collect())
        }
        Some(Content::Parts(parts)) => {
            let mut out = Vec::with_capacity(parts.len());
            for (j, p) in parts.iter().enumerate() {
                let at = format!("{at}.content[{j}]");
                out.push(match p.kind.as_str() {
                    "input_text" | "output_text" | "text" => ContentPart {
                        kind: "text".into(),
                        text: Some(p.text.clone().unwrap_or_default()),
                        image_url: None,
                        extra: Map::new(),
                    },
                    "input_image" => {
                        let url = p.image_url.clone().ok_or_else(|| {
                            Invalid::new(
                                format!("{at}: images must be given as image_url (a URL or a data: URL), not a file_id, for this model."),
                                format!("{at}.image_url"),
                            )
                        })?;
                        ContentPart {
                            kind: "image_url".into(),
                            text: None,
                            image_url: Some(ImageUrl { url, detail: p.detail.clone(), extra: Map::new() }),
                            extra: Map::new(),
                        }
                    }
                    "input_file" => {
                        let mut file = Map::new();
                        for (key, value) in [("file_data", &p.file_data), ("file_id", &p.file_id), ("filename", &p.filename)] {
                            if let Some(v) = value {
                                file.insert(key.into(), json!(v));
                            }
                        }
                        if file.is_empty() {
                            return Err(Invalid::new(format!("{at}: a file needs file_data or file_id."), at));
                        }
                        let mut extra = Map::new();
                        extra.insert("file".into(), Value::Object(file));
                        ContentPart { kind: "file".into(), text: None, image_url: None, extra }
                    }
                    other => {
                        return Err(Invalid::new(format!("{at}: content of type '{other}' is not supported here."), format!("{at}.type")));
                    }
                });
            }
            ChatContent::Parts(out)
        }
    };
    Ok(Some(message(role, Some(content))))
}

/// Consecutive assistant items (text, then calls) make one assistant turn, as chat expects.
fn push_call(messages: &mut Vec<Message>, call: ToolCall) {
    if let Some(last) = messages.last_mut()
        && last.role == Role::Assistant
    {
        last.tool_calls.get_or_insert_with(Vec::new).push(call);
        return;
    }
    let mut m = message(Role::Assistant, None);
    m.tool_calls = Some(vec![call]);
    messages.push(m);
}

fn collect_tool(
    t: &WireTool,
    at: &str,
    tools: &mut Vec<Tool>,
    custom: &mut Vec<String>,
    refuse: &mut impl FnMut(String, &str),
) {
    let function = |name: &str, description: Option<String>, parameters: Option<Value>, strict: Option<bool>| Tool {
        kind: "function".into(),
        function: Some(FunctionDef { name: name.to_owned(), description, parameters, strict, extra: Map::new() }),
        extra: Map::new(),
    };
    match t.kind.as_str() {
        "function" => match &t.name {
            Some(name) => tools.push(function(name, t.description.clone(), t.parameters.clone(), t.strict)),
            None => refuse(format!("{at}.name: required."), &format!("{at}.name")),
        },
        "custom" => match &t.name {
            Some(name) => {
                let mut description = t.description.clone().unwrap_or_default();
                if let Some(grammar) = t.extra.get("format").and_then(|f| f.get("definition")).and_then(Value::as_str) {
                    description.push_str("\n\nThe input must follow this grammar:\n");
                    description.push_str(grammar);
                }
                custom.push(name.clone());
                tools.push(function(name, Some(description), Some(custom_tool_parameters()), None));
            }
            None => refuse(format!("{at}.name: required."), &format!("{at}.name")),
        },
        // A namespace's functions are offered under their own names.
        "namespace" => {
            for (i, inner) in t.tools.iter().flatten().enumerate() {
                collect_tool(inner, &format!("{at}.tools[{i}]"), tools, custom, refuse);
            }
        }
        kind if HOSTED_TOOLS.contains(&kind) => {}
        other => refuse(
            format!("{at}.type: tools of type '{other}' are not supported for this model."),
            &format!("{at}.type"),
        ),
    }
}

/// The response object for `req` before any output: the request's parameters echoed as OpenAI does,
/// with OpenAI's defaults where the request set nothing.
pub fn envelope(req: &ResponsesRequest, id: &str, created_at: u64, model: &str) -> Response {
    let extra_str = |k: &str| req.extra.get(k).and_then(Value::as_str).map(str::to_owned);
    Response {
        id: id.to_owned(),
        object: "response".into(),
        created_at,
        status: "in_progress".into(),
        background: false,
        error: None,
        incomplete_details: None,
        instructions: req.instructions.clone(),
        max_output_tokens: req.max_output_tokens,
        max_tool_calls: None,
        model: model.to_owned(),
        output: Vec::new(),
        parallel_tool_calls: req.parallel_tool_calls.unwrap_or(true),
        previous_response_id: req.previous_response_id.clone(),
        prompt_cache_key: extra_str("prompt_cache_key"),
        reasoning: Reasoning {
            effort: req.reasoning.as_ref().and_then(|r| r.effort.clone()),
            summary: req.reasoning.as_ref().and_then(|r| r.summary.clone()),
            extra: Map::new(),
        },
        safety_identifier: req.safety_identifier.clone(),
        service_tier: Some(extra_str("service_tier").unwrap_or_else(|| "default".into())),
        store: req.is_stored(),
        temperature: Some(req.temperature.unwrap_or(1.0)),
        text: TextConfig {
            format: Some(
                req.text
                    .as_ref()
                    .and_then(|t| t.format.clone())
                    .unwrap_or_else(|| Format { kind: "text".into(), ..Format::default() }),
            ),
            verbosity: Some(req.text.as_ref().and_then(|t| t.verbosity.clone()).unwrap_or_else(|| "medium".into())),
            extra: Map::new(),
        },
        tool_choice: req.tool_choice.clone().unwrap_or_else(|| json!("auto")),
        tools: req.tools.clone().unwrap_or_default(),
        top_logprobs: req.extra.get("top_logprobs").and_then(Value::as_u64).unwrap_or(0) as u32,
        top_p: Some(req.top_p.unwrap_or(1.0)),
        truncation: Some(extra_str("truncation").unwrap_or_else(|| "disabled".into())),
        usage: None,
        user: req.user.clone(),
        metadata: req.metadata.clone().unwrap_or_default(),
        extra: Map::new(),
    }
}

/// A new item id with OpenAI's prefix for its kind (`msg`, `fc`, `rs`, `ctc`).
pub fn new_item_id(prefix: &str) -> String {
    format!("{prefix}_{}", uuid::Uuid::now_v7().simple())
}

/// Canonical usage in Responses' terms, with the gateway's `cost` kept beside it.
pub fn wire_usage(u: &Usage) -> WireUsage {
    let mut usage = WireUsage {
        input_tokens: u.prompt_tokens,
        input_tokens_details: InputDetails { cached_tokens: u.cached_tokens(), extra: Map::new() },
        output_tokens: u.completion_tokens,
        output_tokens_details: OutputDetails { reasoning_tokens: u.reasoning_tokens(), extra: Map::new() },
        total_tokens: u.prompt_tokens + u.completion_tokens,
        extra: Map::new(),
    };
    if let Some(cost) = u.extra.get("cost") {
        usage.extra.insert("cost".into(), cost.clone());
    }
    usage
}

fn reasoning_item(id: String, text: &str) -> Item {
    Item {
        kind: Some("reasoning".into()),
        id: Some(id),
        summary: Some(vec![Part::summary_text(text)]),
        ..Item::default()
    }
}

fn message_item(id: String, status: &str, text: Option<&str>) -> Item {
    Item {
        kind: Some("message".into()),
        id: Some(id),
        status: Some(status.into()),
        role: Some("assistant".into()),
        content: Some(Content::Parts(text.map(|t| vec![Part::output_text(t)]).unwrap_or_default())),
        ..Item::default()
    }
}

/// A tool call as an output item: a `function_call`, or a `custom_tool_call` for a custom tool.
fn call_item(id: &str, call_id: &str, name: &str, arguments: &str, status: &str, custom: bool) -> Item {
    if custom {
        let input = serde_json::from_str::<Value>(arguments)
            .ok()
            .and_then(|v| v.get("input").and_then(Value::as_str).map(str::to_owned))
            .unwrap_or_else(|| arguments.to_owned());
        return Item {
            kind: Some("custom_tool_call".into()),
            id: Some(id.to_owned()),
            status: Some(status.into()),
            call_id: Some(call_id.to_owned()),
            name: Some(name.to_owned()),
            input: Some(input),
            ..Item::default()
        };
    }
    Item {
        kind: Some("function_call".into()),
        id: Some(id.to_owned()),
        status: Some(status.into()),
        call_id: Some(call_id.to_owned()),
        name: Some(name.to_owned()),
        arguments: Some(arguments.to_owned()),
        ..Item::default()
    }
}

/// Ends `resp` by the chat finish reason: `completed`, or `incomplete` with the reason.
fn finish(resp: &mut Response, finish_reason: Option<&str>) {
    let reason = match finish_reason {
        Some("length") => Some("max_output_tokens"),
        Some("content_filter") => Some("content_filter"),
        _ => None,
    };
    resp.status = if reason.is_some() { "incomplete" } else { "completed" }.into();
    resp.incomplete_details = reason.map(|r| IncompleteDetails { reason: r.into() });
}

/// A whole chat answer as the response object `envelope` began.
pub fn from_chat(resp: &ChatResponse, mut envelope: Response, custom_tools: &[String]) -> Response {
    let choice = resp.choices.first();
    if let Some(m) = choice.map(|c| &c.message) {
        if let Some(text) = m.reasoning_content.as_deref().filter(|t| !t.is_empty()) {
            envelope.output.push(reasoning_item(new_item_id("rs"), text));
        }
        let calls = m.tool_calls.as_deref().unwrap_or_default();
        let text = m.content.as_deref().unwrap_or_default();
        if !text.is_empty() || calls.is_empty() {
            envelope.output.push(message_item(new_item_id("msg"), "completed", Some(text)));
        }
        for call in calls {
            let custom = custom_tools.contains(&call.function.name);
            let id = new_item_id(if custom { "ctc" } else { "fc" });
            envelope.output.push(call_item(
                &id,
                &call.id,
                &call.function.name,
                &call.function.arguments,
                "completed",
                custom,
            ));
        }
    }
    finish(&mut envelope, choice.and_then(|c| c.finish_reason.as_deref()));
    if let Some(status) = (envelope.status == "incomplete").then_some("incomplete") {
        for item in envelope.output.iter_mut().filter(|i| i.kind() == "message") {
            item.status = Some(status.into());
        }
    }
    envelope.usage = resp.usage.as_ref().map(wire_usage);
    envelope
}

/// The Responses error `code` Codex and the SDKs map, for our error.
pub fn failure_code(e: &ErrorReply<'_>) -> &'static str {
    match (e.code, e.kind) {
        (Some("context_length_exceeded"), _) => "context_length_exceeded",
        (Some("insufficient_quota"), _) | (_, "insufficient_quota") => "insufficient_quota",
        (Some("rate_limit_exceeded"), _) | (_, "rate_limit_error") => "rate_limit_exceeded",
        _ if e.status == 429 => "rate_limit_exceeded",
        _ => "server_error",
    }
}

/// Called once with the final response object of a stream that completed (to store it).
pub type OnComplete = Box<dyn FnOnce(&Response) + Send>;

/// The open output item of a translated stream.
enum Open {
    Reasoning { index: u32, id: String, text: String },
    Message { index: u32, id: String, text: String },
}

/// A tool call being streamed.
struct Call {
    index: u32,
    id: String,
    call_id: String,
    name: String,
    arguments: String,
    custom: bool,
}

/// The Responses event stream, built from chat chunks: `response.created`, `response.in_progress`, each
/// output item bracketed by `output_item.added` … `output_item.done` with its part and delta events, then
/// `response.completed` (or `response.incomplete`) with the whole output and usage. Sequence numbers
/// and item ids are the encoder's own.
pub struct ResponsesEvents {
    response: Response,
    custom_tools: Vec<String>,
    on_complete: Option<OnComplete>,
    sequence: u64,
    started: bool,
    open: Option<Open>,
    /// By chat tool-call index.
    calls: BTreeMap<u32, Call>,
    next_index: u32,
    finish_reason: Option<String>,
    usage: Option<Usage>,
}

impl ResponsesEvents {
    pub fn new(envelope: Response, custom_tools: Vec<String>, on_complete: OnComplete) -> Self {
        ResponsesEvents {
            response: envelope,
            custom_tools,
            on_complete: Some(on_complete),
            sequence: 0,
            started: false,
            open: None,
            calls: BTreeMap::new(),
            next_index: 0,
            finish_reason: None,
            usage: None,
        }
    }

    fn emit(&mut self, mut event: Event, out: &mut Vec<Event>) {
        event.sequence_number = self.sequence;
        self.sequence += 1;
        out.push(event);
    }

    fn event(kind: &str) -> Event {
        Event { kind: kind.to_owned(), ..Event::default() }
    }

    fn start(&mut self, out: &mut Vec<Event>) {
        if self.started {
            return;
        }
        self.started = true;
        for kind in ["response.created", "response.in_progress"] {
            let e = Event { response: Some(self.response.clone()), ..Self::event(kind) };
            self.emit(e, out);
        }
    }

    fn take_index(&mut self) -> u32 {
        let i = self.next_index;
        self.next_index += 1;
        i
    }

    fn close(&mut self, out: &mut Vec<Event>) {
        match self.open.take() {
            None => {}
            Some(Open::Reasoning { index, id, text }) => {
                let base = |kind: &str| Event {
                    output_index: Some(index),
                    item_id: Some(id.clone()),
                    summary_index: Some(0),
                    ..Self::event(kind)
                };
                self.emit(Event { text: Some(text.clone()), ..base("response.reasoning_summary_text.done") }, out);
                self.emit(
                    Event { part: Some(Part::summary_text(&text)), ..base("response.reasoning_summary_part.done") },
                    out,
                );
                let item = reasoning_item(id, &text);
                self.item_done(index, item, out);
            }
            Some(Open::Message { index, id, text }) => {
                let base = |kind: &str| Event {
                    output_index: Some(index),
                    item_id: Some(id.clone()),
                    content_index: Some(0),
                    ..Self::event(kind)
                };
                self.emit(
                    Event { text: Some(text.clone()), logprobs: Some(Vec::new()), ..base("response.output_text.done") },
                    out,
                );
                self.emit(Event { part: Some(Part::output_text(&text)), ..base("response.content_part.done") }, out);
                let item = message_item(id, self.item_status(), Some(&text));
                self.item_done(index, item, out);
            }
        }
    }

    /// A message cut by the output limit or a content filter is `incomplete`, as the response is.
    fn item_status(&self) -> &'static str {
        match self.finish_reason.as_deref() {
            Some("length" | "content_filter") => "incomplete",
            _ => "completed",
        }
    }

    fn item_done(&mut self, index: u32, item: Item, out: &mut Vec<Event>) {
        self.emit(
            Event { output_index: Some(index), item: Some(item.clone()), ..Self::event("response.output_item.done") },
            out,
        );
        self.response.output.push(item);
    }

    fn reasoning(&mut self, delta: &str, out: &mut Vec<Event>) {
        if !matches!(self.open, Some(Open::Reasoning { .. })) {
            self.close(out);
            let (index, id) = (self.take_index(), new_item_id("rs"));
            let item = Item { summary: Some(Vec::new()), ..reasoning_item(id.clone(), "") };
            self.emit(
                Event { output_index: Some(index), item: Some(item), ..Self::event("response.output_item.added") },
                out,
            );
            let part = Event {
                output_index: Some(index),
                item_id: Some(id.clone()),
                summary_index: Some(0),
                part: Some(Part::summary_text("")),
                ..Self::event("response.reasoning_summary_part.added")
            };
            self.emit(part, out);
            self.open = Some(Open::Reasoning { index, id, text: String::new() });
        }
        if let Some(Open::Reasoning { index, id, text }) = &mut self.open {
            text.push_str(delta);
            let e = Event {
                output_index: Some(*index),
                item_id: Some(id.clone()),
                summary_index: Some(0),
                delta: Some(delta.to_owned()),
                ..Self::event("response.reasoning_summary_text.delta")
            };
            self.emit(e, out);
        }
    }

    fn text(&mut self, delta: &str, out: &mut Vec<Event>) {
        if !matches!(self.open, Some(Open::Message { .. })) {
            self.close(out);
            let (index, id) = (self.take_index(), new_item_id("msg"));
            let item = message_item(id.clone(), "in_progress", None);
            self.emit(
                Event { output_index: Some(index), item: Some(item), ..Self::event("response.output_item.added") },
                out,
            );
            let part = Event {
                output_index: Some(index),
                item_id: Some(id.clone()),
                content_index: Some(0),
                part: Some(Part::output_text("")),
                ..Self::event("response.content_part.added")
            };
            self.emit(part, out);
            self.open = Some(Open::Message { index, id, text: String::new() });
        }
        if let Some(Open::Message { index, id, text }) = &mut self.open {
            text.push_str(delta);
            let e = Event {
                output_index: Some(*index),
                item_id: Some(id.clone()),
                content_index: Some(0),
                delta: Some(delta.to_owned()),
                logprobs: Some(Vec::new()),
                ..Self::event("response.output_text.delta")
            };
            self.emit(e, out);
        }
    }

    fn finish_calls(&mut self, out: &mut Vec<Event>) {
        for call in std::mem::take(&mut self.calls).into_values() {
            let base = |kind: &str| Event {
                output_index: Some(call.index),
                item_id: Some(call.id.clone()),
                ..Self::event(kind)
            };
            let done = if call.custom {
                let item = call_item(&call.id, &call.call_id, &call.name, &call.arguments, "completed", true);
                Event { input: item.input.clone(), ..base("response.custom_tool_call_input.done") }
            } else {
                Event {
                    arguments: Some(call.arguments.clone()),
                    name: Some(call.name.clone()),
                    ..base("response.function_call_arguments.done")
                }
            };
            self.emit(done, out);
            let item = call_item(&call.id, &call.call_id, &call.name, &call.arguments, "completed", call.custom);
            self.item_done(call.index, item, out);
        }
    }
}

impl ChunkTranslator<Event> for ResponsesEvents {
    fn chunk(&mut self, chunk: &ChatChunk, out: &mut Vec<Event>) {
        self.start(out);
        if let Some(u) = &chunk.usage {
            self.usage = Some(u.clone());
        }
        let Some(choice) = chunk.choices.iter().find(|c| c.index == 0) else { return };
        let d = &choice.delta;
        if let Some(t) = d.reasoning_content.as_deref().filter(|t| !t.is_empty()) {
            self.reasoning(t, out);
        }
        if let Some(t) = d.content.as_deref().filter(|t| !t.is_empty()) {
            self.text(t, out);
        }
        for call in d.tool_calls.iter().flatten() {
            if !self.calls.contains_key(&call.index) {
                self.close(out);
                let name = call.function.as_ref().and_then(|f| f.name.clone()).unwrap_or_default();
                let custom = self.custom_tools.contains(&name);
                let index = self.take_index();
                let entry = Call {
                    index,
                    id: new_item_id(if custom { "ctc" } else { "fc" }),
                    call_id: call.id.clone().unwrap_or_else(|| new_item_id("call")),
                    name,
                    arguments: String::new(),
                    custom,
                };
                let item = call_item(&entry.id, &entry.call_id, &entry.name, "", "in_progress", custom);
                self.emit(
                    Event { output_index: Some(index), item: Some(item), ..Self::event("response.output_item.added") },
                    out,
                );
                self.calls.insert(call.index, entry);
            }
            let Some(args) = call.function.as_ref().and_then(|f| f.arguments.as_deref()).filter(|a| !a.is_empty())
            else {
                continue;
            };
            let Some(entry) = self.calls.get_mut(&call.index) else { continue };
            entry.arguments.push_str(args);
            // A custom tool's input is inside the arguments' JSON: it is sent whole when the call is done.
            if !entry.custom {
                let e = Event {
                    output_index: Some(entry.index),
                    item_id: Some(entry.id.clone()),
                    delta: Some(args.to_owned()),
                    ..Self::event("response.function_call_arguments.delta")
                };
                self.emit(e, out);
            }
        }
        if let Some(f) = &choice.finish_reason {
            self.finish_reason = Some(f.clone());
        }
    }

    fn done(&mut self, out: &mut Vec<Event>) {
        self.start(out);
        self.close(out);
        self.finish_calls(out);
        finish(&mut self.response, self.finish_reason.as_deref());
        self.response.usage = self.usage.as_ref().map(wire_usage);
        let kind = if self.response.status == "incomplete" { "response.incomplete" } else { "response.completed" };
        if let Some(store) = self.on_complete.take() {
            store(&self.response);
        }
        let e = Event { response: Some(self.response.clone()), ..Self::event(kind) };
        self.emit(e, out);
    }
}

impl ResponsesEvents {
    /// The events that continue a stream the client already has: `response` its snapshot (the output
    /// items done so far in it), `sequence` the next `sequence_number`, `open_text` the output index, id
    /// and text so far of its message still open (the continuation's text goes on in it), `next_index`
    /// the output index a new item takes. The response is kept by whoever kept the first stream's.
    pub fn continuing(
        response: Response,
        sequence: u64,
        open_text: Option<(u32, String, String)>,
        next_index: u32,
    ) -> Self {
        ResponsesEvents {
            response,
            custom_tools: Vec::new(),
            on_complete: None,
            sequence,
            started: true,
            open: open_text.map(|(index, id, text)| Open::Message { index, id, text }),
            calls: BTreeMap::new(),
            next_index,
            finish_reason: None,
            usage: None,
        }
    }

    /// The events that end a stream that failed after it started.
    fn failed(&mut self, e: &ErrorReply<'_>, out: &mut Vec<Event>) {
        self.start(out);
        self.response.status = "failed".into();
        self.response.error = Some(ResponseError { code: failure_code(e).into(), message: e.message.to_owned() });
        let failed = Event { response: Some(self.response.clone()), ..Self::event("response.failed") };
        self.emit(failed, out);
    }
}

/// The Responses stream rendered from chat chunks: [`ResponsesEvents`], each event as its frame.
pub struct ResponsesStream {
    events: ResponsesEvents,
    buf: Vec<Event>,
}

impl ResponsesStream {
    pub fn new(envelope: Response, custom_tools: Vec<String>, on_complete: OnComplete) -> Self {
        ResponsesStream { events: ResponsesEvents::new(envelope, custom_tools, on_complete), buf: Vec::new() }
    }

    fn frames(&mut self, out: &mut Vec<Bytes>) {
        for e in self.buf.drain(..) {
            out.push(named_frame(&e.kind, &serde_json::to_vec(&e).unwrap_or_default()));
        }
    }
}

impl StreamEncoder for ResponsesStream {
    fn chunk(&mut self, chunk: &ChatChunk, out: &mut Vec<Bytes>) {
        self.events.chunk(chunk, &mut self.buf);
        self.frames(out);
    }

    fn done(&mut self, out: &mut Vec<Bytes>) {
        self.events.done(&mut self.buf);
        self.frames(out);
    }

    fn error(&mut self, e: &ErrorReply<'_>) -> Bytes {
        self.events.failed(e, &mut self.buf);
        let mut frames = Vec::new();
        self.frames(&mut frames);
        let mut all = bytes::BytesMut::new();
        for frame in frames {
            all.extend_from_slice(&frame);
        }
        all.freeze()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::{ChunkChoice, Delta, FunctionCallDelta, ToolCallDelta};
    use proptest::prelude::*;

    /// One streamed piece of a chat answer.
    #[derive(Debug, Clone)]
    enum Piece {
        Reasoning(String),
        Text(String),
        /// A tool call's index and a piece of its arguments.
        Call(u32, String),
    }

    fn chunk(piece: &Piece) -> ChatChunk {
        let mut delta = Delta::default();
        match piece {
            Piece::Reasoning(t) => delta.reasoning_content = Some(t.clone()),
            Piece::Text(t) => delta.content = Some(t.clone()),
            Piece::Call(i, args) => {
                delta.tool_calls = Some(vec![ToolCallDelta {
                    index: *i,
                    id: Some(format!("call_{i}")),
                    kind: Some("function".into()),
                    function: Some(FunctionCallDelta {
                        name: Some(format!("tool_{i}")),
                        arguments: Some(args.clone()),
                        extra: Map::new(),
                    }),
                    extra: Map::new(),
                }]);
            }
        }
        ChatChunk {
            id: "c".into(),
            object: "chat.completion.chunk".into(),
            created: 0,
            model: "m".into(),
            choices: vec![ChunkChoice { index: 0, delta, finish_reason: None, extra: Map::new() }],
            usage: None,
            extra: Map::new(),
        }
    }

    fn piece() -> impl Strategy<Value = Piece> {
        prop_oneof![
            "[a-z ]{1,6}".prop_map(Piece::Reasoning),
            "[a-z ]{1,6}".prop_map(Piece::Text),
            (0u32..3, "[a-z{}\":]{1,6}").prop_map(|(i, a)| Piece::Call(i, a)),
        ]
    }

    fn events(pieces: &[Piece]) -> Vec<Value> {
        let req = ResponsesRequest { model: "m".into(), ..ResponsesRequest::default() };
        let mut encoder = ResponsesStream::new(envelope(&req, "resp_1", 0, "m"), Vec::new(), Box::new(|_| {}));
        let mut frames = Vec::new();
        for p in pieces {
            encoder.chunk(&chunk(p), &mut frames);
        }
        encoder.done(&mut frames);
        let mut decoder = crate::sse::SseDecoder::default();
        let mut out = Vec::new();
        for f in &frames {
            decoder.push(f, &mut out).unwrap();
        }
        out.iter()
            .map(|e| {
                let v: Value = serde_json::from_str(&e.data).unwrap();
                assert_eq!(e.event.as_deref(), v["type"].as_str(), "the event line names the type");
                v
            })
            .collect()
    }

    proptest! {
        /// Whatever the upstream streams, in whatever order: sequence numbers count up from 0, every item
        /// is added before its deltas and done once, and the final response holds exactly the done items.
        #[test]
        fn the_event_stream_is_well_formed_for_any_chunk_sequence(pieces in prop::collection::vec(piece(), 0..24)) {
            let all = events(&pieces);
            for (i, e) in all.iter().enumerate() {
                prop_assert_eq!(e["sequence_number"].as_u64(), Some(i as u64));
            }
            prop_assert_eq!(all[0]["type"].as_str(), Some("response.created"));
            prop_assert_eq!(all[1]["type"].as_str(), Some("response.in_progress"));
            let last = all.last().unwrap();
            prop_assert_eq!(last["type"].as_str(), Some("response.completed"));
            let mut open = std::collections::HashSet::new();
            let mut done = Vec::new();
            for e in &all {
                let index = e["output_index"].as_u64();
                match e["type"].as_str().unwrap() {
                    "response.output_item.added" => prop_assert!(open.insert(index.unwrap())),
                    "response.output_item.done" => {
                        prop_assert!(open.remove(&index.unwrap()), "done after added");
                        done.push(e["item"].clone());
                    }
                    kind if kind.ends_with(".delta") => prop_assert!(open.contains(&index.unwrap()), "{} outside its item", kind),
                    _ => {}
                }
            }
            prop_assert!(open.is_empty(), "every item is done");
            let output = last["response"]["output"].as_array().unwrap();
            prop_assert_eq!(output.len(), done.len());
            for item in &done {
                prop_assert!(output.contains(item));
            }
            let text: String = pieces.iter().filter_map(|p| if let Piece::Text(t) = p { Some(t.as_str()) } else { None }).collect();
            let streamed: String = all.iter().filter(|e| e["type"] == "response.output_text.delta").map(|e| e["delta"].as_str().unwrap()).collect();
            prop_assert_eq!(streamed, text);
        }
    }
}
