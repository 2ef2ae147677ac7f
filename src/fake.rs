//! The fake model provider: an HTTP server that speaks the OpenAI chat-completions wire format.
//!
//! It answers deterministically (the same request always gets the same text, tool calls and usage),
//! streams like a real model (headers at once, first token after `latency_ms`, then `tokens_per_second`),
//! and reports usage the way OpenAI does. Tests, benchmarks and the built-in `fake` provider kind all use
//! this one implementation: tests and benchmarks over a socket, the `fake` kind in process.
//! Faults (error statuses, stalls, cut streams) are scripted through [`FakeState::push_fault`], never by
//! anything a request says, so a caller of the built-in provider cannot trigger them. A standalone
//! `switchyard fake-upstream --control` also takes them over HTTP ([`control_router`]), for scripts
//! driving a gateway from outside (the SDK checks).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::serve::ListenerExt;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::config::FakeSettings;
use crate::protocols::ErrorReply;
use crate::sse::{DONE_FRAME, data_frame, named_frame};

mod anthropic;
pub mod bedrock;
mod cohere;
mod completions;
mod files;
mod gemini;
pub mod media;
mod responses;
pub mod vertex;

/// A scripted misbehaviour, applied to the next matching request and then used up.
#[derive(Debug, Clone)]
pub enum Fault {
    /// Answer with this status and an OpenAI-shaped error body.
    Status { status: u16, retry_after_secs: Option<u64>, code: Option<String>, message: String },
    /// Wait this long before sending any response headers.
    StallBeforeHeaders(Duration),
    /// Send `after_chunks` chunks of a stream, then go silent for `duration`.
    StallMidStream { after_chunks: usize, duration: Duration },
    /// Send `after_chunks` chunks of a stream, then break the connection.
    CutMidStream { after_chunks: usize },
    /// Send `after_chunks` chunks, then an in-band `data: {"error": …}` event, then end.
    ErrorMidStream { after_chunks: usize },
}

impl Fault {
    pub fn status(status: u16) -> Self {
        Fault::Status { status, retry_after_secs: None, code: None, message: format!("fake upstream error {status}") }
    }
}

/// Counters a test can wait on.
#[derive(Debug, Default)]
pub struct FakeStats {
    pub requests: AtomicU64,
    pub streams_started: AtomicU64,
    pub streams_completed: AtomicU64,
    /// Streams whose reader went away before the end.
    pub streams_cancelled: AtomicU64,
    /// TCP connections accepted (when served on a socket).
    pub connections: AtomicU64,
    /// Access tokens the fake Vertex token endpoint issued, and requests it received.
    pub tokens_issued: AtomicU64,
    pub token_requests: AtomicU64,
}

/// What the fake received, for tests to inspect.
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    pub headers: HeaderMap,
    pub body: Value,
}

pub struct FakeState {
    settings: FakeSettings,
    faults: Mutex<VecDeque<(Option<String>, Fault)>>,
    requests: Mutex<VecDeque<RecordedRequest>>,
    next_id: AtomicU64,
    pub stats: FakeStats,
    /// The access tokens the token endpoint issued (the Vertex routes take only these).
    google_tokens: Mutex<std::collections::HashSet<String>>,
    /// How many token requests in a row are still to fail with 503 ([`FakeState::fail_token_requests`]).
    token_outage: std::sync::atomic::AtomicU32,
    /// Files and batches of the one account every caller shares.
    objects: files::Shared,
}

const RECORDED_REQUESTS: usize = 256;

impl FakeState {
    pub fn new(settings: FakeSettings) -> Self {
        Self {
            settings,
            faults: Mutex::default(),
            requests: Mutex::default(),
            next_id: AtomicU64::new(1),
            stats: FakeStats::default(),
            google_tokens: Mutex::default(),
            token_outage: std::sync::atomic::AtomicU32::new(0),
            objects: files::Shared::default(),
        }
    }

    /// Queues a fault for the next request for `model` (any model when `None`).
    pub fn push_fault(&self, model: Option<&str>, fault: Fault) {
        lock(&self.faults).push_back((model.map(str::to_owned), fault));
    }

    /// The next `n` requests to the Vertex token endpoint fail with 503.
    pub fn fail_token_requests(&self, n: u32) {
        self.token_outage.store(n, Ordering::Release);
    }

    /// Forgets every access token issued, as Google does when a key is disabled: requests carrying one
    /// are refused with 401.
    pub fn revoke_tokens(&self) {
        lock(&self.google_tokens).clear();
    }

