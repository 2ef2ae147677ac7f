//! `POST /v1/chat/completions`, and the chat path every chat-shaped door shares (`serve_chat`): the
//! pipeline plans, admits and walks the targets; this makes each attempt and renders the answer, whole or
//! as a stream, in the door's `Dialect`.
//!
//! A stream is committed (200 and headers sent) only once the provider's first chunk is in hand, so every
//! failure before that gets a proper HTTP status. After that, chunks are forwarded one by one as they
//! arrive; a failure ends the stream with an error event and no `[DONE]`, never a silent stop.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use axum::Extension;
use axum::body::Body;
use axum::extract::State;
use axum::response::Response;
use bytes::Bytes;
use futures_util::StreamExt;
use http::{HeaderMap, HeaderValue, StatusCode, header};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::Instrument;

use super::observe::RequestId;
use super::pipeline::{Call, Intake, Pipeline, Served};
use super::{GatewayError, body};
use crate::app::AppState;
use crate::protocols::{Dialect, StreamEncoder};
use crate::providers::exec::{self, ChunkStream};
use crate::providers::{ErrorKind, ProviderError};
use crate::routing::{ModelEntry, RequestFeatures};
use crate::schema::{ChatChunk, ChatRequest, ChatResponse, Usage};
use crate::tenancy::ActiveKey;
use crate::usage::{Outcome, Prices, UsageGuard};

/// How many rendered frames may wait for a slow client before the upstream is read no further.
const STREAM_BUFFER: usize = 16;
/// How many content-free chunks are held back before the stream is committed anyway.
const MAX_PREAMBLE: usize = 4;

pub async fn create_chat_completion(
    State(state): State<Arc<AppState>>,
    Extension(request_id): Extension<RequestId>,
    key: Option<Extension<Arc<ActiveKey>>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, GatewayError> {
    let started = Instant::now();
    let req: ChatRequest = body::read_json(&headers, body, state.body_limits).await?;
    let dialect = crate::protocols::openai::OpenAi { wants_usage: req.wants_stream_usage() };
    serve_chat(&state, &request_id, key.map(|Extension(k)| k), req, started, Box::new(dialect), &headers).await
}

/// Serves one chat request in any dialect: the pipeline plans, admits and walks the targets; this makes
/// each attempt (whole or streamed) and renders what answered.
pub(super) async fn serve_chat(
    state: &Arc<AppState>,
    request_id: &RequestId,
    key: Option<Arc<ActiveKey>>,
    mut req: ChatRequest,
    started: Instant,
    dialect: Box<dyn Dialect>,
    headers: &HeaderMap,
) -> Result<Response, GatewayError> {
    validate(&req)?;
    let pipeline = {
        let features = RequestFeatures::for_chat(&req)
            .map_err(|field| GatewayError::invalid_value(format!("'{field}' has an invalid value."), &field))?;
        let intake = Intake {
            model: &req.model,
            features: &features,
            prompts: 1,
            choices: req.n.unwrap_or(1),
            streamed: req.is_streaming(),
            started,
        };
        Pipeline::admit(state, request_id, key.as_ref(), headers, intake).await?
    };
    // Switchyard's own fields are not forwarded.
    req.extra.remove("prefer");
    req.extra.remove("models");
    if !req.is_streaming() {
        let mut served = pipeline.run(&mut Whole(&mut req)).await?;
        let resp = &mut served.value;
        resp.model.clone_from(&served.target.name);
        let cost = resp.usage.as_mut().and_then(|u| {
            served.usage.provider_usage(u);
            add_cost(u, served.target.prices())
        });
        let body = dialect.whole(&served.value);
        let mut response = served.json(body);
        if let Some(micros) = cost {
            response.headers_mut().insert("x-switchyard-cost-micros", HeaderValue::from(micros));
        }
        return Ok(response);
    }
    // Switchyard always learns a stream's usage; the caller's own choice is honoured when forwarding.
    req.stream_options.get_or_insert_with(Default::default).include_usage = Some(true);
    let served = pipeline.run(&mut Streamed(&mut req)).await?;
    let Served { value: (upstream, leading), target, usage, headers } = served;
    let (tx, rx) = mpsc::channel::<Bytes>(STREAM_BUFFER);
    let mut relay = Relay {
        public_model: target.name.clone(),
        prices: target.prices(),
        encoder: dialect.stream(),
        usage,
        hard_stop: state.hard_stop.clone(),
    };
    // The frames in hand go out with the headers; the relay task forwards the rest.
    let first: Vec<Result<Bytes, std::convert::Infallible>> =
        leading.into_iter().filter_map(|c| relay.render(c)).map(Ok).collect();
    tokio::spawn(relay.run(upstream, tx).instrument(tracing::Span::current()));
    let rest = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|frame| (Ok::<_, std::convert::Infallible>(frame), rx))
    });
    let body = futures_util::stream::iter(first).chain(rest);
    let mut response = Response::new(Body::from_stream(body));
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    // Tells nginx-style proxies in front of us not to buffer the stream.
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    h.extend(headers);
    Ok(response)
}

