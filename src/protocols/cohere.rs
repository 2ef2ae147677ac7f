//! Cohere's own v2 API: `POST /v2/chat` (plain and streamed), `/v2/embed` and `/v2/rerank`, with the key
//! as a bearer token. (Cohere's OpenAI-compatible API stays reachable through `kind = "openai"` with
//! `preset = "cohere"`.)
//!
//! Canonical chat → v2 chat: messages keep OpenAI's shape (system, user with text and image parts,
//! assistant with `tool_calls`, tool results by `tool_call_id`); `max_tokens`/`max_completion_tokens`,
//! `temperature`, `top_p` → `p`, `stop` → `stop_sequences`, `seed`, the penalties, `top_k` → `k`.
//! `tool_choice` `required`/`none` → `REQUIRED`/`NONE`; a named function → only that tool, `REQUIRED`.
//! `response_format` `json_object` → `{"type": "json_object"}`, `json_schema` → the same with its schema.
//! `n` > 1 is made as `n` calls by the gateway; `logprobs`, `user` and the like are dropped.
//!
//! v2 chat → canonical: `message.content[].text` joined; `tool_calls` as they are (OpenAI's shape);
//! `tool_plan` → `reasoning_content`; `finish_reason` `COMPLETE`/`STOP_SEQUENCE` → `stop`, `MAX_TOKENS` →
//! `length`, `TOOL_CALL` → `tool_calls`, `ERROR`/`TIMEOUT` fail the attempt. Usage: `billed_units`
//! (what Cohere charges), else `tokens`.
//!
//! The stream is SSE whose data name their `type`: `message-start`, `content-start`/`-delta`/`-end`,
//! `tool-plan-delta`, `tool-call-start`/`-delta`/`-end`, `citation-*` (dropped), `message-end` (finish
//! reason and usage). Embeddings: `texts`, `input_type` (the caller's, default `search_document`),
//! `embedding_types: ["float"]`, `output_dimension` from `dimensions`; tokens from `meta.billed_units`.
//! Errors: `{"message"}` (or `{"error"}`) by status, 429 rate limited, 498/401 credentials.

use http::{HeaderMap, StatusCode};
use serde_json::{Map, Value, json};

use crate::protocols::error::{ErrorKind, ProviderError, TimeoutPhase, retry_after};
use crate::protocols::openai::{self, OpenAiAdapter};
use crate::protocols::{Adapter, Endpoint, StreamMapper, StreamStep, UpstreamRequest, bad_request, encode};
use crate::schema::{
    ChatChunk, ChatRequest, ChatResponse, Choice, Delta, EmbeddingRequest, EmbeddingResponse, FunctionCallDelta,
    RerankRequest, ResponseMessage, Stop, ToolCall, ToolCallDelta, ToolChoice, ToolChoiceMode, Usage,
};
use crate::sse::SseEvent;

#[derive(Debug)]
pub struct CohereAdapter {
    /// The OpenAI adapter with Cohere's quirks, for the rerank call it already makes on `/v2/rerank`.
    rerank: OpenAiAdapter,
}

impl Default for CohereAdapter {
    fn default() -> Self {
        let quirks = crate::config::presets::find("cohere")
            .map(|p| p.quirks)
            .unwrap_or(crate::config::presets::Quirks::COMPATIBLE);
        Self { rerank: OpenAiAdapter { quirks } }
    }
}

