//! `POST /v1/chat/completions`: decode, resolve, call the provider, and answer whole or as a stream.
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
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::StreamExt;
use http::{HeaderMap, HeaderValue, StatusCode, header};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::Instrument;

use super::observe::RequestId;
use super::{GatewayError, admission, body};
use crate::app::AppState;
use crate::protocols::{Dialect, StreamEncoder};
use crate::providers::exec::{self, ChunkStream};
use crate::providers::{ErrorKind, ProviderError};
use crate::routing::{Caller, Fallback, ModelEntry, RequestFeatures, RoutePlan};
use crate::schema::{ChatChunk, ChatRequest, Usage};
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

/// Serves one chat request in any dialect: plan, admit, call providers with fallback, and answer whole
/// or as a stream.
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
    let (plan, ask, estimate) = {
        let features = RequestFeatures::for_chat(&req)
            .map_err(|field| GatewayError::invalid_value(format!("'{field}' has an invalid value."), &field))?;
        let mut caller = key.as_ref().map_or_else(Caller::default, |k| k.caller.clone());
        caller.cheaper_swaps &= !crate::routing::wants_explicit_routing(headers);
        let plan = state.catalog.route(&req.model, &caller, &features).await?;
        let ask = admission::ask(&features, &plan, 1, req.n.unwrap_or(1));
        (plan, ask, features.prompt_token_estimate())
    };
    // Switchyard's own fields are not forwarded.
    req.extra.remove("prefer");
    req.extra.remove("models");

    let mut usage = UsageGuard::for_request(
        state.usage.clone(),
        &request_id.ledger_id,
        request_id.client_id.as_deref(),
        &req.model,
        req.is_streaming(),
        estimate,
        started.into_std(),
    );
    if let Some(key) = &key {
        usage.set_caller(&key.organization_id, &key.id);
    }
    // Admission: every limit of the key at once; the guard settles the holds whatever happens next.
    let (mut usage, limits_view) = admission::admit(state, key.as_ref(), ask, usage).await?;
    if req.is_streaming() {
        // Switchyard always learns a stream's usage; the caller's own choice is honoured when forwarding.
        req.stream_options.get_or_insert_with(Default::default).include_usage = Some(true);
    }
    let mut fallback = Fallback::new(&plan, &state.router, started);
    while let Some(target) = fallback.next().await {
        usage.set_served(&target.name, &target.provider.name, target.prices());
        req.model.clone_from(&target.upstream);
        let deadline = fallback.attempt_deadline(&target);
        if !req.is_streaming() {
            match exec::complete(&target.provider, &target.timeouts, &req, deadline).await {
                Ok(mut resp) => {
                    fallback.succeeded(&target);
                    resp.model.clone_from(&target.name);
                    let cost = resp.usage.as_mut().and_then(|u| {
                        usage.provider_usage(u);
                        add_cost(u, target.prices())
                    });
                    let json = dialect.whole(&resp);
                    usage.finish(Outcome::Completed, 200, None);
                    let mut response = ([(header::CONTENT_TYPE, "application/json")], json).into_response();
                    if let Some(micros) = cost {
                        response.headers_mut().insert("x-switchyard-cost-micros", HeaderValue::from(micros));
                    }
                    route_headers(response.headers_mut(), &plan, &fallback, &target);
                    admission::headers(response.headers_mut(), limits_view.as_ref());
                    return Ok(response);
                }
                Err(e) => {
                    tracing::warn!(model = %target.name, provider = %target.provider.name, error = %e, "upstream attempt failed");
                    if !fallback.failed(&target, e) {
                        break;
                    }
                }
            }
            continue;
        }
        match open_committable_stream(&target, &req, deadline).await {
            Ok((upstream, leading)) => {
                fallback.succeeded(&target);
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
                route_headers(h, &plan, &fallback, &target);
                admission::headers(h, limits_view.as_ref());
                return Ok(response);
            }
            Err(e) => {
                tracing::warn!(model = %target.name, provider = %target.provider.name, error = %e, "upstream attempt failed");
                if !fallback.failed(&target, e) {
                    break;
                }
            }
        }
    }
    Err(all_failed(usage, &fallback, &plan))
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

/// What answered and why: `x-switchyard-model`, `-provider`, `-routed-from`, `-attempts`.
pub(super) fn route_headers(h: &mut HeaderMap, plan: &RoutePlan, fallback: &Fallback<'_>, served: &ModelEntry) {
    let mut put = |name: &'static str, value: &str| {
        if let Ok(v) = HeaderValue::from_str(value) {
            h.insert(name, v);
        }
    };
    put("x-switchyard-model", &served.name);
    put("x-switchyard-provider", &served.provider.name);
    if plan.requested != served.name {
        put("x-switchyard-routed-from", &plan.requested);
        // Served by the cheaper model of the band rather than by a fallback after the model asked for.
        if let Some(band) = &plan.swap
            && plan.targets.first().is_some_and(|first| first.name == served.name)
        {
            put("x-switchyard-swap", band);
        }
    }
    put("x-switchyard-attempts", &fallback.header_value());
    if let Some(instead) = &plan.deprecated {
        put("x-switchyard-deprecated", instead);
    }
}

/// Adds `usage.cost` (USD at catalog prices, as OpenRouter reports it) and returns it in micro-dollars.
fn add_cost(u: &mut Usage, prices: Prices) -> Option<i64> {
    let micros = prices.cost_micros(u.prompt_tokens, u.cached_tokens(), u.completion_tokens)?;
    let usd = serde_json::Number::from_f64(micros as f64 / 1e6)?;
    u.extra.insert("cost".to_owned(), serde_json::Value::Number(usd));
    Some(micros)
}

/// Records the request's failure and turns it into the client's error.
pub(super) fn all_failed(usage: UsageGuard, fallback: &Fallback<'_>, plan: &RoutePlan) -> GatewayError {
    let e = fallback.failure();
    let mut error = GatewayError::from_provider(&e);
    error.attempts = Some(fallback.header_value().into_boxed_str());
    tracing::warn!(requested = %plan.requested, attempts = %fallback.header_value(), status = error.status.as_u16(), "request failed");
    usage.finish(Outcome::Failed, error.status.as_u16(), Some(e.label()));
    error
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
