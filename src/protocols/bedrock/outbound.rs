//! The Bedrock adapter: canonical chat requests as Converse requests, Converse answers and stream events
//! back as canonical responses and chunks, and Titan embeddings through InvokeModel. What is mapped and
//! dropped is in the protocol's header.

use http::{HeaderMap, HeaderValue, StatusCode, header};
use serde_json::{Map, Value, json};

use super::errors::{classify, in_stream};
use super::wire::{
    BlockDelta, BlockStart, ContentBlock, ConverseRequest, ConverseResponse, ImageBlock, ImageSource, InferenceConfig,
    InputSchema, Message as WireMessage, MessageStop, StreamMetadata, SystemBlock, TitanEmbedRequest,
    TitanEmbedResponse, TokenUsage, Tool as WireTool, ToolConfig, ToolResult, ToolResultContent, ToolSpec, ToolUse,
};
use crate::eventstream::EXCEPTION_PREFIX;
use crate::protocols::error::{ErrorKind, ProviderError, retry_after};
use crate::protocols::tool_blocks::{ToolBlocks, json_tool_name, json_tool_schema};
use crate::protocols::{Adapter, Endpoint, Framing, StreamMapper, StreamStep, UpstreamRequest, bad_request, encode};
use crate::schema::{
    ChatChunk, ChatRequest, ChatResponse, Choice, Content, Delta, EmbeddingRequest, EmbeddingResponse, FunctionCall,
    PromptTokensDetails, ResponseMessage, Role, Stop, ToolCall, ToolChoice, ToolChoiceMode, Usage, inline_image,
};
use crate::sse::SseEvent;

#[derive(Debug, Default)]
pub struct BedrockAdapter;

/// JSON, plus the Bedrock API key as a bearer token when the provider has one (otherwise the executor
/// signs the request with SigV4 after it is built).
fn headers(endpoint: &Endpoint<'_>) -> Result<HeaderMap, ProviderError> {
    let mut headers = endpoint.headers.clone();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(header::ACCEPT, HeaderValue::from_static("application/json"));
    if let Some(key) = endpoint.api_key {
        let mut value = HeaderValue::from_str(&format!("Bearer {}", key.expose())).map_err(|_| {
            ProviderError::new(ErrorKind::Authentication, "the provider key is not a valid header value")
        })?;
        value.set_sensitive(true);
        headers.insert(header::AUTHORIZATION, value);
    }
    Ok(headers)
}

fn model_url(endpoint: &Endpoint<'_>, model: &str, action: &str) -> String {
    let model = crate::protocols::path_segment(model);
    format!("{}/model/{model}/{action}", endpoint.base_url.trim_end_matches('/'))
}

fn is_titan_embedding(model: &str) -> bool {
    // `amazon.titan-embed-text-v2:0`, possibly behind a regional profile (`us.amazon.…`).
    model.contains("amazon.titan-embed-text")
}

/// Cohere's embed models on Bedrock (`cohere.embed-english-v3`, `cohere.embed-v4:0`, …): Cohere's own
/// request and answer through InvokeModel, 96 texts a call, the token count in a response header.
fn is_cohere_embedding(model: &str) -> bool {
    model.contains("cohere.embed")
}

/// Where InvokeModel reports the input's token count for models whose answers do not.
const INPUT_TOKENS_HEADER: &str = "x-amzn-bedrock-input-token-count";

impl Adapter for BedrockAdapter {
    fn chat_request(&self, req: &ChatRequest, endpoint: &Endpoint<'_>) -> Result<UpstreamRequest, ProviderError> {
        let body = translate_request(req)?;
        let action = if req.is_streaming() { "converse-stream" } else { "converse" };
        Ok(UpstreamRequest {
            url: model_url(endpoint, &req.model, action),
            headers: headers(endpoint)?,
            body: encode(&body)?,
        })
    }

