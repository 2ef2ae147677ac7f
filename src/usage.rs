//! Usage accounting: one [`UsageRecord`] per request, whatever happened to it.
//!
//! A [`UsageGuard`] is created when a request is accepted for upstream work and travels with it; if the
//! request ends without reaching [`UsageGuard::finish`] (the client went away and the handler or stream was
//! dropped), its `Drop` still emits the record, marked as a disconnect. Records go to a [`UsageSink`],
//! which must not block: the ledger writer batches them off the hot path.
//! Not here: prices and money (the catalog), storage (`store`).

pub mod ledger;
pub mod spool;

use std::sync::Arc;
use std::time::Instant;

use crate::schema::Usage;
pub use crate::store::ledger::{Outcome, Segment, UsageRecord, UsageSource};

/// Receives every usage record. Called from request tasks and from `Drop`, so it must return at once.
pub trait UsageSink: Send + Sync {
    fn record(&self, record: UsageRecord);

    /// A request has gone to its first provider: `if_lost` is the row it gets if the process dies
    /// before it finishes (the ledger spools it; other sinks need not care).
    fn begin(&self, _if_lost: &UsageRecord) {}

    /// Whether records are wanted at all right now (a log sink whose level is off says no, and is
    /// spared a copy of every record).
    fn wants(&self) -> bool {
        true
    }
}

/// Writes each record as a log line at debug level (`RUST_LOG=switchyard::usage=debug`): the ledger is the
/// durable record, and formatting a line per request costs about a tenth of the gateway's CPU.
#[derive(Debug, Default)]
pub struct LogSink;

impl UsageSink for LogSink {
    fn wants(&self) -> bool {
        tracing::enabled!(target: "switchyard::usage", tracing::Level::DEBUG)
    }

    fn record(&self, r: UsageRecord) {
        tracing::debug!(
            target: "switchyard::usage",
            ledger_id = %r.request_id,
            requested_model = %r.requested_model,
            served_model = r.served_model.as_deref().unwrap_or(""),
            provider = r.provider.as_deref().unwrap_or(""),
            streamed = r.streamed,
            outcome = r.outcome.as_str(),
            status = r.status,
            prompt_tokens = r.prompt_tokens,
            completion_tokens = r.completion_tokens,
            cached_tokens = r.cached_tokens,
            cache_write_tokens = r.cache_write_tokens,
            reasoning_tokens = r.reasoning_tokens,
            estimated = r.usage_source == UsageSource::Estimated,
            latency_ms = r.latency_ms,
            ttft_ms = r.ttft_ms,
            cost_micros = r.cost_micros,
            key_id = r.key_id.as_deref().unwrap_or(""),
            error = r.error.as_deref().unwrap_or(""),
            "request finished"
        );
    }
}

/// What one attempt used, as the ledger counts it.
#[derive(Debug, Default)]
struct Used {
    prompt_tokens: u64,
    completion_tokens: u64,
    cached_tokens: u64,
    cache_write_tokens: u64,
    reasoning_tokens: u64,
    source: UsageSource,
}

/// Tracks one request's accounting and guarantees its record is emitted exactly once.
pub struct UsageGuard {
    sink: Arc<dyn UsageSink>,
    record: Option<UsageRecord>,
    started: Instant,
    estimated_prompt_tokens: u64,
    /// Characters of generated text seen so far, for an estimate when the provider's count never comes.
    streamed_chars: usize,
    provider_usage: Option<Usage>,
    /// The provider's usage so far is its final count (not a stream's opening report of the input).
    usage_final: bool,
    prices: Prices,
    /// What this request holds of its key's limits, settled to what it used when the record is emitted.
    admission: Option<(Arc<crate::limits::Limiter>, crate::limits::Admission)>,
    /// Answered from the response cache.
    cache_hit: bool,
    /// The request's trace (`otlp`): its spans are sent when the record is emitted.
    trace: Option<Box<crate::otlp::RequestTrace>>,
}

/// A model's prices as integer pico-USD per token (USD per million tokens × 10⁶), so costs are computed
/// in integers: a price of $0.15 per million tokens is 150 000 pico-USD per token.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Prices {
    pub input: Option<i64>,
    pub output: Option<i64>,
    pub cached_input: Option<i64>,
}

