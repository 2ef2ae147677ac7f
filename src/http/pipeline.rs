//! One request through the gateway, whatever door it came in by: plan its targets, admit it against its
//! key's limits, try the targets in turn, and hand back what answered with the headers that say what and
//! why. Every door (chat, Messages, Gemini, embeddings, moderations, …) goes through here; a door supplies
//! only how to make one attempt and how to render the result, and walks no targets itself.
//!
//! The contract, phase by phase:
//! - [`Pipeline::admit`]: the route plan (`routing::Catalog::route`), the usage guard (one ledger row,
//!   whatever happens next) and the key's holds (`http::admission`). A refusal is recorded and returned.
//! - [`Pipeline::run`]: asks `routing::Fallback` for each target (breakers, retry budget, deadline,
//!   retry-after waits, context-overflow and content-policy moves), records it as the served one, calls
//!   the door's attempt, and on success returns [`Served`]: the value, the target, the usage guard (now
//!   the door's to finish or hand to a stream relay) and the routing and limit headers. When no target
//!   answers, the failure is recorded and returned as the client's error.
//!   Not here: translation (protocols), sending (`providers::exec`), rendering (the door).

use std::sync::Arc;

use http::{HeaderMap, HeaderValue};
use tokio::time::Instant;

use super::observe::RequestId;
use super::{GatewayError, admission};
use crate::app::AppState;
use crate::providers::ProviderError;
use crate::routing::{Caller, Fallback, ModelEntry, RequestFeatures, RoutePlan};
use crate::tenancy::ActiveKey;
use crate::usage::{Outcome, UsageGuard};

/// How a door makes one attempt. A door rewrites its own request in place where it can (the model
/// becomes the target's upstream id), so a translated attempt copies no body.
pub(super) trait Call: Send {
    type Output: Send;
    /// Called once per target tried, with the target (its upstream id, provider and timeouts) and the
    /// attempt's deadline. `Ok` ends the walk; an `Err` is classified by `Fallback` (next target or not).
    fn call(
        &mut self,
        target: &ModelEntry,
        deadline: Instant,
    ) -> impl Future<Output = Result<Self::Output, ProviderError>> + Send;
}

/// What a door tells the pipeline about its request.
pub(super) struct Intake<'r, 'f> {
    /// The model string exactly as the caller sent it.
    pub model: &'r str,
    pub features: &'r RequestFeatures<'f>,
    /// Prompts the request uses of its key's quota: 1 for a generation, 0 for embeddings and moderations.
    pub prompts: i64,
    /// Choices asked for (`n`), each of which may cost the worst case.
    pub choices: u32,
    pub streamed: bool,
    /// When the request arrived: the deadline across all attempts counts from here.
    pub started: Instant,
    /// `gen_ai.operation.name` of its trace: `chat`, `text_completion`, `embeddings`, …
    pub operation: &'static str,
}

impl<'r, 'f> Intake<'r, 'f> {
    /// A request that uses none of its key's prompts and answers whole, once: embeddings,
    /// moderations, reranks.
    pub fn uncounted(
        model: &'r str,
        features: &'r RequestFeatures<'f>,
        started: Instant,
        operation: &'static str,
    ) -> Self {
        Intake { model, features, prompts: 0, choices: 1, streamed: false, started, operation }
    }
}

/// An admitted request, ready for its attempts.
pub(super) struct Pipeline {
    /// The configuration the request was planned on; its attempts run on the same one.
    live: Arc<crate::app::Live>,
    pub plan: RoutePlan,
    usage: UsageGuard,
    limits: Option<crate::limits::View>,
    started: Instant,
    streamed: bool,
}

/// What answered: the door's value, the target that produced it, the request's accounting (the door
/// finishes it, or hands it to the stream relay) and the headers for the response.
pub(super) struct Served<T> {
    pub value: T,
    pub target: Arc<ModelEntry>,
    pub usage: UsageGuard,
    pub headers: HeaderMap,
    /// The plan's targets after the one that answered, where a stream whose provider fails mid-way may
    /// continue (`http::resume`); empty when the caller, its organisation or the alias turned that off.
    pub rest: Vec<Arc<ModelEntry>>,
    /// The request's deadline across all attempts.
    pub deadline: Instant,
}

