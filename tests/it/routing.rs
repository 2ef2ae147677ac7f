//! The router end to end: aliases falling through labs, timeouts, circuit breakers, guards, tiers, and
//! what the response headers say about it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use switchyard::app::{AppOptions, AppState};
use switchyard::config::Config;
use switchyard::fake::Fault;
use switchyard::routing::{Caller, RequestFeatures};

use crate::support::{Harness, Setup, error_of, header, hello, payloads, sse_events};

/// Three "labs" on the fake upstream, an alias chaining them, and models with small windows or few
/// capabilities for the guards.
const LABS: &str = r#"
[router]
breaker_failures = 2
breaker_cooldown_ms = 60000

[[providers]]
name = "lab-a"
kind = "openai"
base_url = "{base}"
api_key_env = "TEST_UPSTREAM_KEY"

[[providers]]
name = "lab-b"
kind = "openai"
base_url = "{base}"
api_key_env = "TEST_UPSTREAM_KEY"
timeouts = { first_byte_ms = 400 }

[[providers]]
name = "lab-c"
kind = "openai"
base_url = "{base}"
api_key_env = "TEST_UPSTREAM_KEY"

[[models]]
name = "a-model"
provider = "lab-a"
upstream = "a-up"
context_window = 200000
input_per_mtok = 1.0
output_per_mtok = 4.0

[[models]]
name = "b-model"
provider = "lab-b"
upstream = "b-up"
context_window = 200000
input_per_mtok = 0.1
output_per_mtok = 0.4
speed = "fast"
quality = 60

[[models]]
name = "c-model"
provider = "lab-c"
upstream = "c-up"
context_window = 1000000
input_per_mtok = 3.0
output_per_mtok = 15.0
strengths = ["coding"]
quality = 90

[[models]]
name = "tiny-model"
provider = "lab-a"
upstream = "tiny-up"
context_window = 300
capabilities = ["json_schema"]

[[aliases]]
name = "chain"
targets = ["a-model", "b-model", "c-model"]

[[aliases]]
name = "tiny-first"
targets = ["tiny-model", "c-model"]

[[aliases]]
name = "old-chain"
targets = ["chain"]
deprecated = "use chain"

[[tiers]]
name = "economy"
models = ["a-model", "b-model", "c-model"]
"#;

async fn labs() -> Harness {
    Harness::with(Setup { extra: LABS.into(), ..Setup::default() }).await
}

fn upstream_models(h: &Harness) -> Vec<String> {
    h.upstream.state.requests().iter().map(|r| r.body["model"].as_str().unwrap_or_default().to_owned()).collect()
}

#[tokio::test]
async fn a_429_on_the_primary_is_answered_by_the_next_lab_and_the_headers_say_so() {
    let h = labs().await;
    h.upstream.state.push_fault(Some("a-up"), Fault::status(429));
    let resp = h.chat(hello("chain")).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "x-switchyard-model"), "b-model");
    assert_eq!(header(&resp, "x-switchyard-provider"), "lab-b");
    assert_eq!(header(&resp, "x-switchyard-routed-from"), "chain");
    assert_eq!(header(&resp, "x-switchyard-attempts"), "2; a-model=429");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["model"], "b-model");
    assert_eq!(upstream_models(&h), ["a-up", "b-up"]);
}

#[tokio::test]
async fn the_done_when_scenario_429_then_a_stall_then_an_answer_within_the_deadlines() {
    let h = labs().await;
    h.upstream.state.push_fault(Some("a-up"), Fault::status(429));
    h.upstream.state.push_fault(Some("b-up"), Fault::StallBeforeHeaders(Duration::from_secs(30)));
    let started = Instant::now();
    let resp = h.chat(hello("chain")).await;
    assert_eq!(resp.status(), 200);
    assert!(started.elapsed() < Duration::from_secs(10), "the stall was cut at lab-b's first-byte timeout");
    assert_eq!(header(&resp, "x-switchyard-model"), "c-model");
    assert_eq!(header(&resp, "x-switchyard-attempts"), "3; a-model=429, b-model=timeout_first_byte");
}

