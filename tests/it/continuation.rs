//! Mid-stream continuation: a stream whose provider fails after content began goes on from the next
//! target, and the client reads one stream whose text neither repeats nor loses a word.

use std::time::Duration;

use serde_json::{Value, json};
use switchyard::fake::{Fault, PROSE};

use crate::support::{Harness, MASTER_KEY, Setup, header, ledger_row, payloads, sse_events};

const TARGETS: &str = r#"
[[models]]
name = "first-model"
provider = "upstream"
upstream = "first-up"
input_per_mtok = 1.0
output_per_mtok = 2.0

[[models]]
name = "second-model"
provider = "upstream"
upstream = "second-up"
input_per_mtok = 1.0
output_per_mtok = 2.0

[[models]]
name = "claude-next"
provider = "anthropic"
upstream = "claude-next-up"
input_per_mtok = 3.0
output_per_mtok = 15.0

[[models]]
name = "claude-first"
provider = "anthropic"
upstream = "claude-first-up"

[[models]]
name = "gemini-first"
provider = "gemini"
upstream = "gemini-first-up"
input_per_mtok = 1.0
output_per_mtok = 2.0

[[models]]
name = "gemini-next"
provider = "gemini"
upstream = "gemini-next-up"
input_per_mtok = 1.0
output_per_mtok = 2.0

[[providers]]
name = "native"
kind = "openai"
base_url = "{base}"
api_key_env = "TEST_UPSTREAM_KEY"
quirks = { responses = true }

[[models]]
name = "native-first"
provider = "native"
upstream = "native-first-up"
input_per_mtok = 1.0
output_per_mtok = 2.0

[[aliases]]
name = "native-then-second"
targets = ["native-first", "second-model"]

[[aliases]]
name = "claude-pair"
targets = ["claude-first", "claude-next"]

[[aliases]]
name = "claude-then-openai"
targets = ["claude-first", "second-model"]

[[aliases]]
name = "gemini-pair"
targets = ["gemini-first", "gemini-next"]

[[aliases]]
name = "resilient"
targets = ["first-model", "second-model"]

[[aliases]]
name = "no-resume"
targets = ["first-model", "second-model"]
continue_streams = false

[[aliases]]
name = "resilient-claude"
targets = ["first-model", "claude-next"]
"#;

async fn harness() -> Harness {
    Harness::with(Setup {
        extra: TARGETS.into(),
        provider_extra: "timeouts = { idle_ms = 400 }".into(),
        ..Setup::default()
    })
    .await
}

fn streamed(model: &str) -> Value {
    json!({"model": model, "stream": true, "stream_options": {"include_usage": true},
           "messages": [{"role": "user", "content": "Tell me about the gateway"}]})
}

/// Whether `text` is consecutive words of the fake's prose (which it cycles through), each once.
fn reads_on(text: &str) -> bool {
    let prose: Vec<&str> = PROSE.split(' ').collect();
    let words: Vec<&str> = text.split_whitespace().collect();
    let Some(first) = words.first() else { return false };
    (0..prose.len())
        .filter(|&j| prose[j].eq_ignore_ascii_case(first))
        .any(|j| words.iter().enumerate().all(|(i, w)| prose[(j + i) % prose.len()].eq_ignore_ascii_case(w)))
}

/// The partial answer the continuation attempt was given: its last assistant turn's text.
fn partial_sent_upstream(h: &Harness) -> String {
    let requests = h.upstream.state.requests();
    let body = &requests.last().unwrap().body;
    if let Some(contents) = body["contents"].as_array() {
        // Gemini's: the last model turn's text parts.
        let model = contents.iter().rev().find(|c| c["role"] == "model").expect("a model turn");
        return model["parts"].as_array().unwrap().iter().filter_map(|p| p["text"].as_str()).collect();
    }
    let messages = body["messages"].as_array().unwrap();
    let assistant = messages.iter().rev().find(|m| m["role"] == "assistant").expect("an assistant turn");
    match &assistant["content"] {
        Value::String(s) => s.clone(),
        Value::Array(blocks) => blocks.iter().filter_map(|b| b["text"].as_str()).collect(),
        other => panic!("unexpected content {other}"),
    }
}

