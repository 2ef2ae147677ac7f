//! Every failure a client can meet comes back as an OpenAI-shaped error with the right status,
//! and never carries a credential.

use std::time::Duration;

use serde_json::{Value, json};
use switchyard::fake::Fault;

use crate::support::{Harness, MASTER_KEY, PROVIDER_KEY, Setup, error_of, hello};

async fn expect_error(resp: reqwest::Response, status: u16, code: &str) -> Value {
    let (got, body) = error_of(resp).await;
    assert_eq!((got, body["error"]["code"].as_str()), (status, Some(code)), "{body}");
    let text = body.to_string();
    assert!(!text.contains(PROVIDER_KEY) && !text.contains(MASTER_KEY), "no credential in {text}");
    body
}

#[tokio::test]
async fn malformed_json_is_a_400_without_param() {
    let h = Harness::start().await;
    let resp = h
        .post("/v1/chat/completions")
        .header("content-type", "application/json")
        .body("{\"model\": ")
        .send()
        .await
        .unwrap();
    let body = expect_error(resp, 400, "invalid_request_body").await;
    assert_eq!(body["error"]["type"], "invalid_request_error");
    assert_eq!(body["error"]["param"], Value::Null);
    let resp = h.post("/v1/chat/completions").body("").send().await.unwrap();
    expect_error(resp, 400, "invalid_request_body").await;
}

#[tokio::test]
async fn wrong_field_types_are_a_400_naming_the_field() {
    let h = Harness::start().await;
    for (body, param) in [
        (json!({"model": "test-model", "messages": [{"role": "robot", "content": "x"}]}), "messages[0].role"),
        (
            json!({"model": "test-model", "messages": [{"role": "user", "content": "x"}], "temperature": "hot"}),
            "temperature",
        ),
        (json!({"model": "test-model", "messages": "hello"}), "messages"),
        (json!({"model": 5, "messages": []}), "model"),
        (json!({"messages": [{"role": "user", "content": "x"}]}), "model"),
        (json!({"model": "test-model", "messages": []}), "messages"),
    ] {
        let resp = h.chat(body.clone()).await;
        let (status, err) = error_of(resp).await;
        assert_eq!((status, err["error"]["param"].as_str()), (400, Some(param)), "for {body}: {err}");
    }
}

#[tokio::test]
async fn a_missing_or_wrong_key_is_a_401() {
    let h = Harness::start().await;
    let url = h.url("/v1/chat/completions");
    let resp = h.client.post(&url).json(&hello("test-model")).send().await.unwrap();
    expect_error(resp, 401, "missing_api_key").await;
    let resp = h.client.post(&url).bearer_auth("sk-wrong").json(&hello("test-model")).send().await.unwrap();
    expect_error(resp, 401, "invalid_api_key").await;
    let resp = h
        .client
        .post(&url)
        .header("authorization", format!("Basic {MASTER_KEY}"))
        .json(&hello("test-model"))
        .send()
        .await
        .unwrap();
    expect_error(resp, 401, "missing_api_key").await;
    let resp = h.client.get(h.url("/v1/models")).send().await.unwrap();
    expect_error(resp, 401, "missing_api_key").await;
}

#[tokio::test]
async fn the_key_may_come_in_any_sdk_header_but_two_different_keys_are_refused() {
    let h = Harness::start().await;
    let url = h.url("/v1/chat/completions");
    for header in ["x-api-key", "x-goog-api-key", "api-key"] {
        let resp = h.client.post(&url).header(header, MASTER_KEY).json(&hello("test-model")).send().await.unwrap();
        assert_eq!(resp.status(), 200, "{header}");
    }
    let resp = h
        .client
        .post(&url)
        .bearer_auth(MASTER_KEY)
        .header("x-api-key", "sk-other")
        .json(&hello("test-model"))
        .send()
        .await
        .unwrap();
    expect_error(resp, 400, "conflicting_api_keys").await;
}

#[tokio::test]
async fn an_unknown_model_is_a_404_model_not_found() {
    let h = Harness::start().await;
    let body = expect_error(h.chat(hello("no-such-model")).await, 404, "model_not_found").await;
    assert_eq!(body["error"]["param"], "model");
    // Names match exactly: no case folding, no trimming.
    expect_error(h.chat(hello("Test-Model")).await, 404, "model_not_found").await;
    expect_error(h.chat(hello("test-model ")).await, 404, "model_not_found").await;
}