#[tokio::test]
async fn a_stream_whose_upstream_fails_before_its_first_byte_falls_back_invisibly() {
    let h = labs().await;
    h.upstream.state.push_fault(Some("a-up"), Fault::status(503));
    h.upstream.state.push_fault(Some("b-up"), Fault::ErrorMidStream { after_chunks: 1 });
    let mut body = hello("chain");
    body["stream"] = json!(true);
    let resp = h.chat(body).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "x-switchyard-model"), "c-model");
    let (chunks, done) = payloads(&sse_events(resp).await);
    assert!(done);
    assert!(
        chunks.iter().all(|c| c.get("error").is_none() && c["model"] == "c-model"),
        "the client sees one clean stream"
    );
}

#[tokio::test]
async fn a_breaker_opens_after_repeated_failures_and_later_requests_skip_the_dead_target_at_once() {
    let h = labs().await;
    for _ in 0..2 {
        h.upstream.state.push_fault(Some("a-up"), Fault::status(500));
        assert_eq!(h.chat(hello("chain")).await.status(), 200);
    }
    let before = h.upstream.state.requests().len();
    let resp = h.chat(hello("chain")).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "x-switchyard-attempts"), "1; a-model=circuit_open");
    assert_eq!(header(&resp, "x-switchyard-model"), "b-model");
    let new: Vec<String> = upstream_models(&h).split_off(before);
    assert_eq!(new, ["b-up"], "nothing was sent to the open target");
    // Asked for by name alone, an open target is still tried rather than failing blind.
    assert_eq!(h.chat(hello("a-model")).await.status(), 200);
}

#[tokio::test]
async fn a_pass_through_target_keeps_its_own_breaker_across_requests() {
    let h = labs().await;
    let body =
        json!({"model": "lab-a/junk-up", "models": ["b-model"], "messages": [{"role": "user", "content": "Hi"}]});
    for _ in 0..2 {
        h.upstream.state.push_fault(Some("junk-up"), Fault::status(500));
        assert_eq!(h.chat(body.clone()).await.status(), 200);
    }
    let before = h.upstream.state.requests().len();
    let resp = h.chat(body.clone()).await;
    assert_eq!(header(&resp, "x-switchyard-attempts"), "1; lab-a/junk-up=circuit_open");
    let new: Vec<String> = upstream_models(&h).split_off(before);
    assert_eq!(new, ["b-up"], "the open pass-through target was skipped");
    // Another id at the same provider has a breaker of its own.
    let other = json!({"model": "lab-a/other-up", "messages": [{"role": "user", "content": "Hi"}]});
    let resp = h.chat(other).await;
    assert_eq!(header(&resp, "x-switchyard-attempts"), "1");
}

#[tokio::test]
async fn when_every_target_fails_one_error_lists_each_attempt() {
    let h = labs().await;
    h.upstream.state.push_fault(Some("a-up"), Fault::status(500));
    h.upstream.state.push_fault(Some("b-up"), Fault::status(503));
    h.upstream.state.push_fault(Some("c-up"), Fault::status(502));
    let resp = h.chat(hello("chain")).await;
    assert_eq!(header(&resp, "x-switchyard-attempts"), "3; a-model=500, b-model=503, c-model=502");
    let (status, body) = error_of(resp).await;
    assert_eq!(status, 502);
    let message = body["error"]["message"].as_str().unwrap();
    for part in ["a-model (lab-a): 500", "b-model (lab-b): 503", "c-model (lab-c): 502"] {
        assert!(message.contains(part), "{message}");
    }
}

#[tokio::test]
async fn client_errors_are_returned_not_retried_but_a_context_overflow_moves_to_a_larger_window() {
    let h = labs().await;
    h.upstream.state.push_fault(
        Some("a-up"),
        Fault::Status {
            status: 400,
            retry_after_secs: None,
            code: Some("invalid_value".into()),
            message: "bad top_p".into(),
        },
    );
    let (status, _) = error_of(h.chat(hello("chain")).await).await;
    assert_eq!(status, 400);
    assert_eq!(upstream_models(&h), ["a-up"], "a 400 is not retried elsewhere");

    h.upstream.state.push_fault(
        Some("a-up"),
        Fault::Status {
            status: 400,
            retry_after_secs: None,
            code: Some("context_length_exceeded".into()),
            message: "too long".into(),
        },
    );
    let resp = h.chat(hello("chain")).await;
    assert_eq!(resp.status(), 200);
    // b-model's window is no larger than a-model's, so only c-model could help.
    assert_eq!(header(&resp, "x-switchyard-model"), "c-model");
}

