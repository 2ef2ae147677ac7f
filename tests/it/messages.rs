//! Anthropic's front door, `/v1/messages`: Anthropic's shapes in and out, whatever model answers.

use serde_json::{Value, json};
use switchyard::fake::Fault;
use switchyard::usage::Outcome;

use crate::support::{Harness, MASTER_KEY, hello, sse_events};

fn messages(h: &Harness, body: Value) -> reqwest::RequestBuilder {
    h.client
        .post(h.url("/v1/messages"))
        .header("x-api-key", MASTER_KEY)
        .header("anthropic-version", "2023-06-01")
        .json(&body)
}

fn ask(model: &str) -> Value {
    json!({"model": model, "max_tokens": 200, "system": [{"type": "text", "text": "Be brief."}],
           "messages": [{"role": "user", "content": "Say hello"}]})
}

#[tokio::test]
async fn a_message_is_answered_in_anthropics_shape_from_an_openai_upstream() {
    let h = Harness::start().await;
    let resp = messages(&h, ask("test-model")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-switchyard-provider"], "upstream");
    let m: Value = resp.json().await.unwrap();
    assert_eq!(
        (m["type"].as_str(), m["role"].as_str(), m["model"].as_str()),
        (Some("message"), Some("assistant"), Some("test-model"))
    );
    assert!(m["id"].as_str().unwrap().starts_with("msg_"));
    assert_eq!(m["content"][0]["type"], "text");
    assert!(!m["content"][0]["text"].as_str().unwrap().is_empty());
    assert_eq!(m["stop_reason"], "end_turn");
    assert!(m["usage"]["input_tokens"].as_u64().unwrap() > 0 && m["usage"]["output_tokens"].as_u64().unwrap() > 0);

    // What the upstream got: OpenAI's shape, the system prompt first, max_tokens kept.
    let sent = h.upstream.state.requests().pop().unwrap().body;
    assert_eq!(sent["messages"][0], json!({"role": "system", "content": "Be brief."}));
    assert_eq!(sent["messages"][1]["role"], "user");
    assert_eq!(sent["max_tokens"], 200);
    assert_eq!(sent["model"], "upstream-model-id");
}

#[tokio::test]
async fn a_streamed_message_follows_anthropics_event_sequence_and_matches_the_whole_answer() {
    let h = Harness::start().await;
    let whole: Value = messages(&h, ask("claude-test")).send().await.unwrap().json().await.unwrap();
    let mut body = ask("claude-test");
    body["stream"] = json!(true);
    let resp = messages(&h, body).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let events = sse_events(resp).await;
    let names: Vec<&str> = events.iter().map(|e| e.event.as_deref().unwrap_or("")).collect();
    assert_eq!(names.first(), Some(&"message_start"));
    assert_eq!(&names[names.len() - 3..], ["content_block_stop", "message_delta", "message_stop"]);
    assert_eq!(names[1], "content_block_start");
    let data: Vec<Value> = events.iter().map(|e| serde_json::from_str(&e.data).unwrap()).collect();
    assert!(data.iter().zip(&names).all(|(d, n)| d["type"] == *n), "each event's data names its type");
    let text: String = data
        .iter()
        .filter(|d| d["type"] == "content_block_delta")
        .map(|d| d["delta"]["text"].as_str().unwrap())
        .collect();
    assert_eq!(text, whole["content"][0]["text"].as_str().unwrap());
    let delta = &data[data.len() - 2];
    assert_eq!(delta["delta"]["stop_reason"], "end_turn");
    assert!(delta["usage"]["output_tokens"].as_u64().unwrap() > 0);
    let r = h.usage.wait_for(2).await;
    assert!(r.iter().all(|r| r.outcome == Outcome::Completed && r.completion_tokens > 0), "billed like any chat");
}

#[tokio::test]
async fn tools_and_tool_results_translate_both_ways() {
    let h = Harness::start().await;
    let tools = json!([{"name": "get_weather", "description": "Weather", "input_schema": {
        "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}]);
    let mut body = ask("test-model");
    body["tools"] = tools.clone();
    body["tool_choice"] = json!({"type": "any", "disable_parallel_tool_use": true});
    let m: Value = messages(&h, body).send().await.unwrap().json().await.unwrap();
    assert_eq!(m["stop_reason"], "tool_use");
    let call = m["content"].as_array().unwrap().iter().find(|b| b["type"] == "tool_use").unwrap().clone();
    assert_eq!(call["name"], "get_weather");
    assert!(call["input"].is_object() && call["input"]["city"].is_string(), "input is an object, not a string");
    let sent = h.upstream.state.requests().pop().unwrap().body;
    assert_eq!(sent["tools"][0]["function"]["name"], "get_weather");
    assert_eq!(sent["tools"][0]["function"]["parameters"]["required"], json!(["city"]));
    assert_eq!((sent["tool_choice"].as_str(), sent["parallel_tool_calls"].as_bool()), (Some("required"), Some(false)));

    let follow = json!({"model": "test-model", "max_tokens": 100, "messages": [
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": [{"type": "text", "text": "Checking."}, call]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": call["id"], "content": [{"type": "text", "text": "Sunny"}]},
            {"type": "text", "text": "Thanks"}]}]});
    assert_eq!(messages(&h, follow).send().await.unwrap().status(), 200);
    let sent = h.upstream.state.requests().pop().unwrap().body;
    let msgs = sent["messages"].as_array().unwrap();
    assert_eq!(msgs[1]["tool_calls"][0]["id"], call["id"]);
    assert_eq!(
        msgs[1]["tool_calls"][0]["function"]["arguments"].as_str().map(|a| serde_json::from_str::<Value>(a).unwrap()),
        Some(call["input"].clone())
    );
    assert_eq!((msgs[2]["role"].as_str(), msgs[2]["tool_call_id"].as_str()), (Some("tool"), call["id"].as_str()));
    assert_eq!(msgs[2]["content"], "Sunny");
    assert_eq!(msgs[3]["role"], "user", "the text after a tool result is its own user turn");
}

#[tokio::test]
async fn errors_on_the_messages_route_are_in_anthropics_shape() {
    let h = Harness::start().await;
    let cases = [
        (
            h.client.post(h.url("/v1/messages")).header("x-api-key", "sk-wrong").json(&ask("test-model")),
            401,
            "authentication_error",
        ),
        (messages(&h, ask("no-such-model")), 404, "not_found_error"),
        (
            messages(&h, json!({"model": "test-model", "messages": [{"role": "user", "content": "hi"}]})),
            400,
            "invalid_request_error",
        ),
        (
            messages(
                &h,
                json!({"model": "test-model", "max_tokens": 5, "messages": [{"role": "user", "content": [{"type": "document", "source": {}}]}]}),
            ),
            400,
            "invalid_request_error",
        ),
    ];
    for (req, status, kind) in cases {
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), status);
        let body: Value = resp.json().await.unwrap();
        assert_eq!((body["type"].as_str(), body["error"]["type"].as_str()), (Some("error"), Some(kind)), "{body}");
        assert!(body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    // An upstream overload reaches the client as Anthropic's overloaded error once nothing else can answer.
    h.upstream.state.push_fault(None, Fault::status(503));
    let resp = messages(&h, ask("test-model")).send().await.unwrap();
    assert_eq!(resp.status(), 502);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["type"], "error");
}

#[tokio::test]
async fn a_stream_that_breaks_midway_ends_with_an_anthropic_error_event() {
    let h = Harness::start().await;
    h.upstream.state.push_fault(None, Fault::CutMidStream { after_chunks: 3 });
    let mut body = ask("test-model");
    body["stream"] = json!(true);
    let resp = messages(&h, body).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let events = sse_events(resp).await;
    let last = events.last().unwrap();
    assert_eq!(last.event.as_deref(), Some("error"));
    let data: Value = serde_json::from_str(&last.data).unwrap();
    assert_eq!(data["type"], "error");
    assert!(data["error"]["type"].is_string());
    assert!(!events.iter().any(|e| e.event.as_deref() == Some("message_stop")), "no clean end after a failure");
}

#[tokio::test]
async fn a_huge_prompt_is_counted_without_stalling_other_requests() {
    let h = Harness::start().await;
    let big = json!({"model": "claude-test", "messages": [{"role": "user", "content": "x".repeat(400_000)}]});
    let count = h
        .client
        .post(h.url("/v1/messages/count_tokens"))
        .bearer_auth(MASTER_KEY)
        .header("anthropic-version", "2023-06-01")
        .json(&big)
        .send();
    let counting = tokio::spawn(async move { count.await.unwrap().json::<Value>().await.unwrap() });
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    // Served while the tokenizer works on the blocking pool (on the event loop it would wait for it).
    let small = h.chat(hello("test-model")).await;
    assert_eq!(small.status(), 200);
    assert!(!counting.is_finished(), "the small request did not wait for the count");
    let counted = counting.await.unwrap();
    let n = counted["input_tokens"].as_u64().unwrap();
    assert!((40_000..60_000).contains(&n), "{counted}");
}

#[tokio::test]
async fn a_messages_request_to_an_anthropic_model_passes_through_with_every_field() {
    let h = Harness::start().await;
    let body = json!({
        "model": "claude-test",
        "max_tokens": 4096,
        "system": [{"type": "text", "text": "You are terse.", "cache_control": {"type": "ephemeral"}}],
        "messages": [
            {"role": "user", "content": [
                {"type": "text", "text": "Read this.", "cache_control": {"type": "ephemeral", "ttl": "1h"}},
                {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "A memo."}}]},
            {"role": "assistant", "content": [
                {"type": "thinking", "thinking": "Earlier thought.", "signature": "sig-abc"},
                {"type": "text", "text": "Read."}]},
            {"role": "user", "content": "Summarise it."}],
        "top_k": 40,
        "stop_sequences": ["\n\nHuman:"],
        "metadata": {"user_id": "user-42"},
        "thinking": {"type": "enabled", "budget_tokens": 2048},
        "tools": [{"name": "lookup", "input_schema": {"type": "object"}, "cache_control": {"type": "ephemeral"}},
                  {"type": "web_search_20250305", "name": "web_search", "max_uses": 2}],
        "service_tier": "auto",
        "some_future_field": {"kept": true}
    });
    let resp = h
        .client
        .post(h.url("/v1/messages"))
        .header("x-api-key", MASTER_KEY)
        .header("anthropic-version", "2023-06-01")
        .header("anthropic-beta", "interleaved-thinking-2025-05-14")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let answer: Value = resp.json().await.unwrap();
    assert_eq!((answer["type"].as_str(), answer["model"].as_str()), (Some("message"), Some("claude-test")));
    assert!(answer["usage"]["input_tokens"].as_u64().unwrap() > 0);
    let sent = h.upstream.last_request();
    let mut expected = body.clone();
    expected["model"] = json!("claude-sonnet-4-5");
    assert_eq!(sent.body, expected, "the request reaches Anthropic as the caller wrote it");
    assert_eq!(sent.headers["anthropic-beta"], "interleaved-thinking-2025-05-14");
    assert_eq!(sent.headers["x-api-key"], crate::support::PROVIDER_KEY, "with the gateway's key, not the caller's");

    // The same request to a model of another protocol: what it cannot carry is refused by name.
    let mut translated = body.clone();
    translated["model"] = json!("test-model");
    let resp =
        h.client.post(h.url("/v1/messages")).header("x-api-key", MASTER_KEY).json(&translated).send().await.unwrap();
    assert_eq!(resp.status(), 400);
    let err: Value = resp.json().await.unwrap();
    assert_eq!(err["error"]["param"], "messages.0.content.1.type", "{err}");
}

