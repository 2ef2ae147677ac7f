//! Mid-stream continuation: a stream whose provider fails after content began (a cut connection, an
//! idle timeout, an in-band error) goes on from the next target of its plan, and the client reads one
//! stream. The new attempt is asked, in chat, to continue the text already sent
//! (`protocols::continuation`), whatever the door and whichever protocol the first attempt spoke; its
//! chunks are then made to read as the first stream's, in one mechanism for every door:
//!
//! - [`Continued`], the continuation's stream mapper: no second role, the repeated words at the seam
//!   trimmed (held back until the seam is decided), then the chunks turned into the first stream's item
//!   type by a [`ChunkTranslator`] seeded where that stream stands (chat chunks stay chunks; for a native
//!   pass-through, Anthropic's events go on in the open text block with no second `message_start`,
//!   Gemini's responses under the first `responseId`, Responses' events in the open message item with
//!   `sequence_number` continuing and a `response.completed` holding every item).
//! - [`Continuable`], per item type: what an item tells of the answer so far ([`Progress`]: the text,
//!   an open tool call or reasoning block, the finish) and how a continuation's item takes the first
//!   stream's identity, its final usage summing every attempt's tokens and cost, with `continuation`
//!   saying from which target.
//! - [`Resume`]: when a continuation may happen, and opening the next target.
//!
//! A translated stream's items are chat chunks, rendered by the door's encoder after this, so each door's
//! own continuity (Anthropic's block indices, Responses' sequence) comes from its encoder's state.
//!
//! Not when the answer cannot be continued faithfully: a tool call or reasoning open (or seen) at the
//! break, several choices, nothing sent yet (that is an ordinary fallback), the caller's opt-out
//! (`x-switchyard-continuation: off`), exactly one target, or a native request chat cannot carry. At
//! most [`MAX_CONTINUATIONS`] per request. Each attempt keeps its own tokens and cost in the ledger row
//! (`UsageRecord::continued_from`).

use std::collections::VecDeque;
use std::sync::Arc;

use futures_util::future::BoxFuture;
use http::HeaderMap;
use serde_json::{Map, Value, json};
use tokio::time::Instant;

use super::relay::{self, Relayed};
use crate::protocols::{ChunkTranslator, StreamMapper, StreamStep, continuation};
use crate::providers::ProviderError;
use crate::providers::exec::{self, ChunkStream};
use crate::routing::ModelEntry;
use crate::routing::breaker::{BreakerConfig, Gate};
use crate::schema::{ChatChunk, ChatRequest, Delta};
use crate::sse::SseEvent;
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

/// A continued stream: the next stream, what its items come in before the rest, and its prices.
pub(super) type Resumed<I> = (ChunkStream<I>, VecDeque<I>, Prices);

/// What the relay asks of a stream that may go on elsewhere.
pub(super) trait Resumable<I: crate::protocols::StreamItem>: Send {
    /// Each item on its way to the client, after the books (`usage`) saw it: what to render in its place.
    fn pass(&mut self, item: I, usage: &UsageGuard, out: &mut Vec<I>);
    /// After the stream failed with `e`: the stream that continues it, when it can be continued.
    fn resume<'a>(&'a mut self, e: &'a ProviderError, usage: &'a mut UsageGuard) -> BoxFuture<'a, Option<Resumed<I>>>;
}

/// What the client has of the answer so far, as far as continuing it goes.
#[derive(Debug, Default)]
pub(super) struct Progress {
    /// The answer's text as the client has it.
    pub sent: String,
    /// Why the answer cannot be continued, once something makes it so.
    pub blocked: Option<&'static str>,
    pub reasoning_open: bool,
    pub finished: bool,
}

/// A stream item a continuation can be written in: chat chunks, and the events of a door's protocol
/// passed through natively.
pub(super) trait Continuable: Relayed + Sized + 'static {
    /// What a continuation takes from the first stream beyond its text: its ids, its open block.
    type Mark: Default + Send;
    /// Notes an item the client is about to get.
    fn note(&self, progress: &mut Progress, mark: &mut Self::Mark);
    /// Renders a continuation's chat chunks as this type's items, going on where the stream stands.
    fn translator(mark: &Self::Mark) -> Box<dyn ChunkTranslator<Self>>;
    /// An item of a continuation made to read as the first stream's: the first stream's identity, and
    /// (on the item with the final usage) the earlier attempts' tokens and cost added with
    /// [`add_earlier`].
    fn as_first(&mut self, mark: &Self::Mark, earlier: &[Segment]);
}

