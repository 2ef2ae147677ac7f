//! `POST /v1/rerank` in Cohere's shape, through the router: a Cohere-shaped `/rerank` (Jina, vLLM; the
//! fake's), Cohere's own `/v2/rerank`, fallbacks between rerank models, refusals named by `param`, and
//! one ledger row with the provider's token count.

use serde_json::{Value, json};

use crate::support::{Harness, MASTER_KEY, Setup, error_of, header};

const MODELS: &str = r#"
[[providers]]
name = "jina-like"
kind = "openai"
base_url = "{base}"
api_key_env = "TEST_UPSTREAM_KEY"
quirks = { rerank = "compatible" }

[[providers]]
name = "cohere"
kind = "openai"
preset = "cohere"
base_url = "{base}"
api_key_env = "TEST_UPSTREAM_KEY"

[[models]]
name = "rerank-fake"
provider = "jina-like"
upstream = "fake-rerank-v1"
capabilities = ["rerank"]
input_per_mtok = 50.0

[[models]]
name = "fake-chat-undeclared"
provider = "jina-like"

[[models]]
name = "rerank-cohere"
provider = "cohere"
upstream = "rerank-v3.5"
capabilities = ["rerank"]

[[models]]
name = "dead-rerank"
provider = "nowhere"
capabilities = ["rerank"]

[[aliases]]
name = "rerank-any"
targets = ["dead-rerank", "rerank-fake"]

[input]
max_rerank_documents = 4
"#;

async fn harness() -> Harness {
    Harness::with(Setup { extra: MODELS.to_owned(), ..Setup::default() }).await
}

async fn rerank(h: &Harness, path: &str, body: Value) -> reqwest::Response {
    h.client.post(h.url(path)).bearer_auth(MASTER_KEY).json(&body).send().await.unwrap()
}

/// What `return_documents` gives back for document `i`: a string as `{"text"}`, an object as it was sent.
fn returned(i: usize) -> Value {
    match &documents()[i] {
        Value::String(s) => json!({"text": s}),
        other => other.clone(),
    }
}

fn documents() -> Value {
    json!([
        "Paris is the capital of France",
        {"text": "Berlin is in Germany", "id": "doc-b"},
        "France has a capital: Paris, its largest city"
    ])
}

#[tokio::test]
async fn documents_are_ranked_in_cohere_shape_with_the_callers_own_documents() {
    let h = harness().await;
    let body = json!({"model": "rerank-fake", "query": "capital of France", "documents": documents(),
                      "top_n": 2, "return_documents": true});
    let resp = rerank(&h, "/v1/rerank", body).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "x-switchyard-model"), "rerank-fake");
    let answer: Value = resp.json().await.unwrap();
    let results = answer["results"].as_array().unwrap();
    assert_eq!(results.len(), 2, "top_n: {answer}");
    let scores: Vec<f64> = results.iter().map(|r| r["relevance_score"].as_f64().unwrap()).collect();
    assert!(scores[0] >= scores[1], "by relevance: {answer}");
    let indexes: Vec<u64> = results.iter().map(|r| r["index"].as_u64().unwrap()).collect();
    assert!(!indexes.contains(&1), "the German document is not in the top two: {answer}");
    for r in results {
        let i = r["index"].as_u64().unwrap() as usize;
        assert_eq!(r["document"], returned(i), "the caller's own document: {answer}");
    }
    assert_eq!(answer["model"], "rerank-fake");
    assert!(answer["id"].as_str().unwrap().starts_with("rerank-"));

    // The provider was sent the upstream id and plain strings.
    let sent = h.upstream.last_request().body;
    assert_eq!(sent["model"], "fake-rerank-v1");
    assert_eq!(sent["documents"][1], "Berlin is in Germany");
    assert_eq!(sent["top_n"], 2);
    assert!(sent.get("return_documents").is_none());

    // An object document comes back as it was sent.
    let all = rerank(
        &h,
        "/v1/rerank",
        json!({"model": "rerank-fake", "query": "Germany", "documents": documents(), "return_documents": true}),
    )
    .await;
    let all: Value = all.json().await.unwrap();
    assert_eq!(all["results"][0]["index"], 1);
    assert_eq!(all["results"][0]["document"], json!({"text": "Berlin is in Germany", "id": "doc-b"}));
    assert_eq!(all["results"].as_array().unwrap().len(), 3);

    // One ledger row each, billed on the provider's count at the model's price.
    let records = h.usage.wait_for(2).await;
    let row = records.iter().find(|r| r.requested_model == "rerank-fake").unwrap();
    // The fake counts a token per four characters of the query and of each document.
    let texts = ["capital of France", "Paris is the capital of France", "Berlin is in Germany"];
    let tokens: u64 = texts
        .iter()
        .chain(["France has a capital: Paris, its largest city"].iter())
        .map(|t| t.len().div_ceil(4) as u64)
        .sum();
    assert_eq!(answer["usage"]["total_tokens"], tokens, "{answer}");
    assert_eq!(row.prompt_tokens, tokens);
    assert_eq!(row.completion_tokens, 0);
    assert_eq!(row.usage_source, switchyard::usage::UsageSource::Provider);
    assert_eq!(row.cost_micros, Some(tokens as i64 * 50), "$50 a million tokens is 50 micro-dollars a token");
}

