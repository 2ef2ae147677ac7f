//! `POST /v1/responses` end to end: natively to a provider that speaks Responses (the fake, with the
//! capability on), translated to Anthropic and Gemini upstreams, streamed event by event, and the stored
//! responses behind `previous_response_id`, `item_reference`, `GET`, `DELETE` and `input_items`.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use serde_json::{Value, json};

use crate::support::{Harness, MASTER_KEY, Setup, error_of, sse_events};

/// A provider that speaks Responses natively (the fake, OpenAI-compatible with the capability on).
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
input_per_mtok = 1.0
output_per_mtok = 2.0
"#;

async fn harness() -> Harness {
    Harness::with(Setup { extra: NATIVE.into(), ..Setup::default() }).await
}

async fn create(h: &Harness, body: Value) -> (u16, Value) {
    let resp = h.post("/v1/responses").json(&body).send().await.unwrap();
    (resp.status().as_u16(), resp.json().await.unwrap())
}

fn output_text(response: &Value) -> String {
    response["output"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["type"] == "message")
        .flat_map(|i| i["content"].as_array().unwrap().iter())
        .filter_map(|p| p["text"].as_str())
        .collect()
}

/// The fields every response object carries, as the SDKs and Codex read them.
fn assert_response_shape(r: &Value, model: &str) {
    assert!(r["id"].as_str().unwrap().starts_with("resp_"), "{r}");
    assert_eq!(r["object"], "response");
    assert!(r["created_at"].is_u64());
    assert_eq!(r["model"], model, "the model as asked");
    for key in
        ["error", "incomplete_details", "instructions", "tools", "tool_choice", "parallel_tool_calls", "metadata"]
    {
        assert!(r.get(key).is_some(), "response lacks {key}: {r}");
    }
    let u = &r["usage"];
    let (input, output) = (u["input_tokens"].as_u64().unwrap(), u["output_tokens"].as_u64().unwrap());
    assert!(input > 0 && output > 0, "{u}");
    assert_eq!(u["total_tokens"].as_u64().unwrap(), input + output);
    assert!(
        u["input_tokens_details"]["cached_tokens"].is_u64() && u["output_tokens_details"]["reasoning_tokens"].is_u64()
    );
    for item in r["output"].as_array().unwrap() {
        assert!(item["id"].is_string(), "every output item has an id: {item}");
    }
}

#[tokio::test]
async fn a_response_is_served_natively_and_translated_to_anthropic_and_gemini() {
    let h = harness().await;
    for model in ["native-model", "claude-test", "gemini-test", "test-model"] {
        let (status, r) = create(&h, json!({"model": model, "input": "Say hello", "instructions": "Be brief."})).await;
        assert_eq!(status, 200, "{model}: {r}");
        assert_response_shape(&r, model);
        assert_eq!(r["status"], "completed");
        assert_eq!(r["instructions"], "Be brief.");
        assert!(!output_text(&r).is_empty(), "{model}: {r}");
    }
    // What each upstream was sent.
    let requests = h.upstream.state.requests();
    let native = requests.iter().find(|r| r.body["model"] == "native-upstream-id").unwrap();
    assert_eq!(native.body["store"], false, "the gateway keeps the conversation, not the provider");
    assert!(native.body["include"].as_array().unwrap().contains(&json!("reasoning.encrypted_content")));
    assert_eq!(native.body["instructions"], "Be brief.");
    assert_eq!(native.body["input"][0]["content"], "Say hello");
    let anthropic = requests.iter().find(|r| r.body["model"] == "claude-sonnet-4-5").unwrap();
    assert_eq!(anthropic.body["system"][0]["text"], "Be brief.");
    assert_eq!(anthropic.body["messages"][0]["content"][0]["text"], "Say hello");
    let gemini = requests.iter().find(|r| r.body.get("contents").is_some()).unwrap();
    assert_eq!(gemini.body["systemInstruction"]["parts"][0]["text"], "Be brief.");
    // One ledger row each, as for chat.
    let records = h.usage.wait_for(4).await;
    assert!(records.iter().all(|r| r.outcome == switchyard::usage::Outcome::Completed && r.prompt_counted));
}

