//! The fake speaking Anthropic's Messages API: `POST /v1/messages`, plain and streamed, with tool use.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use serde_json::{Value, json};

use super::{Dialect, FakeState, Reply, intake, json_response, parse_json, stream_frames};
use crate::sse::named_frame;

/// Reads an Anthropic request as the OpenAI-shaped request the fake's reply logic understands.
fn as_openai(body: &Value) -> Value {
    let mut messages = Vec::new();
    if let Some(system) = body.get("system") {
        messages.push(json!({"role": "system", "content": text_of(system)}));
    }
    for m in body.get("messages").and_then(Value::as_array).into_iter().flatten() {
        let content = m.get("content").cloned().unwrap_or(Value::Null);
        let is_tool_result = content.as_array().is_some_and(|b| b.iter().any(|b| b["type"] == "tool_result"));
        let role = if is_tool_result { "tool" } else { m["role"].as_str().unwrap_or("user") };
        messages.push(json!({"role": role, "content": text_of(&content)}));
    }
    let tools: Vec<Value> = body
        .get("tools")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|t| json!({"type": "function", "function": {"name": t["name"], "parameters": t["input_schema"]}}))
        .collect();
    let mut out = json!({"messages": messages, "tools": tools, "max_tokens": body["max_tokens"]});
    match body.pointer("/tool_choice/type").and_then(Value::as_str) {
        Some("none") => out["tool_choice"] = json!("none"),
        Some("tool") => {
            out["tool_choice"] = json!({"type": "function", "function": {"name": body["tool_choice"]["name"]}})
        }
        _ => {}
    }
    if body.pointer("/tool_choice/disable_parallel_tool_use") == Some(&json!(true)) {
        out["parallel_tool_calls"] = json!(false);
    }
    out
}

fn text_of(content: &Value) -> String {
    match content {
        Value::String(s) => s.clone(),
        Value::Array(blocks) => blocks
            .iter()
            .filter_map(|b| b.get("text").and_then(Value::as_str).or_else(|| b.get("content").and_then(Value::as_str)))
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    }
}

fn stop_reason(reply: &Reply) -> &'static str {
    match reply.finish_reason {
        "tool_calls" => "tool_use",
        "length" => "max_tokens",
        _ => "end_turn",
    }
}

fn usage(reply: &Reply, output: u64) -> Value {
    json!({"input_tokens": reply.prompt_tokens, "output_tokens": output, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0})
}

fn tool_id(reply: &Reply, i: usize) -> String {
    format!("toolu_{}", reply.call_id(i))
}

pub(super) async fn messages(State(state): State<Arc<FakeState>>, headers: HeaderMap, body: Bytes) -> Response {
    let body = match parse_json(Dialect::Anthropic, &body) {
        Ok(b) => b,
        Err(resp) => return resp,
    };
    if body.get("max_tokens").and_then(Value::as_u64).is_none() {
        return Dialect::Anthropic.error_response(400, None, None, "max_tokens: Field required");
    }
    let model = body.get("model").and_then(Value::as_str).unwrap_or("claude-fake").to_owned();
    let fault = match intake(&state, Dialect::Anthropic, headers, &body, &model).await {
        Ok(f) => f,
        Err(resp) => return resp,
    };
    let reply = Reply::for_request(&as_openai(&body), &state.settings, &state.next_id("msg_fake"));
    if body.get("stream").and_then(Value::as_bool) == Some(true) {
        return stream_frames(state.clone(), frames(&reply, &model), Dialect::Anthropic, fault);
    }
    tokio::time::sleep(std::time::Duration::from_millis(state.settings.latency_ms)).await;
    let mut content: Vec<Value> = Vec::new();
    if !reply.tokens.is_empty() {
        content.push(json!({"type": "text", "text": reply.tokens.concat()}));
    }
    for (i, (name, args)) in reply.tool_calls.iter().enumerate() {
        let input: Value = serde_json::from_str(args).unwrap_or_else(|_| json!({}));
        content.push(json!({"type": "tool_use", "id": tool_id(&reply, i), "name": name, "input": input}));
    }
    json_response(&json!({
        "id": reply.id, "type": "message", "role": "assistant", "model": model, "content": content,
        "stop_reason": stop_reason(&reply), "stop_sequence": null, "usage": usage(&reply, reply.completion_tokens)
    }))
}

/// The event sequence Anthropic documents for a streamed message.
fn frames(reply: &Reply, model: &str) -> Vec<Bytes> {
    let ev = |name: &str, data: Value| named_frame(name, data.to_string().as_bytes());
    let mut out = vec![ev(
        "message_start",
        json!({"type": "message_start", "message": {"id": reply.id, "type": "message", "role": "assistant", "model": model,
            "content": [], "stop_reason": null, "stop_sequence": null, "usage": usage(reply, 1)}}),
    )];
    let mut index = 0;
    if !reply.tokens.is_empty() {
        out.push(ev(
            "content_block_start",
            json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
        ));
        out.push(ev("ping", json!({"type": "ping"})));
        for token in &reply.tokens {
            out.push(ev(
                "content_block_delta",
                json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": token}}),
            ));
        }
        out.push(ev("content_block_stop", json!({"type": "content_block_stop", "index": 0})));
        index = 1;
    }
    for (i, (name, args)) in reply.tool_calls.iter().enumerate() {
        let block = index + i;
        out.push(ev(
            "content_block_start",
            json!({"type": "content_block_start", "index": block, "content_block": {"type": "tool_use", "id": tool_id(reply, i), "name": name, "input": {}}}),
        ));
        for piece in super::char_pieces(args, 9) {
            out.push(ev(
                "content_block_delta",
                json!({"type": "content_block_delta", "index": block, "delta": {"type": "input_json_delta", "partial_json": piece}}),
            ));
        }
        out.push(ev("content_block_stop", json!({"type": "content_block_stop", "index": block})));
    }
    out.push(ev(
        "message_delta",
        json!({"type": "message_delta", "delta": {"stop_reason": stop_reason(reply), "stop_sequence": null}, "usage": {"output_tokens": reply.completion_tokens}}),
    ));
    out.push(ev("message_stop", json!({"type": "message_stop"})));
    out
}