#[tokio::test]
async fn the_context_guard_skips_targets_whose_window_is_too_small() {
    let h = labs().await;
    let long = "word ".repeat(400);
    let request = json!({"model": "tiny-first", "messages": [{"role": "user", "content": long}]});
    let resp = h.chat(request.clone()).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "x-switchyard-model"), "c-model");
    assert_eq!(header(&resp, "x-switchyard-attempts"), "1", "the skipped target was never called");
    let explained: Value = h.post("/v1/route/explain").json(&request).send().await.unwrap().json().await.unwrap();
    assert_eq!(explained["skipped"][0]["model"], "tiny-model");
    assert!(explained["skipped"][0]["reason"].as_str().unwrap().starts_with("context window of 300 tokens"));
    assert!(explained["features"]["estimated_prompt_tokens"].as_u64().unwrap() > 300);

    let (status, body) =
        error_of(h.chat(json!({"model": "tiny-model", "messages": [{"role": "user", "content": long}]})).await).await;
    assert_eq!((status, body["error"]["code"].as_str()), (400, Some("context_length_exceeded")));
    // A short prompt fits, and no tokenizer is needed to know it.
    assert_eq!(h.chat(hello("tiny-model")).await.status(), 200);
}

#[tokio::test]
async fn the_capability_guard_never_sends_tools_to_a_model_without_them() {
    let h = labs().await;
    let request = json!({"model": "tiny-first", "messages": [{"role": "user", "content": "hi"}],
        "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]});
    let resp = h.chat(request).await;
    assert_eq!(header(&resp, "x-switchyard-model"), "c-model");
    let (status, body) = error_of(
        h.chat(json!({"model": "tiny-model", "messages": [{"role": "user", "content": "hi"}], "tools": [{"type": "function", "function": {"name": "f"}}]})).await,
    )
    .await;
    assert_eq!((status, body["error"]["code"].as_str()), (400, Some("model_not_capable")));
    assert!(body["error"]["message"].as_str().unwrap().contains("does not support tools"));
}

#[tokio::test]
async fn tiers_order_by_prefer_and_switchyard_fields_are_not_forwarded() {
    let h = labs().await;
    for (prefer, expected) in [
        ("cheap", "b-model"),
        ("quality", "c-model"),
        ("coding", "c-model"),
        ("fast", "b-model"),
        ("balanced", "a-model"),
    ] {
        let resp = h
            .chat(json!({"model": "economy", "prefer": prefer, "messages": [{"role": "user", "content": "hi"}]}))
            .await;
        assert_eq!(header(&resp, "x-switchyard-model"), expected, "prefer={prefer}");
        assert_eq!(header(&resp, "x-switchyard-routed-from"), "economy");
    }
    let seen = h.upstream.last_request().body;
    assert!(seen.get("prefer").is_none(), "prefer is Switchyard's own field");
    let (status, body) = error_of(
        h.chat(json!({"model": "economy", "prefer": "fastest", "messages": [{"role": "user", "content": "hi"}]})).await,
    )
    .await;
    assert_eq!((status, body["error"]["param"].as_str()), (400, Some("prefer")));
}

/// `prefer: fast` starts from the speed classes and then follows what this replica measures: once the
/// "fast" model's streams start slowly and another's start at once, the other is first.
#[tokio::test]
async fn prefer_fast_follows_the_measured_time_to_first_token() {
    let h = labs().await;
    let fast_first = || async {
        let resp = h
            .chat(json!({"model": "economy", "prefer": "fast", "messages": [{"role": "user", "content": "hi"}]}))
            .await;
        header(&resp, "x-switchyard-model")
    };
    assert_eq!(fast_first().await, "b-model", "before any measurement: the declared speed class");
    let stream =
        |model: &'static str| json!({"model": model, "stream": true, "messages": [{"role": "user", "content": "hi"}]});
    for _ in 0..3 {
        h.upstream.state.push_fault(Some("b-up"), Fault::StallBeforeHeaders(Duration::from_millis(350)));
        let resp = h.chat(stream("b-model")).await;
        assert_eq!(header(&resp, "x-switchyard-model"), "b-model");
        resp.text().await.unwrap();
        let resp = h.chat(stream("a-model")).await;
        resp.text().await.unwrap();
    }
    assert_eq!(fast_first().await, "a-model", "b-model measured slower than a-model");
    let models = h.get_json("/v1/models?include_metadata=true").await;
    let b = models["data"].as_array().unwrap().iter().find(|m| m["id"] == "b-model").unwrap();
    assert_eq!(b["metadata"]["speed"], "fast");
    assert!(b["metadata"]["ttft_ms"]["measured"].as_f64().unwrap() >= 300.0, "{b}");
    assert_eq!(b["metadata"]["quality"], 60);
}

#[tokio::test]
async fn provider_slash_model_and_request_level_model_lists_resolve() {
    let h = labs().await;
    let resp = h.chat(hello("lab-c/c-up")).await;
    assert_eq!(header(&resp, "x-switchyard-model"), "c-model");
    let resp = h.chat(hello("lab-b/some-new-model")).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "x-switchyard-model"), "lab-b/some-new-model");
    assert_eq!(h.upstream.last_request().body["model"], "some-new-model");

    h.upstream.state.push_fault(Some("c-up"), Fault::status(500));
    let resp = h
        .chat(json!({"model": "c-model", "models": ["b-model"], "messages": [{"role": "user", "content": "hi"}]}))
        .await;
    assert_eq!(header(&resp, "x-switchyard-model"), "b-model");
    assert!(h.upstream.last_request().body.get("models").is_none());
    let (status, _) = error_of(h.chat(hello("nope/b-up")).await).await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn deprecated_aliases_still_work_and_say_what_to_use() {
    let h = labs().await;
    let resp = h.chat(hello("old-chain")).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "x-switchyard-deprecated"), "use chain");
    assert_eq!(header(&resp, "x-switchyard-model"), "a-model");
}

