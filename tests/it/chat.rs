//! Non-streamed chat completions: the round trip and its fidelity in both directions.

use serde_json::json;

use crate::support::{Harness, PROVIDER_KEY, hello};

#[tokio::test]
async fn a_plain_chat_round_trip_answers_with_the_public_model_name() {
    let h = Harness::start().await;
    let resp = h.chat(hello("test-model")).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-switchyard-model"], "test-model");
    assert_eq!(resp.headers()["x-switchyard-provider"], "upstream");
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(body["model"], "test-model");
    assert!(!body["choices"][0]["message"]["content"].as_str().unwrap().is_empty());
    assert_eq!(body["usage"]["completion_tokens"], 24);

    // The upstream saw its own model id and the provider key, never the caller's key.
    let seen = h.upstream.last_request();
    assert_eq!(seen.body["model"], "upstream-model-id");
    assert_eq!(seen.headers["authorization"], format!("Bearer {PROVIDER_KEY}"));
}

#[tokio::test]
async fn unknown_fields_are_forwarded_upstream_and_returned_to_the_client() {
    let h = Harness::start().await;
    let request = json!({
        "model": "test-model",
        "messages": [{"role": "user", "content": [{"type": "text", "text": "hi", "cache_control": {"type": "ephemeral"}}], "x_note": 1}],
        "logit_bias": {"50256": -100},
        "metadata": {"team": "search"},
        "seed": 7,
        "temperature": 0.2,
        "vendor_specific": {"nested": [1, 2, 3]}
    });
    let body: serde_json::Value = h.chat(request.clone()).await.json().await.unwrap();

    let mut expected = request;
    expected["model"] = json!("upstream-model-id");
    assert_eq!(h.upstream.last_request().body, expected, "every field reaches the provider untouched");
    // Fields the fake adds that Switchyard does not model come back too.
    assert_eq!(body["system_fingerprint"], "fp_switchyard_fake");
    assert_eq!(body["service_tier"], "default");
    assert_eq!(body["choices"][0]["logprobs"], serde_json::Value::Null);
    assert_eq!(body["usage"]["prompt_tokens_details"]["audio_tokens"], 0);
}

#[tokio::test]
async fn tool_calls_come_back_whole() {
    let h = Harness::start().await;
    let resp = h.chat(json!({
        "model": "test-model",
        "messages": [{"role": "user", "content": "Weather in Paris and Rome?"}],
        "tools": [
            {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}},
            {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object", "properties": {"tz": {"type": "string"}}}}}
        ]
    })).await;
    let body: serde_json::Value = resp.json().await.unwrap();
    let choice = &body["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls");
    let calls = choice["message"]["tool_calls"].as_array().unwrap();
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[0]["function"]["name"], "get_weather");
    let args: serde_json::Value = serde_json::from_str(calls[0]["function"]["arguments"].as_str().unwrap()).unwrap();
    assert!(args["city"].is_string());
}

#[tokio::test]
async fn usage_is_recorded_for_every_completed_request() {
    let h = Harness::start().await;
    let resp = h.chat(hello("test-model")).await;
    let request_id = resp.headers()["x-request-id"].to_str().unwrap().to_owned();
    let body: serde_json::Value = resp.json().await.unwrap();
    let records = h.usage.wait_for(1).await;
    let r = &records[0];
    assert_eq!(r.request_id, request_id);
    assert_eq!(
        (r.requested_model.as_str(), r.served_model.as_deref(), r.provider.as_deref()),
        ("test-model", Some("test-model"), Some("upstream"))
    );
    assert_eq!(r.outcome, switchyard::usage::Outcome::Completed);
    assert_eq!(r.prompt_tokens, body["usage"]["prompt_tokens"].as_u64().unwrap());
    assert_eq!(r.completion_tokens, body["usage"]["completion_tokens"].as_u64().unwrap());
    assert_eq!(r.usage_source, switchyard::usage::UsageSource::Provider);
}

#[tokio::test]
async fn models_are_listed_and_retrievable() {
    let h = Harness::start().await;
    let list: serde_json::Value = h
        .client
        .get(h.url("/v1/models"))
        .bearer_auth(crate::support::MASTER_KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list["object"], "list");
    let ids: Vec<&str> = list["data"].as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap()).collect();
    assert_eq!(ids[..3], ["test-model", "claude-test", "gemini-test"]);
    assert!(ids.contains(&"dead-model") && ids.contains(&"keyless-model"));
    assert_eq!(list["data"][0]["object"], "model");
    assert_eq!(list["data"][0]["owned_by"], "upstream");

    let one: serde_json::Value = h
        .client
        .get(h.url("/v1/models/test-model"))
        .bearer_auth(crate::support::MASTER_KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(one["id"], "test-model");
    let missing =
        h.client.get(h.url("/v1/models/nope/x")).bearer_auth(crate::support::MASTER_KEY).send().await.unwrap();
    let (status, body) = crate::support::error_of(missing).await;
    assert_eq!((status, body["error"]["code"].as_str()), (404, Some("model_not_found")));
}