/// Adds the earlier attempts of a continued answer to the final usage of its last: their tokens, their
/// cost (`extra.cost` in USD; dropped when any attempt's is unknown, as money is never guessed), and
/// `extra.continuation` saying how many there were and where they came from.
pub(super) fn add_earlier(earlier: &[Segment], prompt: &mut u64, completion: &mut u64, extra: &mut Map<String, Value>) {
    for s in earlier {
        *prompt += s.prompt_tokens;
        *completion += s.completion_tokens;
    }
    let this = extra.get("cost").and_then(Value::as_f64).map(|usd| (usd * 1e6).round() as i64);
    let before = earlier.iter().try_fold(0, |sum, s| Some(sum + s.cost_micros?));
    match this.zip(before) {
        Some((this, before)) => relay::put_cost(extra, this + before),
        None => {
            extra.remove("cost");
        }
    }
    let from: Vec<Value> =
        earlier.iter().map(|s| json!({"model": s.model, "provider": s.provider, "error": s.error})).collect();
    extra.insert("continuation".to_owned(), json!({"count": earlier.len(), "from": from}));
}

impl Continuable for ChatChunk {
    /// The first stream's id and creation time.
    type Mark = Option<(String, u64)>;

    fn note(&self, p: &mut Progress, first: &mut Self::Mark) {
        if first.is_none() && !self.id.is_empty() {
            *first = Some((self.id.clone(), self.created));
        }
        for choice in &self.choices {
            if choice.index != 0 {
                p.blocked = Some("several choices");
            }
            let d = &choice.delta;
            if d.tool_calls.as_ref().is_some_and(|t| !t.is_empty()) {
                p.blocked = Some("a tool call was being streamed");
            }
            if d.reasoning_content.as_ref().is_some_and(|r| !r.is_empty()) {
                p.reasoning_open = true;
            }
            if let Some(text) = d.content.as_deref().filter(|t| !t.is_empty()) {
                p.reasoning_open = false;
                p.sent.push_str(text);
            }
            if choice.finish_reason.is_some() {
                p.finished = true;
            }
        }
    }

    fn translator(_first: &Self::Mark) -> Box<dyn ChunkTranslator<ChatChunk>> {
        Box::new(Same)
    }

    fn as_first(&mut self, first: &Self::Mark, earlier: &[Segment]) {
        if let Some((id, created)) = first {
            self.id.clone_from(id);
            self.created = *created;
        }
        if let Some(u) = &mut self.usage {
            add_earlier(earlier, &mut u.prompt_tokens, &mut u.completion_tokens, &mut u.extra);
            u.total_tokens = u.prompt_tokens + u.completion_tokens;
        }
    }
}

/// Chat chunks stay chat chunks.
struct Same;

impl ChunkTranslator<ChatChunk> for Same {
    fn chunk(&mut self, chunk: &ChatChunk, out: &mut Vec<ChatChunk>) {
        out.push(chunk.clone());
    }

    fn done(&mut self, _out: &mut Vec<ChatChunk>) {}
}

/// The stream mapper of a continuation: the target's own chat mapper, then no role, the seam, and the
/// translation into the first stream's item type.
struct Continued<E> {
    inner: Box<dyn StreamMapper>,
    to: Box<dyn ChunkTranslator<E>>,
    /// The answer's text as the client has it.
    sent: String,
    /// The continuation's text held back until the seam is decided; `None` once it was.
    held: Option<String>,
    chunks: Vec<ChatChunk>,
    /// The target's final chunk was read.
    finished: bool,
}

impl<E> Continued<E> {
    fn translate(&mut self, out: &mut Vec<E>) {
        let mut chunks = std::mem::take(&mut self.chunks);
        for mut c in chunks.drain(..) {
            self.finished |= crate::protocols::StreamItem::is_final(&c);
            for choice in &mut c.choices {
                choice.delta.role = None;
            }
            if let Some(held) = &mut self.held {
                if let Some(text) = c.choices.first_mut().and_then(|ch| ch.delta.content.take()) {
                    held.push_str(&text);
                }
                // Anything else in the chunk (a finish, usage, a tool call) goes after the text before it.
                if held.len() >= continuation::seam_window(&self.sent) || !c.is_preamble() {
                    self.release(out);
                }
            }
            if !c.is_preamble() {
                self.to.chunk(&c, out);
            }
        }
        self.chunks = chunks;
    }

    /// The held text, trimmed at the seam, as a chunk.
    fn release(&mut self, out: &mut Vec<E>) {
        let Some(held) = self.held.take() else { return };
        let text = &held[continuation::seam(&self.sent, &held)..];
        if text.is_empty() {
            return;
        }
        let delta = Delta { content: Some(text.to_owned()), ..Delta::default() };
        let chunk = ChatChunk::single("", 0, "", delta, None);
        self.to.chunk(&chunk, out);
    }
}

impl<E: crate::protocols::StreamItem> StreamMapper<E> for Continued<E> {
    fn map(&mut self, event: &SseEvent, out: &mut Vec<E>) -> Result<StreamStep, ProviderError> {
        let step = self.inner.map(event, &mut self.chunks)?;
        self.translate(out);
        Ok(step)
    }

    fn end(&mut self, out: &mut Vec<E>) {
        self.inner.end(&mut self.chunks);
        self.translate(out);
        self.release(out);
        self.to.done(out);
    }

