//! The fake speaking AWS Bedrock: `POST /model/{modelId}/converse`, `/converse-stream` (AWS event-stream
//! frames) and `/invoke` (Titan embeddings, and Cohere's on Bedrock with the token count in a header).
//!
//! It checks every request's SigV4 signature with its own implementation of the canonical request
//! (written apart from the `aws-sigv4` signer the gateway uses, so a mistake on one side cannot pass on
//! both), against the test identity [`ACCESS_KEY_ID`]/[`SECRET_ACCESS_KEY`], and refuses a wrong one as
//! Bedrock does (403 `InvalidSignatureException`). A Bedrock API key (`Authorization: Bearer …`) is taken
//! as it is. Converse requests are read with the protocol's wire types into the fake's usual chat
//! answer; scripted faults answer in Bedrock's error shape (`x-amzn-ErrorType`) or, mid-stream, as an
//! exception message.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::Response;
use hmac::{KeyInit, Mac};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::{Dialect, FakeState, Reply, fake_vector, intake, json_response, stream_frames};
use crate::eventstream;
use crate::protocols::bedrock::wire::{ConverseRequest, TitanEmbedRequest};

/// The AWS identity the fake accepts.
pub const ACCESS_KEY_ID: &str = "AKIDFAKEBEDROCK";
pub const SECRET_ACCESS_KEY: &str = "fake/bedrock+secret/access/key";

pub(super) async fn dispatch(
    State(state): State<Arc<FakeState>>,
    Path((model, action)): Path<(String, String)>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(why) = authenticate(&headers, uri.path(), &body) {
        return Dialect::Bedrock.error_response(403, None, Some(why.0), why.1);
    }
    // The path as it arrived (percent-encoding and all), for tests to see what was signed and sent.
    let mut headers = headers;
    if let Ok(path) = axum::http::HeaderValue::from_str(uri.path()) {
        headers.insert(PATH_HEADER, path);
    }
    let raw: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(_) => {
            return Dialect::Bedrock.error_response(400, None, Some("ValidationException"), "Malformed input request");
        }
    };
    let fault = match intake(&state, Dialect::Bedrock, headers, &raw, &model).await {
        Ok(f) => f,
        Err(resp) => return resp,
    };
    match action.as_str() {
        "converse" | "converse-stream" => {
            let converse: ConverseRequest = match serde_json::from_value(raw) {
                Ok(c) => c,
                Err(e) => {
                    return Dialect::Bedrock.error_response(400, None, Some("ValidationException"), &e.to_string());
                }
            };
            if converse.messages.first().is_none_or(|m| m.role != "user") {
                let why = "A conversation must start with a user message. Try again with a conversation that starts with a user message.";
                return Dialect::Bedrock.error_response(400, None, Some("ValidationException"), why);
            }
            if let Err(why) = check_converse(&converse) {
                return Dialect::Bedrock.error_response(400, None, Some("ValidationException"), &why);
            }
            let chat = as_chat(&converse);
            let reply = Reply::for_request(&chat, &state.settings, &state.next_id("fake"));
            if action == "converse-stream" {
                return stream_frames(state.clone(), stream_events(&reply, &model), Dialect::Bedrock, fault);
            }
            tokio::time::sleep(std::time::Duration::from_millis(state.settings.latency_ms)).await;
            json_response(&whole(&reply, &model))
        }
        "invoke" if model.contains("titan-embed") => {
            let req: TitanEmbedRequest = match serde_json::from_value(raw) {
                Ok(r) => r,
                Err(e) => {
                    return Dialect::Bedrock.error_response(400, None, Some("ValidationException"), &e.to_string());
                }
            };
            let dims = req.dimensions.unwrap_or(8) as usize;
            let vector: Vec<f64> = fake_vector(&req.input_text, dims).into_iter().map(f64::from).collect();
            json_response(&json!({"embedding": vector, "inputTextTokenCount": req.input_text.len().div_ceil(4)}))
        }
        "invoke" if model.contains("cohere.embed") => {
            // Cohere's own embed request, the token count in a header as InvokeModel reports it.
            let texts: Vec<&str> = raw["texts"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
            if texts.is_empty() || texts.len() > 96 || raw["input_type"].as_str().is_none() {
                let why = "Malformed input request: texts (1 to 96) and input_type are required";
                return Dialect::Bedrock.error_response(400, None, Some("ValidationException"), why);
            }
            let dims = raw["output_dimension"].as_u64().unwrap_or(8) as usize;
            let vectors: Vec<Vec<f64>> =
                texts.iter().map(|t| fake_vector(t, dims).into_iter().map(f64::from).collect()).collect();
            let tokens: usize = texts.iter().map(|t| t.len().div_ceil(4)).sum();
            let mut resp = json_response(&json!({"id": state.next_id("embed"), "response_type": "embeddings_by_type",
                "embeddings": {"float": vectors}, "texts": texts}));
            resp.headers_mut().insert("x-amzn-bedrock-input-token-count", tokens.into());
            resp
        }
        _ => Dialect::Bedrock.error_response(404, None, Some("ResourceNotFoundException"), "Unknown operation."),
    }
}

