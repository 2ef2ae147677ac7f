//! The Gemini door's translation: a `generateContent` request into the canonical chat request, and
//! canonical answers back into a `GenerateContentResponse` (whole, or one per streamed frame). What is
//! mapped and dropped is in the protocol's header.

use std::collections::BTreeMap;

use bytes::Bytes;
use serde_json::{Map, Value, json};

use super::errors;
pub use super::native::Framing;
use super::wire::{
    Candidate, Content as WireContent, FunctionCall as WireCall, GenerateRequest, GenerateResponse, Part, UsageMetadata,
};
use crate::protocols::{ChunkTranslator, Dialect, ErrorReply, Invalid, StreamEncoder};
use crate::schema::{
    ChatChunk, ChatRequest, ChatResponse, Content, ContentPart, FunctionCall, FunctionDef, ImageUrl, Message,
    ResponseFormat, Role, Stop, Tool, ToolCall, ToolChoice, Usage,
};

fn message(role: Role, content: Option<Content>) -> Message {
    Message { role, content, name: None, tool_calls: None, tool_call_id: None, extra: Map::new() }
}

/// A generateContent request as a chat request, for a model of another protocol.
pub struct Translated {
    pub chat: ChatRequest,
    /// The first thing the chat request cannot carry: a translated attempt is refused with it, while a
    /// Gemini upstream gets the request as it is.
    pub problem: Option<Invalid>,
}

