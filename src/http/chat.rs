//! `POST /v1/chat/completions`, and the chat path every chat-shaped door shares (`serve_chat`): the
//! pipeline plans, admits and walks the targets; this makes each attempt and renders the answer, whole or
//! as a stream, in the door's `Dialect`.
//!
//! A door whose own protocol some providers speak (Messages, generateContent) also brings a
//! [`Passthrough`]: to such a provider its request goes as it came, and the answer comes back as the
//! provider wrote it. Streams, whichever kind, are moved by `http::relay` (committed after the preamble,
//! so a failure before content still falls back; after it, the door's error event, never a silent stop).

use std::collections::VecDeque;
use std::sync::Arc;

use axum::Extension;
use axum::body::Body;
use axum::extract::State;
use axum::response::Response;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue};
use tokio::time::Instant;

use super::cache;
use super::observe::RequestId;
use super::pipeline::{Call, Intake, Pipeline, Served};
use super::relay;
use super::resume;
use super::{GatewayError, body, input};
use crate::app::AppState;
use crate::protocols::{Dialect, Invalid, Native, NativeCall, StreamEncoder, StreamItem, StreamMapper, bad_request};
use crate::providers::ProviderError;
use crate::providers::exec::{self, ChunkStream};
use crate::routing::{ModelEntry, RequestFeatures};
use crate::schema::{ChatChunk, ChatRequest, ChatResponse, Usage};
use crate::tenancy::ActiveKey;
use crate::usage::Prices;