    fn parse_chat_response(&self, req: &ChatRequest, body: &[u8]) -> Result<ChatResponse, ProviderError> {
        let resp: ConverseResponse = serde_json::from_slice(body)
            .map_err(|e| ProviderError::new(ErrorKind::InvalidResponse, format!("unreadable Bedrock response: {e}")))?;
        let json_tool = json_tool_name(req);
        let mut text = String::new();
        let mut reasoning = String::new();
        let mut calls = Vec::new();
        for block in resp.output.message.map(|m| m.content).unwrap_or_default() {
            if let Some(t) = block.text {
                text.push_str(&t);
            } else if let Some(r) = &block.reasoning_content {
                reasoning.push_str(r.pointer("/reasoningText/text").and_then(Value::as_str).unwrap_or_default());
            } else if let Some(call) = block.tool_use {
                if Some(&call.name) == json_tool.as_ref() {
                    text.push_str(&call.input.to_string());
                } else {
                    calls.push(ToolCall {
                        id: call.tool_use_id,
                        kind: "function".to_owned(),
                        function: FunctionCall {
                            name: call.name,
                            arguments: call.input.to_string(),
                            extra: Map::new(),
                        },
                        extra: Map::new(),
                    });
                }
            }
        }
        let finish = finish_reason(resp.stop_reason.as_deref(), json_tool.is_some());
        Ok(ChatResponse {
            id: response_id(),
            object: "chat.completion".to_owned(),
            created: crate::protocols::unix_now(),
            model: req.model.clone(),
            choices: vec![Choice {
                index: 0,
                message: ResponseMessage::assistant(text, reasoning, calls),
                finish_reason: Some(finish.to_owned()),
                extra: Map::new(),
            }],
            usage: resp.usage.as_ref().map(to_canonical),
            extra: Map::new(),
        })
    }

    fn stream_mapper(&self, req: &ChatRequest) -> Box<dyn StreamMapper> {
        Box::new(BedrockStream {
            id: response_id(),
            model: req.model.clone(),
            created: crate::protocols::unix_now(),
            tools: ToolBlocks::for_request(req),
            ..BedrockStream::default()
        })
    }

    fn framing(&self) -> Framing {
        Framing::EventStream
    }

    fn classify_error(&self, status: StatusCode, headers: &HeaderMap, body: &[u8]) -> ProviderError {
        classify(status.as_u16(), headers, body, retry_after(headers))
    }

    /// Converse returns one choice: the gateway makes `n` calls.
    fn supports_n(&self) -> bool {
        false
    }

    /// Converse continues a final assistant turn (a prefill) for the models that allow it; the
    /// instruction works for every model.
    fn prefill(&self) -> crate::config::presets::Prefill {
        crate::config::presets::Prefill::Instruction
    }

    fn embeddings_per_call(&self, model: &str) -> Option<usize> {
        if is_cohere_embedding(model) { Some(96) } else { is_titan_embedding(model).then_some(1) }
    }

    fn embeddings_request(
        &self,
        req: &EmbeddingRequest,
        endpoint: &Endpoint<'_>,
    ) -> Result<UpstreamRequest, ProviderError> {
        if is_cohere_embedding(&req.model) {
            return Ok(UpstreamRequest {
                url: model_url(endpoint, &req.model, "invoke"),
                headers: headers(endpoint)?,
                body: encode(&crate::protocols::cohere::embed_body(req)?)?,
            });
        }
        if !is_titan_embedding(&req.model) {
            return Err(bad_request("Bedrock embeddings are offered for Amazon Titan and Cohere models.", "model"));
        }
        let texts = req
            .input
            .texts()
            .ok_or_else(|| bad_request("Titan embeddings take text input, not token ids.", "input"))?;
        let [text] = texts.as_slice() else {
            return Err(bad_request("Titan embeds one text per call.", "input"));
        };
        // Only v2 takes `dimensions` and `normalize`; v1 refuses them.
        let v2 = req.model.contains("-v2");
        if req.dimensions.is_some() && !v2 {
            return Err(bad_request("Titan text embeddings v1 have a fixed size; leave dimensions out.", "dimensions"));
        }
        let body = TitanEmbedRequest {
            input_text: (*text).to_owned(),
            dimensions: req.dimensions,
            normalize: v2.then_some(true),
        };
        Ok(UpstreamRequest {
            url: model_url(endpoint, &req.model, "invoke"),
            headers: headers(endpoint)?,
            body: encode(&body)?,
        })
    }

