//! Mid-stream continuation: a chat stream whose provider fails after content began (a cut connection,
//! an idle timeout, an in-band error) goes on from the next target of its plan, and the client reads one
//! stream. The new attempt is asked to continue the text already sent (`protocols::continuation`); here
//! its chunks are made to read as the first stream's: the first stream's `id` and `created` (the relay
//! keeps the public `model`), no second role, the repeated words at the seam trimmed, one finish, one
//! usage (both attempts' tokens and cost, with `continuation` saying from which target). The door's
//! encoder sees one stream, so every door rendering chat chunks (chat, Messages and Gemini translated,
//! Responses translated) keeps its own continuity: Anthropic's block indices, Responses' sequence.
//!
//! Not when the answer cannot be continued faithfully: a tool call or reasoning open (or seen) at the
//! break, several choices, nothing sent yet (that is an ordinary fallback), the caller's opt-out
//! (`x-switchyard-continuation: off`) or exactly one target. At most [`MAX_CONTINUATIONS`] per request.
//! Each attempt keeps its own tokens and cost in the ledger row (`UsageRecord::continued_from`).
//! Not here: streams passed through in a door's own protocol (they end with the door's error event).

use std::collections::VecDeque;
use std::sync::Arc;

use futures_util::future::BoxFuture;
use http::HeaderMap;
use serde_json::{Value, json};
use tokio::time::Instant;

use super::relay;
use crate::protocols::continuation;
use crate::providers::ProviderError;
use crate::providers::exec::{self, ChunkStream};
use crate::routing::ModelEntry;
use crate::routing::breaker::{BreakerConfig, Gate};
use crate::schema::{ChatChunk, ChatRequest, ChunkChoice, Delta};
use crate::usage::{Prices, Segment, UsageGuard};

/// Continuations one request may make.
pub const MAX_CONTINUATIONS: u8 = 2;

/// Whether the caller opted out (`x-switchyard-continuation: off`, also `false`, `0`, `no`).
pub fn opted_out(headers: &HeaderMap) -> bool {
    headers
        .get("x-switchyard-continuation")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| matches!(v.trim().to_ascii_lowercase().as_str(), "off" | "false" | "0" | "no"))
}

/// A continued stream: the next stream, what its chunks come in before the rest, and its prices.
pub(super) type Resumed<I> = (ChunkStream<I>, VecDeque<I>, Prices);

/// What the relay asks of a stream that may go on elsewhere.
pub(super) trait Resumable<I: crate::protocols::StreamItem>: Send {
    /// Each item on its way to the client, after the books (`usage`) saw it: what to render in its place.
    fn pass(&mut self, item: I, usage: &UsageGuard, out: &mut Vec<I>);
    /// At the stream's proper end: anything still held back.
    fn flush(&mut self, out: &mut Vec<I>);
    /// After the stream failed with `e`: the stream that continues it, when it can be continued.
    fn resume<'a>(&'a mut self, e: &'a ProviderError, usage: &'a mut UsageGuard) -> BoxFuture<'a, Option<Resumed<I>>>;
}

/// A chat stream's continuation state.
pub(super) struct Resume {
    /// The caller's request as the door gave it (the model is the last attempt's upstream id).
    req: ChatRequest,
    /// The plan's targets after the one answering, in order.
    rest: VecDeque<Arc<ModelEntry>>,
    current: Arc<ModelEntry>,
    breaker: BreakerConfig,
    /// The request's deadline across all attempts.
    deadline: Instant,
    /// The first stream's id, creation time and (public) model, which the continuation's chunks take.
    first: Option<(String, u64, String)>,
    /// The answer's text as the client has it.
    sent: String,
    /// Why the answer cannot be continued, once something makes it so.
    blocked: Option<&'static str>,
    reasoning_open: bool,
    finished: bool,
    /// After a continuation began: its text held back until the seam is decided.
    held: Option<String>,
}

impl Resume {
    pub fn new(
        req: ChatRequest,
        current: Arc<ModelEntry>,
        rest: Vec<Arc<ModelEntry>>,
        breaker: BreakerConfig,
        deadline: Instant,
    ) -> Resume {
        let blocked = (req.n.unwrap_or(1) > 1).then_some("several choices");
        Resume {
            req,
            rest: rest.into(),
            current,
            breaker,
            deadline,
            first: None,
            sent: String::new(),
            blocked,
            reasoning_open: false,
            finished: false,
            held: None,
        }
    }

    /// Notes what the client is about to get, so a continuation knows where the answer stands.
    fn note(&mut self, c: &ChatChunk) {
        for choice in &c.choices {
            if choice.index != 0 {
                self.blocked = Some("several choices");
            }
            let d = &choice.delta;
            if d.tool_calls.as_ref().is_some_and(|t| !t.is_empty()) {
                self.blocked = Some("a tool call was being streamed");
            }
            if d.reasoning_content.as_ref().is_some_and(|r| !r.is_empty()) {
                self.reasoning_open = true;
            }
            if let Some(text) = d.content.as_deref().filter(|t| !t.is_empty()) {
                self.reasoning_open = false;
                self.sent.push_str(text);
            }
            if choice.finish_reason.is_some() {
                self.finished = true;
            }
        }
    }

