//! Request traces: W3C trace context in and out, and OTLP export over HTTP/protobuf (`[traces]`, off
//! unless an endpoint is configured).
//!
//! Each request that reaches the router is one `SERVER` span with a `CLIENT` child per upstream
//! attempt, named and attributed after OpenTelemetry's GenAI semantic conventions
//! (`gen_ai.operation.name`, `gen_ai.request.model`, `gen_ai.response.model`, `gen_ai.provider.name`,
//! `gen_ai.usage.input_tokens`, …) plus ours (`switchyard.organization_id`, `switchyard.key_id`,
//! `switchyard.attempts`, `switchyard.cost_usd`, …). No prompt or completion text is ever put on a span.
//!
//! A caller's `traceparent` is continued (its trace id, its span as the request span's parent, its
//! sampled flag decides) and each attempt sends the provider a `traceparent` naming the attempt's span;
//! a caller's `tracestate` is passed on as it came. With tracing off, a caller's `traceparent` and
//! `tracestate` still reach the provider unchanged. The attempt's header travels to `providers::exec`
//! in a task-local set around the attempt (`providers::propagation`), so no door or adapter carries it.
//!
//! The spans of a request are built once, when its usage record is emitted (`usage::UsageGuard`), and
//! handed to a bounded queue without waiting: a full queue drops spans and counts them
//! (`switchyard_trace_spans_dropped_total`). One task batches them (`batch_spans`, or whatever waited
//! `flush_interval_ms`) and posts each batch to the collector, retrying a refused or failed batch twice.

pub mod proto;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue};
use prost::Message as _;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::config::{ProviderKind, TracesConfig};
use crate::store::ledger::Outcome;
use crate::store::ledger::UsageRecord;
use proto::{AnyValue, KeyValue, Span, SpanKind, Status, StatusCode, Value};

use crate::providers::propagation::{TRACEPARENT, TRACESTATE};

/// A W3C `traceparent`: version `00`, or a later version read as `00` (its extra fields ignored).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceParent {
    pub trace_id: [u8; 16],
    pub parent_id: [u8; 8],
    pub flags: u8,
}

impl TraceParent {
    /// `None` for anything the Trace Context recommendation calls invalid: wrong lengths or separators,
    /// upper-case or non-hex digits, version `ff`, an all-zero trace or parent id, or a version `00`
    /// header with more after it.
    pub fn parse(value: &str) -> Option<TraceParent> {
        let v = value.trim_matches([' ', '\t']).as_bytes();
        if v.len() < 55 || v[2] != b'-' || v[35] != b'-' || v[52] != b'-' {
            return None;
        }
        let version = hex::<1>(&v[0..2])?[0];
        if version == 0xff || (version == 0 && v.len() != 55) || (v.len() > 55 && v[55] != b'-') {
            return None;
        }
        let trace_id = hex::<16>(&v[3..35])?;
        let parent_id = hex::<8>(&v[36..52])?;
        let flags = hex::<1>(&v[53..55])?[0];
        if trace_id == [0; 16] || parent_id == [0; 8] {
            return None;
        }
        Some(TraceParent { trace_id, parent_id, flags })
    }

    pub fn sampled(&self) -> bool {
        self.flags & 1 == 1
    }

    /// The header naming `span_id` as the parent of what is called next, in this trace.
    pub fn header(&self) -> HeaderValue {
        let mut s = String::with_capacity(55);
        s.push_str("00-");
        push_hex(&mut s, &self.trace_id);
        s.push('-');
        push_hex(&mut s, &self.parent_id);
        s.push('-');
        push_hex(&mut s, &[self.flags]);
        HeaderValue::try_from(s).unwrap_or_else(|_| HeaderValue::from_static(""))
    }
}