/// Who is asking, for routing: the key's view (the master key's is everything), narrowed by what the
/// request's headers ask for. `route/explain` plans with the same.
pub fn caller_for(key: Option<&ActiveKey>, headers: &HeaderMap) -> Caller {
    let mut caller = key.map_or_else(Caller::default, |k| k.caller.clone());
    if crate::routing::wants_explicit_routing(headers) {
        // Exactly the model asked for: no cheaper swap, no fallback chain.
        caller.cheaper_swaps = false;
        caller.exact_model = true;
    }
    if super::resume::opted_out(headers) {
        caller.no_stream_continuation = true;
    }
    caller
}

impl Pipeline {
    /// Plans the request for its caller and takes what it needs from its key's limits.
    pub async fn admit(
        state: &AppState,
        request_id: &RequestId,
        key: Option<&Arc<ActiveKey>>,
        headers: &HeaderMap,
        intake: Intake<'_, '_>,
    ) -> Result<Pipeline, GatewayError> {
        let caller = caller_for(key.map(AsRef::as_ref), headers);
        let live = state.live_arc();
        let plan = live.catalog.route(intake.model, &caller, intake.features).await?;
        let ask = admission::ask(intake.features, &plan, intake.prompts, intake.choices);
        let mut usage = UsageGuard::for_request(
            state.usage.clone(),
            &request_id.ledger_id,
            request_id.client_id.as_deref(),
            intake.model,
            intake.streamed,
            intake.features.prompt_token_estimate(),
            intake.started.into_std(),
        );
        if let Some(key) = key {
            usage.set_caller(&key.organization_id, &key.id);
        }
        usage.trace(crate::otlp::RequestTrace::start(
            state.tracer.as_ref(),
            live.config.traces.propagate,
            headers,
            intake.operation,
            intake.started.into_std(),
        ));
        // Every limit of the key at once; the guard settles the holds whatever happens next.
        let (usage, limits) = admission::admit(state, key, ask, usage).await?;
        Ok(Pipeline { live, plan, usage, limits, started: intake.started, streamed: intake.streamed })
    }

    /// Tries the plan's targets in turn with `door.call(target, deadline)` until one answers.
    pub async fn run<C: Call>(self, door: &mut C) -> Result<Served<C::Output>, GatewayError> {
        let Pipeline { live, plan, mut usage, limits, started, streamed } = self;
        let mut fallback = Fallback::new(&plan, &live.router, started);
        while let Some(target) = fallback.next().await {
            usage.set_served(&target.name, &target.provider.name, target.prices());
            let deadline = fallback.attempt_deadline(&target);
            let asked = Instant::now();
            let trace =
                usage.trace_attempt(&target.name, &target.upstream, &target.provider.name, target.provider.kind);
            match crate::otlp::propagate(trace, door.call(&target, deadline)).await {
                Ok(value) => {
                    // A streamed attempt answers with its first content: its time is the time to first token.
                    if streamed {
                        target.ttft.record(asked.elapsed());
                    } else {
                        usage.trace_attempt_done();
                    }
                    fallback.succeeded(&target);
                    let mut headers = HeaderMap::new();
                    route_headers(&mut headers, &plan, &fallback, &target, live.router.seed_headers);
                    admission::headers(&mut headers, limits.as_ref());
                    // Where a stream may continue if its provider fails mid-way (`http::resume`).
                    let rest = match streamed && plan.continue_streams {
                        true => {
                            let after = plan.targets.iter().position(|t| Arc::ptr_eq(t, &target)).map_or(0, |i| i + 1);
                            plan.targets.get(after..).unwrap_or_default().to_vec()
                        }
                        false => Vec::new(),
                    };
                    return Ok(Served { value, target, usage, headers, rest, deadline: fallback.deadline() });
                }
                Err(e) => {
                    tracing::warn!(model = %target.name, provider = %target.provider.name, error = %e, "upstream attempt failed");
                    usage.trace_attempt_failed(&e.label());
                    if !fallback.failed(&target, e) {
                        break;
                    }
                }
            }
        }
        Err(all_failed(usage, &fallback, &plan))
    }
}