    fn parse_embeddings(
        &self,
        req: &EmbeddingRequest,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Result<EmbeddingResponse, ProviderError> {
        if is_cohere_embedding(&req.model) {
            let v: Value = serde_json::from_slice(body).map_err(|e| {
                ProviderError::new(ErrorKind::InvalidResponse, format!("unreadable Cohere embedding on Bedrock: {e}"))
            })?;
            let tokens = headers
                .get(INPUT_TOKENS_HEADER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .ok_or_else(|| {
                    ProviderError::new(
                        ErrorKind::InvalidResponse,
                        "Cohere embeddings on Bedrock without their token count",
                    )
                })?;
            return Ok(EmbeddingResponse::floats(&req.model, crate::protocols::cohere::embed_vectors(&v)?, tokens));
        }
        let resp: TitanEmbedResponse = serde_json::from_slice(body)
            .map_err(|e| ProviderError::new(ErrorKind::InvalidResponse, format!("unreadable Titan embedding: {e}")))?;
        let tokens = resp.input_text_token_count.ok_or_else(|| {
            ProviderError::new(ErrorKind::InvalidResponse, "a Titan embedding without its token count")
        })?;
        let vector = resp.embedding.into_iter().map(f64::from).collect();
        Ok(EmbeddingResponse::floats(&req.model, [vector], tokens))
    }
}

fn response_id() -> String {
    format!("chatcmpl-bedrock-{}", uuid::Uuid::new_v4().simple())
}

/// The Converse request for a canonical chat request.
pub fn translate_request(req: &ChatRequest) -> Result<ConverseRequest, ProviderError> {
    let mut system = Vec::new();
    let mut messages: Vec<WireMessage> = Vec::new();
    for (i, m) in req.messages.iter().enumerate() {
        match m.role {
            Role::System | Role::Developer => {
                if let Some(c) = m.content.as_ref().map(Content::to_text).filter(|t| !t.is_empty()) {
                    system.push(SystemBlock { text: Some(c), extra: Map::new() });
                }
            }
            Role::User => push(&mut messages, "user", blocks_of(m.content.as_ref(), i)?),
            Role::Assistant => {
                let mut blocks = blocks_of(m.content.as_ref(), i)?;
                for call in m.tool_calls.iter().flatten() {
                    let input = serde_json::from_str::<Value>(&call.function.arguments)
                        .ok()
                        .filter(Value::is_object)
                        .unwrap_or_else(|| json!({}));
                    blocks.push(ContentBlock {
                        tool_use: Some(ToolUse {
                            tool_use_id: tool_use_id(&call.id),
                            name: call.function.name.clone(),
                            input,
                        }),
                        ..ContentBlock::default()
                    });
                }
                push(&mut messages, "assistant", blocks);
            }
            Role::Tool | Role::Function => {
                let id = m.tool_call_id.clone().ok_or_else(|| {
                    bad_request(
                        "A tool message needs the tool_call_id it answers.",
                        &format!("messages[{i}].tool_call_id"),
                    )
                })?;
                let text = m.content.as_ref().map(Content::to_text).unwrap_or_default();
                let content = match serde_json::from_str::<Value>(&text) {
                    Ok(v) if v.is_object() => ToolResultContent { text: None, json: Some(v) },
                    // Bedrock refuses a blank text block.
                    _ if text.trim().is_empty() => ToolResultContent { text: Some(NO_OUTPUT.to_owned()), json: None },
                    _ => ToolResultContent { text: Some(text), json: None },
                };
                let block = ContentBlock {
                    tool_result: Some(ToolResult {
                        tool_use_id: tool_use_id(&id),
                        content: vec![content],
                        status: None,
                    }),
                    ..ContentBlock::default()
                };
                push(&mut messages, "user", vec![block]);
            }
        }
    }
    let mut tools: Vec<WireTool> = req
        .tools
        .iter()
        .flatten()
        .filter_map(|t| t.function.as_ref())
        .map(|f| WireTool {
            tool_spec: ToolSpec {
                name: f.name.clone(),
                description: f.description.clone(),
                input_schema: InputSchema {
                    json: f.parameters.clone().unwrap_or_else(|| json!({"type": "object", "properties": {}})),
                },
            },
        })
        .collect();
    let mut tool_choice = match req.tool_choice.as_ref().map(ToolChoice::mode).transpose() {
        Err(why) => return Err(bad_request(why, "tool_choice")),
        Ok(None | Some(ToolChoiceMode::Auto)) => None,
        Ok(Some(ToolChoiceMode::Required)) => Some(json!({"any": {}})),
        Ok(Some(ToolChoiceMode::Function(name))) => Some(json!({"tool": {"name": name}})),
        // Converse has no "none": the tools are not offered (and earlier tool turns become text below).
        Ok(Some(ToolChoiceMode::None)) => {
            tools.clear();
            None
        }
    };
    if tool_choice.is_some() && !forces_tools(&req.model) {
        return Err(bad_request(
            "This Bedrock model cannot be made to call a tool (tool_choice \"required\" or a named function).",
            "tool_choice",
        ));
    }
    if let Some(name) = json_tool_name(req) {
        let schema = json_tool_schema(req);
        if !forces_tools(&req.model) {
            return Err(bad_request(
                "This Bedrock model cannot be held to a JSON schema (Converse forces a tool only for Claude and Nova).",
                "response_format",
            ));
        }
        tools.push(WireTool {
            tool_spec: ToolSpec {
                name: name.clone(),
                description: Some("Respond with the final answer as this tool's input.".into()),
                input_schema: InputSchema { json: schema },
            },
        });
        tool_choice = Some(json!({"tool": {"name": name}}));
    }
    // Converse refuses toolUse and toolResult blocks without a toolConfig: with no tools offered, the
    // conversation's tool turns are told as text.
    if tools.is_empty() {
        tool_turns_as_text(&mut messages);
    }
    // Converse's conversation starts with a user turn.
    if messages.first().is_none_or(|m| m.role != "user") {
        messages
            .insert(0, WireMessage { role: "user".to_owned(), content: vec![ContentBlock::text(PLACEHOLDER_TURN)] });
    }
    let inference = InferenceConfig {
        max_tokens: req.max_output_tokens(),
        temperature: req.temperature,
        top_p: req.top_p,
        stop_sequences: match &req.stop {
            Some(Stop::One(s)) => Some(vec![s.clone()]),
            Some(Stop::Many(v)) if !v.is_empty() => Some(v.clone()),
            _ => None,
        },
    };
    let has_inference = inference.max_tokens.is_some()
        || inference.temperature.is_some()
        || inference.top_p.is_some()
        || inference.stop_sequences.is_some();
    Ok(ConverseRequest {
        messages,
        system,
        inference_config: has_inference.then_some(inference),
        tool_config: (!tools.is_empty()).then_some(ToolConfig { tools, tool_choice }),
        additional_model_request_fields: None,
    })
}

/// What an empty tool result is sent as (Bedrock refuses blank text).
const NO_OUTPUT: &str = "(no output)";
/// The user turn put first when a conversation starts with the assistant (or has no turn at all).
const PLACEHOLDER_TURN: &str = "Continue.";

/// Whether Converse's `toolChoice` `any`/`tool` works for the model (Anthropic's Claude and Amazon Nova;
/// other models take `auto` only). Regional inference profiles (`us.anthropic.…`) included.
fn forces_tools(model: &str) -> bool {
    model.contains("anthropic.") || model.contains("amazon.nova")
}

/// A tool call id as Converse takes it (`[a-zA-Z0-9_-]{1,64}`): kept when it fits, else a digest of it,
/// the same for the call and its result. Another provider's ids (`functions.get:0`) reach Bedrock after
/// a fallback.
fn tool_use_id(id: &str) -> String {
    let fits =
        !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if fits {
        return id.to_owned();
    }
    use sha2::Digest;
    let digest = sha2::Sha256::digest(id.as_bytes());
    format!("tooluse_{}", digest.iter().take(12).map(|b| format!("{b:02x}")).collect::<String>())
}

/// Rewrites toolUse and toolResult blocks as text, for a request that offers no tools.
fn tool_turns_as_text(messages: &mut [WireMessage]) {
    let mut names = std::collections::HashMap::new();
    for m in messages.iter_mut() {
        for block in &mut m.content {
            if let Some(call) = block.tool_use.take() {
                let text = format!("[called tool {} with {}]", call.name, call.input);
                names.insert(call.tool_use_id, call.name);
                *block = ContentBlock::text(text);
            } else if let Some(result) = block.tool_result.take() {
                let name = names.get(&result.tool_use_id).map_or("a tool", String::as_str);
                let output: Vec<String> = result
                    .content
                    .into_iter()
                    .map(|c| c.text.unwrap_or_else(|| c.json.map(|j| j.to_string()).unwrap_or_default()))
                    .collect();
                *block = ContentBlock::text(format!("[{name} returned {}]", output.join(" ")));
            }
        }
    }
}

/// Appends a turn, merging it into the previous one of the same role (Converse alternates roles).
fn push(messages: &mut Vec<WireMessage>, role: &str, blocks: Vec<ContentBlock>) {
    if blocks.is_empty() {
        return;
    }
    match messages.last_mut() {
        Some(last) if last.role == role => last.content.extend(blocks),
        _ => messages.push(WireMessage { role: role.to_owned(), content: blocks }),
    }
}

fn blocks_of(content: Option<&Content>, i: usize) -> Result<Vec<ContentBlock>, ProviderError> {
    match content {
        None => Ok(Vec::new()),
        // Bedrock refuses blank text blocks.
        Some(Content::Text(t)) if t.trim().is_empty() => Ok(Vec::new()),
        Some(Content::Text(t)) => Ok(vec![ContentBlock::text(t)]),
        Some(Content::Parts(parts)) => parts
            .iter()
            .enumerate()
            .filter(|(_, p)| !(p.kind == "text" && p.text.as_deref().is_none_or(|t| t.trim().is_empty())))
            .map(|(j, p)| match (p.kind.as_str(), &p.text, &p.image_url) {
                ("text", Some(t), _) => Ok(ContentBlock::text(t)),
                ("image_url", _, Some(img)) => image_block(&img.url).ok_or_else(|| {
                    bad_request(
                        "Bedrock takes images as base64 data: URLs (png, jpeg, gif or webp), not by URL.",
                        &format!("messages[{i}].content[{j}].image_url"),
                    )
                }),
                (other, _, _) => Err(bad_request(
                    format!("Content parts of type '{other}' cannot be sent to Bedrock models."),
                    &format!("messages[{i}].content[{j}]"),
                )),
            })
            .collect(),
    }
}

fn image_block(url: &str) -> Option<ContentBlock> {
    let (mime, data) = inline_image(url)?;
    let format = match mime {
        "image/png" => "png",
        "image/jpeg" | "image/jpg" => "jpeg",
        "image/gif" => "gif",
        "image/webp" => "webp",
        _ => return None,
    };
    Some(ContentBlock {
        image: Some(ImageBlock {
            format: format.to_owned(),
            source: ImageSource { bytes: Some(data.to_owned()), extra: Map::new() },
        }),
        ..ContentBlock::default()
    })
}

fn finish_reason(reason: Option<&str>, json_mode: bool) -> &'static str {
    match reason {
        Some("max_tokens" | "model_context_window_exceeded") => "length",
        Some("tool_use") if json_mode => "stop",
        Some("tool_use") => "tool_calls",
        Some("guardrail_intervened" | "content_filtered") => "content_filter",
        _ => "stop",
    }
}

/// Bedrock's `inputTokens` leaves out what was read from or written to the prompt cache; OpenAI's
/// `prompt_tokens` includes both.
pub fn to_canonical(u: &TokenUsage) -> Usage {
    let read = u.cache_read_input_tokens.unwrap_or(0);
    let write = u.cache_write_input_tokens.unwrap_or(0);
    let prompt = u.input_tokens + read + write;
    Usage {
        prompt_tokens: prompt,
        completion_tokens: u.output_tokens,
        total_tokens: prompt + u.output_tokens,
        prompt_tokens_details: Some(PromptTokensDetails {
            cached_tokens: Some(read),
            cache_write_tokens: u.cache_write_input_tokens,
            extra: Map::new(),
        }),
        completion_tokens_details: None,
        extra: Map::new(),
    }
}

/// Per-stream state: which content block is which tool call.
#[derive(Default)]
struct BedrockStream {
    id: String,
    model: String,
    created: u64,
    started: bool,
    tools: ToolBlocks,
}

impl BedrockStream {
    fn chunk(&self, delta: Delta, finish: Option<&str>) -> ChatChunk {
        ChatChunk::single(&self.id, self.created, &self.model, delta, finish)
    }