    /// The most recent requests received, oldest first.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        lock(&self.requests).iter().cloned().collect()
    }

    pub(crate) fn next_id(&self, prefix: &str) -> String {
        format!("{prefix}-{}", self.next_id.fetch_add(1, Ordering::Relaxed))
    }

    fn take_fault(&self, model: &str) -> Option<Fault> {
        let mut faults = lock(&self.faults);
        let i = faults.iter().position(|(m, _)| m.as_deref().is_none_or(|m| m == model))?;
        faults.remove(i).map(|(_, f)| f)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

pub fn router(state: Arc<FakeState>) -> Router {
    Router::new()
        .route("/v1/chat/completions", post(chat_completions))
        // Azure OpenAI addresses deployments; the wire format is OpenAI's.
        .route("/openai/deployments/{deployment}/chat/completions", post(chat_completions))
        .route("/openai/deployments/{deployment}/embeddings", post(embeddings))
        .route("/v1/embeddings", post(embeddings))
        .route("/v1/moderations", post(moderations))
        .route("/v1/images/generations", post(media::images))
        .route("/v1/audio/speech", post(media::speech))
        .route("/v1/audio/transcriptions", post(media::transcribe))
        .route("/v1/audio/translations", post(media::translate))
        .route("/v1/images/edits", post(media::edit_images))
        .route("/v1/files", post(files::upload).get(files::list_files))
        .route("/v1/files/{id}", get(files::file).delete(files::delete))
        .route("/v1/files/{id}/content", get(files::content))
        .route("/v1/batches", post(files::create_batch))
        .route("/v1/batches/{id}", get(files::batch))
        .route("/v1/batches/{id}/cancel", post(files::cancel))
        .route("/v1/rerank", post(rerank_compatible))
        .route("/v2/rerank", post(rerank_cohere))
        .route("/v2/chat", post(cohere::chat))
        .route("/v2/embed", post(cohere::embed))
        .route("/v1/messages", post(anthropic::messages))
        .route("/v1/responses", post(responses::responses))
        .route("/v1/completions", post(completions::completions))
        .route("/openai/deployments/{deployment}/completions", post(completions::completions))
        .route("/openai/v1/responses", post(responses::responses))
        .route("/v1beta/models/{model_action}", post(gemini::dispatch))
        .route("/model/{model}/{action}", post(bedrock::dispatch))
        .route("/token", post(vertex::token))
        .route(
            "/v1/projects/{project}/locations/{location}/publishers/{publisher}/models/{model_action}",
            post(vertex::dispatch),
        )
        .route("/v1/models", get(list_models))
        .with_state(state)
}

/// `POST /fake/faults`: queues a fault, as [`FakeState::push_fault`] does, for a script outside the process.
/// The body names the upstream model id (`model`, any when left out) and one fault: `status` (with an
/// optional `retry_after_secs`), `cut_after_chunks`, `error_after_chunks`, or `stall_after_chunks` with
/// `stall_ms`. Only mounted by `fake-upstream --control`.
pub fn control_router(state: Arc<FakeState>) -> Router {
    Router::new().route("/fake/faults", post(push_fault_over_http)).with_state(state)
}

async fn push_fault_over_http(State(state): State<Arc<FakeState>>, body: Bytes) -> Response {
    let Ok(req) = serde_json::from_slice::<Value>(&body) else {
        return (StatusCode::BAD_REQUEST, "a JSON object").into_response();
    };
    let n = |field: &str| req.get(field).and_then(Value::as_u64);
    let fault = if let Some(status) = n("status").and_then(|s| u16::try_from(s).ok()) {
        Fault::Status {
            status,
            retry_after_secs: n("retry_after_secs"),
            code: None,
            message: format!("fake upstream error {status}"),
        }
    } else if let Some(after) = n("cut_after_chunks") {
        Fault::CutMidStream { after_chunks: after as usize }
    } else if let Some(after) = n("error_after_chunks") {
        Fault::ErrorMidStream { after_chunks: after as usize }
    } else if let Some(after) = n("stall_after_chunks") {
        Fault::StallMidStream {
            after_chunks: after as usize,
            duration: Duration::from_millis(n("stall_ms").unwrap_or(60_000)),
        }
    } else {
        return (StatusCode::BAD_REQUEST, "one of status, cut_after_chunks, error_after_chunks, stall_after_chunks")
            .into_response();
    };
    state.push_fault(req.get("model").and_then(Value::as_str), fault);
    StatusCode::NO_CONTENT.into_response()
}

/// Serves the fake on `listener` until the process ends (for `switchyard fake-upstream` and benchmarks).
pub async fn serve(listener: tokio::net::TcpListener, state: Arc<FakeState>) -> std::io::Result<()> {
    serve_router(listener, state.clone(), router(state)).await
}

/// Serves `app` (the fake's [`router`], perhaps with [`control_router`]) on `listener`.
pub async fn serve_router(
    listener: tokio::net::TcpListener,
    state: Arc<FakeState>,
    app: Router,
) -> std::io::Result<()> {
    // Without TCP_NODELAY, a stream's first event waits on Nagle's algorithm and the reader's delayed ACK.
    let counted = state.clone();
    let listener = listener.tap_io(move |tcp| {
        counted.stats.connections.fetch_add(1, Ordering::Relaxed);
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, app).await
}

async fn list_models() -> Response {
    axum::Json(
        json!({"object": "list", "data": [{"id": "fake", "object": "model", "created": 0, "owned_by": "switchyard"}]}),
    )
    .into_response()
}

/// The wire protocol a fake endpoint speaks, for its error shapes.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Dialect {
    OpenAi,
    /// OpenAI's Responses API: OpenAI's errors, `response.failed` inside a stream.
    Responses,
    Anthropic,
    Gemini,
    /// AWS Bedrock: `{"message"}` with the exception's name in `x-amzn-ErrorType`; event-stream frames.
    Bedrock,
    /// Cohere's v2: `{"message"}`.
    Cohere,
}

impl Dialect {
    /// An error response in this protocol's shape; `code` is the protocol's own error type when given
    /// (OpenAI's `code`, Anthropic's `type`, Google's `status`), else the one its status implies.
    fn error_response(self, status: u16, retry_after: Option<u64>, code: Option<&str>, message: &str) -> Response {
        use crate::protocols::{anthropic, gemini, openai};
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = match self {
            Dialect::OpenAi | Dialect::Responses => {
                let kind = if status.is_server_error() { "server_error" } else { "invalid_request_error" };
                let reply = ErrorReply { status: status.as_u16(), kind, code, param: None, message };
                openai::render_error(&reply)
            }
            Dialect::Anthropic => {
                let kind = code.unwrap_or(anthropic::errors::error_type(status.as_u16()));
                serde_json::to_vec(&anthropic::errors::body(kind, message)).unwrap_or_default()
            }
            Dialect::Gemini => {
                let name = code.unwrap_or(gemini::errors::status_name(status.as_u16()));
                serde_json::to_vec(&gemini::errors::body(status.as_u16(), name, message)).unwrap_or_default()
            }
            Dialect::Bedrock | Dialect::Cohere => serde_json::to_vec(&json!({"message": message})).unwrap_or_default(),
        };
        let mut resp = (status, [(header::CONTENT_TYPE, "application/json")], body).into_response();
        if let Dialect::Bedrock = self {
            let name = code.unwrap_or(match status.as_u16() {
                429 => "ThrottlingException",
                403 => "AccessDeniedException",
                404 => "ResourceNotFoundException",
                400..=499 => "ValidationException",
                503 => "ServiceUnavailableException",
                _ => "InternalServerException",
            });
            if let Ok(v) =
                header::HeaderValue::from_str(&format!("{name}:http://internal.amazon.com/coral/com.amazon.bedrock/"))
            {
                resp.headers_mut().insert("x-amzn-errortype", v);
            }
        }
        if let Some(secs) = retry_after {
            resp.headers_mut().insert(header::RETRY_AFTER, secs.into());
        }
        resp
    }

    /// The in-band error event this protocol uses inside a 200 stream.
    fn mid_stream_error(self) -> Bytes {
        let reply = match self {
            Dialect::OpenAi | Dialect::Gemini | Dialect::Responses | Dialect::Bedrock | Dialect::Cohere => ErrorReply {
                status: 500,
                kind: "server_error",
                code: Some("server_error"),
                param: None,
                message: "fake upstream failed mid-stream",
            },
            Dialect::Anthropic => {
                ErrorReply { status: 529, kind: "server_error", code: None, param: None, message: "Overloaded" }
            }
        };
        match self {
            Dialect::OpenAi => data_frame(&crate::protocols::openai::render_error(&reply)),
            Dialect::Anthropic => named_frame("error", &crate::protocols::anthropic::errors::render(&reply)),
            Dialect::Gemini => data_frame(&crate::protocols::gemini::errors::render(&reply)),
            Dialect::Bedrock => bedrock::mid_stream_exception(),
            Dialect::Cohere => cohere::mid_stream_error(),
            Dialect::Responses => {
                let failed = serde_json::json!({"type": "response.failed", "sequence_number": 999, "response": {
                    "id": "resp_fake", "object": "response", "status": "failed",
                    "error": {"code": "server_error", "message": reply.message}}});
                named_frame("response.failed", failed.to_string().as_bytes())
            }
        }
    }
}

/// Records a request and takes the fault scripted for it. `Err` is the response to send instead.
pub(crate) async fn intake(
    state: &FakeState,
    dialect: Dialect,
    headers: HeaderMap,
    body: &Value,
    model: &str,
) -> Result<Option<Fault>, Response> {
    state.stats.requests.fetch_add(1, Ordering::Relaxed);
    {
        let mut recorded = lock(&state.requests);
        if recorded.len() == RECORDED_REQUESTS {
            recorded.pop_front();
        }
        recorded.push_back(RecordedRequest { headers, body: body.clone() });
    }
    let fault = state.take_fault(model);
    match &fault {
        Some(Fault::Status { status, retry_after_secs, code, message }) => {
            return Err(dialect.error_response(*status, *retry_after_secs, code.as_deref(), message));
        }
        Some(Fault::StallBeforeHeaders(d)) => tokio::time::sleep(*d).await,
        _ => {}
    }
    Ok(fault)
}

#[expect(clippy::result_large_err, reason = "the error is the response to send, returned once per request")]
pub(crate) fn parse_json(dialect: Dialect, body: &Bytes) -> Result<Value, Response> {
    serde_json::from_slice::<Value>(body).map_err(|_| dialect.error_response(400, None, None, "the body is not JSON"))
}

async fn chat_completions(State(state): State<Arc<FakeState>>, headers: HeaderMap, body: Bytes) -> Response {
    let body = match parse_json(Dialect::OpenAi, &body) {
        Ok(b) => b,
        Err(resp) => return resp,
    };
    let model = body.get("model").and_then(Value::as_str).unwrap_or("fake").to_owned();
    let fault = match intake(&state, Dialect::OpenAi, headers, &body, &model).await {
        Ok(f) => f,
        Err(resp) => return resp,
    };
    let reply = Reply::for_request(&body, &state.settings, &state.next_id("chatcmpl-fake"));
    if body.get("stream").and_then(Value::as_bool) == Some(true) {
        let include_usage = body.pointer("/stream_options/include_usage").and_then(Value::as_bool) == Some(true);
        let mut frames: Vec<Bytes> =
            reply.chunks(&model, include_usage).iter().map(|c| data_frame(c.to_string().as_bytes())).collect();
        frames.push(Bytes::from_static(DONE_FRAME));
        return stream_frames(state, frames, Dialect::OpenAi, fault);
    }
    tokio::time::sleep(Duration::from_millis(state.settings.latency_ms)).await;
    json_response(&reply.completion(&model))
}

pub(crate) fn json_response(body: &Value) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
}