/// A caller's `tracestate`: its fields joined, as the recommendation reads several; `None` when it is
/// not valid (then it is not passed on at all): over 512 characters, over 32 members, or a member that
/// is not `key=value` in its grammar.
fn tracestate(headers: &HeaderMap) -> Option<HeaderValue> {
    let mut joined = String::new();
    for v in headers.get_all(TRACESTATE) {
        if !joined.is_empty() {
            joined.push(',');
        }
        joined.push_str(v.to_str().ok()?);
    }
    if joined.len() > 512 {
        return None;
    }
    let mut members = 0;
    for member in joined.split(',').map(|m| m.trim_matches([' ', '\t'])).filter(|m| !m.is_empty()) {
        members += 1;
        let (key, value) = member.split_once('=')?;
        if members > 32 || !valid_key(key) || !valid_value(value) {
            return None;
        }
    }
    (members > 0).then(|| HeaderValue::try_from(joined).ok()).flatten()
}

/// `key = simple-key / multi-tenant-key` of the Trace Context recommendation.
fn valid_key(key: &str) -> bool {
    let part = |s: &str, max: usize, first_digit: bool| {
        let b = s.as_bytes();
        !b.is_empty()
            && b.len() <= max
            && (b[0].is_ascii_lowercase() || (first_digit && b[0].is_ascii_digit()))
            && b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || b"_-*/".contains(c))
    };
    match key.split_once('@') {
        None => part(key, 256, false),
        Some((tenant, system)) => part(tenant, 241, true) && part(system, 14, false),
    }
}

/// Printable ASCII but `,` and `=`, at most 256 characters, not ending in a space.
fn valid_value(value: &str) -> bool {
    let b = value.as_bytes();
    !b.is_empty()
        && b.len() <= 256
        && b.last() != Some(&b' ')
        && b.iter().all(|c| (0x20..=0x7e).contains(c) && *c != b',' && *c != b'=')
}

/// Lower-case hex only, as the recommendation requires.
fn hex<const N: usize>(digits: &[u8]) -> Option<[u8; N]> {
    let nibble = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    if digits.len() != 2 * N {
        return None;
    }
    let mut out = [0u8; N];
    for (i, pair) in digits.chunks_exact(2).enumerate() {
        out[i] = (nibble(pair[0])? << 4) | nibble(pair[1])?;
    }
    Some(out)
}

fn push_hex(s: &mut String, bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for b in bytes {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 15)] as char);
    }
}

pub use crate::providers::propagation::{Upstream, propagate};

/// The exporter's counters, shown on `/metrics`.
#[derive(Debug, Default)]
pub struct Counters {
    pub exported: AtomicU64,
    pub dropped: AtomicU64,
    pub failed: AtomicU64,
}