    fn finished(&self) -> bool {
        self.finished
    }
}

/// A stream's continuation state.
pub(super) struct Resume<E: Continuable> {
    /// The caller's request in chat (the model is the last attempt's upstream id).
    req: ChatRequest,
    /// The plan's targets after the one answering, in order.
    rest: VecDeque<Arc<ModelEntry>>,
    current: Arc<ModelEntry>,
    breaker: BreakerConfig,
    /// The request's deadline across all attempts.
    deadline: Instant,
    progress: Progress,
    mark: E::Mark,
}

impl<E: Continuable> Resume<E> {
    pub fn new(
        req: ChatRequest,
        current: Arc<ModelEntry>,
        rest: Vec<Arc<ModelEntry>>,
        breaker: BreakerConfig,
        deadline: Instant,
    ) -> Resume<E> {
        let blocked = (req.n.unwrap_or(1) > 1).then_some("several choices");
        Resume {
            req,
            rest: rest.into(),
            current,
            breaker,
            deadline,
            progress: Progress { blocked, ..Progress::default() },
            mark: E::Mark::default(),
        }
    }

    /// Why the stream cannot be continued after `e`, if it cannot.
    fn why_not(&self, e: &ProviderError, usage: &UsageGuard) -> Option<&'static str> {
        let p = &self.progress;
        if usage.continued().len() >= usize::from(MAX_CONTINUATIONS) {
            Some("it was continued twice already")
        } else if let Some(blocked) = p.blocked {
            Some(blocked)
        } else if p.reasoning_open {
            Some("a reasoning block was open")
        } else if p.finished {
            Some("the answer had finished")
        } else if p.sent.trim().is_empty() {
            Some("no text was sent yet")
        } else if !e.should_fallback() {
            Some("the failure would recur elsewhere")
        } else if self.rest.is_empty() {
            Some("no other target")
        } else {
            None
        }
    }
}

impl<E: Continuable> Resumable<E> for Resume<E> {
    fn pass(&mut self, mut item: E, usage: &UsageGuard, out: &mut Vec<E>) {
        let earlier = usage.continued();
        if !earlier.is_empty() {
            item.as_first(&self.mark, earlier);
        }
        item.note(&mut self.progress, &mut self.mark);
        out.push(item);
    }

    fn resume<'a>(&'a mut self, e: &'a ProviderError, usage: &'a mut UsageGuard) -> BoxFuture<'a, Option<Resumed<E>>> {
        Box::pin(async move {
            if let Some(why) = self.why_not(e, usage) {
                tracing::info!(error = %e, why, "stream not continued");
                return None;
            }
            self.current.breaker.record_failure(e, self.breaker, Instant::now());
            usage.trace_attempt_failed(&e.label());
            while let Some(target) = self.rest.pop_front() {
                let now = Instant::now();
                if now >= self.deadline {
                    return None;
                }
                if matches!(target.breaker.acquire(now), Gate::Open { .. }) {
                    continue;
                }
                let (provider, timeouts) = (&target.provider, &target.timeouts);
                let adapter = provider.adapter();
                let mut req = continuation::request(&self.req, &self.progress.sent, adapter.prefill());
                req.model.clone_from(&target.upstream);
                let mapper = Box::new(Continued {
                    inner: adapter.stream_mapper(&req),
                    to: E::translator(&self.mark),
                    sent: self.progress.sent.clone(),
                    held: Some(String::new()),
                    chunks: Vec::new(),
                    finished: false,
                });
                let deadline = (now + timeouts.total).min(self.deadline);
                let build = |ep: &crate::providers::Endpoint<'_>| adapter.chat_request(&req, ep);
                let trace = usage.trace_attempt(&target.name, &target.upstream, &provider.name, provider.kind);
                let open = exec::open_stream_with(provider, timeouts, build, mapper, deadline);
                let opened = match crate::otlp::propagate(trace, open).await {
                    Ok(stream) => relay::past_preamble(stream).await,
                    Err(e) => Err(e),
                };
                match opened {
                    Ok((stream, leading)) => {
                        target.breaker.record_success();
                        // The new prompt also carries the partial answer (and, without a prefill, a short
                        // instruction): its estimate if the provider never reports.
                        let extra = self.progress.sent.len().div_ceil(4) as u64 + 64;
                        usage.continue_with(&target.name, &target.provider.name, target.prices(), e.label(), extra);
                        tracing::info!(from = %self.current.name, to = %target.name, error = %e, "stream continued on another target");
                        self.current = target.clone();
                        return Some((stream, leading, target.prices()));
                    }
                    Err(e2) => {
                        usage.count_attempt();
                        usage.trace_attempt_failed(&e2.label());
                        tracing::warn!(model = %target.name, error = %e2, "a continuation attempt failed");
                        target.breaker.record_failure(&e2, self.breaker, Instant::now());
                    }
                }
            }
            None
        })
    }
}
