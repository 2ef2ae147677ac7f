//! The fake's OpenAI files and batches, kept in memory for one account shared by every caller (as a
//! real provider account is: the gateway, not the provider, keeps organisations apart). Their ids are
//! random, as a real provider's are (so two fakes never hand out the same one). A batch is `validating`
//! when made and `completed` when next read, its output file holding one answer per input line
//! (`"Batch answer for <custom_id>"`); a cancelled one is `cancelled`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::{Dialect, FakeState, intake, json_response, lock, parse_json};

/// Files (their object and bytes) and batches, by id.
#[derive(Debug, Default)]
pub struct Objects {
    files: HashMap<String, (Value, Bytes)>,
    batches: HashMap<String, Value>,
}

fn missing(what: &str, id: &str) -> Response {
    Dialect::OpenAi.error_response(404, None, None, &format!("No such {what}: {id}"))
}

fn store(state: &FakeState) -> std::sync::MutexGuard<'_, Objects> {
    lock(&state.objects)
}

fn new_file(state: &FakeState, filename: &str, purpose: &str, data: Bytes) -> Value {
    let id = format!("file-{}", uuid::Uuid::new_v4().simple());
    let object = json!({"id": id, "object": "file", "bytes": data.len(), "created_at": crate::protocols::unix_now(),
        "filename": filename, "purpose": purpose, "status": "processed"});
    store(state).files.insert(id, (object.clone(), data));
    object
}

pub(super) async fn upload(State(state): State<Arc<FakeState>>, headers: HeaderMap, body: Body) -> Response {
    let bad = |m: String| Dialect::OpenAi.error_response(400, None, None, &m);
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    let Ok(boundary) = multer::parse_boundary(&content_type) else { return bad("not multipart".into()) };
    let mut form = multer::Multipart::new(body.into_data_stream(), boundary);
    let (mut file, mut purpose) = (None, None);
    loop {
        let field = match form.next_field().await {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(e) => return bad(format!("unreadable multipart: {e}")),
        };
        let name = field.name().unwrap_or_default().to_owned();
        let filename = field.file_name().map(str::to_owned);
        let Ok(data) = field.bytes().await else { return bad("unreadable field".into()) };
        match name.as_str() {
            "file" => file = Some((filename.unwrap_or_else(|| "upload".into()), data)),
            "purpose" => purpose = Some(String::from_utf8_lossy(&data).into_owned()),
            _ => {}
        }
    }
    let (Some((filename, data)), Some(purpose)) = (file, purpose) else {
        return bad("'file' and 'purpose' are required".into());
    };
    let summary = json!({"purpose": purpose, "filename": filename, "bytes": data.len()});
    if let Err(resp) = intake(&state, Dialect::OpenAi, headers, &summary, "").await {
        return resp;
    }
    json_response(&new_file(&state, &filename, &purpose, data))
}

pub(super) async fn list_files(State(state): State<Arc<FakeState>>, headers: HeaderMap) -> Response {
    if let Err(resp) = intake(&state, Dialect::OpenAi, headers, &json!({}), "").await {
        return resp;
    }
    let data: Vec<Value> = store(&state).files.values().map(|(o, _)| o.clone()).collect();
    json_response(&json!({"object": "list", "data": data, "has_more": false}))
}

pub(super) async fn file(State(state): State<Arc<FakeState>>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    if let Err(resp) = intake(&state, Dialect::OpenAi, headers, &json!({"file": id}), "").await {
        return resp;
    }
    match store(&state).files.get(&id) {
        Some((object, _)) => json_response(object),
        None => missing("file", &id),
    }
}

pub(super) async fn content(
    State(state): State<Arc<FakeState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    if let Err(resp) = intake(&state, Dialect::OpenAi, headers, &json!({"content": id}), "").await {
        return resp;
    }
    match store(&state).files.get(&id) {
        Some((_, data)) => ([(header::CONTENT_TYPE, "application/octet-stream")], data.clone()).into_response(),
        None => missing("file", &id),
    }
}