    fn start(&mut self, out: &mut Vec<ChatChunk>) {
        if !self.started {
            self.started = true;
            out.push(self.chunk(
                Delta { role: Some("assistant".to_owned()), content: Some(String::new()), ..Delta::default() },
                None,
            ));
        }
    }
}

fn parse<T: serde::de::DeserializeOwned>(event: &SseEvent) -> Result<T, ProviderError> {
    serde_json::from_str(&event.data)
        .map_err(|e| ProviderError::new(ErrorKind::InvalidResponse, format!("unreadable Bedrock stream event: {e}")))
}

impl StreamMapper for BedrockStream {
    fn map(&mut self, event: &SseEvent, out: &mut Vec<ChatChunk>) -> Result<StreamStep, ProviderError> {
        let name = event.event.as_deref().unwrap_or_default();
        if let Some(exception) = name.strip_prefix(EXCEPTION_PREFIX) {
            return Err(in_stream(exception, &event.data));
        }
        match name {
            "messageStart" => self.start(out),
            "contentBlockStart" => {
                self.start(out);
                let start: BlockStart = parse(event)?;
                let Some(tool) = start.start.tool_use else { return Ok(StreamStep::Continue) };
                if let Some(delta) = self.tools.open(start.content_block_index, Some(tool.tool_use_id), tool.name) {
                    out.push(self.chunk(delta, None));
                }
            }
            "contentBlockDelta" => {
                self.start(out);
                let BlockDelta { content_block_index: index, delta } = parse(event)?;
                let d = if let Some(text) = delta.text {
                    Delta { content: Some(text), ..Delta::default() }
                } else if let Some(tool) = delta.tool_use {
                    let Some(d) = self.tools.input(index, Some(tool.input)) else { return Ok(StreamStep::Continue) };
                    d
                } else if let Some(text) =
                    delta.reasoning_content.as_ref().and_then(|r| r.get("text")).and_then(Value::as_str)
                {
                    Delta { reasoning_content: Some(text.to_owned()), ..Delta::default() }
                } else {
                    // Reasoning signatures and redacted reasoning carry nothing to show.
                    return Ok(StreamStep::Continue);
                };
                if !d.is_empty() {
                    out.push(self.chunk(d, None));
                }
            }
            "messageStop" => {
                self.start(out);
                let stop: MessageStop = parse(event)?;
                let finish = finish_reason(stop.stop_reason.as_deref(), self.tools.json_mode());
                out.push(self.chunk(Delta::default(), Some(finish)));
            }
            "metadata" => {
                let meta: StreamMetadata = parse(event)?;
                if let Some(usage) = &meta.usage {
                    out.push(ChatChunk::usage_only(&self.id, self.created, &self.model, to_canonical(usage)));
                }
                return Ok(StreamStep::Done);
            }
            _ => {} // contentBlockStop, and event types added later
        }
        Ok(StreamStep::Continue)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eventstream::{EventStreamDecoder, event, exception};

    fn request(body: Value) -> ChatRequest {
        serde_json::from_value(body).unwrap()
    }

    fn endpoint(headers: &HeaderMap) -> Endpoint<'_> {
        Endpoint {
            base_url: "https://bedrock-runtime.us-east-1.amazonaws.com",
            api_key: None,
            key_index: None,
            headers,
        }
    }

