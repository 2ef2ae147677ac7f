//! The fake's OpenAI media endpoints: `POST /v1/images/generations` (a tiny PNG per image, as base64 or
//! a URL; gpt-image models report token usage as OpenAI's do) and `POST /v1/audio/speech` (deterministic
//! "audio" bytes made from the input, streamed in pieces at the configured pace).

use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use serde_json::{Value, json};

use super::{Dialect, FakeState, intake, json_response, parse_json};

/// A 1×1 transparent PNG.
pub const PNG: &[u8] = &[
    0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0x00, 0x00, 0x00, 0x0d, 0x49, 0x48, 0x44, 0x52, 0x00, 0x00, 0x00,
    0x01, 0x00, 0x00, 0x00, 0x01, 0x08, 0x06, 0x00, 0x00, 0x00, 0x1f, 0x15, 0xc4, 0x89, 0x00, 0x00, 0x00, 0x0d, 0x49,
    0x44, 0x41, 0x54, 0x78, 0x9c, 0x63, 0x00, 0x01, 0x00, 0x00, 0x05, 0x00, 0x01, 0x0d, 0x0a, 0x2d, 0xb4, 0x00, 0x00,
    0x00, 0x00, 0x49, 0x45, 0x4e, 0x44, 0xae, 0x42, 0x60, 0x82,
];

pub(super) async fn images(State(state): State<Arc<FakeState>>, headers: HeaderMap, body: Bytes) -> Response {
    let body = match parse_json(Dialect::OpenAi, &body) {
        Ok(b) => b,
        Err(resp) => return resp,
    };
    let model = body.get("model").and_then(Value::as_str).unwrap_or("dall-e-2").to_owned();
    if let Err(resp) = intake(&state, Dialect::OpenAi, headers, &body, &model).await {
        return resp;
    }
    let prompt = body.get("prompt").and_then(Value::as_str).unwrap_or_default();
    let n = body.get("n").and_then(Value::as_u64).unwrap_or(1).clamp(1, 10);
    let gpt_image = model.starts_with("gpt-image");
    // gpt-image models always answer base64; dall-e ones a URL unless asked for base64.
    let as_b64 = gpt_image || body.get("response_format").and_then(Value::as_str) == Some("b64_json");
    let data: Vec<Value> = (0..n)
        .map(|i| {
            let mut image = if as_b64 {
                json!({"b64_json": base64::engine::general_purpose::STANDARD.encode(PNG)})
            } else {
                json!({"url": format!("https://images.fake.invalid/{}-{i}.png", state.next_id("img"))})
            };
            if model == "dall-e-3" {
                image["revised_prompt"] = json!(format!("A picture of {prompt}"));
            }
            image
        })
        .collect();
    let mut answer = json!({"created": crate::protocols::unix_now(), "data": data});
    if gpt_image {
        let input = prompt.len().div_ceil(4) as u64;
        let output = 272 * n;
        answer["usage"] = json!({"input_tokens": input, "output_tokens": output, "total_tokens": input + output,
            "input_tokens_details": {"text_tokens": input, "image_tokens": 0}});
    }
    json_response(&answer)
}

/// The fake's audio for a text: a fixed header, then bytes derived from the text, long in proportion.
pub fn audio_for(text: &str) -> Vec<u8> {
    let mut out = b"ID3\x04\x00\x00\x00\x00\x00\x00".to_vec();
    for (i, b) in text.bytes().cycle().take(text.len().max(1) * 40).enumerate() {
        out.push(b.wrapping_mul(31).wrapping_add(i as u8));
    }
    out
}

pub(super) async fn speech(State(state): State<Arc<FakeState>>, headers: HeaderMap, body: Bytes) -> Response {
    let body = match parse_json(Dialect::OpenAi, &body) {
        Ok(b) => b,
        Err(resp) => return resp,
    };
    let model = body.get("model").and_then(Value::as_str).unwrap_or("tts-1").to_owned();
    let fault = match intake(&state, Dialect::OpenAi, headers, &body, &model).await {
        Ok(f) => f,
        Err(resp) => return resp,
    };
    let input = body.get("input").and_then(Value::as_str).unwrap_or_default().to_owned();
    let content_type = match body.get("response_format").and_then(Value::as_str).unwrap_or("mp3") {
        "opus" => "audio/ogg",
        "aac" => "audio/aac",
        "flac" => "audio/flac",
        "wav" => "audio/wav",
        "pcm" => "audio/pcm",
        _ => "audio/mpeg",
    };
    let audio = audio_for(&input);
    let latency = Duration::from_millis(state.settings.latency_ms);
    let cut_after = match fault {
        Some(super::Fault::CutMidStream { after_chunks }) => Some(after_chunks),
        _ => None,
    };
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(4);
    tokio::spawn(async move {
        tokio::time::sleep(latency).await;
        for (i, piece) in audio.chunks(1024).enumerate() {
            if cut_after == Some(i) {
                tokio::time::sleep(Duration::from_millis(50)).await;
                let _ = tx.send(Err(std::io::Error::other("fake upstream cut the audio"))).await;
                return;
            }
            if tx.send(Ok(Bytes::copy_from_slice(piece))).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    });
    let body = futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|item| (item, rx)) });
    Response::builder()
        .header(header::CONTENT_TYPE, content_type)
        .body(Body::from_stream(body))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}
