//! The response cache: opt-in per organisation or request, scoped to the organisation, after admission
//! (a hit counts a prompt and leaves a ledger row at no cost), keyed on everything that changes the
//! answer, replayed as a stream with a new id.

use std::time::Duration;

use serde_json::{Value, json};

use switchyard::fake::Fault;

use crate::support::{Harness, Setup, header, ledger_row, payloads, sse_events};

fn ask(temperature: Option<f64>) -> Value {
    let mut body = json!({"model": "test-model", "messages": [{"role": "user", "content": "What is a gateway?"}]});
    if let Some(t) = temperature {
        body["temperature"] = json!(t);
    }
    body
}

async fn send(h: &Harness, secret: &str, body: &Value, headers: &[(&str, &str)]) -> reqwest::Response {
    let mut req = h.client.post(h.url("/v1/chat/completions")).bearer_auth(secret).json(body);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    req.send().await.unwrap()
}

async fn opted_in_key(h: &Harness, fields: Value) -> String {
    let org =
        h.new_org(json!({"name": format!("Cached {}", uuid::Uuid::new_v4()), "response_cache_ttl_seconds": 300})).await;
    assert_eq!(org["response_cache_ttl_seconds"], 300);
    h.new_key(&org, fields).await.1
}

#[tokio::test]
async fn an_opted_in_organisations_repeat_is_a_hit_that_counts_a_prompt_and_costs_nothing() {
    let h = Harness::start().await;
    let secret = opted_in_key(&h, json!({"daily_prompt_quota": 2})).await;
    let calls = h.upstream.state.requests().len();
    let first = send(&h, &secret, &ask(Some(0.0)), &[]).await;
    assert_eq!(first.status(), 200);
    assert_eq!(header(&first, "x-switchyard-cache"), "miss");
    let first: Value = first.json().await.unwrap();
    let again = send(&h, &secret, &ask(Some(0.0)), &[]).await;
    assert_eq!(header(&again, "x-switchyard-cache"), "hit");
    assert_eq!(header(&again, "x-switchyard-model"), "test-model");
    let request_id = header(&again, "x-request-id");
    let again: Value = again.json().await.unwrap();
    assert_eq!(h.upstream.state.requests().len(), calls + 1, "one upstream call");
    assert_eq!(again["choices"][0]["message"], first["choices"][0]["message"], "the same answer");
    assert_ne!(again["id"], first["id"], "under a new id");
    assert_eq!(again["usage"]["cost"], 0.0, "{again}");
    let row = ledger_row(&h, &request_id).await;
    assert_eq!((row["usage_source"].as_str(), row["cost_micros"].as_i64()), (Some("cache"), Some(0)), "{row}");
    assert_eq!(row["outcome"], "completed");
    // A hit still counts a prompt: two used of two.
    let third = send(&h, &secret, &ask(Some(0.0)), &[]).await;
    assert_eq!(third.status(), 429, "the quota counted the hit");

    // Another organisation asking the very same thing is a miss: entries never cross tenants.
    let theirs = opted_in_key(&h, json!({})).await;
    let resp = send(&h, &theirs, &ask(Some(0.0)), &[]).await;
    assert_eq!(header(&resp, "x-switchyard-cache"), "miss");
    assert_eq!(h.upstream.state.requests().len(), calls + 2);
}