pub(crate) fn json_response_bytes(body: Vec<u8>) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

async fn embeddings(State(state): State<Arc<FakeState>>, headers: HeaderMap, body: Bytes) -> Response {
    let body = match parse_json(Dialect::OpenAi, &body) {
        Ok(b) => b,
        Err(resp) => return resp,
    };
    let model = body.get("model").and_then(Value::as_str).unwrap_or("fake").to_owned();
    if let Err(resp) = intake(&state, Dialect::OpenAi, headers, &body, &model).await {
        return resp;
    }
    let inputs: Vec<String> = match body.get("input") {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(items)) => {
            items.iter().map(|i| i.as_str().map_or_else(|| i.to_string(), str::to_owned)).collect()
        }
        _ => return Dialect::OpenAi.error_response(400, None, None, "'input' is required"),
    };
    let dims = body.get("dimensions").and_then(Value::as_u64).unwrap_or(8) as usize;
    let base64 = body.get("encoding_format").and_then(Value::as_str) == Some("base64");
    let data: Vec<Value> = inputs
        .iter()
        .enumerate()
        .map(|(i, text)| {
            let v = fake_vector(text, dims);
            let embedding = if base64 {
                use base64::Engine;
                let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
                json!(base64::engine::general_purpose::STANDARD.encode(bytes))
            } else {
                json!(v)
            };
            json!({"object": "embedding", "index": i, "embedding": embedding})
        })
        .collect();
    let tokens: usize = inputs.iter().map(|t| t.len().div_ceil(4)).sum();
    json_response(
        &json!({"object": "list", "data": data, "model": model, "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}),
    )
}

/// Jina's and vLLM's rerank shape: results with the documents, and `usage`.
async fn rerank_compatible(State(state): State<Arc<FakeState>>, headers: HeaderMap, body: Bytes) -> Response {
    rerank(state, headers, body, false).await
}

/// Cohere's v2 rerank: results without documents, `meta.billed_units` in search units, no tokens.
async fn rerank_cohere(State(state): State<Arc<FakeState>>, headers: HeaderMap, body: Bytes) -> Response {
    rerank(state, headers, body, true).await
}

async fn rerank(state: Arc<FakeState>, headers: HeaderMap, body: Bytes, cohere: bool) -> Response {
    let body = match parse_json(Dialect::OpenAi, &body) {
        Ok(b) => b,
        Err(resp) => return resp,
    };
    let model = body.get("model").and_then(Value::as_str).unwrap_or("fake-rerank").to_owned();
    if let Err(resp) = intake(&state, Dialect::OpenAi, headers, &body, &model).await {
        return resp;
    }
    let (Some(query), Some(documents)) =
        (body.get("query").and_then(Value::as_str), body.get("documents").and_then(Value::as_array))
    else {
        return Dialect::OpenAi.error_response(400, None, None, "'query' and 'documents' are required");
    };
    let Some(texts) = documents.iter().map(Value::as_str).collect::<Option<Vec<&str>>>() else {
        return Dialect::OpenAi.error_response(400, None, None, "documents must be strings");
    };
    // The share of the query's words a document holds, a little less for longer documents: deterministic.
    let words: Vec<String> = query.split_whitespace().map(str::to_lowercase).collect();
    let mut results: Vec<(usize, f64)> = texts
        .iter()
        .enumerate()
        .map(|(i, text)| {
            let lower = text.to_lowercase();
            let hits = words.iter().filter(|w| lower.contains(w.as_str())).count() as f64;
            (i, hits / words.len().max(1) as f64 - text.len() as f64 / 1e6)
        })
        .collect();
    // "unsorted" in the query: every result in document order, `top_n` ignored (the gateway sorts and
    // cuts); "duplicate": the first document ranked twice (the gateway refuses the answer).
    if !query.contains("unsorted") {
        results.sort_by(|a, b| b.1.total_cmp(&a.1));
        if let Some(n) = body.get("top_n").and_then(Value::as_u64) {
            results.truncate(n as usize);
        }
    }
    if query.contains("duplicate")
        && let Some(first) = results.first().copied()
    {
        results.push(first);
    }
    let tokens: usize = texts.iter().map(|t| t.len().div_ceil(4)).sum::<usize>() + query.len().div_ceil(4);
    let answer = if cohere {
        let results: Vec<Value> = results.iter().map(|(i, s)| json!({"index": i, "relevance_score": s})).collect();
        json!({"id": state.next_id("rerank"), "results": results,
               "meta": {"api_version": {"version": "2"}, "billed_units": {"search_units": 1}}})
    } else {
        let results: Vec<Value> = results
            .iter()
            .map(|(i, s)| json!({"index": i, "relevance_score": s, "document": {"text": texts[*i]}}))
            .collect();
        json!({"model": model, "results": results, "usage": {"total_tokens": tokens}})
    };
    json_response(&answer)
}

/// A deterministic unit-length vector for `text`.
pub fn fake_vector(text: &str, dims: usize) -> Vec<f32> {
    let seed = text.bytes().fold(17u64, |h, b| h.wrapping_mul(131).wrapping_add(u64::from(b)));
    let raw: Vec<f32> =
        (0..dims.max(1)).map(|i| (((seed.wrapping_add(i as u64 * 7919)) % 2001) as f32 / 1000.0) - 1.0).collect();
    let norm = raw.iter().map(|x| x * x).sum::<f32>().sqrt().max(f32::EPSILON);
    raw.iter().map(|x| x / norm).collect()
}

async fn moderations(State(state): State<Arc<FakeState>>, headers: HeaderMap, body: Bytes) -> Response {
    let body = match parse_json(Dialect::OpenAi, &body) {
        Ok(b) => b,
        Err(resp) => return resp,
    };
    let model = body.get("model").and_then(Value::as_str).unwrap_or("omni-moderation-latest").to_owned();
    if let Err(resp) = intake(&state, Dialect::OpenAi, headers, &body, &model).await {
        return resp;
    }
    let texts: Vec<String> = match body.get("input") {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(items)) => items.iter().map(Value::to_string).collect(),
        _ => return Dialect::OpenAi.error_response(400, None, None, "'input' is required"),
    };
    // "forbidden" in the input is flagged as violence, so tests can see both answers.
    let results: Vec<Value> = texts
        .iter()
        .map(|t| {
            let flagged = t.contains("forbidden");
            json!({
                "flagged": flagged,
                "categories": {"violence": flagged, "hate": false, "sexual": false, "self-harm": false},
                "category_scores": {"violence": if flagged { 0.97 } else { 0.001 }, "hate": 0.0001, "sexual": 0.0001, "self-harm": 0.0001}
            })
        })
        .collect();
    json_response(&json!({"id": state.next_id("modr-fake"), "model": model, "results": results}))
}