pub async fn create_chat_completion(
    State(state): State<Arc<AppState>>,
    Extension(request_id): Extension<RequestId>,
    key: Option<Extension<Arc<ActiveKey>>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, GatewayError> {
    let started = Instant::now();
    let req: ChatRequest = body::read_json(&headers, body, state.live().body_limits).await?;
    let dialect = crate::protocols::openai::OpenAi { wants_usage: req.wants_stream_usage() };
    let door = ChatDoor::canonical(Box::new(dialect));
    serve_chat(&state, &request_id, key.map(|Extension(k)| k), req, started, door, &headers).await
}

/// What a chat-shaped door brings to the shared chat path: how it renders answers, and, for a door whose
/// own protocol some providers speak (Messages, generateContent), that protocol passed through.
pub(super) struct ChatDoor<P> {
    pub dialect: Box<dyn Dialect>,
    /// The door's own request, for a target whose provider speaks its protocol.
    pub native: Option<P>,
    /// Why the request cannot be translated to another protocol, if it cannot (a translated attempt is
    /// refused with it; a native one goes ahead).
    pub problem: Option<Invalid>,
}

impl ChatDoor<Canonical> {
    /// A door that speaks the canonical protocol itself.
    pub fn canonical(dialect: Box<dyn Dialect>) -> Self {
        ChatDoor { dialect, native: None, problem: None }
    }
}

/// A door's protocol passed through natively: what the chat path needs to know of it. Every method is
/// called only for an attempt on a target whose provider [`speaks`](crate::protocols::Adapter::speaks)
/// [`protocol`](Passthrough::protocol).
pub(super) trait Passthrough: Send + Sync {
    /// One event of the protocol's stream.
    type Event: resume::Continuable;
    /// Which protocol the door speaks.
    fn protocol(&self) -> Native;
    /// Called once per native attempt: the door's request for the upstream `model` (a serialisation
    /// of the request as it came, model replaced).
    fn body(&self, model: &str) -> Bytes;
    /// Called once per native attempt: the caller's protocol headers that travel with the request.
    fn forwarded(&self) -> &HeaderMap;
    /// Called once per streamed native attempt: reads the provider's events.
    fn mapper(&self) -> Box<dyn StreamMapper<Self::Event>>;
    /// Called with a whole native answer's body: the answer as the caller gets it (the public model
    /// put in, the cost beside the usage) and its usage. An `Err` is a failed attempt.
    fn whole(&self, body: &[u8], public_model: &str, prices: Prices)
    -> Result<(Vec<u8>, Option<Usage>), ProviderError>;
    /// Called once when a native stream is committed: renders its events for the caller.
    fn encoder(&self) -> Box<dyn StreamEncoder<Self::Event>>;
}

/// The chat door's protocol is the canonical one: nothing passes through (no value of this type exists).
pub(super) enum Canonical {}

impl Passthrough for Canonical {
    type Event = ChatChunk;

    fn protocol(&self) -> Native {
        match *self {}
    }

    fn body(&self, _model: &str) -> Bytes {
        match *self {}
    }

    fn forwarded(&self) -> &HeaderMap {
        match *self {}
    }

    fn mapper(&self) -> Box<dyn StreamMapper<ChatChunk>> {
        match *self {}
    }

    fn whole(&self, _body: &[u8], _model: &str, _prices: Prices) -> Result<(Vec<u8>, Option<Usage>), ProviderError> {
        match *self {}
    }

    fn encoder(&self) -> Box<dyn StreamEncoder<ChatChunk>> {
        match *self {}
    }
}

/// Serves one chat request in any dialect: the pipeline plans, admits and walks the targets; this makes
/// each attempt (whole or streamed, translated or passed through) and renders what answered.
pub(super) async fn serve_chat<P: Passthrough>(
    state: &Arc<AppState>,
    request_id: &RequestId,
    key: Option<Arc<ActiveKey>>,
    mut req: ChatRequest,
    started: Instant,
    door: ChatDoor<P>,
    headers: &HeaderMap,
) -> Result<Response, GatewayError> {
    {
        let config = &state.live().config;
        input::check_not_empty(&req).and_then(|()| input::check_chat(&config.input, config.server.max_choices, &req))
    }
    .map_err(|e| e.into_error(door.dialect.param_names()))?;
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
            operation: "chat",
        };
        Pipeline::admit(state, request_id, key.as_ref(), headers, intake).await?
    };
    crate::schema::strip_own_fields(&mut req.extra);
    // The response cache (opt-in): the plan's first target is the one whose kept answer may serve it.
    let first = pipeline.plan.targets.first().cloned();
    let cache_use = first.as_ref().map_or(cache::Use::Off, |t| {
        let native_first = door.native.as_ref().is_some_and(|n| t.provider.adapter().speaks(n.protocol()));
        cache::decide(key.as_deref(), headers, &req, &t.name, native_first)
    });
    if let (cache::Use::On { key: kept, read: true, max_age, .. }, Some(target)) = (&cache_use, &first)
        && let Some(hit) = state.cache.get(kept).await
        && let age = (crate::clock::now_ms() - hit.written_at).max(0) / 1000
        && max_age.is_none_or(|m| age <= m)
        && let Ok(resp) = serde_json::from_slice::<ChatResponse>(&hit.value)
    {
        let mut served = pipeline.answered_from_cache(target.clone());
        served.headers.insert(http::header::AGE, HeaderValue::from(age));
        return Ok(cached_answer(served, resp, door.dialect.as_ref(), req.is_streaming()));
    }
    if req.is_streaming() {
        // Switchyard always learns a stream's usage; the caller's own choice is honoured when forwarding.
        req.stream_options.get_or_insert_with(Default::default).include_usage = Some(true);
    }
    let ChatDoor { dialect, native, problem } = door;
    let mut attempt = Attempt { req: &mut req, native: native.as_ref(), problem: problem.as_ref() };
    let Served { value, target, mut usage, headers: mut response_headers, mut rest, deadline } =
        pipeline.run(&mut attempt).await?;
    if let Some(v) = cache_use.miss_header() {
        response_headers.insert("x-switchyard-cache", v);
    }
    // Kept only as the first target's answer, which is what the key names (not a fallback's).
    let keep = cache_use.keep().filter(|_| first.as_ref().is_some_and(|f| Arc::ptr_eq(f, &target)));
    let (body, cost) = match value {
        Answer::Whole(mut resp) => {
            resp.model.clone_from(&target.name);
            let cost = resp.usage.as_mut().and_then(|u| {
                usage.provider_usage(u);
                relay::add_cost(u, target.prices())
            });
            if let Some((kept, ttl)) = keep
                && cache::keepable(&resp)
                && let Ok(bytes) = serde_json::to_vec(&resp)
            {
                state.cache.put(kept.to_owned(), Bytes::from(bytes), ttl);
            }
            (dialect.whole(&resp), cost)
        }
        Answer::NativeWhole(body, reported) => {
            let cost = reported.as_ref().and_then(|u| {
                usage.provider_usage(u);
                target.prices().cost_micros(u.prompt_tokens, u.cached_tokens(), u.completion_tokens)
            });
            (body, cost)
        }
        Answer::Stream(stream, leading) => {
            // A translated stream can go on from another target if its provider fails mid-way.
            let resume: Option<Box<dyn resume::Resumable<ChatChunk>>> = (!rest.is_empty()).then(|| {
                Box::new(resume::Resume::<ChatChunk>::new(
                    req,
                    target.clone(),
                    std::mem::take(&mut rest),
                    state.live().router.breaker,
                    deadline,
                )) as _
            });
            let encoder = match keep {
                Some((kept, ttl)) => Box::new(cache::Gathering::new(dialect.stream(), state.cache.clone(), kept, ttl)),
                None => dialect.stream(),
            };
            return Ok(relay::respond_resumable(
                state,
                Served { value: (stream, leading), target, usage, headers: response_headers, rest, deadline },
                encoder,
                resume,
            ));
        }
        Answer::NativeStream(stream, leading) => {
            let encoder = native.as_ref().map(Passthrough::encoder).ok_or_else(GatewayError::internal)?;
            // Passed through, it goes on in chat from another target, when chat can carry the request.
            let resume: Option<Box<dyn resume::Resumable<P::Event>>> =
                (!rest.is_empty() && problem.is_none()).then(|| {
                    Box::new(resume::Resume::<P::Event>::new(
                        req,
                        target.clone(),
                        std::mem::take(&mut rest),
                        state.live().router.breaker,
                        deadline,
                    )) as _
                });
            let served = Served { value: (stream, leading), target, usage, headers: response_headers, rest, deadline };
            return Ok(relay::respond_resumable(state, served, encoder, resume));
        }
    };
    let mut response = Served { value: (), target, usage, headers: response_headers, rest, deadline }.json(body);
    if let Some(micros) = cost {
        response.headers_mut().insert("x-switchyard-cost-micros", HeaderValue::from(micros));
    }
    Ok(response)
}

