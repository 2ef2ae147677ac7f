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

/// A multipart body read whole (the fake may hold it): text fields as strings, files as
/// `{"filename", "content_type", "bytes", "sum"}` (`sum`: the bytes added up, so a test can tell the file
/// arrived intact), in one JSON object recorded like any request.
async fn read_form(headers: &HeaderMap, body: Body) -> Result<Value, Response> {
    let bad = |m: String| Dialect::OpenAi.error_response(400, None, None, &m);
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default();
    let boundary = multer::parse_boundary(content_type).map_err(|e| bad(format!("not multipart: {e}")))?;
    let mut form = multer::Multipart::new(body.into_data_stream(), boundary);
    let mut fields = serde_json::Map::new();
    while let Some(field) = form.next_field().await.map_err(|e| bad(format!("unreadable multipart: {e}")))? {
        let name = field.name().unwrap_or_default().to_owned();
        let filename = field.file_name().map(str::to_owned);
        let content_type = field.content_type().map(ToString::to_string);
        let data = field.bytes().await.map_err(|e| bad(format!("unreadable field {name}: {e}")))?;
        let value = match filename {
            Some(filename) => json!({"filename": filename, "content_type": content_type, "bytes": data.len(),
                "sum": data.iter().map(|b| u64::from(*b)).sum::<u64>()}),
            None => json!(String::from_utf8_lossy(&data)),
        };
        if fields.contains_key(&name) {
            return Err(bad(format!("{name}: given twice")));
        }
        fields.insert(name, value);
    }
    Ok(Value::Object(fields))
}

/// `audio/transcriptions` and `audio/translations`: "heard" text naming the file's size, in the format
/// asked for; gpt-4o models report token usage, whisper the duration.
pub(super) async fn transcribe(State(state): State<Arc<FakeState>>, headers: HeaderMap, body: Body) -> Response {
    hear(state, headers, body, false).await
}

pub(super) async fn translate(State(state): State<Arc<FakeState>>, headers: HeaderMap, body: Body) -> Response {
    hear(state, headers, body, true).await
}

async fn hear(state: Arc<FakeState>, headers: HeaderMap, body: Body, translate: bool) -> Response {
    let form = match read_form(&headers, body).await {
        Ok(f) => f,
        Err(resp) => return resp,
    };
    let model = form["model"].as_str().unwrap_or_default().to_owned();
    if model.is_empty() || form["file"]["bytes"].as_u64().is_none() {
        return Dialect::OpenAi.error_response(400, None, None, "'file' and 'model' are required");
    }
    if let Err(resp) = intake(&state, Dialect::OpenAi, headers, &form, &model).await {
        return resp;
    }
    let bytes = form["file"]["bytes"].as_u64().unwrap_or(0);
    let verb = if translate { "Translated" } else { "Heard" };
    let text = format!("{verb} {bytes} bytes of {}.", form["file"]["filename"].as_str().unwrap_or("audio"));
    let usage = if model.starts_with("gpt-4o") {
        let output = text.split_whitespace().count() as u64;
        let input = bytes.div_ceil(1000);
        json!({"type": "tokens", "input_tokens": input, "output_tokens": output, "total_tokens": input + output,
               "input_token_details": {"text_tokens": 0, "audio_tokens": input}})
    } else {
        json!({"type": "duration", "seconds": bytes.div_ceil(16_000)})
    };
    let seconds = bytes as f64 / 16_000.0;
    match form["response_format"].as_str().unwrap_or("json") {
        "text" => ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], format!("{text}\n")).into_response(),
        "srt" => (
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            format!("1\n00:00:00,000 --> 00:00:01,000\n{text}\n\n"),
        )
            .into_response(),
        "vtt" => (
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            format!("WEBVTT\n\n00:00:00.000 --> 00:00:01.000\n{text}\n\n"),
        )
            .into_response(),
        "verbose_json" => json_response(&json!({"task": if translate { "translate" } else { "transcribe" },
            "language": "english", "duration": seconds, "text": text, "segments": [], "usage": usage})),
        _ => json_response(&json!({"text": text, "usage": usage})),
    }
}

/// `images/edits`: the images of `images/generations`, for an uploaded image and a prompt.
pub(super) async fn edit_images(State(state): State<Arc<FakeState>>, headers: HeaderMap, body: Body) -> Response {
    let form = match read_form(&headers, body).await {
        Ok(f) => f,
        Err(resp) => return resp,
    };
    if !(form["image"].is_object() || form["image[]"].is_object()) || form["prompt"].as_str().is_none() {
        return Dialect::OpenAi.error_response(400, None, None, "'image' and 'prompt' are required");
    }
    let model = form["model"].as_str().unwrap_or("dall-e-2").to_owned();
    if let Err(resp) = intake(&state, Dialect::OpenAi, headers, &form, &model).await {
        return resp;
    }
    let n = form["n"].as_str().and_then(|n| n.parse::<u64>().ok()).unwrap_or(1).clamp(1, 10);
    let data: Vec<Value> =
        (0..n).map(|_| json!({"b64_json": base64::engine::general_purpose::STANDARD.encode(PNG)})).collect();
    let mut answer = json!({"created": crate::protocols::unix_now(), "data": data});
    if model.starts_with("gpt-image") {
        let input = form["prompt"].as_str().unwrap_or_default().len().div_ceil(4) as u64 + 194;
        let output = 272 * n;
        answer["usage"] = json!({"input_tokens": input, "output_tokens": output, "total_tokens": input + output});
    }
    json_response(&answer)
}
