//! The fake speaking Google Vertex AI: a token endpoint (`POST /token`) and the publisher routes
//! `/v1/projects/{project}/locations/{location}/publishers/{google|anthropic}/models/{model}:{action}`.
//!
//! The token endpoint takes what Google's does (`grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer`
//! and an RS256 `assertion`), verifies the JWT's signature against the test service account's public key
//! ([`PUBLIC_KEY`], the one of `tests/fixtures/vertex/service-account.json`) and its claims (issuer,
//! scope, audience, a lifetime of at most an hour), and issues a one-hour access token. The model routes
//! take only a token it issued. Gemini requests are then answered by the Gemini fake, Anthropic's
//! `rawPredict`/`streamRawPredict` (which must say `anthropic_version: vertex-2023-10-16` and name no
//! model) by the Anthropic fake, and `:predict` embeddings here.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde_json::{Value, json};

use super::{Dialect, FakeState, fake_vector, intake, json_response, lock};

/// The test service account the token endpoint trusts.
pub const CLIENT_EMAIL: &str = "gateway@switchyard-test.iam.gserviceaccount.com";
/// Its RSA public key (PKCS#1 DER, base64).
pub const PUBLIC_KEY: &str = "MIIBCgKCAQEAt46cD7vgv0ER5IdgZCxKJgKsdSzFsacWoaGPJCGHF9zGmPzynljqYLMzkfN4oacE6lJc1b167nE9WrkumTGCzoiFUbRze4a8zY+RbA+qjsQ/4bTuvBRI5jEwqlio3/xL8HZNcQNghDB+JQCOZL4gWr0WaSMXyf8rQ3JuSnnXEbAL8hPmQXngBjsPFsngMaVdFmQDV2bpsEWu1l5FZgJydBjIOjy9UY3Tcy8pM0r/gWY0ECZumwo2aBeYc0uk7X8vam02BNhOe4aeS6D1LBhUu0kg2lwDG19UPtSObknP8FDLD16099hi8DpDBUp2x5uBz4LFDQpjE5Tp5rK7DT+/TQIDAQAB";
/// The `anthropic_version` Vertex requires of Anthropic's models.
const ANTHROPIC_VERSION: &str = "vertex-2023-10-16";

fn oauth_error(status: u16, error: &str, description: &str) -> Response {
    let status = axum::http::StatusCode::from_u16(status).unwrap_or(axum::http::StatusCode::BAD_REQUEST);
    (
        status,
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        json!({"error": error, "error_description": description}).to_string(),
    )
        .into_response()
}

pub(super) async fn token(State(state): State<Arc<FakeState>>, body: Bytes) -> Response {
    state.stats.token_requests.fetch_add(1, Ordering::Relaxed);
    // A scripted outage of the token endpoint: the next requests fail with 503.
    if state.token_outage.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1)).is_ok() {
        return oauth_error(503, "temporarily_unavailable", "The service is currently unavailable.");
    }
    let form: Vec<(String, String)> = serde_urlencoded::from_bytes(&body).unwrap_or_default();
    let field = |name: &str| form.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
    if field("grant_type") != Some("urn:ietf:params:oauth:grant-type:jwt-bearer") {
        return oauth_error(400, "unsupported_grant_type", "Invalid grant_type.");
    }
    let Some(assertion) = field("assertion") else {
        return oauth_error(400, "invalid_request", "Missing required parameter: assertion");
    };
    if let Err(why) = verify(assertion) {
        return oauth_error(400, "invalid_grant", why);
    }
    let n = state.stats.tokens_issued.fetch_add(1, Ordering::Relaxed) + 1;
    let token = format!("ya29.fake-vertex-token-{n}");
    lock(&state.google_tokens).insert(token.clone());
    json_response(&json!({"access_token": token, "expires_in": 3599, "token_type": "Bearer"}))
}

