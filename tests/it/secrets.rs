//! Credentials never leave the gateway: not in logs, not in error bodies, not in headers.

use serde_json::json;
use switchyard::fake::Fault;

use crate::support::{Harness, MASTER_KEY, PROVIDER_KEY, capture_logs, captured_logs, hello, sse_events};

#[tokio::test]
async fn no_credential_ever_reaches_the_logs() {
    capture_logs();
    let h = Harness::start().await;
    let _ = h.chat(hello("test-model")).await.bytes().await;
    let _ = sse_events(
        h.chat(json!({"model": "test-model", "stream": true, "messages": [{"role": "user", "content": "hi"}]})).await,
    )
    .await;
    h.upstream.state.push_fault(
        None,
        Fault::Status { status: 401, retry_after_secs: None, code: None, message: format!("bad key {PROVIDER_KEY}") },
    );
    let _ = h.chat(hello("test-model")).await.bytes().await;
    h.upstream.state.push_fault(None, Fault::status(500));
    let _ = h.chat(hello("test-model")).await.bytes().await;
    let _ = h.chat(hello("dead-model")).await.bytes().await;
    let wrong = h
        .client
        .post(h.url("/v1/chat/completions"))
        .bearer_auth("sk-wrong-canary-77")
        .json(&hello("test-model"))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    h.usage.wait_for(5).await;

    let logs = captured_logs();
    assert!(
        logs.contains("upstream attempt failed") && logs.contains("upstream transport error"),
        "the logs were captured: {logs}"
    );
    for secret in [PROVIDER_KEY, MASTER_KEY, "sk-wrong-canary-77"] {
        assert!(!logs.contains(secret), "{secret} leaked into the logs");
    }
}

#[tokio::test]
async fn provider_credentials_are_not_echoed_to_callers() {
    let h = Harness::start().await;
    let resp = h.chat(hello("test-model")).await;
    let headers = format!("{:?}", resp.headers());
    let body = resp.text().await.unwrap();
    assert!(!headers.contains(PROVIDER_KEY) && !body.contains(PROVIDER_KEY));
    assert!(!headers.contains(MASTER_KEY) && !body.contains(MASTER_KEY));
}