/// The deterministic answer to one request.
struct Reply {
    id: String,
    created: u64,
    /// Either text tokens or tool calls (name, arguments JSON).
    tokens: Vec<String>,
    tool_calls: Vec<(String, String)>,
    finish_reason: &'static str,
    prompt_tokens: u64,
    completion_tokens: u64,
    /// What the fake "thought" first, when the request asked for reasoning (`reasoning_effort`).
    reasoning: Option<String>,
}

/// The fake's reasoning, when asked for it.
const THOUGHT: &str = "The caller wants an answer; the fake model gives its usual one.";

/// The fake's prose: replies are consecutive words of this text, starting at a place chosen by the prompt.
pub const PROSE: &str = "Switchyard is answering from its built-in fake model. Every request is routed to the right \
model, streamed back token by token as it arrives, and counted once. Point any OpenAI client at the gateway, \
set a provider key, and the same call reaches a real model instead. Until then this text keeps the rails warm.";

impl Reply {
    /// The answer to a request another protocol's door translation has read.
    fn for_chat(req: &crate::schema::ChatRequest, settings: &FakeSettings, id: &str) -> Reply {
        Reply::for_request(&serde_json::to_value(req).unwrap_or_default(), settings, id)
    }

    /// The whole answer in the canonical shape, for a door's encoder to render.
    fn response(&self, model: &str) -> Result<crate::schema::ChatResponse, serde_json::Error> {
        serde_json::from_value(self.completion(model))
    }