#[tokio::test]
async fn a_streamed_messages_request_to_an_anthropic_model_is_relayed_event_by_event() {
    let h = Harness::start().await;
    let resp = h
        .client
        .post(h.url("/v1/messages"))
        .header("x-api-key", MASTER_KEY)
        .json(&json!({"model": "claude-test", "max_tokens": 50, "stream": true, "top_k": 5,
                      "messages": [{"role": "user", "content": "Say hello"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-switchyard-provider"], "anthropic");
    let events = sse_events(resp).await;
    let names: Vec<&str> = events.iter().filter_map(|e| e.event.as_deref()).collect();
    assert_eq!(names.first(), Some(&"message_start"));
    assert_eq!(names.last(), Some(&"message_stop"));
    assert!(names.contains(&"content_block_delta") && names.contains(&"message_delta"));
    let start: Value = serde_json::from_str(&events[0].data).unwrap();
    assert_eq!(start["message"]["model"], "claude-test", "the public model name");
    assert_eq!(h.upstream.last_request().body["top_k"], 5);
    let record = h.usage.wait_for(1).await.pop().unwrap();
    assert!(record.prompt_tokens > 0 && record.completion_tokens > 0, "{record:?}");
    assert_eq!(record.usage_source, switchyard::usage::UsageSource::Provider);
}

#[tokio::test]
async fn what_one_provider_cannot_take_moves_on_to_one_that_can() {
    let h = Harness::start().await;
    let body = json!({"model": "test-model", "models": ["claude-test"], "max_tokens": 50, "messages": [{"role": "user", "content": [
        {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "A memo."}},
        {"type": "text", "text": "Summarise."}]}]});
    let resp = h.client.post(h.url("/v1/messages")).header("x-api-key", MASTER_KEY).json(&body).send().await.unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    assert_eq!(status, 200, "{}", resp.text().await.unwrap());
    let resp = headers;
    assert_eq!(resp["x-switchyard-provider"], "anthropic");
    assert!(resp["x-switchyard-attempts"].to_str().unwrap().contains("test-model=unsupported"));
    assert_eq!(h.upstream.state.requests().len(), 1, "the translated target was never called");
}

#[tokio::test]
async fn an_anthropic_stream_cut_before_its_final_count_is_billed_for_the_text_seen() {
    let h = Harness::start().await;
    h.upstream.state.push_fault(None, Fault::CutMidStream { after_chunks: 20 });
    let resp = h
        .client
        .post(h.url("/v1/messages"))
        .header("x-api-key", MASTER_KEY)
        .json(&json!({"model": "claude-test", "max_tokens": 200, "stream": true, "messages": [{"role": "user", "content": "Tell me"}]}))
        .send()
        .await
        .unwrap();
    let events = sse_events(resp).await;
    assert_eq!(events.last().unwrap().event.as_deref(), Some("error"));
    let record = h.usage.wait_for(1).await.pop().unwrap();
    assert!(record.prompt_tokens > 0, "the input from message_start");
    assert!(record.completion_tokens > 1, "more than message_start's count: {record:?}");
    assert_eq!(record.usage_source, switchyard::usage::UsageSource::Estimated);
}