/// Cohere's embed body for `req`'s texts, without `model` (Cohere's v2 and Cohere's models on Bedrock
/// take the same): `input_type` the caller's or `search_document`, float vectors, `output_dimension`.
pub(crate) fn embed_body(req: &EmbeddingRequest) -> Result<Value, ProviderError> {
    let texts =
        req.input.texts().ok_or_else(|| bad_request("Cohere embeddings take text input, not token ids.", "input"))?;
    let input_type = match req.extra.get("input_type") {
        None => "search_document",
        Some(Value::String(t))
            if matches!(t.as_str(), "search_document" | "search_query" | "classification" | "clustering") =>
        {
            t
        }
        Some(_) => {
            return Err(bad_request(
                "input_type must be search_document, search_query, classification or clustering.",
                "input_type",
            ));
        }
    };
    let mut body = json!({"texts": texts, "input_type": input_type, "embedding_types": ["float"]});
    if let Some(d) = req.dimensions {
        body["output_dimension"] = json!(d);
    }
    Ok(body)
}

/// The float vectors of a Cohere embed answer (asked for with `embedding_types: ["float"]`).
pub(crate) fn embed_vectors(v: &Value) -> Result<Vec<Vec<f64>>, ProviderError> {
    serde_json::from_value(v.pointer("/embeddings/float").cloned().unwrap_or_default())
        .map_err(|e| unreadable("embeddings", e))
}

/// A URL of Cohere's v2 API, whichever of its versions' roots the base URL names.
pub(crate) fn v2(endpoint: &Endpoint<'_>, path: &str) -> String {
    let base = endpoint.base_url.trim_end_matches('/');
    let root = ["/compatibility/v1", "/v1", "/v2"].iter().find_map(|s| base.strip_suffix(s)).unwrap_or(base);
    format!("{root}/v2/{path}")
}

fn unreadable(what: &str, e: impl std::fmt::Display) -> ProviderError {
    ProviderError::new(ErrorKind::InvalidResponse, format!("unreadable Cohere {what}: {e}"))
}

/// The v2 chat body for a canonical request.
pub fn translate_request(req: &ChatRequest) -> Result<Value, ProviderError> {
    let mut messages = Vec::with_capacity(req.messages.len());
    for m in &req.messages {
        let mut v = serde_json::to_value(m).map_err(|e| ProviderError::new(ErrorKind::BadRequest, e.to_string()))?;
        if let Some(fields) = v.as_object_mut() {
            // `developer` is OpenAI's newer name for a system turn; `function` its oldest for a tool.
            match fields.get("role").and_then(Value::as_str) {
                Some("developer") => {
                    fields.insert("role".into(), json!("system"));
                }
                Some("function") => {
                    fields.insert("role".into(), json!("tool"));
                }
                _ => {}
            }
            // An assistant's reasoning before its calls goes back as its tool plan.
            if let Some(plan) = fields.remove("reasoning_content").filter(|p| p.is_string())
                && fields.get("tool_calls").is_some_and(|c| c.as_array().is_some_and(|c| !c.is_empty()))
            {
                fields.insert("tool_plan".into(), plan);
            }
            // Only what v2 reads is sent; it refuses unknown fields.
            fields
                .retain(|k, _| matches!(k.as_str(), "role" | "content" | "tool_calls" | "tool_call_id" | "tool_plan"));
            if fields.get("content").is_some_and(Value::is_null) {
                fields.remove("content");
            }
        }
        messages.push(v);
    }
    let mut body = json!({"model": req.model, "messages": messages, "stream": req.is_streaming()});
    let put = |body: &mut Value, k: &str, v: Option<Value>| {
        if let Some(v) = v.filter(|v| !v.is_null()) {
            body[k] = v;
        }
    };
    put(&mut body, "max_tokens", req.max_output_tokens().map(Value::from));
    put(&mut body, "temperature", req.temperature.map(Value::from));
    put(&mut body, "p", req.top_p.map(Value::from));
    put(&mut body, "k", req.extra.get("top_k").cloned());
    put(&mut body, "seed", req.extra.get("seed").cloned());
    put(&mut body, "frequency_penalty", req.extra.get("frequency_penalty").cloned());
    put(&mut body, "presence_penalty", req.extra.get("presence_penalty").cloned());
    put(
        &mut body,
        "stop_sequences",
        match &req.stop {
            Some(Stop::One(s)) => Some(json!([s])),
            Some(Stop::Many(v)) if !v.is_empty() => Some(json!(v)),
            _ => None,
        },
    );
    // v2's tool shape: only the function's name, description and parameters.
    let mut tools: Vec<Value> = req
        .tools
        .iter()
        .flatten()
        .filter_map(|t| t.function.as_ref())
        .map(|f| {
            let mut function = json!({"name": f.name});
            if let Some(d) = &f.description {
                function["description"] = json!(d);
            }
            if let Some(p) = &f.parameters {
                function["parameters"] = p.clone();
            }
            json!({"type": "function", "function": function})
        })
        .collect();
    match req.tool_choice.as_ref().map(ToolChoice::mode).transpose() {
        Err(why) => return Err(bad_request(why, "tool_choice")),
        Ok(None | Some(ToolChoiceMode::Auto)) => {}
        Ok(Some(ToolChoiceMode::Required)) => body["tool_choice"] = json!("REQUIRED"),
        Ok(Some(ToolChoiceMode::None)) => body["tool_choice"] = json!("NONE"),
        Ok(Some(ToolChoiceMode::Function(name))) => {
            // v2 cannot name a tool: offering only that one and requiring a call is the same request.
            tools.retain(|t| t.pointer("/function/name").and_then(Value::as_str) == Some(name));
            if tools.is_empty() {
                return Err(bad_request(
                    format!("tool_choice names '{name}', which is not among the tools."),
                    "tool_choice",
                ));
            }
            body["tool_choice"] = json!("REQUIRED");
        }
    }
    if !tools.is_empty() {
        body["tools"] = Value::Array(tools);
    }
    if let Some(format) = &req.response_format {
        match format.kind.as_str() {
            "json_object" => body["response_format"] = json!({"type": "json_object"}),
            "json_schema" => {
                let schema = format.extra.get("json_schema").and_then(|s| s.get("schema")).cloned();
                body["response_format"] =
                    json!({"type": "json_object", "json_schema": schema.unwrap_or(json!({"type": "object"}))});
            }
            _ => {}
        }
    }
    Ok(body)
}

