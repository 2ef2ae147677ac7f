//! Streamed chat completions: forwarding, usage, tool-call deltas, and every way a stream can end.

use std::sync::atomic::Ordering;
use std::time::Duration;

use serde_json::{Value, json};
use switchyard::config::FakeSettings;
use switchyard::fake::Fault;
use switchyard::usage::{Outcome, UsageSource};

use crate::support::{Harness, Setup, eventually, hello, payloads, sse_events};

fn streamed(mut body: Value) -> Value {
    body["stream"] = json!(true);
    body
}

fn text_of(chunks: &[Value]) -> String {
    chunks.iter().filter_map(|c| c["choices"][0]["delta"]["content"].as_str()).collect()
}

#[tokio::test]
async fn a_stream_is_forwarded_with_the_public_model_and_ends_with_done() {
    let h = Harness::start().await;
    let plain: Value = h.chat(hello("test-model")).await.json().await.unwrap();
    let resp = h.chat(streamed(hello("test-model"))).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    assert_eq!(resp.headers()["x-switchyard-model"], "test-model");
    let (chunks, done) = payloads(&sse_events(resp).await);
    assert!(done, "the stream ends with [DONE]");
    assert!(chunks.len() > 3);
    assert!(chunks.iter().all(|c| c["model"] == "test-model" && c["object"] == "chat.completion.chunk"));
    assert!(chunks.iter().all(|c| c["system_fingerprint"] == "fp_switchyard_fake"), "unknown chunk fields are kept");
    assert_eq!(text_of(&chunks), plain["choices"][0]["message"]["content"].as_str().unwrap());
}

#[tokio::test]
async fn usage_is_captured_even_when_the_client_did_not_ask_for_it() {
    let h = Harness::start().await;
    let (chunks, done) = payloads(&sse_events(h.chat(streamed(hello("test-model"))).await).await);
    assert!(done);
    assert!(chunks.iter().all(|c| c.get("usage").is_none()), "no usage reaches a client that did not ask");
    assert_eq!(h.upstream.last_request().body["stream_options"]["include_usage"], true, "but the upstream was asked");

    let records = h.usage.wait_for(1).await;
    assert_eq!(records[0].usage_source, UsageSource::Provider);
    assert_eq!(records[0].completion_tokens, 24);
    assert_eq!(records[0].outcome, Outcome::Completed);
    assert!(records[0].ttft_ms.is_some());
}

#[tokio::test]
async fn a_client_that_asks_for_usage_gets_the_final_usage_chunk() {
    let h = Harness::start().await;
    let mut body = streamed(hello("test-model"));
    body["stream_options"] = json!({"include_usage": true});
    let (chunks, done) = payloads(&sse_events(h.chat(body).await).await);
    assert!(done);
    let last = chunks.last().unwrap();
    assert_eq!(last["choices"], json!([]));
    assert_eq!(last["usage"]["completion_tokens"], 24);
    assert_eq!(last["model"], "test-model");
}

#[tokio::test]
async fn streamed_and_unstreamed_requests_record_the_same_usage() {
    let h = Harness::start().await;
    let _ = h.chat(hello("test-model")).await.json::<Value>().await.unwrap();
    let _ = sse_events(h.chat(streamed(hello("test-model"))).await).await;
    let r = h.usage.wait_for(2).await;
    assert_eq!((r[0].prompt_tokens, r[0].completion_tokens), (r[1].prompt_tokens, r[1].completion_tokens));
    assert!(!r[0].streamed && r[1].streamed);
}

