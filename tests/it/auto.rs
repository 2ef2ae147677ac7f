//! `model: "auto"` and `smart/<prefer>`: the conversation is classified into a tier, served by that
//! tier's models, and the headers and `route/explain` say which tier and why.

use serde_json::{Value, json};

use crate::support::{Harness, MASTER_KEY, Setup, error_of, header};

const TIERS: &str = r#"
[[models]]
name = "cheap-model"
provider = "upstream"
upstream = "cheap-up"
input_per_mtok = 0.1
output_per_mtok = 0.4

[[models]]
name = "mid-model"
provider = "upstream"
upstream = "mid-up"
input_per_mtok = 1.0
output_per_mtok = 4.0

[[models]]
name = "top-model"
provider = "upstream"
upstream = "top-up"
input_per_mtok = 10.0
output_per_mtok = 40.0

[[models]]
name = "top-cheaper-model"
provider = "upstream"
upstream = "top2-up"
input_per_mtok = 3.0
output_per_mtok = 12.0

[[tiers]]
name = "economy"
models = ["cheap-model"]

[[tiers]]
name = "standard"
models = ["mid-model"]

[[tiers]]
name = "premium"
models = ["top-model", "top-cheaper-model"]
"#;

fn ask(model: &str, text: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": text}]})
}

#[tokio::test]
async fn auto_serves_each_tier_from_its_models_and_says_so() {
    let h = Harness::with(Setup { extra: TIERS.into(), ..Setup::default() }).await;
    let cases = [
        ("hello!", "economy", "cheap-model"),
        ("Write a Python function that checks whether a string is a palindrome.", "standard", "mid-model"),
        (
            "Prove step by step that the algorithm's complexity is O(n log n), and analyze its invariant.",
            "premium",
            "top-model",
        ),
    ];
    for (text, tier, model) in cases {
        let resp = h.chat(ask("auto", text)).await;
        assert_eq!(resp.status(), 200, "{text}");
        assert_eq!(header(&resp, "x-switchyard-auto-tier"), tier, "{text}");
        let score: f64 = header(&resp, "x-switchyard-auto-score").parse().unwrap();
        assert!((0.0..=1.0).contains(&score));
        assert_eq!(header(&resp, "x-switchyard-model"), model, "{text}");
        assert_eq!(header(&resp, "x-switchyard-routed-from"), "auto");
        // The product pages' names for the same facts.
        assert_eq!(header(&resp, "x-model-router-auto-tier"), tier);
        assert_eq!(header(&resp, "x-model-router-auto-score"), header(&resp, "x-switchyard-auto-score"));
        assert_eq!(header(&resp, "x-model-router-model"), model);
        assert_eq!(header(&resp, "x-model-router-provider"), "upstream");
        assert_eq!(header(&resp, "x-gateway-routed-from"), "auto");
    }
    // `smart/<prefer>` is `auto` with that prefer: the cheaper premium model first.
    let hard = "Design a distributed rate limiter with exact quotas; analyze the trade-offs and failure modes.";
    let resp = h.chat(ask("smart/cheap", hard)).await;
    assert_eq!(header(&resp, "x-switchyard-auto-tier"), "premium");
    assert_eq!(header(&resp, "x-switchyard-model"), "top-cheaper-model");
    let resp = h.chat(ask("smart/balanced", hard)).await;
    assert_eq!(header(&resp, "x-switchyard-model"), "top-model");
    let (status, _) = error_of(h.chat(ask("smart/nonsense", hard)).await).await;
    assert_eq!(status, 404);

    // route/explain shows the features and the score.
    let explained: Value = h
        .client
        .post(h.url("/v1/route/explain"))
        .bearer_auth(MASTER_KEY)
        .json(&ask("auto", hard))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(explained["auto"]["tier"], "premium", "{explained}");
    assert!(explained["auto"]["features"]["reasoning_markers"].as_u64().unwrap() >= 2);
}

#[tokio::test]
async fn auto_without_tiers_is_a_clear_error() {
    let h = Harness::start().await;
    let (status, e) = error_of(h.chat(ask("auto", "hello")).await).await;
    assert_eq!(status, 400, "{e}");
    assert!(e["error"]["message"].as_str().unwrap().contains("economy"), "{e}");
}

#[tokio::test]
async fn the_product_pages_header_names_can_be_turned_off() {
    let extra = format!("{TIERS}\n[router]\nseed_headers = false\n");
    let h = Harness::with(Setup { extra, ..Setup::default() }).await;
    let resp = h.chat(ask("auto", "hello!")).await;
    assert_eq!(header(&resp, "x-switchyard-auto-tier"), "economy");
    assert!(resp.headers().get("x-model-router-auto-tier").is_none());
    assert!(resp.headers().get("x-model-router-model").is_none());
}
