//! The same OpenAI-shaped calls against every wire protocol: the fake upstream speaks OpenAI, Anthropic,
//! Gemini and Azure OpenAI for real, and the gateway translates.

use base64::Engine;
use serde_json::{Value, json};
use switchyard::fake::Fault;

use crate::support::{Harness, error_of, hello, payloads, sse_events};

const CHAT_MODELS: [&str; 4] = ["test-model", "claude-test", "gemini-test", "azure-test"];

fn streamed(mut body: Value) -> Value {
    body["stream"] = json!(true);
    body
}

fn weather_tools() -> Value {
    json!([
        {"type": "function", "function": {"name": "get_weather", "description": "Weather for a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"}}, "required": ["city"]}}},
        {"type": "function", "function": {"name": "get_time",
            "parameters": {"type": "object", "properties": {"tz": {"type": "string"}}}}}
    ])
}

/// Reassembles streamed chunks the way a client does: text, and tool calls by index.
fn reassemble(chunks: &[Value]) -> (String, Vec<(String, String)>, Option<String>) {
    let mut text = String::new();
    let mut calls: Vec<(String, String)> = Vec::new();
    let mut finish = None;
    for c in chunks {
        let choice = &c["choices"][0];
        text += choice["delta"]["content"].as_str().unwrap_or_default();
        for d in choice["delta"]["tool_calls"].as_array().into_iter().flatten() {
            let i = d["index"].as_u64().unwrap() as usize;
            if calls.len() <= i {
                calls.resize(i + 1, Default::default());
                calls[i].0 = d["function"]["name"].as_str().expect("the first delta names the function").to_owned();
            }
            calls[i].1 += d["function"]["arguments"].as_str().unwrap_or_default();
        }
        if let Some(f) = choice["finish_reason"].as_str() {
            finish = Some(f.to_owned());
        }
    }
    (text, calls, finish)
}

