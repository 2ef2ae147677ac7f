//! How the gateway reaches providers: TLS with a provider's own CA (HTTP/2 when offered), and egress
//! proxies (a CONNECT tunnel for `https` providers, absolute-form requests for `http` ones).

use serde_json::Value;
use switchyard::config::FakeSettings;

use crate::support::{Harness, Setup, TestProxy, error_of, hello, payloads, sse_events};

const CA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/tls/ca.pem");

fn streamed(mut body: Value) -> Value {
    body["stream"] = Value::Bool(true);
    body
}

#[tokio::test]
async fn a_provider_behind_its_own_ca_is_reached_over_tls_plain_and_streamed() {
    let h = Harness::with(Setup {
        tls: true,
        provider_extra: format!("tls_ca_file = \"{CA}\""),
        fake: FakeSettings { latency_ms: 0, ..FakeSettings::default() },
        ..Setup::default()
    })
    .await;
    assert!(h.upstream.base_url.starts_with("https://127.0.0.1:"));
    let resp = h.chat(hello("test-model")).await;
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["model"], "test-model");
    assert!(!body["choices"][0]["message"]["content"].as_str().unwrap().is_empty());
    assert_eq!(h.upstream.last_request().body["model"], "upstream-model-id");

    let resp = h.chat(streamed(hello("test-model"))).await;
    assert_eq!(resp.status(), 200);
    let (chunks, done) = payloads(&sse_events(resp).await);
    assert!(done && chunks.len() > 2, "{chunks:?}");
    // HTTP/2, chosen by ALPN, and both requests over one connection.
    assert_eq!(*h.upstream.alpn.lock().unwrap(), ["h2"]);
}

#[tokio::test]
async fn a_certificate_the_gateway_does_not_trust_is_refused() {
    // The same TLS server, without the provider's CA file: the system's roots do not vouch for it.
    let h = Harness::with(Setup { tls: true, ..Setup::default() }).await;
    let (status, body) = error_of(h.chat(hello("test-model")).await).await;
    assert_eq!(status, 502, "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("could not reach provider \"upstream\""), "{body}");
    assert!(h.upstream.state.requests().is_empty(), "no request crossed an untrusted connection");
}

#[tokio::test]
async fn an_http_provider_through_a_proxy_gets_absolute_form_requests_with_the_proxys_credentials() {
    let proxy = TestProxy::start().await;
    let h = Harness::with(Setup {
        provider_extra: format!("proxy = \"http://gw-user:s3cret@{}\"", proxy.addr),
        ..Setup::default()
    })
    .await;
    let resp = h.chat(hello("test-model")).await;
    assert_eq!(resp.status(), 200);
    let seen = proxy.seen();
    assert_eq!(seen.len(), 1, "{seen:?}");
    let upstream = h.upstream.base_url.trim_start_matches("http://").trim_end_matches("/v1").to_owned();
    assert!(seen[0].starts_with(&format!("POST http://{upstream}/v1/chat/completions HTTP/1.1\r\n")), "{seen:?}");
    // base64("gw-user:s3cret")
    assert!(seen[0].to_ascii_lowercase().contains("proxy-authorization: basic z3ctdxnlcjpzm2nyzxq="), "{seen:?}");
    assert_eq!(h.upstream.last_request().body["model"], "upstream-model-id");
}

#[tokio::test]
async fn an_https_provider_through_a_proxy_is_tunnelled_and_the_proxy_sees_no_request() {
    let proxy = TestProxy::start().await;
    let h = Harness::with(Setup {
        tls: true,
        provider_extra: format!("tls_ca_file = \"{CA}\"\nproxy = \"http://gw-user:s3cret@{}\"", proxy.addr),
        ..Setup::default()
    })
    .await;
    let resp = h.chat(streamed(hello("test-model"))).await;
    assert_eq!(resp.status(), 200);
    let (_, done) = payloads(&sse_events(resp).await);
    assert!(done);
    assert_eq!(*h.upstream.alpn.lock().unwrap(), ["h2"], "TLS end to end with the provider, through the tunnel");
    let upstream = h.upstream.base_url.trim_start_matches("https://").trim_end_matches("/v1").to_owned();
    let seen = proxy.seen();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert!(seen[0].starts_with(&format!("CONNECT {upstream} HTTP/1.1\r\n")), "{seen:?}");
    assert!(seen[0].to_ascii_lowercase().contains("proxy-authorization: basic z3ctdxnlcjpzm2nyzxq="), "{seen:?}");
    // Inside the tunnel everything is TLS: the proxy never saw the request or the provider's key.
    assert!(!seen[0].contains("chat/completions") && !seen[0].contains("sk-upstream"), "{seen:?}");
}

#[tokio::test]
async fn connect_ms_bounds_the_tls_handshake_too() {
    // A server that accepts the connection and never says a word: TCP connects, TLS never completes.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = silent.local_addr().unwrap();
    let held = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let keep = held.clone();
    tokio::spawn(async move {
        while let Ok((conn, _)) = silent.accept().await {
            keep.lock().unwrap().push(conn);
        }
    });
    let h = Harness::with(Setup {
        extra: format!(
            r#"
            [[providers]]
            name = "silent"
            kind = "openai"
            base_url = "https://{addr}/v1"
            api_key_env = "TEST_UPSTREAM_KEY"
            timeouts = {{ connect_ms = 300, first_byte_ms = 20000 }}

            [[models]]
            name = "silent-model"
            provider = "silent"
            "#
        ),
        ..Setup::default()
    })
    .await;
    let started = std::time::Instant::now();
    let (status, body) = error_of(h.chat(hello("silent-model")).await).await;
    assert_eq!(status, 504, "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("connect"), "{body}");
    assert!(started.elapsed() < std::time::Duration::from_secs(5), "the connect deadline, not first_byte_ms");
    assert!(!held.lock().unwrap().is_empty(), "the TCP connection was made");
}
