//! AWS Bedrock end to end: the gateway signs each Converse call with SigV4 (checked by the fake with its
//! own implementation), reads ConverseStream's event-stream frames, maps Bedrock's exceptions to our
//! error classes and falls back on them, passes `bedrock/<model id>` through, and embeds with Titan one
//! text per call.

use serde_json::{Value, json};
use switchyard::fake::Fault;

use crate::support::{
    AWS_WRONG_SECRET, Harness, PROVIDER_KEY, Setup, bedrock_provider, error_of, header, hello, ledger_row, payloads,
    sse_events,
};

const MODELS: &str = r#"
[[providers]]
name = "bedrock-api-key"
kind = "bedrock"
base_url = "{root}"
api_key_env = "TEST_UPSTREAM_KEY"
aws = { region = "eu-west-1" }

[[models]]
name = "claude-on-bedrock"
provider = "bedrock"
upstream = "us.anthropic.claude-sonnet-4-6-v1:0"
input_per_mtok = 3.0
output_per_mtok = 15.0
capabilities = ["tools", "json_schema", "vision"]

[[models]]
name = "bedrock-refused"
provider = "bedrock-wrong-key"
upstream = "anthropic.claude-haiku-4-5-v1:0"

[[models]]
name = "bedrock-by-api-key"
provider = "bedrock-api-key"
upstream = "amazon.nova-pro-v1:0"

[[models]]
name = "titan-v2"
provider = "bedrock"
upstream = "amazon.titan-embed-text-v2:0"
input_per_mtok = 0.02
capabilities = ["embeddings"]

[[models]]
name = "cohere-on-bedrock"
provider = "bedrock"
upstream = "cohere.embed-english-v3"
input_per_mtok = 0.1
capabilities = ["embeddings"]

[[aliases]]
name = "bedrock-then-openai"
targets = ["claude-on-bedrock", "test-model"]

[[aliases]]
name = "refused-then-bedrock"
targets = ["bedrock-refused", "claude-on-bedrock"]
"#;

async fn harness() -> Harness {
    let extra = [
        bedrock_provider("bedrock", "us-east-1", "TEST_AWS_SECRET_ACCESS_KEY"),
        bedrock_provider("bedrock-wrong-key", "us-west-2", "TEST_AWS_WRONG_SECRET"),
        MODELS.to_owned(),
    ]
    .concat();
    Harness::with(Setup { extra, ..Setup::default() }).await
}

/// The authorization header of the fake's last request.
fn last_authorization(h: &Harness) -> String {
    let req = h.upstream.last_request();
    req.headers.get("authorization").map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default()
}

#[tokio::test]
async fn chat_plain_and_streamed_is_signed_and_answered_the_same() {
    let h = harness().await;
    let resp = h.chat(hello("claude-on-bedrock")).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "x-switchyard-provider"), "bedrock");
    let request_id = header(&resp, "x-request-id");
    let whole: Value = resp.json().await.unwrap();
    let text = whole["choices"][0]["message"]["content"].as_str().unwrap().to_owned();
    assert!(!text.is_empty());
    assert_eq!(whole["choices"][0]["finish_reason"], "stop");
    let auth = last_authorization(&h);
    assert!(auth.starts_with("AWS4-HMAC-SHA256 Credential=AKIDFAKEBEDROCK/"), "{auth}");
    assert!(auth.contains("/us-east-1/bedrock/aws4_request"), "{auth}");
    // The row is costed at the catalog's price from Bedrock's own token counts.
    let row = ledger_row(&h, &request_id).await;
    let usage = &whole["usage"];
    assert_eq!(row["prompt_tokens"], usage["prompt_tokens"]);
    assert_eq!(row["completion_tokens"], usage["completion_tokens"]);
    assert!(row["cost_micros"].as_i64().unwrap() > 0, "{row}");

    let mut body = hello("claude-on-bedrock");
    body["stream"] = json!(true);
    body["stream_options"] = json!({"include_usage": true});
    let resp = h.chat(body).await;
    assert_eq!(resp.status(), 200);
    let (chunks, done) = payloads(&sse_events(resp).await);
    assert!(done, "the stream ends with [DONE]");
    let streamed: String =
        chunks.iter().filter_map(|c| c["choices"].get(0)?["delta"]["content"].as_str().map(str::to_owned)).collect();
    assert_eq!(streamed, text, "the stream says what the whole answer said");
    assert!(chunks.iter().any(|c| c["choices"].get(0).is_some_and(|ch| ch["finish_reason"] == "stop")));
    let last = chunks.last().unwrap();
    assert_eq!(last["usage"]["completion_tokens"], usage["completion_tokens"], "{last}");
}

