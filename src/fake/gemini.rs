//! The fake speaking the Gemini API: `models/{model}:generateContent`, `:streamGenerateContent?alt=sse`
//! and `:batchEmbedContents`.
//!
//! Like the Anthropic fake, it reads requests with the protocol's wire types and door translation and
//! writes answers with the Gemini door's encoder, so it speaks exactly the Gemini the gateway's door does.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::Response;

use super::{Dialect, FakeState, Reply, fake_vector, intake, json_response_bytes, stream_frames};
use crate::protocols::Dialect as _;
use crate::protocols::gemini::inbound::{Framing, Gemini, to_chat};
use crate::protocols::gemini::wire::{BatchEmbedRequest, BatchEmbedResponse, EmbeddingValues, GenerateRequest};

pub(super) async fn dispatch(
    State(state): State<Arc<FakeState>>,
    Path(model_action): Path<String>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let query = uri.query().unwrap_or_default().to_owned();
    // axum cannot route `{model}:action`; split on the last colon instead.
    let Some((model, action)) = model_action.rsplit_once(':') else {
        return Dialect::Gemini.error_response(404, None, None, "unknown method");
    };
    let raw: serde_json::Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(_) => return Dialect::Gemini.error_response(400, None, None, "the body is not JSON"),
    };
    let fault = match intake(&state, Dialect::Gemini, headers, &raw, model).await {
        Ok(f) => f,
        Err(resp) => return resp,
    };
    match action {
        "generateContent" | "streamGenerateContent" => {
            let streamed = action == "streamGenerateContent";
            let chat = match serde_json::from_value::<GenerateRequest>(raw)
                .map_err(|e| e.to_string())
                .and_then(|wire| to_chat(model.to_owned(), streamed, wire).map_err(|e| e.message))
                .map(|t| t.chat)
            {
                Ok(chat) => chat,
                Err(why) => return Dialect::Gemini.error_response(400, None, None, &why),
            };
            let reply = Reply::for_chat(&chat, &state.settings, &state.next_id("fake"));
            let framing = if query.contains("alt=sse") { Framing::Sse } else { Framing::JsonArray };
            let door = Gemini { model: model.to_owned(), framing };
            if streamed {
                return stream_frames(state.clone(), reply.frames(&door, model), Dialect::Gemini, fault);
            }
            tokio::time::sleep(std::time::Duration::from_millis(state.settings.latency_ms)).await;
            match reply.response(model) {
                Ok(resp) => json_response_bytes(door.whole(&resp)),
                Err(e) => Dialect::Gemini.error_response(500, None, None, &e.to_string()),
            }
        }
        "batchEmbedContents" => {
            let batch: BatchEmbedRequest = match serde_json::from_value(raw) {
                Ok(b) => b,
                Err(e) => return Dialect::Gemini.error_response(400, None, None, &e.to_string()),
            };
            let embeddings = batch
                .requests
                .iter()
                .map(|r| {
                    let text = r.content.parts.first().and_then(|p| p.text.as_deref()).unwrap_or_default();
                    let dims = r.output_dimensionality.unwrap_or(8) as usize;
                    EmbeddingValues { values: fake_vector(text, dims).into_iter().map(f64::from).collect() }
                })
                .collect();
            json_response_bytes(serde_json::to_vec(&BatchEmbedResponse { embeddings }).unwrap_or_default())
        }
        _ => Dialect::Gemini.error_response(404, None, None, "unknown method"),
    }
}