    /// A chunk of the continuation made to read as the first stream's; its usage (the last chunk's)
    /// becomes the whole request's: the earlier attempts' tokens and cost added, and where they came from.
    fn as_first(&self, c: &mut ChatChunk, earlier: &[Segment]) {
        if let Some((id, created, _)) = &self.first {
            c.id.clone_from(id);
            c.created = *created;
        }
        for choice in &mut c.choices {
            choice.delta.role = None;
        }
        if let Some(u) = &mut c.usage {
            for s in earlier {
                u.prompt_tokens += s.prompt_tokens;
                u.completion_tokens += s.completion_tokens;
                u.total_tokens += s.prompt_tokens + s.completion_tokens;
            }
            let this = u.extra.get("cost").and_then(Value::as_f64).map(|usd| (usd * 1e6).round() as i64);
            let before = earlier.iter().try_fold(0, |sum, s| Some(sum + s.cost_micros?));
            match this.zip(before) {
                Some((this, before)) => relay::put_cost(&mut u.extra, this + before),
                None => {
                    u.extra.remove("cost");
                }
            }
            let from: Vec<Value> =
                earlier.iter().map(|s| json!({"model": s.model, "provider": s.provider, "error": s.error})).collect();
            u.extra.insert("continuation".to_owned(), json!({"count": earlier.len(), "from": from}));
        }
    }

    /// Releases the held continuation text, trimmed at the seam, as a chunk of the first stream.
    fn release(&mut self, out: &mut Vec<ChatChunk>) {
        let Some(held) = self.held.take() else { return };
        let text = &held[continuation::seam(&self.sent, &held)..];
        let Some((id, created, model)) = self.first.clone().filter(|_| !text.is_empty()) else { return };
        let chunk = ChatChunk {
            id,
            object: "chat.completion.chunk".to_owned(),
            created,
            model,
            choices: vec![ChunkChoice {
                index: 0,
                delta: Delta { content: Some(text.to_owned()), ..Delta::default() },
                finish_reason: None,
                extra: Default::default(),
            }],
            usage: None,
            extra: Default::default(),
        };
        self.note(&chunk);
        out.push(chunk);
    }
}

impl Resumable<ChatChunk> for Resume {
    fn pass(&mut self, mut c: ChatChunk, usage: &UsageGuard, out: &mut Vec<ChatChunk>) {
        if self.first.is_none() && !c.id.is_empty() {
            self.first = Some((c.id.clone(), c.created, c.model.clone()));
        }
        let earlier = usage.continued();
        if earlier.is_empty() {
            self.note(&c);
            out.push(c);
            return;
        }
        self.as_first(&mut c, earlier);
        if let Some(held) = &mut self.held {
            if let Some(text) = c.choices.first_mut().and_then(|ch| ch.delta.content.take()) {
                held.push_str(&text);
            }
            let ending = c.usage.is_some() || c.choices.iter().any(|ch| ch.finish_reason.is_some());
            if held.len() >= continuation::seam_window(&self.sent) || ending {
                self.release(out);
            }
        }
        let empty = c.usage.is_none() && c.choices.iter().all(|ch| ch.finish_reason.is_none() && ch.delta.is_empty());
        if !empty {
            self.note(&c);
            out.push(c);
        }
    }

    fn flush(&mut self, out: &mut Vec<ChatChunk>) {
        self.release(out);
    }

    fn resume<'a>(
        &'a mut self,
        e: &'a ProviderError,
        usage: &'a mut UsageGuard,
    ) -> BoxFuture<'a, Option<Resumed<ChatChunk>>> {
        Box::pin(async move {
            let why_not = if usage.continued().len() >= usize::from(MAX_CONTINUATIONS) {
                Some("it was continued twice already")
            } else if let Some(blocked) = self.blocked {
                Some(blocked)
            } else if self.reasoning_open {
                Some("a reasoning block was open")
            } else if self.finished {
                Some("the answer had finished")
            } else if self.sent.trim().is_empty() {
                Some("no text was sent yet")
            } else if !e.should_fallback() {
                Some("the failure would recur elsewhere")
            } else if self.rest.is_empty() {
                Some("no other target")
            } else {
                None
            };
            if let Some(why) = why_not {
                tracing::info!(error = %e, why, "stream not continued");
                return None;
            }
            // Text held back at a seam never reached the client: the next attempt starts from what did.
            self.held = None;
            self.current.breaker.record_failure(e, self.breaker, Instant::now());
            while let Some(target) = self.rest.pop_front() {
                let now = Instant::now();
                if now >= self.deadline {
                    return None;
                }
                if matches!(target.breaker.acquire(now), Gate::Open { .. }) {
                    continue;
                }
                let (provider, timeouts) = (&target.provider, &target.timeouts);
                let mut req = continuation::request(&self.req, &self.sent, provider.adapter().prefill());
                req.model.clone_from(&target.upstream);
                let deadline = (now + timeouts.total).min(self.deadline);
                let opened = match exec::open_stream(provider, timeouts, &req, deadline).await {
                    Ok(stream) => relay::past_preamble(stream).await,
                    Err(e) => Err(e),
                };
                match opened {
                    Ok((stream, leading)) => {
                        target.breaker.record_success();
                        // The new prompt also carries the partial answer (and, without a prefill, a short
                        // instruction): its estimate if the provider never reports.
                        let extra = self.sent.len().div_ceil(4) as u64 + 64;
                        usage.continue_with(&target.name, &target.provider.name, target.prices(), e.label(), extra);
                        tracing::info!(from = %self.current.name, to = %target.name, error = %e, "stream continued on another target");
                        self.current = target.clone();
                        self.held = Some(String::new());
                        return Some((stream, leading, target.prices()));
                    }
                    Err(e2) => {
                        usage.count_attempt();
                        tracing::warn!(model = %target.name, error = %e2, "a continuation attempt failed");
                        target.breaker.record_failure(&e2, self.breaker, Instant::now());
                    }
                }
            }
            None
        })
    }
}