/// Gemini's request as the canonical chat request. An `Err` is a request Gemini itself would refuse.
pub fn to_chat(model: String, stream: bool, req: GenerateRequest) -> Result<Translated, Invalid> {
    let mut problem = None;
    if req.contents.is_empty() {
        return Err(Invalid::new("contents: at least one content is required.", "contents"));
    }
    let mut messages = Vec::with_capacity(req.contents.len() + 1);
    if let Some(system) = &req.system_instruction {
        let text: Vec<&str> = system.parts.iter().filter_map(|p| p.text.as_deref()).collect();
        if !text.is_empty() {
            messages.push(message(Role::System, Some(Content::Text(text.join("\n")))));
        }
    }
    // Function calls get ids here when the client sent none, so their responses can point at them.
    let mut open_calls: Vec<(String, String)> = Vec::new();
    for (i, c) in req.contents.into_iter().enumerate() {
        let is_model = match c.role.as_deref() {
            Some("model") => true,
            Some("user") | None => false,
            Some(other) => {
                return Err(Invalid::new(format!("contents[{i}].role: must be user or model, not '{other}'."), "role"));
            }
        };
        let mut parts = Vec::new();
        let mut text = String::new();
        let mut calls = Vec::new();
        for (j, part) in c.parts.into_iter().enumerate() {
            let at = format!("contents[{i}].parts[{j}]");
            if part.is_thought() {
                continue; // earlier reasoning is not sent back upstream
            }
            if let Some(t) = part.text {
                if is_model {
                    text.push_str(&t);
                } else {
                    parts.push(ContentPart { kind: "text".into(), text: Some(t), image_url: None, extra: Map::new() });
                }
            } else if let Some(data) = part.inline_data {
                let mime = if data.mime_type.is_empty() { "image/png" } else { &data.mime_type };
                if !mime.starts_with("image/") {
                    problem.get_or_insert_with(|| {
                        Invalid::new(
                            format!("{at}.inlineData: {mime} data is only supported by Gemini models."),
                            at.clone(),
                        )
                    });
                    continue;
                }
                parts.push(image(format!("data:{mime};base64,{}", data.data)));
            } else if let Some(file) = part.file_data {
                parts.push(image(file.file_uri));
            } else if let Some(call) = part.function_call {
                let id = call.id.unwrap_or_else(|| format!("call_{i}_{j}"));
                open_calls.push((id.clone(), call.name.clone()));
                let args = if call.args.is_null() { json!({}) } else { call.args };
                calls.push(ToolCall {
                    id,
                    kind: "function".into(),
                    function: FunctionCall { name: call.name, arguments: args.to_string(), extra: Map::new() },
                    extra: Map::new(),
                });
            } else if let Some(resp) = part.function_response {
                let id = match resp.id {
                    Some(id) => id,
                    None => {
                        let found = open_calls.iter().rposition(|(_, n)| *n == resp.name);
                        found.map(|k| open_calls.remove(k).0).unwrap_or_else(|| format!("call_{}", resp.name))
                    }
                };
                let mut m = message(Role::Tool, Some(Content::Text(resp.response.to_string())));
                m.tool_call_id = Some(id);
                messages.push(m);
            } else {
                problem.get_or_insert_with(|| {
                    Invalid::new(format!("{at}: this kind of part is only supported by Gemini models."), at)
                });
            }
        }
        if is_model {
            let mut m = message(Role::Assistant, (!text.is_empty()).then_some(Content::Text(text)));
            if !calls.is_empty() {
                m.tool_calls = Some(calls);
            }
            messages.push(m);
        } else if !parts.is_empty() {
            messages.push(message(Role::User, Some(Content::Parts(parts))));
        }
    }
    let config = req.generation_config.unwrap_or_default();
    let n = config.candidate_count.filter(|n| *n > 1);
    let response_format = match config.response_mime_type.as_deref() {
        Some("application/json") => Some(match config.response_json_schema.or(config.response_schema) {
            Some(schema) => {
                let mut extra = Map::new();
                extra.insert("json_schema".into(), json!({"name": "response", "schema": schema}));
                ResponseFormat { kind: "json_schema".into(), extra }
            }
            None => ResponseFormat { kind: "json_object".into(), extra: Map::new() },
        }),
        _ => None,
    };
    let functions: Vec<Tool> = req
        .tools
        .into_iter()
        .flatten()
        .flat_map(|t| t.function_declarations.unwrap_or_default())
        .map(|f| Tool {
            kind: "function".into(),
            function: Some(FunctionDef {
                name: f.name,
                description: f.description,
                parameters: f.parameters_json_schema.or(f.parameters),
                strict: None,
                extra: Map::new(),
            }),
            extra: Map::new(),
        })
        .collect();
    let tool_choice = req.tool_config.and_then(|c| c.function_calling_config).and_then(|c| {
        let only = c.allowed_function_names.filter(|n| n.len() == 1).and_then(|mut n| n.pop());
        match (c.mode.as_deref(), only) {
            (Some("ANY"), Some(name)) => {
                let mut named = Map::new();
                named.insert("type".into(), json!("function"));
                named.insert("function".into(), json!({"name": name}));
                Some(ToolChoice::Named(named))
            }
            (Some("ANY"), None) => Some(ToolChoice::Mode("required".into())),
            (Some("NONE"), _) => Some(ToolChoice::Mode("none".into())),
            (Some("AUTO"), _) => Some(ToolChoice::Mode("auto".into())),
            _ => None,
        }
    });
    let chat = ChatRequest {
        model,
        messages,
        stream: stream.then_some(true),
        stream_options: None,
        max_tokens: config.max_output_tokens,
        max_completion_tokens: None,
        temperature: config.temperature,
        top_p: config.top_p,
        n,
        stop: config.stop_sequences.filter(|s| !s.is_empty()).map(Stop::Many),
        tools: (!functions.is_empty()).then_some(functions),
        tool_choice,
        parallel_tool_calls: None,
        response_format,
        extra: Map::new(),
    };
    Ok(Translated { chat, problem })
}

fn image(url: String) -> ContentPart {
    ContentPart {
        kind: "image_url".into(),
        text: None,
        image_url: Some(ImageUrl { url, detail: None, extra: Map::new() }),
        extra: Map::new(),
    }
}

