//! Gemini's front door: `POST /v1beta/models/{model}:generateContent` and `:streamGenerateContent`
//! (server-sent events, as `alt=sse` asks), so Gemini clients reach any model behind Switchyard.
//!
//! Like the Anthropic door, the request becomes the canonical chat request and is served by the shared
//! chat path; a `Dialect` renders the answer as a `GenerateContentResponse`. The key comes in
//! `x-goog-api-key` (or `?key=`). Errors use Google's shape (`{"error":{"code","message","status"}}`).
//!
//! Maps: `systemInstruction` → a system message; `contents` (`user`/`model`) with `text`, `inlineData`,
//! `fileData` (image URLs), `functionCall` and `functionResponse` parts → messages, tool calls and tool
//! messages; `generationConfig` (`temperature`, `topP`, `maxOutputTokens`, `stopSequences`,
//! `candidateCount`, `responseMimeType` + `responseSchema` → `response_format`); `tools`
//! (`functionDeclarations`) and `toolConfig` (`AUTO`/`ANY`/`NONE`, one allowed function → a named
//! choice). Thinking comes back as parts with `thought: true`. Dropped: `safetySettings`, `topK`,
//! `cachedContent`. Streamed function calls are sent whole, once their arguments are complete.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Extension;
use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use tokio::time::Instant;

use super::chat::{Dialect, StreamEncoder, serve_chat};
use super::observe::RequestId;
use super::{GatewayError, body};
use crate::app::AppState;
use crate::schema::{
    ChatChunk, ChatRequest, ChatResponse, Content, ContentPart, FunctionCall, FunctionDef, ImageUrl, Message,
    ResponseFormat, Role, Stop, Tool, ToolCall, ToolChoice, Usage,
};
use crate::tenancy::ActiveKey;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct GenerateRequest {
    #[serde(default)]
    contents: Vec<InContent>,
    #[serde(default, alias = "system_instruction")]
    system_instruction: Option<InContent>,
    #[serde(default, alias = "generation_config")]
    generation_config: Option<GenerationConfig>,
    #[serde(default)]
    tools: Option<Vec<InTool>>,
    #[serde(default, alias = "tool_config")]
    tool_config: Option<ToolConfig>,
}

