//! OpenAI's media endpoints beyond chat, through the router like every other door (plans, limits,
//! fallbacks between models that declare the work, one ledger row):
//!
//! - `POST /v1/images/generations`: the caller's JSON passed on with `model` set to the upstream id;
//!   the answer (URLs or base64 images) relayed as it came. gpt-image models report token usage, which
//!   the row carries and the catalog prices; dall-e models report none, so their cost is unknown (per
//!   image prices are not turned into a guess).
//! - `POST /v1/audio/speech`: the audio streamed back piece by piece as the provider sends it, with the
//!   provider's `content-type` (`audio/mpeg`, `audio/wav`, …, or `text/event-stream` for
//!   `stream_format: "sse"`), committed only once its first piece arrived (until then a failure falls
//!   back). Speech reports no usage; the row records the request.
//!
//! - `POST /v1/audio/transcriptions`, `/v1/audio/translations` and `/v1/images/edits`: multipart
//!   uploads, spooled by `http::upload` and sent again to each target with its upstream id as `model`.
//!   A JSON answer is read whole (so a failure falls back) and its token usage, when it reports one, is
//!   the row's; any other answer (`text`, `srt`, `vtt`, a `stream` of events) is relayed as it arrives,
//!   committed once its first piece came.
//!
//! Each uses one of the key's prompts; an image request holds its budget for each of its `n` images.
//!
//! Bad input is refused before any provider is asked, naming the field.

use std::sync::Arc;

use axum::Extension;
use axum::body::Body;
use axum::extract::State;
use axum::response::Response;
use bytes::Bytes;
use http::HeaderMap;
use serde_json::{Map, Value};
use tokio::time::Instant;

use super::observe::RequestId;
use super::pipeline::{Call, Intake, Pipeline};
use super::{GatewayError, body};
use crate::app::AppState;
use crate::config::Capability;
use crate::providers::{ErrorKind, ProviderError, exec};
use crate::routing::{ModelEntry, RequestFeatures};
use crate::schema::Usage;
use crate::tenancy::ActiveKey;

/// OpenAI's default image model when a request names none, and the one its gpt-image-only fields imply.
const DEFAULT_IMAGE_MODEL: &str = "dall-e-2";
const GPT_IMAGE_MODEL: &str = "gpt-image-1";
/// The largest JSON answer to an upload read whole (edited images come back as base64).
const MAX_UPLOAD_ANSWER: usize = 64 * 1024 * 1024;
/// The longest text OpenAI's speech endpoint takes, in characters.
const MAX_SPEECH_INPUT: usize = 4096;

fn string_field<'a>(req: &'a Map<String, Value>, field: &str) -> Result<Option<&'a str>, GatewayError> {
    match req.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(GatewayError::invalid_value(format!("'{field}' must be a string."), field)),
    }
}

fn required<'a>(req: &'a Map<String, Value>, field: &str) -> Result<&'a str, GatewayError> {
    match string_field(req, field)? {
        Some(s) if !s.trim().is_empty() => Ok(s),
        _ => Err(GatewayError::invalid_value(format!("'{field}' is required and must not be empty."), field)),
    }
}

/// The caller's body with `model` set to the target's upstream id.
fn with_model(req: &Map<String, Value>, target: &ModelEntry) -> Result<Bytes, ProviderError> {
    let mut body = req.clone();
    body.insert("model".to_owned(), Value::String(target.upstream.clone()));
    crate::protocols::encode(&body)
}

pub async fn create_image(
    State(state): State<Arc<AppState>>,
    Extension(request_id): Extension<RequestId>,
    key: Option<Extension<Arc<ActiveKey>>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, GatewayError> {
    let started = Instant::now();
    let req: Map<String, Value> = body::read_json(&headers, body, state.live().body_limits).await?;
    let prompt = required(&req, "prompt")?;
    // As OpenAI does: dall-e-2 unless a field only gpt-image takes says otherwise.
    let gpt_image_fields = ["background", "output_format", "output_compression", "moderation", "partial_images"];
    let default =
        if gpt_image_fields.iter().any(|f| req.contains_key(*f)) { GPT_IMAGE_MODEL } else { DEFAULT_IMAGE_MODEL };
    let model = string_field(&req, "model")?.unwrap_or(default).to_owned();
    let n = match req.get("n") {
        None | Some(Value::Null) => 1,
        Some(n) if n.as_u64().is_some_and(|n| (1..=10).contains(&n)) => n.as_u64().unwrap_or(1) as u32,
        Some(_) => return Err(GatewayError::invalid_value("'n' must be an integer from 1 to 10.", "n")),
    };
    if req.get("stream").and_then(Value::as_bool) == Some(true) {
        return Err(GatewayError::invalid_value(
            "Streamed image generation is not supported; leave 'stream' out.",
            "stream",
        ));
    }
    let pipeline = {
        let features = RequestFeatures::for_work(vec![prompt], Capability::ImageGeneration);
        // A prompt of the key's quota, and each of the `n` images held at the worst case.
        let intake =
            Intake { prompts: 1, choices: n, ..Intake::uncounted(&model, &features, started, "image_generation") };
        Pipeline::admit(&state, &request_id, key.as_deref(), &headers, intake).await?
    };
    let mut served = pipeline.run(&mut Generate(&req)).await?;
    // gpt-image models count tokens (text in, image out); dall-e models do not.
    if let Some(u) = served.value.get("usage").filter(|u| u.is_object()) {
        served.usage.provider_usage(&token_usage(u));
    }
    let body = served.value.to_string().into_bytes();
    Ok(served.json(body))
}

/// An image generation from one target, relayed as the provider wrote it.
struct Generate<'r>(&'r Map<String, Value>);

