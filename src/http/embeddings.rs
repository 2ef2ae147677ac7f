//! `POST /v1/embeddings` and `POST /v1/moderations`.
//!
//! Embeddings honour `encoding_format`: the OpenAI SDKs ask for `base64` (little-endian `f32`) unless told
//! otherwise, so vectors are converted to what the caller asked for whatever the provider returned.

use std::sync::Arc;

use axum::Extension;
use axum::body::Body;
use axum::extract::State;
use axum::response::Response;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use http::HeaderMap;
use tokio::time::Instant;

use super::observe::RequestId;
use super::pipeline::{Call, Intake, Pipeline};
use super::{GatewayError, body, input};
use crate::app::AppState;
use crate::providers::{ProviderError, exec};
use crate::routing::{ModelEntry, RequestFeatures};
use crate::schema::{
    EmbeddingInput, EmbeddingRequest, EmbeddingResponse, EmbeddingVector, EncodingFormat, ModerationRequest, Usage,
};
use crate::tenancy::ActiveKey;

pub async fn create_embeddings(
    State(state): State<Arc<AppState>>,
    Extension(request_id): Extension<RequestId>,
    key: Option<Extension<Arc<ActiveKey>>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, GatewayError> {
    let started = Instant::now();
    let mut req: EmbeddingRequest = body::read_json(&headers, body, state.live().body_limits).await?;
    if req.input.is_empty() {
        return Err(GatewayError::invalid_value("'input' must not be empty.", "input"));
    }
    let inputs = match &req.input {
        EmbeddingInput::One(_) | EmbeddingInput::Tokens(_) => 1,
        EmbeddingInput::Many(v) => v.len(),
        EmbeddingInput::TokenBatches(v) => v.len(),
    };
    input::check_embedding_inputs(&state.live().config.input, inputs).map_err(|e| e.into_error(input::as_is))?;
    if req.dimensions == Some(0) {
        return Err(GatewayError::invalid_value("'dimensions' must be at least 1.", "dimensions"));
    }
    let pipeline = {
        let features = RequestFeatures::for_embeddings(req.input.texts().unwrap_or_default());
        let intake = Intake::uncounted(&req.model, &features, started, "embeddings");
        Pipeline::admit(&state, &request_id, key.as_deref(), &headers, intake).await?
    };
    let wanted = req.encoding_format.unwrap_or(EncodingFormat::Float);
    let mut served = pipeline.run(&mut Embed { req: &mut req, wanted }).await?;
    served.value.model.clone_from(&served.target.name);
    if let Some(u) = &served.value.usage {
        served.usage.provider_usage(&Usage {
            prompt_tokens: u.prompt_tokens,
            total_tokens: u.total_tokens,
            ..Usage::default()
        });
    }
    let body = serde_json::to_vec(&served.value).map_err(|_| GatewayError::internal())?;
    Ok(served.json(body))
}

/// Embeddings from one target, in the encoding the caller asked for.
struct Embed<'r> {
    req: &'r mut EmbeddingRequest,
    wanted: EncodingFormat,
}

impl Call for Embed<'_> {
    type Output = EmbeddingResponse;

    async fn call(&mut self, target: &ModelEntry, deadline: Instant) -> Result<EmbeddingResponse, ProviderError> {
        self.req.model.clone_from(&target.upstream);
        let mut resp = exec::embed(&target.provider, &target.timeouts, self.req, deadline).await?;
        for item in &mut resp.data {
            convert(&mut item.embedding, self.wanted)?;
        }
        Ok(resp)
    }
}

/// A moderation from one target, relayed as the provider wrote it.
struct Moderate<'r>(&'r mut ModerationRequest);

impl Call for Moderate<'_> {
    type Output = serde_json::Value;

    async fn call(&mut self, target: &ModelEntry, deadline: Instant) -> Result<serde_json::Value, ProviderError> {
        self.0.model = Some(target.upstream.clone());
        exec::moderate(&target.provider, &target.timeouts, self.0, deadline).await
    }
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
    let mut req: ModerationRequest = body::read_json(&headers, body, state.live().body_limits).await?;
    let requested = req.model.clone().unwrap_or_else(|| DEFAULT_MODERATION_MODEL.to_owned());
    let pipeline = {
        let features = RequestFeatures::for_embeddings(Vec::new()).moderation();
        let intake = Intake::uncounted(&requested, &features, started, "moderation");
        Pipeline::admit(&state, &request_id, key.as_deref(), &headers, intake).await?
    };
    let mut served = pipeline.run(&mut Moderate(&mut req)).await?;
    if let Some(obj) = served.value.as_object_mut() {
        obj.insert("model".to_owned(), serde_json::Value::String(served.target.name.clone()));
    }
    let body = served.value.to_string().into_bytes();
    Ok(served.json(body))
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
