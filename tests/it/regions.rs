//! Regions and explanations: an organisation's traffic goes only to the regions it allows (swaps,
//! fallbacks, tiers, names asked for), and `route/explain` plans for the calling key exactly as its
//! request would be planned, showing nothing the key could not use.

use serde_json::{Value, json};
use switchyard::fake::Fault;

use crate::support::{Harness, MASTER_KEY, Setup, error_of, header, hello};

/// Two global models of two labs and a cheaper one served from India, all in one swap band and one alias.
const REGIONS: &str = r#"
[[providers]]
name = "india"
kind = "openai"
base_url = "{base}"
api_key_env = "TEST_UPSTREAM_KEY"
region = "in"

[[models]]
name = "g-pricey"
lab = "Lab A"
provider = "upstream"
upstream = "g-pricey-id"
input_per_mtok = 3.0
output_per_mtok = 15.0
capabilities = ["tools", "json_schema"]

[[models]]
name = "g-mid"
lab = "Lab B"
provider = "upstream"
upstream = "g-mid-id"
input_per_mtok = 3.0
output_per_mtok = 9.0
capabilities = ["tools", "json_schema"]

[[models]]
name = "in-cheap"
lab = "Lab C"
provider = "india"
upstream = "in-cheap-id"
input_per_mtok = 2.0
output_per_mtok = 6.0
capabilities = ["tools", "json_schema"]

[[tiers]]
name = "band"
swap_band = true
models = ["g-pricey", "g-mid", "in-cheap"]

[[aliases]]
name = "my-alias"
targets = ["g-pricey", "in-cheap", "g-mid"]

[[aliases]]
name = "policy-alias"
targets = ["g-pricey"]
content_policy_targets = ["in-cheap", "g-mid"]
"#;

async fn regions() -> Harness {
    Harness::with(Setup { extra: REGIONS.into(), ..Default::default() }).await
}

async fn chat(h: &Harness, key: &str, body: Value) -> reqwest::Response {
    h.client.post(h.url("/v1/chat/completions")).bearer_auth(key).json(&body).send().await.unwrap()
}

async fn explain(h: &Harness, key: &str, body: Value) -> (u16, Value) {
    let resp = h.client.post(h.url("/v1/route/explain")).bearer_auth(key).json(&body).send().await.unwrap();
    (resp.status().as_u16(), resp.json().await.unwrap())
}

fn names(list: &Value, field: &str) -> Vec<String> {
    list.as_array().unwrap().iter().map(|t| t[field].as_str().unwrap().to_owned()).collect()
}

#[tokio::test]
async fn an_organisations_traffic_goes_only_to_the_regions_it_allows() {
    let h = regions().await;
    let org = h.new_org(json!({"name": "Global only", "allow_cheaper_swaps": true})).await;
    assert_eq!(org["allowed_regions"], json!(["global"]), "global only by default");
    let (_, key) = h.new_key(&org, json!({})).await;

    // A swap goes to the cheapest model of the band in an allowed region, not to the cheaper one in India.
    let resp = chat(&h, &key, hello("g-pricey")).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        (header(&resp, "x-switchyard-model"), header(&resp, "x-switchyard-swap")),
        ("g-mid".into(), "band".into())
    );
    // Asked for by name: refused, saying why, in OpenAI's shape.
    let (status, body) = error_of(chat(&h, &key, hello("in-cheap")).await).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"]["code"], "model_not_allowed");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("region in") && message.contains("allowed: global"), "{message}");
    // Aliases and tiers leave it out: the alias's next target after a 429 is the global one, the tier's
    // cheapest is not the one in India, nor is an alias's content-policy fallback.
    h.upstream.state.push_fault(Some("g-pricey-id"), Fault::status(429));
    assert_eq!(header(&chat(&h, &key, hello("my-alias")).await, "x-switchyard-model"), "g-mid");
    let mut cheapest = hello("band");
    cheapest["prefer"] = json!("cheap");
    assert_eq!(header(&chat(&h, &key, cheapest.clone()).await, "x-switchyard-model"), "g-mid");
    assert_eq!(header(&h.chat(cheapest).await, "x-switchyard-model"), "in-cheap", "the master key's cheapest");
    let refusal = Fault::Status {
        status: 400,
        retry_after_secs: None,
        code: Some("content_policy_violation".into()),
        message: "refused".into(),
    };
    h.upstream.state.push_fault(Some("g-pricey-id"), refusal);
    assert_eq!(header(&chat(&h, &key, hello("policy-alias")).await, "x-switchyard-model"), "g-mid");
    // The one request India served is the master key's above.
    assert_eq!(h.upstream.state.requests().iter().filter(|r| r.body["model"] == "in-cheap-id").count(), 1);
    // The model list shows neither the model nor it as a member of the tier or the aliases.
    let listed = h.get_json_as(&key, "/v1/models?include_metadata=true").await;
    let ids = names(&listed["data"], "id");
    assert!(ids.contains(&"g-mid".to_owned()) && !ids.contains(&"in-cheap".to_owned()), "{ids:?}");
    assert!(ids.contains(&"band".to_owned()) && ids.contains(&"my-alias".to_owned()), "{ids:?}");
    assert!(!listed.to_string().contains("in-cheap"), "{listed}");

    // Allowing India: the swap goes there.
    let path = format!("/admin/v1/organizations/{}", org["id"].as_str().unwrap());
    let patched =
        h.client.patch(h.url(&path)).bearer_auth(MASTER_KEY).json(&json!({"allowed_regions": ["global", "in"]}));
    let patched: Value = patched.send().await.unwrap().json().await.unwrap();
    assert_eq!(patched["allowed_regions"], json!(["global", "in"]));
    let resp = chat(&h, &key, hello("g-pricey")).await;
    assert_eq!(header(&resp, "x-switchyard-model"), "in-cheap");
    assert_eq!(chat(&h, &key, hello("in-cheap")).await.status(), 200);
    let listed = h.get_json_as(&key, "/v1/models").await;
    assert!(names(&listed["data"], "id").contains(&"in-cheap".to_owned()), "{listed}");

    // A misspelt or empty list is refused with the regions that exist.
    for bad in [json!(["global", "mars"]), json!([])] {
        let resp =
            h.client.patch(h.url(&path)).bearer_auth(MASTER_KEY).json(&json!({"allowed_regions": bad})).send().await;
        let (status, body) = error_of(resp.unwrap()).await;
        assert_eq!(status, 400, "{body}");
        assert!(body["error"]["message"].as_str().unwrap().contains("known: global, in"), "{body}");
        assert_eq!(body["error"]["param"], "allowed_regions");
    }
    let created = h.post("/admin/v1/organizations").json(&json!({"name": "x", "allowed_regions": ["moon"]}));
    assert_eq!(created.send().await.unwrap().status(), 400);
}

