//! `POST /v1/embeddings` and `POST /v1/moderations`.
//!
//! Embeddings honour `encoding_format`: the OpenAI SDKs ask for `base64` (little-endian `f32`) unless told
//! otherwise, so vectors are converted to what the caller asked for whatever the provider returned.

use std::sync::Arc;

use axum::Extension;
use axum::body::Body;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use http::{HeaderMap, header};
use tokio::time::Instant;

use super::chat::{all_failed, route_headers};
use super::observe::RequestId;
use super::{GatewayError, admission, body};
use crate::app::AppState;
use crate::providers::{ProviderError, exec};
use crate::routing::{Caller, Fallback, RequestFeatures};
use crate::schema::{EmbeddingRequest, EmbeddingVector, EncodingFormat, ModerationRequest, Usage};
use crate::tenancy::ActiveKey;
use crate::usage::{Outcome, UsageGuard};

pub async fn create_embeddings(
    State(state): State<Arc<AppState>>,
    Extension(request_id): Extension<RequestId>,
    key: Option<Extension<Arc<ActiveKey>>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, GatewayError> {
    let started = Instant::now();
    let mut req: EmbeddingRequest = body::read_json(&headers, body, state.body_limits).await?;
    if req.input.is_empty() {
        return Err(GatewayError::invalid_value("'input' must not be empty.", "input"));
    }
    if req.dimensions == Some(0) {
        return Err(GatewayError::invalid_value("'dimensions' must be at least 1.", "dimensions"));
    }
    let (plan, ask, estimate) = {
        let texts = req.input.texts().unwrap_or_default();
        let features = RequestFeatures::for_embeddings(texts);
        let plan = state.catalog.route(&req.model, &caller_of(&key), &features).await?;
        let ask = admission::ask(&features, &plan, 0, 1);
        (plan, ask, features.prompt_token_estimate())
    };
    let usage = UsageGuard::for_request(
        state.usage.clone(),
        &request_id.ledger_id,
        request_id.client_id.as_deref(),
        &req.model,
        false,
        estimate,
        started.into_std(),
    );
    let (mut usage, limits_view) = admit(&state, &key, ask, usage).await?;
    let wanted = req.encoding_format.unwrap_or(EncodingFormat::Float);
    let mut fallback = Fallback::new(&plan, &state.router, started);
    while let Some(target) = fallback.next().await {
        usage.set_served(&target.name, &target.provider.name, target.prices());
        req.model.clone_from(&target.upstream);
        let deadline = fallback.attempt_deadline(&target);
        let mut resp = match exec::embed(&target.provider, &target.timeouts, &req, deadline).await {
            Ok(resp) => resp,
            Err(e) => {
                tracing::warn!(model = %target.name, error = %e, "upstream attempt failed");
                if fallback.failed(&target, e) {
                    continue;
                }
                break;
            }
        };
        fallback.succeeded(&target);
        for item in &mut resp.data {
            convert(&mut item.embedding, wanted).map_err(|e| GatewayError::from_provider(&e))?;
        }
        resp.model.clone_from(&target.name);
        if let Some(u) = &resp.usage {
            usage.provider_usage(&Usage {
                prompt_tokens: u.prompt_tokens,
                total_tokens: u.total_tokens,
                ..Usage::default()
            });
        }
        let json = serde_json::to_vec(&resp).map_err(|_| GatewayError::internal())?;
        usage.finish(Outcome::Completed, 200, None);
        let mut response = ([(header::CONTENT_TYPE, "application/json")], json).into_response();
        route_headers(response.headers_mut(), &plan, &fallback, &target);
        admission::headers(response.headers_mut(), limits_view.as_ref());
        return Ok(response);
    }
    Err(all_failed(usage, &fallback, &plan))
}

/// Records who pays, then admits the request against the key's limits (no prompt is used).
async fn admit(
    state: &AppState,
    key: &Option<Extension<Arc<ActiveKey>>>,
    ask: crate::limits::Ask,
    mut usage: UsageGuard,
) -> Result<(UsageGuard, Option<crate::limits::View>), GatewayError> {
    let key = key.as_ref().map(|Extension(k)| k);
    if let Some(k) = key {
        usage.set_caller(&k.organization_id, &k.id);
    }
    admission::admit(state, key, ask, usage).await
}

/// What routing must respect for the calling key (nothing for the master key).
fn caller_of(key: &Option<Extension<Arc<ActiveKey>>>) -> Caller {
    key.as_ref().map_or_else(Caller::default, |Extension(k)| k.caller.clone())
}

/// Rewrites a vector into the encoding the caller asked for.
fn convert(v: &mut EmbeddingVector, wanted: EncodingFormat) -> Result<(), ProviderError> {
    match (wanted, &*v) {
        (EncodingFormat::Base64, EmbeddingVector::Float(values)) => {
            let bytes: Vec<u8> = values.iter().flat_map(|&x| (x as f32).to_le_bytes()).collect();
            *v = EmbeddingVector::Base64(STANDARD.encode(bytes));
        }
        (EncodingFormat::Float, EmbeddingVector::Base64(text)) => {
            let bytes = STANDARD.decode(text).map_err(|_| invalid("a base64 embedding that does not decode"))?;
            if bytes.len() % 4 != 0 {
                return Err(invalid("a base64 embedding that is not a whole number of floats"));
            }
            *v = EmbeddingVector::Float(
                bytes.chunks_exact(4).map(|c| f64::from(f32::from_le_bytes([c[0], c[1], c[2], c[3]]))).collect(),
            );
        }
        _ => {}
    }
    Ok(())
}

fn invalid(what: &str) -> ProviderError {
    ProviderError::new(crate::providers::ErrorKind::InvalidResponse, format!("the provider returned {what}"))
}

/// The model used when a moderations request names none, as OpenAI does.
const DEFAULT_MODERATION_MODEL: &str = "omni-moderation-latest";

pub async fn create_moderation(
    State(state): State<Arc<AppState>>,
    Extension(request_id): Extension<RequestId>,
    key: Option<Extension<Arc<ActiveKey>>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, GatewayError> {
    let started = Instant::now();
    let mut req: ModerationRequest = body::read_json(&headers, body, state.body_limits).await?;
    let requested = req.model.clone().unwrap_or_else(|| DEFAULT_MODERATION_MODEL.to_owned());
    let features = RequestFeatures::for_embeddings(Vec::new()).moderation();
    let plan = state.catalog.route(&requested, &caller_of(&key), &features).await?;
    let ask = admission::ask(&features, &plan, 0, 1);
    let usage = UsageGuard::for_request(
        state.usage.clone(),
        &request_id.ledger_id,
        request_id.client_id.as_deref(),
        &requested,
        false,
        0,
        started.into_std(),
    );
    let (mut usage, limits_view) = admit(&state, &key, ask, usage).await?;
    let mut fallback = Fallback::new(&plan, &state.router, started);
    while let Some(target) = fallback.next().await {
        usage.set_served(&target.name, &target.provider.name, target.prices());
        req.model = Some(target.upstream.clone());
        let deadline = fallback.attempt_deadline(&target);
        match exec::moderate(&target.provider, &target.timeouts, &req, deadline).await {
            Ok(mut resp) => {
                fallback.succeeded(&target);
                if let Some(obj) = resp.as_object_mut() {
                    obj.insert("model".to_owned(), serde_json::Value::String(target.name.clone()));
                }
                usage.finish(Outcome::Completed, 200, None);
                let mut response = ([(header::CONTENT_TYPE, "application/json")], resp.to_string()).into_response();
                route_headers(response.headers_mut(), &plan, &fallback, &target);
                admission::headers(response.headers_mut(), limits_view.as_ref());
                return Ok(response);
            }
            Err(e) => {
                tracing::warn!(model = %target.name, error = %e, "upstream attempt failed");
                if !fallback.failed(&target, e) {
                    break;
                }
            }
        }
    }
    Err(all_failed(usage, &fallback, &plan))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vectors_convert_between_float_and_base64_losslessly_for_f32() {
        let original = vec![0.5, -1.25, 3.0e-3_f32 as f64];
        let mut v = EmbeddingVector::Float(original.clone());
        convert(&mut v, EncodingFormat::Base64).unwrap();
        let EmbeddingVector::Base64(text) = &v else { panic!("not base64") };
        assert_eq!(STANDARD.decode(text).unwrap().len(), 12);
        convert(&mut v, EncodingFormat::Float).unwrap();
        assert_eq!(v, EmbeddingVector::Float(original));
    }
}
