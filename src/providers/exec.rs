//! The executor: the one place that sends requests upstream and reads what comes back.
//!
//! It enforces every upstream deadline (connect in the client, first byte here, idle between body pieces,
//! and the attempt's total deadline), decodes the stream's framing (SSE, or AWS event-stream, as the
//! adapter names it), signs what the provider's credentials require, and hands bodies and events to the
//! adapter. Calls that are not one JSON POST (an upload streamed from the gateway's spool, a GET or
//! DELETE of a file or batch) go through [`forward`]. Errors leave here classified; credentials and
//! request URLs never appear in their messages.

use std::collections::VecDeque;
use std::pin::Pin;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::{Stream, StreamExt, TryStreamExt};
use http::{HeaderMap, StatusCode};
use tokio::time::{Instant, timeout_at};
use tower::ServiceExt;

use super::{Endpoint, Provider, StreamMapper, StreamStep, Transport, UpstreamRequest};
use crate::protocols::StreamItem;
use crate::protocols::{ErrorKind, ProviderError, TimeoutPhase};
use serde_json::Value;

use crate::config::Timeouts;
use crate::eventstream::EventStreamDecoder;
use crate::protocols::{ForwardBody, ForwardRequest, Framing};
use crate::schema::{
    ChatChunk, ChatRequest, ChatResponse, EmbeddingInput, EmbeddingRequest, EmbeddingResponse, ModerationRequest,
    RerankRequest, RerankResponse,
};
use crate::sse::{SseDecoder, SseEvent};

/// A stream's decoder, for the framing its adapter names.
enum Decoder {
    Sse(SseDecoder),
    EventStream(EventStreamDecoder),
}

impl Decoder {
    fn new(framing: Framing) -> Self {
        match framing {
            Framing::Sse => Decoder::Sse(SseDecoder::default()),
            Framing::EventStream => Decoder::EventStream(EventStreamDecoder::default()),
        }
    }

    fn push(&mut self, bytes: &[u8], out: &mut Vec<SseEvent>) -> Result<(), ProviderError> {
        let invalid = |e: String| ProviderError::new(ErrorKind::InvalidResponse, e);
        match self {
            Decoder::Sse(d) => d.push(bytes, out).map_err(|e| invalid(e.to_string())),
            Decoder::EventStream(d) => d.push(bytes, out).map_err(|e| invalid(e.to_string())),
        }
    }

    /// Whether the body stopped part-way through an event.
    fn finish(&mut self) -> bool {
        match self {
            Decoder::Sse(d) => d.finish(),
            Decoder::EventStream(d) => d.finish(),
        }
    }
}

type BodyStream = Pin<Box<dyn Stream<Item = Result<Bytes, String>> + Send>>;

/// Largest successful non-streamed body we read, and the prefix of an error body we keep.
const MAX_RESPONSE_BYTES: usize = 64 * 1024 * 1024;
const MAX_ERROR_BYTES: usize = 64 * 1024;

struct UpstreamResponse {
    status: StatusCode,
    headers: HeaderMap,
    body: BodyStream,
}

