//! Cohere's own v2 API end to end (`kind = "cohere"`): chat plain, streamed and with tools, JSON schema,
//! embeddings with Cohere's `input_type` and billed tokens, and reranks, against the fake's v2 routes.

use serde_json::{Value, json};
use switchyard::fake::Fault;

use crate::support::{Harness, MASTER_KEY, PROVIDER_KEY, Setup, header, hello, ledger_row, payloads, sse_events};

const MODELS: &str = r#"
[[providers]]
name = "cohere-native"
kind = "cohere"
base_url = "{root}"
api_key_env = "TEST_UPSTREAM_KEY"

[[models]]
name = "command"
provider = "cohere-native"
upstream = "command-a-03-2025"
input_per_mtok = 2.5
output_per_mtok = 10.0
capabilities = ["tools", "json_schema"]

[[models]]
name = "cohere-embed"
provider = "cohere-native"
upstream = "embed-v4.0"
input_per_mtok = 0.12
capabilities = ["embeddings"]

[[models]]
name = "cohere-rerank"
provider = "cohere-native"
upstream = "rerank-v3.5"
capabilities = ["rerank"]

[[aliases]]
name = "command-then-openai"
targets = ["command", "test-model"]
"#;

async fn harness() -> Harness {
    Harness::with(Setup { extra: MODELS.to_owned(), ..Setup::default() }).await
}

fn text_of(chunks: &[Value]) -> String {
    chunks.iter().filter_map(|c| c["choices"].get(0)?["delta"]["content"].as_str().map(str::to_owned)).collect()
}

#[tokio::test]
async fn chat_on_cohere_v2_plain_streamed_and_billed() {
    let h = harness().await;
    let resp = h.chat(hello("command")).await;
    assert_eq!(resp.status(), 200);
    let request_id = header(&resp, "x-request-id");
    let whole: Value = resp.json().await.unwrap();
    let text = whole["choices"][0]["message"]["content"].as_str().unwrap().to_owned();
    let sent = h.upstream.last_request();
    assert_eq!(sent.headers["authorization"], format!("Bearer {PROVIDER_KEY}"));
    assert_eq!(sent.body["model"], "command-a-03-2025");
    assert_eq!(sent.body["messages"], json!([{"role": "user", "content": "Say hello"}]));
    let row = ledger_row(&h, &request_id).await;
    // The fake bills 10 input tokens for this prompt and reports a raw count 40 higher: billed units
    // are what the caller is told and charged.
    assert_eq!(whole["usage"]["prompt_tokens"], 10, "{whole}");
    assert_eq!(row["prompt_tokens"], 10);
    assert!(row["cost_micros"].as_i64().unwrap() > 0);

    let mut body = hello("command");
    body["stream"] = json!(true);
    body["stream_options"] = json!({"include_usage": true});
    let (chunks, done) = payloads(&sse_events(h.chat(body).await).await);
    assert!(done);
    assert_eq!(text_of(&chunks), text);
    assert_eq!(chunks.last().unwrap()["usage"]["completion_tokens"], whole["usage"]["completion_tokens"]);
}

#[tokio::test]
async fn tools_and_json_schema_on_cohere_v2() {
    let h = harness().await;
    let mut body = hello("command");
    body["tools"] = json!([{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object",
        "properties": {"city": {"type": "string"}}}}}, {"type": "function", "function": {"name": "other"}}]);
    body["tool_choice"] = json!({"type": "function", "function": {"name": "get_weather"}});
    let whole: Value = h.chat(body.clone()).await.json().await.unwrap();
    let call = &whole["choices"][0]["message"]["tool_calls"][0];
    assert_eq!(call["function"]["name"], "get_weather", "{whole}");
    assert_eq!(whole["choices"][0]["finish_reason"], "tool_calls");
    let sent = h.upstream.last_request().body;
    assert_eq!((sent["tool_choice"].as_str(), sent["tools"].as_array().unwrap().len()), (Some("REQUIRED"), 1));
    body["stream"] = json!(true);
    let (chunks, _) = payloads(&sse_events(h.chat(body).await).await);
    let args: String = chunks
        .iter()
        .filter_map(|c| {
            c["choices"].get(0)?["delta"]["tool_calls"].get(0)?["function"]["arguments"].as_str().map(str::to_owned)
        })
        .collect();
    assert_eq!(args, call["function"]["arguments"].as_str().unwrap());

    let mut body = hello("command");
    body["response_format"] = json!({"type": "json_schema", "json_schema": {"name": "v", "schema": {"type": "object",
        "properties": {"ok": {"type": "boolean"}}}}});
    let whole: Value = h.chat(body).await.json().await.unwrap();
    let parsed: Value = serde_json::from_str(whole["choices"][0]["message"]["content"].as_str().unwrap()).unwrap();
    assert_eq!(parsed["ok"], true);
}

