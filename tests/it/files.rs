//! `/v1/files` and `/v1/batches` through the gateway to the fake's one shared account: an upload
//! spooled and sent on, a batch over it run to completion and its output read, every object owned by
//! the organisation that made it: another organisation's key gets 404 for reading, downloading,
//! deleting or cancelling it, or naming it as a batch's input, and lists only its own. One ledger row for
//! the upload and one for the batch.

use serde_json::{Value, json};

use crate::support::{Harness, Setup, error_of};

async fn harness() -> Harness {
    Harness::with(Setup { extra: "[files]\nprovider = \"upstream\"\n".to_owned(), ..Setup::default() }).await
}

/// A multipart upload of `data` as `name` for `purpose`, with `key`.
async fn upload(h: &Harness, key: &str, name: &str, purpose: &str, data: &[u8]) -> reqwest::Response {
    let boundary = "files-test-boundary";
    let mut body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\n\
         Content-Type: application/jsonl\r\n\r\n"
    )
    .into_bytes();
    body.extend_from_slice(data);
    body.extend_from_slice(
        format!("\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\n{purpose}\r\n--{boundary}--\r\n")
            .as_bytes(),
    );
    h.client
        .post(h.url("/v1/files"))
        .bearer_auth(key)
        .header("content-type", format!("multipart/form-data; boundary={boundary}"))
        .body(body)
        .send()
        .await
        .unwrap()
}

