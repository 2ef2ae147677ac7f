//! Request traces over OTLP/HTTP, received by a fake collector that decodes the protobuf it is sent
//! with a reader of its own (field numbers from OTLP's `.proto` files, not the gateway's types): one
//! server span per request with a client span per attempt, GenAI attributes, the caller's
//! `traceparent` continued and passed upstream, retries of a failing collector, and a queue that
//! drops spans rather than slowing requests.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use serde_json::json;

use crate::support::{Harness, MASTER_KEY, Setup, eventually, hello};

// --- a protobuf reader of the collector's own ---

#[derive(Debug, Clone)]
enum Field {
    Varint(u64),
    Fixed64(u64),
    Bytes(Vec<u8>),
    Fixed32(u32),
}

fn varint(b: &mut &[u8]) -> u64 {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = b[0];
        *b = &b[1..];
        v |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            break;
        }
    }
    v
}

/// Every field of one message, in order: (field number, value).
fn fields(mut b: &[u8]) -> Vec<(u64, Field)> {
    let mut out = Vec::new();
    while !b.is_empty() {
        let key = varint(&mut b);
        let value = match key & 7 {
            0 => Field::Varint(varint(&mut b)),
            1 => {
                let (v, rest) = b.split_at(8);
                b = rest;
                Field::Fixed64(u64::from_le_bytes(v.try_into().unwrap()))
            }
            2 => {
                let len = varint(&mut b) as usize;
                let (v, rest) = b.split_at(len);
                b = rest;
                Field::Bytes(v.to_vec())
            }
            5 => {
                let (v, rest) = b.split_at(4);
                b = rest;
                Field::Fixed32(u32::from_le_bytes(v.try_into().unwrap()))
            }
            other => panic!("wire type {other} is not one OTLP uses"),
        };
        out.push((key >> 3, value));
    }
    out
}

fn messages(b: &[u8], number: u64) -> Vec<Vec<u8>> {
    fields(b)
        .into_iter()
        .filter_map(|(n, f)| match (n == number, f) {
            (true, Field::Bytes(v)) => Some(v),
            _ => None,
        })
        .collect()
}

#[derive(Debug, Clone, PartialEq)]
enum Attr {
    S(String),
    B(bool),
    I(i64),
    D(f64),
}

#[derive(Debug, Clone, Default)]
struct SpanSeen {
    trace_id: Vec<u8>,
    span_id: Vec<u8>,
    trace_state: String,
    parent: Vec<u8>,
    name: String,
    kind: u64,
    start: u64,
    end: u64,
    attrs: HashMap<String, Attr>,
    status_code: u64,
    flags: u32,
}

impl SpanSeen {
    fn s(&self, key: &str) -> &str {
        match self.attrs.get(key) {
            Some(Attr::S(s)) => s,
            other => panic!("{key} is not a string attribute: {other:?} in {self:?}"),
        }
    }
    fn i(&self, key: &str) -> i64 {
        match self.attrs.get(key) {
            Some(Attr::I(i)) => *i,
            other => panic!("{key} is not an int attribute: {other:?} in {self:?}"),
        }
    }
}

fn key_values(b: &[u8]) -> (String, Attr) {
    let mut key = String::new();
    let mut value = Attr::S(String::new());
    for (n, f) in fields(b) {
        match (n, f) {
            (1, Field::Bytes(k)) => key = String::from_utf8(k).unwrap(),
            (2, Field::Bytes(any)) => {
                for (n, f) in fields(&any) {
                    value = match (n, f) {
                        (1, Field::Bytes(s)) => Attr::S(String::from_utf8(s).unwrap()),
                        (2, Field::Varint(v)) => Attr::B(v != 0),
                        (3, Field::Varint(v)) => Attr::I(v as i64),
                        (4, Field::Fixed64(v)) => Attr::D(f64::from_bits(v)),
                        other => panic!("an AnyValue OTLP does not define here: {other:?}"),
                    }
                }
            }
            other => panic!("a KeyValue field OTLP does not define: {other:?}"),
        }
    }
    (key, value)
}