impl Prices {
    pub fn from_per_mtok(input: Option<f64>, output: Option<f64>, cached_input: Option<f64>) -> Prices {
        let pico = |p: Option<f64>| p.filter(|p| p.is_finite() && *p >= 0.0).map(|p| (p * 1e6).round() as i64);
        Prices { input: pico(input), output: pico(output), cached_input: pico(cached_input) }
    }

    /// Integer micro-USD for the tokens, rounded half up; `None` when the model is not priced.
    pub fn cost_micros(&self, prompt: u64, cached: u64, completion: u64) -> Option<i64> {
        let input = self.input?;
        let output = self.output.unwrap_or(0);
        let cached_price = self.cached_input.unwrap_or(input);
        let cached = cached.min(prompt);
        let pico = i128::from(prompt - cached) * i128::from(input)
            + i128::from(cached) * i128::from(cached_price)
            + i128::from(completion) * i128::from(output);
        i64::try_from((pico + 500_000) / 1_000_000).ok()
    }
}

impl UsageGuard {
    /// A guard for any kind of request: `estimated_prompt_tokens` is billed if the provider never reports.
    pub fn for_request(
        sink: Arc<dyn UsageSink>,
        ledger_id: &str,
        client_request_id: Option<&str>,
        requested_model: &str,
        streamed: bool,
        estimated_prompt_tokens: u64,
        started: Instant,
    ) -> Self {
        Self {
            sink,
            record: Some(UsageRecord {
                request_id: ledger_id.to_owned(),
                client_request_id: client_request_id.map(str::to_owned),
                created_at: crate::clock::now_ms(),
                organization_id: None,
                key_id: None,
                attempts: 0,
                cost_micros: None,
                prompt_counted: false,
                requested_model: requested_model.to_owned(),
                served_model: None,
                provider: None,
                streamed,
                outcome: Outcome::ClientDisconnected,
                status: 499,
                prompt_tokens: 0,
                completion_tokens: 0,
                cached_tokens: 0,
                cache_write_tokens: 0,
                reasoning_tokens: 0,
                usage_source: UsageSource::Estimated,
                latency_ms: 0,
                ttft_ms: None,
                error: None,
                continued_from: Vec::new(),
            }),
            started,
            estimated_prompt_tokens,
            streamed_chars: 0,
            provider_usage: None,
            usage_final: false,
            prices: Prices::default(),
            admission: None,
            cache_hit: false,
            trace: None,
        }
    }

    /// The request's trace, when it has one.
    pub fn trace(&mut self, trace: Option<Box<crate::otlp::RequestTrace>>) {
        self.trace = trace;
    }

    /// An upstream attempt begins on `model` (`upstream_model` at `provider`): the trace headers it
    /// sends, if the request has a trace.
    pub fn trace_attempt(
        &mut self,
        model: &str,
        upstream_model: &str,
        provider: &str,
        kind: crate::config::ProviderKind,
    ) -> Option<crate::otlp::Upstream> {
        self.trace.as_mut().and_then(|t| t.attempt(model, upstream_model, provider, kind))
    }

    /// The open attempt answered whole (a stream's attempt stays open until the stream ends).
    pub fn trace_attempt_done(&mut self) {
        if let Some(t) = &mut self.trace {
            t.attempt_done();
        }
    }

    /// The open attempt failed (`error`: a short label).
    pub fn trace_attempt_failed(&mut self, error: &str) {
        if let Some(t) = &mut self.trace {
            t.attempt_failed(error);
        }
    }

    pub fn set_served(&mut self, model: &str, provider: &str, prices: Prices) {
        self.prices = prices;
        let Some(r) = &mut self.record else { return };
        r.served_model = Some(model.to_owned());
        r.provider = Some(provider.to_owned());
        r.attempts += 1;
        if r.attempts == 1 {
            // From here a provider may be working (and billing) for it: if the process dies before the
            // request ends, its row is this, replayed from the spool at the next start.
            let estimated = self.estimated_prompt_tokens;
            let if_lost = UsageRecord {
                outcome: Outcome::Crashed,
                status: 500,
                prompt_tokens: estimated,
                usage_source: UsageSource::Estimated,
                cost_micros: prices.cost_micros(estimated, 0, 0),
                prompt_counted: true,
                error: Some("gateway_crashed".to_owned()),
                ..r.clone()
            };
            self.sink.begin(&if_lost);
        }
    }