#[tokio::test]
async fn models_list_shows_aliases_tiers_and_metadata_with_prices_and_chains() {
    let h = labs().await;
    let get = |q: &'static str| {
        let req = h.client.get(h.url(&format!("/v1/models{q}"))).bearer_auth(crate::support::MASTER_KEY);
        async move { req.send().await.unwrap().json::<Value>().await.unwrap() }
    };
    let plain = get("").await;
    let ids: Vec<&str> = plain["data"].as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap()).collect();
    assert!(ids.contains(&"chain") && ids.contains(&"economy") && ids.contains(&"a-model"));
    assert!(plain["data"][0].get("metadata").is_none());
    let meta = get("?include_metadata=true").await;
    let find = |id: &str| meta["data"].as_array().unwrap().iter().find(|m| m["id"] == id).unwrap().clone();
    let a = find("a-model");
    assert_eq!(a["metadata"]["pricing"]["input_per_mtok"], 1.0);
    assert_eq!(a["metadata"]["context_window"], 200000);
    assert_eq!(find("chain")["metadata"]["fallback_chain"], json!(["a-model", "b-model", "c-model"]));
    assert_eq!(find("old-chain")["metadata"]["fallback_chain"], json!(["a-model", "b-model", "c-model"]));
}

/// The shipped configuration and catalog, with every provider's key set.
async fn default_state() -> Arc<AppState> {
    let config = Config::parse(switchyard::config::EMBEDDED_DEFAULT).unwrap();
    let opts = AppOptions {
        env: Arc::new(|_| Some("sk-test".to_owned())),
        database_url: Some(crate::support::database_url()),
        ..AppOptions::default()
    };
    AppState::new(&config, &opts).await.unwrap().0
}