/// Sends one call built by `build` and returns the headers and whole body of a 2xx answer. A key the
/// provider rejected is set aside.
async fn call_whole(
    provider: &Provider,
    timeouts: &Timeouts,
    build: impl FnOnce(&Endpoint<'_>) -> Result<UpstreamRequest, ProviderError>,
    deadline: Instant,
) -> Result<(HeaderMap, Bytes), ProviderError> {
    let (resp, key) = open(provider, timeouts, build, deadline).await?;
    let body = read_body(resp.body, MAX_RESPONSE_BYTES, provider, timeouts, deadline)
        .await
        .inspect_err(|e| provider.note_failure(key, e))?;
    Ok((resp.headers, body))
}

/// Sends a non-streamed chat request and returns the parsed response.
pub async fn complete(
    provider: &Provider,
    timeouts: &Timeouts,
    req: &ChatRequest,
    deadline: Instant,
) -> Result<ChatResponse, ProviderError> {
    let (_, body) = call_whole(provider, timeouts, |ep| provider.adapter().chat_request(req, ep), deadline).await?;
    provider.adapter().parse_chat_response(req, &body)
}

/// Sends an embeddings request and returns the parsed response.
pub async fn embed(
    provider: &Provider,
    timeouts: &Timeouts,
    req: &EmbeddingRequest,
    deadline: Instant,
) -> Result<EmbeddingResponse, ProviderError> {
    let Some(per_call) = provider.adapter().embeddings_per_call(&req.model).filter(|n| *n > 0) else {
        return embed_one(provider, timeouts, req, deadline).await;
    };
    // The provider takes a few inputs per call: one call per group (a few at a time), answers joined in
    // the caller's order, usage summed. Any failed call fails the whole request.
    let Some(texts) = req.input.texts() else {
        return Err(crate::protocols::bad_request("This model's embeddings take text input, not token ids.", "input"));
    };
    if texts.len() <= per_call {
        return embed_one(provider, timeouts, req, deadline).await;
    }
    let parts: Vec<EmbeddingRequest> = texts
        .chunks(per_call)
        .map(|group| EmbeddingRequest {
            model: req.model.clone(),
            input: match group {
                [one] => EmbeddingInput::One((*one).to_owned()),
                many => EmbeddingInput::Many(many.iter().map(|t| (*t).to_owned()).collect()),
            },
            encoding_format: req.encoding_format,
            dimensions: req.dimensions,
            extra: req.extra.clone(),
        })
        .collect();
    // In order, at most a few in flight; the next starts as soon as one ends.
    let mut pending = parts.iter();
    let mut in_flight = futures_util::stream::FuturesOrdered::new();
    let mut answers = Vec::with_capacity(parts.len());
    for part in pending.by_ref().take(EMBEDDING_CALLS_AT_ONCE) {
        in_flight.push_back(embed_one(provider, timeouts, part, deadline));
    }
    while let Some(answer) = in_flight.next().await {
        answers.push(answer?);
        if let Some(part) = pending.next() {
            in_flight.push_back(embed_one(provider, timeouts, part, deadline));
        }
    }
    let mut answers = answers.into_iter();
    let Some(mut joined) = answers.next() else {
        return Err(crate::protocols::bad_request("There is nothing to embed.", "input"));
    };
    for answer in answers {
        joined.data.extend(answer.data);
        match (&mut joined.usage, answer.usage) {
            (Some(total), Some(u)) => {
                total.prompt_tokens += u.prompt_tokens;
                total.total_tokens += u.total_tokens;
            }
            (total @ None, Some(u)) => *total = Some(u),
            (_, None) => {}
        }
    }
    for (i, e) in joined.data.iter_mut().enumerate() {
        e.index = i as u32;
    }
    Ok(joined)
}

async fn embed_one(
    provider: &Provider,
    timeouts: &Timeouts,
    req: &EmbeddingRequest,
    deadline: Instant,
) -> Result<EmbeddingResponse, ProviderError> {
    let (headers, body) =
        call_whole(provider, timeouts, |ep| provider.adapter().embeddings_request(req, ep), deadline).await?;
    provider.adapter().parse_embeddings(req, &headers, &body)
}

/// How many of one request's embeddings calls are in flight at once, for providers that take few inputs
/// per call.
const EMBEDDING_CALLS_AT_ONCE: usize = 4;

/// Sends a rerank request and reads the answer, whichever of the rerank shapes it came in.
pub async fn rerank(
    provider: &Provider,
    timeouts: &Timeouts,
    req: &RerankRequest,
    deadline: Instant,
) -> Result<RerankResponse, ProviderError> {
    let (_, body) = call_whole(provider, timeouts, |ep| provider.adapter().rerank_request(req, ep), deadline).await?;
    serde_json::from_slice(&body).map_err(|e| {
        ProviderError::new(ErrorKind::InvalidResponse, format!("the provider's response is not a rerank result: {e}"))
    })
}

/// Sends a moderations request and returns the provider's JSON answer as it is.
pub async fn moderate(
    provider: &Provider,
    timeouts: &Timeouts,
    req: &ModerationRequest,
    deadline: Instant,
) -> Result<Value, ProviderError> {
    let (_, body) =
        call_whole(provider, timeouts, |ep| provider.adapter().moderation_request(req, ep), deadline).await?;
    serde_json::from_slice(&body)
        .map_err(|e| ProviderError::new(ErrorKind::InvalidResponse, format!("unreadable moderation result: {e}")))
}

/// Sends a call built by `build` and returns the whole body of a 2xx answer, for a door that passes a
/// protocol through natively and parses the answer itself.
pub async fn call(
    provider: &Provider,
    timeouts: &Timeouts,
    build: impl FnOnce(&Endpoint<'_>) -> Result<UpstreamRequest, ProviderError>,
    deadline: Instant,
) -> Result<Bytes, ProviderError> {
    call_whole(provider, timeouts, build, deadline).await.map(|(_, body)| body)
}

/// Sends a call built by `build` and returns the answer once it is a 2xx one, its body unread, with the
/// index of the key it used. A key the provider rejected is set aside.
async fn open(
    provider: &Provider,
    timeouts: &Timeouts,
    build: impl FnOnce(&Endpoint<'_>) -> Result<UpstreamRequest, ProviderError>,
    deadline: Instant,
) -> Result<(UpstreamResponse, Option<usize>), ProviderError> {
    let endpoint = provider.endpoint()?;
    let key = endpoint.key_index;
    let mut upstream = build(&endpoint)?;
    authorize(provider, &mut upstream, deadline).await?;
    Ok((send_checked(provider, timeouts, key, upstream.into(), deadline).await?, key))
}

/// Sends a built call and returns the answer once it is a 2xx one; a failure is noted against the key
/// (`key`) it used.
async fn send_checked(
    provider: &Provider,
    timeouts: &Timeouts,
    key: Option<usize>,
    upstream: ForwardRequest,
    deadline: Instant,
) -> Result<UpstreamResponse, ProviderError> {
    let opened = async {
        let resp = send(provider, timeouts, upstream, deadline).await?;
        reject_error_status(provider, timeouts, resp, deadline).await
    }
    .await;
    opened.inspect_err(|e| provider.note_failure(key, e))
}

/// Sends a forwarded call (an upload, a GET, a DELETE: see [`ForwardRequest`]) and returns the body of a
/// 2xx answer as it arrives, with its `content-type`. Providers that sign or mint their credentials take
/// none (the endpoints are OpenAI's).
pub async fn forward(
    provider: &Provider,
    timeouts: &Timeouts,
    build: impl FnOnce(&Endpoint<'_>) -> Result<ForwardRequest, ProviderError>,
    deadline: Instant,
) -> Result<RawStream, ProviderError> {
    if provider.signs() {
        return Err(ProviderError::new(
            ErrorKind::Untranslatable,
            "this model's provider does not offer this endpoint",
        ));
    }
    let endpoint = provider.endpoint()?;
    let key = endpoint.key_index;
    let upstream = build(&endpoint)?;
    let resp = send_checked(provider, timeouts, key, upstream, deadline).await?;
    Ok(RawStream::new(resp, timeouts, deadline))
}

/// Sends a call built by `build` and returns the body of a 2xx answer as it arrives, unparsed (speech),
/// with the answer's `content-type`.
pub async fn open_raw(
    provider: &Provider,
    timeouts: &Timeouts,
    build: impl FnOnce(&Endpoint<'_>) -> Result<UpstreamRequest, ProviderError>,
    deadline: Instant,
) -> Result<RawStream, ProviderError> {
    let (resp, _) = open(provider, timeouts, build, deadline).await?;
    Ok(RawStream::new(resp, timeouts, deadline))
}

/// A 2xx answer's body, piece by piece, under the idle and total deadlines.
pub struct RawStream {
    pub content_type: Option<http::HeaderValue>,
    body: BodyStream,
    /// A piece read ahead by [`prime`](RawStream::prime), handed out first.
    held: Option<Bytes>,
    idle: Duration,
    deadline: Instant,
}

impl RawStream {
    fn new(resp: UpstreamResponse, timeouts: &Timeouts, deadline: Instant) -> RawStream {
        RawStream {
            content_type: resp.headers.get(http::header::CONTENT_TYPE).cloned(),
            body: resp.body,
            held: None,
            idle: timeouts.idle,
            deadline,
        }
    }

    /// Reads the first non-empty piece ahead (under the same deadlines); an answer that ends before it
    /// is an invalid one.
    pub async fn prime(&mut self) -> Result<(), ProviderError> {
        loop {
            match self.next().await? {
                Some(piece) if piece.is_empty() => continue,
                Some(piece) => {
                    self.held = Some(piece);
                    return Ok(());
                }
                None => return Err(ProviderError::new(ErrorKind::InvalidResponse, "the provider's answer was empty")),
            }
        }
    }

    /// Whether the answer says it is JSON.
    pub fn is_json(&self) -> bool {
        self.content_type.as_ref().and_then(|t| t.to_str().ok()).is_some_and(|t| t.contains("json"))
    }

    /// The rest of the body, whole, at most `limit` bytes.
    pub async fn read_all(mut self, limit: usize) -> Result<Bytes, ProviderError> {
        let mut buf = BytesMut::new();
        while let Some(piece) = self.next().await? {
            if buf.len() + piece.len() > limit {
                return Err(ProviderError::new(ErrorKind::InvalidResponse, "the provider's response is too large"));
            }
            buf.extend_from_slice(&piece);
        }
        Ok(buf.freeze())
    }

    /// The next piece; `Ok(None)` at the end of the body.
    pub async fn next(&mut self) -> Result<Option<Bytes>, ProviderError> {
        if let Some(piece) = self.held.take() {
            return Ok(Some(piece));
        }
        let (at, phase) = next_deadline(self.idle, self.deadline);
        match timeout_at(at, self.body.next()).await {
            Err(_) => Err(ProviderError::timeout(phase)),
            Ok(None) => Ok(None),
            Ok(Some(Ok(piece))) => Ok(Some(piece)),
            Ok(Some(Err(cause))) => {
                tracing::warn!(%cause, "upstream body broke");
                Err(interrupted())
            }
        }
    }
}

/// Sends a streamed chat request and returns its chunks once the provider has answered 2xx.
pub async fn open_stream(
    provider: &Provider,
    timeouts: &Timeouts,
    req: &ChatRequest,
    deadline: Instant,
) -> Result<ChunkStream, ProviderError> {
    let mapper = provider.adapter().stream_mapper(req);
    open_stream_with(provider, timeouts, |ep| provider.adapter().chat_request(req, ep), mapper, deadline).await
}

/// Sends a streamed call built by `build` and returns its items, as `mapper` reads them, once the
/// provider has answered 2xx.
pub async fn open_stream_with<I: StreamItem>(
    provider: &Provider,
    timeouts: &Timeouts,
    build: impl FnOnce(&Endpoint<'_>) -> Result<UpstreamRequest, ProviderError>,
    mapper: Box<dyn StreamMapper<I>>,
    deadline: Instant,
) -> Result<ChunkStream<I>, ProviderError> {
    let (resp, _) = open(provider, timeouts, build, deadline).await?;
    Ok(ChunkStream {
        body: resp.body,
        decoder: Decoder::new(provider.adapter().framing()),
        mapper,
        events: Vec::new(),
        mapped: Vec::new(),
        pending: VecDeque::new(),
        idle: timeouts.idle,
        deadline,
        done: false,
        saw_finish: false,
        body_ended: false,
    })
}

/// The provider's credentials added to a built request, within the attempt's deadline (a token fetch
/// counts against it).
async fn authorize(provider: &Provider, req: &mut UpstreamRequest, deadline: Instant) -> Result<(), ProviderError> {
    if !provider.signs() {
        return Ok(());
    }
    timeout_at(deadline, provider.authorize(req))
        .await
        .unwrap_or_else(|_| Err(ProviderError::timeout(TimeoutPhase::Total)))
}

async fn send(
    provider: &Provider,
    timeouts: &Timeouts,
    mut req: ForwardRequest,
    deadline: Instant,
) -> Result<UpstreamResponse, ProviderError> {
    if let ForwardBody::Streamed { len, .. } = &req.body {
        req.headers.insert(http::header::CONTENT_LENGTH, (*len).into());
    }
    // An upload is sent before the provider can answer: only the whole deadline bounds it.
    let first_byte = Instant::now() + timeouts.first_byte;
    let (limit, phase) = if first_byte < deadline && !matches!(req.body, ForwardBody::Streamed { .. }) {
        (first_byte, TimeoutPhase::FirstByte)
    } else {
        (deadline, TimeoutPhase::Total)
    };
    match &provider.transport {
        Transport::Http(clients) => {
            let uri: http::Uri = req
                .url
                .try_into()
                .map_err(|_| ProviderError::new(ErrorKind::BadRequest, "the provider's URL is not valid"))?;
            let mut builder = http::Request::builder().method(req.method).uri(uri);
            if let Some(h) = builder.headers_mut() {
                *h = req.headers;
                super::propagation::insert_upstream(h);
                if let Some(auth) = clients.settings.proxy_authorization() {
                    h.insert(http::header::PROXY_AUTHORIZATION, auth.clone());
                }
            }
            let body = match req.body {
                ForwardBody::Empty => super::client::whole(Bytes::new()),
                ForwardBody::Whole(b) => super::client::whole(b),
                ForwardBody::Streamed { stream, .. } => {
                    use http_body_util::BodyExt;
                    let frames = stream.map_ok(hyper::body::Frame::data).map_err(|e| Box::new(e) as _);
                    http_body_util::Either::Right(http_body_util::StreamBody::new(frames).boxed_unsync())
                }
            };
            let request = builder.body(body).map_err(|e| ProviderError::new(ErrorKind::BadRequest, e.to_string()))?;
            let resp = match timeout_at(limit, clients.get().request(request)).await {
                Err(_) => return Err(ProviderError::timeout(phase)),
                Ok(Err(e)) => return Err(transport_error(provider, &e)),
                Ok(Ok(resp)) => resp,
            };
            let (parts, body) = resp.into_parts();
            let body = http_body_util::BodyDataStream::new(body).map_err(|e| e.to_string());
            Ok(UpstreamResponse { status: parts.status, headers: parts.headers, body: Box::pin(body) })
        }
        Transport::InProcess(router) => {
            let path = req.url.splitn(4, '/').nth(3).map(|p| format!("/{p}")).unwrap_or_default();
            let mut builder = http::Request::builder().method(req.method).uri(path);
            if let Some(h) = builder.headers_mut() {
                *h = req.headers;
                super::propagation::insert_upstream(h);
            }
            let body = match req.body {
                ForwardBody::Empty => axum::body::Body::empty(),
                ForwardBody::Whole(b) => axum::body::Body::from(b),
                ForwardBody::Streamed { stream, .. } => axum::body::Body::from_stream(stream),
            };
            let request = builder.body(body).map_err(|e| ProviderError::new(ErrorKind::BadRequest, e.to_string()))?;
            let resp = match timeout_at(limit, router.clone().oneshot(request)).await {
                Err(_) => return Err(ProviderError::timeout(phase)),
                Ok(Ok(resp)) => resp,
                Ok(Err(never)) => match never {},
            };
            let (parts, body) = resp.into_parts();
            let body = body.into_data_stream().map_err(|e| e.to_string());
            Ok(UpstreamResponse { status: parts.status, headers: parts.headers, body: Box::pin(body) })
        }
    }
}

fn transport_error(provider: &Provider, e: &hyper_util::client::legacy::Error) -> ProviderError {
    let kind = match super::client::classify(e) {
        (true, true) => ErrorKind::Timeout(TimeoutPhase::Connect),
        (_, true) => ErrorKind::Timeout(TimeoutPhase::Total),
        _ => ErrorKind::Connection,
    };
    // Log the cause for operators (without the URL); the caller gets a summary.
    let mut cause = String::new();
    let mut source: Option<&dyn std::error::Error> = Some(e);
    while let Some(s) = source {
        cause = s.to_string();
        source = s.source();
    }
    tracing::warn!(provider = %provider.name, cause = %provider.redact(cause), "upstream transport error");
    match kind {
        ErrorKind::Timeout(phase) => ProviderError::timeout(phase),
        _ => ProviderError::new(kind, format!("could not reach provider \"{}\"", provider.name)),
    }
}

async fn reject_error_status(
    provider: &Provider,
    timeouts: &Timeouts,
    resp: UpstreamResponse,
    deadline: Instant,
) -> Result<UpstreamResponse, ProviderError> {
    if resp.status.is_success() {
        return Ok(resp);
    }
    // An unreadable error body still leaves the status to classify by.
    let body = read_body(resp.body, MAX_ERROR_BYTES, provider, timeouts, deadline).await.unwrap_or_default();
    let mut err = provider.adapter().classify_error(resp.status, &resp.headers, &body);
    err.message = provider.redact(err.message);
    Err(err)
}

/// Reads a whole body, up to `limit` bytes (an error body is cut there, a success body is refused).
async fn read_body(
    mut body: BodyStream,
    limit: usize,
    provider: &Provider,
    timeouts: &Timeouts,
    deadline: Instant,
) -> Result<Bytes, ProviderError> {
    let mut buf = BytesMut::new();
    loop {
        let (at, phase) = next_deadline(timeouts.idle, deadline);
        match timeout_at(at, body.next()).await {
            Err(_) => return Err(ProviderError::timeout(phase)),
            Ok(None) => return Ok(buf.freeze()),
            Ok(Some(Err(e))) => {
                tracing::warn!(provider = %provider.name, cause = %e, "upstream body broke");
                return Err(ProviderError::new(ErrorKind::Connection, "the provider's response was cut off"));
            }
            Ok(Some(Ok(piece))) => {
                if buf.len() + piece.len() > limit {
                    if limit == MAX_ERROR_BYTES {
                        buf.extend_from_slice(&piece[..limit - buf.len()]);
                        return Ok(buf.freeze());
                    }
                    return Err(ProviderError::new(ErrorKind::InvalidResponse, "the provider's response is too large"));
                }
                buf.extend_from_slice(&piece);
            }
        }
    }
}

fn next_deadline(idle: std::time::Duration, deadline: Instant) -> (Instant, TimeoutPhase) {
    let idle_at = Instant::now() + idle;
    if idle_at < deadline { (idle_at, TimeoutPhase::Idle) } else { (deadline, TimeoutPhase::Total) }
}

/// The items of one upstream stream (canonical chunks unless a door passes a protocol through), read
/// lazily as the caller asks for them.
pub struct ChunkStream<I: StreamItem = ChatChunk> {
    body: BodyStream,
    decoder: Decoder,
    mapper: Box<dyn StreamMapper<I>>,
    events: Vec<SseEvent>,
    mapped: Vec<I>,
    pending: VecDeque<I>,
    idle: std::time::Duration,
    deadline: Instant,
    done: bool,
    saw_finish: bool,
    /// The body itself has ended (not just the events, which end at `[DONE]`).
    body_ended: bool,
}

impl<I: StreamItem> ChunkStream<I> {
    /// The next item; `Ok(None)` once the provider has finished the stream properly.
    pub async fn next(&mut self) -> Result<Option<I>, ProviderError> {
        loop {
            if let Some(chunk) = self.pending.pop_front() {
                return Ok(Some(chunk));
            }
            if self.done {
                return Ok(None);
            }
            if !self.events.is_empty() {
                for event in self.events.drain(..) {
                    if self.mapper.map(&event, &mut self.mapped)? == StreamStep::Done {
                        self.done = true;
                        self.mapper.end(&mut self.mapped);
                        break;
                    }
                }
                self.events.clear();
                self.saw_finish |= self.mapper.finished() || self.mapped.iter().any(StreamItem::is_final);
                self.pending.extend(self.mapped.drain(..));
                continue;
            }
            let (at, phase) = next_deadline(self.idle, self.deadline);
            match timeout_at(at, self.body.next()).await {
                // A mapper holding its last items back has read the stream's final one: what breaks
                // after it (a connection cut before `[DONE]`) ends a finished stream.
                Ok(Some(Err(_))) | Err(_) if self.mapper.finished() => {
                    self.done = true;
                    self.mapper.end(&mut self.mapped);
                    self.pending.extend(self.mapped.drain(..));
                }
                Err(_) => return Err(ProviderError::timeout(phase)),
                Ok(Some(Ok(bytes))) => self.decoder.push(&bytes, &mut self.events)?,
                Ok(Some(Err(cause))) => {
                    tracing::warn!(%cause, "upstream stream broke");
                    return Err(interrupted());
                }
                Ok(None) => {
                    self.done = true;
                    self.body_ended = true;
                    let partial = self.decoder.finish();
                    // Some OpenAI-compatible servers close without `[DONE]` after the last chunk; that is
                    // a finished stream. Anything else that just stops is a cut.
                    if partial || !self.saw_finish {
                        return Err(interrupted());
                    }
                    self.mapper.end(&mut self.mapped);
                    self.pending.extend(self.mapped.drain(..));
                }
            }
        }
    }

    /// After the client has left: reads on only while the rest of the stream is already arriving (each
    /// chunk within `gap`, all of it within `limit`), handing each chunk to `each`. A stream that was all
    /// but finished then ends properly, so its connection goes back to the pool and its usage is known;
    /// one still being generated is left at the first pause, and dropping it cancels it upstream.
    pub async fn drain_arrived(&mut self, gap: Duration, limit: Duration, mut each: impl FnMut(I)) {
        let until = Instant::now() + limit;
        loop {
            let at = (Instant::now() + gap).min(until);
            match timeout_at(at, self.next()).await {
                Ok(Ok(Some(chunk))) => each(chunk),
                Ok(Ok(None)) => return self.finish_body(gap).await,
                Ok(Err(_)) | Err(_) => return,
            }
        }
    }

    /// After the stream's last event: reads what is left of the body (the end of a chunked body follows
    /// `[DONE]`), waiting at most `wait`, so the connection can go back to the pool instead of being
    /// closed with unread bytes.
    pub async fn finish_body(&mut self, wait: Duration) {
        if !self.done {
            return;
        }
        let until = Instant::now() + wait;
        while !self.body_ended {
            match timeout_at(until, self.body.next()).await {
                Ok(Some(Ok(_))) => {}
                Ok(Some(Err(_))) | Ok(None) | Err(_) => self.body_ended = true,
            }
        }
    }
}

fn interrupted() -> ProviderError {
    ProviderError::new(ErrorKind::StreamInterrupted, "the provider's stream ended unexpectedly")
}
