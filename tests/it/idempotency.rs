//! Idempotency-Key: a repeated request gets the first answer back without a second upstream call or a
//! second charge; a repeat while the first runs is a 409 (across replicas too), another body a 422, and
//! a first attempt that failed leaves the key free for the retry.

use std::time::Duration;

use serde_json::{Value, json};
use switchyard::fake::Fault;

use crate::support::{Harness, MASTER_KEY, error_of, header, hello};

fn fresh_key() -> String {
    format!("idem-{}", uuid::Uuid::new_v4())
}

#[tokio::test]
async fn a_repeat_gets_the_first_answer_without_a_second_call_or_charge() {
    let h = Harness::start().await;
    let org = h.new_org(json!({"name": "Idempotent"})).await;
    let (_, secret) = h.new_key(&org, json!({"daily_prompt_quota": 1})).await;
    let key = fresh_key();
    let send = |body: Value| {
        h.client
            .post(h.url("/v1/chat/completions"))
            .bearer_auth(&secret)
            .header("Idempotency-Key", &key)
            .json(&body)
            .send()
    };
    let calls = h.upstream.state.requests().len();
    let first = send(hello("test-model")).await.unwrap();
    assert_eq!(first.status(), 200);
    assert!(first.headers().get("idempotent-replayed").is_none());
    let first_model = header(&first, "x-switchyard-model");
    let first_body = first.text().await.unwrap();
    // The kept answer is written in the background: the repeat may briefly see the key still running.
    let mut replayed = None;
    for _ in 0..100 {
        let resp = send(hello("test-model")).await.unwrap();
        if resp.status() == 200 {
            replayed = Some(resp);
            break;
        }
        assert_eq!(resp.status(), 409, "only 'still running' while the answer is being kept");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let replayed = replayed.expect("the repeat is replayed");
    assert_eq!(header(&replayed, "idempotent-replayed"), "true");
    assert_eq!(header(&replayed, "x-switchyard-model"), first_model, "the first answer's headers");
    assert_eq!(replayed.text().await.unwrap(), first_body, "the first answer, byte for byte");
    assert_eq!(h.upstream.state.requests().len(), calls + 1, "one upstream call");
    // Not charged again: the key's one prompt a day is still the first request's.
    let other = h
        .client
        .post(h.url("/v1/chat/completions"))
        .bearer_auth(&secret)
        .json(&hello("test-model"))
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), 429, "the quota counted one prompt, not two");
    // The same key with another body, or on another route: refused.
    let (status, body) = error_of(
        send(json!({"model": "test-model", "messages": [{"role": "user",
        "content": "something else"}]}))
        .await
        .unwrap(),
    )
    .await;
    assert_eq!((status, body["error"]["code"].as_str()), (422, Some("idempotency_key_reused")), "{body}");
    let elsewhere = h
        .client
        .post(h.url("/v1/embeddings"))
        .bearer_auth(&secret)
        .header("Idempotency-Key", &key)
        .json(&json!({"model": "test-model", "input": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(elsewhere.status(), 422);
    // Another key of the same organisation does not see this one's keys.
    let (_, other_secret) = h.new_key(&org, json!({})).await;
    let theirs = h
        .client
        .post(h.url("/v1/chat/completions"))
        .bearer_auth(&other_secret)
        .header("Idempotency-Key", &key)
        .json(&hello("test-model"))
        .send()
        .await
        .unwrap();
    assert_eq!(theirs.status(), 200);
    assert!(theirs.headers().get("idempotent-replayed").is_none(), "a key of its own runs");
}

#[tokio::test]
async fn a_replayed_stream_is_byte_identical_and_a_failed_first_attempt_leaves_the_key_free() {
    let h = Harness::start().await;
    let key = fresh_key();
    let body = json!({"model": "test-model", "stream": true,
                      "messages": [{"role": "user", "content": "Tell me about the gateway"}]});
    let send = || h.post("/v1/chat/completions").header("Idempotency-Key", &key).json(&body).send();
    // The first attempt fails (the only target answers 500): the client's retry with the same key runs.
    h.upstream.state.push_fault(None, Fault::status(500));
    let failed = send().await.unwrap();
    assert!(failed.status().is_server_error(), "{}", failed.status());
    let _ = failed.text().await;
    let mut first = None;
    for _ in 0..100 {
        let resp = send().await.unwrap();
        if resp.status() == 200 {
            first = Some(resp);
            break;
        }
        assert_eq!(resp.status(), 409);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let first = first.expect("the retry ran");
    assert!(first.headers().get("idempotent-replayed").is_none(), "the retry ran, not a replay");
    let first_bytes = first.bytes().await.unwrap();
    assert!(first_bytes.ends_with(b"data: [DONE]\n\n"), "{first_bytes:?}");
    let calls = h.upstream.state.requests().len();
    let mut replayed = None;
    for _ in 0..100 {
        let resp = send().await.unwrap();
        if resp.headers().get("idempotent-replayed").is_some() {
            replayed = Some(resp);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let replayed = replayed.expect("replayed");
    assert_eq!(header(&replayed, "content-type"), "text/event-stream");
    assert_eq!(replayed.bytes().await.unwrap(), first_bytes, "the stream, byte for byte");
    assert_eq!(h.upstream.state.requests().len(), calls, "no upstream call for the replay");
}

#[tokio::test]
async fn concurrent_duplicates_on_two_replicas_make_one_upstream_call() {
    let h = Harness::start().await;
    let other = h.replica().await;
    let key = fresh_key();
    h.upstream.state.push_fault(None, Fault::StallBeforeHeaders(Duration::from_millis(800)));
    let calls = h.upstream.state.requests().len();
    let on = |url: String| {
        h.client.post(url).bearer_auth(MASTER_KEY).header("Idempotency-Key", &key).json(&hello("test-model")).send()
    };
    let first = on(h.url("/v1/chat/completions"));
    let second = async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        on(other.url("/v1/chat/completions")).await
    };
    let (first, second) = tokio::join!(first, second);
    let (first, second) = (first.unwrap(), second.unwrap());
    assert_eq!(first.status(), 200);
    let (status, body) = error_of(second).await;
    assert_eq!((status, body["error"]["code"].as_str()), (409, Some("idempotency_key_in_use")), "{body}");
    assert_eq!(h.upstream.state.requests().len(), calls + 1, "exactly one upstream call");
    let first_body = first.text().await.unwrap();
    let mut replayed = None;
    for _ in 0..100 {
        let resp = on(other.url("/v1/chat/completions")).await.unwrap();
        if resp.status() == 200 {
            replayed = Some(resp.text().await.unwrap());
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(replayed.as_deref(), Some(first_body.as_str()), "the other replica replays the first answer");
    assert_eq!(h.upstream.state.requests().len(), calls + 1);
}

#[tokio::test]
async fn admin_creates_are_idempotent_and_a_replayed_key_creation_shows_no_secret() {
    let h = Harness::start().await;
    let key = fresh_key();
    let name = format!("Once {}", uuid::Uuid::new_v4());
    let create = || h.post("/admin/v1/organizations").header("Idempotency-Key", &key).json(&json!({"name": name}));
    let first: Value = create().send().await.unwrap().json().await.unwrap();
    let mut again = None;
    for _ in 0..100 {
        let resp = create().send().await.unwrap();
        if resp.status() == 201 {
            assert_eq!(header(&resp, "idempotent-replayed"), "true");
            assert_eq!(header(&resp, "cache-control"), "no-store");
            again = Some(resp.json::<Value>().await.unwrap());
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(again.unwrap()["id"], first["id"], "one organisation");
    let search = name.replace(' ', "%20");
    let listed = h.get_json(&format!("/admin/v1/organizations?search={search}")).await;
    let same: Vec<&Value> = listed["data"].as_array().unwrap().iter().filter(|o| o["name"] == name.as_str()).collect();
    assert_eq!(same.len(), 1, "created once");

    let key = fresh_key();
    let body = json!({"organization_id": first["id"], "plan": "unlimited"});
    let create = || h.post("/admin/v1/keys").header("Idempotency-Key", &key).json(&body);
    let made: Value = create().send().await.unwrap().json().await.unwrap();
    assert!(made["key"].as_str().is_some_and(|k| !k.is_empty()), "{made}");
    let mut again = None;
    for _ in 0..100 {
        let resp = create().send().await.unwrap();
        if resp.status() == 201 {
            again = Some(resp.json::<Value>().await.unwrap());
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let again = again.unwrap();
    assert_eq!(again["id"], made["id"], "one key");
    assert!(again.get("key").is_none(), "the secret is shown once, never kept: {again}");
}

#[tokio::test]
async fn a_stream_that_failed_mid_way_is_not_kept() {
    let h = Harness::start().await;
    let key = fresh_key();
    let body = json!({"model": "test-model", "stream": true,
                      "messages": [{"role": "user", "content": "Tell me about the gateway"}]});
    let send = || h.post("/v1/chat/completions").header("Idempotency-Key", &key).json(&body).send();
    h.upstream.state.push_fault(None, Fault::CutMidStream { after_chunks: 3 });
    let cut = send().await.unwrap().text().await.unwrap();
    assert!(cut.contains("\"error\""), "the stream ended with its error event: {cut}");
    let calls = h.upstream.state.requests().len();
    let mut ran = false;
    for _ in 0..100 {
        let resp = send().await.unwrap();
        assert!(resp.headers().get("idempotent-replayed").is_none(), "a failed stream is never replayed");
        if resp.status() == 200 {
            assert!(resp.text().await.unwrap().ends_with("data: [DONE]\n\n"));
            ran = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(ran, "the retry ran");
    assert_eq!(h.upstream.state.requests().len(), calls + 1);
}