    #[test]
    fn a_conversation_with_tools_becomes_a_converse_request() {
        let req = request(json!({
            "model": "us.anthropic.claude-sonnet-4-5-20250929-v1:0",
            "stream": true,
            "max_tokens": 300, "temperature": 0.2, "stop": "END",
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": [{"type": "text", "text": "Weather?"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}]},
                {"role": "assistant", "content": null, "tool_calls": [
                    {"id": "tooluse_1", "type": "function", "function": {"name": "weather", "arguments": "{\"city\":\"Paris\"}"}},
                    {"id": "functions.weather:1", "type": "function", "function": {"name": "weather", "arguments": "{\"city\":\"Rome\"}"}}]},
                {"role": "tool", "tool_call_id": "tooluse_1", "content": "{\"temp\":21}"},
                {"role": "tool", "tool_call_id": "functions.weather:1", "content": ""}
            ],
            "tools": [{"type": "function", "function": {"name": "weather", "description": "Look it up",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}],
            "tool_choice": "required"
        }));
        let headers = HeaderMap::new();
        let call = BedrockAdapter.chat_request(&req, &endpoint(&headers)).unwrap();
        assert_eq!(
            call.url,
            "https://bedrock-runtime.us-east-1.amazonaws.com/model/us.anthropic.claude-sonnet-4-5-20250929-v1%3A0/converse-stream"
        );
        let body: Value = serde_json::from_slice(&call.body).unwrap();
        // Another provider's call id, made one Converse takes, the same on the call and its result.
        let foreign = tool_use_id("functions.weather:1");
        assert!(foreign.len() <= 64 && foreign.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'), "{foreign}");
        assert_eq!(
            body,
            json!({
                "system": [{"text": "Be brief."}],
                "messages": [
                    {"role": "user", "content": [{"text": "Weather?"},
                        {"image": {"format": "png", "source": {"bytes": "iVBORw0KGgo="}}}]},
                    {"role": "assistant", "content": [
                        {"toolUse": {"toolUseId": "tooluse_1", "name": "weather", "input": {"city": "Paris"}}},
                        {"toolUse": {"toolUseId": foreign, "name": "weather", "input": {"city": "Rome"}}}]},
                    {"role": "user", "content": [
                        {"toolResult": {"toolUseId": "tooluse_1", "content": [{"json": {"temp": 21}}]}},
                        {"toolResult": {"toolUseId": foreign, "content": [{"text": "(no output)"}]}}]}
                ],
                "inferenceConfig": {"maxTokens": 300, "temperature": 0.2, "stopSequences": ["END"]},
                "toolConfig": {
                    "tools": [{"toolSpec": {"name": "weather", "description": "Look it up",
                        "inputSchema": {"json": {"type": "object", "properties": {"city": {"type": "string"}}}}}}],
                    "toolChoice": {"any": {}}
                }
            })
        );
    }

    #[test]
    fn what_converse_cannot_take_is_refused_by_field() {
        let by_url = request(json!({"model": "m", "messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}]}]}));
        let e = translate_request(&by_url).unwrap_err();
        assert_eq!((e.kind, e.param.as_deref()), (ErrorKind::Untranslatable, Some("messages[0].content[0].image_url")));
        // "none" after tool turns: no tools offered, and the turns told as text (Converse refuses tool
        // blocks without a toolConfig).
        let none_after_tools = request(json!({"model": "m", "tool_choice": "none",
            "tools": [{"type": "function", "function": {"name": "f"}}],
            "messages": [{"role": "user", "content": "a"},
                {"role": "assistant", "tool_calls": [{"id": "t", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
                {"role": "tool", "tool_call_id": "t", "content": "x"}]}));
        let body = serde_json::to_value(translate_request(&none_after_tools).unwrap()).unwrap();
        assert!(body.get("toolConfig").is_none());
        assert_eq!(body["messages"][1]["content"][0]["text"], "[called tool f with {}]");
        assert_eq!(body["messages"][2]["content"][0]["text"], "[f returned x]");
        // A model that cannot be forced to call a tool is not asked to.
        let required = request(json!({"model": "meta.llama3-70b-instruct-v1:0", "tool_choice": "required",
            "tools": [{"type": "function", "function": {"name": "f"}}], "messages": [{"role": "user", "content": "a"}]}));
        assert_eq!(translate_request(&required).unwrap_err().param.as_deref(), Some("tool_choice"));
        // Blank text is left out, and a conversation starting with the assistant gets a user turn first.
        let odd = request(json!({"model": "m", "messages": [{"role": "assistant", "content": "Hi, how can I help?"},
            {"role": "user", "content": [{"type": "text", "text": "  "}, {"type": "text", "text": "Weather?"}]}]}));
        let body = serde_json::to_value(translate_request(&odd).unwrap()).unwrap();
        assert_eq!(body["messages"][0], json!({"role": "user", "content": [{"text": "Continue."}]}));
        assert_eq!(body["messages"][2]["content"], json!([{"text": "Weather?"}]));
    }

    #[test]
    fn a_whole_answer_with_a_tool_call_reasoning_and_cached_usage_is_read() {
        let req = request(json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]}));
        let body = json!({
            "output": {"message": {"role": "assistant", "content": [
                {"reasoningContent": {"reasoningText": {"text": "Thinking.", "signature": "sig"}}},
                {"text": "Let me look."},
                {"toolUse": {"toolUseId": "tooluse_9", "name": "weather", "input": {"city": "Oslo"}}}]}},
            "stopReason": "tool_use",
            "usage": {"inputTokens": 10, "outputTokens": 5, "totalTokens": 115, "cacheReadInputTokens": 100},
            "metrics": {"latencyMs": 300}
        });
        let resp = BedrockAdapter.parse_chat_response(&req, body.to_string().as_bytes()).unwrap();
        let choice = &resp.choices[0];
        assert_eq!(choice.finish_reason.as_deref(), Some("tool_calls"));
        let message = serde_json::to_value(&choice.message).unwrap();
        assert_eq!(message["content"], "Let me look.");
        assert_eq!(message["reasoning_content"], "Thinking.");
        assert_eq!(message["tool_calls"][0]["id"], "tooluse_9");
        assert_eq!(message["tool_calls"][0]["function"]["arguments"], "{\"city\":\"Oslo\"}");
        let usage = resp.usage.unwrap();
        assert_eq!((usage.prompt_tokens, usage.completion_tokens, usage.cached_tokens()), (110, 5, 100));
    }

    #[test]
    fn json_schema_goes_through_a_forced_tool_and_comes_back_as_text() {
        let req = request(
            json!({"model": "anthropic.claude-haiku-4-5-v1:0", "messages": [{"role": "user", "content": "hi"}],
            "response_format": {"type": "json_schema", "json_schema": {"name": "answer", "schema": {"type": "object"}}}}),
        );
        let body = translate_request(&req).unwrap();
        let config = serde_json::to_value(body.tool_config.unwrap()).unwrap();
        assert_eq!(config["toolChoice"], json!({"tool": {"name": "answer"}}));
        let answer = json!({"output": {"message": {"role": "assistant", "content": [
            {"toolUse": {"toolUseId": "t", "name": "answer", "input": {"ok": true}}}]}}, "stopReason": "tool_use",
            "usage": {"inputTokens": 1, "outputTokens": 1, "totalTokens": 2}});
        let resp = BedrockAdapter.parse_chat_response(&req, answer.to_string().as_bytes()).unwrap();
        assert_eq!(resp.choices[0].finish_reason.as_deref(), Some("stop"));
        assert_eq!(serde_json::to_value(&resp.choices[0].message).unwrap()["content"], "{\"ok\":true}");
    }

    /// A ConverseStream body as event-stream frames, decoded and mapped as the executor does.
    #[test]
    fn a_converse_stream_maps_to_chunks_with_tool_arguments_and_usage() {
        let mut bytes = Vec::new();
        for (name, payload) in [
            ("messageStart", json!({"role": "assistant"})),
            ("contentBlockDelta", json!({"contentBlockIndex": 0, "delta": {"text": "Hel"}})),
            ("contentBlockDelta", json!({"contentBlockIndex": 0, "delta": {"text": "lo"}})),
            ("contentBlockStop", json!({"contentBlockIndex": 0})),
            (
                "contentBlockStart",
                json!({"contentBlockIndex": 1, "start": {"toolUse": {"toolUseId": "tooluse_1", "name": "weather"}}}),
            ),
            ("contentBlockDelta", json!({"contentBlockIndex": 1, "delta": {"toolUse": {"input": "{\"city\":"}}})),
            ("contentBlockDelta", json!({"contentBlockIndex": 1, "delta": {"toolUse": {"input": "\"Oslo\"}"}}})),
            ("contentBlockStop", json!({"contentBlockIndex": 1})),
            ("messageStop", json!({"stopReason": "tool_use"})),
            (
                "metadata",
                json!({"usage": {"inputTokens": 7, "outputTokens": 3, "totalTokens": 10}, "metrics": {"latencyMs": 5}}),
            ),
        ] {
            bytes.extend(event(name, payload.to_string().as_bytes()));
        }
        let req = request(json!({"model": "m", "stream": true, "messages": [{"role": "user", "content": "hi"}]}));
        let mut mapper = BedrockAdapter.stream_mapper(&req);
        let mut events = Vec::new();
        EventStreamDecoder::default().push(&bytes, &mut events).unwrap();
        let mut chunks = Vec::new();
        let mut steps = Vec::new();
        for e in &events {
            steps.push(mapper.map(e, &mut chunks).unwrap());
        }
        assert_eq!(steps.last(), Some(&StreamStep::Done));
        let text: String = chunks.iter().filter_map(|c| c.choices.first()?.delta.content.clone()).collect();
        assert_eq!(text, "Hello");
        let args: String = chunks
            .iter()
            .filter_map(|c| c.choices.first()?.delta.tool_calls.as_ref()?[0].function.as_ref()?.arguments.clone())
            .collect();
        assert_eq!(args, "{\"city\":\"Oslo\"}");
        assert!(
            chunks.iter().any(|c| c.choices.first().and_then(|c| c.finish_reason.as_deref()) == Some("tool_calls"))
        );
        let usage = chunks.last().unwrap().usage.as_ref().unwrap();
        assert_eq!((usage.prompt_tokens, usage.completion_tokens), (7, 3));
    }

    #[test]
    fn an_exception_in_the_stream_fails_the_attempt_with_its_class() {
        let mut events = Vec::new();
        EventStreamDecoder::default()
            .push(&exception("throttlingException", br#"{"message":"Too many requests"}"#), &mut events)
            .unwrap();
        let req = request(json!({"model": "m", "stream": true, "messages": [{"role": "user", "content": "hi"}]}));
        let e = BedrockAdapter.stream_mapper(&req).map(&events[0], &mut Vec::new()).unwrap_err();
        assert_eq!(e.kind, ErrorKind::RateLimited);
    }

    #[test]
    fn titan_embeds_one_text_per_call_and_reports_its_tokens() {
        let req: EmbeddingRequest = serde_json::from_value(
            json!({"model": "amazon.titan-embed-text-v2:0", "input": "hello", "dimensions": 256}),
        )
        .unwrap();
        let headers = HeaderMap::new();
        let call = BedrockAdapter.embeddings_request(&req, &endpoint(&headers)).unwrap();
        assert!(call.url.ends_with("/model/amazon.titan-embed-text-v2%3A0/invoke"), "{}", call.url);
        let body: Value = serde_json::from_slice(&call.body).unwrap();
        assert_eq!(body, json!({"inputText": "hello", "dimensions": 256, "normalize": true}));
        let resp = BedrockAdapter
            .parse_embeddings(&req, &HeaderMap::new(), br#"{"embedding": [0.5, -0.25], "inputTextTokenCount": 2}"#)
            .unwrap();
        assert_eq!(resp.usage.unwrap().prompt_tokens, 2);
        assert_eq!(BedrockAdapter.embeddings_per_call(&req.model), Some(1));
    }
}