/// The chat stream's text, and checks it reads as one stream: one id, one role, one finish, one usage.
fn one_chat_stream(chunks: &[Value]) -> String {
    let ids: std::collections::HashSet<&str> = chunks.iter().filter_map(|c| c["id"].as_str()).collect();
    assert_eq!(ids.len(), 1, "one id: {ids:?}");
    let models: std::collections::HashSet<&str> = chunks.iter().filter_map(|c| c["model"].as_str()).collect();
    assert_eq!(models.len(), 1, "one model: {models:?}");
    let roles = chunks.iter().filter(|c| c["choices"][0]["delta"].get("role").is_some()).count();
    assert_eq!(roles, 1, "one role chunk");
    let finishes = chunks.iter().filter(|c| c["choices"][0]["finish_reason"].is_string()).count();
    assert_eq!(finishes, 1, "one finish_reason");
    let usages = chunks.iter().filter(|c| c["usage"].is_object()).count();
    assert_eq!(usages, 1, "one usage chunk");
    assert!(chunks.iter().all(|c| c.get("error").is_none()), "no error event");
    chunks.iter().filter_map(|c| c["choices"][0]["delta"]["content"].as_str()).collect()
}

/// `text` is the partial answer the continuation was given followed by the fake's 24 further words,
/// no word repeated or missing at the seam.
fn continues_the_partial_answer(h: &Harness, text: &str) {
    assert!(reads_on(text), "no repeated or missing words: {text:?}");
    let partial = partial_sent_upstream(h);
    assert!(!partial.is_empty() && text.starts_with(partial.trim_end()), "{text:?} continues {partial:?}");
    assert_eq!(text.split_whitespace().count(), partial.split_whitespace().count() + 24, "{text:?}");
}

async fn continued_after(fault: Fault) {
    let h = harness().await;
    h.upstream.state.push_fault(Some("first-up"), fault);
    let resp = h.chat(streamed("resilient")).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "x-switchyard-model"), "first-model", "the headers name the target that began");
    let request_id = header(&resp, "x-request-id");
    let (chunks, done) = payloads(&sse_events(resp).await);
    assert!(done, "ends with [DONE]");
    // The fake restated the last three words of the partial answer: trimmed at the seam.
    continues_the_partial_answer(&h, &one_chat_stream(&chunks));
    let usage = &chunks.iter().find(|c| c["usage"].is_object()).unwrap()["usage"];
    assert_eq!(usage["continuation"]["count"], 1);
    assert_eq!(usage["continuation"]["from"][0]["model"], "first-model");
    assert_eq!(
        usage["total_tokens"].as_u64(),
        Some(usage["prompt_tokens"].as_u64().unwrap() + usage["completion_tokens"].as_u64().unwrap())
    );
    let row = ledger_row(&h, &request_id).await;
    assert_eq!((row["outcome"].as_str(), row["served_model"].as_str()), (Some("completed"), Some("second-model")));
    assert_eq!(row["attempts"], 2);
    let earlier = &row["continued_from"][0];
    assert_eq!((earlier["model"].as_str(), earlier["provider"].as_str()), (Some("first-model"), Some("upstream")));
    assert!(earlier["completion_tokens"].as_u64().unwrap() > 0);
    assert_eq!(
        row["prompt_tokens"].as_u64(),
        Some(usage["prompt_tokens"].as_u64().unwrap()),
        "the client's usage is what the ledger bills: both attempts"
    );
    assert_eq!(
        row["cost_micros"].as_i64(),
        usage["cost"].as_f64().map(|usd| (usd * 1e6).round() as i64),
        "the cost shown is the cost billed"
    );
}

#[tokio::test]
async fn a_stream_cut_mid_way_continues_on_the_next_target_as_one_stream() {
    continued_after(Fault::CutMidStream { after_chunks: 4 }).await;
}

