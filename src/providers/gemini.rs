//! Google AI Studio's Gemini API: `models/{model}:generateContent` and `:streamGenerateContent?alt=sse`,
//! authenticated with `x-goog-api-key` (never a `?key=` query, so no URL carries a credential).
//!
//! Maps: system and developer messages → `systemInstruction`; user/assistant/tool turns → `contents` with
//! roles `user`/`model` and `text`, `inlineData` (base64 `data:` URLs), `fileData` (https URLs, MIME type
//! from the extension), `functionCall` and `functionResponse` parts; `tools` → `functionDeclarations` with
//! `parametersJsonSchema`; `tool_choice` → `functionCallingConfig` (`required` → `ANY`, a named tool →
//! `ANY` + `allowedFunctionNames`); `temperature`, `top_p`, `top_k`, `n` → `candidateCount`, `stop`,
//! `max_completion_tokens`/`max_tokens` → `maxOutputTokens`, `seed`, penalties; `response_format` →
//! `responseMimeType` (+ `responseJsonSchema`); `reasoning_effort` → `thinkingConfig` with thoughts
//! returned as `reasoning_content`. Drops: `logit_bias`, `logprobs`, `user`, `store`, `metadata`, other
//! unknown fields. Refuses with 400: audio and file content parts, images that are neither.
//! Vertex AI differs only in URL and auth; it would be a second endpoint style of this adapter.
//! Reference: Gemini API docs, "Generating content", "Function calling", "Thinking", "Embeddings".

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, StatusCode, header};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::error::{ErrorKind, ProviderError, TimeoutPhase, retry_after};
use super::{Adapter, Endpoint, StreamMapper, StreamStep, UpstreamRequest, bad_request};
use crate::schema::{
    ChatChunk, ChatRequest, ChatResponse, Choice, ChunkChoice, CompletionTokensDetails, Content, Delta, Embedding,
    EmbeddingRequest, EmbeddingResponse, EmbeddingUsage, EmbeddingVector, FunctionCall, FunctionCallDelta,
    PromptTokensDetails, ResponseMessage, Role, Stop, ToolCall, ToolCallDelta, ToolChoice, ToolChoiceMode, Usage,
    inline_image,
};
use crate::sse::SseEvent;

#[derive(Debug, Default)]
pub struct GeminiAdapter;

fn auth_headers(endpoint: &Endpoint<'_>) -> Result<HeaderMap, ProviderError> {
    let mut headers = endpoint.headers.clone();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if let Some(key) = endpoint.api_key {
        let mut value = HeaderValue::from_str(key.expose()).map_err(|_| {
            ProviderError::new(ErrorKind::Authentication, "the provider key is not a valid header value")
        })?;
        value.set_sensitive(true);
        headers.insert("x-goog-api-key", value);
    }
    Ok(headers)
}

fn model_url(endpoint: &Endpoint<'_>, model: &str, action: &str) -> String {
    let model = super::path_segment(model.strip_prefix("models/").unwrap_or(model));
    format!("{}/v1beta/models/{model}:{action}", endpoint.base_url.trim_end_matches('/'))
}

impl Adapter for GeminiAdapter {
    fn chat_request(&self, req: &ChatRequest, endpoint: &Endpoint<'_>) -> Result<UpstreamRequest, ProviderError> {
        let body = translate_request(req)?;
        let action = if req.is_streaming() { "streamGenerateContent?alt=sse" } else { "generateContent" };
        Ok(UpstreamRequest {
            url: model_url(endpoint, &req.model, action),
            headers: auth_headers(endpoint)?,
            body: Bytes::from(body.to_string()),
        })
    }

