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

/// Cloud credentials (an AWS secret key, a Google service account's private key and its access tokens)
/// stay in the gateway too: a provider that echoes them in an error has them masked, and no log line or
/// answer carries them, whether the call succeeded, was refused or fell over.
#[tokio::test]
async fn cloud_credentials_never_reach_logs_or_callers() {
    use crate::support::{AWS_WRONG_SECRET, Setup, bedrock_provider, vertex_provider};
    use switchyard::fake::bedrock::SECRET_ACCESS_KEY;
    capture_logs();
    let models = r#"
[[models]]
name = "on-bedrock"
provider = "bedrock"
upstream = "anthropic.claude-haiku-4-5-v1:0"

[[models]]
name = "on-bedrock-wrong"
provider = "bedrock-wrong"
upstream = "anthropic.claude-haiku-4-5-v1:0"

[[models]]
name = "on-vertex"
provider = "vertex"
upstream = "gemini-2.5-flash"

[[models]]
name = "on-vertex-untrusted"
provider = "vertex-untrusted"
upstream = "gemini-2.5-flash"
"#;
    let extra = [
        bedrock_provider("bedrock", "us-east-1", "TEST_AWS_SECRET_ACCESS_KEY"),
        bedrock_provider("bedrock-wrong", "us-east-1", "TEST_AWS_WRONG_SECRET"),
        vertex_provider("vertex", "TEST_GOOGLE_CREDENTIALS"),
        vertex_provider("vertex-untrusted", "TEST_GOOGLE_UNTRUSTED"),
        models.to_owned(),
    ]
    .concat();
    let h = Harness::with(Setup { extra, ..Setup::default() }).await;
    let mut answers = String::new();
    for model in ["on-bedrock", "on-bedrock-wrong", "on-vertex", "on-vertex-untrusted"] {
        answers.push_str(&h.chat(hello(model)).await.text().await.unwrap());
    }
    // The token the fake issued (there is one, used above), and providers that echo secrets in errors.
    let token = "ya29.fake-vertex-token-1";
    h.upstream.state.push_fault(
        Some("anthropic.claude-haiku-4-5-v1:0"),
        Fault::Status {
            status: 400,
            retry_after_secs: None,
            code: Some("ValidationException".into()),
            message: format!("signature for {SECRET_ACCESS_KEY} is off"),
        },
    );
    h.upstream.state.push_fault(
        Some("gemini-2.5-flash"),
        Fault::Status { status: 400, retry_after_secs: None, code: None, message: format!("token {token} is odd") },
    );
    for model in ["on-bedrock", "on-vertex"] {
        let resp = h.chat(hello(model)).await;
        assert_eq!(resp.status(), 400, "{model}");
        answers.push_str(&format!("{:?}", resp.headers()));
        answers.push_str(&resp.text().await.unwrap());
    }
    assert!(answers.contains("*****"), "the echoed secrets were masked, not dropped: {answers}");
    h.usage.wait_for(6).await;
    let key_file =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/vertex/service-account.json"))
            .unwrap();
    let key: serde_json::Value = serde_json::from_str(&key_file).unwrap();
    // A line of the private key's base64 body.
    let key_line = key["private_key"].as_str().unwrap().lines().nth(3).unwrap().to_owned();
    let logs = captured_logs();
    for secret in [SECRET_ACCESS_KEY, AWS_WRONG_SECRET, token, "PRIVATE KEY", key_line.as_str()] {
        assert!(!logs.contains(secret), "{secret} leaked into the logs");
        assert!(!answers.contains(secret), "{secret} reached a caller: {answers}");
    }
}