    /// The request is answered from the response cache with `model`'s kept answer: a prompt counted, no
    /// tokens, no cost, no provider.
    pub fn cache_hit(&mut self, model: &str) {
        self.cache_hit = true;
        self.provider_usage = Some(Usage::default());
        self.usage_final = true;
        if let Some(r) = &mut self.record {
            r.served_model = Some(model.to_owned());
            r.provider = Some("cache".to_owned());
        }
    }

    /// The limits this request holds, to settle when it ends.
    pub fn hold(&mut self, limiter: Arc<crate::limits::Limiter>, admission: crate::limits::Admission) {
        self.admission = Some((limiter, admission));
    }

    /// Who is paying: set once the caller is known.
    pub fn set_caller(&mut self, organization_id: &str, key_id: &str) {
        if let Some(r) = &mut self.record {
            r.organization_id = Some(organization_id.to_owned());
            r.key_id = Some(key_id.to_owned());
        }
    }

    pub fn first_byte(&mut self) {
        if let Some(r) = &mut self.record {
            r.ttft_ms.get_or_insert(self.started.elapsed().as_millis() as u64);
        }
    }

    /// The provider's last usage report, if any came.
    pub fn reported(&self) -> Option<&Usage> {
        self.provider_usage.as_ref()
    }

    /// The answer carried no count to bill by (an upload's answer in `text`, `srt` or a stream): the
    /// cost is unknown, not an estimate of tokens the provider prices differently.
    pub fn cost_unknown(&mut self) {
        self.prices = Prices::default();
    }

    /// The provider's final count of the request's tokens.
    pub fn provider_usage(&mut self, usage: &Usage) {
        self.provider_usage = Some(usage.clone());
        self.usage_final = true;
    }

    /// A stream's count so far (Anthropic's `message_start`, a Gemini frame before the last): its output
    /// is not final, so a stream cut before the final count is billed the larger of it and the text seen.
    pub fn partial_usage(&mut self, usage: &Usage) {
        self.provider_usage = Some(usage.clone());
        self.usage_final = false;
    }

    pub fn streamed_text(&mut self, chars: usize) {
        self.streamed_chars += chars;
    }

    /// Emits the record with its final outcome.
    pub fn finish(mut self, outcome: Outcome, status: u16, error: Option<String>) {
        self.emit(outcome, status, error);
    }

    /// Emits the record now, for a request whose last bytes are still to be sent (a stream's end):
    /// nothing is emitted again, `Drop` included.
    pub fn finish_in_place(&mut self, outcome: Outcome, status: u16, error: Option<String>) {
        self.emit(outcome, status, error);
    }

    /// What the current attempt used: the provider's count, or an estimate where it never came (a
    /// stream cut before its final count is billed the larger of the count so far and the text seen).
    fn used(&self, served: bool, outcome: Outcome) -> Used {
        let mut used = Used { source: UsageSource::Estimated, ..Used::default() };
        match &self.provider_usage {
            Some(u) => {
                used = Used {
                    prompt_tokens: u.prompt_tokens,
                    completion_tokens: u.completion_tokens,
                    cached_tokens: u.cached_tokens(),
                    cache_write_tokens: u.cache_write_tokens(),
                    reasoning_tokens: u.reasoning_tokens(),
                    source: UsageSource::Provider,
                };
                let seen = self.streamed_chars.div_ceil(4) as u64;
                if !self.usage_final && seen > used.completion_tokens {
                    used.completion_tokens = seen;
                    used.source = UsageSource::Estimated;
                }
                if !self.usage_final && used.prompt_tokens == 0 {
                    used.prompt_tokens = self.estimated_prompt_tokens;
                    used.source = UsageSource::Estimated;
                }
            }
            // A request that never reached a provider consumed nothing; one whose every attempt failed
            // is recorded with what the providers reported, and none did (an attempt that never reached
            // its provider, one refused, one that timed out before answering).
            None if !served || outcome == Outcome::Failed => {}
            None => {
                used.prompt_tokens = self.estimated_prompt_tokens;
                used.completion_tokens = self.streamed_chars.div_ceil(4) as u64;
            }
        }
        used
    }