impl Pipeline {
    /// The request answered from the response cache with `target`'s kept answer: no provider is asked;
    /// the headers say what answered and that it was the cache.
    pub fn answered_from_cache(self, target: Arc<ModelEntry>) -> Served<()> {
        let Pipeline { plan, mut usage, limits, .. } = self;
        usage.cache_hit(&target.name);
        let mut headers = HeaderMap::new();
        let mut put = |name: &'static str, value: &str| {
            if let Ok(v) = HeaderValue::from_str(value) {
                headers.insert(name, v);
            }
        };
        put("x-switchyard-model", &target.name);
        put("x-switchyard-provider", &target.provider.name);
        put("x-switchyard-cache", "hit");
        if plan.requested != target.name {
            put("x-switchyard-routed-from", &plan.requested);
        }
        admission::headers(&mut headers, limits.as_ref());
        Served { value: (), target, usage, headers, rest: Vec::new(), deadline: Instant::now() }
    }
}

impl<T> Served<T> {
    /// The door's value, and what answered around `value` in its place (for a door whose answer takes
    /// one of several forms).
    pub fn replace<U>(self, value: U) -> (T, Served<U>) {
        let Served { value: old, target, usage, headers, rest, deadline } = self;
        (old, Served { value, target, usage, headers, rest, deadline })
    }

    /// A whole JSON answer: the usage record is finished as completed and the headers are set.
    pub fn json(self, body: Vec<u8>) -> axum::response::Response {
        use axum::response::IntoResponse;
        let Served { usage, headers, .. } = self;
        usage.finish(Outcome::Completed, 200, None);
        let mut response = ([(http::header::CONTENT_TYPE, "application/json")], body).into_response();
        response.headers_mut().extend(headers);
        response
    }
}

impl Served<crate::providers::exec::RawStream> {
    /// An answer relayed as the provider's bytes arrive (speech), with the provider's content type. It is
    /// committed once the provider answered 2xx; a body that breaks after that cuts the response, and
    /// the row says so. A client that leaves drops the body, and the row says that.
    pub fn relay_raw(self) -> axum::response::Response {
        let Served { value: raw, usage, headers, .. } = self;
        let content_type =
            raw.content_type.clone().unwrap_or_else(|| HeaderValue::from_static("application/octet-stream"));
        let pieces = futures_util::stream::unfold(Some((raw, usage, false)), |state| async move {
            let (mut raw, mut usage, started) = state?;
            match raw.next().await {
                Ok(Some(piece)) => {
                    if !started {
                        usage.first_byte();
                    }
                    Some((Ok::<_, std::io::Error>(piece), Some((raw, usage, true))))
                }
                Ok(None) => {
                    usage.finish(Outcome::Completed, 200, None);
                    None
                }
                Err(e) => {
                    usage.finish(Outcome::Interrupted, 200, Some(e.label()));
                    Some((Err(std::io::Error::other(e.message)), None))
                }
            }
        });
        let mut response = axum::response::Response::new(axum::body::Body::from_stream(pieces));
        response.headers_mut().insert(http::header::CONTENT_TYPE, content_type);
        response.headers_mut().extend(headers);
        response
    }
}

/// What answered and why: `x-switchyard-model`, `-provider`, `-routed-from`, `-swap`, `-attempts`,
/// `-auto-tier` and `-auto-score`, `-deprecated`; and, with `router.seed_headers`, the same under the
/// product pages' names.
fn route_headers(h: &mut HeaderMap, plan: &RoutePlan, fallback: &Fallback<'_>, served: &ModelEntry, seed: bool) {
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
    if let Some(auto) = &plan.auto {
        put("x-switchyard-auto-tier", auto.tier);
        put("x-switchyard-auto-score", &format!("{:.3}", auto.score));
    }
    if let Some(instead) = &plan.deprecated {
        put("x-switchyard-deprecated", instead);
    }
    // The same facts under the names of the product pages (seeds 003 and 004).
    if seed {
        put("x-model-router-model", &served.name);
        put("x-model-router-provider", &served.provider.name);
        if plan.requested != served.name {
            put("x-gateway-routed-from", &plan.requested);
        }
        if let Some(auto) = &plan.auto {
            put("x-model-router-auto-tier", auto.tier);
            put("x-model-router-auto-score", &format!("{:.3}", auto.score));
        }
    }
}

/// Records the request's failure and turns it into the client's error.
fn all_failed(usage: UsageGuard, fallback: &Fallback<'_>, plan: &RoutePlan) -> GatewayError {
    let e = fallback.failure();
    let mut error = GatewayError::from_provider(&e);
    error.attempts = Some(fallback.header_value().into_boxed_str());
    tracing::warn!(requested = %plan.requested, attempts = %fallback.header_value(), status = error.status.as_u16(), "request failed");
    usage.finish(Outcome::Failed, error.status.as_u16(), Some(e.label()));
    error
}