#[tokio::test]
async fn tools_go_both_ways_and_streamed_arguments_reassemble() {
    let h = harness().await;
    let tools = json!([{"type": "function", "function": {"name": "get_weather", "description": "Weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]);
    let mut body = hello("claude-on-bedrock");
    body["tools"] = tools.clone();
    body["tool_choice"] = json!("required");
    let resp = h.chat(body.clone()).await;
    assert_eq!(resp.status(), 200);
    let whole: Value = resp.json().await.unwrap();
    assert_eq!(whole["choices"][0]["finish_reason"], "tool_calls");
    let call = &whole["choices"][0]["message"]["tool_calls"][0];
    assert_eq!(call["function"]["name"], "get_weather");
    let args: Value = serde_json::from_str(call["function"]["arguments"].as_str().unwrap()).unwrap();
    assert!(args["city"].is_string(), "{args}");
    let sent = h.upstream.last_request().body;
    assert_eq!(sent["toolConfig"]["toolChoice"], json!({"any": {}}));
    assert_eq!(sent["toolConfig"]["tools"][0]["toolSpec"]["inputSchema"]["json"]["required"], json!(["city"]));

    body["stream"] = json!(true);
    let (chunks, _) = payloads(&sse_events(h.chat(body.clone()).await).await);
    let streamed_args: String = chunks
        .iter()
        .filter_map(|c| {
            c["choices"].get(0)?["delta"]["tool_calls"].get(0)?["function"]["arguments"].as_str().map(str::to_owned)
        })
        .collect();
    assert_eq!(
        streamed_args,
        call["function"]["arguments"].as_str().unwrap(),
        "the pieces join to the whole arguments"
    );

    // The result goes back as a toolResult in a user turn, and the model answers in text.
    body["stream"] = json!(false);
    body["tool_choice"] = json!("auto");
    body["messages"] = json!([
        {"role": "user", "content": "Weather in Oslo?"},
        {"role": "assistant", "content": null, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": call["id"], "content": "{\"temp_c\": 4}"}
    ]);
    let resp = h.chat(body).await;
    assert_eq!(resp.status(), 200);
    let answer: Value = resp.json().await.unwrap();
    assert_eq!(answer["choices"][0]["finish_reason"], "stop");
    let sent = h.upstream.last_request().body;
    assert_eq!(sent["messages"][2]["content"][0]["toolResult"]["content"][0]["json"], json!({"temp_c": 4}));
    assert_eq!(sent["messages"][1]["content"][0]["toolUse"]["toolUseId"], call["id"]);
}

#[tokio::test]
async fn json_schema_comes_back_as_json_text() {
    let h = harness().await;
    let mut body = hello("claude-on-bedrock");
    body["response_format"] = json!({"type": "json_schema", "json_schema": {"name": "verdict",
        "schema": {"type": "object", "properties": {"ok": {"type": "boolean"}, "why": {"type": "string"}}}}});
    let resp = h.chat(body.clone()).await;
    assert_eq!(resp.status(), 200);
    let whole: Value = resp.json().await.unwrap();
    let parsed: Value = serde_json::from_str(whole["choices"][0]["message"]["content"].as_str().unwrap()).unwrap();
    assert_eq!(parsed["ok"], true);
    assert_eq!(whole["choices"][0]["finish_reason"], "stop");
    body["stream"] = json!(true);
    let (chunks, _) = payloads(&sse_events(h.chat(body).await).await);
    let text: String =
        chunks.iter().filter_map(|c| c["choices"].get(0)?["delta"]["content"].as_str().map(str::to_owned)).collect();
    assert_eq!(serde_json::from_str::<Value>(&text).unwrap(), parsed);
}

#[tokio::test]
async fn a_throttled_bedrock_falls_back_and_alone_is_a_429() {
    let h = harness().await;
    let throttled = || Fault::Status {
        status: 429,
        retry_after_secs: None,
        code: Some("ThrottlingException".into()),
        message: "Too many requests, please wait before trying again.".into(),
    };
    h.upstream.state.push_fault(Some("us.anthropic.claude-sonnet-4-6-v1:0"), throttled());
    let resp = h.chat(hello("bedrock-then-openai")).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "x-switchyard-model"), "test-model");
    assert_eq!(header(&resp, "x-switchyard-attempts"), "2; claude-on-bedrock=429");

    h.upstream.state.push_fault(Some("us.anthropic.claude-sonnet-4-6-v1:0"), throttled());
    let (status, body) = error_of(h.chat(hello("claude-on-bedrock")).await).await;
    assert_eq!(status, 429, "{body}");

    // Not ready, and a 5xx: both move on.
    for code in ["ModelNotReadyException", "InternalServerException"] {
        let status = if code == "ModelNotReadyException" { 429 } else { 500 };
        h.upstream.state.push_fault(
            Some("us.anthropic.claude-sonnet-4-6-v1:0"),
            Fault::Status { status, retry_after_secs: None, code: Some(code.into()), message: "not now".into() },
        );
        let resp = h.chat(hello("bedrock-then-openai")).await;
        assert_eq!((resp.status().as_u16(), header(&resp, "x-switchyard-model")), (200, "test-model".into()), "{code}");
    }
}

#[tokio::test]
async fn a_validation_error_is_a_400_with_bedrocks_words() {
    let h = harness().await;
    h.upstream.state.push_fault(
        Some("us.anthropic.claude-sonnet-4-6-v1:0"),
        Fault::Status {
            status: 400,
            retry_after_secs: None,
            code: Some("ValidationException".into()),
            message: "The model returned the following errors: temperature: range: 0..1".into(),
        },
    );
    let resp = h.chat(hello("bedrock-then-openai")).await;
    let (status, body) = error_of(resp).await;
    assert_eq!(status, 400, "the caller's mistake is not retried elsewhere: {body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("temperature: range: 0..1"), "{body}");
}

#[tokio::test]
async fn a_signature_bedrock_refuses_is_the_providers_credentials_and_never_shown() {
    let h = harness().await;
    let resp = h.chat(hello("refused-then-bedrock")).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "x-switchyard-model"), "claude-on-bedrock");
    assert_eq!(header(&resp, "x-switchyard-attempts"), "2; bedrock-refused=403");

    let resp = h.chat(hello("bedrock-refused")).await;
    let text = resp.text().await.unwrap();
    assert!(!text.contains(AWS_WRONG_SECRET) && !text.contains(switchyard::fake::bedrock::SECRET_ACCESS_KEY), "{text}");
    let body: Value = serde_json::from_str(&text).unwrap();
    assert!(body["error"]["message"].as_str().unwrap().contains("credentials"), "{body}");
}

#[tokio::test]
async fn a_bedrock_api_key_is_sent_as_a_bearer_token_instead_of_a_signature() {
    let h = harness().await;
    let resp = h.chat(hello("bedrock-by-api-key")).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(last_authorization(&h), format!("Bearer {PROVIDER_KEY}"));
}

#[tokio::test]
async fn a_stream_that_fails_before_content_falls_back_and_after_it_ends_in_an_error() {
    let h = harness().await;
    // The first frame is messageStart (nothing a client sees): the exception right after it falls back.
    h.upstream.state.push_fault(Some("us.anthropic.claude-sonnet-4-6-v1:0"), Fault::ErrorMidStream { after_chunks: 1 });
    let mut body = hello("bedrock-then-openai");
    body["stream"] = json!(true);
    let resp = h.chat(body.clone()).await;
    assert_eq!(header(&resp, "x-switchyard-model"), "test-model");
    let (chunks, done) = payloads(&sse_events(resp).await);
    assert!(done && chunks.iter().all(|c| c.get("error").is_none()));

    // After text has gone out, continuation is opted out of: the stream ends in an error event.
    h.upstream.state.push_fault(Some("us.anthropic.claude-sonnet-4-6-v1:0"), Fault::ErrorMidStream { after_chunks: 4 });
    let mut body = hello("claude-on-bedrock");
    body["stream"] = json!(true);
    let resp =
        h.post("/v1/chat/completions").header("x-switchyard-continuation", "off").json(&body).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let events = sse_events(resp).await;
    let (chunks, done) = payloads(&events);
    assert!(!done, "a failed stream does not end with [DONE]");
    assert!(chunks.last().unwrap().get("error").is_some(), "{:?}", chunks.last());
}

#[tokio::test]
async fn bedrock_model_ids_pass_through_with_the_bedrock_prefix() {
    let h = harness().await;
    let resp = h.chat(hello("bedrock/us.meta.llama4-maverick-17b-instruct-v1:0")).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "x-switchyard-provider"), "bedrock");
    // The model id is one path segment, its colon percent-encoded, and the fake checked the signature
    // over that very path.
    let req = h.upstream.last_request();
    assert_eq!(
        req.headers[switchyard::fake::bedrock::PATH_HEADER],
        "/model/us.meta.llama4-maverick-17b-instruct-v1%3A0/converse"
    );
    assert!(last_authorization(&h).starts_with("AWS4-HMAC-SHA256"));
}