fn chain_of(state: &AppState, model: &str) -> Vec<String> {
    let req: switchyard::schema::ChatRequest = serde_json::from_value(hello(model)).unwrap();
    let features = RequestFeatures::for_chat(&req).unwrap();
    state
        .live()
        .catalog
        .plan(model, &Caller::default(), &features)
        .unwrap()
        .targets
        .iter()
        .map(|m| m.name.clone())
        .collect()
}

#[tokio::test]
async fn every_seed_alias_resolves_to_its_seed_chain() {
    let state = default_state().await;
    let expected: &[(&str, &[&str])] = &[
        (
            "smooth-coding",
            &[
                "qwen3-coder-flash-direct",
                "glm-5.1-direct",
                "kimi-k2-thinking-direct",
                "minimax-m2-direct",
                "qwen3-coder-flash",
                "glm-5.1",
                "kimi-k2-thinking",
            ],
        ),
        (
            "smooth-reasoning",
            &["deepseek-v4-flash", "kimi-k2-thinking-direct", "qwen3-235b-thinking-2507", "kimi-k2-thinking"],
        ),
        (
            "smooth-thinking",
            &["deepseek-v4-flash", "kimi-k2-thinking-direct", "qwen3-235b-thinking-2507", "kimi-k2-thinking"],
        ),
        (
            "smooth-reviewing",
            &[
                "minimax-m2-direct",
                "qwen3-coder-plus-direct",
                "glm-5.1-direct",
                "kimi-k2-thinking-direct",
                "qwen3-coder-plus",
                "glm-5.1",
                "kimi-k2-thinking",
            ],
        ),
        ("smooth-judge", &["groq-llama-3.1-8b", "gemini-2.5-flash", "claude-haiku-4-5", "gpt-5-mini"]),
        ("smooth-summarize", &["gemini-2.5-flash", "qwen3-coder-plus-direct", "gpt-5-mini", "qwen3-coder-plus"]),
        (
            "smooth-planning",
            &[
                "gemini-2.5-flash",
                "deepseek-v4-flash",
                "kimi-k2-thinking-direct",
                "qwen3-coder-plus-direct",
                "claude-haiku-4-5",
                "qwen3-235b-thinking-2507",
                "kimi-k2-thinking",
                "qwen3-coder-plus",
            ],
        ),
        ("smooth-fast", &["groq-llama-3.1-8b", "gemini-2.5-flash-lite", "claude-haiku-4-5", "gpt-5-mini"]),
        ("smooth-coding-qwen", &["qwen3-coder-flash-direct", "qwen3-coder-flash"]),
        ("smooth-fast-gemini", &["gemini-2.5-flash-lite"]),
        ("deepseek-chat", &["deepseek-v4-flash"]),
        ("deepseek-reasoner", &["deepseek-v4-pro"]),
        ("embed-small", &["text-embedding-3-small", "gemini-embedding-001"]),
    ];
    for (alias, chain) in expected {
        if alias.starts_with("embed-") {
            let texts = vec!["hello"];
            let plan =
                state.live().catalog.plan(alias, &Caller::default(), &RequestFeatures::for_embeddings(texts)).unwrap();
            let names: Vec<&str> = plan.targets.iter().map(|m| m.name.as_str()).collect();
            assert_eq!(names, *chain, "{alias}");
            continue;
        }
        assert_eq!(chain_of(&state, alias), *chain, "{alias}");
    }
    // Per-lab variants pin one lab: no cross-vendor chain.
    for alias in state
        .live()
        .catalog
        .aliases()
        .iter()
        .filter(|a| a.name.starts_with("smooth-") && a.name.matches('-').count() == 2)
    {
        let labs: std::collections::HashSet<_> = alias.chain.iter().map(|m| m.lab.clone()).collect();
        assert_eq!(labs.len(), 1, "{} spans {labs:?}", alias.name);
    }
    // Aggregator (OpenRouter) hops only after every direct one, and no provider carries most hops.
    for alias in state.live().catalog.aliases() {
        let aggregated: Vec<bool> = alias.chain.iter().map(|m| m.provider.aggregator).collect();
        assert!(aggregated.windows(2).all(|w| !w[0] || w[1]), "{}: {:?}", alias.name, chain_of(&state, &alias.name));
        let direct: Vec<&str> =
            alias.chain.iter().filter(|m| !m.provider.aggregator).map(|m| m.provider.name.as_str()).collect();
        for p in &direct {
            let n = direct.iter().filter(|x| *x == p).count();
            assert!(direct.len() < 3 || n * 2 <= direct.len(), "{}: {p} carries {n} of {}", alias.name, direct.len());
        }
    }
    assert!(state.live().catalog.models().len() >= 78);
}

