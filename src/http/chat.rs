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
        exec::complete(&target.provider, &target.timeouts, self.0, deadline).await
    }
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

fn validate(req: &ChatRequest) -> Result<(), GatewayError> {
    if req.messages.is_empty() {
        return Err(GatewayError::invalid_value("'messages' must contain at least one message.", "messages"));
    }
    if req.n == Some(0) {
        return Err(GatewayError::invalid_value("'n' must be at least 1.", "n"));
    }
    Ok(())
}
