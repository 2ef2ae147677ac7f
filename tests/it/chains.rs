//! Plain model names fall back along their derived chains: the same model at another provider first,
//! then other labs in the price band; `x-gateway-routing: explicit`, an organisation's switch and a key's
//! allowlist keep a request on the model it named; unknown entries of a `models` list are skipped and
//! named; `/v1/models` shows each chain type.

use serde_json::{Value, json};
use switchyard::fake::Fault;

use crate::support::{Harness, MASTER_KEY, Setup, error_of, header, hello};

const LABS: &str = r#"
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

[[providers]]
name = "lab-c"
kind = "openai"
base_url = "{base}"
api_key_env = "TEST_UPSTREAM_KEY"

[[models]]
name = "x-model"
lab = "X"
provider = "lab-a"
upstream = "x-up"
input_per_mtok = 1.0
output_per_mtok = 4.0
capabilities = ["tools"]

[[models]]
name = "x-model-direct"
lab = "X"
provider = "lab-b"
upstream = "xd-up"
input_per_mtok = 1.0
output_per_mtok = 4.0
capabilities = ["tools"]

[[models]]
name = "y-model"
lab = "Y"
provider = "lab-b"
upstream = "y-up"
input_per_mtok = 1.0
output_per_mtok = 5.0
capabilities = ["tools"]

[[models]]
name = "z-model"
lab = "Z"
provider = "lab-c"
upstream = "z-up"
input_per_mtok = 1.5
output_per_mtok = 6.0
capabilities = ["tools", "vision"]

[[models]]
name = "no-tools-model"
lab = "V"
provider = "lab-c"
upstream = "v-up"
input_per_mtok = 1.0
output_per_mtok = 4.0
capabilities = []

[[models]]
name = "dear-model"
lab = "W"
provider = "lab-c"
upstream = "w-up"
input_per_mtok = 100.0
output_per_mtok = 400.0
capabilities = ["tools"]
"#;

async fn labs() -> Harness {
    Harness::with(Setup { extra: LABS.into(), ..Setup::default() }).await
}

/// An admin call with the master key that must succeed; its JSON.
async fn admin(h: &Harness, method: reqwest::Method, path: &str, body: Value) -> Value {
    let resp = h.client.request(method, h.url(path)).bearer_auth(MASTER_KEY).json(&body).send().await.unwrap();
    assert!(resp.status().is_success(), "{path}: {}", resp.status());
    resp.json().await.unwrap()
}

#[tokio::test]
async fn a_plain_model_name_is_answered_along_its_chain_and_the_headers_say_so() {
    let h = labs().await;
    h.upstream.state.push_fault(Some("x-up"), Fault::status(429));
    let resp = h.chat(hello("x-model")).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "x-switchyard-model"), "x-model-direct", "the same model at another provider first");
    assert_eq!(header(&resp, "x-switchyard-routed-from"), "x-model");
    assert_eq!(header(&resp, "x-switchyard-attempts"), "2; x-model=429");

    h.upstream.state.push_fault(Some("x-up"), Fault::status(503));
    h.upstream.state.push_fault(Some("xd-up"), Fault::status(429));
    let resp = h.chat(hello("x-model")).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "x-switchyard-model"), "y-model", "then another lab");
    assert_eq!(header(&resp, "x-switchyard-provider"), "lab-b");
    assert_eq!(header(&resp, "x-switchyard-attempts"), "3; x-model=503, x-model-direct=429");

    // A client error is the caller's: no fallback.
    h.upstream.state.push_fault(Some("x-up"), Fault::status(400));
    let resp = h.chat(hello("x-model")).await;
    assert_eq!(resp.status(), 400);
}

#[tokio::test]
async fn explicit_routing_an_organisation_switch_and_an_allowlist_keep_a_request_on_its_model() {
    let h = labs().await;
    h.upstream.state.push_fault(Some("x-up"), Fault::status(429));
    let resp = h
        .post("/v1/chat/completions")
        .header("x-gateway-routing", "explicit")
        .json(&hello("x-model"))
        .send()
        .await
        .unwrap();
    let (status, _) = error_of(resp).await;
    assert_eq!(status, 429, "exactly this model: its 429 reaches the caller");

    let org = h.new_org(json!({"name": "Exact", "model_fallbacks": false})).await;
    assert_eq!(org["model_fallbacks"], false);
    let (_, secret) = h.new_key(&org, json!({})).await;
    let secret = secret.as_str();
    let send = || h.client.post(h.url("/v1/chat/completions")).bearer_auth(secret).json(&hello("x-model")).send();
    h.upstream.state.push_fault(Some("x-up"), Fault::status(429));
    assert_eq!(send().await.unwrap().status(), 429, "the organisation turned model fallbacks off");
    let org = admin(
        &h,
        reqwest::Method::PATCH,
        &format!("/admin/v1/organizations/{}", org["id"].as_str().unwrap()),
        json!({"model_fallbacks": true}),
    )
    .await;
    assert_eq!(org["model_fallbacks"], true);
    h.upstream.state.push_fault(Some("x-up"), Fault::status(429));
    let resp = send().await.unwrap();
    assert_eq!(resp.status(), 200, "and on again");
    assert_eq!(header(&resp, "x-switchyard-model"), "x-model-direct");

    // A key allowed only x-model is never answered by a model it could not name.
    let (_, only) = h.new_key(&org, json!({"models": ["x-model"]})).await;
    h.upstream.state.push_fault(Some("x-up"), Fault::status(429));
    let resp =
        h.client.post(h.url("/v1/chat/completions")).bearer_auth(&only).json(&hello("x-model")).send().await.unwrap();
    assert_eq!(resp.status(), 429);
}