#[tokio::test]
async fn a_streamed_response_is_the_whole_event_sequence_whichever_the_upstream() {
    let h = harness().await;
    for model in ["native-model", "claude-test", "gemini-test"] {
        let resp = h
            .post("/v1/responses")
            .json(&json!({"model": model, "input": "Say hello", "stream": true}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        assert!(resp.headers()["content-type"].to_str().unwrap().starts_with("text/event-stream"));
        let events = sse_events(resp).await;
        let data: Vec<Value> =
            events.iter().map(|e| serde_json::from_str(&e.data).expect("every frame is JSON")).collect();
        for (e, d) in events.iter().zip(&data) {
            assert_eq!(e.event.as_deref(), d["type"].as_str(), "the event line names the data's type");
        }
        let kinds: Vec<&str> = data.iter().map(|d| d["type"].as_str().unwrap()).collect();
        let sequence: Vec<u64> = data.iter().map(|d| d["sequence_number"].as_u64().unwrap()).collect();
        assert!(sequence.windows(2).all(|w| w[1] > w[0]), "{model}: sequence numbers rise: {sequence:?}");
        assert_eq!(&kinds[..2], ["response.created", "response.in_progress"], "{model}: {kinds:?}");
        let expected = [
            "response.output_item.added",
            "response.content_part.added",
            "response.output_text.delta",
            "response.output_text.done",
            "response.content_part.done",
            "response.output_item.done",
            "response.completed",
        ];
        let mut at = 0;
        for kind in &kinds {
            if at < expected.len() && *kind == expected[at] {
                at += 1;
            }
        }
        assert_eq!(at, expected.len(), "{model}: {kinds:?}");
        assert_eq!(*kinds.last().unwrap(), "response.completed");
        assert!(!events.iter().any(|e| e.data == "[DONE]"), "Responses streams have no [DONE]");
        let created = &data[0]["response"];
        assert_eq!((created["status"].as_str(), created["model"].as_str()), (Some("in_progress"), Some(model)));
        let deltas: String = data
            .iter()
            .filter(|d| d["type"] == "response.output_text.delta")
            .map(|d| d["delta"].as_str().unwrap())
            .collect();
        let done = data.iter().find(|d| d["type"] == "response.output_text.done").unwrap();
        assert_eq!(done["text"], deltas.as_str());
        let completed = &data.last().unwrap()["response"];
        assert_response_shape(completed, model);
        assert_eq!(completed["id"], created["id"]);
        assert_eq!(output_text(completed), deltas);
        // Stored before the last byte: the very next request finds it.
        let id = completed["id"].as_str().unwrap();
        let got = h.client.get(h.url(&format!("/v1/responses/{id}"))).bearer_auth(MASTER_KEY).send().await.unwrap();
        assert_eq!(got.status(), 200);
        assert_eq!(output_text(&got.json::<Value>().await.unwrap()), deltas);
    }
}

#[tokio::test]
async fn tool_calls_come_back_as_function_call_items_and_their_outputs_continue_the_conversation() {
    let h = harness().await;
    let tools = json!([{"type": "function", "name": "get_weather", "description": "Weather", "strict": true,
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}]);
    for model in ["claude-test", "native-model", "gemini-test"] {
        let resp = h
            .post("/v1/responses")
            .json(&json!({"model": model, "input": "Weather in Paris?", "tools": tools, "stream": true}))
            .send()
            .await
            .unwrap();
        let data: Vec<Value> = sse_events(resp).await.iter().map(|e| serde_json::from_str(&e.data).unwrap()).collect();
        let added = data.iter().find(|d| d["type"] == "response.output_item.added").unwrap();
        assert_eq!(
            (added["item"]["type"].as_str(), added["item"]["arguments"].as_str()),
            (Some("function_call"), Some("")),
            "{model}"
        );
        let args: String = data
            .iter()
            .filter(|d| d["type"] == "response.function_call_arguments.delta")
            .map(|d| d["delta"].as_str().unwrap())
            .collect();
        let done = data.iter().find(|d| d["type"] == "response.output_item.done").unwrap();
        let call = &done["item"];
        assert_eq!(
            (call["type"].as_str(), call["name"].as_str(), call["status"].as_str()),
            (Some("function_call"), Some("get_weather"), Some("completed"))
        );
        assert_eq!(call["arguments"], args.as_str(), "{model}: the deltas add up to the arguments");
        let parsed: Value = serde_json::from_str(&args).unwrap();
        assert!(parsed["city"].is_string());
        let completed = &data.last().unwrap()["response"];
        assert_eq!(data.last().unwrap()["type"], "response.completed");
        assert_eq!(completed["output"][0]["call_id"], call["call_id"]);

        // The tool's output, continuing from the stored response.
        let (status, next) = create(
            &h,
            json!({"model": model, "previous_response_id": completed["id"], "tools": tools,
                   "input": [{"type": "function_call_output", "call_id": call["call_id"], "output": "{\"temp_c\": 21}"}]}),
        )
        .await;
        assert_eq!(status, 200, "{model}: {next}");
        assert!(!output_text(&next).is_empty(), "after a tool result the fake answers in text");
    }
    // What the Anthropic upstream received on the second turn: the call and its result, paired.
    let second =
        h.upstream.state.requests().into_iter().filter(|r| r.body["model"] == "claude-sonnet-4-5").nth(1).unwrap();
    let messages = second.body["messages"].as_array().unwrap();
    assert_eq!(messages[0]["content"][0]["text"], "Weather in Paris?");
    assert_eq!(messages[1]["content"][0]["type"], "tool_use");
    assert_eq!(messages[2]["content"][0]["type"], "tool_result");
    assert_eq!(messages[2]["content"][0]["tool_use_id"], messages[1]["content"][0]["id"]);
    assert_eq!(messages[2]["content"][0]["content"], "{\"temp_c\": 21}");
}

#[tokio::test]
async fn previous_response_id_continues_a_conversation_on_another_provider() {
    let h = harness().await;
    let (_, first) = create(
        &h,
        json!({"model": "gemini-test", "instructions": "Only the first turn's.", "input": "My name is Ada."}),
    )
    .await;
    let first_text = output_text(&first);
    let (status, second) =
        create(&h, json!({"model": "claude-test", "input": "What is my name?", "previous_response_id": first["id"]}))
            .await;
    assert_eq!(status, 200, "{second}");
    assert_eq!(second["previous_response_id"], first["id"]);
    let sent = h.upstream.last_request().body;
    assert!(sent.get("system").is_none(), "an earlier turn's instructions are not carried: {sent}");
    let messages = sent["messages"].as_array().unwrap();
    let texts: Vec<String> = messages
        .iter()
        .map(|m| m["content"].as_array().unwrap().iter().filter_map(|b| b["text"].as_str()).collect())
        .collect();
    assert_eq!(texts, ["My name is Ada.".to_owned(), first_text, "What is my name?".to_owned()]);
    assert_eq!((messages[0]["role"].as_str(), messages[1]["role"].as_str()), (Some("user"), Some("assistant")));

    // A third turn natively: the whole conversation goes upstream as items, the gateway's ids resolved.
    let (status, third) =
        create(&h, json!({"model": "native-model", "input": "And again?", "previous_response_id": second["id"]})).await;
    assert_eq!(status, 200, "{third}");
    let input = h.upstream.last_request().body["input"].as_array().unwrap().clone();
    assert_eq!(input.len(), 5, "{input:?}");
    assert!(h.upstream.last_request().body.get("previous_response_id").is_none());
    assert_eq!(input[4]["content"], "And again?");
}

#[tokio::test]
async fn item_references_resolve_to_stored_items_and_unknown_ones_are_refused() {
    let h = harness().await;
    let (_, first) = create(&h, json!({"model": "native-model", "input": "First question"})).await;
    let message_id = first["output"][0]["id"].as_str().unwrap();
    let (status, second) = create(
        &h,
        json!({"model": "claude-test", "input": [
            {"role": "user", "content": [{"type": "input_text", "text": "First question"}]},
            {"type": "item_reference", "id": message_id},
            {"role": "user", "content": [{"type": "input_text", "text": "Second question"}]}]}),
    )
    .await;
    assert_eq!(status, 200, "{second}");
    let messages = h.upstream.last_request().body["messages"].as_array().unwrap().clone();
    assert_eq!(messages[1]["role"], "assistant");
    assert_eq!(messages[1]["content"][0]["text"], output_text(&first).as_str());

    let resp = h
        .post("/v1/responses")
        .json(&json!({"model": "claude-test", "input": [{"type": "item_reference", "id": "msg_nowhere"}]}))
        .send()
        .await
        .unwrap();
    let (status, body) = error_of(resp).await;
    assert_eq!((status, body["error"]["param"].as_str()), (400, Some("input[0].id")));
}

async fn org_key(h: &Harness, name: &str) -> String {
    let org: Value = h
        .client
        .post(h.url("/admin/v1/organizations"))
        .bearer_auth(MASTER_KEY)
        .json(&json!({"name": name}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let key: Value = h
        .client
        .post(h.url("/admin/v1/keys"))
        .bearer_auth(MASTER_KEY)
        .json(&json!({"organization_id": org["id"], "plan": "unlimited", "name": "t"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    key["key"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn another_organisations_response_is_a_404_and_never_its_content() {
    let h = harness().await;
    let (alice, bob) = (org_key(&h, "Alice Ltd").await, org_key(&h, "Bob Ltd").await);
    let made: Value = h
        .client
        .post(h.url("/v1/responses"))
        .bearer_auth(&alice)
        .json(&json!({"model": "native-model", "input": "a secret plan"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = made["id"].as_str().unwrap();
    let item = made["output"][0]["id"].as_str().unwrap();
    let as_bob = |method: reqwest::Method, path: String| h.client.request(method, h.url(&path)).bearer_auth(&bob);
    for (method, path) in [
        (reqwest::Method::GET, format!("/v1/responses/{id}")),
        (reqwest::Method::GET, format!("/v1/responses/{id}/input_items")),
        (reqwest::Method::DELETE, format!("/v1/responses/{id}")),
    ] {
        let resp = as_bob(method, path).send().await.unwrap();
        let text = resp.text().await.unwrap();
        assert!(text.contains("response_not_found") && !text.contains("secret"), "{text}");
    }
    let resp = as_bob(reqwest::Method::POST, "/v1/responses".into())
        .json(&json!({"model": "native-model", "input": "continue", "previous_response_id": id}))
        .send()
        .await
        .unwrap();
    let (status, body) = error_of(resp).await;
    assert_eq!((status, body["error"]["code"].as_str()), (400, Some("previous_response_not_found")));
    let resp = as_bob(reqwest::Method::POST, "/v1/responses".into())
        .json(&json!({"model": "native-model", "input": [{"type": "item_reference", "id": item}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    // Alice still has it.
    let got = h.client.get(h.url(&format!("/v1/responses/{id}"))).bearer_auth(&alice).send().await.unwrap();
    assert_eq!(got.status(), 200);
}

#[tokio::test]
async fn store_false_keeps_nothing_and_a_later_reference_to_it_is_refused() {
    let h = harness().await;
    let (_, made) = create(&h, json!({"model": "claude-test", "input": "hello", "store": false})).await;
    assert_eq!(made["store"], false);
    let id = made["id"].as_str().unwrap();
    let got = h.client.get(h.url(&format!("/v1/responses/{id}"))).bearer_auth(MASTER_KEY).send().await.unwrap();
    assert_eq!(got.status(), 404);
    let (status, body) = create(&h, json!({"model": "claude-test", "input": "more", "previous_response_id": id})).await;
    assert_eq!((status, body["error"]["param"].as_str()), (400, Some("previous_response_id")));
}

#[tokio::test]
async fn stored_responses_expire_after_the_retention_and_are_swept() {
    // The gateway's clock starts 31 days ago, so the response made now is already expired when the clock
    // reaches today: the sweep then removes only it, whatever other tests share the database.
    const DAY: i64 = 86_400_000;
    let now = Arc::new(AtomicI64::new(switchyard::clock::now_ms() - 31 * DAY));
    let clock = now.clone();
    let h = Harness::with(Setup {
        extra: format!("{NATIVE}\n[responses]\nretention_days = 30\n"),
        clock: Some(Arc::new(move || clock.load(Ordering::SeqCst))),
        ..Setup::default()
    })
    .await;
    let (_, made) = create(&h, json!({"model": "native-model", "input": "keep me"})).await;
    let id = made["id"].as_str().unwrap().to_owned();
    let get = || h.client.get(h.url(&format!("/v1/responses/{id}"))).bearer_auth(MASTER_KEY).send();
    assert_eq!(get().await.unwrap().status(), 200);
    now.fetch_add(29 * DAY, Ordering::SeqCst);
    assert_eq!(get().await.unwrap().status(), 200, "within the retention");
    now.fetch_add(2 * DAY, Ordering::SeqCst);
    assert_eq!(get().await.unwrap().status(), 404, "expired responses are never served");
    // The row itself is removed by the sweep once it has been written (on a shared Postgres, another
    // test's gateway, sweeping with the real clock, may remove it first: the row is gone either way).
    let store = &h.gateway.state.store;
    let mut seen = false;
    for _ in 0..100 {
        if store.response("", &id, 0).await.unwrap().is_some() {
            seen = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    h.gateway.state.responses.sweep().await.unwrap();
    assert!(store.response("", &id, 0).await.unwrap().is_none());
    if crate::support::database_url().starts_with("sqlite") {
        assert!(seen, "the row was written before the sweep removed it");
    }
}

#[tokio::test]
async fn input_items_are_listed_newest_first_with_pagination() {
    let h = harness().await;
    let input: Vec<Value> = (0..5).map(|i| json!({"role": "user", "content": format!("part {i}")})).collect();
    let (_, made) = create(&h, json!({"model": "native-model", "input": input})).await;
    let id = made["id"].as_str().unwrap();
    let list = |query: &str| {
        let url = h.url(&format!("/v1/responses/{id}/input_items{query}"));
        let req = h.client.get(url).bearer_auth(MASTER_KEY);
        async move { req.send().await.unwrap().json::<Value>().await.unwrap() }
    };
    let texts = |page: &Value| -> Vec<String> {
        page["data"].as_array().unwrap().iter().map(|i| i["content"][0]["text"].as_str().unwrap().to_owned()).collect()
    };
    let all = list("").await;
    assert_eq!(all["object"], "list");
    assert_eq!(texts(&all), ["part 4", "part 3", "part 2", "part 1", "part 0"]);
    assert_eq!(all["data"][0]["type"], "message");
    assert_eq!(all["data"][0]["content"][0]["type"], "input_text");
    let first = list("?limit=2&order=asc").await;
    assert_eq!(
        (texts(&first), first["has_more"].as_bool()),
        (vec!["part 0".to_owned(), "part 1".to_owned()], Some(true))
    );
    let next = list(&format!("?limit=2&order=asc&after={}", first["last_id"].as_str().unwrap())).await;
    assert_eq!(texts(&next), ["part 2", "part 3"]);
    let last = list(&format!("?limit=2&order=asc&after={}", next["last_id"].as_str().unwrap())).await;
    assert_eq!((texts(&last), last["has_more"].as_bool()), (vec!["part 4".to_owned()], Some(false)));
}

#[tokio::test]
async fn a_native_failure_before_content_falls_back_to_a_translated_provider() {
    let h = harness().await;
    h.upstream.state.push_fault(Some("native-upstream-id"), switchyard::fake::Fault::status(503));
    let resp = h
        .post("/v1/responses")
        .json(&json!({"model": "native-model", "models": ["claude-test"], "input": "hi", "stream": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-switchyard-provider"], "anthropic");
    assert!(resp.headers()["x-switchyard-attempts"].to_str().unwrap().contains("native-model=503"));
    let data: Vec<Value> = sse_events(resp).await.iter().map(|e| serde_json::from_str(&e.data).unwrap()).collect();
    assert_eq!(data.iter().filter(|d| d["type"] == "response.created").count(), 1, "one stream, one start");
    assert_eq!(data.last().unwrap()["type"], "response.completed");
}

#[tokio::test]
async fn a_stream_that_fails_after_it_started_ends_with_response_failed() {
    let h = harness().await;
    for model in ["claude-test", "native-model"] {
        h.upstream.state.push_fault(None, switchyard::fake::Fault::ErrorMidStream { after_chunks: 6 });
        let resp =
            h.post("/v1/responses").json(&json!({"model": model, "input": "hi", "stream": true})).send().await.unwrap();
        let data: Vec<Value> = sse_events(resp).await.iter().map(|e| serde_json::from_str(&e.data).unwrap()).collect();
        let last = data.last().unwrap();
        assert_eq!(last["type"], "response.failed", "{model}: {data:?}");
        assert_eq!(last["response"]["status"], "failed");
        assert!(last["response"]["error"]["code"].is_string());
        let sequence: Vec<u64> = data.iter().map(|d| d["sequence_number"].as_u64().unwrap()).collect();
        assert!(sequence.windows(2).all(|w| w[1] > w[0]), "{model}: {sequence:?}");
    }
}

#[tokio::test]
async fn what_a_translated_model_cannot_honour_is_refused_by_name() {
    let h = harness().await;
    for (body, param) in [
        (
            json!({"model": "claude-test", "input": "hi", "tools": [{"type": "web_search"}], "tool_choice": {"type": "web_search"}}),
            "tool_choice",
        ),
        (json!({"model": "claude-test", "input": "hi", "background": true}), "background"),
        (json!({"model": "gemini-test", "input": [{"type": "computer_call", "id": "cu_1"}]}), "input[0]"),
    ] {
        let (status, err) = create(&h, body).await;
        assert_eq!((status, err["error"]["param"].as_str()), (400, Some(param)), "{err}");
    }
    // Offered hosted tools are simply not given to another provider's model.
    let (status, _) =
        create(&h, json!({"model": "claude-test", "input": "hi", "tools": [{"type": "web_search"}]})).await;
    assert_eq!(status, 200);
    assert!(h.upstream.last_request().body.get("tools").is_none());
}

#[tokio::test]
async fn json_schema_output_and_custom_tools_work_through_a_translated_model() {
    let h = harness().await;
    let format = json!({"format": {"type": "json_schema", "name": "person", "strict": true,
        "schema": {"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"}}, "required": ["name", "age"]}}});
    let (status, r) = create(&h, json!({"model": "claude-test", "input": "A person", "text": format})).await;
    assert_eq!(status, 200, "{r}");
    let person: Value = serde_json::from_str(&output_text(&r)).expect("the output is JSON");
    assert!(person["name"].is_string() && person["age"].is_number());
    assert_eq!(r["text"]["format"], format["format"], "the format is echoed");

    let tools = json!([{"type": "custom", "name": "apply_patch", "description": "Apply a patch"}]);
    let (status, r) = create(&h, json!({"model": "claude-test", "input": "Patch it", "tools": tools})).await;
    assert_eq!(status, 200, "{r}");
    let call = &r["output"][0];
    assert_eq!((call["type"].as_str(), call["name"].as_str()), (Some("custom_tool_call"), Some("apply_patch")), "{r}");
    assert!(call["input"].is_string() && call["call_id"].is_string());
}

#[tokio::test]
async fn encrypted_reasoning_goes_back_only_to_the_provider_that_made_it() {
    let second = r#"
[[providers]]
name = "native2"
kind = "openai"
base_url = "{base}"
api_key_env = "TEST_UPSTREAM_KEY"
quirks = { responses = true }

[[models]]
name = "other-native"
provider = "native2"
upstream = "other-upstream-id"
"#;
    let h = Harness::with(Setup { extra: format!("{NATIVE}{second}"), ..Setup::default() }).await;
    let (status, first) =
        create(&h, json!({"model": "native-model", "input": "Think first.", "reasoning": {"effort": "medium"}})).await;
    assert_eq!(status, 200, "{first}");
    let reasoning = first["output"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["type"] == "reasoning")
        .expect("a reasoning item")
        .clone();
    assert!(reasoning.get("encrypted_content").is_none(), "not shown to a caller that did not ask: {reasoning}");
    let reasoning_sent = |h: &Harness| -> Vec<Value> {
        let input = h.upstream.last_request().body["input"].as_array().unwrap().clone();
        input.into_iter().filter(|i| i["type"] == "reasoning").collect()
    };
    // The same provider gets it back, encrypted, from the store.
    let (status, _) =
        create(&h, json!({"model": "native-model", "input": "Go on.", "previous_response_id": first["id"]})).await;
    assert_eq!(status, 200);
    let sent = reasoning_sent(&h);
    assert_eq!(sent.len(), 1);
    assert!(sent[0]["encrypted_content"].is_string(), "{sent:?}");
    // Another provider could not read it: it is left out.
    let (status, _) =
        create(&h, json!({"model": "other-native", "input": "Go on.", "previous_response_id": first["id"]})).await;
    assert_eq!(status, 200);
    assert!(reasoning_sent(&h).is_empty());
    // A caller that sends the output back itself (`input += output`) gets the stored, encrypted copy used.
    let mut input = vec![json!({"role": "user", "content": "Think first."})];
    input.extend(first["output"].as_array().unwrap().iter().cloned());
    input.push(json!({"role": "user", "content": "Go on."}));
    let (status, _) = create(&h, json!({"model": "native-model", "input": input.clone(), "store": false})).await;
    assert_eq!(status, 200);
    let sent = reasoning_sent(&h);
    assert_eq!((sent.len(), sent[0]["id"].as_str()), (1, reasoning["id"].as_str()));
    assert!(sent[0]["encrypted_content"].is_string());
    // A model of another protocol gets the conversation without it.
    let (status, _) = create(&h, json!({"model": "claude-test", "input": input})).await;
    assert_eq!(status, 200);
    assert_eq!(h.upstream.last_request().body["messages"].as_array().unwrap().len(), 3);
}

#[tokio::test]
async fn item_references_are_bounded() {
    let h = harness().await;
    let input: Vec<Value> = (0..1_025).map(|i| json!({"type": "item_reference", "id": format!("msg_{i}")})).collect();
    let (status, err) = create(&h, json!({"model": "claude-test", "input": input})).await;
    assert_eq!((status, err["error"]["param"].as_str()), (400, Some("input")));
}