/// `ExportTraceServiceRequest` → its resource's attributes and its spans.
fn decode(body: &[u8]) -> (HashMap<String, Attr>, Vec<SpanSeen>) {
    let mut resource = HashMap::new();
    let mut spans = Vec::new();
    for rs in messages(body, 1) {
        for r in messages(&rs, 1) {
            resource.extend(messages(&r, 1).iter().map(|kv| key_values(kv)));
        }
        for ss in messages(&rs, 2) {
            for raw in messages(&ss, 2) {
                let mut span = SpanSeen::default();
                for (n, f) in fields(&raw) {
                    match (n, f) {
                        (1, Field::Bytes(v)) => span.trace_id = v,
                        (2, Field::Bytes(v)) => span.span_id = v,
                        (3, Field::Bytes(v)) => span.trace_state = String::from_utf8(v).unwrap(),
                        (4, Field::Bytes(v)) => span.parent = v,
                        (5, Field::Bytes(v)) => span.name = String::from_utf8(v).unwrap(),
                        (6, Field::Varint(v)) => span.kind = v,
                        (7, Field::Fixed64(v)) => span.start = v,
                        (8, Field::Fixed64(v)) => span.end = v,
                        (9, Field::Bytes(kv)) => {
                            let (k, v) = key_values(&kv);
                            span.attrs.insert(k, v);
                        }
                        (15, Field::Bytes(status)) => {
                            for (n, f) in fields(&status) {
                                if let (3, Field::Varint(code)) = (n, f) {
                                    span.status_code = code;
                                }
                            }
                        }
                        (16, Field::Fixed32(v)) => span.flags = v,
                        other => panic!("a Span field OTLP does not define: {other:?}"),
                    }
                }
                spans.push(span);
            }
        }
    }
    (resource, spans)
}

// --- the fake collector ---

#[derive(Default)]
struct Collector {
    bodies: Mutex<Vec<(String, Bytes)>>,
    /// Answer this many exports with 503 first.
    refuse: AtomicUsize,
    /// Hold each answer this long (ms).
    hold_ms: AtomicUsize,
    posts: AtomicUsize,
}