    fn parse_chat_response(&self, req: &ChatRequest, body: &[u8]) -> Result<ChatResponse, ProviderError> {
        let resp: GenerateResponse = serde_json::from_slice(body)
            .map_err(|e| ProviderError::new(ErrorKind::InvalidResponse, format!("unreadable Gemini response: {e}")))?;
        let mut choices = Vec::new();
        let mut call_counter = 0;
        for (i, cand) in resp.candidates.iter().enumerate() {
            let mut text = String::new();
            let mut reasoning = String::new();
            let mut calls = Vec::new();
            for part in cand.content.as_ref().map(|c| c.parts.as_slice()).unwrap_or_default() {
                if let Some(call) = &part.function_call {
                    calls.push(ToolCall {
                        id: call_id(&resp.response_id, call_counter),
                        kind: "function".to_owned(),
                        function: FunctionCall {
                            name: call.name.clone(),
                            arguments: call.args.to_string(),
                            extra: Map::new(),
                        },
                        extra: Map::new(),
                    });
                    call_counter += 1;
                } else if let Some(t) = &part.text {
                    if part.thought { reasoning.push_str(t) } else { text.push_str(t) }
                }
            }
            let finish = finish_reason(cand.finish_reason.as_deref(), !calls.is_empty());
            choices.push(Choice {
                index: cand.index.unwrap_or(i as u32),
                message: ResponseMessage {
                    role: "assistant".to_owned(),
                    content: (!text.is_empty() || calls.is_empty()).then_some(text),
                    reasoning_content: (!reasoning.is_empty()).then_some(reasoning),
                    tool_calls: (!calls.is_empty()).then_some(calls),
                    extra: Map::new(),
                },
                finish_reason: Some(finish.to_owned()),
                extra: Map::new(),
            });
        }
        if choices.is_empty() {
            // The prompt itself was blocked: no candidates, only `promptFeedback.blockReason`.
            let reason = resp.prompt_feedback.as_ref().and_then(|f| f["blockReason"].as_str()).unwrap_or("unknown");
            let mut e = ProviderError::new(ErrorKind::ContentPolicy, format!("Gemini blocked the prompt ({reason})."));
            e.status = Some(400);
            return Err(e);
        }
        Ok(ChatResponse {
            id: response_id(&resp.response_id),
            object: "chat.completion".to_owned(),
            created: super::unix_now(),
            model: resp.model_version.clone().unwrap_or_else(|| req.model.clone()),
            choices,
            usage: resp.usage_metadata.as_ref().map(UsageMetadata::to_canonical),
            extra: Map::new(),
        })
    }

    fn stream_mapper(&self, req: &ChatRequest) -> Box<dyn StreamMapper> {
        Box::new(GeminiStream { model: req.model.clone(), created: super::unix_now(), ..GeminiStream::default() })
    }

    fn classify_error(&self, status: StatusCode, headers: &HeaderMap, body: &[u8]) -> ProviderError {
        let detail = serde_json::from_slice::<ErrorEnvelope>(body).ok().map(|e| e.error);
        let status_text = detail.as_ref().map(|d| d.status.as_str()).unwrap_or_default();
        let upstream = detail.as_ref().map(|d| d.message.clone()).unwrap_or_default();
        let lower = upstream.to_lowercase();
        let kind = match (status.as_u16(), status_text) {
            (429, _) | (_, "RESOURCE_EXHAUSTED") => ErrorKind::RateLimited,
            (401 | 403, _) | (_, "UNAUTHENTICATED" | "PERMISSION_DENIED") => ErrorKind::Authentication,
            (400, _) if lower.contains("api key not valid") => ErrorKind::Authentication,
            (404, _) | (_, "NOT_FOUND") => ErrorKind::NotFound,
            (504, _) | (_, "DEADLINE_EXCEEDED") => ErrorKind::Timeout(TimeoutPhase::Total),
            (400, _) if lower.contains("token count") || lower.contains("exceeds the maximum") => {
                ErrorKind::ContextTooLong
            }
            (400..=499, _) => ErrorKind::BadRequest,
            (503, _) | (_, "UNAVAILABLE") => ErrorKind::Overloaded,
            _ => ErrorKind::ServerError,
        };
        let message = match kind {
            ErrorKind::BadRequest | ErrorKind::NotFound | ErrorKind::ContextTooLong if !upstream.is_empty() => upstream,
            ErrorKind::RateLimited => "Gemini is rate limiting requests".to_owned(),
            ErrorKind::Authentication => "Gemini rejected the gateway's credentials".to_owned(),
            ErrorKind::Overloaded => "Gemini is overloaded".to_owned(),
            _ => format!("Gemini failed with HTTP {}", status.as_u16()),
        };
        ProviderError {
            kind,
            status: Some(status.as_u16()),
            retry_after: retry_after(headers),
            message,
            code: None,
            param: None,
        }
    }

