//! The fake speaking the Gemini API: `models/{model}:generateContent`, `:streamGenerateContent?alt=sse`
//! and `:batchEmbedContents`.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::Response;
use serde_json::{Value, json};

use super::{Dialect, FakeState, Reply, fake_vector, intake, json_response, parse_json, stream_frames};
use crate::sse::data_frame;

pub(super) async fn dispatch(
    State(state): State<Arc<FakeState>>,
    Path(model_action): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    // axum cannot route `{model}:action`; split on the last colon instead.
    let Some((model, action)) = model_action.rsplit_once(':') else {
        return Dialect::Gemini.error_response(404, None, None, "unknown method");
    };
    let body = match parse_json(Dialect::Gemini, &body) {
        Ok(b) => b,
        Err(resp) => return resp,
    };
    let fault = match intake(&state, Dialect::Gemini, headers, &body, model).await {
        Ok(f) => f,
        Err(resp) => return resp,
    };
    match action {
        "generateContent" | "streamGenerateContent" => {
            let reply = Reply::for_request(&as_openai(&body), &state.settings, &state.next_id("fake"));
            if action == "streamGenerateContent" {
                return stream_frames(state.clone(), frames(&reply, model), Dialect::Gemini, fault);
            }
            tokio::time::sleep(std::time::Duration::from_millis(state.settings.latency_ms)).await;
            let mut parts: Vec<Value> = Vec::new();
            if !reply.tokens.is_empty() {
                parts.push(json!({"text": reply.tokens.concat()}));
            }
            parts.extend(calls(&reply));
            json_response(&json!({
                "candidates": [{"content": {"role": "model", "parts": parts}, "finishReason": finish(&reply), "index": 0}],
                "usageMetadata": usage(&reply), "modelVersion": model, "responseId": reply.id
            }))
        }
        "batchEmbedContents" => {
            let embeddings: Vec<Value> = body
                .get("requests")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .map(|r| {
                    let text = r.pointer("/content/parts/0/text").and_then(Value::as_str).unwrap_or_default();
                    let dims = r.get("outputDimensionality").and_then(Value::as_u64).unwrap_or(8) as usize;
                    json!({"values": fake_vector(text, dims)})
                })
                .collect();
            json_response(&json!({"embeddings": embeddings}))
        }
        _ => Dialect::Gemini.error_response(404, None, None, "unknown method"),
    }
}

fn as_openai(body: &Value) -> Value {
    let mut messages = Vec::new();
    if let Some(system) = body.get("systemInstruction") {
        messages.push(json!({"role": "system", "content": text_of(system)}));
    }
    for c in body.get("contents").and_then(Value::as_array).into_iter().flatten() {
        let parts = c.get("parts").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
        let role = if parts.iter().any(|p| p.get("functionResponse").is_some()) {
            "tool"
        } else if c["role"] == "model" {
            "assistant"
        } else {
            "user"
        };
        messages.push(json!({"role": role, "content": text_of(c)}));
    }
    let tools: Vec<Value> = body
        .pointer("/tools/0/functionDeclarations")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|d| {
            let params = d.get("parametersJsonSchema").or_else(|| d.get("parameters")).cloned().unwrap_or(Value::Null);
            json!({"type": "function", "function": {"name": d["name"], "parameters": params}})
        })
        .collect();
    let mut out = json!({"messages": messages, "tools": tools});
    if body.pointer("/generationConfig/responseMimeType") == Some(&json!("application/json")) {
        let schema = body.pointer("/generationConfig/responseJsonSchema").cloned().unwrap_or(Value::Null);
        out["response_format"] = json!({"type": "json_schema", "json_schema": {"name": "out", "schema": schema}});
    }
    if let Some(max) = body.pointer("/generationConfig/maxOutputTokens") {
        out["max_tokens"] = max.clone();
    }
    let config = body.pointer("/toolConfig/functionCallingConfig");
    match config.and_then(|c| c["mode"].as_str()) {
        Some("NONE") => out["tool_choice"] = json!("none"),
        Some("ANY") => {
            if let Some(name) = config.and_then(|c| c.pointer("/allowedFunctionNames/0")) {
                out["tool_choice"] = json!({"type": "function", "function": {"name": name}});
            }
        }
        _ => {}
    }
    out
}

fn text_of(content: &Value) -> String {
    content
        .get("parts")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|p| p.get("text").and_then(Value::as_str))
        .collect::<Vec<_>>()
        .join("\n")
}

fn finish(reply: &Reply) -> &'static str {
    if reply.finish_reason == "length" { "MAX_TOKENS" } else { "STOP" }
}

fn usage(reply: &Reply) -> Value {
    json!({"promptTokenCount": reply.prompt_tokens, "candidatesTokenCount": reply.completion_tokens,
           "totalTokenCount": reply.prompt_tokens + reply.completion_tokens})
}

fn calls(reply: &Reply) -> Vec<Value> {
    reply
        .tool_calls
        .iter()
        .map(|(name, args)| {
            let args: Value = serde_json::from_str(args).unwrap_or_else(|_| json!({}));
            json!({"functionCall": {"name": name, "args": args}})
        })
        .collect()
}

/// Gemini streams whole `GenerateContentResponse`s: a few tokens each, function calls complete, and
/// the finish reason with the usage in the last one. There is no `[DONE]`.
fn frames(reply: &Reply, model: &str) -> Vec<Bytes> {
    let frame = |parts: Vec<Value>, last: bool| {
        let mut candidate = json!({"content": {"role": "model", "parts": parts}, "index": 0});
        let mut resp = json!({"candidates": [], "modelVersion": model, "responseId": reply.id});
        if last {
            candidate["finishReason"] = json!(finish(reply));
            resp["usageMetadata"] = usage(reply);
        }
        resp["candidates"] = json!([candidate]);
        data_frame(resp.to_string().as_bytes())
    };
    let mut out: Vec<Bytes> = reply.tokens.chunks(3).map(|c| frame(vec![json!({"text": c.concat()})], false)).collect();
    out.push(frame(calls(reply), true));
    out
}