#[tokio::test]
async fn every_field_that_changes_the_answer_changes_the_key_and_a_streamed_hit_is_a_stream() {
    let h = Harness::start().await;
    let secret = opted_in_key(&h, json!({})).await;
    let base = ask(Some(0.0));
    assert_eq!(header(&send(&h, &secret, &base, &[]).await, "x-switchyard-cache"), "miss");
    let mut variants = Vec::new();
    let mut v = base.clone();
    v["tools"] = json!([{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]);
    variants.push(("tools", v));
    let mut v = base.clone();
    v["response_format"] = json!({"type": "json_object"});
    variants.push(("response_format", v));
    let mut v = base.clone();
    v["reasoning_effort"] = json!("high");
    variants.push(("reasoning_effort", v));
    let mut v = base.clone();
    v["max_tokens"] = json!(7);
    variants.push(("max_tokens", v));
    let mut v = base.clone();
    v["model"] = json!("upstream/other-upstream-id");
    variants.push(("the resolved target", v));
    for (what, body) in &variants {
        let resp = send(&h, &secret, body, &[]).await;
        assert_eq!(resp.status(), 200, "{what}");
        assert_eq!(header(&resp, "x-switchyard-cache"), "miss", "{what} changes the key");
    }
    // What does not change the answer does not change the key: user, metadata, stream.
    let mut same = base.clone();
    same["user"] = json!("someone");
    same["metadata"] = json!({"trace": "x"});
    assert_eq!(header(&send(&h, &secret, &same, &[]).await, "x-switchyard-cache"), "hit");
    let first: Value = send(&h, &secret, &base, &[]).await.json().await.unwrap();
    let mut streamed = base.clone();
    streamed["stream"] = json!(true);
    let resp = send(&h, &secret, &streamed, &[]).await;
    assert_eq!(header(&resp, "x-switchyard-cache"), "hit");
    assert_eq!(header(&resp, "content-type"), "text/event-stream");
    let (chunks, done) = payloads(&sse_events(resp).await);
    assert!(done, "ends with [DONE]");
    let text: String = chunks.iter().filter_map(|c| c["choices"][0]["delta"]["content"].as_str()).collect();
    assert_eq!(Some(text.as_str()), first["choices"][0]["message"]["content"].as_str());
    assert!(chunks.iter().all(|c| c["id"] != first["id"]), "a new id");
    // A stream's answer is kept too, and serves a whole request.
    let mut other = streamed.clone();
    other["messages"][0]["content"] = json!("Tell me about the gateway");
    let resp = send(&h, &secret, &other, &[]).await;
    assert_eq!(header(&resp, "x-switchyard-cache"), "miss");
    let (chunks, _) = payloads(&sse_events(resp).await);
    let text: String = chunks.iter().filter_map(|c| c["choices"][0]["delta"]["content"].as_str()).collect();
    other["stream"] = json!(false);
    let mut whole = None;
    for _ in 0..50 {
        let resp = send(&h, &secret, &other, &[]).await;
        if header(&resp, "x-switchyard-cache") == "hit" {
            whole = Some(resp.json::<Value>().await.unwrap());
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(whole.expect("a hit")["choices"][0]["message"]["content"].as_str(), Some(text.as_str()));
}

#[tokio::test]
async fn sampled_answers_are_cached_only_when_the_request_asks_and_no_store_bypasses() {
    let h = Harness::start().await;
    let secret = opted_in_key(&h, json!({})).await;
    // The organisation's opt-in keeps deterministic answers only.
    let resp = send(&h, &secret, &ask(None), &[]).await;
    assert_eq!(header(&resp, "x-switchyard-cache"), "bypass");
    let resp = send(&h, &secret, &ask(None), &[]).await;
    assert_eq!(header(&resp, "x-switchyard-cache"), "bypass");
    // The request asking, with a TTL: kept and served.
    let asked = [("cache-control", "max-age=60")];
    assert_eq!(header(&send(&h, &secret, &ask(Some(0.9)), &asked).await, "x-switchyard-cache"), "miss");
    assert_eq!(header(&send(&h, &secret, &ask(Some(0.9)), &asked).await, "x-switchyard-cache"), "hit");
    assert_eq!(
        header(&send(&h, &secret, &ask(Some(0.9)), &[("cache-control", "no-store")]).await, "x-switchyard-cache"),
        "bypass"
    );
    assert_eq!(
        header(
            &send(&h, &secret, &ask(Some(0.9)), &[("cache-control", "no-cache, max-age=60")]).await,
            "x-switchyard-cache"
        ),
        "miss",
        "no-cache reads nothing"
    );
    // An organisation that did not opt in: no cache, no header, unless a request asks.
    let org = h.new_org(json!({"name": format!("Uncached {}", uuid::Uuid::new_v4())})).await;
    let (_, plain) = h.new_key(&org, json!({})).await;
    let resp = send(&h, &plain, &ask(Some(0.0)), &[]).await;
    assert!(resp.headers().get("x-switchyard-cache").is_none());
    let resp = send(&h, &plain, &ask(Some(0.0)), &[]).await;
    assert!(resp.headers().get("x-switchyard-cache").is_none(), "not cached");
    assert_eq!(header(&send(&h, &plain, &ask(Some(0.0)), &asked).await, "x-switchyard-cache"), "miss");
    assert_eq!(header(&send(&h, &plain, &ask(Some(0.0)), &asked).await, "x-switchyard-cache"), "hit");
    // A key of its own opted in, in an organisation that did not.
    let (key_id, own) = h.new_key(&org, json!({"response_cache_ttl_seconds": 60})).await;
    let mut other = ask(Some(0.0));
    other["messages"][0]["content"] = json!("A question of the key's own");
    assert_eq!(header(&send(&h, &own, &other, &[]).await, "x-switchyard-cache"), "miss");
    assert_eq!(header(&send(&h, &own, &other, &[]).await, "x-switchyard-cache"), "hit");
    // Turned off again by PATCH (null): the key cache reloads, and the cache is not asked.
    let resp = h
        .client
        .patch(h.url(&format!("/admin/v1/keys/{key_id}")))
        .bearer_auth(crate::support::MASTER_KEY)
        .json(&json!({"response_cache_ttl_seconds": null}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.json::<Value>().await.unwrap()["response_cache_ttl_seconds"], Value::Null);
    let mut off = false;
    for _ in 0..100 {
        if send(&h, &own, &other, &[]).await.headers().get("x-switchyard-cache").is_none() {
            off = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(off, "the key's opt-in was withdrawn");
    let (status, _) = crate::support::error_of(
        h.post("/admin/v1/keys")
            .json(&json!({"organization_id": org["id"], "response_cache_ttl_seconds": -5}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 400, "a TTL out of range is refused");
}

/// With Redis, what one replica kept answers on another.
#[tokio::test]
async fn with_redis_a_replica_answers_from_what_another_kept() {
    let h = Harness::start().await;
    if !h.has_redis() {
        eprintln!("skipped: no REDIS_URL, so replicas share no cache entries");
        return;
    }
    let other = h.replica().await;
    let mut body = ask(Some(0.0));
    body["messages"][0]["content"] = json!(format!("A question asked once: {}", uuid::Uuid::new_v4()));
    let asked = |url: String| {
        h.client
            .post(url)
            .bearer_auth(crate::support::MASTER_KEY)
            .header("cache-control", "max-age=60")
            .json(&body)
            .send()
    };
    let first = asked(h.url("/v1/chat/completions")).await.unwrap();
    assert_eq!(header(&first, "x-switchyard-cache"), "miss");
    let mut hit = false;
    for _ in 0..100 {
        let resp = asked(other.url("/v1/chat/completions")).await.unwrap();
        if header(&resp, "x-switchyard-cache") == "hit" {
            hit = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(hit, "the other replica answered from the kept answer");
}

#[tokio::test]
async fn a_fallbacks_answer_is_not_kept_as_the_first_targets_and_max_age_refuses_old_answers() {
    let h = Harness::with(Setup {
        extra: r#"
[[models]]
name = "second-model"
provider = "upstream"
upstream = "second-up"

[[aliases]]
name = "pair"
targets = ["test-model", "second-model"]
"#
        .into(),
        ..Setup::default()
    })
    .await;
    let secret = opted_in_key(&h, json!({})).await;
    let mut body = ask(Some(0.0));
    body["model"] = json!("pair");
    h.upstream.state.push_fault(Some("upstream-model-id"), Fault::status(503));
    let resp = send(&h, &secret, &body, &[]).await;
    assert_eq!(header(&resp, "x-switchyard-model"), "second-model");
    assert_eq!(header(&resp, "x-switchyard-cache"), "miss");
    let resp = send(&h, &secret, &body, &[]).await;
    assert_eq!(header(&resp, "x-switchyard-model"), "test-model");
    assert_eq!(header(&resp, "x-switchyard-cache"), "miss", "the fallback's answer was not kept as the first's");
    let resp = send(&h, &secret, &body, &[]).await;
    assert_eq!(header(&resp, "x-switchyard-cache"), "hit");
    assert_eq!(header(&resp, "age"), "0");
    // An answer older than the request's max-age is not served (and a fresh one is kept).
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let resp = send(&h, &secret, &body, &[("cache-control", "max-age=1")]).await;
    assert_eq!(header(&resp, "x-switchyard-cache"), "miss");
    let resp = send(&h, &secret, &body, &[]).await;
    assert_eq!(header(&resp, "x-switchyard-cache"), "hit");
    // A key's own 0 turns the cache off in an organisation that opted in.
    let org =
        h.new_org(json!({"name": format!("Cached {}", uuid::Uuid::new_v4()), "response_cache_ttl_seconds": 300})).await;
    let (_, off) = h.new_key(&org, json!({"response_cache_ttl_seconds": 0})).await;
    let resp = send(&h, &off, &ask(Some(0.0)), &[]).await;
    assert!(resp.headers().get("x-switchyard-cache").is_none(), "off for this key");
}
