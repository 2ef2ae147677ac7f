//! `POST /v1/completions`, OpenAI's legacy completions, for any model: natively to a provider that serves
//! them, else through chat (`protocols::completions` says what carries over and what is refused).

use std::collections::VecDeque;
use std::sync::Arc;

use axum::Extension;
use axum::body::Body;
use axum::extract::State;
use axum::response::Response;
use bytes::Bytes;
use http::HeaderMap;
use serde_json::{Value, json};
use tokio::time::Instant;

use super::observe::RequestId;
use super::pipeline::{Call, Intake, Pipeline, Served};
use super::relay::{self, Relayed};
use super::{GatewayError, body, chat, input};
use crate::app::AppState;
use crate::protocols::completions::{
    Completion, CompletionRequest, MAX_PROMPTS, NativeMapper, NativeStream, TranslatedStream, from_chat, to_chat,
    untranslatable,
};
use crate::protocols::{Invalid, Native, NativeCall, bad_request};
use crate::providers::exec::{self, ChunkStream};
use crate::providers::{ErrorKind, ProviderError};
use crate::routing::{ModelEntry, RequestFeatures};
use crate::schema::{ChatChunk, ChatRequest};
use crate::tenancy::ActiveKey;
use crate::usage::{Prices, UsageGuard};

