//! Azure OpenAI: the OpenAI wire format, addressed by deployment.
//!
//! `{base_url}/openai/deployments/{deployment}/chat/completions?api-version=…` with the key in `api-key`.
//! The model's upstream id is the deployment name. Bodies, streams and errors are OpenAI's, so everything
//! else is the OpenAI adapter's. Reference: Azure OpenAI REST API reference (data plane, inference).

use http::{HeaderMap, StatusCode};

use super::error::ProviderError;
use super::openai::{OpenAiAdapter, auth_headers};
use super::{Adapter, Endpoint, Native, NativeCall, StreamMapper, UpstreamRequest, encode};
use crate::schema::{ChatRequest, ChatResponse, EmbeddingRequest, EmbeddingResponse};

pub const DEFAULT_API_VERSION: &str = "2024-10-21";

#[derive(Debug)]
pub struct AzureAdapter {
    pub api_version: String,
    pub inner: OpenAiAdapter,
}

impl AzureAdapter {
    fn url(&self, endpoint: &Endpoint<'_>, deployment: &str, operation: &str) -> String {
        format!(
            "{}/openai/deployments/{}/{operation}?api-version={}",
            endpoint.base_url.trim_end_matches('/'),
            super::path_segment(deployment),
            self.api_version
        )
    }
}

impl Adapter for AzureAdapter {
    fn chat_request(&self, req: &ChatRequest, endpoint: &Endpoint<'_>) -> Result<UpstreamRequest, ProviderError> {
        Ok(UpstreamRequest {
            url: self.url(endpoint, &req.model, "chat/completions"),
            headers: auth_headers(endpoint, Some("api-key"))?,
            body: self.inner.chat_body(req)?,
        })
    }

    fn parse_chat_response(&self, req: &ChatRequest, body: &[u8]) -> Result<ChatResponse, ProviderError> {
        self.inner.parse_chat_response(req, body)
    }

    fn stream_mapper(&self, req: &ChatRequest) -> Box<dyn StreamMapper> {
        self.inner.stream_mapper(req)
    }

    fn classify_error(&self, status: StatusCode, headers: &HeaderMap, body: &[u8]) -> ProviderError {
        self.inner.classify_error(status, headers, body)
    }

    fn speaks(&self, protocol: Native) -> bool {
        matches!(protocol, Native::Responses | Native::Completions)
    }

    /// Completions are by deployment; Responses are served on Azure's v1 API by resource, the deployment
    /// being the body's `model`.
    fn native_request(
        &self,
        protocol: Native,
        call: NativeCall<'_>,
        endpoint: &Endpoint<'_>,
    ) -> Result<UpstreamRequest, ProviderError> {
        let url = match protocol {
            Native::Completions => self.url(endpoint, call.model, "completions"),
            Native::Responses => format!("{}/openai/v1/responses", endpoint.base_url.trim_end_matches('/')),
            Native::Messages | Native::GenerateContent => {
                return Err(super::bad_request("Azure OpenAI speaks OpenAI's APIs only.", "model"));
            }
        };
        Ok(UpstreamRequest { url, headers: auth_headers(endpoint, Some("api-key"))?, body: call.body })
    }

    fn embeddings_request(
        &self,
        req: &EmbeddingRequest,
        endpoint: &Endpoint<'_>,
    ) -> Result<UpstreamRequest, ProviderError> {
        Ok(UpstreamRequest {
            url: self.url(endpoint, &req.model, "embeddings"),
            headers: auth_headers(endpoint, Some("api-key"))?,
            body: encode(req)?,
        })
    }

    fn parse_embeddings(
        &self,
        req: &EmbeddingRequest,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Result<EmbeddingResponse, ProviderError> {
        self.inner.parse_embeddings(req, headers, body)
    }
}
