//! The Gemini adapter: canonical chat and embedding requests as Gemini requests, and Gemini answers and
//! stream frames back as canonical responses and chunks. What is mapped and dropped is in the
//! protocol's header.

use http::{HeaderMap, HeaderValue, StatusCode, header};
use serde_json::{Map, Value, json};

use super::errors::{classify, in_stream};
use super::wire::{
    BatchEmbedRequest, BatchEmbedResponse, Blob, Content as WireContent, EmbedRequest, ErrorEnvelope, FileData,
    FunctionCallingConfig, FunctionDeclaration, FunctionResponse, GenerateRequest, GenerateResponse, GenerationConfig,
    Part, ThinkingConfig, Tool as WireTool, ToolConfig, UsageMetadata,
};
use crate::protocols::error::{ErrorKind, ProviderError, retry_after};
use crate::protocols::{
    Adapter, Endpoint, Native, NativeCall, StreamMapper, StreamStep, UpstreamRequest, bad_request, encode,
};
use crate::schema::{
    ChatChunk, ChatRequest, ChatResponse, Choice, ChunkChoice, CompletionTokensDetails, Content, Delta,
    EmbeddingRequest, EmbeddingResponse, FunctionCall, FunctionCallDelta, PromptTokensDetails, ResponseMessage, Role,
    Stop, ToolCall, ToolCallDelta, ToolChoice, ToolChoiceMode, Usage, inline_image,
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
    let model = crate::protocols::path_segment(model.strip_prefix("models/").unwrap_or(model));
    format!("{}/v1beta/models/{model}:{action}", endpoint.base_url.trim_end_matches('/'))
}

impl Adapter for GeminiAdapter {
    fn chat_request(&self, req: &ChatRequest, endpoint: &Endpoint<'_>) -> Result<UpstreamRequest, ProviderError> {
        let body = translate_request(req)?;
        let action = if req.is_streaming() { "streamGenerateContent?alt=sse" } else { "generateContent" };
        Ok(UpstreamRequest {
            url: model_url(endpoint, &req.model, action),
            headers: auth_headers(endpoint)?,
            body: encode(&body)?,
        })
    }

    fn speaks(&self, protocol: Native) -> bool {
        protocol == Native::GenerateContent
    }

    fn native_request(
        &self,
        protocol: Native,
        call: NativeCall<'_>,
        endpoint: &Endpoint<'_>,
    ) -> Result<UpstreamRequest, ProviderError> {
        if protocol != Native::GenerateContent {
            return Err(bad_request("Gemini speaks generateContent only.", "model"));
        }
        let action = if call.stream { "streamGenerateContent?alt=sse" } else { "generateContent" };
        Ok(UpstreamRequest {
            url: model_url(endpoint, call.model, action),
            headers: auth_headers(endpoint)?,
            body: call.body,
        })
    }

    fn parse_chat_response(&self, req: &ChatRequest, body: &[u8]) -> Result<ChatResponse, ProviderError> {
        let resp: GenerateResponse = serde_json::from_slice(body)
            .map_err(|e| ProviderError::new(ErrorKind::InvalidResponse, format!("unreadable Gemini response: {e}")))?;
        if resp.candidates.is_empty() {
            // Blocked before any candidate was made: the prompt itself was refused.
            let reason = resp
                .prompt_feedback
                .as_ref()
                .and_then(|f| f.get("blockReason"))
                .and_then(Value::as_str)
                .unwrap_or("unknown");
            let mut e = ProviderError::new(ErrorKind::ContentPolicy, format!("Gemini blocked the prompt ({reason})."));
            e.status = Some(400);
            return Err(e);
        }
        let mut calls_seen = 0;
        let choices = resp
            .candidates
            .iter()
            .enumerate()
            .map(|(i, cand)| {
                let mut text = String::new();
                let mut reasoning = String::new();
                let mut calls = Vec::new();
                for part in cand.content.as_ref().map(|c| c.parts.as_slice()).unwrap_or_default() {
                    if let Some(call) = &part.function_call {
                        calls.push(ToolCall {
                            id: call.id.clone().unwrap_or_else(|| call_id(&resp.response_id, calls_seen)),
                            kind: "function".to_owned(),
                            function: FunctionCall {
                                name: call.name.clone(),
                                arguments: call.args.to_string(),
                                extra: Map::new(),
                            },
                            extra: Map::new(),
                        });
                        calls_seen += 1;
                    } else if let Some(t) = &part.text {
                        if part.is_thought() { reasoning.push_str(t) } else { text.push_str(t) }
                    }
                }
                let finish = finish_reason(cand.finish_reason.as_deref(), !calls.is_empty());
                Choice {
                    index: cand.index.unwrap_or(i as u32),
                    message: ResponseMessage::assistant(text, reasoning, calls),
                    finish_reason: Some(finish.to_owned()),
                    extra: Map::new(),
                }
            })
            .collect();
        Ok(ChatResponse {
            id: response_id(&resp.response_id),
            object: "chat.completion".to_owned(),
            created: crate::protocols::unix_now(),
            model: resp.model_version.clone().unwrap_or_else(|| req.model.clone()),
            choices,
            usage: resp.usage_metadata.as_ref().map(to_canonical),
            extra: Map::new(),
        })
    }