#[tokio::test]
async fn a_chain_keeps_what_the_request_needs_and_stays_in_the_price_band() {
    let h = labs().await;
    let meta = h.get_json("/v1/models/x-model?include_metadata=true").await;
    let general: Vec<&str> =
        meta["metadata"]["fallbacks"]["general"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    assert_eq!(general, ["x-model-direct", "y-model", "z-model"], "no model without tools, none far pricier");
    let policy = &meta["metadata"]["fallbacks"]["content_policy"];
    assert_eq!(policy, &json!(["y-model", "z-model"]), "another lab's policy");

    let list = h.get_json("/v1/models?include_metadata=true&fallback_type=general").await;
    let y = list["data"].as_array().unwrap().iter().find(|m| m["id"] == "y-model").unwrap();
    assert_eq!(y["metadata"]["fallback_chain"][0], "x-model");
    let resp = h
        .client
        .get(h.url("/v1/models?include_metadata=true&fallback_type=cheapest"))
        .bearer_auth(MASTER_KEY)
        .send()
        .await
        .unwrap();
    let (status, e) = error_of(resp).await;
    assert_eq!((status, e["error"]["param"].as_str()), (400, Some("fallback_type")));

    // With an image, only the hop that takes images can stand in.
    let image = json!({"model": "x-model", "messages": [{"role": "user", "content": [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}
    ]}]});
    let resp = h.chat(image).await;
    let (status, _) = error_of(resp).await;
    assert_eq!(status, 400, "x-model takes no images, and is not replaced by one that does");
}

#[tokio::test]
async fn an_unknown_entry_of_a_models_list_is_skipped_and_named() {
    let h = labs().await;
    let body = json!({"model": "nope-model", "models": ["also-nope", "y-model"],
                      "messages": [{"role": "user", "content": "Hi"}]});
    let resp = h.chat(body).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "x-switchyard-model"), "y-model");
    let attempts = header(&resp, "x-switchyard-attempts");
    assert!(
        attempts.contains("nope-model=unknown_model") && attempts.contains("also-nope=unknown_model"),
        "{attempts}"
    );

    let body = json!({"model": "nope-model", "models": ["also-nope"], "messages": [{"role": "user", "content": "Hi"}]});
    let (status, e) = error_of(h.chat(body).await).await;
    assert_eq!(status, 404, "{e}");
}

#[tokio::test]
async fn model_info_lists_models_in_litellms_shape_with_their_chains() {
    let h = labs().await;
    let info = h.get_json("/model/info?include_metadata=true&fallback_type=content_policy").await;
    let x = info["data"].as_array().unwrap().iter().find(|m| m["model_name"] == "x-model").unwrap();
    assert_eq!(x["model_info"]["mode"], "chat");
    assert_eq!(x["model_info"]["input_cost_per_token"], 1e-6);
    assert_eq!(x["model_info"]["output_cost_per_token"], 4e-6);
    assert_eq!(x["model_info"]["supports_function_calling"], true);
    assert_eq!(x["model_info"]["supports_vision"], false);
    assert_eq!(x["litellm_params"]["model"], "lab-a/x-up");
    assert_eq!(x["metadata"]["fallback_type"], "content_policy");
    assert_eq!(x["metadata"]["fallback_chain"], json!(["y-model", "z-model"]));
    let embed = info["data"].as_array().unwrap().iter().find(|m| m["model_name"] == "embed-openai").unwrap();
    assert!(embed.get("metadata").is_none(), "a model of unknown lab has no derived chains");

    let resp = h.client.get(h.url("/v1/model/info")).send().await.unwrap();
    assert_eq!(resp.status(), 401, "behind a key like /v1/models");
}