/// What Bedrock refuses (the fake holds requests to its rules) is made into what it takes: a conversation
/// opening with the assistant, blank text, another provider's tool call ids, tool turns with no tools.
#[tokio::test]
async fn conversations_other_providers_accept_are_made_acceptable_to_bedrock() {
    let h = harness().await;
    let call = json!({"id": "functions.get_weather:0", "type": "function",
        "function": {"name": "get_weather", "arguments": "{\"city\":\"Oslo\"}"}});
    let tools = json!([{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]);
    let conversation = json!([
        {"role": "system", "content": "Be brief."},
        {"role": "assistant", "content": "Hello! How can I help?"},
        {"role": "user", "content": [{"type": "text", "text": " "}, {"type": "text", "text": "Weather in Oslo?"}]},
        {"role": "assistant", "content": "", "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "functions.get_weather:0", "content": ""},
    ]);
    for (with_tools, choice) in [(true, json!("auto")), (false, Value::Null), (true, json!("none"))] {
        let mut body = json!({"model": "claude-on-bedrock", "messages": conversation});
        if with_tools {
            body["tools"] = tools.clone();
        }
        if !choice.is_null() {
            body["tool_choice"] = choice.clone();
        }
        let resp = h.chat(body).await;
        let status = resp.status();
        assert_eq!(status, 200, "tools {with_tools}, choice {choice}: {}", resp.text().await.unwrap());
    }
}

#[tokio::test]
async fn titan_embeds_each_input_in_its_own_call_joined_in_order() {
    let h = harness().await;
    let before = h.upstream.state.requests().len();
    let resp = h
        .post("/v1/embeddings")
        .json(&json!({"model": "titan-v2", "input": ["alpha", "beta beta", "gamma gamma gamma"], "dimensions": 4}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let request_id = header(&resp, "x-request-id");
    let body: Value = resp.json().await.unwrap();
    let data = body["data"].as_array().unwrap();
    assert_eq!(data.len(), 3);
    for (i, item) in data.iter().enumerate() {
        assert_eq!(item["index"], i);
        assert_eq!(item["embedding"].as_array().unwrap().len(), 4);
    }
    let sent: Vec<Value> = h.upstream.state.requests()[before..].iter().map(|r| r.body.clone()).collect();
    let mut texts: Vec<&str> = sent.iter().filter_map(|b| b["inputText"].as_str()).collect();
    texts.sort_unstable();
    assert_eq!(texts, ["alpha", "beta beta", "gamma gamma gamma"], "one call per input");
    // Each answer is this one's embedding of its own text: the same input alone gives the same vector.
    let single = h
        .post("/v1/embeddings")
        .json(&json!({"model": "titan-v2", "input": "beta beta", "dimensions": 4}))
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap();
    assert_eq!(single["data"][0]["embedding"], data[1]["embedding"]);
    // Usage is the sum of Titan's token counts (2 + 3 + 5), and the ledger has the request once.
    assert_eq!(body["usage"]["prompt_tokens"], 10);
    let row = ledger_row(&h, &request_id).await;
    assert_eq!(row["prompt_tokens"], 10);
}

#[tokio::test]
async fn many_titan_inputs_keep_their_order_and_one_failed_call_fails_the_request() {
    let h = harness().await;
    let inputs: Vec<String> = (0..9).map(|i| format!("text number {i}")).collect();
    let resp = h.post("/v1/embeddings").json(&json!({"model": "titan-v2", "input": inputs})).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    for (i, text) in inputs.iter().enumerate() {
        let alone: Value = h
            .post("/v1/embeddings")
            .json(&json!({"model": "titan-v2", "input": text}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(body["data"][i]["embedding"], alone["data"][0]["embedding"], "input {i} in its place");
    }
    h.upstream.state.push_fault(Some("amazon.titan-embed-text-v2:0"), Fault::status(500));
    let resp = h.post("/v1/embeddings").json(&json!({"model": "titan-v2", "input": inputs})).send().await.unwrap();
    let (status, body) = error_of(resp).await;
    assert_eq!(status, 502, "{body}");
}

#[tokio::test]
async fn cohere_embeddings_on_bedrock_are_billed_by_the_header_count_and_split_past_96() {
    let h = harness().await;
    let texts: Vec<String> = (0..100).map(|i| format!("document number {i}")).collect();
    let before = h.upstream.state.requests().len();
    let resp = h
        .post("/v1/embeddings")
        .json(&json!({"model": "cohere-on-bedrock", "input": texts, "input_type": "search_query"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let request_id = header(&resp, "x-request-id");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["data"].as_array().unwrap().len(), 100);
    let got: Vec<f64> = body["data"][99]["embedding"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect();
    let want: Vec<f64> = switchyard::fake::fake_vector(&texts[99], 8).into_iter().map(f64::from).collect();
    assert_eq!(got.len(), want.len());
    assert!(got.iter().zip(&want).all(|(a, b)| (a - b).abs() < 1e-9), "the last text's own vector, in its place");
    let sent = &h.upstream.state.requests()[before..];
    let mut sizes: Vec<usize> = sent.iter().map(|r| r.body["texts"].as_array().unwrap().len()).collect();
    sizes.sort_unstable();
    assert_eq!(sizes, [4, 96]);
    assert!(sent.iter().all(|r| r.body["input_type"] == "search_query" && r.body.get("model").is_none()));
    // The fake reports a token per four characters in its header; the row bills that.
    let tokens: u64 = texts.iter().map(|t| t.len().div_ceil(4) as u64).sum();
    assert_eq!(body["usage"]["prompt_tokens"], tokens);
    let row = ledger_row(&h, &request_id).await;
    assert_eq!(row["prompt_tokens"], tokens);
    assert_eq!(row["usage_source"], "provider");
}