    fn stream_mapper(&self, req: &ChatRequest) -> Box<dyn StreamMapper> {
        Box::new(GeminiStream {
            model: req.model.clone(),
            created: crate::protocols::unix_now(),
            ..GeminiStream::default()
        })
    }

    fn classify_error(&self, status: StatusCode, headers: &HeaderMap, body: &[u8]) -> ProviderError {
        let detail = serde_json::from_slice::<ErrorEnvelope>(body).ok().map(|e| e.error);
        classify(status.as_u16(), detail.as_ref(), retry_after(headers))
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
        let body = BatchEmbedRequest {
            requests: texts
                .iter()
                .map(|t| EmbedRequest {
                    model: model.clone(),
                    content: WireContent { role: None, parts: vec![Part::text(*t)], extra: Map::new() },
                    output_dimensionality: req.dimensions,
                })
                .collect(),
        };
        Ok(UpstreamRequest {
            url: model_url(endpoint, &req.model, "batchEmbedContents"),
            headers: auth_headers(endpoint)?,
            body: encode(&body)?,
        })
    }

    fn parse_embeddings(
        &self,
        req: &EmbeddingRequest,
        _headers: &HeaderMap,
        body: &[u8],
    ) -> Result<EmbeddingResponse, ProviderError> {
        let batch: BatchEmbedResponse = serde_json::from_slice(body).map_err(|e| {
            ProviderError::new(ErrorKind::InvalidResponse, format!("unreadable Gemini embeddings: {e}"))
        })?;
        // Gemini reports no token count for embeddings; estimate it the way the gateway does elsewhere.
        let tokens: u64 = req.input.texts().unwrap_or_default().iter().map(|t| t.len().div_ceil(4) as u64).sum();
        Ok(EmbeddingResponse::floats(&req.model, batch.embeddings.into_iter().map(|e| e.values), tokens))
    }
}