#[tokio::test]
async fn tool_call_deltas_reassemble_to_the_unstreamed_calls() {
    let h = Harness::start().await;
    let request = json!({
        "model": "test-model",
        "messages": [{"role": "user", "content": "Weather in Paris and the time in Tokyo?"}],
        "tools": [
            {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"}}}}},
            {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object", "properties": {"tz": {"type": "string"}}}}}
        ]
    });
    let plain: Value = h.chat(request.clone()).await.json().await.unwrap();
    let (chunks, done) = payloads(&sse_events(h.chat(streamed(request)).await).await);
    assert!(done);

    // Reassemble as a client does: by index, id and name once, arguments appended.
    let mut calls: Vec<(String, String, String)> = Vec::new();
    for chunk in &chunks {
        for delta in chunk["choices"][0]["delta"]["tool_calls"].as_array().into_iter().flatten() {
            let i = delta["index"].as_u64().unwrap() as usize;
            if calls.len() <= i {
                calls.resize(i + 1, Default::default());
                calls[i].0 = delta["id"].as_str().expect("the first delta of a call has its id").to_owned();
                calls[i].1 = delta["function"]["name"].as_str().expect("and its name").to_owned();
            } else {
                assert!(delta.get("id").is_none(), "id is sent once");
            }
            calls[i].2 += delta["function"]["arguments"].as_str().unwrap_or_default();
        }
    }
    let expected: Vec<(String, String, String)> = plain["choices"][0]["message"]["tool_calls"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["id"].as_str().unwrap().to_owned(),
                c["function"]["name"].as_str().unwrap().to_owned(),
                c["function"]["arguments"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        calls.iter().map(|c| (&c.1, &c.2)).collect::<Vec<_>>(),
        expected.iter().map(|c| (&c.1, &c.2)).collect::<Vec<_>>()
    );
    assert_eq!(chunks.iter().rev().find_map(|c| c["choices"][0]["finish_reason"].as_str()), Some("tool_calls"));
}

#[tokio::test]
async fn a_client_that_disconnects_mid_stream_cancels_the_upstream_and_is_still_recorded() {
    let h = Harness::with(Setup {
        fake: FakeSettings { latency_ms: 0, tokens_per_second: 20.0, completion_tokens: 500 },
        ..Setup::default()
    })
    .await;
    let mut resp = h.chat(streamed(hello("test-model"))).await;
    assert_eq!(resp.status(), 200);
    let first = resp.chunk().await.unwrap().unwrap();
    assert!(first.starts_with(b"data: "));
    drop(resp);

    let stats = &h.upstream.state.stats;
    eventually("the upstream stream to be cancelled", || stats.streams_cancelled.load(Ordering::Relaxed) == 1).await;
    assert_eq!(stats.streams_completed.load(Ordering::Relaxed), 0);
    let r = h.usage.wait_for(1).await;
    assert_eq!(r[0].outcome, Outcome::ClientDisconnected);
    assert_eq!(r[0].usage_source, UsageSource::Estimated);
    assert!(r[0].prompt_tokens > 0);
}

#[tokio::test]
async fn a_client_that_leaves_after_the_whole_stream_arrived_is_billed_from_it_and_the_connection_is_kept() {
    // The fake paces its reply at about a chunk a millisecond (a timer's granularity), for ~120 ms: the
    // client leaves after the first chunk, while the rest is still arriving, each chunk well within the
    // drain's gap and all of it within its cap. (A reply sent all at once can fit in the sockets' buffers
    // and reach the client before it leaves.)
    let h = Harness::with(Setup {
        fake: FakeSettings { latency_ms: 0, tokens_per_second: 2000.0, completion_tokens: 120 },
        ..Setup::default()
    })
    .await;
    // On a loaded machine a pause of more than the drain's gap can still happen; such a stream is cut
    // (estimated usage, connection closed), which is the rule for a stream still being generated. Up to
    // six tries for the case under test: the client gone, the rest read, the provider's usage billed.
    let mut drained = 0;
    let mut records = Vec::new();
    for i in 1..=6 {
        let mut resp = h.chat(streamed(hello("test-model"))).await;
        assert_eq!(resp.status(), 200);
        assert!(resp.chunk().await.unwrap().unwrap().starts_with(b"data: "));
        drop(resp);
        // The request is over, its upstream connection idle again (or closed, if it was cut).
        records = h.usage.wait_for(i).await;
        let r = &records[i - 1];
        match (r.outcome, r.usage_source) {
            (Outcome::ClientDisconnected, UsageSource::Provider) => {
                assert_eq!(r.completion_tokens, 120);
                drained += 1;
                if drained == 2 {
                    break;
                }
            }
            // The rest reached the client's socket before it closed: a completed stream.
            (Outcome::Completed, UsageSource::Provider) | (Outcome::ClientDisconnected, UsageSource::Estimated) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(drained, 2, "{records:?}");
    let cut = records.iter().filter(|r| r.usage_source == UsageSource::Estimated).count() as u64;
    let stats = &h.upstream.state.stats;
    assert_eq!(stats.streams_completed.load(Ordering::Relaxed), records.len() as u64 - cut);
    assert_eq!(stats.connections.load(Ordering::Relaxed), 1 + cut, "one pooled upstream connection, but for cuts");
}

async fn stream_failure(setup: Setup, fault: Fault) -> (Harness, Vec<Value>, bool) {
    let h = Harness::with(setup).await;
    h.upstream.state.push_fault(None, fault);
    let resp = h.chat(streamed(hello("test-model"))).await;
    assert_eq!(resp.status(), 200, "the stream had started");
    let (chunks, done) = payloads(&sse_events(resp).await);
    (h, chunks, done)
}

#[tokio::test]
async fn an_upstream_cut_mid_stream_ends_with_an_error_event_not_a_silent_stop() {
    let (h, chunks, done) = stream_failure(Setup::default(), Fault::CutMidStream { after_chunks: 3 }).await;
    assert!(!done, "no [DONE] after a failure");
    let last = chunks.last().unwrap();
    assert_eq!(last["error"]["code"], "stream_interrupted");
    assert_eq!(last["error"]["type"], "upstream_error");
    assert_eq!(chunks.len(), 4, "the three chunks that arrived, then the error");
    let r = h.usage.wait_for(1).await;
    assert_eq!(r[0].outcome, Outcome::Interrupted);
}

#[tokio::test]
async fn an_in_band_upstream_error_mid_stream_reaches_the_client_as_an_error_event() {
    let (_h, chunks, done) = stream_failure(Setup::default(), Fault::ErrorMidStream { after_chunks: 2 }).await;
    assert!(!done);
    assert_eq!(chunks.last().unwrap()["error"]["code"], "stream_interrupted");
}

#[tokio::test]
async fn an_upstream_that_stalls_mid_stream_is_cut_at_the_idle_timeout() {
    let setup = Setup { provider_extra: "timeouts = { idle_ms = 300 }".into(), ..Setup::default() };
    let started = std::time::Instant::now();
    let (_h, chunks, done) =
        stream_failure(setup, Fault::StallMidStream { after_chunks: 2, duration: Duration::from_secs(30) }).await;
    assert!(!done);
    assert_eq!(chunks.last().unwrap()["error"]["code"], "upstream_timeout");
    assert!(started.elapsed() < Duration::from_secs(20), "the stall was cut, not waited out");
}

#[tokio::test]
async fn a_stream_that_fails_before_its_first_byte_gets_a_proper_status() {
    let h = Harness::start().await;
    h.upstream.state.push_fault(None, Fault::status(500));
    let resp = h.chat(streamed(hello("test-model"))).await;
    let (status, body) = crate::support::error_of(resp).await;
    assert_eq!((status, body["error"]["code"].as_str()), (502, Some("upstream_error")));

    h.upstream.state.push_fault(None, Fault::ErrorMidStream { after_chunks: 0 });
    let (status, _) = crate::support::error_of(h.chat(streamed(hello("test-model"))).await).await;
    assert_eq!(status, 502, "an in-band error before the first chunk is a failed attempt");
}
