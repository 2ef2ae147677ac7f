//! The fake speaking OpenAI's Responses API: `POST /v1/responses`, plain and streamed, with function
//! and custom tool calls. Like the other protocol fakes it reads requests with the protocol's wire types
//! and translation and answers through the Responses door's own encoders. It stores nothing: an
//! `item_reference` or `previous_response_id` reaching it is refused, as a provider that never saw the
//! gateway's ids would.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use serde_json::{Value, json};

use super::{Dialect, FakeState, Reply, intake, json_response_bytes, stream_frames};
use crate::protocols::StreamEncoder as _;
use crate::protocols::responses::inbound::{ResponsesStream, envelope, from_chat, to_chat};
use crate::protocols::responses::wire::{Content, Input, Item, ResponsesRequest};

pub(super) async fn responses(State(state): State<Arc<FakeState>>, headers: HeaderMap, body: Bytes) -> Response {
    let raw: serde_json::Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(_) => return Dialect::OpenAi.error_response(400, None, None, "the body is not JSON"),
    };
    let req: ResponsesRequest = match serde_json::from_value(raw.clone()) {
        Ok(r) => r,
        Err(e) => return Dialect::OpenAi.error_response(400, None, None, &format!("invalid request: {e}")),
    };
    if let Some(previous) = &req.previous_response_id {
        return Dialect::OpenAi.error_response(
            400,
            None,
            Some("previous_response_not_found"),
            &format!("Previous response with id '{previous}' not found."),
        );
    }
    let items = match req.input.clone() {
        Some(Input::Items(items)) => items,
        Some(Input::Text(text)) => {
            vec![Item { role: Some("user".into()), content: Some(Content::Text(text)), ..Item::default() }]
        }
        None => return Dialect::OpenAi.error_response(400, None, None, "'input' is required"),
    };
    let translated = to_chat(&req, [], &items);
    if let Some(problem) = translated.problem {
        return Dialect::OpenAi.error_response(400, None, None, &problem.message);
    }
    let fault = match intake(&state, Dialect::Responses, headers, &raw, &req.model).await {
        Ok(f) => f,
        Err(resp) => return resp,
    };
    let reply = Reply::for_chat(&translated.chat, &state.settings, &state.next_id("resp_fake"));
    let start = envelope(&req, &reply.id, reply.created, &req.model);
    // Like OpenAI with `store: false`, reasoning is handed back encrypted when asked for, to be sent back.
    let encrypted = req.includes("reasoning.encrypted_content").then(|| format!("enc:{}", state.settings.latency_ms));
    if req.is_streaming() {
        let mut encoder = ResponsesStream::new(start, translated.custom_tools, Box::new(|_| {}));
        let mut frames = Vec::new();
        for chunk in reply.chunks(&req.model, true) {
            if let Ok(chunk) = serde_json::from_value::<crate::schema::ChatChunk>(chunk) {
                encoder.chunk(&chunk, &mut frames);
            }
        }
        encoder.done(&mut frames);
        if let Some(sealed) = &encrypted {
            frames = frames.into_iter().map(|f| seal_frame(f, sealed)).collect();
        }
        return stream_frames(state.clone(), frames, Dialect::Responses, fault);
    }
    tokio::time::sleep(std::time::Duration::from_millis(state.settings.latency_ms)).await;
    match reply.response(&req.model) {
        Ok(resp) => {
            let mut object =
                serde_json::to_value(from_chat(&resp, start, &translated.custom_tools)).unwrap_or_default();
            if let Some(sealed) = &encrypted {
                seal(&mut object, sealed);
            }
            json_response_bytes(serde_json::to_vec(&object).unwrap_or_default())
        }
        Err(e) => Dialect::OpenAi.error_response(500, None, None, &e.to_string()),
    }
}

/// Puts `sealed` as the encrypted content of every reasoning item in a response, an item or an event.
fn seal(value: &mut Value, sealed: &str) {
    let mut seal_item = |item: &mut Value| {
        if item.get("type").and_then(Value::as_str) == Some("reasoning") {
            item["encrypted_content"] = json!(sealed);
        }
    };
    if let Some(items) = value.get_mut("output").and_then(Value::as_array_mut) {
        items.iter_mut().for_each(&mut seal_item);
    }
    for key in ["item", "response"] {
        if let Some(inner) = value.get_mut(key) {
            if key == "response" {
                seal(inner, sealed);
            } else {
                seal_item(inner);
            }
        }
    }
}

fn seal_frame(frame: Bytes, sealed: &str) -> Bytes {
    let text = String::from_utf8_lossy(&frame);
    let Some((head, data)) = text.split_once("\ndata: ") else { return frame };
    let Ok(mut value) = serde_json::from_str::<Value>(data.trim_end()) else { return frame };
    seal(&mut value, sealed);
    Bytes::from(format!("{head}\ndata: {value}\n\n"))
}