#[tokio::test]
async fn a_fallback_chain_stays_in_its_models_region() {
    let h = regions().await;
    // The master key may use every region, yet g-pricey's chain does not leave its own.
    h.upstream.state.push_fault(Some("g-pricey-id"), Fault::status(429));
    let resp = h.chat(hello("g-pricey")).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "x-switchyard-model"), "g-mid");
    let (_, explained) = explain(&h, MASTER_KEY, hello("g-pricey")).await;
    assert_eq!(names(&explained["targets"], "model"), ["g-pricey", "g-mid"], "{explained}");
    assert_eq!(explained["fallback_type"], "general");
    assert_eq!(explained["targets"][1]["region"], "global");
    // Named explicitly, a model of another region serves the master key.
    assert_eq!(header(&h.chat(hello("in-cheap")).await, "x-switchyard-model"), "in-cheap");
}

#[tokio::test]
async fn explain_plans_for_the_calling_key_as_its_request_would_be_planned() {
    let h = regions().await;
    let org = h.new_org(json!({"name": "Narrow", "allow_cheaper_swaps": true})).await;
    let (key_id, key) = h.new_key(&org, json!({"models": ["my-alias", "g-pricey"]})).await;

    // An alias the allowlist names: its members in allowed regions, the one in India unseen.
    let (status, alias) = explain(&h, &key, hello("my-alias")).await;
    assert_eq!(status, 200, "{alias}");
    assert_eq!(names(&alias["targets"], "model"), ["g-pricey", "g-mid"], "{alias}");
    assert!(!alias.to_string().contains("in-cheap"), "{alias}");
    assert_eq!(alias["caller"]["key"], key_id.as_str());
    assert_eq!(alias["caller"]["allowed_regions"], json!(["global"]));
    // And the request itself follows that plan: the first target failing, the second answers.
    h.upstream.state.push_fault(Some("g-pricey-id"), Fault::status(429));
    assert_eq!(header(&chat(&h, &key, hello("my-alias")).await, "x-switchyard-model"), "g-mid");

    // A plain name: its chain holds only what the allowlist names itself (nothing here), and no swap to
    // a model the key may not name.
    let (_, plain) = explain(&h, &key, hello("g-pricey")).await;
    assert_eq!(names(&plain["targets"], "model"), ["g-pricey"], "{plain}");
    assert_eq!(plain["swap"], Value::Null);
    // The master key's explanation of the same request differs: the whole chain, the swap is not its.
    let (_, master) = explain(&h, MASTER_KEY, hello("g-pricey")).await;
    assert_eq!(names(&master["targets"], "model"), ["g-pricey", "g-mid"], "{master}");

    // A tier: only what the allowlist names, nothing of the rest mentioned.
    let (status, tier) = explain(&h, &key, hello("band")).await;
    assert_eq!(status, 200, "{tier}");
    assert_eq!(names(&tier["targets"], "model"), ["g-pricey"], "{tier}");
    let text = tier.to_string();
    assert!(!text.contains("g-mid") && !text.contains("in-cheap"), "{text}");
    // What the key may not use is refused as its request would be.
    let (status, refused) = explain(&h, &key, hello("g-mid")).await;
    assert_eq!(status, 403, "{refused}");
    assert_eq!(refused["error"]["code"], "model_not_allowed");
    assert_eq!(error_of(chat(&h, &key, hello("g-mid")).await).await.0, 403);

    // Entries of a `models` list the key named itself are reported as not allowed, however named.
    let mut listed = hello("g-pricey");
    listed["models"] = json!(["upstream/g-mid-id", "india/in-cheap-id", "no-such-model"]);
    let resp = chat(&h, &key, listed).await;
    assert_eq!(resp.status(), 200);
    let attempts = header(&resp, "x-switchyard-attempts");
    for entry in ["g-mid", "in-cheap"] {
        assert!(attempts.contains(entry), "{attempts}");
    }
    assert_eq!(attempts.matches("not_allowed").count(), 2, "{attempts}");
    assert!(attempts.contains("unknown_model"), "{attempts}");

    // The routing headers count: `explicit` means exactly the model.
    let exact = h
        .client
        .post(h.url("/v1/route/explain"))
        .bearer_auth(MASTER_KEY)
        .header("x-gateway-routing", "explicit")
        .json(&hello("g-pricey"))
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap();
    assert_eq!(names(&exact["targets"], "model"), ["g-pricey"], "{exact}");
    assert_eq!(exact["fallback_type"], Value::Null);
    assert_eq!(exact["caller"]["exact_model"], true);
}