/// The export side: the queue the requests' spans go to, and the task that sends them.
pub struct Tracer {
    queue: mpsc::Sender<Span>,
    /// Traces that start here are sampled when their trace id's low 64 bits are below this.
    threshold: u64,
    always: bool,
    pub counters: Arc<Counters>,
    stop: CancellationToken,
    done: tokio::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Tracer {
    /// The tracer `[traces]` asks for, with its export task spawned; `None` when traces are off.
    /// Header values come from the environment by the names the configuration gives.
    pub fn start(config: &TracesConfig, env: &dyn Fn(&str) -> Option<String>) -> anyhow::Result<Option<Arc<Tracer>>> {
        let Some(endpoint) = &config.endpoint else { return Ok(None) };
        let settings = crate::providers::client::ClientSettings::new(
            endpoint,
            Duration::from_secs(5),
            None,
            config.tls_ca_file.as_deref(),
        )
        .map_err(|e| anyhow::anyhow!("traces.endpoint: {e}"))?;
        let uri: http::Uri = endpoint.parse().map_err(|e| anyhow::anyhow!("traces.endpoint: {e}"))?;
        let mut headers = HeaderMap::new();
        for (name, var) in &config.headers {
            match env(var).map(HeaderValue::try_from) {
                Some(Ok(mut value)) => {
                    value.set_sensitive(true);
                    headers.insert(HeaderName::try_from(name.as_str())?, value);
                }
                Some(Err(_)) => anyhow::bail!("traces.headers.{name}: ${var} is not a valid header value"),
                None => {
                    tracing::warn!(header = %name, variable = %var, "a trace export header's variable is not set; exports go without it")
                }
            }
        }
        headers.insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/x-protobuf"));
        let (queue, rx) = mpsc::channel(config.queue_spans);
        let counters = Arc::new(Counters::default());
        let stop = CancellationToken::new();
        let export = Export {
            client: settings.client(),
            uri,
            headers,
            resource: proto::Resource {
                attributes: vec![
                    attr("service.name", Value::String(config.service_name.clone())),
                    attr("service.version", Value::String(env!("CARGO_PKG_VERSION").to_owned())),
                ],
            },
            timeout: Duration::from_millis(config.export_timeout_ms),
            counters: counters.clone(),
        };
        let task = tokio::spawn(export_loop(
            rx,
            export,
            config.batch_spans,
            Duration::from_millis(config.flush_interval_ms),
            stop.clone(),
        ));
        tracing::info!(endpoint = %endpoint, "request traces are exported over OTLP");
        Ok(Some(Arc::new(Tracer {
            queue,
            threshold: (config.sample_ratio * u64::MAX as f64) as u64,
            always: config.sample_ratio >= 1.0,
            counters,
            stop,
            done: tokio::sync::Mutex::new(Some(task)),
        })))
    }

    fn samples(&self, trace_id: &[u8; 16]) -> bool {
        let low = u64::from_be_bytes(trace_id[8..].try_into().unwrap_or_default());
        self.always || low < self.threshold
    }

    /// Queues a span without waiting; a full queue drops it.
    fn push(&self, span: Span) {
        if self.queue.try_send(span).is_err() {
            self.counters.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// On shutdown: what is queued is sent (within `within`), then the exporter stops.
    pub async fn flush(&self, within: Duration) {
        self.stop.cancel();
        if let Some(task) = self.done.lock().await.take() {
            let _ = tokio::time::timeout(within, task).await;
        }
    }
}

/// One request's trace: its context, and its attempts as they happen. Built for every request that
/// reaches the router when traces are on, and for those that came with a `traceparent` when they are
/// off (then only to pass it on).
pub struct RequestTrace {
    /// Providers are sent the attempt's context.
    propagate: bool,
    /// Set when this request's spans are exported.
    recording: Option<Arc<Tracer>>,
    trace_id: [u8; 16],
    /// The request span's id (or, when not recording, the caller's parent id, passed on unchanged).
    span_id: [u8; 8],
    parent: Option<[u8; 8]>,
    flags: u8,
    tracestate: Option<HeaderValue>,
    operation: &'static str,
    started: Instant,
    started_unix_nanos: u64,
    attempts: Vec<Attempt>,
}

struct Attempt {
    span_id: [u8; 8],
    model: String,
    upstream_model: String,
    provider: String,
    system: String,
    started: Instant,
    ended: Option<Instant>,
    error: Option<String>,
}

impl RequestTrace {
    /// The trace of a request that arrived at `started` with `headers`; `None` when there is nothing
    /// to record or pass on.
    pub fn start(
        tracer: Option<&Arc<Tracer>>,
        propagate: bool,
        headers: &HeaderMap,
        operation: &'static str,
        started: Instant,
    ) -> Option<Box<RequestTrace>> {
        if tracer.is_none() && (!propagate || !headers.contains_key(TRACEPARENT)) {
            return None;
        }
        // Several `traceparent` fields are not one context: none is taken.
        let mut fields = headers.get_all(TRACEPARENT).iter();
        let caller = match (fields.next(), fields.next()) {
            (Some(v), None) => v.to_str().ok().and_then(TraceParent::parse),
            _ => None,
        };
        if tracer.is_none() && caller.is_none() {
            return None;
        }
        let tracestate = caller.and_then(|_| tracestate(headers));
        let (trace_id, parent, flags) = match caller {
            Some(c) => (c.trace_id, Some(c.parent_id), c.flags),
            None => (rand::random(), None, 0),
        };
        let recording = tracer.filter(|t| match caller {
            Some(c) => c.sampled(),
            None => t.samples(&trace_id),
        });
        let flags = match (&recording, caller) {
            (Some(_), None) => 1,
            _ => flags,
        };
        let span_id = match (&recording, parent) {
            (None, Some(caller_parent)) => caller_parent,
            _ => random_span_id(),
        };
        let now_unix = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        let started_unix_nanos = (now_unix.saturating_sub(started.elapsed())).as_nanos() as u64;
        Some(Box::new(RequestTrace {
            propagate,
            recording: recording.cloned(),
            trace_id,
            span_id,
            parent,
            flags,
            tracestate,
            operation,
            started,
            started_unix_nanos,
            attempts: Vec::new(),
        }))
    }

    /// An attempt begins: the headers it sends its provider. The attempt before it, if still open,
    /// has ended.
    pub fn attempt(
        &mut self,
        model: &str,
        upstream_model: &str,
        provider: &str,
        kind: ProviderKind,
    ) -> Option<Upstream> {
        self.end_attempt(None);
        let parent = match self.recording {
            Some(_) => {
                let span_id = random_span_id();
                self.attempts.push(Attempt {
                    span_id,
                    model: model.to_owned(),
                    upstream_model: upstream_model.to_owned(),
                    provider: provider.to_owned(),
                    system: system_of(kind, provider),
                    started: Instant::now(),
                    ended: None,
                    error: None,
                });
                span_id
            }
            None => self.span_id,
        };
        let header = TraceParent { trace_id: self.trace_id, parent_id: parent, flags: self.flags }.header();
        self.propagate.then(|| Upstream::new(header, self.tracestate.clone()))
    }

    /// The open attempt answered.
    pub fn attempt_done(&mut self) {
        self.end_attempt(None);
    }

    /// The open attempt failed with `error` (a short label).
    pub fn attempt_failed(&mut self, error: &str) {
        self.end_attempt(Some(error));
    }

    fn end_attempt(&mut self, error: Option<&str>) {
        if let Some(a) = self.attempts.last_mut()
            && a.ended.is_none()
        {
            a.ended = Some(Instant::now());
            a.error = error.map(str::to_owned);
        }
    }

    /// The request ended with `record`: its spans go to the export queue.
    pub fn finish(mut self, record: &UsageRecord) {
        let Some(tracer) = self.recording.take() else { return };
        // A stream cut mid-way (by its provider or by the drain) failed, whatever status its head had.
        let failed =
            matches!(record.outcome, Outcome::Failed | Outcome::Crashed | Outcome::Interrupted | Outcome::ShutDown)
                || record.status >= 500;
        let ended = Instant::now();
        if failed {
            // The attempt still open is the one that failed (one already closed keeps its outcome).
            self.end_attempt(Some(record.error.as_deref().unwrap_or("failed")));
        }
        let nanos =
            |at: Instant| self.started_unix_nanos + at.saturating_duration_since(self.started).as_nanos() as u64;
        let operation = self.operation;
        let mut attrs = vec![
            attr("gen_ai.operation.name", Value::String(operation.to_owned())),
            attr("gen_ai.request.model", Value::String(record.requested_model.clone())),
            attr("switchyard.request_id", Value::String(record.request_id.clone())),
            attr("switchyard.attempts", Value::Int(i64::from(record.attempts))),
            attr("switchyard.outcome", Value::String(record.outcome.as_str().to_owned())),
            attr("switchyard.streamed", Value::Bool(record.streamed)),
            attr("http.response.status_code", Value::Int(i64::from(record.status))),
        ];
        let mut put = |key: &'static str, value: Option<Value>| {
            if let Some(v) = value {
                attrs.push(attr(key, v));
            }
        };
        put("gen_ai.response.model", record.served_model.clone().map(Value::String));
        let served = self.attempts.iter().rev().find(|a| a.error.is_none());
        put("gen_ai.provider.name", served.map(|a| Value::String(a.system.clone())));
        put("switchyard.provider", record.provider.clone().map(Value::String));
        put("switchyard.organization_id", record.organization_id.clone().map(Value::String));
        put("switchyard.key_id", record.key_id.clone().map(Value::String));
        put("switchyard.client_request_id", record.client_request_id.clone().map(Value::String));
        let reached = record.served_model.is_some();
        put("gen_ai.usage.input_tokens", reached.then_some(Value::Int(record.prompt_tokens as i64)));
        put("gen_ai.usage.output_tokens", reached.then_some(Value::Int(record.completion_tokens as i64)));
        put("switchyard.usage_source", reached.then(|| Value::String(record.usage_source.as_str().to_owned())));
        put("switchyard.cost_usd", record.cost_micros.map(|c| Value::Double(c as f64 / 1e6)));
        put("switchyard.time_to_first_token_ms", record.ttft_ms.map(|t| Value::Int(t as i64)));
        put("error.type", record.error.clone().filter(|_| record.outcome != Outcome::Completed).map(Value::String));
        let status =
            |error: Option<&str>| error.map(|e| Status { message: e.to_owned(), code: StatusCode::Error as i32 });
        let root_error = failed.then(|| record.error.as_deref().unwrap_or("failed"));
        let root = Span {
            trace_id: self.trace_id.to_vec(),
            span_id: self.span_id.to_vec(),
            trace_state: self.tracestate.as_ref().and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned(),
            parent_span_id: self.parent.map(|p| p.to_vec()).unwrap_or_default(),
            name: format!("{operation} {}", record.requested_model),
            kind: SpanKind::Server as i32,
            start_time_unix_nano: self.started_unix_nanos,
            end_time_unix_nano: nanos(ended),
            attributes: attrs,
            status: status(root_error),
            flags: u32::from(self.flags),
        };
        let children: Vec<Span> = self
            .attempts
            .iter()
            .enumerate()
            .map(|(i, a)| {
                let mut attrs = vec![
                    attr("gen_ai.operation.name", Value::String(operation.to_owned())),
                    attr("gen_ai.request.model", Value::String(a.upstream_model.clone())),
                    attr("gen_ai.provider.name", Value::String(a.system.clone())),
                    attr("switchyard.model", Value::String(a.model.clone())),
                    attr("switchyard.provider", Value::String(a.provider.clone())),
                    attr("switchyard.attempt", Value::Int(i as i64 + 1)),
                ];
                match &a.error {
                    Some(e) => attrs.push(attr("error.type", Value::String(e.clone()))),
                    None => {
                        attrs.push(attr("gen_ai.usage.input_tokens", Value::Int(record.prompt_tokens as i64)));
                        attrs.push(attr("gen_ai.usage.output_tokens", Value::Int(record.completion_tokens as i64)));
                    }
                }
                Span {
                    trace_id: self.trace_id.to_vec(),
                    span_id: a.span_id.to_vec(),
                    trace_state: String::new(),
                    parent_span_id: self.span_id.to_vec(),
                    name: format!("{operation} {}", a.upstream_model),
                    kind: SpanKind::Client as i32,
                    start_time_unix_nano: nanos(a.started),
                    end_time_unix_nano: nanos(a.ended.unwrap_or(ended)),
                    attributes: attrs,
                    status: status(a.error.as_deref()),
                    flags: u32::from(self.flags),
                }
            })
            .collect();
        tracer.push(root);
        for child in children {
            tracer.push(child);
        }
    }
}

fn random_span_id() -> [u8; 8] {
    loop {
        let id: [u8; 8] = rand::random();
        if id != [0; 8] {
            return id;
        }
    }
}

/// `gen_ai.provider.name`: the conventions' names for the labs whose protocols we speak; an
/// OpenAI-compatible provider is named as configured (the presets are named after their labs).
fn system_of(kind: ProviderKind, provider: &str) -> String {
    match kind {
        ProviderKind::Anthropic => "anthropic".to_owned(),
        ProviderKind::Gemini => "gcp.gemini".to_owned(),
        ProviderKind::Azure => "azure.ai.openai".to_owned(),
        ProviderKind::Bedrock => "aws.bedrock".to_owned(),
        ProviderKind::Vertex => "gcp.vertex_ai".to_owned(),
        ProviderKind::Cohere => "cohere".to_owned(),
        ProviderKind::Openai | ProviderKind::Fake => provider.to_owned(),
    }
}

fn attr(key: &str, value: Value) -> KeyValue {
    KeyValue { key: key.to_owned(), value: Some(AnyValue { value: Some(value) }) }
}

struct Export {
    client: crate::providers::client::UpstreamClient,
    uri: http::Uri,
    headers: HeaderMap,
    resource: proto::Resource,
    timeout: Duration,
    counters: Arc<Counters>,
}

async fn export_loop(
    mut rx: mpsc::Receiver<Span>,
    export: Export,
    batch_spans: usize,
    every: Duration,
    stop: CancellationToken,
) {
    let mut batch = Vec::with_capacity(batch_spans);
    loop {
        let first = tokio::select! {
            span = rx.recv() => span,
            () = stop.cancelled() => None,
        };
        let Some(first) = first else { break };
        batch.push(first);
        let until = tokio::time::Instant::now() + every;
        while batch.len() < batch_spans {
            tokio::select! {
                span = rx.recv() => match span {
                    Some(span) => batch.push(span),
                    None => break,
                },
                () = tokio::time::sleep_until(until) => break,
                () = stop.cancelled() => break,
            }
        }
        export.send(std::mem::take(&mut batch)).await;
    }
    // Stopping: what is queued goes out, in batches.
    while let Ok(span) = rx.try_recv() {
        batch.push(span);
        if batch.len() == batch_spans {
            export.send(std::mem::take(&mut batch)).await;
        }
    }
    if !batch.is_empty() {
        export.send(batch).await;
    }
}

impl Export {
    async fn send(&self, spans: Vec<Span>) {
        let count = spans.len() as u64;
        let body = Bytes::from(
            proto::ExportTraceServiceRequest {
                resource_spans: vec![proto::ResourceSpans {
                    resource: Some(self.resource.clone()),
                    scope_spans: vec![proto::ScopeSpans {
                        scope: Some(proto::InstrumentationScope {
                            name: "switchyard".to_owned(),
                            version: env!("CARGO_PKG_VERSION").to_owned(),
                        }),
                        spans,
                    }],
                }],
            }
            .encode_to_vec(),
        );
        let mut failure = String::new();
        for attempt in 0..3u32 {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(250 << attempt)).await;
            }
            match self.post(body.clone()).await {
                Ok(rejected) => {
                    self.counters.exported.fetch_add(count.saturating_sub(rejected), Ordering::Relaxed);
                    self.counters.failed.fetch_add(rejected, Ordering::Relaxed);
                    return;
                }
                Err((retryable, why)) => {
                    failure = why;
                    if !retryable {
                        break;
                    }
                }
            }
        }
        self.counters.failed.fetch_add(count, Ordering::Relaxed);
        tracing::warn!(spans = count, error = %failure, "the trace collector did not take a batch of spans");
    }