/// `POST /v1/completions`.
pub async fn create_completion(
    State(state): State<Arc<AppState>>,
    Extension(request_id): Extension<RequestId>,
    key: Option<Extension<Arc<ActiveKey>>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, GatewayError> {
    let started = Instant::now();
    let req: CompletionRequest = body::read_json(&headers, body, state.live().body_limits).await?;
    let prompt = req.prompt.as_ref().ok_or_else(|| GatewayError::invalid_value("'prompt' is required.", "prompt"))?;
    let n = req.n.unwrap_or(1);
    input::check_choices(n, state.live().config.server.max_choices).map_err(|e| e.into_error(input::as_is))?;
    if prompt.count() == 0 {
        return Err(GatewayError::invalid_value("'prompt' must hold at least one prompt.", "prompt"));
    }
    if prompt.count() > MAX_PROMPTS {
        return Err(GatewayError::invalid_value(format!("At most {MAX_PROMPTS} prompts per request."), "prompt"));
    }
    if req.best_of.is_some_and(|b| b < n) {
        return Err(GatewayError::invalid_value("'best_of' must be at least 'n'.", "best_of"));
    }
    // One chat request per prompt, for translated targets (and for what routing must know).
    let prompts: Vec<String> = prompt.texts().unwrap_or_default().into_iter().map(str::to_owned).collect();
    let chats: Vec<ChatRequest> = prompts.iter().map(|p| to_chat(&req, p)).collect();
    if let Some(first) = chats.first() {
        // The prompts share every other field: one check covers them all.
        let config = &state.live().config;
        input::check_chat(&config.input, config.server.max_choices, first)
            .map_err(|e| e.into_error(completion_names))?;
    }
    let pipeline = {
        let all = ChatRequest {
            messages: chats.iter().flat_map(|c| c.messages.iter().cloned()).collect(),
            ..to_chat(&req, "")
        };
        let features = RequestFeatures::for_chat(&all)
            .map_err(|field| GatewayError::invalid_value(format!("'{field}' has an invalid value."), &field))?;
        // One request is one prompt of the key's quota (as `n` is for chat; the ledger counts requests);
        // its cost is held for every prompt and choice.
        let prompts = prompt.count().max(1) as u32;
        let intake = Intake {
            model: &req.model,
            features: &features,
            prompts: 1,
            choices: n.saturating_mul(prompts),
            streamed: req.is_streaming(),
            started,
            operation: "text_completion",
        };
        Pipeline::admit(&state, &request_id, key.as_deref(), &headers, intake).await?
    };
    let wants_usage = req.wants_stream_usage();
    let mut chats = chats;
    chats.iter_mut().for_each(|c| crate::schema::strip_own_fields(&mut c.extra));
    let mut door = Attempts {
        problem: untranslatable(&req, state.live().config.server.max_choices),
        native: native_body(req),
        chats,
        n,
    };
    let Served { value, target, mut usage, headers, rest, deadline } = pipeline.run(&mut door).await?;
    let prices = target.prices();
    Ok(match value {
        Outcome::Whole(mut completion) => {
            completion.prepare(&target.name, prices, &mut usage);
            let body = serde_json::to_vec(&completion).map_err(|_| GatewayError::internal())?;
            Served { value: (), target, usage, headers, rest, deadline }.json(body)
        }
        Outcome::Native(stream, leading) => {
            let served = Served { value: (stream, leading), target, usage, headers, rest, deadline };
            relay::respond(&state, served, Box::new(NativeStream { wants_usage }))
        }
        Outcome::Translated(stream, leading) => {
            let encoder = TranslatedStream {
                id: format!("cmpl-{}", uuid::Uuid::now_v7().simple()),
                model: target.name.clone(),
                created: crate::protocols::unix_now(),
                wants_usage,
            };
            relay::respond(
                &state,
                Served { value: (stream, leading), target, usage, headers, rest, deadline },
                Box::new(encoder),
            )
        }
    })
}

/// The body a completions provider is sent: the caller's, with usage always asked for on a stream.
fn native_body(req: CompletionRequest) -> serde_json::Map<String, Value> {
    let streamed = req.is_streaming();
    let mut body = match serde_json::to_value(req) {
        Ok(Value::Object(map)) => map,
        _ => serde_json::Map::new(),
    };
    crate::schema::strip_own_fields(&mut body);
    if streamed {
        let options = body.entry("stream_options").or_insert_with(|| json!({}));
        if let Some(options) = options.as_object_mut() {
            options.insert("include_usage".into(), json!(true));
        }
    }
    body
}

/// What an attempt produced.
enum Outcome {
    Whole(Completion),
    Native(ChunkStream<Completion>, VecDeque<Completion>),
    Translated(ChunkStream, VecDeque<ChatChunk>),
}

struct Attempts {
    native: serde_json::Map<String, Value>,
    chats: Vec<ChatRequest>,
    n: u32,
    /// Why the request cannot be served through chat, if it cannot.
    problem: Option<Invalid>,
}

impl Call for Attempts {
    type Output = Outcome;

    async fn call(&mut self, target: &ModelEntry, deadline: Instant) -> Result<Outcome, ProviderError> {
        let (provider, timeouts) = (&target.provider, &target.timeouts);
        let adapter = provider.adapter();
        let streamed = self.native.get("stream") == Some(&json!(true));
        if adapter.speaks(Native::Completions) {
            self.native.insert("model".into(), json!(target.upstream));
            let body = Bytes::from(serde_json::to_vec(&self.native).unwrap_or_default());
            let build = |ep: &crate::providers::Endpoint<'_>| {
                let call = NativeCall { model: &target.upstream, stream: streamed, body, forwarded: &HeaderMap::new() };
                adapter.native_request(Native::Completions, call, ep)
            };
            if !streamed {
                let raw = exec::call(provider, timeouts, build, deadline).await?;
                let completion = serde_json::from_slice(&raw).map_err(|e| {
                    ProviderError::new(
                        ErrorKind::InvalidResponse,
                        format!("the provider's response is not a completion: {e}"),
                    )
                })?;
                return Ok(Outcome::Whole(completion));
            }
            let stream = exec::open_stream_with(provider, timeouts, build, Box::new(NativeMapper), deadline).await?;
            let (stream, leading) = relay::past_preamble(stream).await?;
            return Ok(Outcome::Native(stream, leading));
        }
        if let Some(p) = &self.problem {
            return Err(bad_request(p.message.clone(), &p.param));
        }
        for chat in &mut self.chats {
            chat.model.clone_from(&target.upstream);
            if streamed {
                chat.stream_options.get_or_insert_with(Default::default).include_usage = Some(true);
            }
        }
        if streamed {
            let chat = self.chats.first().ok_or_else(|| bad_request("'prompt' is empty.", "prompt"))?;
            let (stream, leading) =
                relay::past_preamble(exec::open_stream(provider, timeouts, chat, deadline).await?).await?;
            return Ok(Outcome::Translated(stream, leading));
        }
        let answers =
            futures_util::future::try_join_all(self.chats.iter().map(|c| chat::complete(target, c, deadline))).await?;
        Ok(Outcome::Whole(from_chat(&answers, self.n, &target.upstream)))
    }
}

impl Relayed for Completion {
    fn prepare(&mut self, public_model: &str, prices: Prices, usage: &mut UsageGuard) {
        if let Some(u) = &mut self.usage {
            usage.provider_usage(u);
            relay::add_cost(u, prices);
        }
        usage.streamed_text(self.choices.iter().map(|c| c.text.len()).sum());
        self.model.clear();
        self.model.push_str(public_model);
    }
}

/// Completions spell the conversation `prompt`.
fn completion_names(canonical: &'static str) -> &'static str {
    match canonical {
        "messages" => "prompt",
        other => other,
    }
}
