//! Google Vertex AI: Gemini and Anthropic models in a project and location, reached with a service
//! account's OAuth token (`providers::google`). Nothing of either protocol is written here again: a
//! request is translated by the Gemini or Anthropic adapter's own code, and answers, streams and errors
//! are read by it; only the addresses and Vertex's envelope differ.
//!
//! - Gemini (`gemini-…`, any model not named below): `…/publishers/google/models/{model}:generateContent`
//!   and `:streamGenerateContent?alt=sse`, the Gemini API's body.
//! - Anthropic (`claude-…`): `…/publishers/anthropic/models/{model}:rawPredict` and `:streamRawPredict`,
//!   the Messages body without `model` and with `anthropic_version: vertex-2023-10-16`.
//! - Embeddings (`text-embedding-…`, `gemini-embedding-…`, `text-multilingual-embedding-…`):
//!   `…/publishers/google/models/{model}:predict` with `instances: [{content}]`; each prediction's
//!   `statistics.token_count` is the usage. `gemini-embedding-…` takes one text per call, the others up
//!   to 250 (the executor splits and joins).
//!
//! The addresses are `{base}/v1/projects/{project}/locations/{location}/…`, the base being
//! `https://{location}-aiplatform.googleapis.com` (`https://aiplatform.googleapis.com` for `global`).
//! Errors are Google's envelope (`{"error": {"code", "status", "message"}}`) for the platform's own
//! refusals and Anthropic's shape for what a Claude model refuses; each is classified by its protocol.
//! The doors' native pass-through is not offered (one provider serves both protocols): Messages and
//! generateContent requests reach Vertex through the canonical chat request.

use http::{HeaderMap, HeaderValue, StatusCode, header};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::protocols::anthropic::AnthropicAdapter;
use crate::protocols::error::{ErrorKind, ProviderError, retry_after};
use crate::protocols::gemini::GeminiAdapter;
use crate::protocols::gemini::wire::ErrorEnvelope;
use crate::protocols::{
    Adapter, Endpoint, StreamMapper, UpstreamRequest, anthropic, bad_request, encode, gemini, path_segment,
};
use crate::schema::{ChatRequest, ChatResponse, Content, EmbeddingRequest, EmbeddingResponse, inline_image};

/// The `anthropic_version` Vertex's Anthropic models take in the body.
pub const ANTHROPIC_VERSION: &str = "vertex-2023-10-16";

#[derive(Debug)]
pub struct VertexAdapter {
    /// `projects/{project}/locations/{location}`, each part one path segment.
    resource: String,
    gemini: GeminiAdapter,
    anthropic: AnthropicAdapter,
}

impl VertexAdapter {
    pub fn new(project: &str, location: &str) -> Self {
        Self {
            resource: format!("projects/{}/locations/{}", path_segment(project), path_segment(location)),
            gemini: GeminiAdapter,
            anthropic: AnthropicAdapter { version: anthropic::DEFAULT_VERSION.to_owned() },
        }
    }

    fn url(&self, endpoint: &Endpoint<'_>, publisher: &str, model: &str, action: &str) -> String {
        format!(
            "{}/v1/{}/publishers/{publisher}/models/{}:{action}",
            endpoint.base_url.trim_end_matches('/'),
            self.resource,
            // `@` is a path character (Vertex's Claude ids carry versions after it: `claude-…@20250929`).
            path_segment(model).replace("%40", "@")
        )
    }
}

fn is_anthropic(model: &str) -> bool {
    model.starts_with("claude")
}

fn json_headers(endpoint: &Endpoint<'_>) -> HeaderMap {
    let mut headers = endpoint.headers.clone();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers
}

#[derive(Serialize)]
struct PredictRequest<'a> {
    instances: Vec<PredictInstance<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    parameters: Option<Value>,
}

#[derive(Serialize)]
struct PredictInstance<'a> {
    content: &'a str,
}

#[derive(Deserialize)]
struct PredictResponse {
    #[serde(default)]
    predictions: Vec<Prediction>,
}

#[derive(Deserialize)]
struct Prediction {
    embeddings: PredictedEmbedding,
}