    fn embeddings_request(
        &self,
        req: &EmbeddingRequest,
        endpoint: &Endpoint<'_>,
    ) -> Result<UpstreamRequest, ProviderError> {
        let texts = req
            .input
            .texts()
            .ok_or_else(|| bad_request("Gemini embeddings take text input, not token ids.", "input"))?;
        let model = format!("models/{}", req.model.strip_prefix("models/").unwrap_or(&req.model));
        let requests: Vec<Value> = texts
            .iter()
            .map(|t| {
                let mut r = json!({"model": model, "content": {"parts": [{"text": t}]}});
                if let Some(d) = req.dimensions {
                    r["outputDimensionality"] = json!(d);
                }
                r
            })
            .collect();
        Ok(UpstreamRequest {
            url: model_url(endpoint, &req.model, "batchEmbedContents"),
            headers: auth_headers(endpoint)?,
            body: Bytes::from(json!({"requests": requests}).to_string()),
        })
    }

    fn parse_embeddings(&self, req: &EmbeddingRequest, body: &[u8]) -> Result<EmbeddingResponse, ProviderError> {
        #[derive(Deserialize)]
        struct Batch {
            embeddings: Vec<Values>,
        }
        #[derive(Deserialize)]
        struct Values {
            values: Vec<f64>,
        }
        let batch: Batch = serde_json::from_slice(body).map_err(|e| {
            ProviderError::new(ErrorKind::InvalidResponse, format!("unreadable Gemini embeddings: {e}"))
        })?;
        // Gemini reports no token count for embeddings; estimate it the way the gateway does elsewhere.
        let tokens: u64 = req.input.texts().unwrap_or_default().iter().map(|t| t.len().div_ceil(4) as u64).sum();
        Ok(EmbeddingResponse {
            object: "list".to_owned(),
            data: batch
                .embeddings
                .into_iter()
                .enumerate()
                .map(|(i, e)| Embedding {
                    object: "embedding".to_owned(),
                    index: i as u32,
                    embedding: EmbeddingVector::Float(e.values),
                    extra: Map::new(),
                })
                .collect(),
            model: req.model.clone(),
            usage: Some(EmbeddingUsage { prompt_tokens: tokens, total_tokens: tokens, extra: Map::new() }),
            extra: Map::new(),
        })
    }
}