    /// One export: `Ok` with the spans the collector says it rejected, or whether to try again and why.
    async fn post(&self, body: Bytes) -> Result<u64, (bool, String)> {
        use http_body_util::BodyExt as _;
        let mut request = http::Request::post(self.uri.clone());
        if let Some(h) = request.headers_mut() {
            h.clone_from(&self.headers);
        }
        let request = request.body(crate::providers::client::whole(body)).map_err(|e| (false, e.to_string()))?;
        let response = match tokio::time::timeout(self.timeout, self.client.request(request)).await {
            Err(_) => return Err((true, "timed out".to_owned())),
            Ok(Err(e)) => return Err((true, format!("cannot reach the collector: {e}"))),
            Ok(Ok(r)) => r,
        };
        let status = response.status();
        let body =
            tokio::time::timeout(self.timeout, http_body_util::Limited::new(response.into_body(), 64 * 1024).collect())
                .await
                .ok()
                .and_then(Result::ok)
                .map(|b| b.to_bytes())
                .unwrap_or_default();
        if status.is_success() {
            let rejected = proto::ExportTraceServiceResponse::decode(body)
                .ok()
                .and_then(|r| r.partial_success)
                .map_or(0, |p| u64::try_from(p.rejected_spans).unwrap_or(0));
            return Ok(rejected);
        }
        let retryable = matches!(status.as_u16(), 429 | 502 | 503 | 504);
        Err((retryable, format!("the collector answered {status}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_valid_traceparent_is_read_and_written_back_the_same() {
        let v = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let tp = TraceParent::parse(v).unwrap();
        assert!(tp.sampled());
        assert_eq!(tp.parent_id, [0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7]);
        assert_eq!(tp.header(), v);
        assert!(!TraceParent::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00").unwrap().sampled());
    }

    #[test]
    fn invalid_traceparents_are_refused() {
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x",
        ] {
            assert_eq!(TraceParent::parse(bad), None, "{bad}");
        }
        // A later version is read as 00, its extra fields ignored.
        assert!(TraceParent::parse("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-ever").is_some());
    }

    #[test]
    fn tracestate_is_passed_on_only_when_valid_and_joined_across_fields() {
        let of = |values: &[&str]| {
            let mut h = HeaderMap::new();
            for v in values {
                h.append(TRACESTATE, HeaderValue::from_str(v).unwrap());
            }
            tracestate(&h).map(|v| v.to_str().unwrap().to_owned())
        };
        assert_eq!(of(&["congo=t61rcWkgMzE"]).as_deref(), Some("congo=t61rcWkgMzE"));
        assert_eq!(of(&["a=1", "b@1tenant=2"]), None, "the system after @ starts with a letter");
        assert_eq!(of(&["a=1", "tenant-1@b=2"]).as_deref(), Some("a=1,tenant-1@b=2"));
        assert_eq!(of(&["a=1 , ,b=2"]).as_deref(), Some("a=1 , ,b=2"), "empty members are allowed");
        for bad in ["A=1", "a", "a=", "a=x,y", "a=b=c", "1a=2", "a=x\ty", &format!("a={}", "x".repeat(600))] {
            assert_eq!(of(&[bad]), None, "{bad}");
        }
        let many: Vec<String> = (0..33).map(|i| format!("k{i}=v")).collect();
        assert_eq!(of(&[&many.join(",")]), None, "at most 32 members");
        assert_eq!(of(&[&many[..32].join(",")]).map(|s| s.split(',').count()), Some(32));
    }

    proptest! {
        /// Headers that are almost right: one byte of a valid header changed is read or refused, and a
        /// header read is written back the same way.
        #[test]
        fn a_header_one_byte_off_is_read_or_refused_consistently(at in 0usize..55, byte in any::<u8>()) {
            let mut v = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".to_vec();
            v[at] = byte;
            if let Ok(s) = std::str::from_utf8(&v)
                && let Some(tp) = TraceParent::parse(s)
            {
                // Written back as version 00, the rest as it came.
                let written = tp.header();
                prop_assert_eq!(&written.to_str().unwrap()[2..], &s[2..]);
            }
        }

        #[test]
        fn any_ids_round_trip(trace in any::<[u8; 16]>(), parent in any::<[u8; 8]>(), flags in any::<u8>()) {
            prop_assume!(trace != [0; 16] && parent != [0; 8]);
            let tp = TraceParent { trace_id: trace, parent_id: parent, flags };
            let header = tp.header();
            prop_assert_eq!(TraceParent::parse(header.to_str().unwrap()), Some(tp));
        }

        #[test]
        fn any_text_is_read_or_refused_without_panicking(s in "\\PC{0,80}") {
            if let Some(tp) = TraceParent::parse(&s) {
                prop_assert_eq!(TraceParent::parse(tp.header().to_str().unwrap()), Some(tp));
            }
        }
    }
}