    /// The stream as `door` renders it, frame by frame (usage included: the door decides what to show).
    fn frames(&self, door: &dyn crate::protocols::Dialect, model: &str) -> Vec<Bytes> {
        let mut encoder = door.stream();
        let mut frames = Vec::new();
        for chunk in self.chunks(model, true) {
            if let Ok(chunk) = serde_json::from_value::<crate::schema::ChatChunk>(chunk) {
                encoder.chunk(&chunk, &mut frames);
            }
        }
        encoder.done(&mut frames);
        frames
    }

    fn for_request(body: &Value, settings: &FakeSettings, id: &str) -> Reply {
        let messages = body.get("messages").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
        let prompt_tokens = messages.iter().map(|m| text_of(m).len().div_ceil(4) as u64 + 4).sum::<u64>() + 3;
        let last_text = messages.last().map(text_of).unwrap_or_default();
        let seed = last_text.bytes().fold(7u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b)));
        let limit = ["max_completion_tokens", "max_tokens"]
            .iter()
            .find_map(|k| body.get(*k).and_then(Value::as_u64))
            .map(|n| n.min(u64::from(u32::MAX)) as u32);
        let created = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or_default();
        let mut reply = Reply {
            id: id.to_owned(),
            created,
            tokens: Vec::new(),
            tool_calls: Vec::new(),
            finish_reason: "stop",
            prompt_tokens,
            completion_tokens: 0,
            reasoning: body
                .get("reasoning_effort")
                .and_then(Value::as_str)
                .filter(|e| *e != "none" && *e != "minimal")
                .map(|_| THOUGHT.to_owned()),
        };
        let tool_calls = tool_calls_for(body, messages);
        if !tool_calls.is_empty() {
            reply.completion_tokens = tool_calls.iter().map(|(n, a)| (n.len() + a.len()).div_ceil(4) as u64).sum();
            // Asked to "think aloud", it says a few words before its calls, as some models do.
            if last_text.to_ascii_lowercase().contains("think aloud") {
                reply.tokens = ["Let", " me", " check."].map(str::to_owned).to_vec();
                reply.completion_tokens += 3;
            }
            reply.tool_calls = tool_calls;
            reply.finish_reason = "tool_calls";
            return reply;
        }
        // JSON mode: the answer is an object matching the schema, streamed a few characters at a time.
        if let Some(kind @ ("json_schema" | "json_object")) =
            body.pointer("/response_format/type").and_then(Value::as_str)
        {
            let schema = if kind == "json_schema" { body.pointer("/response_format/json_schema/schema") } else { None };
            let text = object_for_schema(schema).to_string();
            reply.completion_tokens = text.len().div_ceil(4) as u64;
            reply.tokens = char_pieces(&text, 4);
            return reply;
        }
        let wanted = settings.completion_tokens;
        let n = limit.map_or(wanted, |l| l.min(wanted)).max(1);
        if limit.is_some_and(|l| l < wanted) {
            reply.finish_reason = "length";
        }
        let words: Vec<&str> = PROSE.split(' ').collect();
        // Asked to continue a partial answer (a gateway's mid-stream continuation): go on from its last
        // words. Told to in a user turn, the fake restates those words first, as models often do.
        if let Some((partial, restate)) = continuation_of(messages) {
            let (next, restated) = continue_prose(&words, &partial, restate);
            reply.completion_tokens = u64::from(n) + restated.len() as u64;
            let fresh = (0..n as usize).map(|i| format!(" {}", words[(next + i) % words.len()]));
            reply.tokens = restated.into_iter().chain(fresh).collect();
            return reply;
        }
        let start = (seed % words.len() as u64) as usize;
        reply.tokens = (0..n as usize)
            .map(|i| {
                let word = words[(start + i) % words.len()];
                if i == 0 { capitalise(word) } else { format!(" {word}") }
            })
            .collect();
        reply.completion_tokens = u64::from(n);
        reply
    }

    fn reasoning_tokens(&self) -> u64 {
        self.reasoning.as_ref().map_or(0, |r| r.len().div_ceil(4) as u64)
    }

    fn usage(&self) -> Value {
        let completion = self.completion_tokens + self.reasoning_tokens();
        json!({
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": completion,
            "total_tokens": self.prompt_tokens + completion,
            "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": self.reasoning_tokens(), "audio_tokens": 0}
        })
    }

    fn call_id(&self, i: usize) -> String {
        format!("call_{}_{i}", self.id.trim_start_matches("chatcmpl-"))
    }

    fn completion(&self, model: &str) -> Value {
        let tool_calls: Vec<Value> = self
            .tool_calls
            .iter()
            .enumerate()
            .map(|(i, (name, args))| json!({"id": self.call_id(i), "type": "function", "function": {"name": name, "arguments": args}}))
            .collect();
        let mut message = json!({"role": "assistant", "content": null, "refusal": null});
        if let Some(thought) = &self.reasoning {
            message["reasoning_content"] = json!(thought);
        }
        if tool_calls.is_empty() {
            message["content"] = Value::String(self.tokens.concat());
        } else {
            message["tool_calls"] = Value::Array(tool_calls);
        }
        json!({
            "id": self.id, "object": "chat.completion", "created": self.created, "model": model,
            "choices": [{"index": 0, "message": message, "logprobs": null, "finish_reason": self.finish_reason}],
            "usage": self.usage(),
            "system_fingerprint": "fp_switchyard_fake",
            "service_tier": "default"
        })
    }

    /// The `data:` payloads of the stream, in order, without `[DONE]`.
    fn chunks(&self, model: &str, include_usage: bool) -> Vec<Value> {
        let chunk = |delta: Value, finish: Option<&str>| {
            let mut c = json!({
                "id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": model,
                "system_fingerprint": "fp_switchyard_fake",
                "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}]
            });
            if include_usage {
                c["usage"] = Value::Null;
            }
            c
        };
        let mut out = vec![chunk(json!({"role": "assistant", "content": ""}), None)];
        if let Some(thought) = &self.reasoning {
            out.push(chunk(json!({"reasoning_content": thought}), None));
        }
        for token in &self.tokens {
            out.push(chunk(json!({"content": token}), None));
        }
        for (i, (name, args)) in self.tool_calls.iter().enumerate() {
            out.push(chunk(
                json!({"tool_calls": [{"index": i, "id": self.call_id(i), "type": "function", "function": {"name": name, "arguments": ""}}]}),
                None,
            ));
            for piece in char_pieces(args, 7) {
                out.push(chunk(json!({"tool_calls": [{"index": i, "function": {"arguments": piece}}]}), None));
            }
        }
        out.push(chunk(json!({}), Some(self.finish_reason)));
        if include_usage {
            out.push(json!({
                "id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": model,
                "system_fingerprint": "fp_switchyard_fake", "choices": [], "usage": self.usage()
            }));
        }
        out
    }
}