#[tokio::test]
async fn a_compressed_body_is_refused_with_415() {
    let h = Harness::start().await;
    let resp = h
        .post("/v1/chat/completions")
        .header("content-encoding", "gzip")
        .json(&hello("test-model"))
        .send()
        .await
        .unwrap();
    expect_error(resp, 415, "unsupported_content_encoding").await;
}

#[tokio::test]
async fn a_body_over_the_limit_is_a_413() {
    let h = Harness::with(Setup { server_extra: "body_limit_bytes = 2048".into(), ..Setup::default() }).await;
    let big = json!({"model": "test-model", "messages": [{"role": "user", "content": "x".repeat(4096)}]});
    expect_error(h.chat(big.clone()).await, 413, "request_too_large").await;
    // Also when the length is not declared up front (chunked upload).
    let bytes = serde_json::to_vec(&big).unwrap();
    let stream =
        futures_util::stream::iter(bytes.chunks(512).map(|c| Ok::<_, std::io::Error>(c.to_vec())).collect::<Vec<_>>());
    let resp = h.post("/v1/chat/completions").body(reqwest::Body::wrap_stream(stream)).send().await.unwrap();
    expect_error(resp, 413, "request_too_large").await;
}

#[tokio::test]
async fn an_upstream_that_never_answers_is_a_504() {
    let h =
        Harness::with(Setup { provider_extra: "timeouts = { first_byte_ms = 300 }".into(), ..Setup::default() }).await;
    h.upstream.state.push_fault(None, Fault::StallBeforeHeaders(Duration::from_secs(30)));
    let started = std::time::Instant::now();
    expect_error(h.chat(hello("test-model")).await, 504, "upstream_timeout").await;
    assert!(started.elapsed() < Duration::from_secs(20));
}

#[tokio::test]
async fn upstream_server_errors_and_connection_failures_are_502() {
    let h = Harness::start().await;
    for status in [500, 503] {
        h.upstream.state.push_fault(None, Fault::status(status));
        expect_error(h.chat(hello("test-model")).await, 502, "upstream_error").await;
    }
    expect_error(h.chat(hello("dead-model")).await, 502, "upstream_connection_error").await;
}

#[tokio::test]
async fn upstream_client_errors_pass_through_with_their_message() {
    let h = Harness::start().await;
    h.upstream.state.push_fault(
        None,
        Fault::Status {
            status: 400,
            retry_after_secs: None,
            code: Some("invalid_value".into()),
            message: "'top_p' must be at most 1".into(),
        },
    );
    let body = expect_error(h.chat(hello("test-model")).await, 400, "invalid_value").await;
    assert_eq!(body["error"]["message"], "'top_p' must be at most 1");
    h.upstream.state.push_fault(
        None,
        Fault::Status { status: 422, retry_after_secs: None, code: None, message: "unprocessable".into() },
    );
    let (status, body) = error_of(h.chat(hello("test-model")).await).await;
    assert_eq!((status, body["error"]["message"].as_str()), (422, Some("unprocessable")));
}

#[tokio::test]
async fn an_upstream_rate_limit_is_a_429_with_retry_after() {
    let h = Harness::start().await;
    h.upstream.state.push_fault(
        None,
        Fault::Status {
            status: 429,
            retry_after_secs: Some(7),
            code: Some("rate_limit_exceeded".into()),
            message: "slow down".into(),
        },
    );
    let resp = h.chat(hello("test-model")).await;
    assert_eq!(resp.headers()["retry-after"], "7");
    expect_error(resp, 429, "rate_limit_exceeded").await;
}