pub(super) async fn delete(
    State(state): State<Arc<FakeState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    if let Err(resp) = intake(&state, Dialect::OpenAi, headers, &json!({"delete": id}), "").await {
        return resp;
    }
    match store(&state).files.remove(&id) {
        Some(_) => json_response(&json!({"id": id, "object": "file", "deleted": true})),
        None => missing("file", &id),
    }
}

pub(super) async fn create_batch(State(state): State<Arc<FakeState>>, headers: HeaderMap, body: Bytes) -> Response {
    let body = match parse_json(Dialect::OpenAi, &body) {
        Ok(b) => b,
        Err(resp) => return resp,
    };
    if let Err(resp) = intake(&state, Dialect::OpenAi, headers, &body, "").await {
        return resp;
    }
    let input = body["input_file_id"].as_str().unwrap_or_default().to_owned();
    if !store(&state).files.contains_key(&input) {
        return Dialect::OpenAi.error_response(400, None, None, &format!("input file {input} does not exist"));
    }
    let id = format!("batch_{}", uuid::Uuid::new_v4().simple());
    let batch = json!({"id": id, "object": "batch", "endpoint": body["endpoint"], "input_file_id": input,
        "completion_window": body["completion_window"], "status": "validating", "output_file_id": null,
        "error_file_id": null, "created_at": crate::protocols::unix_now(), "metadata": body.get("metadata"),
        "request_counts": {"total": 0, "completed": 0, "failed": 0}});
    store(&state).batches.insert(id, batch.clone());
    json_response(&batch)
}

pub(super) async fn batch(State(state): State<Arc<FakeState>>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    if let Err(resp) = intake(&state, Dialect::OpenAi, headers, &json!({"batch": id}), "").await {
        return resp;
    }
    let Some(mut batch) = store(&state).batches.get(&id).cloned() else { return missing("batch", &id) };
    if batch["status"] == "validating" {
        // Run it: one answer per input line.
        let input = batch["input_file_id"].as_str().unwrap_or_default().to_owned();
        let lines = store(&state).files.get(&input).map(|(_, d)| d.clone()).unwrap_or_default();
        let mut output = String::new();
        let mut total = 0;
        for line in String::from_utf8_lossy(&lines).lines().filter(|l| !l.trim().is_empty()) {
            let req: Value = serde_json::from_str(line).unwrap_or_default();
            let custom_id = req["custom_id"].as_str().unwrap_or_default();
            let answer = json!({"id": state.next_id("batch_req"), "custom_id": custom_id, "error": null,
                "response": {"status_code": 200, "body": {"object": "chat.completion", "model": req["body"]["model"],
                    "choices": [{"index": 0, "finish_reason": "stop",
                        "message": {"role": "assistant", "content": format!("Batch answer for {custom_id}")}}]}}});
            output.push_str(&answer.to_string());
            output.push('\n');
            total += 1;
        }
        let out = new_file(&state, &format!("{id}_output.jsonl"), "batch_output", Bytes::from(output));
        batch["status"] = json!("completed");
        batch["output_file_id"] = out["id"].clone();
        batch["request_counts"] = json!({"total": total, "completed": total, "failed": 0});
        store(&state).batches.insert(id, batch.clone());
    }
    json_response(&batch)
}

pub(super) async fn cancel(
    State(state): State<Arc<FakeState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    if let Err(resp) = intake(&state, Dialect::OpenAi, headers, &json!({"cancel": id}), "").await {
        return resp;
    }
    let mut objects = store(&state);
    let Some(batch) = objects.batches.get_mut(&id) else { return missing("batch", &id) };
    if batch["status"] != "completed" {
        batch["status"] = json!("cancelled");
    }
    json_response(&batch.clone())
}

pub(super) type Shared = Mutex<Objects>;