fn finish_reason(finish: &str) -> &'static str {
    match finish {
        "length" => "MAX_TOKENS",
        "content_filter" => "SAFETY",
        _ => "STOP",
    }
}

fn usage_metadata(u: &Usage) -> UsageMetadata {
    UsageMetadata {
        prompt_token_count: u.prompt_tokens,
        candidates_token_count: u.completion_tokens.saturating_sub(u.reasoning_tokens()),
        total_token_count: u.prompt_tokens + u.completion_tokens,
        cached_content_token_count: u.cached_tokens(),
        thoughts_token_count: u.reasoning_tokens(),
        extra: Map::new(),
    }
}

fn function_call_part(id: &str, name: &str, arguments: &str) -> Part {
    let args: Value = serde_json::from_str(arguments).unwrap_or_else(|_| json!({}));
    Part { function_call: Some(WireCall { id: Some(id.to_owned()), name: name.to_owned(), args }), ..Part::default() }
}

fn thought(text: &str) -> Part {
    Part { text: Some(text.to_owned()), thought: Some(true), ..Part::default() }
}

fn response(
    parts: Vec<Part>,
    finish: Option<&str>,
    model: &str,
    id: Option<&str>,
    usage: Option<&Usage>,
) -> GenerateResponse {
    GenerateResponse {
        candidates: vec![Candidate {
            content: Some(WireContent { role: Some("model".into()), parts, extra: Map::new() }),
            finish_reason: finish.map(str::to_owned),
            index: Some(0),
            extra: Map::new(),
        }],
        prompt_feedback: None,
        usage_metadata: usage.map(usage_metadata),
        model_version: Some(model.to_owned()),
        response_id: id.map(str::to_owned),
        extra: Map::new(),
    }
}

/// Renders answers as Gemini's `GenerateContentResponse`.
pub struct Gemini {
    /// The model as the caller named it, for answers that do not say.
    pub model: String,
    /// How a stream is framed: `alt=sse`, or Google's default JSON array.
    pub framing: Framing,
}

impl Dialect for Gemini {
    fn param_names(&self) -> fn(&'static str) -> &'static str {
        |canonical| match canonical {
            "messages" => "contents",
            "stop" => "generationConfig.stopSequences",
            "n" => "generationConfig.candidateCount",
            "response_format" => "generationConfig.responseSchema",
            other => other,
        }
    }

    fn whole(&self, resp: &ChatResponse) -> Vec<u8> {
        let model = if resp.model.is_empty() { &self.model } else { &resp.model };
        let mut out = response(Vec::new(), None, model, Some(&resp.id), resp.usage.as_ref());
        out.candidates = resp
            .choices
            .iter()
            .map(|choice| {
                let m = &choice.message;
                let mut parts = Vec::new();
                if let Some(t) = m.reasoning_content.as_deref().filter(|t| !t.is_empty()) {
                    parts.push(thought(t));
                }
                if let Some(t) = m.content.as_deref().filter(|t| !t.is_empty()) {
                    parts.push(Part::text(t));
                }
                for call in m.tool_calls.iter().flatten() {
                    parts.push(function_call_part(&call.id, &call.function.name, &call.function.arguments));
                }
                Candidate {
                    content: Some(WireContent { role: Some("model".into()), parts, extra: Map::new() }),
                    finish_reason: Some(finish_reason(choice.finish_reason.as_deref().unwrap_or("stop")).to_owned()),
                    index: Some(choice.index),
                    extra: Map::new(),
                }
            })
            .collect();
        serde_json::to_vec(&out).unwrap_or_default()
    }

    fn stream(&self) -> Box<dyn StreamEncoder> {
        Box::new(GeminiStream {
            events: GeminiEvents::new(self.model.clone()),
            framing: self.framing,
            sent: 0,
            buf: Vec::new(),
        })
    }
}

/// Gemini's stream as its responses: one `GenerateContentResponse` per chunk with new text; function
/// calls are held until their arguments are complete (Gemini sends them whole), then sent with the
/// finish reason.
pub struct GeminiEvents {
    model: String,
    /// By OpenAI tool-call index: id, name, arguments so far.
    calls: BTreeMap<u32, (String, String, String)>,
    usage: Option<Usage>,
    finish: Option<&'static str>,
    id: Option<String>,
}

impl GeminiEvents {
    fn new(model: String) -> Self {
        GeminiEvents { model, calls: BTreeMap::new(), usage: None, finish: None, id: None }
    }

