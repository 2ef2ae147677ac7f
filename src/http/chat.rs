//! `POST /v1/chat/completions`, and the chat path every chat-shaped door shares (`serve_chat`): the
//! pipeline plans, admits and walks the targets; this makes each attempt and renders the answer, whole or
//! as a stream, in the door's `Dialect`.
//!
//! A stream is committed (200 and headers sent) only once the provider's first chunk is in hand, so every
//! failure before that gets a proper HTTP status. After that, chunks are forwarded one by one as they
//! arrive; a failure ends the stream with an error event and no `[DONE]`, never a silent stop.

use std::collections::VecDeque;
use std::sync::Arc;

use axum::Extension;
use axum::body::Body;
use axum::extract::State;
use axum::response::Response;
use http::{HeaderMap, HeaderValue};
use tokio::time::Instant;

use super::observe::RequestId;
use super::pipeline::{Call, Intake, Pipeline};
use super::relay;
use super::{GatewayError, body};
use crate::app::AppState;
use crate::protocols::Dialect;
use crate::providers::ProviderError;
use crate::providers::exec::{self, ChunkStream};
use crate::routing::{ModelEntry, RequestFeatures};
use crate::schema::{ChatChunk, ChatRequest, ChatResponse};
use crate::tenancy::ActiveKey;

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
    validate(&req, state.max_choices)?;
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
            relay::add_cost(u, served.target.prices())
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
    Ok(relay::respond(state, served, dialect.stream()))
}

/// A whole chat answer from one target.
struct Whole<'r>(&'r mut ChatRequest);

impl Call for Whole<'_> {
    type Output = ChatResponse;

    async fn call(&mut self, target: &ModelEntry, deadline: Instant) -> Result<ChatResponse, ProviderError> {
        self.0.model.clone_from(&target.upstream);
        complete(target, self.0, deadline).await
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
            sum.prompt_tokens += u.prompt_tokens;
            sum.completion_tokens += u.completion_tokens;
            sum.total_tokens += u.total_tokens;
        }
    }
    Ok(merged)
}

/// A stream from one target, opened past its preamble.
struct Streamed<'r>(&'r mut ChatRequest);

impl Call for Streamed<'_> {
    type Output = (ChunkStream, VecDeque<ChatChunk>);

    async fn call(&mut self, target: &ModelEntry, deadline: Instant) -> Result<Self::Output, ProviderError> {
        self.0.model.clone_from(&target.upstream);
        relay::past_preamble(exec::open_stream(&target.provider, &target.timeouts, self.0, deadline).await?).await
    }
}

fn validate(req: &ChatRequest, max_choices: u32) -> Result<(), GatewayError> {
    if req.messages.is_empty() {
        return Err(GatewayError::invalid_value("'messages' must contain at least one message.", "messages"));
    }
    check_choices(req.n.unwrap_or(1), max_choices)
}

/// `n`: at least one choice, and no more than the gateway's cap (each may cost a whole answer).
pub(super) fn check_choices(n: u32, max_choices: u32) -> Result<(), GatewayError> {
    if n == 0 {
        return Err(GatewayError::invalid_value("'n' must be at least 1.", "n"));
    }
    if n > max_choices {
        return Err(GatewayError::invalid_value(format!("'n' may be at most {max_choices}."), "n"));
    }
    Ok(())
}