fn calls_of(message: &Value) -> Vec<(String, String)> {
    message["tool_calls"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| {
            (
                c["function"]["name"].as_str().unwrap().to_owned(),
                c["function"]["arguments"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[tokio::test]
async fn plain_and_streamed_chat_work_and_agree_for_every_protocol() {
    let h = Harness::start().await;
    for model in CHAT_MODELS {
        let resp = h.chat(hello(model)).await;
        assert_eq!(resp.status(), 200, "{model}");
        let plain: Value = resp.json().await.unwrap();
        assert_eq!(plain["model"], model);
        assert_eq!(plain["object"], "chat.completion");
        let text = plain["choices"][0]["message"]["content"].as_str().unwrap().to_owned();
        assert!(!text.is_empty(), "{model}: {plain}");
        assert_eq!(plain["choices"][0]["finish_reason"], "stop", "{model}");
        assert!(plain["usage"]["prompt_tokens"].as_u64().unwrap() > 0, "{model}");

        let (chunks, done) = payloads(&sse_events(h.chat(streamed(hello(model))).await).await);
        assert!(done, "{model}: the stream ends with [DONE]");
        assert!(chunks.iter().all(|c| c["model"] == model && c["object"] == "chat.completion.chunk"), "{model}");
        let (streamed_text, calls, finish) = reassemble(&chunks);
        assert_eq!(streamed_text, text, "{model}: streamed text equals the plain text");
        assert!(calls.is_empty());
        assert_eq!(finish.as_deref(), Some("stop"), "{model}");
    }
    // Each pair recorded the same usage whether streamed or not.
    let records = h.usage.wait_for(CHAT_MODELS.len() * 2).await;
    for pair in records.chunks(2) {
        assert_eq!(
            (pair[0].prompt_tokens, pair[0].completion_tokens),
            (pair[1].prompt_tokens, pair[1].completion_tokens)
        );
        assert_eq!(pair[1].usage_source, switchyard::usage::UsageSource::Provider, "{:?}", pair[1]);
    }
}

#[tokio::test]
async fn tool_calls_translate_both_ways_and_streamed_arguments_reassemble_exactly() {
    let h = Harness::start().await;
    for model in CHAT_MODELS {
        let request = json!({"model": model, "messages": [{"role": "user", "content": "Weather in Paris, time in Tokyo?"}], "tools": weather_tools()});
        let plain: Value = h.chat(request.clone()).await.json().await.unwrap();
        let message = &plain["choices"][0]["message"];
        assert_eq!(plain["choices"][0]["finish_reason"], "tool_calls", "{model}: {plain}");
        let calls = calls_of(message);
        assert_eq!(calls.len(), 2, "{model}: parallel calls");
        assert_eq!(calls[0].0, "get_weather");
        let args: Value = serde_json::from_str(&calls[0].1).unwrap();
        assert_eq!(args["days"], 42, "{model}: {args}");

        let (chunks, done) = payloads(&sse_events(h.chat(streamed(request)).await).await);
        assert!(done);
        let (_, streamed_calls, finish) = reassemble(&chunks);
        assert_eq!(streamed_calls, calls, "{model}: streamed arguments reassemble to the plain ones");
        assert_eq!(finish.as_deref(), Some("tool_calls"));
    }
}

#[tokio::test]
async fn a_conversation_with_tool_results_is_translated_for_each_provider() {
    let h = Harness::start().await;
    for model in CHAT_MODELS {
        let request = json!({"model": model, "tools": weather_tools(), "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Weather in Paris?"},
            {"role": "assistant", "content": null, "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": "{\"temp_c\": 21}"}
        ]});
        let resp = h.chat(request).await;
        assert_eq!(resp.status(), 200, "{model}");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["choices"][0]["finish_reason"], "stop", "{model}: after a tool result the model answers");
    }
    // What each provider received, in its own format.
    let seen = h.upstream.state.requests();
    let anthropic = &seen[1].body;
    assert_eq!(anthropic["system"][0]["text"], "Be brief.");
    assert_eq!(anthropic["messages"][1]["content"][0]["type"], "tool_use");
    assert_eq!(anthropic["messages"][1]["content"][0]["input"]["city"], "Paris");
    assert_eq!(anthropic["messages"][2]["content"][0]["type"], "tool_result");
    assert_eq!(anthropic["messages"][2]["content"][0]["tool_use_id"], "call_1");
    assert_eq!(seen[1].headers["x-api-key"], crate::support::PROVIDER_KEY);
    assert_eq!(seen[1].headers["anthropic-version"], "2023-06-01");
    let gemini = &seen[2].body;
    assert_eq!(gemini["systemInstruction"]["parts"][0]["text"], "Be brief.");
    assert_eq!(gemini["contents"][1]["role"], "model");
    assert_eq!(gemini["contents"][1]["parts"][0]["functionCall"]["name"], "get_weather");
    assert_eq!(gemini["contents"][2]["parts"][0]["functionResponse"]["response"]["temp_c"], 21);
    assert_eq!(seen[2].headers["x-goog-api-key"], crate::support::PROVIDER_KEY);
    assert_eq!(seen[3].headers["api-key"], crate::support::PROVIDER_KEY);
    assert!(seen[3].headers.get("authorization").is_none());
}

#[tokio::test]
async fn images_are_passed_by_reference_or_inline_never_fetched() {
    let h = Harness::start().await;
    let content = json!([
        {"type": "text", "text": "What is in these?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.webp"}}
    ]);
    for model in CHAT_MODELS {
        let resp = h.chat(json!({"model": model, "messages": [{"role": "user", "content": content}]})).await;
        assert_eq!(resp.status(), 200, "{model}");
    }
    let seen = h.upstream.state.requests();
    let blocks = &seen[1].body["messages"][0]["content"];
    assert_eq!(blocks[1]["source"], json!({"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}));
    assert_eq!(blocks[2]["source"], json!({"type": "url", "url": "https://example.com/cat.webp"}));
    let parts = &seen[2].body["contents"][0]["parts"];
    assert_eq!(parts[1]["inlineData"], json!({"mimeType": "image/png", "data": "iVBORw0KGgo="}));
    assert_eq!(parts[2]["fileData"], json!({"mimeType": "image/webp", "fileUri": "https://example.com/cat.webp"}));

    // A URL that is neither https nor data: is refused before any provider sees it.
    let bad = json!([{"type": "image_url", "image_url": {"url": "file:///etc/passwd"}}]);
    let (status, body) =
        error_of(h.chat(json!({"model": "claude-test", "messages": [{"role": "user", "content": bad}]})).await).await;
    assert_eq!((status, body["error"]["param"].as_str()), (400, Some("messages[0].content[0].image_url")));
}

#[tokio::test]
async fn json_schema_responses_come_back_as_json_text_from_every_protocol() {
    let h = Harness::start().await;
    let schema = json!({"type": "object", "properties": {"answer": {"type": "string"}, "score": {"type": "number"}}, "required": ["answer", "score"]});
    for model in CHAT_MODELS {
        let request = json!({"model": model, "messages": [{"role": "user", "content": "Rate it"}],
            "response_format": {"type": "json_schema", "json_schema": {"name": "rating", "schema": schema}}});
        let plain: Value = h.chat(request.clone()).await.json().await.unwrap();
        let text = plain["choices"][0]["message"]["content"].as_str().unwrap_or_else(|| panic!("{model}: {plain}"));
        let parsed: Value = serde_json::from_str(text).unwrap_or_else(|e| panic!("{model}: {text}: {e}"));
        assert_eq!(parsed["score"], 42, "{model}");
        assert_eq!(plain["choices"][0]["finish_reason"], "stop", "{model}");
        let (chunks, _) = payloads(&sse_events(h.chat(streamed(request)).await).await);
        let (streamed_text, calls, _) = reassemble(&chunks);
        assert!(calls.is_empty(), "{model}: the schema tool is not shown as a tool call");
        assert_eq!(serde_json::from_str::<Value>(&streamed_text).unwrap(), parsed, "{model}");
    }
    let gemini = h.upstream.state.requests().into_iter().find(|r| r.body.get("contents").is_some()).unwrap();
    assert_eq!(gemini.body["generationConfig"]["responseMimeType"], "application/json");
    assert_eq!(gemini.body["generationConfig"]["responseJsonSchema"], schema);
}

#[tokio::test]
async fn json_object_mode_gives_valid_json_from_every_protocol_and_n_choices_from_every_provider() {
    let h = Harness::start().await;
    for model in CHAT_MODELS {
        let request = json!({"model": model, "messages": [{"role": "user", "content": "Give me JSON"}],
            "response_format": {"type": "json_object"}});
        let plain: Value = h.chat(request.clone()).await.json().await.unwrap();
        let text = plain["choices"][0]["message"]["content"].as_str().unwrap_or_else(|| panic!("{model}: {plain}"));
        let parsed: Value = serde_json::from_str(text).unwrap_or_else(|e| panic!("{model}: {text}: {e}"));
        assert!(parsed.is_object(), "{model}");
    }
    let anthropic = h
        .upstream
        .state
        .requests()
        .into_iter()
        .find(|r| r.body.get("system").is_none() && r.body["model"] == "claude-sonnet-4-5")
        .unwrap();
    assert_eq!(anthropic.body["tool_choice"]["type"], "tool", "JSON mode is a forced tool on Anthropic");

    // Several choices: Anthropic returns one, so the gateway makes n calls; the ledger bills all of them.
    for model in CHAT_MODELS {
        let resp: Value = h
            .chat(json!({"model": model, "n": 3, "messages": [{"role": "user", "content": "Hi"}]}))
            .await
            .json()
            .await
            .unwrap();
        let indices: Vec<u64> = resp["choices"]
            .as_array()
            .unwrap_or_else(|| panic!("{model}: {resp}"))
            .iter()
            .map(|c| c["index"].as_u64().unwrap())
            .collect();
        if model == "claude-test" {
            assert_eq!(indices, [0, 1, 2], "{model}");
        }
    }
}

#[tokio::test]
async fn provider_errors_become_the_right_openai_errors() {
    let h = Harness::start().await;
    let status_fault = |status: u16, code: Option<&str>, message: &str, retry: Option<u64>| Fault::Status {
        status,
        retry_after_secs: retry,
        code: code.map(str::to_owned),
        message: message.to_owned(),
    };
    let cases: Vec<(&str, Fault, u16, &str)> = vec![
        ("claude-test", status_fault(529, None, "Overloaded", None), 503, "provider_overloaded"),
        ("claude-test", status_fault(429, None, "rate limited", Some(30)), 429, "rate_limit_exceeded"),
        (
            "claude-test",
            status_fault(400, None, "prompt is too long: 250000 tokens > 200000 maximum", None),
            400,
            "context_length_exceeded",
        ),
        ("claude-test", status_fault(400, None, "messages.0: bad role", None), 400, ""),
        ("claude-test", status_fault(500, None, "boom", None), 502, "upstream_error"),
        ("gemini-test", status_fault(429, None, "Resource has been exhausted", Some(20)), 429, "rate_limit_exceeded"),
        ("gemini-test", status_fault(400, None, "Invalid value at 'contents'", None), 400, ""),
        ("gemini-test", status_fault(503, None, "The model is overloaded.", None), 503, "provider_overloaded"),
        (
            "test-model",
            status_fault(400, Some("content_policy_violation"), "refused", None),
            400,
            "content_policy_violation",
        ),
        (
            "azure-test",
            status_fault(400, Some("context_length_exceeded"), "too long", None),
            400,
            "context_length_exceeded",
        ),
    ];
    for (model, fault, status, code) in cases {
        let upstream_model = match model {
            "claude-test" => "claude-sonnet-4-5",
            "gemini-test" => "gemini-2.5-flash",
            "azure-test" => "my-gpt-deployment",
            _ => "upstream-model-id",
        };
        h.upstream.state.push_fault(Some(upstream_model), fault.clone());
        let resp = h.chat(hello(model)).await;
        let retry_after = resp.headers().get("retry-after").map(|v| v.to_str().unwrap().to_owned());
        let (got, body) = error_of(resp).await;
        assert_eq!(got, status, "{model} {fault:?}: {body}");
        if !code.is_empty() {
            assert_eq!(body["error"]["code"], code, "{model} {fault:?}");
        }
        if let Fault::Status { retry_after_secs: Some(s), .. } = fault {
            assert_eq!(retry_after, Some(s.to_string()), "{model}: retry-after is passed on");
        }
        if status == 400 && code.is_empty() {
            let Fault::Status { message, .. } = &fault else { unreachable!() };
            assert_eq!(
                body["error"]["message"].as_str(),
                Some(message.as_str()),
                "the provider's own words for the caller's mistake"
            );
        }
    }
    // Credit exhausted at Anthropic is the gateway's problem, not the caller's.
    h.upstream.state.push_fault(
        Some("claude-sonnet-4-5"),
        status_fault(400, None, "Your credit balance is too low to access the Anthropic API.", None),
    );
    let (status, body) = error_of(h.chat(hello("claude-test")).await).await;
    assert_eq!((status, body["error"]["code"].as_str()), (502, Some("provider_quota_exhausted")));
}

#[tokio::test]
async fn in_band_stream_errors_fail_the_attempt_before_content_and_end_the_stream_after() {
    let h = Harness::start().await;
    // Right after message_start: nothing has reached the client, so it gets a status.
    h.upstream.state.push_fault(Some("claude-sonnet-4-5"), Fault::ErrorMidStream { after_chunks: 1 });
    let (status, body) = error_of(h.chat(streamed(hello("claude-test"))).await).await;
    assert_eq!((status, body["error"]["code"].as_str()), (503, Some("provider_overloaded")));
    // After content has been sent: an error event, and no [DONE].
    for (model, upstream) in [("claude-test", "claude-sonnet-4-5"), ("gemini-test", "gemini-2.5-flash")] {
        h.upstream.state.push_fault(Some(upstream), Fault::ErrorMidStream { after_chunks: 4 });
        let resp = h.chat(streamed(hello(model))).await;
        assert_eq!(resp.status(), 200);
        let (chunks, done) = payloads(&sse_events(resp).await);
        assert!(!done, "{model}");
        assert!(chunks.last().unwrap()["error"]["message"].is_string(), "{model}: {:?}", chunks.last());
    }
}

#[tokio::test]
async fn embeddings_honour_float_and_base64_for_openai_and_gemini() {
    let h = Harness::start().await;
    for model in ["embed-openai", "embed-gemini"] {
        let floats: Value = h
            .post("/v1/embeddings")
            .json(&json!({"model": model, "input": ["hello", "world"], "dimensions": 4}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(floats["object"], "list");
        assert_eq!(floats["model"], model);
        let v0: Vec<f64> =
            floats["data"][0]["embedding"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect();
        assert_eq!(v0.len(), 4, "{model}: dimensions honoured");
        assert!(floats["usage"]["prompt_tokens"].as_u64().unwrap() > 0);

        let b64: Value = h
            .post("/v1/embeddings")
            .json(&json!({"model": model, "input": ["hello", "world"], "dimensions": 4, "encoding_format": "base64"}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let bytes =
            base64::engine::general_purpose::STANDARD.decode(b64["data"][0]["embedding"].as_str().unwrap()).unwrap();
        let decoded: Vec<f64> =
            bytes.chunks_exact(4).map(|c| f64::from(f32::from_le_bytes(c.try_into().unwrap()))).collect();
        assert_eq!(decoded.len(), 4);
        for (a, b) in decoded.iter().zip(&v0) {
            assert!((a - b).abs() < 1e-6, "{model}: base64 decodes to the float vector");
        }
    }
    let (status, body) =
        error_of(h.post("/v1/embeddings").json(&json!({"model": "claude-test", "input": "x"})).send().await.unwrap())
            .await;
    assert_eq!((status, body["error"]["param"].as_str()), (400, Some("model")));
    let (status, body) =
        error_of(h.post("/v1/embeddings").json(&json!({"model": "embed-openai", "input": []})).send().await.unwrap())
            .await;
    assert_eq!((status, body["error"]["param"].as_str()), (400, Some("input")));
}

#[tokio::test]
async fn moderations_are_relayed() {
    let h = Harness::start().await;
    let body: Value = h
        .post("/v1/moderations")
        .json(&json!({"input": ["a kind word", "something forbidden"]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["model"], "omni-moderation-latest");
    assert_eq!(body["results"][0]["flagged"], false);
    assert_eq!(body["results"][1]["flagged"], true);
}

#[tokio::test]
async fn litellm_prefixes_reach_the_provider_made_from_their_preset() {
    let extra = r#"
[[providers]]
name = "local-vllm"
kind = "openai"
preset = "vllm"
base_url = "{base}"

[[providers]]
name = "my-ollama"
kind = "openai"
preset = "ollama"
base_url = "{base}"
"#;
    let h =
        crate::support::Harness::with(crate::support::Setup { extra: extra.to_owned(), ..Default::default() }).await;
    for (asked, provider, upstream) in [
        ("hosted_vllm/meta-llama/Llama-3.1-8B-Instruct", "local-vllm", "meta-llama/Llama-3.1-8B-Instruct"),
        ("ollama_chat/qwen2.5:7b", "my-ollama", "qwen2.5:7b"),
        ("ollama/llama3.2", "my-ollama", "llama3.2"),
        ("local-vllm/by-its-own-name", "local-vllm", "by-its-own-name"),
        ("vllm/a-preset-name-as-the-prefix", "local-vllm", "a-preset-name-as-the-prefix"),
    ] {
        let resp = h.chat(crate::support::hello(asked)).await;
        assert_eq!(resp.status(), 200, "{asked}");
        assert_eq!(crate::support::header(&resp, "x-switchyard-provider"), provider, "{asked}");
        assert_eq!(h.upstream.last_request().body["model"], upstream, "{asked}");
        // Keyless, as a local server is: no authorization header is invented.
        assert!(h.upstream.last_request().headers.get("authorization").is_none(), "{asked}");
    }
    // A prefix whose preset no provider was made from is an unknown model, not a guess.
    let resp = h.chat(crate::support::hello("together_ai/some-model")).await;
    assert_eq!(resp.status(), 404);
}