fn finish_reason(reason: Option<&str>) -> Result<&'static str, ProviderError> {
    match reason {
        Some("MAX_TOKENS") => Ok("length"),
        Some("TOOL_CALL") => Ok("tool_calls"),
        Some("ERROR") => Err(ProviderError::new(ErrorKind::ServerError, "Cohere ended the answer with an error")),
        Some("TIMEOUT") => Err(ProviderError::timeout(TimeoutPhase::Total)),
        _ => Ok("stop"),
    }
}

/// Cohere's usage: what it bills (`billed_units`), else what it counted (`tokens`).
fn usage_of(usage: &Value) -> Option<Usage> {
    let counts =
        usage.get("billed_units").filter(|b| b.get("input_tokens").is_some()).or_else(|| usage.get("tokens"))?;
    let n = |f: &str| counts.get(f).and_then(Value::as_f64).map_or(0, |x| x.max(0.0) as u64);
    let (input, output) = (n("input_tokens"), n("output_tokens"));
    Some(Usage { prompt_tokens: input, completion_tokens: output, total_tokens: input + output, ..Usage::default() })
}

impl Adapter for CohereAdapter {
    fn chat_request(&self, req: &ChatRequest, endpoint: &Endpoint<'_>) -> Result<UpstreamRequest, ProviderError> {
        Ok(UpstreamRequest {
            url: v2(endpoint, "chat"),
            headers: openai::bearer_headers(endpoint)?,
            body: encode(&translate_request(req)?)?,
        })
    }