fn translate_request(req: &ChatRequest) -> Result<Value, ProviderError> {
    let mut system_parts: Vec<Value> = Vec::new();
    let mut contents: Vec<Value> = Vec::new();
    for (i, m) in req.messages.iter().enumerate() {
        match m.role {
            Role::System | Role::Developer => {
                if let Some(c) = &m.content {
                    system_parts.push(json!({"text": c.to_text()}));
                }
            }
            Role::User => push_content(&mut contents, "user", parts_of(m.content.as_ref(), i)?),
            Role::Assistant => {
                let mut parts = parts_of(m.content.as_ref(), i)?;
                for call in m.tool_calls.iter().flatten() {
                    let args: Value = serde_json::from_str(&call.function.arguments).unwrap_or_else(|_| json!({}));
                    parts.push(json!({"functionCall": {"name": call.function.name, "args": args}}));
                }
                push_content(&mut contents, "model", parts);
            }
            Role::Tool | Role::Function => {
                // Gemini matches results to calls by function name; find it from the call id.
                let name = m.name.clone().or_else(|| {
                    let id = m.tool_call_id.as_deref()?;
                    req.messages
                        .iter()
                        .flat_map(|p| p.tool_calls.iter().flatten())
                        .find(|c| c.id == id)
                        .map(|c| c.function.name.clone())
                });
                let name = name.ok_or_else(|| {
                    bad_request(
                        "A tool message must answer a tool call made earlier in the conversation.",
                        &format!("messages[{i}].tool_call_id"),
                    )
                })?;
                let text = m.content.as_ref().map(Content::to_text).unwrap_or_default();
                let response = serde_json::from_str::<Value>(&text)
                    .ok()
                    .filter(Value::is_object)
                    .unwrap_or_else(|| json!({"result": text}));
                push_content(
                    &mut contents,
                    "user",
                    vec![json!({"functionResponse": {"name": name, "response": response}})],
                );
            }
        }
    }
    let mut body = Map::new();
    body.insert("contents".into(), Value::Array(contents));
    if !system_parts.is_empty() {
        body.insert("systemInstruction".into(), json!({"parts": system_parts}));
    }
    let mut generation = Map::new();
    let mut set = |k: &str, v: Option<Value>| {
        if let Some(v) = v {
            generation.insert(k.to_owned(), v);
        }
    };
    set("temperature", req.temperature.map(|v| json!(v)));
    set("topP", req.top_p.map(|v| json!(v)));
    set("topK", req.extra.get("top_k").cloned());
    set("candidateCount", req.n.map(|v| json!(v)));
    set("maxOutputTokens", req.max_output_tokens().map(|v| json!(v)));
    set("seed", req.extra.get("seed").cloned());
    set("presencePenalty", req.extra.get("presence_penalty").cloned());
    set("frequencyPenalty", req.extra.get("frequency_penalty").cloned());
    set(
        "stopSequences",
        match &req.stop {
            Some(Stop::One(s)) => Some(json!([s])),
            Some(Stop::Many(v)) if !v.is_empty() => Some(json!(v)),
            _ => None,
        },
    );
    if let Some(format) = &req.response_format {
        match format.kind.as_str() {
            "json_object" => set("responseMimeType", Some(json!("application/json"))),
            "json_schema" => {
                set("responseMimeType", Some(json!("application/json")));
                set("responseJsonSchema", format.extra.get("json_schema").and_then(|s| s.get("schema")).cloned());
            }
            _ => {}
        }
    }
    if let Some(effort) = req.extra.get("reasoning_effort").and_then(Value::as_str) {
        let budget = match effort {
            "minimal" => 0,
            "low" => 1024,
            "medium" => 8192,
            _ => 24576,
        };
        set("thinkingConfig", Some(json!({"thinkingBudget": budget, "includeThoughts": budget > 0})));
    }
    if !generation.is_empty() {
        body.insert("generationConfig".into(), Value::Object(generation));
    }
    let declarations: Vec<Value> = req
        .tools
        .iter()
        .flatten()
        .filter_map(|t| t.function.as_ref())
        .map(|f| {
            let mut d = json!({"name": f.name});
            if let Some(desc) = &f.description {
                d["description"] = json!(desc);
            }
            if let Some(p) = &f.parameters {
                d["parametersJsonSchema"] = p.clone();
            }
            d
        })
        .collect();
    if !declarations.is_empty() {
        body.insert("tools".into(), json!([{"functionDeclarations": declarations}]));
    }
    let config = match req.tool_choice.as_ref().map(ToolChoice::mode).transpose() {
        Err(why) => return Err(bad_request(why, "tool_choice")),
        Ok(None) => None,
        Ok(Some(ToolChoiceMode::Auto)) => Some(json!({"mode": "AUTO"})),
        Ok(Some(ToolChoiceMode::Required)) => Some(json!({"mode": "ANY"})),
        Ok(Some(ToolChoiceMode::None)) => Some(json!({"mode": "NONE"})),
        Ok(Some(ToolChoiceMode::Function(name))) => Some(json!({"mode": "ANY", "allowedFunctionNames": [name]})),
    };
    if let Some(c) = config {
        body.insert("toolConfig".into(), json!({"functionCallingConfig": c}));
    }
    Ok(Value::Object(body))
}

fn push_content(contents: &mut Vec<Value>, role: &str, parts: Vec<Value>) {
    if parts.is_empty() {
        return;
    }
    if let Some(last) = contents.last_mut()
        && last["role"] == role
        && let Some(existing) = last["parts"].as_array_mut()
    {
        existing.extend(parts);
        return;
    }
    contents.push(json!({"role": role, "parts": parts}));
}

