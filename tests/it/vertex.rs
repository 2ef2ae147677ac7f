//! Google Vertex AI end to end: a service account's JWT exchanged for an access token at the (fake)
//! token endpoint, the token kept and refreshed by the gateway's clock, Gemini and Claude on Vertex
//! through their publishers' routes (plain, streamed, tools), `vertex_ai/<model>` pass-through, Vertex
//! embeddings, and credentials that fail.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use serde_json::{Value, json};

use crate::support::{Harness, Setup, eventually, header, hello, ledger_row, payloads, sse_events, vertex_provider};

const MODELS: &str = r#"
[[providers]]
name = "vertex-not-a-key"
kind = "vertex"
base_url = "{root}"
vertex = { project = "switchyard-test", location = "global", credentials_env = "TEST_GOOGLE_NOT_A_KEY" }

[[models]]
name = "gemini-on-vertex"
provider = "vertex"
upstream = "gemini-2.5-pro"
input_per_mtok = 1.25
output_per_mtok = 10.0
capabilities = ["tools", "json_schema", "vision"]

[[models]]
name = "claude-on-vertex"
provider = "vertex"
upstream = "claude-sonnet-4-5@20250929"
input_per_mtok = 3.0
output_per_mtok = 15.0
capabilities = ["tools", "json_schema", "vision"]

[[models]]
name = "vertex-untrusted-model"
provider = "vertex-untrusted"
upstream = "gemini-2.5-flash"

[[models]]
name = "vertex-unconfigured"
provider = "vertex-not-a-key"
upstream = "gemini-2.5-flash"

[[models]]
name = "vertex-embed"
provider = "vertex"
upstream = "text-embedding-005"
input_per_mtok = 0.025
capabilities = ["embeddings"]

[[aliases]]
name = "untrusted-then-vertex"
targets = ["vertex-untrusted-model", "gemini-on-vertex"]
"#;

/// A gateway whose clock runs `offset` ms ahead of the system's.
async fn harness_at(offset: Arc<AtomicI64>) -> Harness {
    let clock: switchyard::clock::Clock =
        Arc::new(move || switchyard::clock::now_ms() + offset.load(Ordering::Relaxed));
    let extra = [
        vertex_provider("vertex", "TEST_GOOGLE_CREDENTIALS"),
        vertex_provider("vertex-untrusted", "TEST_GOOGLE_UNTRUSTED"),
        MODELS.to_owned(),
    ]
    .concat();
    Harness::with(Setup { extra, clock: Some(clock), ..Setup::default() }).await
}

async fn harness() -> Harness {
    harness_at(Arc::default()).await
}

fn tokens_issued(h: &Harness) -> u64 {
    h.upstream.state.stats.tokens_issued.load(Ordering::Relaxed)
}

fn text_of(chunks: &[Value]) -> String {
    chunks.iter().filter_map(|c| c["choices"].get(0)?["delta"]["content"].as_str().map(str::to_owned)).collect()
}

#[tokio::test]
async fn gemini_and_claude_on_vertex_answer_plain_and_streamed_with_one_token() {
    let h = harness().await;
    for model in ["gemini-on-vertex", "claude-on-vertex"] {
        let resp = h.chat(hello(model)).await;
        assert_eq!(resp.status(), 200, "{model}");
        assert_eq!(header(&resp, "x-switchyard-provider"), "vertex");
        let request_id = header(&resp, "x-request-id");
        let whole: Value = resp.json().await.unwrap();
        let text = whole["choices"][0]["message"]["content"].as_str().unwrap().to_owned();
        assert!(!text.is_empty(), "{model}: {whole}");
        let row = ledger_row(&h, &request_id).await;
        assert_eq!(row["prompt_tokens"], whole["usage"]["prompt_tokens"], "{model}");
        assert!(row["cost_micros"].as_i64().unwrap() > 0, "{model}: {row}");
        let auth = h.upstream.last_request().headers["authorization"].to_str().unwrap().to_owned();
        assert!(auth.starts_with("Bearer ya29.fake-vertex-token-"), "{auth}");

        let mut body = hello(model);
        body["stream"] = json!(true);
        let resp = h.chat(body).await;
        assert_eq!(resp.status(), 200);
        let (chunks, done) = payloads(&sse_events(resp).await);
        assert!(done, "{model}");
        assert_eq!(text_of(&chunks), text, "{model}: the stream says what the whole answer said");
    }
    // Claude's body names no model and carries Vertex's anthropic_version (the fake refuses otherwise).
    assert_eq!(tokens_issued(&h), 1, "one token served every request");
}