    /// The responses that continue a stream the client already has, under its `responseId`.
    pub fn continuing(id: Option<String>) -> Self {
        GeminiEvents { id, ..GeminiEvents::new(String::new()) }
    }
}

impl ChunkTranslator<GenerateResponse> for GeminiEvents {
    fn chunk(&mut self, chunk: &ChatChunk, out: &mut Vec<GenerateResponse>) {
        if self.id.is_none() && !chunk.id.is_empty() {
            self.id = Some(chunk.id.clone());
        }
        if !chunk.model.is_empty() {
            self.model.clone_from(&chunk.model);
        }
        if let Some(u) = &chunk.usage {
            self.usage = Some(u.clone());
        }
        let Some(choice) = chunk.choices.iter().find(|c| c.index == 0) else { return };
        let d = &choice.delta;
        let mut parts = Vec::new();
        if let Some(t) = d.reasoning_content.as_deref().filter(|t| !t.is_empty()) {
            parts.push(thought(t));
        }
        if let Some(t) = d.content.as_deref().filter(|t| !t.is_empty()) {
            parts.push(Part::text(t));
        }
        for call in d.tool_calls.iter().flatten() {
            let entry = self.calls.entry(call.index).or_default();
            if let Some(id) = &call.id {
                entry.0.clone_from(id);
            }
            if let Some(f) = &call.function {
                if let Some(name) = &f.name {
                    entry.1.push_str(name);
                }
                if let Some(args) = &f.arguments {
                    entry.2.push_str(args);
                }
            }
        }
        if let Some(f) = &choice.finish_reason {
            self.finish = Some(finish_reason(f));
        }
        if !parts.is_empty() {
            out.push(response(parts, None, &self.model, self.id.as_deref(), None));
        }
    }

    fn done(&mut self, out: &mut Vec<GenerateResponse>) {
        let calls: Vec<Part> = std::mem::take(&mut self.calls)
            .into_values()
            .map(|(id, name, args)| function_call_part(&id, &name, &args))
            .collect();
        let usage = self.usage.take();
        let finish = self.finish.unwrap_or("STOP");
        out.push(response(calls, Some(finish), &self.model, self.id.as_deref(), usage.as_ref()));
    }
}

/// Gemini's stream rendered from chat chunks: [`GeminiEvents`], each response framed as the caller
/// asked (SSE or a JSON array).
struct GeminiStream {
    events: GeminiEvents,
    framing: Framing,
    /// Responses sent so far.
    sent: u64,
    buf: Vec<GenerateResponse>,
}

impl GeminiStream {
    fn frames(&mut self, out: &mut Vec<Bytes>) {
        for resp in self.buf.drain(..) {
            out.push(self.framing.frame(&serde_json::to_vec(&resp).unwrap_or_default(), self.sent));
            self.sent += 1;
        }
    }
}

impl StreamEncoder for GeminiStream {
    fn chunk(&mut self, chunk: &ChatChunk, out: &mut Vec<Bytes>) {
        self.events.chunk(chunk, &mut self.buf);
        self.frames(out);
    }

    fn done(&mut self, out: &mut Vec<Bytes>) {
        self.events.done(&mut self.buf);
        self.frames(out);
        out.extend(self.framing.end(self.sent));
    }

    fn error(&mut self, e: &ErrorReply<'_>) -> Bytes {
        self.framing.error(&errors::render(e), self.sent)
    }
}