/// Checks a JWT bearer assertion as Google's token endpoint does.
fn verify(jwt: &str) -> Result<(), &'static str> {
    let parts: Vec<&str> = jwt.split('.').collect();
    let [head, claims, signature] = parts.as_slice() else { return Err("Invalid JWT: not three parts.") };
    let decode = |p: &str| URL_SAFE_NO_PAD.decode(p).map_err(|_| "Invalid JWT: not base64url.");
    let head: Value = serde_json::from_slice(&decode(head)?).map_err(|_| "Invalid JWT header.")?;
    if head["alg"] != "RS256" {
        return Err("Invalid JWT: the algorithm must be RS256.");
    }
    let public = STANDARD.decode(PUBLIC_KEY).map_err(|_| "the fake's key is broken")?;
    let key = aws_lc_rs::signature::UnparsedPublicKey::new(&aws_lc_rs::signature::RSA_PKCS1_2048_8192_SHA256, public);
    let signing_input = &jwt[..parts[0].len() + 1 + parts[1].len()];
    key.verify(signing_input.as_bytes(), &decode(signature)?).map_err(|_| "Invalid JWT Signature.")?;
    let claims: Value = serde_json::from_slice(&decode(claims)?).map_err(|_| "Invalid JWT claims.")?;
    if claims["iss"] != CLIENT_EMAIL {
        return Err("Invalid JWT: unknown issuer.");
    }
    if !claims["aud"].as_str().is_some_and(|a| a.ends_with("/token")) {
        return Err("Invalid JWT: the audience is not this token endpoint.");
    }
    if !claims["scope"]
        .as_str()
        .is_some_and(|s| s.split(' ').any(|s| s == "https://www.googleapis.com/auth/cloud-platform"))
    {
        return Err("Invalid JWT: the scope does not cover Vertex AI.");
    }
    let (iat, exp) = (claims["iat"].as_i64(), claims["exp"].as_i64());
    if !matches!((iat, exp), (Some(iat), Some(exp)) if exp > iat && exp - iat <= 3600) {
        return Err("Invalid JWT: the lifetime must be at most one hour.");
    }
    Ok(())
}

pub(super) async fn dispatch(
    State(state): State<Arc<FakeState>>,
    Path((_project, _location, publisher, model_action)): Path<(String, String, String, String)>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let bearer = headers.get("authorization").and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
    if !bearer.is_some_and(|t| lock(&state.google_tokens).contains(t)) {
        return Dialect::Gemini.error_response(
            401,
            None,
            Some("UNAUTHENTICATED"),
            "Request had invalid authentication credentials. Expected OAuth 2 access token.",
        );
    }
    let Some((model, action)) = model_action.rsplit_once(':') else {
        return Dialect::Gemini.error_response(404, None, None, "unknown method");
    };
    match (publisher.as_str(), action) {
        ("google", "generateContent" | "streamGenerateContent") => {
            super::gemini::dispatch(State(state), Path(model_action.clone()), uri, headers, body).await
        }
        ("google", "predict") => predict(state, headers, body, model).await,
        ("anthropic", "rawPredict" | "streamRawPredict") => {
            let Ok(mut raw) = serde_json::from_slice::<Value>(&body) else {
                return Dialect::Anthropic.error_response(400, None, None, "the body is not JSON");
            };
            if raw.get("model").is_some() {
                return Dialect::Anthropic.error_response(400, None, None, "model: Extra inputs are not permitted");
            }
            if raw.get("anthropic_version").and_then(Value::as_str) != Some(ANTHROPIC_VERSION) {
                return Dialect::Anthropic.error_response(
                    400,
                    None,
                    None,
                    "anthropic_version: must be vertex-2023-10-16",
                );
            }
            if (action == "streamRawPredict") != (raw.get("stream").and_then(Value::as_bool) == Some(true)) {
                return Dialect::Anthropic.error_response(
                    400,
                    None,
                    None,
                    "stream: streamRawPredict takes \"stream\": true, rawPredict does not",
                );
            }
            let by_url = raw["messages"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|m| m["content"].as_array())
                .flatten()
                .any(|b| b.pointer("/source/type").and_then(Value::as_str) == Some("url"));
            if by_url {
                return Dialect::Anthropic.error_response(400, None, None, "URL sources are not supported");
            }
            let Some(fields) = raw.as_object_mut() else {
                return Dialect::Anthropic.error_response(400, None, None, "the body is not a JSON object");
            };
            fields.remove("anthropic_version");
            fields.insert("model".into(), json!(model));
            super::anthropic::messages(State(state), headers, Bytes::from(raw.to_string())).await
        }
        _ => Dialect::Gemini.error_response(404, None, None, "unknown method"),
    }
}

async fn predict(state: Arc<FakeState>, headers: HeaderMap, body: Bytes, model: &str) -> Response {
    let raw: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(_) => return Dialect::Gemini.error_response(400, None, None, "the body is not JSON"),
    };
    if let Err(resp) = intake(&state, Dialect::Gemini, headers, &raw, model).await {
        return resp;
    }
    let instances = raw["instances"].as_array().cloned().unwrap_or_default();
    if model.starts_with("gemini-embedding") && instances.len() > 1 {
        return Dialect::Gemini.error_response(
            400,
            None,
            None,
            "gemini-embedding models take one instance per request",
        );
    }
    let dims = raw.pointer("/parameters/outputDimensionality").and_then(Value::as_u64).unwrap_or(8) as usize;
    let predictions: Vec<Value> = instances
        .iter()
        .map(|i| {
            let text = i["content"].as_str().unwrap_or_default();
            let values: Vec<f64> = fake_vector(text, dims).into_iter().map(f64::from).collect();
            json!({"embeddings": {"values": values, "statistics": {"token_count": text.len().div_ceil(4), "truncated": false}}})
        })
        .collect();
    json_response(&json!({"predictions": predictions}))
}
