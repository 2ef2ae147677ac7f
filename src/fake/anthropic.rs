//! The fake speaking Anthropic's Messages API: `POST /v1/messages`, plain and streamed, with tool use.
//!
//! It reads requests with the protocol's own wire types and door translation, and writes answers with the
//! Messages door's encoder: the fake model answers in OpenAI's shapes and the protocol code renders them,
//! so the fake speaks exactly the Anthropic that the gateway's own door speaks to the Anthropic SDKs.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;

use super::{Dialect, FakeState, Reply, intake, json_response_bytes, stream_frames};
use crate::protocols::Dialect as _;
use crate::protocols::anthropic::inbound::{Messages, to_chat};
use crate::protocols::anthropic::wire::MessagesRequest;

pub(super) async fn messages(State(state): State<Arc<FakeState>>, headers: HeaderMap, body: Bytes) -> Response {
    let wire: MessagesRequest = match serde_json::from_slice(&body) {
        Ok(w) => w,
        Err(e) => return Dialect::Anthropic.error_response(400, None, None, &format!("invalid request: {e}")),
    };
    let raw: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    let model = wire.model.clone();
    let streamed = wire.stream == Some(true);
    // Blocks a chat model would not take (documents, server tools) the fake model simply ignores.
    let chat = match to_chat(&wire) {
        Ok(t) => t.chat,
        Err(e) => return Dialect::Anthropic.error_response(400, None, None, &e.message),
    };
    let fault = match intake(&state, Dialect::Anthropic, headers, &raw, &model).await {
        Ok(f) => f,
        Err(resp) => return resp,
    };
    let reply = Reply::for_chat(&chat, &state.settings, &state.next_id("msg_fake"));
    let door = Messages { model: model.clone() };
    if streamed {
        return stream_frames(state.clone(), reply.frames(&door, &model), Dialect::Anthropic, fault);
    }
    tokio::time::sleep(std::time::Duration::from_millis(state.settings.latency_ms)).await;
    match reply.response(&model) {
        Ok(resp) => json_response_bytes(door.whole(&resp)),
        Err(e) => Dialect::Anthropic.error_response(500, None, None, &e.to_string()),
    }
}
