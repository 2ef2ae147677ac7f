//! The server's own behaviour: request ids, health, slow clients, and graceful shutdown.

use std::sync::atomic::Ordering;
use std::time::Duration;

use serde_json::json;
use switchyard::config::FakeSettings;
use switchyard::usage::Outcome;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::{Harness, MASTER_KEY, Setup, eventually, hello, payloads, sse_events};

#[tokio::test]
async fn request_ids_are_echoed_or_generated() {
    let h = Harness::start().await;
    let resp = h
        .post("/v1/chat/completions")
        .header("x-request-id", "req-abc_123")
        .json(&hello("test-model"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["x-request-id"], "req-abc_123");
    let resp = h.chat(hello("no-such-model")).await;
    let generated = resp.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert_eq!(generated.len(), 36, "a UUID: {generated}");
    // An id that could smuggle anything into logs or headers is replaced.
    let resp = h
        .post("/v1/chat/completions")
        .header("x-request-id", "a b\"c")
        .json(&hello("test-model"))
        .send()
        .await
        .unwrap();
    assert_ne!(resp.headers()["x-request-id"], "a b\"c");
}

#[tokio::test]
async fn health_probes_need_no_key() {
    let h = Harness::start().await;
    let live = h.client.get(h.url("/health/liveness")).send().await.unwrap();
    assert_eq!(live.status(), 200);
    let ready: serde_json::Value = h.client.get(h.url("/health/readiness")).send().await.unwrap().json().await.unwrap();
    assert_eq!(ready["status"], "ready");
}

async fn read_until_closed(stream: &mut TcpStream) -> String {
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut out))
        .await
        .expect("the server closed the connection")
        .ok();
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn a_connection_that_sends_nothing_or_too_slowly_is_closed() {
    let h = Harness::with(Setup {
        server_extra: "header_read_timeout_ms = 300\nbody_read_timeout_ms = 300".into(),
        ..Setup::default()
    })
    .await;
    let mut silent = TcpStream::connect(h.gateway.addr).await.unwrap();
    read_until_closed(&mut silent).await;

    let mut partial_headers = TcpStream::connect(h.gateway.addr).await.unwrap();
    partial_headers.write_all(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n").await.unwrap();
    read_until_closed(&mut partial_headers).await;

    let mut slow_body = TcpStream::connect(h.gateway.addr).await.unwrap();
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {MASTER_KEY}\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{{\"model\":"
    );
    slow_body.write_all(head.as_bytes()).await.unwrap();
    let answer = read_until_closed(&mut slow_body).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("request_timeout"));
}

fn slow_stream_setup(drain_ms: u64, tokens: u32) -> Setup {
    Setup {
        fake: FakeSettings { latency_ms: 0, tokens_per_second: 40.0, completion_tokens: tokens },
        server_extra: format!("drain_timeout_ms = {drain_ms}"),
        ..Setup::default()
    }
}

#[tokio::test]
async fn shutdown_lets_a_running_stream_finish() {
    let mut h = Harness::with(slow_stream_setup(20_000, 20)).await;
    let mut resp =
        h.chat(json!({"model": "test-model", "stream": true, "messages": [{"role": "user", "content": "hi"}]})).await;
    let first = resp.chunk().await.unwrap().unwrap();
    h.gateway.begin_shutdown();
    eventually("readiness to report draining", || h.gateway.state.draining.load(Ordering::Relaxed)).await;

    let mut rest = first.to_vec();
    while let Some(c) = resp.chunk().await.unwrap() {
        rest.extend_from_slice(&c);
    }
    let text = String::from_utf8(rest).unwrap();
    assert!(text.ends_with("data: [DONE]\n\n"), "the stream completed: {text}");
    assert_eq!(h.usage.wait_for(1).await[0].outcome, Outcome::Completed);

    // New connections are refused once shutdown has begun.
    let addr = h.gateway.addr;
    tokio::time::timeout(Duration::from_secs(10), h.gateway.stopped())
        .await
        .expect("the server stopped after the drain");
    assert!(TcpStream::connect(addr).await.is_err());
}

#[tokio::test]
async fn the_drain_deadline_ends_remaining_streams_with_an_error_event() {
    let mut h = Harness::with(slow_stream_setup(300, 10_000)).await;
    let resp =
        h.chat(json!({"model": "test-model", "stream": true, "messages": [{"role": "user", "content": "hi"}]})).await;
    assert_eq!(resp.status(), 200);
    h.gateway.begin_shutdown();
    let (chunks, done) = payloads(&sse_events(resp).await);
    assert!(!done);
    assert_eq!(chunks.last().unwrap()["error"]["code"], "shutting_down");
    assert_eq!(h.usage.wait_for(1).await[0].outcome, Outcome::ShutDown);
    let stats = &h.upstream.state.stats;
    eventually("the upstream stream to be released", || stats.streams_cancelled.load(Ordering::Relaxed) == 1).await;
}

#[tokio::test]
async fn several_workers_share_the_port_and_all_of_them_drain_on_shutdown() {
    let mut setup = slow_stream_setup(20_000, 12);
    setup.server_extra.push_str("\nworkers = 3");
    let mut h = Harness::with(setup).await;
    // One connection per client: the kernel spreads them over the workers' sockets.
    let mut streams = Vec::new();
    for _ in 0..24 {
        let client = reqwest::Client::new();
        let resp = client
            .post(h.url("/v1/chat/completions"))
            .bearer_auth(MASTER_KEY)
            .json(&json!({"model": "test-model", "stream": true, "messages": [{"role": "user", "content": "hi"}]}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        streams.push(resp);
    }
    h.gateway.begin_shutdown();
    eventually("readiness to report draining", || h.gateway.state.draining.load(Ordering::Relaxed)).await;
    for resp in streams {
        let (chunks, done) = payloads(&sse_events(resp).await);
        assert!(done, "every stream ran to its end: {chunks:?}");
    }
    let records = h.usage.wait_for(24).await;
    assert!(records.iter().all(|r| r.outcome == Outcome::Completed));
    let addr = h.gateway.addr;
    tokio::time::timeout(Duration::from_secs(10), h.gateway.stopped()).await.expect("the server stopped");
    assert!(TcpStream::connect(addr).await.is_err(), "no worker still listens");
}

#[tokio::test]
async fn a_second_gateway_cannot_share_a_port_that_one_with_several_workers_holds() {
    let h = Harness::with(Setup { server_extra: "workers = 2".into(), ..Setup::default() }).await;
    let listen = h.gateway.addr.to_string();
    let second = switchyard::server::bind(&listen, 2).await;
    assert!(second.is_err(), "the port is taken");
    let plain = h.chat(hello("test-model")).await;
    assert_eq!(plain.status(), 200);
}

#[tokio::test]
async fn the_dashboard_is_served_with_a_strict_policy_and_uses_only_served_admin_routes() {
    let h = Harness::start().await;
    let get = |path: &str| h.client.get(h.url(path)).send();
    let page = get("/dashboard").await.unwrap();
    assert_eq!(page.status(), 200);
    assert_eq!(page.headers()["content-type"], "text/html; charset=utf-8");
    let csp = page.headers()["content-security-policy"].to_str().unwrap().to_owned();
    assert!(csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"), "{csp}");
    let html = page.text().await.unwrap();
    let script = get("/dashboard/app.js").await.unwrap();
    assert_eq!(script.headers()["content-type"], "text/javascript; charset=utf-8");
    let js = script.text().await.unwrap();
    assert_eq!(get("/dashboard/style.css").await.unwrap().status(), 200);
    assert_eq!(get("/dashboard/secrets.txt").await.unwrap().status(), 404);
    assert!(!js.contains("innerHTML") && !html.contains("<script>"), "data goes on the page as text only");

    // Every element the script looks up by id exists in the page.
    for part in js.split("$(\"#").skip(1) {
        let id = part.split(|c: char| !(c.is_ascii_alphanumeric() || c == '-')).next().unwrap();
        if id.is_empty() {
            continue; // built from a variable
        }
        assert!(html.contains(&format!("id=\"{id}\"")), "the page has no element #{id}");
    }
    // Every admin API path the script calls answers (not 404 or 405) with the master key: read, or
    // (for a path only written to, such as a reload) sent with the method the script uses.
    let mut called = 0;
    let parts: Vec<&str> = js.split("\"/admin/v1/").collect();
    for (before, part) in parts.iter().zip(&parts[1..]) {
        let path = part.split(['"', '?']).next().unwrap();
        let url = h.url(&format!("/admin/v1/{path}"));
        let mut resp = h.client.get(&url).bearer_auth(MASTER_KEY).send().await.unwrap();
        if resp.status() == 405 && before.ends_with("api(\"POST\", ") {
            resp = h.client.post(&url).bearer_auth(MASTER_KEY).send().await.unwrap();
        }
        assert!(
            ![404, 405].contains(&resp.status().as_u16()) || path.ends_with('/'),
            "/admin/v1/{path}: {}",
            resp.status()
        );
        called += 1;
    }
    assert!(called >= 4, "the script uses the admin API ({called} paths)");
}

#[tokio::test]
async fn metrics_count_requests_tokens_and_latency_with_labels_from_configuration_only() {
    let h = Harness::start().await;
    assert_eq!(h.chat(hello("test-model")).await.status(), 200);
    assert_eq!(h.chat(hello("test-model")).await.status(), 200);
    // A model string the caller made up must not become a label value.
    assert_eq!(h.chat(hello("upstream/made-up-model-42")).await.status(), 200);
    h.usage.wait_for(3).await;
    let unauthenticated = h.client.get(h.url("/metrics")).send().await.unwrap();
    assert_eq!(unauthenticated.status(), 401);
    let resp = h.client.get(h.url("/metrics")).bearer_auth(MASTER_KEY).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.headers()["content-type"].to_str().unwrap().starts_with("text/plain; version=0.0.4"));
    let text = resp.text().await.unwrap();
    let line = |prefix: &str| text.lines().find(|l| l.starts_with(prefix)).map(str::to_owned);
    assert_eq!(
        line(
            "switchyard_requests_total{model=\"test-model\",provider=\"upstream\",outcome=\"completed\",status=\"200\"}"
        )
        .as_deref(),
        Some(
            "switchyard_requests_total{model=\"test-model\",provider=\"upstream\",outcome=\"completed\",status=\"200\"} 2"
        )
    );
    assert!(line("switchyard_requests_total{model=\"other\",provider=\"upstream\"").is_some(), "{text}");
    assert!(!text.contains("made-up-model-42"));
    let completion =
        line("switchyard_tokens_total{model=\"test-model\",provider=\"upstream\",kind=\"completion\"}").unwrap();
    assert!(completion.ends_with(" 48"), "{completion}");
    assert!(line("switchyard_request_duration_seconds_count{model=\"test-model\",provider=\"upstream\"} 2").is_some());
    assert!(line("switchyard_breaker_open{model=\"test-model\",provider=\"upstream\"} 0").is_some());
    assert!(line("switchyard_ready 1").is_some());
}

#[tokio::test]
async fn metrics_carry_each_keys_requests_and_spend_and_the_time_to_first_token() {
    let h = Harness::start().await;
    let org = h.new_org(serde_json::json!({"name": "metered"})).await;
    let (key_id, secret) = h.new_key(&org, serde_json::json!({})).await;
    let mut streamed = hello("test-model");
    streamed["stream"] = serde_json::json!(true);
    for body in [hello("test-model"), streamed] {
        let resp = h.client.post(h.url("/v1/chat/completions")).bearer_auth(&secret).json(&body).send().await.unwrap();
        assert_eq!(resp.status(), 200);
        resp.bytes().await.unwrap();
    }
    h.usage.wait_for(2).await;
    let text = h.client.get(h.url("/metrics")).bearer_auth(MASTER_KEY).send().await.unwrap().text().await.unwrap();
    let org_id = org["id"].as_str().unwrap();
    let labels = format!("{{key_id=\"{key_id}\",organization_id=\"{org_id}\"}}");
    assert!(text.lines().any(|l| l == format!("switchyard_key_requests_total{labels} 2")), "{text}");
    let spend = text.lines().find(|l| l.starts_with(&format!("switchyard_key_spend_usd_total{labels} "))).unwrap();
    let usd: f64 = spend.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(usd > 0.0, "{spend}");
    assert!(
        text.lines().any(|l| l
            .starts_with("switchyard_time_to_first_token_seconds_count{model=\"test-model\",provider=\"upstream\"} ")),
        "{text}"
    );
}