    /// A stream whose provider failed mid-way goes on from `model`: the attempt so far is closed as an
    /// earlier segment (its tokens and cost stay in the request's totals) and the counts start again
    /// for the new one, whose prompt also carries the partial answer (`extra_prompt_tokens`).
    pub fn continue_with(
        &mut self,
        model: &str,
        provider: &str,
        prices: Prices,
        error: String,
        extra_prompt_tokens: u64,
    ) {
        let used = self.used(true, Outcome::Interrupted);
        let Some(r) = self.record.as_mut() else { return };
        let segment = Segment {
            model: r.served_model.clone().unwrap_or_default(),
            provider: r.provider.clone().unwrap_or_default(),
            prompt_tokens: used.prompt_tokens,
            completion_tokens: used.completion_tokens,
            cached_tokens: used.cached_tokens,
            cost_micros: self.prices.cost_micros(used.prompt_tokens, used.cached_tokens, used.completion_tokens),
            usage_source: used.source,
            error,
        };
        r.continued_from.push(segment);
        self.provider_usage = None;
        self.usage_final = false;
        self.streamed_chars = 0;
        self.estimated_prompt_tokens += extra_prompt_tokens;
        self.set_served(model, provider, prices);
    }

    /// The earlier attempts of a continued stream, oldest first (empty for one served by one attempt).
    pub fn continued(&self) -> &[Segment] {
        self.record.as_ref().map_or(&[], |r| r.continued_from.as_slice())
    }

    /// An upstream call made for the request that produced nothing (a continuation that did not start).
    pub fn count_attempt(&mut self) {
        if let Some(r) = &mut self.record {
            r.attempts += 1;
        }
    }

    fn emit(&mut self, outcome: Outcome, status: u16, error: Option<String>) {
        let Some(mut r) = self.record.take() else {
            return;
        };
        r.outcome = outcome;
        r.status = status;
        r.error = error;
        r.latency_ms = self.started.elapsed().as_millis() as u64;
        let used = self.used(r.served_model.is_some(), outcome);
        r.prompt_tokens = used.prompt_tokens;
        r.completion_tokens = used.completion_tokens;
        r.cached_tokens = used.cached_tokens;
        r.cache_write_tokens = used.cache_write_tokens;
        r.reasoning_tokens = used.reasoning_tokens;
        r.usage_source = used.source;
        r.cost_micros = self.prices.cost_micros(r.prompt_tokens, r.cached_tokens, r.completion_tokens);
        if self.cache_hit {
            r.usage_source = UsageSource::Cache;
            r.cost_micros = Some(0);
        }
        // A continued stream: its earlier attempts are billed with it.
        for earlier in &r.continued_from {
            r.prompt_tokens += earlier.prompt_tokens;
            r.completion_tokens += earlier.completion_tokens;
            r.cached_tokens += earlier.cached_tokens;
            r.cost_micros = r.cost_micros.zip(earlier.cost_micros).map(|(a, b)| a + b);
            if earlier.usage_source == UsageSource::Estimated {
                r.usage_source = UsageSource::Estimated;
            }
        }
        // A prompt is used when a provider took the request on, whether or not the client stayed.
        r.prompt_counted = r.served_model.is_some() && outcome != Outcome::Failed;
        if let Some((limiter, admission)) = self.admission.take() {
            let tokens = r.prompt_tokens.saturating_add(r.completion_tokens);
            limiter.settle(
                admission,
                crate::limits::Used {
                    prompt_counted: r.prompt_counted,
                    tokens: i64::try_from(tokens).unwrap_or(i64::MAX),
                    cost_micros: r.cost_micros.unwrap_or(0),
                },
            );
        }
        if let Some(trace) = self.trace.take() {
            (*trace).finish(&r);
        }
        self.sink.record(r);
    }
}

impl Drop for UsageGuard {
    fn drop(&mut self) {
        // Reached only when the request was abandoned before it finished: the client went away.
        self.emit(Outcome::ClientDisconnected, 499, Some("client_disconnected".to_owned()));
    }
}