/// A whole chat answer from one target.
struct Whole<'r>(&'r mut ChatRequest);

impl Call for Whole<'_> {
    type Output = ChatResponse;

    async fn call(&mut self, target: &ModelEntry, deadline: Instant) -> Result<ChatResponse, ProviderError> {
        self.0.model.clone_from(&target.upstream);
        exec::complete(&target.provider, &target.timeouts, self.0, deadline).await
    }
}

/// A stream from one target, opened past its preamble.
struct Streamed<'r>(&'r mut ChatRequest);

impl Call for Streamed<'_> {
    type Output = (ChunkStream, VecDeque<ChatChunk>);

    async fn call(&mut self, target: &ModelEntry, deadline: Instant) -> Result<Self::Output, ProviderError> {
        self.0.model.clone_from(&target.upstream);
        open_committable_stream(target, self.0, deadline).await
    }
}

/// Opens a stream and reads past its preamble (a role-only first chunk, Anthropic's `message_start`) to
/// the first chunk with content: until then nothing is sent, so a failure is still a failed attempt that
/// can fall back invisibly.
async fn open_committable_stream(
    target: &ModelEntry,
    req: &ChatRequest,
    deadline: Instant,
) -> Result<(ChunkStream, VecDeque<ChatChunk>), ProviderError> {
    let mut upstream = exec::open_stream(&target.provider, &target.timeouts, req, deadline).await?;
    let mut leading = VecDeque::new();
    loop {
        match upstream.next().await? {
            Some(chunk) if chunk.is_preamble() && leading.len() < MAX_PREAMBLE => leading.push_back(chunk),
            Some(chunk) => {
                leading.push_back(chunk);
                break;
            }
            None => break,
        }
    }
    Ok((upstream, leading))
}

fn validate(req: &ChatRequest) -> Result<(), GatewayError> {
    if req.messages.is_empty() {
        return Err(GatewayError::invalid_value("'messages' must contain at least one message.", "messages"));
    }
    if req.n == Some(0) {
        return Err(GatewayError::invalid_value("'n' must be at least 1.", "n"));
    }
    Ok(())
}

/// Adds `usage.cost` (USD at catalog prices, as OpenRouter reports it) and returns it in micro-dollars.
fn add_cost(u: &mut Usage, prices: Prices) -> Option<i64> {
    let micros = prices.cost_micros(u.prompt_tokens, u.cached_tokens(), u.completion_tokens)?;
    let usd = serde_json::Number::from_f64(micros as f64 / 1e6)?;
    u.extra.insert("cost".to_owned(), serde_json::Value::Number(usd));
    Some(micros)
}

/// After a client leaves mid-stream, how long to wait for each further chunk, and in all, before the
/// upstream stream is dropped (which cancels it).
const DRAIN_GAP: Duration = Duration::from_millis(10);
const DRAIN_LIMIT: Duration = Duration::from_millis(250);

/// Moves one stream from the provider to the client, owning its accounting until the end.
struct Relay {
    public_model: String,
    prices: Prices,
    encoder: Box<dyn StreamEncoder>,
    usage: UsageGuard,
    hard_stop: tokio_util::sync::CancellationToken,
}

enum End {
    Done,
    ClientGone,
    Failed(ProviderError),
    ShutDown,
}