#[tokio::test]
async fn an_upstream_credential_failure_is_not_blamed_on_the_caller_and_the_key_is_set_aside() {
    let h = Harness::start().await;
    // A provider that echoes its key in a client-error message has it redacted.
    h.upstream.state.push_fault(
        None,
        Fault::Status {
            status: 400,
            retry_after_secs: None,
            code: Some("invalid_value".into()),
            message: format!("bad request for key {PROVIDER_KEY}"),
        },
    );
    let body = expect_error(h.chat(hello("test-model")).await, 400, "invalid_value").await.to_string();
    assert!(body.contains("*****"));

    h.upstream.state.push_fault(
        None,
        Fault::Status {
            status: 401,
            retry_after_secs: None,
            code: Some("invalid_api_key".into()),
            message: format!("Incorrect API key provided: {PROVIDER_KEY}"),
        },
    );
    let body = expect_error(h.chat(hello("test-model")).await, 502, "provider_authentication_failed").await;
    assert!(!body.to_string().contains("sk-upstream"));
    // The only key was refused, so it is not tried again for a while.
    let requests_before = h.upstream.state.requests().len();
    expect_error(h.chat(hello("test-model")).await, 503, "provider_unavailable").await;
    assert_eq!(h.upstream.state.requests().len(), requests_before, "the refused key was not sent again");
}

#[tokio::test]
async fn several_keys_are_used_in_turn_and_a_refused_one_is_skipped() {
    let h = Harness::with(Setup { keys: Some("sk-first-1111,sk-second-2222".into()), ..Setup::default() }).await;
    let auth_of_last = |h: &Harness| h.upstream.last_request().headers["authorization"].to_str().unwrap().to_owned();
    let _ = h.chat(hello("test-model")).await.bytes().await;
    let first = auth_of_last(&h);
    let _ = h.chat(hello("test-model")).await.bytes().await;
    let second = auth_of_last(&h);
    assert_ne!(first, second, "keys alternate");

    h.upstream.state.push_fault(
        None,
        Fault::Status {
            status: 429,
            retry_after_secs: None,
            code: Some("insufficient_quota".into()),
            message: "You exceeded your current quota".into(),
        },
    );
    let resp = h.chat(hello("test-model")).await;
    assert_eq!(resp.status(), 502, "quota exhaustion is the gateway's problem, not the caller's");
    let refused = auth_of_last(&h);
    for _ in 0..4 {
        assert_eq!(h.chat(hello("test-model")).await.status(), 200);
        assert_ne!(auth_of_last(&h), refused, "the exhausted key is skipped");
    }
}

#[tokio::test]
async fn a_provider_without_credentials_is_a_clear_503() {
    let h = Harness::start().await;
    let resp = h.chat(hello("keyless-model")).await;
    assert_eq!(resp.headers()["x-should-retry"], "false");
    let body = expect_error(resp, 503, "provider_unavailable").await;
    assert!(body["error"]["message"].as_str().unwrap().contains("TEST_MISSING_KEY"));
}

#[tokio::test]
async fn unknown_routes_are_404_and_wrong_methods_are_405() {
    let h = Harness::start().await;
    let resp = h.client.get(h.url("/v1/nothing-here")).bearer_auth(MASTER_KEY).send().await.unwrap();
    expect_error(resp, 404, "unknown_url").await;
    let resp = h.client.get(h.url("/elsewhere")).send().await.unwrap();
    expect_error(resp, 404, "unknown_url").await;
    let resp = h.client.get(h.url("/v1/chat/completions")).bearer_auth(MASTER_KEY).send().await.unwrap();
    expect_error(resp, 405, "method_not_allowed").await;
}

