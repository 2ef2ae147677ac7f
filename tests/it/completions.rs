//! `POST /v1/completions` end to end: natively to a provider that serves completions, through chat to
//! one that does not (Anthropic here), whole and streamed.

use serde_json::{Value, json};

use crate::support::{Harness, Setup, payloads, sse_events};

const NATIVE: &str = r#"
[[providers]]
name = "native"
kind = "openai"
base_url = "{base}"
api_key_env = "TEST_UPSTREAM_KEY"
quirks = { responses = true, completions = true }

[[models]]
name = "native-model"
provider = "native"
upstream = "native-upstream-id"
"#;

async fn harness() -> Harness {
    Harness::with(Setup { extra: NATIVE.into(), ..Setup::default() }).await
}

async fn complete(h: &Harness, body: Value) -> (u16, Value) {
    let resp = h.post("/v1/completions").json(&body).send().await.unwrap();
    (resp.status().as_u16(), resp.json().await.unwrap())
}

#[tokio::test]
async fn a_completion_is_served_natively_and_through_chat() {
    let h = harness().await;
    for model in ["native-model", "claude-test", "gemini-test"] {
        let (status, c) = complete(&h, json!({"model": model, "prompt": "Once upon a time"})).await;
        assert_eq!(status, 200, "{model}: {c}");
        assert_eq!(c["object"], "text_completion");
        assert_eq!(c["model"], model);
        let choice = &c["choices"][0];
        assert!(!choice["text"].as_str().unwrap().is_empty());
        assert_eq!((choice["index"].as_u64(), choice["logprobs"].is_null()), (Some(0), true));
        assert!(choice["finish_reason"].is_string());
        assert!(
            c["usage"]["prompt_tokens"].as_u64().unwrap() > 0 && c["usage"]["completion_tokens"].as_u64().unwrap() > 0
        );
    }
    let requests = h.upstream.state.requests();
    let native = requests.iter().find(|r| r.body["model"] == "native-upstream-id").unwrap();
    assert_eq!(native.body["prompt"], "Once upon a time", "passed through as the caller wrote it");
    let anthropic = requests.iter().find(|r| r.body["model"] == "claude-sonnet-4-5").unwrap();
    assert_eq!(anthropic.body["messages"][0]["content"][0]["text"], "Once upon a time");
    assert_eq!(anthropic.body["max_tokens"], 16, "OpenAI's default for completions");
}

#[tokio::test]
async fn several_prompts_and_n_give_choices_in_openais_index_order_each_call_billed() {
    let h = harness().await;
    let (status, c) =
        complete(&h, json!({"model": "claude-test", "prompt": ["alpha", "beta"], "n": 2, "max_tokens": 5})).await;
    assert_eq!(status, 200, "{c}");
    let indices: Vec<u64> = c["choices"].as_array().unwrap().iter().map(|ch| ch["index"].as_u64().unwrap()).collect();
    assert_eq!(indices, [0, 1, 2, 3]);
    let calls: Vec<Value> = h.upstream.state.requests().into_iter().map(|r| r.body).collect();
    assert_eq!(calls.len(), 4, "one call per prompt and choice, Anthropic returning one choice each");
    assert_eq!(calls.iter().filter(|b| b["messages"][0]["content"][0]["text"] == "alpha").count(), 2);
    // The ledger's row sums every call.
    let record = h.usage.wait_for(1).await.pop().unwrap();
    assert_eq!(record.prompt_tokens, c["usage"]["prompt_tokens"].as_u64().unwrap());
    assert!(record.prompt_tokens >= 4, "four calls' prompts");
}

#[tokio::test]
async fn a_streamed_completion_ends_with_done_and_usage_only_when_asked() {
    let h = harness().await;
    for model in ["native-model", "claude-test"] {
        for include_usage in [false, true] {
            let mut body = json!({"model": model, "prompt": "Hello", "stream": true, "max_tokens": 6});
            if include_usage {
                body["stream_options"] = json!({"include_usage": true});
            }
            let resp = h.post("/v1/completions").json(&body).send().await.unwrap();
            assert_eq!(resp.status(), 200);
            let (chunks, done) = payloads(&sse_events(resp).await);
            assert!(done, "{model}: ends with [DONE]");
            assert!(chunks.iter().all(|c| c["object"] == "text_completion"));
            let text: String = chunks
                .iter()
                .flat_map(|c| c["choices"].as_array().unwrap())
                .filter_map(|ch| ch["text"].as_str())
                .collect();
            assert!(!text.is_empty());
            assert!(
                chunks.iter().any(|c| c["choices"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|ch| ch["finish_reason"].is_string()))
            );
            assert_eq!(chunks.iter().any(|c| c.get("usage").is_some_and(|u| !u.is_null())), include_usage, "{model}");
        }
    }
}

#[tokio::test]
async fn what_chat_cannot_honour_is_refused_by_name_and_n_is_capped() {
    let h = harness().await;
    for (extra, param) in [
        (json!({"echo": true}), "echo"),
        (json!({"logprobs": 2}), "logprobs"),
        (json!({"suffix": "end"}), "suffix"),
        (json!({"best_of": 3}), "best_of"),
        (json!({"prompt": [1, 2, 3]}), "prompt"),
    ] {
        let mut body = json!({"model": "claude-test", "prompt": "hi"});
        body.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        let (status, err) = complete(&h, body.clone()).await;
        assert_eq!((status, err["error"]["param"].as_str()), (400, Some(param)), "{err}");
        // A provider that serves completions takes them as they are.
        body["model"] = json!("native-model");
        if param != "prompt" {
            assert_eq!(complete(&h, body).await.0, 200, "{param}");
        }
    }
    let (status, err) = complete(&h, json!({"model": "native-model", "prompt": "hi", "n": 17})).await;
    assert_eq!((status, err["error"]["param"].as_str()), (400, Some("n")));
    let (status, _) = complete(&h, json!({"model": "native-model"})).await;
    assert_eq!(status, 400);
}