fn requests() -> String {
    (0..3)
        .map(|i| {
            json!({"custom_id": format!("req-{i}"), "method": "POST", "url": "/v1/chat/completions",
                   "body": {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": format!("Question {i}")}]}})
            .to_string()
                + "\n"
        })
        .collect()
}

#[tokio::test]
async fn a_file_and_a_batch_make_a_round_trip_and_belong_to_their_organisation() {
    let h = harness().await;
    let (alice_org, bob_org) =
        (h.new_org(json!({"name": "Alice Inc"})).await, h.new_org(json!({"name": "Bob Ltd"})).await);
    let (_, alice) = h.new_key(&alice_org, json!({})).await;
    let (_, bob) = h.new_key(&bob_org, json!({})).await;
    let input = requests();

    // Alice uploads her requests and starts a batch over them.
    let resp = upload(&h, &alice, "requests.jsonl", "batch", input.as_bytes()).await;
    assert_eq!(resp.status(), 200);
    let file: Value = resp.json().await.unwrap();
    let file_id = file["id"].as_str().unwrap().to_owned();
    assert_eq!((file["bytes"].as_u64(), file["purpose"].as_str()), (Some(input.len() as u64), Some("batch")));
    let content =
        h.client.get(h.url(&format!("/v1/files/{file_id}/content"))).bearer_auth(&alice).send().await.unwrap();
    assert_eq!(content.status(), 200);
    assert_eq!(content.text().await.unwrap(), input, "the file came through intact");

    let batch = json!({"input_file_id": file_id, "endpoint": "/v1/chat/completions", "completion_window": "24h"});
    let resp = h.client.post(h.url("/v1/batches")).bearer_auth(&alice).json(&batch).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let created: Value = resp.json().await.unwrap();
    let batch_id = created["id"].as_str().unwrap().to_owned();
    assert_eq!(created["status"], "validating");

    // It completes; its output file is Alice's to read.
    let done = h.get_json_as(&alice, &format!("/v1/batches/{batch_id}")).await;
    assert_eq!(done["status"], "completed", "{done}");
    let output_id = done["output_file_id"].as_str().unwrap().to_owned();
    let output =
        h.client.get(h.url(&format!("/v1/files/{output_id}/content"))).bearer_auth(&alice).send().await.unwrap();
    assert_eq!(output.status(), 200);
    let lines: Vec<Value> = output.text().await.unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 3);
    assert_eq!(lines[2]["response"]["body"]["choices"][0]["message"]["content"], "Batch answer for req-2");

    // Bob sees none of it: each of Alice's ids is a 404 to him, none of his tries reaches the provider,
    // and his lists are empty.
    let before = h.upstream.state.requests().len();
    for (method, path) in [
        ("GET", format!("/v1/files/{file_id}")),
        ("GET", format!("/v1/files/{file_id}/content")),
        ("GET", format!("/v1/files/{output_id}/content")),
        ("DELETE", format!("/v1/files/{file_id}")),
        ("GET", format!("/v1/batches/{batch_id}")),
        ("POST", format!("/v1/batches/{batch_id}/cancel")),
    ] {
        let req = h.client.request(method.parse().unwrap(), h.url(&path)).bearer_auth(&bob);
        let (status, err) = error_of(req.send().await.unwrap()).await;
        assert_eq!(status, 404, "{method} {path}: {err}");
        assert!(err["error"]["message"].as_str().unwrap().starts_with("No such"), "{err}");
    }
    let theirs = json!({"input_file_id": file_id, "endpoint": "/v1/chat/completions", "completion_window": "24h"});
    let (status, err) =
        error_of(h.client.post(h.url("/v1/batches")).bearer_auth(&bob).json(&theirs).send().await.unwrap()).await;
    assert_eq!((status, err["error"]["param"].as_str()), (404, Some("input_file_id")), "{err}");
    assert_eq!(h.upstream.state.requests().len(), before, "nothing Bob tried reached the provider");
    let still = h.client.get(h.url(&format!("/v1/files/{file_id}/content"))).bearer_auth(&alice).send().await.unwrap();
    assert_eq!(still.status(), 200, "Alice's file is still there");
    assert_eq!(h.get_json_as(&alice, &format!("/v1/batches/{batch_id}")).await["status"], "completed");
    assert_eq!(h.get_json_as(&bob, "/v1/files").await["data"], json!([]));
    assert_eq!(h.get_json_as(&bob, "/v1/batches").await["data"], json!([]));

    // Alice's lists hold hers, newest first, though the upstream account lists everyone's.
    let mine = h.get_json_as(&alice, "/v1/files").await;
    let ids: Vec<&str> = mine["data"].as_array().unwrap().iter().map(|f| f["id"].as_str().unwrap()).collect();
    assert_eq!(ids, [output_id.as_str(), file_id.as_str()], "{mine}");
    let batches = h.get_json_as(&alice, "/v1/batches").await;
    assert_eq!(batches["data"][0]["id"], batch_id.as_str());
    assert_eq!(batches["data"][0]["status"], "completed");
    let page = h.get_json_as(&alice, "/v1/files?limit=1").await;
    assert_eq!((page["data"].as_array().unwrap().len(), page["has_more"].as_bool()), (1, Some(true)));
    let next = h.get_json_as(&alice, &format!("/v1/files?limit=1&after={output_id}")).await;
    assert_eq!(next["data"][0]["id"], file_id.as_str());
    let outputs = h.get_json_as(&alice, "/v1/files?purpose=batch_output").await;
    assert_eq!(outputs["data"].as_array().unwrap().len(), 1, "{outputs}");
    assert_eq!(outputs["data"][0]["id"], output_id.as_str());
    // A cursor must be one of the caller's own.
    let resp = h.client.get(h.url(&format!("/v1/files?after={output_id}"))).bearer_auth(&bob).send().await.unwrap();
    let (status, err) = error_of(resp).await;
    assert_eq!((status, err["error"]["param"].as_str()), (400, Some("after")), "{err}");

    // Bob's own upload is his, and Alice cannot delete it.
    let his: Value = upload(&h, &bob, "b.jsonl", "batch", b"{}\n").await.json().await.unwrap();
    let his_id = his["id"].as_str().unwrap();
    let resp = h.client.delete(h.url(&format!("/v1/files/{his_id}"))).bearer_auth(&alice).send().await.unwrap();
    assert_eq!(resp.status(), 404);
    let resp = h.client.delete(h.url(&format!("/v1/files/{his_id}"))).bearer_auth(&bob).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let gone = h.client.get(h.url(&format!("/v1/files/{his_id}"))).bearer_auth(&bob).send().await.unwrap();
    assert_eq!(gone.status(), 404, "a deleted file is gone");

    // One row for each upload and for the batch, under the organisation that made it.
    let records = h.usage.wait_for(3).await;
    let rows: Vec<(&str, &str)> = records
        .iter()
        .map(|r| (r.requested_model.as_str(), r.organization_id.as_deref().unwrap_or_default()))
        .collect();
    assert!(records.iter().all(|r| r.outcome == switchyard::usage::Outcome::Completed), "{rows:?}");
    let (alice_org, bob_org) = (alice_org["id"].as_str().unwrap(), bob_org["id"].as_str().unwrap());
    let mut expected = vec![("files", alice_org), ("batches", alice_org), ("files", bob_org)];
    let mut rows = rows;
    rows.sort_unstable();
    expected.sort_unstable();
    assert_eq!(rows, expected, "each row under the organisation that made it");
}

#[tokio::test]
async fn bad_file_and_batch_requests_are_refused_by_field() {
    let h = harness().await;
    let (status, err) = error_of(upload(&h, crate::support::MASTER_KEY, "a.jsonl", "", b"{}").await).await;
    assert_eq!((status, err["error"]["param"].as_str()), (400, Some("purpose")), "{err}");
    for (body, param) in [
        (json!({"endpoint": "/v1/chat/completions", "completion_window": "24h"}), "input_file_id"),
        (json!({"input_file_id": "file-1", "completion_window": "24h"}), "endpoint"),
        (json!({"input_file_id": "file-1", "endpoint": "/v1/chat/completions"}), "completion_window"),
    ] {
        let (status, err) = error_of(h.post("/v1/batches").json(&body).send().await.unwrap()).await;
        assert_eq!((status, err["error"]["param"].as_str()), (400, Some(param)), "{err}");
    }
    let (status, err) = error_of(
        h.client.get(h.url("/v1/files?limit=0")).bearer_auth(crate::support::MASTER_KEY).send().await.unwrap(),
    )
    .await;
    assert_eq!((status, err["error"]["param"].as_str()), (400, Some("limit")), "{err}");
    // Without [files] pointing at a provider that exists, the caller is told so.
    let plain = Harness::start().await;
    let (status, err) = error_of(upload(&plain, crate::support::MASTER_KEY, "a.jsonl", "batch", b"{}").await).await;
    assert_eq!(status, 503, "{err}");
    assert!(err["error"]["message"].as_str().unwrap().contains("[files] provider"), "{err}");
}

#[tokio::test]
async fn a_key_held_to_models_or_a_budget_starts_no_batch_and_a_blocked_provider_takes_no_file() {
    let h = harness().await;
    let org = h.new_org(json!({"name": "Careful"})).await;
    let (_, listed) = h.new_key(&org, json!({"models": ["test-model"]})).await;
    let (_, budgeted) = h.new_key(&org, json!({"budget_usd": 5.0})).await;
    let (_, free) = h.new_key(&org, json!({})).await;
    let file: Value = upload(&h, &free, "r.jsonl", "batch", requests().as_bytes()).await.json().await.unwrap();
    let batch = json!({"input_file_id": file["id"], "endpoint": "/v1/chat/completions", "completion_window": "24h"});
    for key in [&listed, &budgeted] {
        let (status, err) =
            error_of(h.client.post(h.url("/v1/batches")).bearer_auth(key).json(&batch).send().await.unwrap()).await;
        assert_eq!(status, 403, "{err}");
    }
    let blocked = h.new_org(json!({"name": "Blocks it", "blocked_providers": ["upstream"]})).await;
    let (_, key) = h.new_key(&blocked, json!({})).await;
    let before = h.upstream.state.requests().len();
    let (status, err) = error_of(upload(&h, &key, "r.jsonl", "batch", b"{}").await).await;
    assert_eq!(h.upstream.state.requests().len(), before, "nothing reached the blocked provider");
    assert_eq!(status, 403, "{err}");
    assert!(err["error"]["message"].as_str().unwrap().contains("is blocked for this organization"), "{err}");
}