#[tokio::test]
async fn tools_work_on_both_publishers() {
    let h = harness().await;
    for model in ["gemini-on-vertex", "claude-on-vertex"] {
        let mut body = hello(model);
        body["tools"] = json!([{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object",
            "properties": {"q": {"type": "string"}}, "required": ["q"]}}}]);
        body["tool_choice"] = json!({"type": "function", "function": {"name": "lookup"}});
        let whole: Value = h.chat(body.clone()).await.json().await.unwrap();
        let call = &whole["choices"][0]["message"]["tool_calls"][0];
        assert_eq!(call["function"]["name"], "lookup", "{model}: {whole}");
        body["stream"] = json!(true);
        let (chunks, _) = payloads(&sse_events(h.chat(body).await).await);
        let args: String = chunks
            .iter()
            .filter_map(|c| {
                c["choices"].get(0)?["delta"]["tool_calls"].get(0)?["function"]["arguments"].as_str().map(str::to_owned)
            })
            .collect();
        assert_eq!(args, call["function"]["arguments"].as_str().unwrap(), "{model}");
    }
}

#[tokio::test]
async fn vertex_ai_prefixed_models_pass_through() {
    let h = harness().await;
    let resp = h.chat(hello("vertex_ai/gemini-2.5-flash")).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "x-switchyard-provider"), "vertex");
    let resp = h.chat(hello("vertex/claude-haiku-4-5@20251001")).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "x-switchyard-provider"), "vertex");
    // A Claude model goes to Anthropic's publisher (the fake checks its `anthropic_version` and hands on
    // the Messages body), not Gemini's.
    let sent = h.upstream.last_request().body;
    assert_eq!(sent["model"], "claude-haiku-4-5@20251001", "{sent}");
    assert_eq!(sent["messages"][0]["content"][0]["type"], "text", "{sent}");
}

#[tokio::test]
async fn a_token_is_refreshed_in_the_background_before_it_expires_and_fetched_when_it_has() {
    let offset = Arc::new(AtomicI64::new(0));
    let h = harness_at(offset.clone()).await;
    assert_eq!(h.chat(hello("gemini-on-vertex")).await.status(), 200);
    assert_eq!(h.chat(hello("gemini-on-vertex")).await.status(), 200);
    assert_eq!(tokens_issued(&h), 1);
    // 57 minutes on: the token (issued for 3599 s) is in its last five minutes. The request goes out at
    // once with it, and a new one is fetched beside it.
    offset.store(57 * 60_000, Ordering::Relaxed);
    assert_eq!(h.chat(hello("gemini-on-vertex")).await.status(), 200);
    let first = h.upstream.last_request().headers["authorization"].to_str().unwrap().to_owned();
    assert_eq!(first, "Bearer ya29.fake-vertex-token-1", "the request did not wait for the refresh");
    eventually("the background refresh", || tokens_issued(&h) == 2).await;
    assert_eq!(h.chat(hello("gemini-on-vertex")).await.status(), 200);
    assert_eq!(h.upstream.last_request().headers["authorization"], "Bearer ya29.fake-vertex-token-2");
    // Three hours on, every token has expired: the request waits for a new one.
    offset.store(3 * 3_600_000, Ordering::Relaxed);
    assert_eq!(h.chat(hello("gemini-on-vertex")).await.status(), 200);
    assert_eq!(tokens_issued(&h), 3);
    assert_eq!(h.upstream.last_request().headers["authorization"], "Bearer ya29.fake-vertex-token-3");
}

#[tokio::test]
async fn a_key_the_token_endpoint_refuses_is_the_providers_credentials_and_falls_back() {
    let h = harness().await;
    let resp = h.chat(hello("untrusted-then-vertex")).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "x-switchyard-model"), "gemini-on-vertex");
    assert!(
        header(&resp, "x-switchyard-attempts").starts_with("2; vertex-untrusted-model="),
        "{}",
        header(&resp, "x-switchyard-attempts")
    );
    let resp = h.chat(hello("vertex-untrusted-model")).await;
    assert_eq!(resp.status(), 502);
    let text = resp.text().await.unwrap();
    assert!(!text.contains("PRIVATE KEY") && !text.contains("ya29."), "{text}");

    // A credentials variable that holds no service account key leaves the provider unconfigured, said
    // by name, and the key's contents are not repeated.
    let resp = h.chat(hello("vertex-unconfigured")).await;
    assert_eq!(resp.status(), 503);
    let text = resp.text().await.unwrap();
    assert!(text.contains("service account") && !text.contains("rt-canary"), "{text}");
}