fn parts_of(content: Option<&Content>, i: usize) -> Result<Vec<Value>, ProviderError> {
    match content {
        None => Ok(Vec::new()),
        Some(Content::Text(t)) if t.is_empty() => Ok(Vec::new()),
        Some(Content::Text(t)) => Ok(vec![json!({"text": t})]),
        Some(Content::Parts(parts)) => parts
            .iter()
            .enumerate()
            .map(|(j, p)| match (p.kind.as_str(), &p.text, &p.image_url) {
                ("text", Some(t), _) => Ok(json!({"text": t})),
                ("image_url", _, Some(img)) => image_part(&img.url).ok_or_else(|| {
                    bad_request(
                        "Images must be https URLs or base64 data: URLs.",
                        &format!("messages[{i}].content[{j}].image_url"),
                    )
                }),
                (other, _, _) => Err(bad_request(
                    format!("Content parts of type '{other}' cannot be sent to Gemini models."),
                    &format!("messages[{i}].content[{j}]"),
                )),
            })
            .collect(),
    }
}

fn image_part(url: &str) -> Option<Value> {
    if url.starts_with("data:") {
        let (mime, data) = inline_image(url)?;
        return Some(json!({"inlineData": {"mimeType": mime, "data": data}}));
    }
    if !url.starts_with("https://") {
        return None;
    }
    let path = url.split(['?', '#']).next().unwrap_or(url).to_lowercase();
    let mime = match path.rsplit('.').next() {
        Some("png") => "image/png",
        Some("webp") => "image/webp",
        Some("gif") => "image/gif",
        Some("heic") => "image/heic",
        _ => "image/jpeg",
    };
    Some(json!({"fileData": {"mimeType": mime, "fileUri": url}}))
}

fn finish_reason(reason: Option<&str>, has_calls: bool) -> &'static str {
    match reason {
        Some("MAX_TOKENS") => "length",
        Some("SAFETY" | "RECITATION" | "BLOCKLIST" | "PROHIBITED_CONTENT" | "SPII" | "IMAGE_SAFETY") => {
            "content_filter"
        }
        _ if has_calls => "tool_calls",
        _ => "stop",
    }
}

fn response_id(id: &Option<String>) -> String {
    format!("chatcmpl-{}", id.as_deref().unwrap_or("gemini"))
}