/// An answer from the response cache in the door's dialect, whole or as a stream, under a new id: the
/// cached tokens shown, at no cost.
fn cached_answer(served: Served<()>, mut resp: ChatResponse, dialect: &dyn Dialect, streamed: bool) -> Response {
    resp.id = format!("chatcmpl-{}", uuid::Uuid::new_v4().simple());
    resp.created = (crate::clock::now_ms() / 1000).unsigned_abs();
    resp.model.clone_from(&served.target.name);
    if let Some(u) = &mut resp.usage {
        relay::put_cost(&mut u.extra, 0);
    }
    if !streamed {
        return served.json(dialect.whole(&resp));
    }
    let mut encoder = dialect.stream();
    let mut frames = Vec::new();
    for chunk in cache::chunks_of(&resp) {
        encoder.chunk(&chunk, &mut frames);
    }
    encoder.done(&mut frames);
    let body: Vec<u8> = frames.concat();
    let Served { usage, headers, .. } = served;
    usage.finish(crate::usage::Outcome::Completed, 200, None);
    let mut response = Response::new(Body::from(body));
    let h = response.headers_mut();
    h.insert(http::header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    h.insert(http::header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.extend(headers);
    response
}

/// What one attempt produced.
enum Answer<E: StreamItem> {
    Whole(ChatResponse),
    /// A whole answer passed through: the body for the caller, and its usage.
    NativeWhole(Vec<u8>, Option<Usage>),
    Stream(ChunkStream, VecDeque<ChatChunk>),
    NativeStream(ChunkStream<E>, VecDeque<E>),
}

/// One attempt on one target: passed through when the target's provider speaks the door's protocol,
/// else the canonical request (rewritten in place: a translated attempt copies no body).
struct Attempt<'r, P> {
    req: &'r mut ChatRequest,
    native: Option<&'r P>,
    problem: Option<&'r Invalid>,
}

impl<P: Passthrough> Call for Attempt<'_, P> {
    type Output = Answer<P::Event>;

    async fn call(&mut self, target: &ModelEntry, deadline: Instant) -> Result<Self::Output, ProviderError> {
        let (provider, timeouts) = (&target.provider, &target.timeouts);
        let streamed = self.req.is_streaming();
        if let Some(native) = self.native
            && provider.adapter().speaks(native.protocol())
        {
            let call = NativeCall {
                model: &target.upstream,
                stream: streamed,
                body: native.body(&target.upstream),
                forwarded: native.forwarded(),
            };
            let protocol = native.protocol();
            let build = |ep: &crate::providers::Endpoint<'_>| provider.adapter().native_request(protocol, call, ep);
            if !streamed {
                let raw = exec::call(provider, timeouts, build, deadline).await?;
                let (body, usage) = native.whole(&raw, &target.name, target.prices())?;
                return Ok(Answer::NativeWhole(body, usage));
            }
            let stream = exec::open_stream_with(provider, timeouts, build, native.mapper(), deadline).await?;
            let (stream, leading) = relay::past_preamble(stream).await?;
            return Ok(Answer::NativeStream(stream, leading));
        }
        if let Some(p) = self.problem {
            return Err(bad_request(p.message.clone(), &p.param));
        }
        self.req.model.clone_from(&target.upstream);
        if !streamed {
            return Ok(Answer::Whole(complete(target, self.req, deadline).await?));
        }
        let (stream, leading) =
            relay::past_preamble(exec::open_stream(provider, timeouts, self.req, deadline).await?).await?;
        Ok(Answer::Stream(stream, leading))
    }
}

/// A whole chat answer with every choice asked for: from one call, or, when the provider returns one
/// choice only, from `n` calls made together and merged (choices indexed in order, usage summed, so each
/// call is billed).
pub(super) async fn complete(
    target: &ModelEntry,
    req: &ChatRequest,
    deadline: Instant,
) -> Result<ChatResponse, ProviderError> {
    let n = req.n.unwrap_or(1);
    if n <= 1 || target.provider.adapter().supports_n() {
        return exec::complete(&target.provider, &target.timeouts, req, deadline).await;
    }
    let mut one = req.clone();
    one.n = None;
    let calls = (0..n).map(|_| exec::complete(&target.provider, &target.timeouts, &one, deadline));
    let mut answers = futures_util::future::try_join_all(calls).await?.into_iter();
    let Some(mut merged) = answers.next() else {
        return exec::complete(&target.provider, &target.timeouts, req, deadline).await;
    };
    for (i, answer) in answers.enumerate() {
        for mut choice in answer.choices {
            choice.index = i as u32 + 1;
            merged.choices.push(choice);
        }
        if let (Some(sum), Some(u)) = (merged.usage.as_mut(), answer.usage) {
            sum.add(&u);
        }
    }
    Ok(merged)
}