pub fn translate_request(req: &ChatRequest) -> Result<GenerateRequest, ProviderError> {
    let mut system_parts: Vec<Part> = Vec::new();
    let mut contents: Vec<WireContent> = Vec::new();
    for (i, m) in req.messages.iter().enumerate() {
        match m.role {
            Role::System | Role::Developer => {
                if let Some(c) = &m.content {
                    system_parts.push(Part::text(c.to_text()));
                }
            }
            Role::User => push_content(&mut contents, "user", parts_of(m.content.as_ref(), i)?),
            Role::Assistant => {
                let mut parts = parts_of(m.content.as_ref(), i)?;
                for call in m.tool_calls.iter().flatten() {
                    let args: Value = serde_json::from_str(&call.function.arguments).unwrap_or_else(|_| json!({}));
                    parts.push(Part {
                        function_call: Some(super::wire::FunctionCall {
                            id: None,
                            name: call.function.name.clone(),
                            args,
                        }),
                        ..Part::default()
                    });
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
                let part =
                    Part { function_response: Some(FunctionResponse { id: None, name, response }), ..Part::default() };
                push_content(&mut contents, "user", vec![part]);
            }
        }
    }
    let mut generation = GenerationConfig {
        temperature: req.temperature,
        top_p: req.top_p,
        top_k: req.extra.get("top_k").cloned(),
        candidate_count: req.n,
        max_output_tokens: req.max_output_tokens(),
        seed: req.extra.get("seed").cloned(),
        presence_penalty: req.extra.get("presence_penalty").cloned(),
        frequency_penalty: req.extra.get("frequency_penalty").cloned(),
        stop_sequences: match &req.stop {
            Some(Stop::One(s)) => Some(vec![s.clone()]),
            Some(Stop::Many(v)) if !v.is_empty() => Some(v.clone()),
            _ => None,
        },
        ..GenerationConfig::default()
    };
    if let Some(format) = &req.response_format {
        match format.kind.as_str() {
            "json_object" => generation.response_mime_type = Some("application/json".into()),
            "json_schema" => {
                generation.response_mime_type = Some("application/json".into());
                generation.response_json_schema =
                    format.extra.get("json_schema").and_then(|s| s.get("schema")).cloned();
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
        generation.thinking_config = Some(ThinkingConfig {
            thinking_budget: Some(budget),
            include_thoughts: Some(budget > 0),
            extra: Map::new(),
        });
    }
    let declarations: Vec<FunctionDeclaration> = req
        .tools
        .iter()
        .flatten()
        .filter_map(|t| t.function.as_ref())
        .map(|f| FunctionDeclaration {
            name: f.name.clone(),
            description: f.description.clone(),
            parameters_json_schema: f.parameters.clone(),
            ..FunctionDeclaration::default()
        })
        .collect();
    let mode = |mode: &str, names: Option<Vec<String>>| FunctionCallingConfig {
        mode: Some(mode.to_owned()),
        allowed_function_names: names,
    };
    let calling = match req.tool_choice.as_ref().map(ToolChoice::mode).transpose() {
        Err(why) => return Err(bad_request(why, "tool_choice")),
        Ok(None) => None,
        Ok(Some(ToolChoiceMode::Auto)) => Some(mode("AUTO", None)),
        Ok(Some(ToolChoiceMode::Required)) => Some(mode("ANY", None)),
        Ok(Some(ToolChoiceMode::None)) => Some(mode("NONE", None)),
        Ok(Some(ToolChoiceMode::Function(name))) => Some(mode("ANY", Some(vec![name.to_owned()]))),
    };
    let has_generation = serde_json::to_value(&generation).is_ok_and(|v| v.as_object().is_some_and(|o| !o.is_empty()));
    Ok(GenerateRequest {
        contents,
        system_instruction: (!system_parts.is_empty()).then(|| WireContent {
            role: None,
            parts: system_parts,
            extra: Map::new(),
        }),
        generation_config: has_generation.then_some(generation),
        tools: (!declarations.is_empty())
            .then(|| vec![WireTool { function_declarations: Some(declarations), extra: Map::new() }]),
        tool_config: calling.map(|c| ToolConfig { function_calling_config: Some(c), extra: Map::new() }),
        extra: Map::new(),
    })
}

fn push_content(contents: &mut Vec<WireContent>, role: &str, parts: Vec<Part>) {
    if parts.is_empty() {
        return;
    }
    if let Some(last) = contents.last_mut()
        && last.role.as_deref() == Some(role)
    {
        last.parts.extend(parts);
        return;
    }
    contents.push(WireContent { role: Some(role.to_owned()), parts, extra: Map::new() });
}

fn parts_of(content: Option<&Content>, i: usize) -> Result<Vec<Part>, ProviderError> {
    match content {
        None => Ok(Vec::new()),
        Some(Content::Text(t)) if t.is_empty() => Ok(Vec::new()),
        Some(Content::Text(t)) => Ok(vec![Part::text(t)]),
        Some(Content::Parts(parts)) => parts
            .iter()
            .enumerate()
            .map(|(j, p)| match (p.kind.as_str(), &p.text, &p.image_url) {
                ("text", Some(t), _) => Ok(Part::text(t)),
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

fn image_part(url: &str) -> Option<Part> {
    if url.starts_with("data:") {
        let (mime, data) = inline_image(url)?;
        return Some(Part {
            inline_data: Some(Blob { mime_type: mime.to_owned(), data: data.to_owned() }),
            ..Part::default()
        });
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
    Some(Part {
        file_data: Some(FileData { mime_type: Some(mime.to_owned()), file_uri: url.to_owned() }),
        ..Part::default()
    })
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

/// OpenAI's `completion_tokens` includes reasoning; Gemini counts thoughts apart.
pub fn to_canonical(u: &UsageMetadata) -> Usage {
    let completion = u.candidates_token_count + u.thoughts_token_count;
    Usage {
        prompt_tokens: u.prompt_token_count,
        completion_tokens: completion,
        total_tokens: u.prompt_token_count + completion,
        prompt_tokens_details: Some(PromptTokensDetails {
            cached_tokens: Some(u.cached_content_token_count),
            cache_write_tokens: None,
            extra: Map::new(),
        }),
        completion_tokens_details: Some(CompletionTokensDetails {
            reasoning_tokens: Some(u.thoughts_token_count),
            extra: Map::new(),
        }),
        extra: Map::new(),
    }
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
            return Err(in_stream(&error));
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
                            id: Some(call.id.clone().unwrap_or_else(|| call_id(&resp.response_id, n))),
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
                } else if part.is_thought() {
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
        if finished && let Some(usage) = &self.usage {
            out.push(ChatChunk::usage_only(&self.id, self.created, &self.model, to_canonical(usage)));
        }
        Ok(StreamStep::Continue)
    }
}