#[derive(Deserialize)]
struct PredictedEmbedding {
    values: Vec<f64>,
    #[serde(default)]
    statistics: Option<EmbeddingStatistics>,
}

#[derive(Deserialize)]
struct EmbeddingStatistics {
    token_count: Option<f64>,
}

/// The first image the caller gave by URL rather than inline, as `messages[i].content[j].image_url`.
fn image_by_url(req: &ChatRequest) -> Option<String> {
    req.messages.iter().enumerate().find_map(|(i, m)| {
        let Some(Content::Parts(parts)) = &m.content else { return None };
        let j = parts.iter().position(|p| p.image_url.as_ref().is_some_and(|img| inline_image(&img.url).is_none()))?;
        Some(format!("messages[{i}].content[{j}].image_url"))
    })
}

impl Adapter for VertexAdapter {
    fn chat_request(&self, req: &ChatRequest, endpoint: &Endpoint<'_>) -> Result<UpstreamRequest, ProviderError> {
        let stream = req.is_streaming();
        if is_anthropic(&req.model) {
            // Claude on Vertex takes images as base64 only (an image by URL is refused there, and the
            // gateway never fetches a caller's URL): another target may take the request. Looked for in
            // the caller's messages, so the field named is the caller's.
            if let Some(param) = image_by_url(req) {
                return Err(bad_request("Claude on Vertex AI takes images as base64 data: URLs, not by URL.", &param));
            }
            let mut body = serde_json::to_value(anthropic::outbound::translate_request(req)?)
                .map_err(|e| ProviderError::new(ErrorKind::BadRequest, format!("cannot encode the request: {e}")))?;
            if let Some(fields) = body.as_object_mut() {
                fields.remove("model");
                fields.insert("anthropic_version".into(), json!(ANTHROPIC_VERSION));
            }
            let action = if stream { "streamRawPredict" } else { "rawPredict" };
            return Ok(UpstreamRequest {
                url: self.url(endpoint, "anthropic", &req.model, action),
                headers: json_headers(endpoint),
                body: encode(&body)?,
            });
        }
        let body = gemini::outbound::translate_request(req)?;
        let action = if stream { "streamGenerateContent?alt=sse" } else { "generateContent" };
        Ok(UpstreamRequest {
            url: self.url(endpoint, "google", &req.model, action),
            headers: json_headers(endpoint),
            body: encode(&body)?,
        })
    }

    fn parse_chat_response(&self, req: &ChatRequest, body: &[u8]) -> Result<ChatResponse, ProviderError> {
        if is_anthropic(&req.model) {
            self.anthropic.parse_chat_response(req, body)
        } else {
            self.gemini.parse_chat_response(req, body)
        }
    }

    fn stream_mapper(&self, req: &ChatRequest) -> Box<dyn StreamMapper> {
        if is_anthropic(&req.model) { self.anthropic.stream_mapper(req) } else { self.gemini.stream_mapper(req) }
    }

    fn classify_error(&self, status: StatusCode, headers: &HeaderMap, body: &[u8]) -> ProviderError {
        // Google's envelope names a status (`RESOURCE_EXHAUSTED`); Anthropic's has an error `type`.
        match serde_json::from_slice::<ErrorEnvelope>(body) {
            Ok(google) if !google.error.status.is_empty() => {
                gemini::errors::classify(status.as_u16(), Some(&google.error), retry_after(headers))
            }
            _ => self.anthropic.classify_error(status, headers, body),
        }
    }

    /// One choice per call for Anthropic's models: the gateway makes `n` calls.
    fn supports_n(&self) -> bool {
        false
    }

    fn embeddings_per_call(&self, model: &str) -> Option<usize> {
        Some(if model.starts_with("gemini-embedding") { 1 } else { 250 })
    }