#[tokio::test]
async fn vertex_embeddings_report_their_token_counts() {
    let h = harness().await;
    let resp = h
        .post("/v1/embeddings")
        .json(&json!({"model": "vertex-embed", "input": ["one two", "three four five six"], "dimensions": 16}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let request_id = header(&resp, "x-request-id");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["data"].as_array().unwrap().len(), 2);
    assert_eq!(body["data"][1]["embedding"].as_array().unwrap().len(), 16);
    assert_eq!(body["usage"]["prompt_tokens"], 2 + 5);
    assert_eq!(ledger_row(&h, &request_id).await["prompt_tokens"], 7);
    let sent = h.upstream.last_request().body;
    assert_eq!(sent["instances"], json!([{"content": "one two"}, {"content": "three four five six"}]));
    assert_eq!(sent["parameters"]["outputDimensionality"], 16);
}

#[tokio::test]
async fn requests_that_all_need_a_token_at_once_share_one_fetch() {
    let h = harness().await;
    let calls = (0..8).map(|_| h.chat(hello("gemini-on-vertex")));
    let answers = futures_util::future::join_all(calls).await;
    assert!(answers.iter().all(|r| r.status() == 200));
    assert_eq!(tokens_issued(&h), 1);
    assert_eq!(h.upstream.state.stats.token_requests.load(Ordering::Relaxed), 1);
}

#[tokio::test]
async fn an_outage_of_the_token_endpoint_is_not_hammered_and_a_refused_token_is_replaced() {
    let offset = Arc::new(AtomicI64::new(0));
    let h = harness_at(offset.clone()).await;
    let token_requests = || h.upstream.state.stats.token_requests.load(Ordering::Relaxed);
    h.upstream.state.fail_token_requests(1);
    let (status, body) = crate::support::error_of(h.chat(hello("gemini-on-vertex")).await).await;
    assert_eq!(status, 502, "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("HTTP 503"), "{body}");
    // Within the backoff the endpoint is not asked again: the error comes at once.
    for _ in 0..3 {
        assert_eq!(h.chat(hello("gemini-on-vertex")).await.status(), 502);
    }
    assert_eq!(token_requests(), 1);
    // After it, the next request fetches, and gets through.
    offset.store(2_000, Ordering::Relaxed);
    assert_eq!(h.chat(hello("gemini-on-vertex")).await.status(), 200);
    assert_eq!(token_requests(), 2);

    // Vertex stops taking the token (its key disabled): that request fails, the token is forgotten, and
    // the next request has a new one.
    h.upstream.state.revoke_tokens();
    assert_eq!(h.chat(hello("gemini-on-vertex")).await.status(), 502);
    assert_eq!(h.chat(hello("gemini-on-vertex")).await.status(), 200);
    assert_eq!(tokens_issued(&h), 2);
    // A 403 refuses one model, not the token: the token is kept.
    h.upstream.state.push_fault(Some("gemini-2.5-pro"), switchyard::fake::Fault::status(403));
    assert_ne!(h.chat(hello("gemini-on-vertex")).await.status(), 200);
    assert_eq!(h.chat(hello("gemini-on-vertex")).await.status(), 200);
    assert_eq!(tokens_issued(&h), 2, "no new token for a 403");
}

#[tokio::test]
async fn claude_on_vertex_is_not_sent_an_image_by_url() {
    let h = harness().await;
    // The field named is the caller's, though the system message leaves the list Anthropic is sent.
    let body = json!({"model": "claude-on-vertex", "messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": [
            {"type": "text", "text": "What is this?"},
            {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}]}]});
    let before = h.upstream.state.requests().len();
    let (status, err) = crate::support::error_of(h.chat(body).await).await;
    assert_eq!((status, err["error"]["param"].as_str()), (400, Some("messages[1].content[1].image_url")), "{err}");
    assert_eq!(h.upstream.state.requests().len(), before);
    // As base64 it goes.
    let inline = json!({"model": "claude-on-vertex", "messages": [{"role": "user", "content": [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}]}]});
    assert_eq!(h.chat(inline).await.status(), 200);
}