impl Relay {
    async fn run(mut self, mut upstream: ChunkStream, tx: mpsc::Sender<Bytes>) {
        let end = loop {
            let chunk = tokio::select! {
                biased;
                () = self.hard_stop.cancelled() => break End::ShutDown,
                () = tx.closed() => break End::ClientGone,
                item = upstream.next() => match item {
                    Ok(Some(chunk)) => chunk,
                    Ok(None) => break End::Done,
                    Err(e) => break End::Failed(e),
                },
            };
            if let Some(frame) = self.render(chunk)
                && tx.send(frame).await.is_err()
            {
                break End::ClientGone;
            }
        };
        // Dropping `upstream` before its body ended closes the connection, which cancels the generation.
        let (outcome, error) = match end {
            End::Done => {
                let mut frames = Vec::new();
                self.encoder.done(&mut frames);
                let sent = tx.send(join(frames)).await;
                drop(tx); // The client's body ends here, not after the upstream's.
                upstream.finish_body(DRAIN_GAP).await;
                drop(upstream);
                match sent {
                    Ok(()) => (Outcome::Completed, None),
                    Err(_) => (Outcome::ClientDisconnected, Some("client_disconnected".to_owned())),
                }
            }
            End::ClientGone => {
                // What has already arrived is read (and billed) rather than thrown away: a stream that was
                // all but done then keeps its pooled connection; one still generating is cut at its next
                // pause.
                upstream.drain_arrived(DRAIN_GAP, DRAIN_LIMIT, |mut chunk| self.account(&mut chunk)).await;
                drop(upstream);
                (Outcome::ClientDisconnected, Some("client_disconnected".to_owned()))
            }
            End::Failed(e) => {
                drop(upstream);
                tracing::warn!(error = %e, "stream failed after it started");
                let _ = tx.send(self.encoder.error(&stream_error(&e).reply())).await;
                (Outcome::Interrupted, Some(e.label()))
            }
            End::ShutDown => {
                drop(upstream);
                let _ = tx.send(self.encoder.error(&GatewayError::shutting_down().reply())).await;
                (Outcome::ShutDown, Some("shutting_down".to_owned()))
            }
        };
        self.usage.finish(outcome, 200, error);
    }

    /// Rewrites one chunk for the client (public model name, usage with its cost) and renders it;
    /// `None` when nothing is to be sent for it.
    fn render(&mut self, mut chunk: ChatChunk) -> Option<Bytes> {
        self.account(&mut chunk);
        chunk.model.clone_from(&self.public_model);
        let mut frames = Vec::new();
        self.encoder.chunk(&chunk, &mut frames);
        if frames.is_empty() {
            return None;
        }
        self.usage.first_byte();
        Some(join(frames))
    }

    /// Takes a chunk's usage (adding its cost) and the size of its text into the request's books.
    fn account(&mut self, chunk: &mut ChatChunk) {
        if let Some(u) = &mut chunk.usage {
            self.usage.provider_usage(u);
            add_cost(u, self.prices);
        }
        for choice in &chunk.choices {
            let d = &choice.delta;
            let text = d.content.as_ref().map_or(0, String::len);
            let args: usize = d
                .tool_calls
                .iter()
                .flatten()
                .filter_map(|t| t.function.as_ref()?.arguments.as_ref())
                .map(String::len)
                .sum();
            self.usage.streamed_text(text + args);
        }
    }
}

/// Several frames as one write.
fn join(mut frames: Vec<Bytes>) -> Bytes {
    if frames.len() == 1 {
        return frames.pop().unwrap_or_default();
    }
    let mut all = bytes::BytesMut::with_capacity(frames.iter().map(Bytes::len).sum());
    for f in frames {
        all.extend_from_slice(&f);
    }
    all.freeze()
}

/// A stream that broke mid-way: the status is already sent, so only the classification matters.
fn stream_error(e: &ProviderError) -> GatewayError {
    let mut g = GatewayError::from_provider(e);
    if !matches!(e.kind, ErrorKind::Timeout(_)) {
        g.code = Some("stream_interrupted".into());
    }
    g.status = StatusCode::OK;
    g
}