/// Seed 003's bands, row by row: the catalog name, provider, region, prices and vision. deepseek-v4-flash
/// and gpt-5-nano are priced differently by seed 000, whose prices win (the catalog says so).
const SEED_003: &[(&str, &str, &str, f64, f64, bool)] = &[
    ("deepseek-v4-flash", "deepseek", "global", 0.14, 0.28, false),
    ("sarvam-30b", "sarvam", "in", 0.03, 0.12, false),
    ("sarvam-105b", "sarvam", "in", 0.048, 0.19, false),
    ("krutrim-llama-4-scout", "krutrim", "in", 0.083, 0.083, false),
    ("mistral-saba-24b", "sarvam", "in", 0.15, 0.15, false),
    ("krutrim-spectre-v2", "krutrim", "in", 0.20, 0.20, false),
    ("doubao-vision-pro-32k", "doubao", "cn", 0.40, 1.00, true),
    ("moonshot-v1-8k-vision-preview", "kimi", "cn", 0.20, 2.00, true),
    ("glm-4-plus", "glm", "cn", 0.69, 0.69, false),
    ("glm-4v-plus", "glm", "cn", 0.69, 0.69, true),
    ("doubao-seed-2.1-turbo", "doubao", "cn", 0.42, 2.08, false),
    ("doubao-seed-2.0-pro", "doubao", "cn", 0.44, 2.22, false),
    ("qwen2.5-vl-72b-instruct", "qwen", "cn", 0.80, 1.00, true),
    ("qwen-vl-max", "qwen", "cn", 0.80, 3.20, true),
    ("moonshot-v1-32k", "kimi", "cn", 1.00, 3.00, false),
    ("doubao-seed-2.1-pro", "doubao", "cn", 0.83, 4.17, false),
    ("grok-4-3", "xai", "global", 1.25, 2.50, false),
    ("qwen-max", "qwen", "cn", 1.60, 6.40, false),
    ("moonshot-v1-128k", "kimi", "cn", 2.00, 5.00, false),
    ("gemini-2.5-pro", "gemini", "global", 1.25, 10.00, true),
    ("claude-sonnet-5", "anthropic", "global", 2.00, 10.00, true),
    ("gpt-4o", "openai", "global", 2.50, 10.00, true),
    ("grok-4", "xai", "global", 3.00, 7.50, false),
    ("claude-sonnet-4-6", "anthropic", "global", 3.00, 15.00, true),
    // cheap-fast
    // Seed 003 marks it text-only; OpenAI's model page and the catalog give it image input.
    ("gpt-5-nano", "openai", "global", 0.20, 1.25, true),
    ("glm-4-flash", "glm", "cn", 0.014, 0.014, false),
    ("doubao-seed-2.0-mini", "doubao", "cn", 0.028, 0.28, false),
    ("doubao-seed-2.0-lite", "doubao", "cn", 0.083, 0.50, false),
    ("krutrim-llama-3-8b", "krutrim", "in", 0.20, 0.20, false),
    ("qwen-plus", "qwen", "cn", 0.18, 0.42, false),
    ("gpt-4o-mini", "openai", "global", 0.15, 0.60, true),
    ("grok-code-fast-1", "xai", "global", 0.20, 1.50, false),
    ("moonshot-v1-8k", "kimi", "cn", 0.20, 2.00, false),
    ("gemini-2.5-flash", "gemini", "global", 0.30, 2.50, true),
    ("krutrim-llama-3-70b", "krutrim", "in", 0.89, 0.89, false),
    ("claude-haiku-4-5", "anthropic", "global", 1.00, 5.00, true),
];

