//! Moving one stream from a provider to a client, whatever the door: the stream is committed (200 and
//! headers sent) only once an item with content is in hand, so every failure before that is a failed
//! attempt the pipeline can fall back from; after that, items are rendered by the door's encoder and
//! forwarded one by one as they arrive, and a failure ends the stream with the door's error event, never
//! a silent stop. The relay owns the request's accounting until the stream ends, however it ends.

use std::collections::VecDeque;
use std::time::Duration;

use axum::body::Body;
use axum::response::Response;
use bytes::Bytes;
use futures_util::StreamExt;
use http::{HeaderValue, StatusCode, header};
use tokio::sync::mpsc;
use tracing::Instrument;

use super::GatewayError;
use super::pipeline::Served;
use super::resume::Resumable;
use crate::app::AppState;
use crate::protocols::{StreamEncoder, StreamItem};
use crate::providers::exec::ChunkStream;
use crate::providers::{ErrorKind, ProviderError};
use crate::schema::{ChatChunk, Usage};
use crate::usage::{Outcome, Prices, UsageGuard};

/// How many rendered frames may wait for a slow client before the upstream is read no further.
const STREAM_BUFFER: usize = 16;
/// How many content-free items are held back before the stream is committed anyway.
const MAX_PREAMBLE: usize = 8;

/// The gateway's part in each streamed item before the door renders it: the client's view (the public
/// model name, the cost beside the usage) and the request's books (the provider's usage, the size of
/// the generated text for an estimate when usage never comes).
pub(super) trait Relayed: StreamItem {
    /// Called for every item before it is rendered, and for items drained after the client left (then
    /// only the books matter).
    fn prepare(&mut self, public_model: &str, prices: Prices, usage: &mut UsageGuard);
}

impl Relayed for ChatChunk {
    fn prepare(&mut self, public_model: &str, prices: Prices, usage: &mut UsageGuard) {
        if let Some(u) = &mut self.usage {
            usage.provider_usage(u);
            add_cost(u, prices);
        }
        for choice in &self.choices {
            let d = &choice.delta;
            let text = d.content.as_ref().map_or(0, String::len);
            let args: usize = d
                .tool_calls
                .iter()
                .flatten()
                .filter_map(|t| t.function.as_ref()?.arguments.as_ref())
                .map(String::len)
                .sum();
            usage.streamed_text(text + args);
        }
        self.model.clear();
        self.model.push_str(public_model);
    }
}

/// Adds `usage.cost` (USD at catalog prices, as OpenRouter reports it) and returns it in micro-dollars.
pub(super) fn add_cost(u: &mut Usage, prices: Prices) -> Option<i64> {
    let micros = prices.cost_micros(u.prompt_tokens, u.cached_tokens(), u.completion_tokens)?;
    put_cost(&mut u.extra, micros);
    Some(micros)
}

/// Puts a cost, given in micro-dollars, as `cost` in USD into a usage object of any protocol.
pub(super) fn put_cost(usage: &mut serde_json::Map<String, serde_json::Value>, micros: i64) {
    if let Some(usd) = serde_json::Number::from_f64(micros as f64 / 1e6) {
        usage.insert("cost".to_owned(), serde_json::Value::Number(usd));
    }
}

/// Reads an opened stream past its preamble (a role-only first chunk, Anthropic's `message_start`,
/// `response.created`) to the first item with content: until then nothing is sent, so a failure is still
/// a failed attempt that can fall back invisibly.
pub(super) async fn past_preamble<I: StreamItem>(
    mut upstream: ChunkStream<I>,
) -> Result<(ChunkStream<I>, VecDeque<I>), ProviderError> {
    let mut leading = VecDeque::new();
    loop {
        match upstream.next().await? {
            Some(item) if item.is_preamble() && leading.len() < MAX_PREAMBLE => leading.push_back(item),
            Some(item) => {
                leading.push_back(item);
                break;
            }
            None => break,
        }
    }
    Ok((upstream, leading))
}

/// Commits a stream that answered: the items in hand go out with the headers, and a relay task forwards
/// the rest, rendered by `encoder`.
pub(super) fn respond<I: Relayed>(
    state: &AppState,
    served: Served<(ChunkStream<I>, VecDeque<I>)>,
    encoder: Box<dyn StreamEncoder<I>>,
) -> Response {
    respond_resumable(state, served, encoder, None)
}