#[tokio::test]
async fn the_openapi_document_describes_every_route_the_gateway_serves_and_no_other() {
    let h = crate::support::Harness::start().await;
    let resp = h.client.get(h.url("/openapi.json")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/json");
    let doc: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    let mut described = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            assert!(op["responses"].is_object(), "{method} {path} has responses");
            described.push(format!("{} {path}", method.to_uppercase()));
            // The route exists with that method: whatever it answers, it is not "no such route".
            let url = h.url(
                &path
                    .replace("{id}", "no-such-id")
                    .replace("{name}", "no-such-plan")
                    .replace("{model}", "no-such-model")
                    .replace("{deployment}", "no-such-deployment"),
            );
            let method = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let resp =
                h.client.request(method.clone(), url).bearer_auth(crate::support::MASTER_KEY).send().await.unwrap();
            let status = resp.status().as_u16();
            let body: serde_json::Value = resp.json().await.unwrap_or_default();
            assert!(
                status != 405 && body["error"]["code"] != "unknown_url",
                "{method} {path} is described but not served: {status} {body}"
            );
        }
    }
    // Every route the router has (this list is checked against the router by the requests above).
    let mut served = vec![
        "POST /v1/chat/completions",
        "POST /v1/completions",
        "POST /v1/responses",
        "GET /v1/responses/{id}",
        "DELETE /v1/responses/{id}",
        "GET /v1/responses/{id}/input_items",
        "POST /v1beta/models/{model}:countTokens",
        "GET /v1beta/models",
        "GET /v1beta/models/{model}",
        "POST /openai/deployments/{deployment}/chat/completions",
        "POST /openai/deployments/{deployment}/completions",
        "POST /openai/deployments/{deployment}/embeddings",
        "POST /openai/responses",
        "GET /openai/responses/{id}",
        "DELETE /openai/responses/{id}",
        "GET /openai/responses/{id}/input_items",
        "POST /openai/v1/chat/completions",
        "POST /openai/v1/completions",
        "POST /openai/v1/embeddings",
        "POST /openai/v1/responses",
        "GET /openai/v1/responses/{id}",
        "DELETE /openai/v1/responses/{id}",
        "GET /openai/v1/responses/{id}/input_items",
        "GET /openai/v1/models",
        "POST /v1/messages",
        "POST /v1beta/models/{model}:generateContent",
        "POST /v1beta/models/{model}:streamGenerateContent",
        "POST /v1/messages/count_tokens",
        "POST /v1/embeddings",
        "POST /v1/moderations",
        "GET /v1/models",
        "GET /v1/models/{id}",
        "POST /v1/route/explain",
        "GET /model/info",
        "GET /v1/model/info",
        "GET /v1/key",
        "POST /v1/key/regenerate",
        "POST /v1/key/revoke",
        "GET /health/liveness",
        "GET /health/readiness",
        "GET /openapi.json",
        "POST /v1/rerank",
        "POST /v2/rerank",
        "POST /v1/images/generations",
        "POST /v1/audio/speech",
        "POST /v1/audio/transcriptions",
        "POST /v1/audio/translations",
        "POST /v1/images/edits",
        "POST /v1/files",
        "GET /v1/files",
        "GET /v1/files/{id}",
        "DELETE /v1/files/{id}",
        "GET /v1/files/{id}/content",
        "POST /v1/batches",
        "GET /v1/batches",
        "GET /v1/batches/{id}",
        "POST /v1/batches/{id}/cancel",
        "POST /admin/v1/organizations",
        "GET /admin/v1/organizations",
        "GET /admin/v1/organizations/{id}",
        "PATCH /admin/v1/organizations/{id}",
        "DELETE /admin/v1/organizations/{id}",
        "GET /admin/v1/plans",
        "POST /admin/v1/plans",
        "GET /admin/v1/plans/{name}",
        "PATCH /admin/v1/plans/{name}",
        "DELETE /admin/v1/plans/{name}",
        "POST /admin/v1/keys",
        "GET /admin/v1/keys",
        "GET /admin/v1/keys/{id}",
        "PATCH /admin/v1/keys/{id}",
        "DELETE /admin/v1/keys/{id}",
        "POST /admin/v1/keys/{id}/revoke",
        "POST /admin/v1/keys/{id}/regenerate",
        "GET /admin/v1/usage",
        "GET /admin/v1/usage/requests",
        "GET /admin/v1/billing",
        "GET /admin/v1/audit",
        "GET /admin/v1/providers",
        "GET /admin/v1/config",
        "POST /admin/v1/reload",
        "POST /admin/v1/session",
        "GET /admin/v1/session",
        "DELETE /admin/v1/session",
        "GET /admin/v1/accounts",
        "POST /admin/v1/accounts",
        "GET /admin/v1/accounts/{id}",
        "PATCH /admin/v1/accounts/{id}",
        "DELETE /admin/v1/accounts/{id}",
        "GET /admin/v1/management_keys",
        "POST /admin/v1/management_keys",
        "POST /admin/v1/management_keys/{id}/revoke",
        "GET /metrics",
    ];
    served.sort_unstable();
    described.sort_unstable();
    assert_eq!(described, served);
}