fn text_of(message: &Value) -> String {
    match message.get("content") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(parts)) => {
            parts.iter().filter_map(|p| p.get("text").and_then(Value::as_str)).collect::<Vec<_>>().join("\n")
        }
        _ => String::new(),
    }
}

/// The partial answer a request asks to continue, and whether the fake should restate its last words:
/// a final assistant turn is continued as it stands (a prefill); an assistant turn followed by a user
/// turn asking to continue is continued after restating.
fn continuation_of(messages: &[Value]) -> Option<(String, bool)> {
    let role = |m: &Value| m.get("role").and_then(Value::as_str).unwrap_or_default().to_owned();
    let last = messages.last()?;
    if role(last) == "assistant" {
        return Some((text_of(last), false));
    }
    let before = messages.len().checked_sub(2).and_then(|i| messages.get(i))?;
    let asks = text_of(last).to_ascii_lowercase().contains("continue");
    (role(last) == "user" && role(before) == "assistant" && asks).then(|| (text_of(before), true))
}

/// Where `partial` stands in the prose: the index of the word after it, and the restated last words.
fn continue_prose(words: &[&str], partial: &str, restate: bool) -> (usize, Vec<String>) {
    let said: Vec<&str> = partial.split_whitespace().collect();
    let tail = &said[said.len().saturating_sub(3)..];
    let same = |a: &str, b: &str| a.eq_ignore_ascii_case(b);
    let at = (0..words.len()).find(|&j| {
        tail.iter().rev().enumerate().all(|(back, w)| same(words[(j + words.len() * 2 - back) % words.len()], w))
    });
    let next = at.map_or(0, |j| j + 1);
    let restated = if restate { tail.iter().map(|w| format!(" {w}")).collect() } else { Vec::new() };
    (next, restated)
}

