//! Azure OpenAI's paths: the deployment in the path is the model string, the key in `api-key`.

use serde_json::{Value, json};

use crate::support::{Harness, MASTER_KEY};

fn azure(h: &Harness, path: &str) -> reqwest::RequestBuilder {
    h.client.post(h.url(&format!("{path}?api-version=2024-10-21"))).header("api-key", MASTER_KEY)
}

#[tokio::test]
async fn deployment_paths_serve_chat_completions_and_embeddings_for_any_model() {
    let h = Harness::start().await;
    let resp = azure(&h, "/openai/deployments/claude-test/chat/completions")
        .json(&json!({"model": "ignored-by-azure-clients", "messages": [{"role": "user", "content": "Hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-switchyard-model"], "claude-test", "the deployment names the model");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["object"], "chat.completion");

    let resp =
        azure(&h, "/openai/deployments/test-model/completions").json(&json!({"prompt": "Once"})).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.json::<Value>().await.unwrap()["object"], "text_completion");

    let resp =
        azure(&h, "/openai/deployments/embed-openai/embeddings").json(&json!({"input": "hello"})).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.json::<Value>().await.unwrap()["data"][0]["object"], "embedding");

    let resp =
        azure(&h, "/openai/responses").json(&json!({"model": "gemini-test", "input": "Hi"})).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let made: Value = resp.json().await.unwrap();
    assert_eq!(made["object"], "response");
    let got = h
        .client
        .get(h.url(&format!("/openai/responses/{}?api-version=2025-04-01-preview", made["id"].as_str().unwrap())))
        .header("api-key", MASTER_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(got.status(), 200);

    let resp = h
        .client
        .post(h.url("/openai/deployments/test-model/chat/completions?api-version=2024-10-21"))
        .json(&json!({"messages": [{"role": "user", "content": "Hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401, "a key is required on Azure's paths too");
}