#[tokio::test]
async fn cohere_is_asked_on_its_own_v2_rerank_and_answered_the_same_way() {
    let h = harness().await;
    let body = json!({"model": "rerank-cohere", "query": "capital of France", "documents": documents(),
                      "return_documents": true});
    let resp = rerank(&h, "/v2/rerank", body).await;
    assert_eq!(resp.status(), 200);
    let answer: Value = resp.json().await.unwrap();
    // Cohere's own route answers without documents and with search units: the gateway adds the documents.
    assert_eq!(answer["meta"]["billed_units"]["search_units"], 1, "{answer}");
    let id = answer["id"].as_str().unwrap();
    assert!(id.strip_prefix("rerank-").is_some_and(|n| n.parse::<u64>().is_ok()), "Cohere's own id is kept: {id}");
    let results = answer["results"].as_array().unwrap();
    assert_eq!(results.len(), 3);
    for r in results {
        let i = r["index"].as_u64().unwrap() as usize;
        assert_eq!(r["document"], returned(i));
    }
    let sent = h.upstream.last_request();
    assert_eq!(sent.body["model"], "rerank-v3.5");
    assert_eq!(sent.headers["authorization"], format!("Bearer {}", crate::support::PROVIDER_KEY));
    // No token count from Cohere and no price: estimated tokens, no cost guessed.
    let records = h.usage.wait_for(1).await;
    let row = records.iter().find(|r| r.requested_model == "rerank-cohere").unwrap();
    assert_eq!(row.cost_micros, None);
    assert!(row.prompt_tokens > 0);
}

#[tokio::test]
async fn a_rerank_falls_back_to_the_next_rerank_model() {
    let h = harness().await;
    let resp =
        rerank(&h, "/v1/rerank", json!({"model": "rerank-any", "query": "Paris", "documents": documents()})).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "x-switchyard-model"), "rerank-fake");
    let attempts = header(&resp, "x-switchyard-attempts");
    assert!(attempts.starts_with("2; dead-rerank="), "{attempts}");
}

#[tokio::test]
async fn bad_reranks_are_refused_with_the_field_that_is_wrong() {
    let h = harness().await;
    let cases = [
        (json!({"model": "rerank-fake", "documents": ["a"]}), "query"),
        (json!({"model": "rerank-fake", "query": " ", "documents": ["a"]}), "query"),
        (json!({"model": "rerank-fake", "query": "q", "documents": []}), "documents"),
        (json!({"model": "rerank-fake", "query": "q", "documents": ["a", 5]}), "documents[1]"),
        (json!({"model": "rerank-fake", "query": "q", "documents": ["a", {"title": "no text"}]}), "documents[1]"),
        (json!({"model": "rerank-fake", "query": "q", "documents": ["a", "b", "c", "d", "e"]}), "documents"),
        (json!({"model": "rerank-fake", "query": "q", "documents": ["a"], "top_n": 0}), "top_n"),
        (json!({"model": "rerank-fake", "query": "q", "documents": ["a"], "top_n": -1}), "top_n"),
    ];
    for (body, param) in cases {
        let (status, err) = error_of(rerank(&h, "/v1/rerank", body.clone()).await).await;
        assert_eq!(status, 400, "{body}: {err}");
        assert_eq!(err["error"]["param"], param, "{body}: {err}");
        assert_eq!(err["error"]["type"], "invalid_request_error");
    }
    // A chat model does not rerank, and a rerank model does not chat.
    let (status, err) =
        error_of(rerank(&h, "/v1/rerank", json!({"model": "test-model", "query": "q", "documents": ["a"]})).await)
            .await;
    assert_eq!(status, 400, "{err}");
    assert!(err["error"]["message"].as_str().unwrap().contains("not a rerank model"), "{err}");
    let (status, err) = error_of(h.chat(crate::support::hello("rerank-fake")).await).await;
    assert_eq!(status, 400, "{err}");
    assert!(err["error"]["message"].as_str().unwrap().contains("is a rerank model"), "{err}");
}

#[tokio::test]
async fn the_gateway_sorts_cuts_and_checks_what_a_provider_ranked() {
    let h = harness().await;
    // A provider that answers in document order and ignores top_n: sorted and cut here.
    let body = json!({"model": "rerank-fake", "query": "unsorted Germany", "documents": documents(), "top_n": 1});
    let answer: Value = rerank(&h, "/v1/rerank", body).await.json().await.unwrap();
    assert_eq!(answer["results"].as_array().unwrap().len(), 1, "{answer}");
    assert_eq!(answer["results"][0]["index"], 1, "the German document is the most relevant: {answer}");
    // One that ranks a document twice is not believed.
    let body = json!({"model": "rerank-fake", "query": "duplicate", "documents": documents()});
    let (status, err) = error_of(rerank(&h, "/v1/rerank", body).await).await;
    assert_eq!(status, 502, "{err}");
}

#[tokio::test]
async fn a_refused_rerank_sends_nothing_upstream() {
    let h = harness().await;
    let sent = h.upstream.state.requests().len();
    for body in [
        json!({"model": "rerank-fake", "query": "q", "documents": []}),
        json!({"model": "test-model", "query": "q", "documents": ["a"]}),
        json!({"model": "fake-chat-undeclared", "query": "q", "documents": ["a"]}),
    ] {
        let resp = rerank(&h, "/v1/rerank", body.clone()).await;
        assert!(resp.status().is_client_error(), "{body}: {}", resp.status());
    }
    assert_eq!(h.upstream.state.requests().len(), sent, "nothing reached the provider");
}
