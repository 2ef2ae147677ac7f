//! The fake speaking OpenAI's legacy completions: `POST /v1/completions`, plain and streamed, one choice
//! per prompt (indexed `prompt * n`), usage as OpenAI reports it.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use serde_json::{Value, json};

use super::{DONE_FRAME, Dialect, FakeState, Reply, data_frame, intake, json_response, stream_frames};
use crate::protocols::completions::{CompletionRequest, to_chat};

pub(super) async fn completions(State(state): State<Arc<FakeState>>, headers: HeaderMap, body: Bytes) -> Response {
    let raw: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(_) => return Dialect::OpenAi.error_response(400, None, None, "the body is not JSON"),
    };
    let req: CompletionRequest = match serde_json::from_value(raw.clone()) {
        Ok(r) => r,
        Err(e) => return Dialect::OpenAi.error_response(400, None, None, &format!("invalid request: {e}")),
    };
    let Some(prompts) = req.prompt.as_ref().and_then(|p| p.texts()) else {
        return Dialect::OpenAi.error_response(400, None, None, "'prompt' must be text");
    };
    let fault = match intake(&state, Dialect::OpenAi, headers, &raw, &req.model).await {
        Ok(f) => f,
        Err(resp) => return resp,
    };
    let n = req.n.unwrap_or(1);
    let id = state.next_id("cmpl-fake");
    let replies: Vec<Reply> =
        prompts.iter().map(|p| Reply::for_chat(&to_chat(&req, p), &state.settings, &id)).collect();
    let created = replies.first().map_or(0, |r| r.created);
    let chunk = |choices: Value| json!({"id": id, "object": "text_completion", "created": created, "model": req.model, "choices": choices});
    let usage = |replies: &[Reply]| {
        let (p, c) = replies.iter().fold((0, 0), |(p, c), r| (p + r.prompt_tokens, c + r.completion_tokens));
        json!({"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c})
    };
    if req.is_streaming() {
        let mut frames = Vec::new();
        for (i, reply) in replies.iter().enumerate() {
            let index = i as u32 * n;
            for token in &reply.tokens {
                let c = chunk(json!([{"text": token, "index": index, "logprobs": null, "finish_reason": null}]));
                frames.push(data_frame(c.to_string().as_bytes()));
            }
            let last =
                chunk(json!([{"text": "", "index": index, "logprobs": null, "finish_reason": reply.finish_reason}]));
            frames.push(data_frame(last.to_string().as_bytes()));
        }
        if req.wants_stream_usage() {
            let mut c = chunk(json!([]));
            c["usage"] = usage(&replies);
            frames.push(data_frame(c.to_string().as_bytes()));
        }
        frames.push(Bytes::from_static(DONE_FRAME));
        return stream_frames(state.clone(), frames, Dialect::OpenAi, fault);
    }
    tokio::time::sleep(std::time::Duration::from_millis(state.settings.latency_ms)).await;
    let choices: Vec<Value> = replies
        .iter()
        .enumerate()
        .map(|(i, r)| json!({"text": r.tokens.concat(), "index": i as u32 * n, "logprobs": null, "finish_reason": r.finish_reason}))
        .collect();
    let mut body = chunk(Value::Array(choices));
    body["usage"] = usage(&replies);
    json_response(&body)
}