fn call_id(response_id: &Option<String>, n: u32) -> String {
    format!("call_{}_{n}", response_id.as_deref().unwrap_or("gemini"))
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct GenerateResponse {
    #[serde(default)]
    candidates: Vec<Candidate>,
    usage_metadata: Option<UsageMetadata>,
    model_version: Option<String>,
    response_id: Option<String>,
    prompt_feedback: Option<Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Candidate {
    content: Option<CandidateContent>,
    finish_reason: Option<String>,
    index: Option<u32>,
}

#[derive(Deserialize)]
struct CandidateContent {
    #[serde(default)]
    parts: Vec<Part>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Part {
    text: Option<String>,
    #[serde(default)]
    thought: bool,
    function_call: Option<WireFunctionCall>,
}

#[derive(Deserialize)]
struct WireFunctionCall {
    name: String,
    #[serde(default)]
    args: Value,
}

#[derive(Deserialize, Clone, Default)]
#[serde(rename_all = "camelCase")]
struct UsageMetadata {
    #[serde(default)]
    prompt_token_count: u64,
    #[serde(default)]
    candidates_token_count: u64,
    #[serde(default)]
    cached_content_token_count: u64,
    #[serde(default)]
    thoughts_token_count: u64,
}

impl UsageMetadata {
    /// OpenAI's `completion_tokens` includes reasoning; Gemini counts thoughts apart.
    fn to_canonical(&self) -> Usage {
        let completion = self.candidates_token_count + self.thoughts_token_count;
        Usage {
            prompt_tokens: self.prompt_token_count,
            completion_tokens: completion,
            total_tokens: self.prompt_token_count + completion,
            prompt_tokens_details: Some(PromptTokensDetails {
                cached_tokens: Some(self.cached_content_token_count),
                cache_write_tokens: None,
                extra: Map::new(),
            }),
            completion_tokens_details: Some(CompletionTokensDetails {
                reasoning_tokens: Some(self.thoughts_token_count),
                extra: Map::new(),
            }),
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
    #[serde(default)]
    message: String,
    #[serde(default)]
    status: String,
}

/// Per-stream state. Gemini sends whole `GenerateContentResponse`s; function calls arrive complete.
#[derive(Default)]
struct GeminiStream {
    id: String,
    model: String,
    created: u64,
    started: bool,
    tool_calls: u32,
    usage: Option<UsageMetadata>,
}

impl GeminiStream {
    fn chunk(&self, index: u32, delta: Delta, finish: Option<&str>) -> ChatChunk {
        ChatChunk {
            id: self.id.clone(),
            object: "chat.completion.chunk".to_owned(),
            created: self.created,
            model: self.model.clone(),
            choices: vec![ChunkChoice { index, delta, finish_reason: finish.map(str::to_owned), extra: Map::new() }],
            usage: None,
            extra: Map::new(),
        }
    }
}

impl StreamMapper for GeminiStream {
    fn map(&mut self, event: &SseEvent, out: &mut Vec<ChatChunk>) -> Result<StreamStep, ProviderError> {
        if let Ok(ErrorEnvelope { error }) = serde_json::from_str::<ErrorEnvelope>(&event.data) {
            let mut e = ProviderError::new(
                ErrorKind::StreamInterrupted,
                if error.message.is_empty() { "Gemini reported an error mid-stream".to_owned() } else { error.message },
            );
            if error.status == "RESOURCE_EXHAUSTED" {
                e.kind = ErrorKind::RateLimited;
            }
            return Err(e);
        }
        let resp: GenerateResponse = serde_json::from_str(&event.data).map_err(|e| {
            ProviderError::new(ErrorKind::InvalidResponse, format!("unreadable Gemini stream event: {e}"))
        })?;
        if !self.started {
            self.started = true;
            self.id = response_id(&resp.response_id);
            if let Some(v) = &resp.model_version {
                self.model.clone_from(v);
            }
            out.push(self.chunk(
                0,
                Delta { role: Some("assistant".to_owned()), content: Some(String::new()), ..Delta::default() },
                None,
            ));
        }
        if resp.usage_metadata.is_some() {
            self.usage = resp.usage_metadata.clone();
        }
        let mut finished = false;
        for (i, cand) in resp.candidates.iter().enumerate() {
            let index = cand.index.unwrap_or(i as u32);
            let mut has_calls = false;
            for part in cand.content.as_ref().map(|c| c.parts.as_slice()).unwrap_or_default() {
                let delta = if let Some(call) = &part.function_call {
                    has_calls = true;
                    let n = self.tool_calls;
                    self.tool_calls += 1;
                    Delta {
                        tool_calls: Some(vec![ToolCallDelta {
                            index: n,
                            id: Some(call_id(&resp.response_id, n)),
                            kind: Some("function".to_owned()),
                            function: Some(FunctionCallDelta {
                                name: Some(call.name.clone()),
                                arguments: Some(call.args.to_string()),
                                extra: Map::new(),
                            }),
                            extra: Map::new(),
                        }]),
                        ..Delta::default()
                    }
                } else if part.thought {
                    Delta { reasoning_content: part.text.clone(), ..Delta::default() }
                } else {
                    Delta { content: part.text.clone(), ..Delta::default() }
                };
                if !delta.is_empty() {
                    out.push(self.chunk(index, delta, None));
                }
            }
            if let Some(reason) = cand.finish_reason.as_deref() {
                finished = true;
                let finish = finish_reason(Some(reason), has_calls || self.tool_calls > 0);
                out.push(self.chunk(index, Delta::default(), Some(finish)));
            }
        }
        if finished {
            let mut last = self.chunk(0, Delta::default(), None);
            last.choices.clear();
            last.usage = self.usage.as_ref().map(UsageMetadata::to_canonical);
            if last.usage.is_some() {
                out.push(last);
            }
        }
        Ok(StreamStep::Continue)
    }
}