    fn parse_chat_response(&self, req: &ChatRequest, body: &[u8]) -> Result<ChatResponse, ProviderError> {
        let v: Value = serde_json::from_slice(body).map_err(|e| unreadable("response", e))?;
        let message = &v["message"];
        let text: String = message["content"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|c| c.get("text").and_then(Value::as_str))
            .collect();
        let calls: Vec<ToolCall> = match message.get("tool_calls") {
            Some(c) if c.is_array() => serde_json::from_value(c.clone()).map_err(|e| unreadable("tool calls", e))?,
            _ => Vec::new(),
        };
        let plan = message["tool_plan"].as_str().unwrap_or_default().to_owned();
        let finish = finish_reason(v["finish_reason"].as_str())?;
        Ok(ChatResponse {
            id: format!("chatcmpl-{}", v["id"].as_str().unwrap_or("cohere")),
            object: "chat.completion".to_owned(),
            created: crate::protocols::unix_now(),
            model: req.model.clone(),
            choices: vec![Choice {
                index: 0,
                message: ResponseMessage::assistant(text, plan, calls),
                finish_reason: Some(finish.to_owned()),
                extra: Map::new(),
            }],
            usage: usage_of(&v["usage"]),
            extra: Map::new(),
        })
    }

    fn stream_mapper(&self, req: &ChatRequest) -> Box<dyn StreamMapper> {
        Box::new(CohereStream {
            model: req.model.clone(),
            created: crate::protocols::unix_now(),
            ..CohereStream::default()
        })
    }

