//! The fake speaking Cohere's v2 API: `POST /v2/chat` (plain, and streamed as SSE whose data name their
//! `type`) and `/v2/embed`. Requests are read into the fake's usual chat answer; answers are written in
//! v2's shapes (content blocks, `tool_calls`, `finish_reason` in capitals, `billed_units`). A scripted
//! mid-stream fault ends the stream with `finish_reason: "ERROR"`, as Cohere does.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use serde_json::{Value, json};

use super::{Dialect, FakeState, Reply, fake_vector, intake, json_response, parse_json, stream_frames};
use crate::sse::named_frame;

/// The v2 chat body as the OpenAI-shaped one the fake's answer is made from.
fn as_chat(body: &Value) -> Value {
    let mut chat = json!({"messages": body["messages"], "tools": body["tools"]});
    match body["tool_choice"].as_str() {
        Some("NONE") => chat["tool_choice"] = json!("none"),
        Some("REQUIRED") => chat["tool_choice"] = json!("required"),
        _ => {}
    }
    if let Some(max) = body.get("max_tokens") {
        chat["max_tokens"] = max.clone();
    }
    if body.pointer("/response_format/type").and_then(Value::as_str) == Some("json_object") {
        chat["response_format"] = match body.pointer("/response_format/json_schema") {
            Some(schema) => json!({"type": "json_schema", "json_schema": {"name": "answer", "schema": schema}}),
            None => json!({"type": "json_object"}),
        };
    }
    chat
}

fn finish(reply: &Reply) -> &'static str {
    match reply.finish_reason {
        "length" => "MAX_TOKENS",
        "tool_calls" => "TOOL_CALL",
        _ => "COMPLETE",
    }
}

fn usage(reply: &Reply) -> Value {
    let counts = json!({"input_tokens": reply.prompt_tokens, "output_tokens": reply.completion_tokens});
    json!({"billed_units": counts, "tokens": {"input_tokens": reply.prompt_tokens + 40, "output_tokens": reply.completion_tokens}})
}

fn tool_calls(reply: &Reply) -> Vec<Value> {
    reply
        .tool_calls
        .iter()
        .enumerate()
        .map(|(i, (name, args))| json!({"id": reply.call_id(i), "type": "function", "function": {"name": name, "arguments": args}}))
        .collect()
}

pub(super) async fn chat(State(state): State<Arc<FakeState>>, headers: HeaderMap, body: Bytes) -> Response {
    let body = match parse_json(Dialect::Cohere, &body) {
        Ok(b) => b,
        Err(resp) => return resp,
    };
    let model = body["model"].as_str().unwrap_or("command-a-03-2025").to_owned();
    if !body["messages"].is_array() {
        return Dialect::Cohere.error_response(400, None, None, "invalid request: messages must be an array");
    }
    let fault = match intake(&state, Dialect::Cohere, headers, &body, &model).await {
        Ok(f) => f,
        Err(resp) => return resp,
    };
    let reply = Reply::for_request(&as_chat(&body), &state.settings, &state.next_id("cohere"));
    if body["stream"].as_bool() == Some(true) {
        let frame = |v: Value| named_frame(v["type"].as_str().unwrap_or_default(), v.to_string().as_bytes());
        let mut frames =
            vec![frame(json!({"type": "message-start", "id": reply.id, "delta": {"message": {"role": "assistant"}}}))];
        if !reply.tokens.is_empty() {
            frames.push(frame(json!({"type": "content-start", "index": 0, "delta": {"message": {"content": {"type": "text", "text": ""}}}})));
            for token in &reply.tokens {
                frames.push(frame(
                    json!({"type": "content-delta", "index": 0, "delta": {"message": {"content": {"text": token}}}}),
                ));
            }
            frames.push(frame(json!({"type": "content-end", "index": 0})));
        }
        for (i, call) in tool_calls(&reply).into_iter().enumerate() {
            let args = call["function"]["arguments"].as_str().unwrap_or_default().to_owned();
            let mut start = call.clone();
            start["function"]["arguments"] = json!("");
            frames.push(frame(
                json!({"type": "tool-call-start", "index": i, "delta": {"message": {"tool_calls": start}}}),
            ));
            for piece in super::char_pieces(&args, 7) {
                frames.push(frame(json!({"type": "tool-call-delta", "index": i,
                    "delta": {"message": {"tool_calls": {"function": {"arguments": piece}}}}})));
            }
            frames.push(frame(json!({"type": "tool-call-end", "index": i})));
        }
        frames.push(frame(
            json!({"type": "message-end", "delta": {"finish_reason": finish(&reply), "usage": usage(&reply)}}),
        ));
        return stream_frames(state.clone(), frames, Dialect::Cohere, fault);
    }
    tokio::time::sleep(std::time::Duration::from_millis(state.settings.latency_ms)).await;
    let mut message = json!({"role": "assistant"});
    if !reply.tokens.is_empty() {
        message["content"] = json!([{"type": "text", "text": reply.tokens.concat()}]);
    }
    if !reply.tool_calls.is_empty() {
        message["tool_calls"] = Value::Array(tool_calls(&reply));
        message["tool_plan"] = json!("I will call the tool.");
    }
    json_response(&json!({"id": reply.id, "finish_reason": finish(&reply), "message": message, "usage": usage(&reply)}))
}

pub(super) async fn embed(State(state): State<Arc<FakeState>>, headers: HeaderMap, body: Bytes) -> Response {
    let body = match parse_json(Dialect::Cohere, &body) {
        Ok(b) => b,
        Err(resp) => return resp,
    };
    let model = body["model"].as_str().unwrap_or("embed-v4.0").to_owned();
    if body["input_type"].as_str().is_none() {
        return Dialect::Cohere.error_response(
            400,
            None,
            None,
            "invalid request: input_type is required for embed models v3 and higher",
        );
    }
    if let Err(resp) = intake(&state, Dialect::Cohere, headers, &body, &model).await {
        return resp;
    }
    let texts: Vec<&str> = body["texts"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
    if texts.len() > 96 {
        return Dialect::Cohere.error_response(400, None, None, "invalid request: at most 96 texts per call");
    }
    let dims = body["output_dimension"].as_u64().unwrap_or(8) as usize;
    let vectors: Vec<Vec<f64>> =
        texts.iter().map(|t| fake_vector(t, dims).into_iter().map(f64::from).collect()).collect();
    let tokens: usize = texts.iter().map(|t| t.len().div_ceil(4)).sum();
    json_response(&json!({"id": state.next_id("embed"), "embeddings": {"float": vectors}, "texts": texts,
        "meta": {"api_version": {"version": "2"}, "billed_units": {"input_tokens": tokens}}}))
}

/// The end Cohere gives a stream that failed mid-way.
pub(super) fn mid_stream_error() -> Bytes {
    named_frame(
        "message-end",
        json!({"type": "message-end", "delta": {"finish_reason": "ERROR"}}).to_string().as_bytes(),
    )
}
