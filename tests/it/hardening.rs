//! Ambiguous and oversized input, refused clearly: repeated credentials, smuggling-shaped framing,
//! oversized headers (raw HTTP, so no client library normalises what is tested), and the bounds inside
//! bodies on every door, each named in the caller's dialect. None of them reaches the provider.

use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::{Harness, MASTER_KEY, Setup, error_of, hello};

/// Sends `request` as it is and reads until the server closes the connection.
async fn raw(h: &Harness, request: &str) -> String {
    let mut stream = TcpStream::connect(h.gateway.addr).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut out))
        .await
        .expect("the server closed the connection")
        .ok();
    String::from_utf8_lossy(&out).into_owned()
}

fn body_of(answer: &str) -> Value {
    let body = answer.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or_default();
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {answer}"))
}

const CHAT: &str = r#"{"model":"test-model","messages":[{"role":"user","content":"hi"}]}"#;

fn post(path: &str, headers: &str, body: &str) -> String {
    format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nConnection: close\r\n{headers}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

#[tokio::test]
async fn a_credential_header_given_twice_is_refused_whatever_it_holds() {
    let h = Harness::start().await;
    let good = raw(&h, &post("/v1/chat/completions", &format!("Authorization: Bearer {MASTER_KEY}\r\n"), CHAT)).await;
    assert!(good.starts_with("HTTP/1.1 200"), "{good}");
    for headers in [
        format!("Authorization: Bearer {MASTER_KEY}\r\nAuthorization: Bearer sk-bogus\r\n"),
        format!("Authorization: Bearer sk-bogus\r\nAuthorization: Bearer {MASTER_KEY}\r\n"),
        format!("Authorization: Bearer {MASTER_KEY}\r\nAuthorization: Bearer {MASTER_KEY}\r\n"),
        format!("x-api-key: {MASTER_KEY}\r\nx-api-key: {MASTER_KEY}\r\n"),
        format!("api-key: {MASTER_KEY}\r\napi-key: other\r\n"),
        format!("Authorization: Bearer {MASTER_KEY}\r\nx-api-key: sk-other\r\n"),
    ] {
        let answer = raw(&h, &post("/v1/chat/completions", &headers, CHAT)).await;
        assert!(answer.starts_with("HTTP/1.1 400"), "{headers}: {answer}");
        assert_eq!(body_of(&answer)["error"]["code"], "conflicting_api_keys", "{answer}");
    }
    // On the Anthropic door, in Anthropic's shape; on the admin API too.
    let twice = format!("x-api-key: {MASTER_KEY}\r\nx-api-key: {MASTER_KEY}\r\n");
    let answer =
        raw(&h, &post("/v1/messages", &twice, r#"{"model":"claude-test","max_tokens":5,"messages":[]}"#)).await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert_eq!(body_of(&answer)["type"], "error", "{answer}");
    assert!(body_of(&answer)["error"]["message"].as_str().unwrap().contains("x-api-key"), "{answer}");
    let admin = format!(
        "GET /admin/v1/keys HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer {MASTER_KEY}\r\nAuthorization: Bearer {MASTER_KEY}\r\n\r\n"
    );
    assert!(raw(&h, &admin).await.starts_with("HTTP/1.1 400"));
    assert_eq!(h.upstream.state.requests().len(), 1, "only the unambiguous request was served");
}

#[tokio::test]
async fn framing_two_parsers_could_read_differently_is_refused_and_the_connection_closed() {
    let h = Harness::start().await;
    let auth = format!("Authorization: Bearer {MASTER_KEY}\r\n");
    let chunked = |te: &str| {
        // A valid chunked body, then a second request on the same connection that must never be served.
        format!(
            "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n{auth}{te}\r\n{:x}\r\n{CHAT}\r\n0\r\n\r\nGET /v1/models HTTP/1.1\r\nHost: x\r\n{auth}\r\n",
            CHAT.len()
        )
    };
    let plain = raw(&h, &chunked("Transfer-Encoding: chunked\r\nConnection: close\r\n")).await;
    assert!(plain.starts_with("HTTP/1.1 200"), "one chunked framing is fine: {plain}");
    for te in [
        "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
        "Transfer-Encoding: chunked, chunked\r\n",
        "Transfer-Encoding: gzip, chunked\r\n",
        "Transfer-Encoding: identity\r\nTransfer-Encoding: chunked\r\n",
    ] {
        let answer = raw(&h, &chunked(te)).await;
        assert!(answer.starts_with("HTTP/1.1 400"), "{te:?}: {answer}");
        assert!(answer.to_ascii_lowercase().contains("connection: close"), "{answer}");
        assert_eq!(answer.matches("HTTP/1.1 ").count(), 1, "nothing after the refusal is served: {answer}");
    }
    // hyper's own refusal stays a refusal.
    let answer = raw(&h, &chunked("Transfer-Encoding: xchunked\r\n")).await;
    assert!(answer.is_empty() || answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.matches("HTTP/1.1 ").count() <= 1, "{answer}");
    // Transfer-Encoding with Content-Length (hyper hides the length from the service): the length is
    // ignored, as RFC 9112 says, and the connection is closed after the answer, so what a proxy reading
    // the length would take for the next request is never read as one.
    for te in
        ["Transfer-Encoding: chunked\r\nContent-Length: 3\r\n", "Content-Length: 3\r\nTransfer-Encoding: chunked\r\n"]
    {
        let answer = raw(&h, &chunked(te)).await;
        assert_eq!(answer.matches("HTTP/1.1 ").count(), 1, "{te:?}: {answer}");
    }
    assert_eq!(h.upstream.state.requests().len(), 3);
}

#[tokio::test]
async fn oversized_headers_get_431_in_the_doors_dialect() {
    let h = Harness::start().await;
    let auth = format!("Authorization: Bearer {MASTER_KEY}\r\n");
    let big = |n: usize| format!("X-Big: {}\r\n", "a".repeat(n));
    let answer = raw(&h, &post("/v1/chat/completions", &format!("{auth}{}", big(100 * 1024)), CHAT)).await;
    assert!(answer.starts_with("HTTP/1.1 431"), "{}", &answer[..answer.len().min(300)]);
    let answer = raw(&h, &post("/v1/chat/completions", &format!("{auth}{}", big(20 * 1024)), CHAT)).await;
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
    let e = body_of(&answer);
    assert_eq!(e["error"]["code"], "header_too_large");
    assert!(e["error"]["message"].as_str().unwrap().contains("x-big"), "{e}");
    // Many headers, each within bounds, over the block's limit.
    let many: String = (0..6).map(|i| format!("X-Part-{i}: {}\r\n", "b".repeat(15 * 1024))).collect();
    let answer = raw(&h, &post("/v1beta/models/gemini-test:generateContent", &format!("{auth}{many}"), "{}")).await;
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
    assert_eq!(body_of(&answer)["error"]["status"], "INVALID_ARGUMENT", "Gemini's shape: {answer}");
    let answer = raw(&h, &post("/v1/chat/completions", &format!("{auth}{}", big(8 * 1024)), CHAT)).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "an 8 KiB header is fine: {answer}");
}

#[tokio::test]
async fn header_limits_are_the_operators() {
    let h = Harness::with(Setup {
        server_extra: "max_header_bytes = 2048\nmax_header_block_bytes = 4096".into(),
        ..Setup::default()
    })
    .await;
    let auth = format!("Authorization: Bearer {MASTER_KEY}\r\n");
    let answer = raw(&h, &post("/v1/chat/completions", &format!("{auth}X-Big: {}\r\n", "a".repeat(3000)), CHAT)).await;
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
    let answer = raw(&h, &post("/v1/chat/completions", &format!("{auth}X-Big: {}\r\n", "a".repeat(1500)), CHAT)).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

fn tools(n: usize, schema: Value) -> Value {
    (0..n)
        .map(|i| json!({"type": "function", "function": {"name": format!("f{i}"), "parameters": schema}}))
        .collect::<Vec<_>>()
        .into()
}

fn stops(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("s{i}")).collect()
}

fn big_schema(bytes: usize) -> Value {
    json!({"type": "object", "description": "d".repeat(bytes), "properties": {}})
}

/// Posts `body` to `path` and returns the status and the `param` and message, whatever the dialect.
async fn refusal(h: &Harness, path: &str, body: Value) -> (u16, String, String) {
    let resp = h.post(path).json(&body).send().await.unwrap();
    let status = resp.status().as_u16();
    let e: Value = resp.json().await.unwrap();
    let param = e["error"]["param"].as_str().or(e["error"]["details"][0]["fieldViolations"][0]["field"].as_str());
    (status, param.unwrap_or_default().to_owned(), e["error"]["message"].as_str().unwrap_or_default().to_owned())
}

#[tokio::test]
async fn bounds_inside_a_chat_body_are_named_in_param() {
    let h = Harness::start().await;
    let chat = |extra: Value| {
        let mut body = hello("test-model");
        body.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        body
    };
    let cases = [
        (json!({"n": 1000}), "n"),
        (json!({"n": 0}), "n"),
        (json!({"tools": tools(129, json!({"type": "object"}))}), "tools"),
        (json!({"tools": tools(1, big_schema(70 * 1024))}), "tools"),
        (
            json!({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": big_schema(70 * 1024)}}}),
            "response_format",
        ),
        (json!({"stop": stops(17)}), "stop"),
        (
            json!({"logit_bias": (0..301).map(|i| (i.to_string(), json!(1))).collect::<serde_json::Map<_, _>>()}),
            "logit_bias",
        ),
        (json!({"metadata": {"k": "v".repeat(17 * 1024)}}), "metadata"),
        (
            json!({"messages": (0..4097).map(|_| json!({"role": "user", "content": "x"})).collect::<Vec<_>>()}),
            "messages",
        ),
    ];
    for (extra, param) in cases {
        let (status, got, message) = refusal(&h, "/v1/chat/completions", chat(extra.clone())).await;
        assert_eq!((status, got.as_str()), (400, param), "{message}");
        assert!(message.starts_with(&format!("'{param}'")), "{message}");
    }
    // At the bounds, served.
    let at = chat(json!({"n": 16, "tools": tools(128, json!({"type": "object"})), "stop": stops(16)}));
    assert_eq!(h.post("/v1/chat/completions").json(&at).send().await.unwrap().status(), 200);
    let at = chat(json!({"tools": tools(1, big_schema(60 * 1024))}));
    assert_eq!(h.post("/v1/chat/completions").json(&at).send().await.unwrap().status(), 200);
    assert_eq!(h.upstream.state.requests().len(), 2, "no refused request reached the provider");
    assert!(h.usage.all().len() <= 2, "a refused request takes nothing from its key: {:?}", h.usage.all());
}

#[tokio::test]
async fn every_door_names_the_bound_as_its_callers_spell_it() {
    let h = Harness::with(Setup {
        extra: "[input]\nmax_messages = 3\nmax_embedding_inputs = 4".into(),
        ..Setup::default()
    })
    .await;
    let four = |role: &str| (0..4).map(|_| json!({"role": role, "content": "x"})).collect::<Vec<_>>();
    let gemini_contents: Vec<Value> = (0..4).map(|_| json!({"role": "user", "parts": [{"text": "x"}]})).collect();
    let cases = [
        ("/v1/chat/completions", json!({"model": "test-model", "messages": four("user")}), "messages"),
        ("/v1/messages", json!({"model": "claude-test", "max_tokens": 5, "messages": four("user")}), "messages"),
        (
            "/v1/messages",
            json!({"model": "claude-test", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}], "stop_sequences": stops(17)}),
            "stop_sequences",
        ),
        ("/v1beta/models/gemini-test:generateContent", json!({"contents": gemini_contents}), "contents"),
        (
            "/v1beta/models/gemini-test:generateContent",
            json!({"contents": [{"parts": [{"text": "x"}]}], "generationConfig": {"candidateCount": 1000}}),
            "generationConfig.candidateCount",
        ),
        ("/v1/responses", json!({"model": "test-model", "input": four("user")}), "input"),
        (
            "/v1/responses",
            json!({"model": "test-model", "input": "x", "tools": (0..129).map(|_| json!({"type": "web_search"})).collect::<Vec<_>>()}),
            "tools",
        ),
        (
            "/v1/responses",
            json!({"model": "test-model", "input": "x", "metadata": {"k": "v".repeat(17 * 1024)}}),
            "metadata",
        ),
        ("/v1/completions", json!({"model": "test-model", "prompt": "x", "stop": stops(17)}), "stop"),
        ("/v1/completions", json!({"model": "test-model", "prompt": []}), "prompt"),
        ("/v1/embeddings", json!({"model": "embed-openai", "input": ["a", "b", "c", "d", "e"]}), "input"),
    ];
    for (path, body, param) in cases {
        let (status, got, message) = refusal(&h, path, body).await;
        assert_eq!((status, got.as_str()), (400, param), "{path}: {message}");
    }
    assert!(h.upstream.state.requests().is_empty(), "{:?}", h.upstream.state.requests());
}

#[tokio::test]
async fn admin_lists_name_an_unknown_filter() {
    let h = Harness::start().await;
    for path in ["/admin/v1/usage?foo=1", "/admin/v1/keys?sortt=name", "/admin/v1/usage/requests?limit=abc"] {
        let resp = h.client.get(h.url(path)).bearer_auth(MASTER_KEY).send().await.unwrap();
        let (status, e) = error_of(resp).await;
        assert_eq!(status, 400, "{path}: {e}");
        let param = e["error"]["param"].as_str().unwrap_or_default();
        assert!(path.contains(&format!("{param}=")) && !param.is_empty(), "{path}: {e}");
    }
}
