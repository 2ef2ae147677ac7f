//! Gemini's front door, `/v1beta/models/{model}:generateContent`: Google's shapes in and out.

use serde_json::{Value, json};

use crate::support::{Harness, MASTER_KEY, sse_events};

fn generate(h: &Harness, model: &str, action: &str, body: Value) -> reqwest::RequestBuilder {
    h.client.post(h.url(&format!("/v1beta/models/{model}:{action}"))).header("x-goog-api-key", MASTER_KEY).json(&body)
}

fn ask() -> Value {
    json!({"systemInstruction": {"parts": [{"text": "Be brief."}]},
           "contents": [{"role": "user", "parts": [{"text": "Say hello"}]}],
           "generationConfig": {"maxOutputTokens": 200, "temperature": 0.2}})
}

#[tokio::test]
async fn generate_content_answers_in_geminis_shape_and_streams_the_same_text() {
    let h = Harness::start().await;
    let resp = generate(&h, "test-model", "generateContent", ask()).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let whole: Value = resp.json().await.unwrap();
    let c = &whole["candidates"][0];
    assert_eq!((c["content"]["role"].as_str(), c["finishReason"].as_str()), (Some("model"), Some("STOP")));
    let text = c["content"]["parts"][0]["text"].as_str().unwrap().to_owned();
    assert!(!text.is_empty());
    let u = &whole["usageMetadata"];
    assert_eq!(
        u["totalTokenCount"].as_u64(),
        Some(u["promptTokenCount"].as_u64().unwrap() + u["candidatesTokenCount"].as_u64().unwrap())
    );
    let sent = h.upstream.state.requests().pop().unwrap().body;
    assert_eq!(sent["messages"][0], json!({"role": "system", "content": "Be brief."}));
    assert_eq!((sent["max_tokens"].as_u64(), sent["temperature"].as_f64()), (Some(200), Some(0.2)));

    let resp = generate(&h, "test-model", "streamGenerateContent?alt=sse", ask()).send().await.unwrap();
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let events: Vec<Value> = sse_events(resp).await.iter().map(|e| serde_json::from_str(&e.data).unwrap()).collect();
    let streamed: String = events
        .iter()
        .flat_map(|e| e["candidates"][0]["content"]["parts"].as_array().cloned().unwrap_or_default())
        .filter_map(|p| p["text"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(streamed, text);
    let last = events.last().unwrap();
    assert_eq!(last["candidates"][0]["finishReason"], "STOP");
    assert!(last["usageMetadata"]["candidatesTokenCount"].as_u64().unwrap() > 0);
}

#[tokio::test]
async fn function_calls_and_responses_translate_both_ways_and_stream_whole() {
    let h = Harness::start().await;
    let mut body = ask();
    body["tools"] = json!([{"functionDeclarations": [{"name": "get_weather", "description": "Weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}]}]);
    body["toolConfig"] = json!({"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["get_weather"]}});
    let whole: Value =
        generate(&h, "test-model", "generateContent", body.clone()).send().await.unwrap().json().await.unwrap();
    let call = whole["candidates"][0]["content"]["parts"][0]["functionCall"].clone();
    assert_eq!(call["name"], "get_weather");
    assert!(call["args"]["city"].is_string(), "args is an object: {call}");
    let sent = h.upstream.state.requests().pop().unwrap().body;
    assert_eq!(sent["tool_choice"], json!({"type": "function", "function": {"name": "get_weather"}}));

    let resp = generate(&h, "test-model", "streamGenerateContent?alt=sse", body).send().await.unwrap();
    let events: Vec<Value> = sse_events(resp).await.iter().map(|e| serde_json::from_str(&e.data).unwrap()).collect();
    let calls: Vec<&Value> = events
        .iter()
        .flat_map(|e| e["candidates"][0]["content"]["parts"].as_array().into_iter().flatten())
        .filter_map(|p| p.get("functionCall"))
        .collect();
    assert_eq!(calls.len(), 1, "a streamed call arrives once, whole");
    assert_eq!(calls[0]["args"], call["args"]);

    let follow = json!({"contents": [
        {"role": "user", "parts": [{"text": "Weather in Paris?"}]},
        {"role": "model", "parts": [{"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}}]},
        {"role": "user", "parts": [{"functionResponse": {"name": "get_weather", "response": {"sky": "clear"}}}]}]});
    assert_eq!(generate(&h, "test-model", "generateContent", follow).send().await.unwrap().status(), 200);
    let sent = h.upstream.state.requests().pop().unwrap().body;
    let msgs = sent["messages"].as_array().unwrap();
    let id = msgs[1]["tool_calls"][0]["id"].as_str().unwrap();
    assert_eq!((msgs[2]["role"].as_str(), msgs[2]["tool_call_id"].as_str()), (Some("tool"), Some(id)));
    assert_eq!(serde_json::from_str::<Value>(msgs[2]["content"].as_str().unwrap()).unwrap(), json!({"sky": "clear"}));
}

#[tokio::test]
async fn gemini_errors_are_in_googles_shape_and_a_key_may_come_in_the_query() {
    let h = Harness::start().await;
    let by_query = h
        .client
        .post(h.url(&format!("/v1beta/models/test-model:generateContent?key={MASTER_KEY}")))
        .json(&ask())
        .send()
        .await
        .unwrap();
    assert_eq!(by_query.status(), 200);
    let cases = [
        (
            h.client
                .post(h.url("/v1beta/models/test-model:generateContent"))
                .header("x-goog-api-key", "nope")
                .json(&ask()),
            401,
            "UNAUTHENTICATED",
        ),
        (generate(&h, "no-such-model", "generateContent", ask()), 404, "NOT_FOUND"),
        (generate(&h, "test-model", "predict", ask()), 404, "NOT_FOUND"),
        (generate(&h, "test-model", "generateContent", json!({"contents": []})), 400, "INVALID_ARGUMENT"),
        (
            generate(
                &h,
                "test-model",
                "generateContent",
                json!({"contents": [{"role": "robot", "parts": [{"text": "x"}]}]}),
            ),
            400,
            "INVALID_ARGUMENT",
        ),
    ];
    for (req, status, name) in cases {
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), status);
        let body: Value = resp.json().await.unwrap();
        assert_eq!(
            (body["error"]["code"].as_u64(), body["error"]["status"].as_str()),
            (Some(u64::from(status)), Some(name)),
            "{body}"
        );
    }
}

#[tokio::test]
async fn a_gemini_request_to_a_gemini_model_passes_through_and_streams_as_a_json_array_by_default() {
    let h = Harness::start().await;
    let mut body = ask();
    body["safetySettings"] = json!([{"category": "HARM_CATEGORY_HARASSMENT", "threshold": "BLOCK_NONE"}]);
    body["generationConfig"]["topK"] = json!(32);
    body["generationConfig"]["candidateCount"] = json!(2);
    let resp = generate(&h, "gemini-test", "generateContent", body.clone()).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let whole: Value = resp.json().await.unwrap();
    assert_eq!(whole["modelVersion"], "gemini-test");
    assert_eq!(h.upstream.last_request().body, body, "the request reaches Gemini as the caller wrote it");

    // Without alt=sse, Google's default: one JSON array, elements as they are made.
    for model in ["gemini-test", "test-model"] {
        let resp = generate(&h, model, "streamGenerateContent", ask()).send().await.unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["content-type"], "application/json", "{model}");
        let text = resp.text().await.unwrap();
        assert!(text.starts_with('[') && text.ends_with(']'), "{model}: {text}");
        let frames: Vec<Value> = serde_json::from_str(&text).expect("a JSON array");
        assert!(frames.len() > 1, "{model}: {text}");
        assert_eq!(frames.last().unwrap()["candidates"][0]["finishReason"], "STOP");
    }
}

#[tokio::test]
async fn count_tokens_and_the_model_list_answer_in_googles_shape() {
    let h = Harness::start().await;
    let resp =
        generate(&h, "gemini-test", "countTokens", json!({"contents": [{"parts": [{"text": "The quick brown fox"}]}]}))
            .send()
            .await
            .unwrap();
    assert_eq!(resp.status(), 200);
    let count: Value = resp.json().await.unwrap();
    let total = count["totalTokens"].as_u64().unwrap();
    assert!((3..=12).contains(&total), "{count}");
    let wrapped = json!({"generateContentRequest": {"model": "models/gemini-test", "contents": [{"parts": [{"text": "The quick brown fox"}]}]}});
    let again: Value = generate(&h, "gemini-test", "countTokens", wrapped).send().await.unwrap().json().await.unwrap();
    assert_eq!(again["totalTokens"], total);

    let list: Value = h
        .client
        .get(h.url("/v1beta/models?pageSize=2"))
        .header("x-goog-api-key", MASTER_KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list["models"].as_array().unwrap().len(), 2);
    assert!(list["models"][0]["name"].as_str().unwrap().starts_with("models/"));
    let token = list["nextPageToken"].as_str().unwrap();
    let next: Value = h
        .client
        .get(h.url(&format!("/v1beta/models?pageSize=2&pageToken={token}")))
        .header("x-goog-api-key", MASTER_KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_ne!(next["models"][0]["name"], list["models"][0]["name"]);
    let one =
        h.client.get(h.url("/v1beta/models/gemini-test")).header("x-goog-api-key", MASTER_KEY).send().await.unwrap();
    assert_eq!(one.status(), 200);
    let one: Value = one.json().await.unwrap();
    assert_eq!(one["name"], "models/gemini-test");
    assert!(one["supportedGenerationMethods"].as_array().unwrap().contains(&json!("generateContent")));
    let missing = h.client.get(h.url("/v1beta/models/nope")).header("x-goog-api-key", MASTER_KEY).send().await.unwrap();
    assert_eq!(missing.status(), 404);
    let body: Value = missing.json().await.unwrap();
    assert_eq!(body["error"]["status"], "NOT_FOUND");
}