fn capitalise(word: &str) -> String {
    let mut chars = word.chars();
    chars.next().map(|c| c.to_uppercase().chain(chars).collect()).unwrap_or_default()
}

/// Splits `s` into pieces of at most `n` characters, never inside a character.
fn char_pieces(s: &str, n: usize) -> Vec<String> {
    let chars: Vec<char> = s.chars().collect();
    chars.chunks(n).map(|c| c.iter().collect()).collect()
}

/// Tool calls the fake makes: when tools are offered, `tool_choice` is not "none" and the conversation
/// does not end with a tool result. Two parallel calls when two or more tools are offered and parallel
/// calls are not disabled; the named tool when `tool_choice` names one.
fn tool_calls_for(body: &Value, messages: &[Value]) -> Vec<(String, String)> {
    let tools = body.get("tools").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
    let choice = body.get("tool_choice");
    let ends_with_tool_result = messages.last().and_then(|m| m.get("role")).and_then(Value::as_str) == Some("tool");
    if tools.is_empty() || choice.and_then(Value::as_str) == Some("none") || ends_with_tool_result {
        return Vec::new();
    }
    let named = choice.and_then(|c| c.pointer("/function/name")).and_then(Value::as_str);
    let parallel = body.get("parallel_tool_calls").and_then(Value::as_bool) != Some(false);
    let picked: Vec<&Value> = match named {
        Some(name) => {
            tools.iter().filter(|t| t.pointer("/function/name").and_then(Value::as_str) == Some(name)).collect()
        }
        None if parallel => tools.iter().take(2).collect(),
        None => tools.iter().take(1).collect(),
    };
    picked
        .into_iter()
        .filter_map(|t| {
            let name = t.pointer("/function/name")?.as_str()?.to_owned();
            Some((name, object_for_schema(t.pointer("/function/parameters")).to_string()))
        })
        .collect()
}