impl Call for Generate<'_> {
    type Output = Value;

    async fn call(&mut self, target: &ModelEntry, deadline: Instant) -> Result<Value, ProviderError> {
        let body = with_model(self.0, target)?;
        let adapter = target.provider.adapter();
        let answer = exec::call(
            &target.provider,
            &target.timeouts,
            |ep| adapter.media_request("images/generations", body, ep),
            deadline,
        )
        .await?;
        let value: Value = serde_json::from_slice(&answer).map_err(|e| {
            ProviderError::new(ErrorKind::InvalidResponse, format!("the provider's answer is not an image result: {e}"))
        })?;
        if !value.get("data").is_some_and(Value::is_array) {
            return Err(ProviderError::new(ErrorKind::InvalidResponse, "the provider's image result has no data"));
        }
        Ok(value)
    }
}

pub async fn create_speech(
    State(state): State<Arc<AppState>>,
    Extension(request_id): Extension<RequestId>,
    key: Option<Extension<Arc<ActiveKey>>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, GatewayError> {
    let started = Instant::now();
    let req: Map<String, Value> = body::read_json(&headers, body, state.live().body_limits).await?;
    let model = required(&req, "model")?.to_owned();
    let input = required(&req, "input")?;
    if input.chars().count() > MAX_SPEECH_INPUT {
        return Err(GatewayError::invalid_value(
            format!("'input' is longer than {MAX_SPEECH_INPUT} characters."),
            "input",
        ));
    }
    required(&req, "voice").or_else(|e| match req.get("voice") {
        // Custom voices are objects (`{"id": …}`).
        Some(Value::Object(_)) => Ok(""),
        _ => Err(e),
    })?;
    if let Some(speed) = req.get("speed").filter(|v| !v.is_null())
        && !speed.as_f64().is_some_and(|s| (0.25..=4.0).contains(&s))
    {
        return Err(GatewayError::invalid_value("'speed' must be a number from 0.25 to 4.0.", "speed"));
    }
    let pipeline = {
        let features = RequestFeatures::for_work(vec![input], Capability::Speech);
        let intake = Intake { prompts: 1, ..Intake::uncounted(&model, &features, started, "speech") };
        Pipeline::admit(&state, &request_id, key.as_deref(), &headers, intake).await?
    };
    let served = pipeline.run(&mut Speak(&req)).await?;
    Ok(served.relay_raw())
}

/// Speech from one target: its audio, opened once the provider answered 2xx.
struct Speak<'r>(&'r Map<String, Value>);

impl Call for Speak<'_> {
    type Output = exec::RawStream;

    async fn call(&mut self, target: &ModelEntry, deadline: Instant) -> Result<exec::RawStream, ProviderError> {
        let body = with_model(self.0, target)?;
        let adapter = target.provider.adapter();
        let mut audio = exec::open_raw(
            &target.provider,
            &target.timeouts,
            |ep| adapter.media_request("audio/speech", body, ep),
            deadline,
        )
        .await?;
        // Nothing is committed to the caller before the first piece: a provider that answers 200 and then
        // stalls, breaks or sends nothing fails this attempt, and the next target may answer.
        audio.prime().await?;
        Ok(audio)
    }
}

/// One of the multipart doors: where it goes upstream and what it needs.
struct UploadDoor {
    path: &'static str,
    work: Capability,
    operation: &'static str,
    /// The field the file comes in (`file`, or `image` / `image[]` for edits).
    file: &'static str,
    /// The model when the caller names none (OpenAI's own default), if there is one.
    default_model: Option<&'static str>,
    /// Whether `prompt` is required.
    needs_prompt: bool,
}

const TRANSCRIPTION: UploadDoor = UploadDoor {
    path: "audio/transcriptions",
    work: Capability::Transcription,
    operation: "transcription",
    file: "file",
    default_model: None,
    needs_prompt: false,
};

const TRANSLATION: UploadDoor = UploadDoor { path: "audio/translations", operation: "translation", ..TRANSCRIPTION };

const IMAGE_EDIT: UploadDoor = UploadDoor {
    path: "images/edits",
    work: Capability::ImageGeneration,
    operation: "image_edit",
    file: "image",
    default_model: Some(DEFAULT_IMAGE_MODEL),
    needs_prompt: true,
};

