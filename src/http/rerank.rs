//! `POST /v1/rerank` (and `/v2/rerank`, where Cohere's SDK sends it): documents scored against a query,
//! in Cohere's request and response shape, through the router like every other door (plans, limits,
//! fallbacks, one ledger row).
//!
//! Providers: Cohere's own v2 rerank, and the Cohere-shaped `/rerank` of Jina, vLLM and others
//! (`presets::Rerank`). Documents are sent as strings; the caller's originals are what
//! `return_documents: true` returns, so every provider answers the same way. Results come back sorted
//! by relevance, at most `top_n`, each index checked against the documents sent.

use std::sync::Arc;

use axum::Extension;
use axum::body::Body;
use axum::extract::State;
use axum::response::Response;
use http::HeaderMap;
use serde_json::{Value, json};
use tokio::time::Instant;

use super::observe::RequestId;
use super::pipeline::{Call, Intake, Pipeline};
use super::{GatewayError, body, input};
use crate::app::AppState;
use crate::config::Capability;
use crate::providers::{ErrorKind, ProviderError, exec};
use crate::routing::{ModelEntry, RequestFeatures};
use crate::schema::{RerankRequest, RerankResponse, Usage};
use crate::tenancy::ActiveKey;

pub async fn create_rerank(
    State(state): State<Arc<AppState>>,
    Extension(request_id): Extension<RequestId>,
    key: Option<Extension<Arc<ActiveKey>>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, GatewayError> {
    let started = Instant::now();
    let mut req: RerankRequest = body::read_json(&headers, body, state.live().body_limits).await?;
    if req.query.trim().is_empty() {
        return Err(GatewayError::invalid_value("'query' must not be empty.", "query"));
    }
    if req.documents.is_empty() {
        return Err(GatewayError::invalid_value("'documents' must hold at least one document.", "documents"));
    }
    input::check_rerank_documents(&state.live().config.input, req.documents.len())
        .map_err(|e| e.into_error(input::as_is))?;
    if let Some(i) = req.documents.iter().position(|d| RerankRequest::text_of(d).is_none()) {
        return Err(GatewayError::invalid_value(
            format!("'documents[{i}]' must be a string or an object with a string 'text'."),
            &format!("documents[{i}]"),
        ));
    }
    if req.top_n == Some(0) {
        return Err(GatewayError::invalid_value("'top_n' must be at least 1.", "top_n"));
    }
    if req.max_tokens_per_doc == Some(0) {
        return Err(GatewayError::invalid_value("'max_tokens_per_doc' must be at least 1.", "max_tokens_per_doc"));
    }
    let pipeline = {
        let mut texts: Vec<&str> = vec![&req.query];
        texts.extend(req.documents.iter().filter_map(RerankRequest::text_of));
        let features = RequestFeatures::for_work(texts, Capability::Rerank);
        let intake = Intake::uncounted(&req.model, &features, started, "rerank");
        Pipeline::admit(&state, &request_id, key.as_deref(), &headers, intake).await?
    };
    let mut served = pipeline.run(&mut Rank(&mut req)).await?;
    if let Some(tokens) = served.value.input_tokens() {
        served.usage.provider_usage(&Usage { prompt_tokens: tokens, total_tokens: tokens, ..Usage::default() });
    }
    let answer = answer(&req, std::mem::take(&mut served.value), &served.target.name);
    let body = serde_json::to_vec(&answer).map_err(|_| GatewayError::internal())?;
    Ok(served.json(body))
}

/// A rerank from one target, its results checked against the documents sent.
struct Rank<'r>(&'r mut RerankRequest);

impl Call for Rank<'_> {
    type Output = RerankResponse;

    async fn call(&mut self, target: &ModelEntry, deadline: Instant) -> Result<RerankResponse, ProviderError> {
        self.0.model.clone_from(&target.upstream);
        let resp = exec::rerank(&target.provider, &target.timeouts, self.0, deadline).await?;
        check(&resp, self.0.documents.len())?;
        Ok(resp)
    }
}

/// Each result names a document that was sent, once, with a score.
fn check(resp: &RerankResponse, documents: usize) -> Result<(), ProviderError> {
    let invalid = |what: String| ProviderError::new(ErrorKind::InvalidResponse, what);
    let mut seen = vec![false; documents];
    for r in &resp.results {
        match seen.get_mut(r.index) {
            None => {
                return Err(invalid(format!("the provider ranked a document that was not sent (index {})", r.index)));
            }
            Some(true) => return Err(invalid(format!("the provider ranked document {} twice", r.index))),
            Some(slot) => *slot = true,
        }
        if !r.relevance_score.is_finite() {
            return Err(invalid(format!("the provider gave document {} no usable score", r.index)));
        }
    }
    Ok(())
}

/// Cohere's answer: results by relevance, at most `top_n`, with the caller's own documents when asked.
fn answer(req: &RerankRequest, mut resp: RerankResponse, model: &str) -> Value {
    resp.results.sort_by(|a, b| b.relevance_score.total_cmp(&a.relevance_score));
    if let Some(n) = req.top_n {
        resp.results.truncate(n as usize);
    }
    let with_documents = req.return_documents == Some(true);
    let results: Vec<Value> = resp
        .results
        .iter()
        .map(|r| {
            let mut out = json!({"index": r.index, "relevance_score": r.relevance_score});
            if with_documents {
                out["document"] = match &req.documents[r.index] {
                    Value::String(text) => json!({"text": text}),
                    original => original.clone(),
                };
            }
            out
        })
        .collect();
    let tokens = resp.input_tokens();
    let mut out = json!({
        "id": resp.id.unwrap_or_else(|| format!("rerank-{}", uuid::Uuid::now_v7())),
        "model": model,
        "results": results,
    });
    if let Some(meta) = resp.meta {
        out["meta"] = meta;
    }
    if let Some(tokens) = tokens {
        out["usage"] = json!({"total_tokens": tokens});
    }
    out
}