/// A JSON object with a value of the right type for each property of `schema` (the first of an
/// `enum`'s values, when it lists them).
fn object_for_schema(schema: Option<&Value>) -> Value {
    let mut object = serde_json::Map::new();
    if let Some(props) = schema.and_then(|s| s.get("properties")).and_then(Value::as_object) {
        for (key, prop) in props {
            if let Some(first) = prop.get("enum").and_then(Value::as_array).and_then(|e| e.first()) {
                object.insert(key.clone(), first.clone());
                continue;
            }
            let value = match prop.get("type").and_then(Value::as_str) {
                Some("integer" | "number") => json!(42),
                Some("boolean") => json!(true),
                Some("array") => json!([]),
                Some("object") => json!({}),
                _ => json!(format!("fake {key} ü")),
            };
            object.insert(key.clone(), value);
        }
    }
    Value::Object(object)
}

/// Streams pre-rendered frames with the configured pacing, applying a mid-stream fault if one is scripted.
pub(crate) fn stream_frames(
    state: Arc<FakeState>,
    frames: Vec<Bytes>,
    dialect: Dialect,
    fault: Option<Fault>,
) -> Response {
    state.stats.streams_started.fetch_add(1, Ordering::Relaxed);
    let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(8);
    let latency = Duration::from_millis(state.settings.latency_ms);
    let gap = if state.settings.tokens_per_second > 0.0 {
        Duration::from_secs_f64(1.0 / state.settings.tokens_per_second)
    } else {
        Duration::ZERO
    };
    tokio::spawn(async move {
        let outcome = async {
            pause(&tx, latency).await?;
            for (i, frame) in frames.into_iter().enumerate() {
                match &fault {
                    Some(Fault::StallMidStream { after_chunks, duration }) if *after_chunks == i => {
                        pause(&tx, *duration).await?
                    }
                    Some(Fault::CutMidStream { after_chunks }) if *after_chunks == i => {
                        // Let what was sent reach the reader first: an error makes hyper drop unflushed data.
                        pause(&tx, Duration::from_millis(50)).await?;
                        let _ = tx.send(Err(std::io::Error::other("fake upstream cut the stream"))).await;
                        return Some(());
                    }
                    Some(Fault::ErrorMidStream { after_chunks }) if *after_chunks == i => {
                        tx.send(Ok(dialect.mid_stream_error())).await.ok()?;
                        return Some(());
                    }
                    _ => {}
                }
                if i > 0 {
                    pause(&tx, gap).await?;
                }
                tx.send(Ok(frame)).await.ok()?;
            }
            Some(())
        }
        .await;
        let counter = if outcome.is_some() { &state.stats.streams_completed } else { &state.stats.streams_cancelled };
        counter.fetch_add(1, Ordering::Relaxed);
    });
    let body = futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|item| (item, rx)) });
    let content_type = match dialect {
        Dialect::Bedrock => "application/vnd.amazon.eventstream",
        _ => "text/event-stream",
    };
    Response::builder()
        .header(header::CONTENT_TYPE, content_type)
        .header(header::CACHE_CONTROL, "no-cache")
        .body(Body::from_stream(body))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

/// Waits `d`, or returns `None` at once if the reader has gone.
async fn pause(tx: &mpsc::Sender<Result<Bytes, std::io::Error>>, d: Duration) -> Option<()> {
    if d.is_zero() {
        return (!tx.is_closed()).then_some(());
    }
    tokio::select! {
        () = tokio::time::sleep(d) => Some(()),
        () = tx.closed() => None,
    }
}