/// [`respond`] for a stream that may continue on another target if its provider fails mid-way.
pub(super) fn respond_resumable<I: Relayed>(
    state: &AppState,
    served: Served<(ChunkStream<I>, VecDeque<I>)>,
    encoder: Box<dyn StreamEncoder<I>>,
    resume: Option<Box<dyn Resumable<I>>>,
) -> Response {
    let Served { value: (upstream, leading), target, usage, headers, .. } = served;
    let (tx, rx) = mpsc::channel::<Bytes>(STREAM_BUFFER);
    let mut relay = Relay {
        public_model: target.name.clone(),
        prices: target.prices(),
        encoder,
        usage,
        hard_stop: state.hard_stop.clone(),
        resume,
        completed: StreamCompleted::default(),
    };
    let completed = relay.completed.clone();
    let first: Vec<Result<Bytes, std::convert::Infallible>> =
        leading.into_iter().filter_map(|item| relay.render(item)).map(Ok).collect();
    tokio::spawn(relay.run(upstream, tx).instrument(tracing::Span::current()));
    let rest = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|frame| (Ok::<_, std::convert::Infallible>(frame), rx))
    });
    let body = futures_util::stream::iter(first).chain(rest);
    let mut response = Response::new(Body::from_stream(body));
    response.extensions_mut().insert(completed);
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    // Tells nginx-style proxies in front of us not to buffer the stream.
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    h.extend(headers);
    response
}

/// After a client leaves mid-stream, how long to wait for each further chunk, and in all, before the
/// upstream stream is dropped (which cancels it).
const DRAIN_GAP: Duration = Duration::from_millis(10);
const DRAIN_LIMIT: Duration = Duration::from_millis(250);

/// Moves one stream from the provider to the client, owning its accounting until the end.
struct Relay<I> {
    public_model: String,
    prices: Prices,
    encoder: Box<dyn StreamEncoder<I>>,
    usage: UsageGuard,
    hard_stop: tokio_util::sync::CancellationToken,
    /// Set for a stream that may continue elsewhere (`http::resume`).
    resume: Option<Box<dyn Resumable<I>>>,
    completed: StreamCompleted,
}

/// Set once a stream ended properly (its provider finished it), before its last frames go: a layer
/// that keeps a stream's bytes (`http::idempotency`) keeps only such a stream. In the response's
/// extensions.
#[derive(Debug, Clone, Default)]
pub struct StreamCompleted(std::sync::Arc<std::sync::atomic::AtomicBool>);

impl StreamCompleted {
    pub fn get(&self) -> bool {
        self.0.load(std::sync::atomic::Ordering::Acquire)
    }
}

enum End {
    Done,
    ClientGone,
    Failed(ProviderError),
    ShutDown,
}

impl<I: Relayed> Relay<I> {
    async fn run(mut self, mut upstream: ChunkStream<I>, tx: mpsc::Sender<Bytes>) {
        let end = 'streams: loop {
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
            // A provider that failed mid-way: the answer goes on from another target if it can.
            if let End::Failed(e) = &end
                && let Some(resume) = self.resume.as_mut()
            {
                let resumed = tokio::select! {
                    biased;
                    () = self.hard_stop.cancelled() => None,
                    () = tx.closed() => None,
                    next = resume.resume(e, &mut self.usage) => next,
                };
                if let Some((next, leading, prices)) = resumed {
                    drop(std::mem::replace(&mut upstream, next));
                    self.prices = prices;
                    for item in leading {
                        if let Some(frame) = self.render(item)
                            && tx.send(frame).await.is_err()
                        {
                            break 'streams End::ClientGone;
                        }
                    }
                    continue 'streams;
                }
            }
            break end;
        };
        // Dropping `upstream` before its body ended closes the connection, which cancels the generation.
        let (outcome, error) = match end {
            End::Done => {
                let mut frames = Vec::new();
                self.encoder.done(&mut frames);
                self.completed.0.store(true, std::sync::atomic::Ordering::Release);
                // Recorded before the client has the stream's end: a client that saw its answer has its
                // ledger row, whatever happens to the process next.
                self.usage.finish_in_place(Outcome::Completed, 200, None);
                let _ = tx.send(join(frames)).await;
                drop(tx); // The client's body ends here, not after the upstream's.
                upstream.finish_body(DRAIN_GAP).await;
                drop(upstream);
                return;
            }
            End::ClientGone => {
                // What has already arrived is read (and billed) rather than thrown away: a stream that was
                // all but done then keeps its pooled connection; one still generating is cut at its next
                // pause.
                let (model, prices, usage) = (&self.public_model, self.prices, &mut self.usage);
                upstream.drain_arrived(DRAIN_GAP, DRAIN_LIMIT, |mut item| item.prepare(model, prices, usage)).await;
                drop(upstream);
                (Outcome::ClientDisconnected, Some("client_disconnected".to_owned()))
            }
            End::Failed(e) => {
                drop(upstream);
                tracing::warn!(error = %e, "stream failed after it started");
                self.usage.trace_attempt_failed(&e.label());
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

    /// Prepares one item for the client and renders it; `None` when nothing is to be sent for it.
    fn render(&mut self, mut item: I) -> Option<Bytes> {
        item.prepare(&self.public_model, self.prices, &mut self.usage);
        let mut frames = Vec::new();
        match self.resume.as_mut() {
            None => self.encoder.chunk(&item, &mut frames),
            Some(resume) => {
                let mut items = Vec::with_capacity(1);
                resume.pass(item, &self.usage, &mut items);
                for item in &items {
                    self.encoder.chunk(item, &mut frames);
                }
            }
        }
        if frames.is_empty() {
            return None;
        }
        self.usage.first_byte();
        Some(join(frames))
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