#[tokio::test]
async fn a_stream_gone_silent_continues_after_the_idle_timeout() {
    continued_after(Fault::StallMidStream { after_chunks: 3, duration: Duration::from_secs(5) }).await;
}

#[tokio::test]
async fn a_stream_ending_in_an_error_event_continues() {
    continued_after(Fault::ErrorMidStream { after_chunks: 5 }).await;
}

#[tokio::test]
async fn anthropic_continues_from_a_prefill_without_restating() {
    let h = harness().await;
    h.upstream.state.push_fault(Some("first-up"), Fault::CutMidStream { after_chunks: 4 });
    let resp = h.chat(streamed("resilient-claude")).await;
    let (chunks, done) = payloads(&sse_events(resp).await);
    assert!(done);
    let text = one_chat_stream(&chunks);
    let requests = h.upstream.state.requests();
    let last = &requests.last().unwrap().body;
    assert_eq!(last["messages"].as_array().unwrap().last().unwrap()["role"], "assistant", "a prefill: {last}");
    continues_the_partial_answer(&h, &text);
}

#[tokio::test]
async fn the_messages_door_reads_one_message_across_the_seam() {
    let h = harness().await;
    h.upstream.state.push_fault(Some("first-up"), Fault::CutMidStream { after_chunks: 4 });
    let resp = h
        .client
        .post(h.url("/v1/messages"))
        .header("x-api-key", MASTER_KEY)
        .header("anthropic-version", "2023-06-01")
        .json(&json!({"model": "resilient", "max_tokens": 200, "stream": true,
                      "messages": [{"role": "user", "content": "Tell me about the gateway"}]}))
        .send()
        .await
        .unwrap();
    let events = sse_events(resp).await;
    let kinds: Vec<&str> = events.iter().map(|e| e.event.as_deref().unwrap_or("")).collect();
    assert_eq!(kinds.iter().filter(|k| **k == "message_start").count(), 1, "{kinds:?}");
    assert_eq!(kinds.iter().filter(|k| **k == "message_stop").count(), 1, "{kinds:?}");
    assert!(!kinds.contains(&"error"), "{kinds:?}");
    let data: Vec<Value> = events.iter().map(|e| serde_json::from_str(&e.data).unwrap()).collect();
    let text: String = data
        .iter()
        .filter(|d| d["type"] == "content_block_delta")
        .inspect(|d| assert_eq!(d["index"], 0, "one text block"))
        .filter_map(|d| d["delta"]["text"].as_str())
        .collect();
    continues_the_partial_answer(&h, &text);
}

#[tokio::test]
async fn the_gemini_door_reads_one_answer_across_the_seam() {
    let h = harness().await;
    h.upstream.state.push_fault(Some("first-up"), Fault::CutMidStream { after_chunks: 4 });
    let resp = h
        .client
        .post(h.url("/v1beta/models/resilient:streamGenerateContent?alt=sse"))
        .header("x-goog-api-key", MASTER_KEY)
        .json(&json!({"contents": [{"role": "user", "parts": [{"text": "Tell me about the gateway"}]}]}))
        .send()
        .await
        .unwrap();
    let (frames, _) = payloads(&sse_events(resp).await);
    assert!(frames.iter().all(|f| f.get("error").is_none()), "{frames:?}");
    let finishes = frames.iter().filter(|f| f["candidates"][0]["finishReason"].is_string()).count();
    assert_eq!(finishes, 1);
    let text: String =
        frames.iter().filter_map(|f| f["candidates"][0]["content"]["parts"][0]["text"].as_str()).collect();
    continues_the_partial_answer(&h, &text);
}