    fn embeddings_request(
        &self,
        req: &EmbeddingRequest,
        endpoint: &Endpoint<'_>,
    ) -> Result<UpstreamRequest, ProviderError> {
        if is_anthropic(&req.model) {
            return Err(bad_request("Anthropic's models on Vertex do not embed.", "model"));
        }
        let texts = req
            .input
            .texts()
            .ok_or_else(|| bad_request("Vertex embeddings take text input, not token ids.", "input"))?;
        let body = PredictRequest {
            instances: texts.iter().map(|t| PredictInstance { content: t }).collect(),
            parameters: req.dimensions.map(|d| json!({"outputDimensionality": d})),
        };
        Ok(UpstreamRequest {
            url: self.url(endpoint, "google", &req.model, "predict"),
            headers: json_headers(endpoint),
            body: encode(&body)?,
        })
    }

    fn parse_embeddings(
        &self,
        req: &EmbeddingRequest,
        _headers: &HeaderMap,
        body: &[u8],
    ) -> Result<EmbeddingResponse, ProviderError> {
        let resp: PredictResponse = serde_json::from_slice(body).map_err(|e| {
            ProviderError::new(ErrorKind::InvalidResponse, format!("unreadable Vertex embeddings: {e}"))
        })?;
        let mut tokens = 0u64;
        let mut vectors = Vec::with_capacity(resp.predictions.len());
        for p in resp.predictions {
            let count = p.embeddings.statistics.and_then(|s| s.token_count).ok_or_else(|| {
                ProviderError::new(ErrorKind::InvalidResponse, "a Vertex embedding without its token count")
            })?;
            tokens += count.max(0.0) as u64;
            vectors.push(p.embeddings.values);
        }
        Ok(EmbeddingResponse::floats(&req.model, vectors, tokens))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(body: Value) -> ChatRequest {
        serde_json::from_value(body).unwrap()
    }

    #[test]
    fn gemini_and_claude_go_to_their_publishers_with_their_own_bodies() {
        let adapter = VertexAdapter::new("my-project", "europe-west4");
        let headers = HeaderMap::new();
        let endpoint = Endpoint {
            base_url: "https://europe-west4-aiplatform.googleapis.com",
            api_key: None,
            key_index: None,
            headers: &headers,
        };
        let gemini = request(
            json!({"model": "gemini-2.5-flash", "stream": true, "messages": [{"role": "user", "content": "hi"}]}),
        );
        let call = adapter.chat_request(&gemini, &endpoint).unwrap();
        assert_eq!(
            call.url,
            "https://europe-west4-aiplatform.googleapis.com/v1/projects/my-project/locations/europe-west4/publishers/google/models/gemini-2.5-flash:streamGenerateContent?alt=sse"
        );
        let body: Value = serde_json::from_slice(&call.body).unwrap();
        assert_eq!(body["contents"][0]["parts"][0]["text"], "hi");
        assert!(call.headers.get("x-goog-api-key").is_none() && call.headers.get("authorization").is_none());

        let claude = request(
            json!({"model": "claude-sonnet-4-5@20250929", "max_tokens": 100, "messages": [{"role": "user", "content": "hi"}]}),
        );
        let call = adapter.chat_request(&claude, &endpoint).unwrap();
        assert!(
            call.url.ends_with("/publishers/anthropic/models/claude-sonnet-4-5@20250929:rawPredict"),
            "{}",
            call.url
        );
        let body: Value = serde_json::from_slice(&call.body).unwrap();
        assert_eq!(body["anthropic_version"], ANTHROPIC_VERSION);
        assert!(body.get("model").is_none());
        assert_eq!(body["max_tokens"], 100);
    }

    #[test]
    fn errors_are_read_in_the_shape_they_come_in() {
        let adapter = VertexAdapter::new("p", "us-east5");
        let google = br#"{"error": {"code": 429, "status": "RESOURCE_EXHAUSTED", "message": "Quota exceeded"}}"#;
        assert_eq!(
            adapter.classify_error(StatusCode::TOO_MANY_REQUESTS, &HeaderMap::new(), google).kind,
            ErrorKind::RateLimited
        );
        let claude = br#"{"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}"#;
        let status = StatusCode::from_u16(529).unwrap();
        assert_eq!(adapter.classify_error(status, &HeaderMap::new(), claude).kind, ErrorKind::Overloaded);
    }
}