/// The header the fake records a Bedrock request's path under.
pub const PATH_HEADER: &str = "x-fake-request-path";

/// The rules Bedrock holds a Converse request to (its ValidationException messages).
fn check_converse(req: &ConverseRequest) -> Result<(), String> {
    if req.messages.windows(2).any(|w| w[0].role == w[1].role) {
        return Err("A conversation must alternate between user and assistant roles.".into());
    }
    let blocks = || req.messages.iter().flat_map(|m| &m.content);
    if blocks().any(|b| b.text.as_deref().is_some_and(|t| t.trim().is_empty())) {
        return Err(
            "The text field in the ContentBlock object is blank. Add text to the text field, and try again.".into()
        );
    }
    if req.tool_config.is_none() && blocks().any(|b| b.tool_use.is_some() || b.tool_result.is_some()) {
        return Err("The toolConfig field must be defined when using toolUse and toolResult content blocks.".into());
    }
    let id_ok = |id: &str| {
        !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    };
    let ids = blocks().filter_map(|b| {
        b.tool_use.as_ref().map(|u| u.tool_use_id.as_str()).or(b.tool_result.as_ref().map(|r| r.tool_use_id.as_str()))
    });
    for id in ids {
        if !id_ok(id) {
            return Err(format!(
                "1 validation error detected: Value '{id}' at 'toolUseId' failed to satisfy constraint: Member must satisfy regular expression pattern: [a-zA-Z0-9_-]+"
            ));
        }
    }
    Ok(())
}

/// The error Bedrock gives an unauthenticated request: its exception name and message.
struct Refused(&'static str, &'static str);

/// Checks the request's SigV4 signature (or takes a Bedrock API key).
fn authenticate(headers: &HeaderMap, path: &str, body: &[u8]) -> Result<(), Refused> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let missing = Refused("MissingAuthenticationTokenException", "Missing Authentication Token");
    let auth = header("authorization").ok_or(missing)?;
    if auth.strip_prefix("Bearer ").is_some_and(|k| !k.is_empty()) {
        return Ok(());
    }
    let incomplete = || Refused("IncompleteSignatureException", "The request signature is incomplete.");
    let fields = auth.strip_prefix("AWS4-HMAC-SHA256 ").ok_or_else(incomplete)?;
    let field = |name: &str| {
        fields.split(',').map(str::trim).find_map(|f| f.strip_prefix(name).and_then(|v| v.strip_prefix('=')))
    };
    let (credential, signed, signature) = (
        field("Credential").ok_or_else(incomplete)?,
        field("SignedHeaders").ok_or_else(incomplete)?,
        field("Signature").ok_or_else(incomplete)?,
    );
    let mut scope = credential.splitn(2, '/');
    let (key_id, scope) = (scope.next().unwrap_or_default(), scope.next().ok_or_else(incomplete)?);
    if key_id != ACCESS_KEY_ID {
        return Err(Refused("UnrecognizedClientException", "The security token included in the request is invalid."));
    }
    let parts: Vec<&str> = scope.split('/').collect();
    let [date, region, service, "aws4_request"] = parts.as_slice() else { return Err(incomplete()) };
    let amz_date = header("x-amz-date").ok_or_else(incomplete)?;
    if *service != "bedrock" || !amz_date.starts_with(date) {
        return Err(incomplete());
    }
    for required in ["host", "x-amz-date"] {
        if !signed.split(';').any(|h| h == required) {
            return Err(incomplete());
        }
    }
    if headers.contains_key("x-amz-security-token") && !signed.split(';').any(|h| h == "x-amz-security-token") {
        return Err(incomplete());
    }
    // The canonical request: each path segment encoded once more (every AWS service but S3), no query,
    // the signed headers lower-cased with trimmed values, the body's SHA-256.
    let canonical_path: String = path
        .split('/')
        .map(|seg| percent_encoding::utf8_percent_encode(seg, UNRESERVED).to_string())
        .collect::<Vec<_>>()
        .join("/");
    let mut canonical_headers = String::new();
    for name in signed.split(';') {
        let value = header(name).ok_or_else(incomplete)?;
        canonical_headers.push_str(&format!("{name}:{}\n", value.split_whitespace().collect::<Vec<_>>().join(" ")));
    }
    let canonical = format!("POST\n{canonical_path}\n\n{canonical_headers}\n{signed}\n{}", hex(&Sha256::digest(body)));
    let to_sign = format!("AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}", hex(&Sha256::digest(canonical.as_bytes())));
    let mut key = hmac(format!("AWS4{SECRET_ACCESS_KEY}").as_bytes(), date.as_bytes());
    for part in [*region, service, "aws4_request"] {
        key = hmac(&key, part.as_bytes());
    }
    if hex(&hmac(&key, to_sign.as_bytes())) != signature {
        return Err(Refused(
            "InvalidSignatureException",
            "The request signature we calculated does not match the signature you provided.",
        ));
    }
    Ok(())
}