/// A Messages stream passed through to Anthropic, cut mid-way: the continuation (on Anthropic again,
/// or on an OpenAI-kind target) goes on in the same text block; one `message_start`, one `message_stop`,
/// and a final count that is both attempts', as the ledger bills them.
#[tokio::test]
async fn a_messages_stream_passed_through_continues_in_its_open_block() {
    let h = harness().await;
    let cases = [
        ("claude-pair", "claude-next", "claude-next-up", Fault::CutMidStream { after_chunks: 6 }),
        ("claude-then-openai", "second-model", "second-up", Fault::ErrorMidStream { after_chunks: 6 }),
        (
            "claude-pair",
            "claude-next",
            "claude-next-up",
            Fault::StallMidStream { after_chunks: 5, duration: Duration::from_secs(5) },
        ),
    ];
    for (alias, next, upstream, fault) in cases {
        h.upstream.state.push_fault(Some("claude-first-up"), fault);
        let resp = h
            .client
            .post(h.url("/v1/messages"))
            .header("x-api-key", MASTER_KEY)
            .header("anthropic-version", "2023-06-01")
            .json(&json!({"model": alias, "max_tokens": 200, "stream": true, "top_k": 5,
                          "messages": [{"role": "user", "content": "Tell me about the gateway"}]}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let request_id = header(&resp, "x-request-id");
        let events = sse_events(resp).await;
        let kinds: Vec<&str> = events.iter().map(|e| e.event.as_deref().unwrap_or("")).collect();
        assert_eq!(kinds.iter().filter(|k| **k == "message_start").count(), 1, "{kinds:?}");
        assert_eq!(kinds.iter().filter(|k| **k == "content_block_start").count(), 1, "{kinds:?}");
        assert_eq!(kinds.iter().filter(|k| **k == "message_stop").count(), 1, "{kinds:?}");
        assert_eq!(kinds.last(), Some(&"message_stop"), "{kinds:?}");
        assert!(!kinds.contains(&"error"), "{alias}: {kinds:?}");
        let data: Vec<Value> = events.iter().map(|e| serde_json::from_str(&e.data).unwrap()).collect();
        let first = &data[0]["message"];
        assert!(first["id"].as_str().unwrap().starts_with("msg_"), "{first}");
        let text: String = data
            .iter()
            .filter(|d| d["type"] == "content_block_delta")
            .inspect(|d| assert_eq!(d["index"], 0, "one text block"))
            .filter_map(|d| d["delta"]["text"].as_str())
            .collect();
        continues_the_partial_answer(&h, &text);
        let requests = h.upstream.state.requests();
        let (cut, last) = (&requests[requests.len() - 2].body, &requests.last().unwrap().body);
        assert_eq!(cut["top_k"], 5, "the first attempt passed through as it came: {cut}");
        assert_eq!(last["model"].as_str(), Some(upstream), "continued on {next}");
        let stops: Vec<&Value> = data.iter().filter(|d| d["type"] == "message_delta").collect();
        assert_eq!(stops.len(), 1);
        let usage = &stops[0]["usage"];
        assert_eq!(usage["continuation"]["count"], 1, "{usage}");
        assert_eq!(usage["continuation"]["from"][0]["model"], "claude-first");
        let row = ledger_row(&h, &request_id).await;
        assert_eq!((row["outcome"].as_str(), row["served_model"].as_str()), (Some("completed"), Some(next)));
        assert_eq!(row["attempts"], 2);
        assert_eq!(row["continued_from"][0]["model"], "claude-first");
        assert_eq!(row["prompt_tokens"].as_u64(), usage["input_tokens"].as_u64(), "{usage} {row}");
        assert_eq!(row["completion_tokens"].as_u64(), usage["output_tokens"].as_u64(), "{usage} {row}");
    }
}

/// A Gemini stream passed through to Gemini, cut mid-way, continues under its first `responseId`, one
/// finish, its final count both attempts'.
#[tokio::test]
async fn a_gemini_stream_passed_through_continues_under_its_response_id() {
    let h = harness().await;
    for fault in [
        Fault::CutMidStream { after_chunks: 4 },
        Fault::StallMidStream { after_chunks: 3, duration: Duration::from_secs(5) },
        Fault::ErrorMidStream { after_chunks: 5 },
    ] {
        gemini_continues_after(&h, fault).await;
    }
}

async fn gemini_continues_after(h: &Harness, fault: Fault) {
    h.upstream.state.push_fault(Some("gemini-first-up"), fault);
    let resp = h
        .client
        .post(h.url("/v1beta/models/gemini-pair:streamGenerateContent?alt=sse"))
        .header("x-goog-api-key", MASTER_KEY)
        .json(&json!({"contents": [{"role": "user", "parts": [{"text": "Tell me about the gateway"}]}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let request_id = header(&resp, "x-request-id");
    let (frames, _) = payloads(&sse_events(resp).await);
    assert!(frames.iter().all(|f| f.get("error").is_none()), "{frames:?}");
    let finishes = frames.iter().filter(|f| f["candidates"][0]["finishReason"].is_string()).count();
    assert_eq!(finishes, 1);
    let ids: std::collections::HashSet<&str> = frames.iter().filter_map(|f| f["responseId"].as_str()).collect();
    assert_eq!(ids.len(), 1, "one responseId: {ids:?}");
    let text: String =
        frames.iter().filter_map(|f| f["candidates"][0]["content"]["parts"][0]["text"].as_str()).collect();
    continues_the_partial_answer(h, &text);
    let usage = &frames.last().unwrap()["usageMetadata"];
    assert_eq!(usage["continuation"]["count"], 1, "{usage}");
    let row = ledger_row(h, &request_id).await;
    assert_eq!((row["outcome"].as_str(), row["served_model"].as_str()), (Some("completed"), Some("gemini-next")));
    assert_eq!(row["prompt_tokens"].as_u64(), usage["promptTokenCount"].as_u64(), "{usage} {row}");
    assert_eq!(row["completion_tokens"].as_u64(), usage["candidatesTokenCount"].as_u64(), "{usage} {row}");
}

#[tokio::test]
async fn the_responses_door_continues_the_same_item_and_sequence() {
    let h = harness().await;
    h.upstream.state.push_fault(Some("claude-first-up"), Fault::CutMidStream { after_chunks: 5 });
    let resp = h
        .post("/v1/responses")
        .json(&json!({"model": "claude-pair", "stream": true, "input": "Tell me about the gateway"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let events = sse_events(resp).await;
    let data: Vec<Value> = events.iter().map(|e| serde_json::from_str(&e.data).unwrap()).collect();
    let kinds: Vec<&str> = data.iter().filter_map(|d| d["type"].as_str()).collect();
    assert_eq!(kinds.iter().filter(|k| **k == "response.created").count(), 1, "{kinds:?}");
    assert_eq!(kinds.iter().filter(|k| **k == "response.completed").count(), 1, "{kinds:?}");
    assert!(!kinds.iter().any(|k| k.contains("error") || *k == "response.failed"), "{kinds:?}");
    let seq: Vec<u64> = data.iter().filter_map(|d| d["sequence_number"].as_u64()).collect();
    assert!(seq.windows(2).all(|w| w[1] == w[0] + 1), "sequence numbers continue: {seq:?}");
    let deltas: Vec<&Value> = data.iter().filter(|d| d["type"] == "response.output_text.delta").collect();
    let items: std::collections::HashSet<&str> = deltas.iter().filter_map(|d| d["item_id"].as_str()).collect();
    assert_eq!(items.len(), 1, "one message item");
    let text: String = deltas.iter().filter_map(|d| d["delta"].as_str()).collect();
    continues_the_partial_answer(&h, &text);
    let done = data.iter().find(|d| d["type"] == "response.completed").unwrap();
    assert_eq!(done["response"]["output"][0]["content"][0]["text"].as_str(), Some(text.as_str()));
}

/// A Responses stream passed through to an OpenAI-kind provider, cut mid-way: the continuation goes on
/// in the same message item with the sequence continuing, and the response kept is the whole answer.
#[tokio::test]
async fn a_responses_stream_passed_through_continues_its_item_and_is_kept_whole() {
    let h = harness().await;
    h.upstream.state.push_fault(Some("native-first-up"), Fault::CutMidStream { after_chunks: 7 });
    let resp = h
        .post("/v1/responses")
        .json(&json!({"model": "native-then-second", "stream": true, "input": "Tell me about the gateway"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let request_id = header(&resp, "x-request-id");
    let events = sse_events(resp).await;
    let data: Vec<Value> = events.iter().map(|e| serde_json::from_str(&e.data).unwrap()).collect();
    let kinds: Vec<&str> = data.iter().filter_map(|d| d["type"].as_str()).collect();
    let requests = h.upstream.state.requests();
    assert!(requests[requests.len() - 2].body.get("input").is_some(), "the first attempt was native");
    assert!(requests.last().unwrap().body.get("messages").is_some(), "the continuation is in chat");
    assert_eq!(kinds.iter().filter(|k| **k == "response.created").count(), 1, "{kinds:?}");
    assert_eq!(kinds.iter().filter(|k| **k == "response.output_item.added").count(), 1, "{kinds:?}");
    assert_eq!(kinds.iter().filter(|k| **k == "response.completed").count(), 1, "{kinds:?}");
    assert!(!kinds.iter().any(|k| k.contains("error") || *k == "response.failed"), "{kinds:?}");
    let seq: Vec<u64> = data.iter().filter_map(|d| d["sequence_number"].as_u64()).collect();
    assert!(seq.windows(2).all(|w| w[1] == w[0] + 1), "sequence numbers continue: {seq:?}");
    let deltas: Vec<&Value> = data.iter().filter(|d| d["type"] == "response.output_text.delta").collect();
    let items: std::collections::HashSet<&str> = deltas.iter().filter_map(|d| d["item_id"].as_str()).collect();
    assert_eq!(items.len(), 1, "one message item: {items:?}");
    let text: String = deltas.iter().filter_map(|d| d["delta"].as_str()).collect();
    continues_the_partial_answer(&h, &text);
    let done = data.iter().find(|d| d["type"] == "response.completed").unwrap();
    let response = &done["response"];
    assert_eq!(response["output"][0]["content"][0]["text"].as_str(), Some(text.as_str()), "{response}");
    assert_eq!(response["usage"]["continuation"]["count"], 1, "{response}");
    let stored = h.get_json(&format!("/v1/responses/{}", response["id"].as_str().unwrap())).await;
    assert_eq!(stored["output"][0]["content"][0]["text"].as_str(), Some(text.as_str()), "kept whole: {stored}");
    let row = ledger_row(&h, &request_id).await;
    assert_eq!((row["outcome"].as_str(), row["served_model"].as_str()), (Some("completed"), Some("second-model")));
    assert_eq!(row["prompt_tokens"].as_u64(), response["usage"]["input_tokens"].as_u64(), "{row}");
    assert_eq!(row["completion_tokens"].as_u64(), response["usage"]["output_tokens"].as_u64(), "{row}");
}

/// A stream that cannot be continued ends with the error event, after one upstream attempt.
async fn ends_in_error(h: &Harness, req: reqwest::RequestBuilder) {
    let chunks = ends_in_error_after(h, req, 3).await;
    assert!(chunks.iter().any(|c| c["choices"][0]["delta"]["content"].as_str().is_some_and(|t| !t.is_empty())));
}

async fn ends_in_error_after(h: &Harness, req: reqwest::RequestBuilder, after_chunks: usize) -> Vec<Value> {
    h.upstream.state.push_fault(Some("first-up"), Fault::CutMidStream { after_chunks });
    let before = h.upstream.state.requests().len();
    let (chunks, done) = payloads(&sse_events(req.send().await.unwrap()).await);
    assert!(!done, "no [DONE] after a failure");
    assert!(chunks.last().unwrap().get("error").is_some(), "ends with the error event: {chunks:?}");
    assert_eq!(h.upstream.state.requests().len(), before + 1, "no second attempt");
    chunks
}

#[tokio::test]
async fn no_continuation_with_a_tool_call_open_or_when_the_caller_its_organisation_or_the_alias_opts_out() {
    let h = harness().await;
    let mut with_tools = streamed("resilient");
    with_tools["tools"] = json!([{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object",
        "properties": {"q": {"type": "string"}}}}}]);
    with_tools["tool_choice"] = json!("required");
    // Some words, then the call: cut inside the call's arguments, with text already sent.
    with_tools["messages"][0]["content"] = json!("Look it up, and think aloud");
    let chunks = ends_in_error_after(&h, h.post("/v1/chat/completions").json(&with_tools), 6).await;
    let text: String = chunks.iter().filter_map(|c| c["choices"][0]["delta"]["content"].as_str()).collect();
    assert_eq!(text, "Let me check.", "text went out before the call");
    assert!(chunks.iter().any(|c| c["choices"][0]["delta"]["tool_calls"].is_array()), "the call had begun");
    let opted_out = h.post("/v1/chat/completions").header("x-switchyard-continuation", "off");
    ends_in_error(&h, opted_out.json(&streamed("resilient"))).await;
    ends_in_error(&h, h.post("/v1/chat/completions").json(&streamed("no-resume"))).await;
    let org = h.new_org(json!({"name": "No Seams", "stream_continuation": false})).await;
    assert_eq!(org["stream_continuation"], false);
    let (_, secret) = h.new_key(&org, json!({})).await;
    let as_org = h.client.post(h.url("/v1/chat/completions")).bearer_auth(&secret);
    ends_in_error(&h, as_org.json(&streamed("resilient"))).await;
    // The same organisation turned back on: the stream continues.
    let resp = h
        .client
        .patch(h.url(&format!("/admin/v1/organizations/{}", org["id"].as_str().unwrap())))
        .bearer_auth(MASTER_KEY)
        .json(&json!({"stream_continuation": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut continued = false;
    for _ in 0..100 {
        h.upstream.state.push_fault(Some("first-up"), Fault::CutMidStream { after_chunks: 3 });
        let req = h.client.post(h.url("/v1/chat/completions")).bearer_auth(&secret).json(&streamed("resilient"));
        let (_, done) = payloads(&sse_events(req.send().await.unwrap()).await);
        if done {
            continued = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(continued, "continues once the key cache has the organisation's new setting");
}

#[tokio::test]
async fn a_messages_stream_passed_through_is_not_continued_inside_a_tool_call() {
    let h = harness().await;
    // The text block, then the call's start and its first arguments: cut inside the call.
    h.upstream.state.push_fault(Some("claude-first-up"), Fault::CutMidStream { after_chunks: 8 });
    let before = h.upstream.state.requests().len();
    let resp = h
        .client
        .post(h.url("/v1/messages"))
        .header("x-api-key", MASTER_KEY)
        .header("anthropic-version", "2023-06-01")
        .json(&json!({"model": "claude-pair", "max_tokens": 200, "stream": true,
                      "tools": [{"name": "lookup", "input_schema": {"type": "object",
                                 "properties": {"q": {"type": "string"}}}}],
                      "tool_choice": {"type": "any"},
                      "messages": [{"role": "user", "content": "Look it up, and think aloud"}]}))
        .send()
        .await
        .unwrap();
    let events = sse_events(resp).await;
    let kinds: Vec<&str> = events.iter().map(|e| e.event.as_deref().unwrap_or("")).collect();
    assert_eq!(kinds.last(), Some(&"error"), "ends with the error event: {kinds:?}");
    let data: Vec<Value> = events.iter().map(|e| serde_json::from_str(&e.data).unwrap()).collect();
    assert!(data.iter().any(|d| d["content_block"]["type"] == "tool_use"), "the call had begun: {kinds:?}");
    assert!(data.iter().any(|d| d["delta"]["text"].is_string()), "text went out before the call: {kinds:?}");
    assert_eq!(h.upstream.state.requests().len(), before + 1, "no second attempt");
}