impl Collector {
    async fn start() -> (Arc<Collector>, String) {
        let collector = Arc::new(Collector::default());
        let c = collector.clone();
        let app = axum::Router::new().route(
            "/v1/traces",
            axum::routing::post(move |headers: http::HeaderMap, body: Bytes| {
                let c = c.clone();
                async move {
                    c.posts.fetch_add(1, Ordering::SeqCst);
                    let hold = c.hold_ms.load(Ordering::SeqCst);
                    if hold > 0 {
                        tokio::time::sleep(Duration::from_millis(hold as u64)).await;
                    }
                    if c.refuse.load(Ordering::SeqCst) > 0 {
                        c.refuse.fetch_sub(1, Ordering::SeqCst);
                        return (http::StatusCode::SERVICE_UNAVAILABLE, Bytes::new());
                    }
                    let kind = headers.get("content-type").map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default();
                    c.bodies.lock().unwrap().push((kind, body));
                    // An empty ExportTraceServiceResponse: everything taken.
                    (http::StatusCode::OK, Bytes::new())
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/v1/traces", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        (collector, url)
    }

    fn spans(&self) -> Vec<SpanSeen> {
        self.bodies.lock().unwrap().iter().flat_map(|(_, b)| decode(b).1).collect()
    }

    async fn spans_of(&self, trace_id: &[u8], n: usize) -> Vec<SpanSeen> {
        eventually(&format!("{n} spans of the trace"), || {
            self.spans().iter().filter(|s| s.trace_id == trace_id).count() >= n
        })
        .await;
        self.spans().into_iter().filter(|s| s.trace_id == trace_id).collect()
    }
}

fn traced(url: &str, more: &str) -> Setup {
    Setup {
        extra: format!(
            "[[aliases]]\nname = \"traced\"\ntargets = [\"dead-model\", \"test-model\"]\n\n[traces]\nendpoint = \"{url}\"\nflush_interval_ms = 20\n{more}"
        ),
        ..Setup::default()
    }
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
}

fn to_hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A chat completion through `h` with `key` and these headers (a caller's trace context).
async fn chat_with(h: &Harness, key: &str, model: &str, headers: &[(&str, &str)]) -> reqwest::Response {
    let mut req = h.client.post(h.url("/v1/chat/completions")).bearer_auth(key).json(&hello(model));
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    req.send().await.unwrap()
}

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT: &str = "00f067aa0ba902b7";

#[tokio::test]
async fn a_request_is_a_server_span_with_a_client_span_per_attempt_in_the_callers_trace() {
    let (collector, url) = Collector::start().await;
    let h = Harness::with(traced(&url, "")).await;
    let org = h.new_org(json!({"name": format!("traced-{}", uuid::Uuid::now_v7())})).await;
    let (key_id, key) = h.new_key(&org, json!({})).await;
    let resp = chat_with(
        &h,
        &key,
        "traced",
        &[("traceparent", &format!("00-{TRACE}-{PARENT}-01")), ("tracestate", "vendor=opaque")],
    )
    .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-switchyard-model"], "test-model");

    let spans = collector.spans_of(&hex(TRACE), 3).await;
    assert_eq!(spans.len(), 3, "{spans:#?}");
    let root = spans.iter().find(|s| s.kind == 2).expect("a SERVER span");
    assert_eq!(root.parent, hex(PARENT), "the caller's span is the request span's parent");
    assert_eq!(root.name, "chat traced");
    assert_eq!(root.trace_state, "vendor=opaque");
    assert_eq!(root.flags & 1, 1);
    assert_eq!(root.s("gen_ai.operation.name"), "chat");
    assert_eq!(root.s("gen_ai.request.model"), "traced");
    assert_eq!(root.s("gen_ai.response.model"), "test-model");
    assert_eq!(root.s("gen_ai.provider.name"), "upstream");
    assert!(root.i("gen_ai.usage.input_tokens") > 0 && root.i("gen_ai.usage.output_tokens") > 0, "{root:?}");
    assert_eq!(root.i("switchyard.attempts"), 2);
    assert_eq!(root.s("switchyard.key_id"), key_id);
    assert_eq!(root.s("switchyard.organization_id"), org["id"].as_str().unwrap());
    assert_eq!(root.i("http.response.status_code"), 200);
    assert!(matches!(root.attrs.get("switchyard.cost_usd"), Some(Attr::D(c)) if *c > 0.0), "{root:?}");
    assert_eq!(root.status_code, 0, "a served request's span is not an error");
    assert!(root.end >= root.start && root.start > 1_700_000_000_000_000_000);

    let mut attempts: Vec<&SpanSeen> = spans.iter().filter(|s| s.kind == 3).collect();
    attempts.sort_by_key(|s| s.start);
    assert_eq!(attempts.len(), 2);
    for a in &attempts {
        assert_eq!(a.parent, root.span_id, "each attempt is a child of the request span");
        assert!(a.start >= root.start && a.end <= root.end, "{a:?} within {root:?}");
    }
    let (dead, served) = (attempts[0], attempts[1]);
    assert_eq!(dead.s("switchyard.model"), "dead-model");
    assert_eq!(dead.s("error.type"), "connect_error");
    assert_eq!(dead.status_code, 2, "a failed attempt is an error");
    assert_eq!(served.name, "chat upstream-model-id");
    assert_eq!(served.s("gen_ai.request.model"), "upstream-model-id");
    assert_eq!(served.s("switchyard.model"), "test-model");
    assert_eq!(served.status_code, 0);
    assert!(!served.attrs.contains_key("error.type"));

    // The provider was told the attempt's span as its parent, in the caller's trace.
    let upstream = h.upstream.last_request();
    let sent = upstream.headers["traceparent"].to_str().unwrap();
    assert_eq!(sent, format!("00-{TRACE}-{}-01", to_hex(&served.span_id)));
    assert_eq!(upstream.headers["tracestate"], "vendor=opaque");

    // What the collector received: protobuf, the resource named, no prompt or answer text.
    let bodies = collector.bodies.lock().unwrap().clone();
    assert!(bodies.iter().all(|(kind, _)| kind == "application/x-protobuf"));
    let (resource, _) = decode(&bodies[0].1);
    assert_eq!(resource.get("service.name"), Some(&Attr::S("switchyard".to_owned())));
    for (_, body) in &bodies {
        let text = String::from_utf8_lossy(body);
        assert!(!text.contains("Say hello") && !text.contains(&key), "no prompt and no key on a span");
    }
}

#[tokio::test]
async fn a_trace_starts_here_without_a_callers_and_an_unsampled_caller_is_passed_on_not_exported() {
    let (collector, url) = Collector::start().await;
    let h = Harness::with(traced(&url, "")).await;

    // Not sampled by the caller: nothing exported, the context still reaches the provider.
    let unsampled = "0af7651916cd43dd8448eb211c80319c";
    let resp =
        chat_with(&h, MASTER_KEY, "test-model", &[("traceparent", &format!("00-{unsampled}-b7ad6b7169203331-00"))])
            .await;
    assert_eq!(resp.status(), 200);
    let sent = h.upstream.last_request().headers["traceparent"].to_str().unwrap().to_owned();
    assert!(sent.starts_with(&format!("00-{unsampled}-")) && sent.ends_with("-00"), "{sent}");

    // No traceparent (or one that is not valid: upper-case hex): a trace of its own, sampled.
    let invalid = [("traceparent", "00-4BF92F3577B34DA6A3CE929D0E0E4736-00F067AA0BA902B7-01")];
    for headers in [&[][..], &invalid[..]] {
        let before = collector.spans().len();
        assert_eq!(chat_with(&h, MASTER_KEY, "test-model", headers).await.status(), 200);
        eventually("the request's spans", || collector.spans().len() >= before + 2).await;
        let spans = collector.spans();
        let root = spans[before..].iter().find(|s| s.kind == 2).unwrap();
        assert!(root.parent.is_empty(), "a root span: {root:?}");
        assert_eq!(root.trace_id.len(), 16);
        assert_ne!(root.trace_id, hex("4bf92f3577b34da6a3ce929d0e0e4736"));
        let child = spans[before..].iter().find(|s| s.kind == 3).unwrap();
        let sent = h.upstream.last_request().headers["traceparent"].to_str().unwrap().to_owned();
        assert_eq!(sent, format!("00-{}-{}-01", to_hex(&root.trace_id), to_hex(&child.span_id)));
    }
    assert!(
        collector.spans().iter().all(|s| s.trace_id != hex(unsampled)),
        "the unsampled request was not exported (the later ones were, in order)"
    );
}

#[tokio::test]
async fn with_traces_off_a_callers_trace_context_reaches_the_provider_unchanged() {
    let h = Harness::start().await;
    let resp = chat_with(
        &h,
        MASTER_KEY,
        "test-model",
        &[("traceparent", &format!("00-{TRACE}-{PARENT}-01")), ("tracestate", "a=1")],
    )
    .await;
    assert_eq!(resp.status(), 200);
    let seen = h.upstream.last_request();
    assert_eq!(seen.headers["traceparent"], format!("00-{TRACE}-{PARENT}-01").as_str());
    assert_eq!(seen.headers["tracestate"], "a=1");

    // Without one, none is invented.
    assert_eq!(h.chat(hello("test-model")).await.status(), 200);
    assert!(h.upstream.last_request().headers.get("traceparent").is_none());
    let metrics = h.client.get(h.url("/metrics")).bearer_auth(MASTER_KEY).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("switchyard_requests_total") && !metrics.contains("switchyard_trace_spans"));

    // Told not to, it passes nothing on; an invalid tracestate is never passed on.
    let quiet = Harness::with(Setup { extra: "[traces]\npropagate = false\n".into(), ..Setup::default() }).await;
    let resp =
        chat_with(&quiet, MASTER_KEY, "test-model", &[("traceparent", &format!("00-{TRACE}-{PARENT}-01"))]).await;
    assert_eq!(resp.status(), 200);
    assert!(quiet.upstream.last_request().headers.get("traceparent").is_none());
    let resp = chat_with(
        &h,
        MASTER_KEY,
        "test-model",
        &[("traceparent", &format!("00-{TRACE}-{PARENT}-01")), ("tracestate", "Not Valid")],
    )
    .await;
    assert_eq!(resp.status(), 200);
    let seen = h.upstream.last_request();
    assert!(seen.headers.get("traceparent").is_some() && seen.headers.get("tracestate").is_none());
}

#[tokio::test]
async fn a_failing_collector_is_retried_and_a_stuck_one_costs_requests_nothing_but_dropped_spans() {
    let (collector, url) = Collector::start().await;
    let h = Harness::with(traced(&url, "queue_spans = 4\nbatch_spans = 1\nexport_timeout_ms = 30000\n")).await;
    let metric = |text: &str, name: &str| -> u64 {
        text.lines().find_map(|l| l.strip_prefix(&format!("{name} "))).map_or(0, |v| v.parse().unwrap())
    };

    // Refused twice, then taken: the batch is not lost.
    collector.refuse.store(2, Ordering::SeqCst);
    assert_eq!(h.chat(hello("test-model")).await.status(), 200);
    eventually("the span after two refusals", || !collector.spans().is_empty()).await;
    assert!(collector.posts.load(Ordering::SeqCst) >= 3);

    // A collector that holds every answer: requests go on at full speed while spans are dropped.
    collector.hold_ms.store(3000, Ordering::SeqCst);
    for _ in 0..8 {
        assert_eq!(h.chat(hello("test-model")).await.status(), 200);
    }
    let text = h.client.get(h.url("/metrics")).bearer_auth(MASTER_KEY).send().await.unwrap().text().await.unwrap();
    let dropped = metric(&text, "switchyard_trace_spans_dropped_total");
    // 16 spans: one being sent, at most four queued, the rest dropped.
    assert!(dropped >= 10, "dropped {dropped}:\n{text}");
    assert!(metric(&text, "switchyard_trace_spans_exported_total") >= 1, "{text}");
}