#[tokio::test]
async fn the_catalog_holds_the_seed_tier_tables() {
    let state = default_state().await;
    let c = &state.live().catalog;
    for (i, (name, provider, region, input, output, vision)) in SEED_003.iter().enumerate() {
        let m = c.model(name).unwrap_or_else(|| panic!("{name} is missing"));
        assert_eq!((m.provider.name.as_str(), m.region.as_str()), (*provider, *region), "{name}");
        assert_eq!((m.input_per_mtok, m.output_per_mtok), (Some(*input), Some(*output)), "{name}");
        assert_eq!(m.has(switchyard::config::Capability::Vision), *vision, "{name}");
        let band = if i < 24 { "flagship" } else { "cheap-fast" };
        assert_eq!(c.swap_band_of(name).map(|b| b.0), Some(band), "{name}");
    }
    assert_eq!(c.tier("flagship").unwrap().len(), 24, "25 rows, deepseek-chat being deepseek-v4-flash's alias");
    assert_eq!(c.tier("cheap-fast").unwrap().len(), 12);
    assert_eq!(chain_of(&state, "deepseek-chat"), ["deepseek-v4-flash"]);

    // Seed 004's tiers: every model they name that has a provider here (Bedrock's wait for one), under
    // the seed's name or, for Groq's ids, the catalog's name for the same model.
    let seed_004: &[(&str, &[&str])] = &[
        (
            "economy",
            &[
                "gemini-2.5-flash",
                "gpt-4.1-mini",
                "o4-mini",
                "claude-haiku-4-5",
                "grok-3-mini-beta",
                "llama-3.3-70b-versatile",
                "meta-llama/llama-4-scout-17b-16e-instruct",
                "llama3.1-8b",
                "qwen-3-235b-a22b-instruct-2507",
            ],
        ),
        (
            "standard",
            &[
                "gemini-2.5-pro",
                "gpt-4.1",
                "gpt-5.3-chat-latest",
                "gpt-5.3-codex",
                "gpt-5.1-codex-mini",
                "o3",
                "claude-sonnet-4-6",
                "grok-3-beta",
            ],
        ),
        ("premium", &["gemini-3.1-pro-preview", "claude-opus-4-7", "claude-opus-4-6", "gpt-5.4"]),
    ];
    for (tier, seeded) in seed_004 {
        let members: Vec<&str> = c.tier(tier).unwrap().iter().map(|m| m.name.as_str()).collect();
        for name in *seeded {
            let model = c.model(name).map_or_else(|| chain_of(&state, name)[0].clone(), |m| m.name.clone());
            assert!(members.contains(&model.as_str()), "{tier} lacks {name}");
        }
    }
    // No model in two of them (the seed puts none there).
    let mut seen = std::collections::HashMap::new();
    for tier in ["economy", "standard", "premium"] {
        for m in c.tier(tier).unwrap() {
            assert_eq!(seen.insert(m.name.clone(), tier).filter(|t| *t != tier), None, "{} is in two tiers", m.name);
        }
    }
    // The new providers' models stay out of the global models' chains.
    for m in c.models().iter().filter(|m| m.region == "global") {
        let chains = c.chains(&m.name);
        assert!(chains.is_none_or(|ch| ch.general.iter().all(|h| h.region == "global")), "{}", m.name);
    }
}

#[tokio::test]
async fn a_retry_after_is_waited_out_when_no_other_target_is_left() {
    let h = labs().await;
    h.upstream.state.push_fault(
        Some("c-up"),
        Fault::Status { status: 429, retry_after_secs: Some(1), code: None, message: "slow down".into() },
    );
    let started = Instant::now();
    let resp = h.chat(hello("c-model")).await;
    assert_eq!(resp.status(), 200);
    assert!(started.elapsed() >= Duration::from_millis(900), "the provider's retry-after was honoured");
    assert_eq!(header(&resp, "x-switchyard-attempts"), "2; c-model=429");
}