#[tokio::test]
async fn a_stream_cohere_ends_in_error_falls_back_before_content() {
    let h = harness().await;
    h.upstream.state.push_fault(Some("command-a-03-2025"), Fault::ErrorMidStream { after_chunks: 1 });
    let mut body = hello("command-then-openai");
    body["stream"] = json!(true);
    let resp = h.chat(body).await;
    assert_eq!(header(&resp, "x-switchyard-model"), "test-model");
    let (chunks, done) = payloads(&sse_events(resp).await);
    assert!(done && chunks.iter().all(|c| c.get("error").is_none()));
}

#[tokio::test]
async fn embeddings_and_reranks_on_cohere_v2() {
    let h = harness().await;
    let resp = h
        .post("/v1/embeddings")
        .json(&json!({"model": "cohere-embed", "input": ["one", "two three"], "input_type": "search_query", "dimensions": 4}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["data"][1]["embedding"].as_array().unwrap().len(), 4);
    assert_eq!(body["usage"]["prompt_tokens"], 1 + 3);
    let sent = h.upstream.last_request().body;
    assert_eq!((sent["input_type"].as_str(), sent["output_dimension"].as_u64()), (Some("search_query"), Some(4)));
    assert_eq!(sent["embedding_types"], json!(["float"]));

    let resp = h
        .client
        .post(h.url("/v1/rerank"))
        .bearer_auth(MASTER_KEY)
        .json(&json!({"model": "cohere-rerank", "query": "capital of France", "documents": ["Paris is the capital", "Berlin"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    let indexes: Vec<u64> = body["results"].as_array().unwrap().iter().map(|r| r["index"].as_u64().unwrap()).collect();
    assert_eq!(indexes, [0, 1], "the document about the capital first: {body}");
    assert_eq!(h.upstream.last_request().body["documents"], json!(["Paris is the capital", "Berlin"]));
}

#[tokio::test]
async fn more_texts_than_cohere_takes_in_a_call_go_in_several_calls_joined_in_order() {
    let h = harness().await;
    let texts: Vec<String> = (0..97).map(|i| format!("text number {i}")).collect();
    let before = h.upstream.state.requests().len();
    let resp = h
        .post("/v1/embeddings")
        .json(&json!({"model": "cohere-embed", "input": texts, "dimensions": 4}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    let data = body["data"].as_array().unwrap();
    assert_eq!(data.len(), 97);
    let sent = &h.upstream.state.requests()[before..];
    let mut sizes: Vec<usize> = sent.iter().map(|r| r.body["texts"].as_array().unwrap().len()).collect();
    sizes.sort_unstable();
    assert_eq!(sizes, [1, 96], "Cohere takes 96 texts a call");
    // Each vector is its own text's, in the caller's order, and the token counts are summed.
    let vector = |text: &str| -> Value {
        json!(switchyard::fake::fake_vector(text, 4).into_iter().map(f64::from).collect::<Vec<f64>>())
    };
    for i in [0, 95, 96] {
        assert_eq!(data[i]["index"], i, "{}", data[i]);
        assert_eq!(data[i]["embedding"], vector(&texts[i]), "vector {i}");
    }
    let tokens: usize = texts.iter().map(|t| t.len().div_ceil(4)).sum();
    assert_eq!(body["usage"]["prompt_tokens"], tokens);
}