pub async fn create_transcription(
    State(state): State<Arc<AppState>>,
    Extension(request_id): Extension<RequestId>,
    key: Option<Extension<Arc<ActiveKey>>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, GatewayError> {
    upload_door(&state, &request_id, key.as_deref(), &headers, body, &TRANSCRIPTION).await
}

pub async fn create_translation(
    State(state): State<Arc<AppState>>,
    Extension(request_id): Extension<RequestId>,
    key: Option<Extension<Arc<ActiveKey>>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, GatewayError> {
    upload_door(&state, &request_id, key.as_deref(), &headers, body, &TRANSLATION).await
}

pub async fn edit_image(
    State(state): State<Arc<AppState>>,
    Extension(request_id): Extension<RequestId>,
    key: Option<Extension<Arc<ActiveKey>>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, GatewayError> {
    upload_door(&state, &request_id, key.as_deref(), &headers, body, &IMAGE_EDIT).await
}

async fn upload_door(
    state: &AppState,
    request_id: &RequestId,
    key: Option<&Arc<ActiveKey>>,
    headers: &HeaderMap,
    body: Body,
    door: &UploadDoor,
) -> Result<Response, GatewayError> {
    let started = Instant::now();
    let upload = super::upload::read(headers, body, super::upload::Limits::of(state)).await?;
    if !upload.has_file(door.file) {
        return Err(GatewayError::invalid_value(format!("'{}' is required: the file to send.", door.file), door.file));
    }
    let model = match upload.text("model").filter(|m| !m.trim().is_empty()) {
        Some(m) => m.to_owned(),
        None => door
            .default_model
            .ok_or_else(|| GatewayError::invalid_value("'model' is required and must not be empty.", "model"))?
            .to_owned(),
    };
    let prompt = upload.text("prompt").unwrap_or_default();
    if door.needs_prompt && prompt.trim().is_empty() {
        return Err(GatewayError::invalid_value("'prompt' is required and must not be empty.", "prompt"));
    }
    let n = match upload.text("n") {
        None => 1,
        Some(n) => n
            .trim()
            .parse::<u32>()
            .ok()
            .filter(|n| (1..=10).contains(n))
            .ok_or_else(|| GatewayError::invalid_value("'n' must be an integer from 1 to 10.", "n"))?,
    };
    let pipeline = {
        let features = RequestFeatures::for_work(vec![prompt], door.work);
        let intake = Intake { prompts: 1, choices: n, ..Intake::uncounted(&model, &features, started, door.operation) };
        Pipeline::admit(state, request_id, key, headers, intake).await?
    };
    let served = pipeline.run(&mut Forward { upload: &upload, path: door.path }).await?;
    match served.replace(()) {
        (Answer::Whole { content_type, body }, mut served) => {
            // Whisper's `{"type": "duration"}` reports nothing to bill by tokens.
            let answer = serde_json::from_slice::<Value>(&body).unwrap_or_default();
            match answer.get("usage").filter(|u| u.get("input_tokens").is_some()) {
                Some(u) => served.usage.provider_usage(&token_usage(u)),
                None => served.usage.cost_unknown(),
            }
            let mut response = served.json(body.to_vec());
            response.headers_mut().insert(http::header::CONTENT_TYPE, content_type);
            Ok(response)
        }
        (Answer::Raw(raw), served) => {
            let (_, mut served) = served.replace(raw);
            served.usage.cost_unknown();
            Ok(served.relay_raw())
        }
    }
}

/// The token counts of a `usage` object as OpenAI's image and transcription answers write it
/// (`input_tokens`, `output_tokens`).
fn token_usage(u: &Value) -> Usage {
    let count = |f: &str| u.get(f).and_then(Value::as_u64).unwrap_or(0);
    let (input, output) = (count("input_tokens"), count("output_tokens"));
    Usage { prompt_tokens: input, completion_tokens: output, total_tokens: input + output, ..Usage::default() }
}

/// An upload's answer: JSON read whole, anything else as it arrives.
enum Answer {
    Whole { content_type: http::HeaderValue, body: Bytes },
    Raw(exec::RawStream),
}

/// The upload sent to one target, from the spool, with its upstream id as `model`.
struct Forward<'u> {
    upload: &'u super::upload::Upload,
    path: &'static str,
}

impl Call for Forward<'_> {
    type Output = Answer;

    async fn call(&mut self, target: &ModelEntry, deadline: Instant) -> Result<Answer, ProviderError> {
        let (content_type, body) = self.upload.body(Some(&target.upstream)).map_err(|e| {
            tracing::error!(error = %e, "a spooled upload could not be read back");
            ProviderError::new(ErrorKind::ServerError, "the upload could not be read back")
        })?;
        let adapter = target.provider.adapter();
        let mut raw = exec::forward(
            &target.provider,
            &target.timeouts,
            |ep| adapter.forward_request(http::Method::POST, self.path, Some(content_type), body, ep),
            deadline,
        )
        .await?;
        if raw.is_json() {
            let content_type =
                raw.content_type.clone().unwrap_or_else(|| http::HeaderValue::from_static("application/json"));
            return Ok(Answer::Whole { content_type, body: raw.read_all(MAX_UPLOAD_ANSWER).await? });
        }
        raw.prime().await?;
        Ok(Answer::Raw(raw))
    }
}