    fn classify_error(&self, status: StatusCode, headers: &HeaderMap, body: &[u8]) -> ProviderError {
        let v: Value = serde_json::from_slice(body).unwrap_or_default();
        let upstream =
            v.get("message").or_else(|| v.get("error")).and_then(Value::as_str).unwrap_or_default().to_owned();
        let lower = upstream.to_lowercase();
        let kind = match status.as_u16() {
            429 => ErrorKind::RateLimited,
            401 | 403 | 498 => ErrorKind::Authentication,
            402 => ErrorKind::QuotaExhausted,
            404 => ErrorKind::NotFound,
            400 | 422 if lower.contains("too many tokens") || lower.contains("context length") => {
                ErrorKind::ContextTooLong
            }
            400..=499 => ErrorKind::BadRequest,
            503 => ErrorKind::Overloaded,
            504 => ErrorKind::Timeout(TimeoutPhase::Total),
            _ => ErrorKind::ServerError,
        };
        let message = match kind {
            ErrorKind::BadRequest | ErrorKind::NotFound | ErrorKind::ContextTooLong if !upstream.is_empty() => upstream,
            ErrorKind::RateLimited => "Cohere is rate limiting requests".to_owned(),
            ErrorKind::Authentication => "Cohere rejected the gateway's credentials".to_owned(),
            _ => format!("Cohere failed with HTTP {}", status.as_u16()),
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

    /// Cohere returns one answer per call: the gateway makes `n` calls.
    fn supports_n(&self) -> bool {
        false
    }

    fn embeddings_per_call(&self, _model: &str) -> Option<usize> {
        // v2 embed takes at most 96 texts per call.
        Some(96)
    }

    fn embeddings_request(
        &self,
        req: &EmbeddingRequest,
        endpoint: &Endpoint<'_>,
    ) -> Result<UpstreamRequest, ProviderError> {
        let mut body = embed_body(req)?;
        body["model"] = json!(req.model);
        Ok(UpstreamRequest {
            url: v2(endpoint, "embed"),
            headers: openai::bearer_headers(endpoint)?,
            body: encode(&body)?,
        })
    }

    fn parse_embeddings(
        &self,
        req: &EmbeddingRequest,
        _headers: &HeaderMap,
        body: &[u8],
    ) -> Result<EmbeddingResponse, ProviderError> {
        let v: Value = serde_json::from_slice(body).map_err(|e| unreadable("embeddings", e))?;
        let vectors = embed_vectors(&v)?;
        let tokens = v.pointer("/meta/billed_units/input_tokens").and_then(Value::as_f64).ok_or_else(|| {
            ProviderError::new(ErrorKind::InvalidResponse, "Cohere embeddings without their token count")
        })? as u64;
        Ok(EmbeddingResponse::floats(&req.model, vectors, tokens))
    }

    fn offers(&self, work: crate::config::Capability) -> bool {
        work == crate::config::Capability::Rerank
    }

    fn rerank_request(&self, req: &RerankRequest, endpoint: &Endpoint<'_>) -> Result<UpstreamRequest, ProviderError> {
        self.rerank.rerank_request(req, endpoint)
    }
}

/// Per-stream state: the answer's id, and which v2 tool-call index is which of ours.
#[derive(Default)]
struct CohereStream {
    id: String,
    model: String,
    created: u64,
}

impl CohereStream {
    fn chunk(&self, delta: Delta, finish: Option<&str>) -> ChatChunk {
        ChatChunk::single(&self.id, self.created, &self.model, delta, finish)
    }
}

impl StreamMapper for CohereStream {
    fn map(&mut self, event: &SseEvent, out: &mut Vec<ChatChunk>) -> Result<StreamStep, ProviderError> {
        if event.data.trim().is_empty() || event.data == "[DONE]" {
            return Ok(StreamStep::Continue);
        }
        let v: Value = serde_json::from_str(&event.data).map_err(|e| unreadable("stream event", e))?;
        let kind = v["type"].as_str().or(event.event.as_deref()).unwrap_or_default();
        let message = &v["delta"]["message"];
        match kind {
            "message-start" => {
                self.id = format!("chatcmpl-{}", v["id"].as_str().unwrap_or("cohere"));
                out.push(self.chunk(
                    Delta { role: Some("assistant".to_owned()), content: Some(String::new()), ..Delta::default() },
                    None,
                ));
            }
            "content-delta" => {
                if let Some(text) = message.pointer("/content/text").and_then(Value::as_str) {
                    out.push(self.chunk(Delta { content: Some(text.to_owned()), ..Delta::default() }, None));
                }
            }
            "tool-plan-delta" => {
                if let Some(plan) = message["tool_plan"].as_str() {
                    out.push(self.chunk(Delta { reasoning_content: Some(plan.to_owned()), ..Delta::default() }, None));
                }
            }
            "tool-call-start" | "tool-call-delta" => {
                let index = v["index"].as_u64().unwrap_or(0) as u32;
                let call = &message["tool_calls"];
                let start = kind == "tool-call-start";
                let delta = ToolCallDelta {
                    index,
                    id: start.then(|| call["id"].as_str().unwrap_or_default().to_owned()),
                    kind: start.then(|| "function".to_owned()),
                    function: Some(FunctionCallDelta {
                        name: start.then(|| {
                            call.pointer("/function/name").and_then(Value::as_str).unwrap_or_default().to_owned()
                        }),
                        arguments: Some(
                            call.pointer("/function/arguments").and_then(Value::as_str).unwrap_or_default().to_owned(),
                        ),
                        extra: Map::new(),
                    }),
                    extra: Map::new(),
                };
                out.push(self.chunk(Delta { tool_calls: Some(vec![delta]), ..Delta::default() }, None));
            }
            "message-end" => {
                let finish = finish_reason(v["delta"]["finish_reason"].as_str())?;
                out.push(self.chunk(Delta::default(), Some(finish)));
                if let Some(usage) = usage_of(&v["delta"]["usage"]) {
                    out.push(ChatChunk::usage_only(&self.id, self.created, &self.model, usage));
                }
                return Ok(StreamStep::Done);
            }
            _ => {} // content-start/-end, tool-call-end, citations, and types added later
        }
        Ok(StreamStep::Continue)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(body: Value) -> ChatRequest {
        serde_json::from_value(body).unwrap()
    }

    #[test]
    fn a_chat_request_keeps_openais_messages_and_maps_the_rest() {
        let req = request(
            json!({"model": "command-a-03-2025", "stream": true, "max_tokens": 50, "top_p": 0.9, "stop": "END",
            "user": "u1", "logprobs": true,
            "messages": [{"role": "developer", "content": "Be brief."}, {"role": "user", "content": "Weather?", "name": "ann"},
                {"role": "assistant", "content": null, "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "w", "arguments": "{}"}}]},
                {"role": "tool", "tool_call_id": "c1", "content": "sunny"}],
            "tools": [{"type": "function", "function": {"name": "w"}}, {"type": "function", "function": {"name": "x"}}],
            "tool_choice": {"type": "function", "function": {"name": "w"}},
            "response_format": {"type": "json_schema", "json_schema": {"name": "a", "schema": {"type": "object"}}}}),
        );
        let body = translate_request(&req).unwrap();
        assert_eq!(body["messages"][0], json!({"role": "system", "content": "Be brief."}));
        assert_eq!(body["messages"][1], json!({"role": "user", "content": "Weather?"}));
        assert!(body["messages"][2].get("content").is_none());
        assert_eq!(body["messages"][3]["tool_call_id"], "c1");
        assert_eq!(
            (body["p"].clone(), body["stop_sequences"].clone(), body["max_tokens"].clone()),
            (json!(0.9), json!(["END"]), json!(50))
        );
        assert_eq!(body["tool_choice"], "REQUIRED");
        assert_eq!(body["tools"].as_array().unwrap().len(), 1, "only the named tool is offered");
        assert_eq!(body["response_format"], json!({"type": "json_object", "json_schema": {"type": "object"}}));
        assert!(body.get("user").is_none() && body.get("logprobs").is_none());
    }

    #[test]
    fn an_answer_and_a_stream_are_read() {
        let req = request(json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]}));
        let answer = json!({"id": "abc", "finish_reason": "TOOL_CALL", "message": {"role": "assistant", "tool_plan": "I will look.",
            "content": [{"type": "text", "text": "Looking."}],
            "tool_calls": [{"id": "t1", "type": "function", "function": {"name": "w", "arguments": "{\"a\":1}"}}]},
            "usage": {"billed_units": {"input_tokens": 5, "output_tokens": 7}, "tokens": {"input_tokens": 80, "output_tokens": 7}}});
        let resp = CohereAdapter::default().parse_chat_response(&req, answer.to_string().as_bytes()).unwrap();
        assert_eq!(resp.choices[0].finish_reason.as_deref(), Some("tool_calls"));
        let usage = resp.usage.unwrap();
        assert_eq!((usage.prompt_tokens, usage.completion_tokens), (5, 7), "billed units are what is charged");
        let mut mapper = CohereAdapter::default().stream_mapper(&req);
        let mut out = Vec::new();
        for data in [
            json!({"type": "message-start", "id": "abc", "delta": {"message": {"role": "assistant"}}}),
            json!({"type": "content-start", "index": 0, "delta": {"message": {"content": {"type": "text", "text": ""}}}}),
            json!({"type": "content-delta", "index": 0, "delta": {"message": {"content": {"text": "Hel"}}}}),
            json!({"type": "content-delta", "index": 0, "delta": {"message": {"content": {"text": "lo"}}}}),
            json!({"type": "content-end", "index": 0}),
            json!({"type": "message-end", "delta": {"finish_reason": "COMPLETE", "usage": {"billed_units": {"input_tokens": 3, "output_tokens": 2}}}}),
        ] {
            let event = SseEvent { event: data["type"].as_str().map(str::to_owned), data: data.to_string(), id: None };
            let _ = mapper.map(&event, &mut out).unwrap();
        }
        let text: String = out.iter().filter_map(|c| c.choices.first()?.delta.content.clone()).collect();
        assert_eq!(text, "Hello");
        assert_eq!(out.last().unwrap().usage.as_ref().unwrap().completion_tokens, 2);
    }
}