#[derive(Debug, Deserialize)]
struct InContent {
    #[serde(default)]
    role: Option<String>,
    #[serde(default)]
    parts: Vec<Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct GenerationConfig {
    #[serde(default)]
    temperature: Option<f64>,
    #[serde(default, alias = "top_p")]
    top_p: Option<f64>,
    #[serde(default, alias = "max_output_tokens")]
    max_output_tokens: Option<u32>,
    #[serde(default, alias = "stop_sequences")]
    stop_sequences: Option<Vec<String>>,
    #[serde(default, alias = "candidate_count")]
    candidate_count: Option<u32>,
    #[serde(default, alias = "response_mime_type")]
    response_mime_type: Option<String>,
    #[serde(default, alias = "response_schema", alias = "responseJsonSchema", alias = "response_json_schema")]
    response_schema: Option<Value>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct InTool {
    #[serde(default, alias = "function_declarations")]
    function_declarations: Option<Vec<FunctionDeclaration>>,
}

#[derive(Debug, Deserialize)]
struct FunctionDeclaration {
    name: String,
    #[serde(default)]
    description: Option<String>,
    #[serde(default, alias = "parametersJsonSchema", alias = "parameters_json_schema")]
    parameters: Option<Value>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ToolConfig {
    #[serde(default, alias = "function_calling_config")]
    function_calling_config: Option<FunctionCallingConfig>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct FunctionCallingConfig {
    #[serde(default)]
    mode: Option<String>,
    #[serde(default, alias = "allowed_function_names")]
    allowed_function_names: Option<Vec<String>>,
}

/// `POST /v1beta/models/{model}:{generateContent|streamGenerateContent}`.
pub async fn generate(
    State(state): State<Arc<AppState>>,
    Extension(request_id): Extension<RequestId>,
    key: Option<Extension<Arc<ActiveKey>>>,
    Path(target): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, GatewayError> {
    let started = Instant::now();
    let (model, action) =
        target.rsplit_once(':').ok_or_else(|| GatewayError::not_found(format!("No such method: {target}")))?;
    let stream = match action {
        "generateContent" => false,
        "streamGenerateContent" => true,
        other => return Err(GatewayError::not_found(format!("Method '{other}' is not supported."))),
    };
    let model = model.strip_prefix("models/").unwrap_or(model).to_owned();
    let req: GenerateRequest = body::read_json(&headers, body, state.body_limits).await?;
    let chat = to_chat(model.clone(), stream, req)?;
    let dialect = Gemini { model };
    serve_chat(&state, &request_id, key.map(|Extension(k)| k), chat, started, Box::new(dialect), &headers).await
}

fn invalid(message: impl Into<String>, param: &str) -> GatewayError {
    GatewayError::invalid_value(message, param)
}

fn message(role: Role, content: Option<Content>) -> Message {
    Message { role, content, name: None, tool_calls: None, tool_call_id: None, extra: Map::new() }
}

fn part_text(part: &Value) -> Option<&str> {
    part.get("text").and_then(Value::as_str)
}

fn get<'a>(part: &'a Value, camel: &str, snake: &str) -> Option<&'a Value> {
    part.get(camel).or_else(|| part.get(snake))
}

/// Gemini's request as the canonical chat request.
fn to_chat(model: String, stream: bool, req: GenerateRequest) -> Result<ChatRequest, GatewayError> {
    if req.contents.is_empty() {
        return Err(invalid("contents: at least one content is required.", "contents"));
    }
    let mut messages = Vec::with_capacity(req.contents.len() + 1);
    if let Some(system) = &req.system_instruction {
        let text: Vec<&str> = system.parts.iter().filter_map(part_text).collect();
        if !text.is_empty() {
            messages.push(message(Role::System, Some(Content::Text(text.join("\n")))));
        }
    }
    // Function calls get ids here when the client sent none, so their responses can point at them.
    let mut open_calls: Vec<(String, String)> = Vec::new();
    for (i, c) in req.contents.iter().enumerate() {
        let is_model = match c.role.as_deref() {
            Some("model") => true,
            Some("user") | None => false,
            Some(other) => {
                return Err(invalid(format!("contents[{i}].role: must be user or model, not '{other}'."), "role"));
            }
        };
        let mut parts = Vec::new();
        let mut text = String::new();
        let mut calls = Vec::new();
        for (j, part) in c.parts.iter().enumerate() {
            let at = format!("contents[{i}].parts[{j}]");
            if part.get("thought").and_then(Value::as_bool) == Some(true) {
                continue; // earlier reasoning is not sent back upstream
            }
            if let Some(t) = part_text(part) {
                if is_model {
                    text.push_str(t);
                } else {
                    parts.push(ContentPart {
                        kind: "text".into(),
                        text: Some(t.to_owned()),
                        image_url: None,
                        extra: Map::new(),
                    });
                }
            } else if let Some(data) = get(part, "inlineData", "inline_data") {
                let mime = get(data, "mimeType", "mime_type").and_then(Value::as_str).unwrap_or("image/png");
                let payload = data.get("data").and_then(Value::as_str).unwrap_or_default();
                parts.push(image(format!("data:{mime};base64,{payload}")));
            } else if let Some(file) = get(part, "fileData", "file_data") {
                let uri = get(file, "fileUri", "file_uri").and_then(Value::as_str).unwrap_or_default();
                parts.push(image(uri.to_owned()));
            } else if let Some(call) = get(part, "functionCall", "function_call") {
                let name = call.get("name").and_then(Value::as_str).unwrap_or_default().to_owned();
                let id = call.get("id").and_then(Value::as_str).map_or_else(|| format!("call_{i}_{j}"), str::to_owned);
                let args = call.get("args").cloned().unwrap_or_else(|| json!({}));
                open_calls.push((id.clone(), name.clone()));
                calls.push(ToolCall {
                    id,
                    kind: "function".into(),
                    function: FunctionCall { name, arguments: args.to_string(), extra: Map::new() },
                    extra: Map::new(),
                });
            } else if let Some(resp) = get(part, "functionResponse", "function_response") {
                let name = resp.get("name").and_then(Value::as_str).unwrap_or_default();
                let id = match resp.get("id").and_then(Value::as_str) {
                    Some(id) => id.to_owned(),
                    None => {
                        let found = open_calls.iter().rposition(|(_, n)| n == name);
                        found.map(|k| open_calls.remove(k).0).unwrap_or_else(|| format!("call_{name}"))
                    }
                };
                let content = resp.get("response").cloned().unwrap_or(Value::Null);
                let mut m = message(Role::Tool, Some(Content::Text(content.to_string())));
                m.tool_call_id = Some(id);
                messages.push(m);
            } else {
                return Err(invalid(format!("{at}: this kind of part is not supported here."), &at));
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
    if config.candidate_count.is_some_and(|n| n > 1) {
        return Err(invalid("generationConfig.candidateCount: only 1 is supported.", "candidateCount"));
    }
    let response_format = match config.response_mime_type.as_deref() {
        Some("application/json") => Some(match config.response_schema {
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
                parameters: f.parameters,
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
    Ok(ChatRequest {
        model,
        messages,
        stream: stream.then_some(true),
        stream_options: None,
        max_tokens: config.max_output_tokens,
        max_completion_tokens: None,
        temperature: config.temperature,
        top_p: config.top_p,
        n: None,
        stop: config.stop_sequences.filter(|s| !s.is_empty()).map(Stop::Many),
        tools: (!functions.is_empty()).then_some(functions),
        tool_choice,
        parallel_tool_calls: None,
        response_format,
        extra: Map::new(),
    })
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

fn usage_metadata(u: &Usage) -> Value {
    let mut v = json!({
        "promptTokenCount": u.prompt_tokens,
        "candidatesTokenCount": u.completion_tokens.saturating_sub(u.reasoning_tokens()),
        "totalTokenCount": u.prompt_tokens + u.completion_tokens,
    });
    if u.cached_tokens() > 0 {
        v["cachedContentTokenCount"] = json!(u.cached_tokens());
    }
    if u.reasoning_tokens() > 0 {
        v["thoughtsTokenCount"] = json!(u.reasoning_tokens());
    }
    v
}

fn function_call_part(id: &str, name: &str, arguments: &str) -> Value {
    let args: Value = serde_json::from_str(arguments).unwrap_or_else(|_| json!({}));
    json!({"functionCall": {"id": id, "name": name, "args": args}})
}

/// Renders answers as Gemini's `GenerateContentResponse`.
struct Gemini {
    model: String,
}

impl Dialect for Gemini {
    fn whole(&self, resp: &ChatResponse) -> Result<Vec<u8>, GatewayError> {
        let mut parts = Vec::new();
        let choice = resp.choices.first();
        if let Some(m) = choice.map(|c| &c.message) {
            if let Some(t) = m.reasoning_content.as_deref().filter(|t| !t.is_empty()) {
                parts.push(json!({"text": t, "thought": true}));
            }
            if let Some(t) = m.content.as_deref().filter(|t| !t.is_empty()) {
                parts.push(json!({"text": t}));
            }
            for call in m.tool_calls.iter().flatten() {
                parts.push(function_call_part(&call.id, &call.function.name, &call.function.arguments));
            }
        }
        let mut body = json!({
            "candidates": [{
                "content": {"role": "model", "parts": parts},
                "finishReason": finish_reason(choice.and_then(|c| c.finish_reason.as_deref()).unwrap_or("stop")),
                "index": 0,
            }],
            "modelVersion": if resp.model.is_empty() { &self.model } else { &resp.model },
            "responseId": resp.id,
        });
        if let Some(u) = &resp.usage {
            body["usageMetadata"] = usage_metadata(u);
        }
        serde_json::to_vec(&body).map_err(|_| GatewayError::internal())
    }

    fn stream(&self) -> Box<dyn StreamEncoder> {
        Box::new(GeminiStream {
            model: self.model.clone(),
            calls: BTreeMap::new(),
            usage: None,
            finish: None,
            id: None,
        })
    }
}

/// Gemini's stream: one `GenerateContentResponse` per event with the new text; function calls are held
/// until their arguments are complete (Gemini sends them whole), then sent with the finish reason.
struct GeminiStream {
    model: String,
    /// By OpenAI tool-call index: id, name, arguments so far.
    calls: BTreeMap<u32, (String, String, String)>,
    usage: Option<Usage>,
    finish: Option<&'static str>,
    id: Option<String>,
}

impl GeminiStream {
    fn frame(&self, parts: Vec<Value>, finish: Option<&str>, usage: Option<&Usage>) -> Bytes {
        let mut candidate = json!({"content": {"role": "model", "parts": parts}, "index": 0});
        if let Some(f) = finish {
            candidate["finishReason"] = json!(f);
        }
        let mut v = json!({"candidates": [candidate], "modelVersion": self.model});
        if let Some(id) = &self.id {
            v["responseId"] = json!(id);
        }
        if let Some(u) = usage {
            v["usageMetadata"] = usage_metadata(u);
        }
        crate::sse::data_frame(v.to_string().as_bytes())
    }
}

impl StreamEncoder for GeminiStream {
    fn chunk(&mut self, chunk: &ChatChunk, out: &mut Vec<Bytes>) {
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
            parts.push(json!({"text": t, "thought": true}));
        }
        if let Some(t) = d.content.as_deref().filter(|t| !t.is_empty()) {
            parts.push(json!({"text": t}));
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
            out.push(self.frame(parts, None, None));
        }
    }

    fn done(&mut self, out: &mut Vec<Bytes>) {
        let calls: Vec<Value> = std::mem::take(&mut self.calls)
            .into_values()
            .map(|(id, name, args)| function_call_part(&id, &name, &args))
            .collect();
        let usage = self.usage.take();
        out.push(self.frame(calls, Some(self.finish.unwrap_or("STOP")), usage.as_ref()));
    }

    fn error(&mut self, e: &GatewayError) -> Bytes {
        crate::sse::data_frame(google_error(e.status.as_u16(), &e.message).to_string().as_bytes())
    }
}

fn google_error(status: u16, message: &str) -> Value {
    let name = match status {
        400 | 413 | 415 | 422 => "INVALID_ARGUMENT",
        401 => "UNAUTHENTICATED",
        403 => "PERMISSION_DENIED",
        404 => "NOT_FOUND",
        408 | 504 => "DEADLINE_EXCEEDED",
        429 => "RESOURCE_EXHAUSTED",
        503 => "UNAVAILABLE",
        501 => "UNIMPLEMENTED",
        _ => "INTERNAL",
    };
    json!({"error": {"code": status, "message": message, "status": name}})
}

/// The Gemini routes' edge: a key in `?key=` is taken as `x-goog-api-key` (as Google's API allows), and
/// every error, from any layer, leaves in Google's shape.
pub async fn gemini_edge(mut req: Request, next: Next) -> Response {
    let from_query =
        req.uri().query().and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("key=")).map(|k| k.to_owned()));
    if let Some(key) = from_query
        && !req.headers().contains_key("x-goog-api-key")
        && let Ok(mut v) = HeaderValue::from_str(&key)
    {
        v.set_sensitive(true);
        req.headers_mut().insert("x-goog-api-key", v);
    }
    super::error::rewrite_error(next.run(req).await, |status, err| {
        google_error(status, err["message"].as_str().unwrap_or("Request failed."))
    })
    .await
}