const UNRESERVED: &percent_encoding::AsciiSet =
    &percent_encoding::NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    let mut mac = hmac::Hmac::<Sha256>::new_from_slice(key).unwrap_or_else(|_| unreachable!("HMAC takes any key"));
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The Converse request as the OpenAI-shaped body the fake's answer is made from.
fn as_chat(req: &ConverseRequest) -> Value {
    let mut messages = Vec::new();
    for m in &req.messages {
        for block in &m.content {
            if let Some(text) = &block.text {
                messages.push(json!({"role": m.role, "content": text}));
            } else if let Some(result) = &block.tool_result {
                messages.push(json!({"role": "tool", "tool_call_id": result.tool_use_id, "content": "result"}));
            } else if let Some(call) = &block.tool_use {
                messages.push(json!({"role": "assistant", "tool_calls": [{"id": call.tool_use_id, "type": "function",
                    "function": {"name": call.name, "arguments": call.input.to_string()}}]}));
            } else if block.image.is_some() {
                messages.push(json!({"role": m.role, "content": "[image]"}));
            }
        }
    }
    let mut chat = json!({"messages": messages});
    if let Some(config) = &req.inference_config
        && let Some(max) = config.max_tokens
    {
        chat["max_tokens"] = json!(max);
    }
    if let Some(tools) = &req.tool_config {
        chat["tools"] = tools
            .tools
            .iter()
            .map(|t| json!({"type": "function", "function": {"name": t.tool_spec.name, "parameters": t.tool_spec.input_schema.json}}))
            .collect();
        if let Some(name) = tools.tool_choice.as_ref().and_then(|c| c.pointer("/tool/name")) {
            chat["tool_choice"] = json!({"type": "function", "function": {"name": name}});
        }
    }
    chat
}

fn stop_reason(finish: &str) -> &'static str {
    match finish {
        "length" => "max_tokens",
        "tool_calls" => "tool_use",
        _ => "end_turn",
    }
}

fn usage(reply: &Reply) -> Value {
    json!({"inputTokens": reply.prompt_tokens, "outputTokens": reply.completion_tokens,
        "totalTokens": reply.prompt_tokens + reply.completion_tokens})
}

fn whole(reply: &Reply, _model: &str) -> Value {
    let mut content = Vec::new();
    if !reply.tokens.is_empty() {
        content.push(json!({"text": reply.tokens.concat()}));
    }
    for (i, (name, args)) in reply.tool_calls.iter().enumerate() {
        let input: Value = serde_json::from_str(args).unwrap_or_else(|_| json!({}));
        content.push(json!({"toolUse": {"toolUseId": tool_use_id(reply, i), "name": name, "input": input}}));
    }
    json!({
        "output": {"message": {"role": "assistant", "content": content}},
        "stopReason": stop_reason(reply.finish_reason),
        "usage": usage(reply),
        "metrics": {"latencyMs": 1}
    })
}

fn tool_use_id(reply: &Reply, i: usize) -> String {
    format!("tooluse_{}_{i}", reply.id)
}

/// The ConverseStream events of the answer, each an event-stream message.
fn stream_events(reply: &Reply, _model: &str) -> Vec<Bytes> {
    let ev = |name: &str, payload: Value| Bytes::from(eventstream::event(name, payload.to_string().as_bytes()));
    let mut out = vec![ev("messageStart", json!({"role": "assistant"}))];
    let mut block = 0;
    if !reply.tokens.is_empty() {
        for token in &reply.tokens {
            out.push(ev("contentBlockDelta", json!({"contentBlockIndex": block, "delta": {"text": token}})));
        }
        out.push(ev("contentBlockStop", json!({"contentBlockIndex": block})));
        block += 1;
    }
    for (i, (name, args)) in reply.tool_calls.iter().enumerate() {
        out.push(ev(
            "contentBlockStart",
            json!({"contentBlockIndex": block, "start": {"toolUse": {"toolUseId": tool_use_id(reply, i), "name": name}}}),
        ));
        for piece in super::char_pieces(args, 7) {
            out.push(ev(
                "contentBlockDelta",
                json!({"contentBlockIndex": block, "delta": {"toolUse": {"input": piece}}}),
            ));
        }
        out.push(ev("contentBlockStop", json!({"contentBlockIndex": block})));
        block += 1;
    }
    out.push(ev("messageStop", json!({"stopReason": stop_reason(reply.finish_reason)})));
    out.push(ev("metadata", json!({"usage": usage(reply), "metrics": {"latencyMs": 1}})));
    out
}

/// The exception message Bedrock ends a failed stream with.
pub(super) fn mid_stream_exception() -> Bytes {
    Bytes::from(eventstream::exception(
        "modelStreamErrorException",
        br#"{"message":"The model failed mid-stream (fake).","originalStatusCode":500}"#,
    ))
}
