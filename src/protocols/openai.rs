//! The OpenAI wire protocol, spoken by OpenAI and by every OpenAI-compatible lab, and by the `/v1` doors.
//!
//! Its wire types are the canonical ones (`schema`), so both directions are nearly the identity.
//! Outbound, requests go as the caller wrote them (the pipeline has already put the upstream model id in
//! place; preset quirks may rename or drop fields), so fields Switchyard does not model pass through
//! untouched; responses and chunks are read into the canonical types, which keep unknown fields too.
//! Inbound, the canonical answer is the answer (`OpenAi` dialect); errors are `{"error": {message, type,
//! param, code}}`. Reference: the OpenAI API reference for `POST /v1/chat/completions` and its streaming
//! events; errors per the OpenAI error-codes guide.

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, StatusCode, header};
use serde::Deserialize;

use super::error::{ErrorKind, ProviderError, retry_after};
use super::{
    Adapter, Dialect, Endpoint, ErrorReply, ForwardBody, ForwardRequest, Native, NativeCall, StreamEncoder,
    StreamMapper, StreamStep, UpstreamRequest, bad_request, encode,
};
use crate::config::presets::{Quirks, Rerank, STRICT_EXTRA_FIELDS, is_reasoning_model};
use crate::schema::{
    ChatChunk, ChatRequest, ChatResponse, EmbeddingRequest, EmbeddingResponse, ErrorBody, ErrorObject,
    ModerationRequest, RerankRequest,
};
use crate::sse::{DONE_FRAME, SseEvent, data_frame};

#[derive(Debug)]
pub struct OpenAiAdapter {
    pub quirks: Quirks,
}

impl OpenAiAdapter {
    /// The request as this provider needs it, when its quirks call for changes (a copy is made only then).
    fn adjusted(&self, req: &ChatRequest) -> Option<ChatRequest> {
        let rename = self.quirks.max_completion_tokens && req.max_tokens.is_some() && is_reasoning_model(&req.model);
        let drop_stream_options = !self.quirks.stream_options && req.stream_options.is_some();
        let strict = self.quirks.strict_fields && req.extra.keys().any(|k| !STRICT_EXTRA_FIELDS.contains(&k.as_str()));
        if !(rename || drop_stream_options || strict) {
            return None;
        }
        let mut r = req.clone();
        if rename {
            r.max_completion_tokens = r.max_completion_tokens.or(r.max_tokens.take());
        }
        if drop_stream_options {
            r.stream_options = None;
        }
        if strict {
            r.extra.retain(|k, _| STRICT_EXTRA_FIELDS.contains(&k.as_str()));
        }
        Some(r)
    }

    /// The body to send for `req`: the caller's own request unless a quirk changes it.
    pub fn chat_body(&self, req: &ChatRequest) -> Result<Bytes, ProviderError> {
        match self.adjusted(req) {
            Some(adjusted) => encode(&adjusted),
            None => encode(req),
        }
    }
}

impl Adapter for OpenAiAdapter {
    fn prefill(&self) -> crate::config::presets::Prefill {
        self.quirks.prefill
    }

    fn chat_request(&self, req: &ChatRequest, endpoint: &Endpoint<'_>) -> Result<UpstreamRequest, ProviderError> {
        Ok(UpstreamRequest {
            url: url(endpoint, "chat/completions"),
            headers: bearer_headers(endpoint)?,
            body: self.chat_body(req)?,
        })
    }

    fn parse_chat_response(&self, _req: &ChatRequest, body: &[u8]) -> Result<ChatResponse, ProviderError> {
        serde_json::from_slice(body).map_err(|e| {
            ProviderError::new(
                ErrorKind::InvalidResponse,
                format!("the provider's response is not a chat completion: {e}"),
            )
        })
    }

    fn stream_mapper(&self, _req: &ChatRequest) -> Box<dyn StreamMapper> {
        Box::new(OpenAiStream)
    }

    fn classify_error(&self, status: StatusCode, headers: &HeaderMap, body: &[u8]) -> ProviderError {
        classify(status, headers, body)
    }

    fn embeddings_request(
        &self,
        req: &EmbeddingRequest,
        endpoint: &Endpoint<'_>,
    ) -> Result<UpstreamRequest, ProviderError> {
        Ok(UpstreamRequest { url: url(endpoint, "embeddings"), headers: bearer_headers(endpoint)?, body: encode(req)? })
    }

    fn parse_embeddings(
        &self,
        _req: &EmbeddingRequest,
        _headers: &HeaderMap,
        body: &[u8],
    ) -> Result<EmbeddingResponse, ProviderError> {
        serde_json::from_slice(body).map_err(|e| {
            ProviderError::new(
                ErrorKind::InvalidResponse,
                format!("the provider's response is not an embedding list: {e}"),
            )
        })
    }

    fn speaks(&self, protocol: Native) -> bool {
        match protocol {
            Native::Responses => self.quirks.responses,
            Native::Completions => self.quirks.completions,
            Native::Messages | Native::GenerateContent => false,
        }
    }

    fn native_request(
        &self,
        protocol: Native,
        call: NativeCall<'_>,
        endpoint: &Endpoint<'_>,
    ) -> Result<UpstreamRequest, ProviderError> {
        let path = match protocol {
            Native::Responses => "responses",
            Native::Completions => "completions",
            Native::Messages | Native::GenerateContent => {
                return Err(bad_request("This provider speaks OpenAI's APIs only.", "model"));
            }
        };
        Ok(UpstreamRequest { url: url(endpoint, path), headers: bearer_headers(endpoint)?, body: call.body })
    }

    fn moderation_request(
        &self,
        req: &ModerationRequest,
        endpoint: &Endpoint<'_>,
    ) -> Result<UpstreamRequest, ProviderError> {
        Ok(UpstreamRequest {
            url: url(endpoint, "moderations"),
            headers: bearer_headers(endpoint)?,
            body: encode(req)?,
        })
    }

    fn offers(&self, work: crate::config::Capability) -> bool {
        use crate::config::Capability;
        match work {
            Capability::Rerank => self.quirks.rerank != Rerank::None,
            Capability::ImageGeneration | Capability::Speech | Capability::Transcription => true,
            _ => false,
        }
    }

    fn media_request(
        &self,
        path: &'static str,
        body: Bytes,
        endpoint: &Endpoint<'_>,
    ) -> Result<UpstreamRequest, ProviderError> {
        Ok(UpstreamRequest { url: url(endpoint, path), headers: bearer_headers(endpoint)?, body })
    }

    fn forward_request(
        &self,
        method: http::Method,
        path: &str,
        content_type: Option<HeaderValue>,
        body: ForwardBody,
        endpoint: &Endpoint<'_>,
    ) -> Result<ForwardRequest, ProviderError> {
        let mut headers = bearer_headers(endpoint)?;
        match content_type {
            Some(t) => headers.insert(header::CONTENT_TYPE, t),
            None => headers.remove(header::CONTENT_TYPE),
        };
        Ok(ForwardRequest { method, url: url(endpoint, path), headers, body })
    }

    /// Documents go as strings (Cohere's v2 takes nothing else; the others take them too); the gateway
    /// keeps the originals to return.
    fn rerank_request(&self, req: &RerankRequest, endpoint: &Endpoint<'_>) -> Result<UpstreamRequest, ProviderError> {
        let url = match self.quirks.rerank {
            Rerank::None => {
                return Err(ProviderError::new(
                    ErrorKind::Untranslatable,
                    "this model's provider does not offer reranking",
                ));
            }
            Rerank::Compatible => url(endpoint, "rerank"),
            Rerank::CohereV2 => crate::protocols::cohere::v2(endpoint, "rerank"),
        };
        let documents: Vec<serde_json::Value> = req
            .documents
            .iter()
            .map(|d| serde_json::Value::String(RerankRequest::text_of(d).unwrap_or_default().to_owned()))
            .collect();
        let mut body = serde_json::json!({"model": req.model, "query": req.query, "documents": documents});
        if let Some(n) = req.top_n {
            body["top_n"] = n.into();
        }
        // Cohere's own field; the others do not document it.
        if let (Some(n), Rerank::CohereV2) = (req.max_tokens_per_doc, self.quirks.rerank) {
            body["max_tokens_per_doc"] = n.into();
        }
        Ok(UpstreamRequest { url, headers: bearer_headers(endpoint)?, body: encode(&body)? })
    }
}

fn url(endpoint: &Endpoint<'_>, path: &str) -> String {
    format!("{}/{path}", endpoint.base_url.trim_end_matches('/'))
}

/// JSON content type plus the key as `Authorization: Bearer`, or in `header_name` when given (Azure).
pub(super) fn auth_headers(
    endpoint: &Endpoint<'_>,
    header_name: Option<&'static str>,
) -> Result<HeaderMap, ProviderError> {
    let mut headers = endpoint.headers.clone();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if let Some(key) = endpoint.api_key {
        let value = match header_name {
            None => HeaderValue::try_from(format!("Bearer {}", key.expose())),
            Some(_) => HeaderValue::try_from(key.expose()),
        };
        let mut value = value.map_err(|_| {
            ProviderError::new(ErrorKind::Authentication, "the provider key is not a valid header value")
        })?;
        value.set_sensitive(true);
        match header_name {
            None => headers.insert(header::AUTHORIZATION, value),
            Some(name) => headers.insert(name, value),
        };
    }
    Ok(headers)
}

pub fn bearer_headers(endpoint: &Endpoint<'_>) -> Result<HeaderMap, ProviderError> {
    auth_headers(endpoint, None)
}

struct OpenAiStream;

impl StreamMapper for OpenAiStream {
    fn map(&mut self, event: &SseEvent, out: &mut Vec<ChatChunk>) -> Result<StreamStep, ProviderError> {
        let data = event.data.trim();
        if data == "[DONE]" {
            return Ok(StreamStep::Done);
        }
        if data.is_empty() {
            return Ok(StreamStep::Continue);
        }
        let mut chunk = serde_json::from_str::<ChatChunk>(data)
            .map_err(|e| ProviderError::new(ErrorKind::InvalidResponse, format!("unreadable stream event: {e}")))?;
        // An error inside a 200 stream: `data: {"error": {...}}`.
        if let Some(error) = chunk.extra.remove("error") {
            let detail = serde_json::from_value::<WireErrorDetail>(error).ok();
            let message = detail.as_ref().map_or_else(|| FALLBACK.to_owned(), |d| d.message_or(FALLBACK));
            let mut e = ProviderError::new(ErrorKind::StreamInterrupted, message);
            e.code = detail.and_then(|d| d.code_string());
            return Err(e);
        }
        out.push(chunk);
        Ok(StreamStep::Continue)
    }
}

const FALLBACK: &str = "the provider reported an error mid-stream";

#[derive(Deserialize)]
struct WireError {
    error: Option<WireErrorDetail>,
}

#[derive(Deserialize)]
struct WireErrorDetail {
    message: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
    code: Option<serde_json::Value>,
    param: Option<String>,
}

impl WireErrorDetail {
    fn message_or(&self, default: &str) -> String {
        self.message.clone().filter(|m| !m.is_empty()).unwrap_or_else(|| default.to_owned())
    }

    fn code_string(&self) -> Option<String> {
        match &self.code {
            Some(serde_json::Value::String(s)) => Some(s.clone()),
            Some(serde_json::Value::Number(n)) => Some(n.to_string()),
            _ => None,
        }
    }
}

/// Classifies an OpenAI-style error response.
pub fn classify(status: StatusCode, headers: &HeaderMap, body: &[u8]) -> ProviderError {
    let detail = serde_json::from_slice::<WireError>(body).ok().and_then(|w| w.error);
    let code = detail.as_ref().and_then(WireErrorDetail::code_string);
    let kind_text = detail.as_ref().and_then(|d| d.kind.clone()).unwrap_or_default();
    let is = |needle: &str| code.as_deref() == Some(needle) || kind_text == needle;
    let kind = match status.as_u16() {
        429 if is("insufficient_quota") => ErrorKind::QuotaExhausted,
        429 => ErrorKind::RateLimited,
        401 | 403 => ErrorKind::Authentication,
        402 => ErrorKind::QuotaExhausted,
        404 => ErrorKind::NotFound,
        408 => ErrorKind::Timeout(super::error::TimeoutPhase::Total),
        413 => ErrorKind::ContextTooLong,
        400..=499 if is("context_length_exceeded") => ErrorKind::ContextTooLong,
        400..=499 if is("content_policy_violation") || is("content_filter") => ErrorKind::ContentPolicy,
        400..=499 => ErrorKind::BadRequest,
        529 => ErrorKind::Overloaded,
        _ => ErrorKind::ServerError,
    };
    let upstream_message = detail.as_ref().and_then(|d| d.message.clone()).filter(|m| !m.is_empty());
    let message = match kind {
        // The caller's own mistakes: the provider's words explain them best.
        ErrorKind::BadRequest | ErrorKind::NotFound | ErrorKind::ContextTooLong | ErrorKind::ContentPolicy => {
            upstream_message.unwrap_or_else(|| format!("the provider rejected the request ({status})"))
        }
        // Everything else is written by us: it may concern the gateway's account, not the caller.
        ErrorKind::RateLimited => "the provider is rate limiting requests".to_owned(),
        ErrorKind::QuotaExhausted => "the provider account's quota or credit is exhausted".to_owned(),
        ErrorKind::Authentication => "the provider rejected the gateway's credentials".to_owned(),
        ErrorKind::Overloaded => "the provider is overloaded".to_owned(),
        _ => format!("the provider failed with HTTP {}", status.as_u16()),
    };
    ProviderError {
        kind,
        status: Some(status.as_u16()),
        retry_after: retry_after(headers),
        message,
        code,
        param: detail.and_then(|d| d.param),
    }
}

/// Our error as OpenAI's error object.
pub fn render_error(e: &ErrorReply<'_>) -> Vec<u8> {
    let body = ErrorBody {
        error: ErrorObject {
            message: e.message.to_owned(),
            kind: e.kind.to_owned(),
            param: e.param.map(str::to_owned),
            code: e.code.map(str::to_owned),
        },
    };
    serde_json::to_vec(&body).unwrap_or_default()
}

/// OpenAI's chat completions door: the canonical shapes as they are.
pub struct OpenAi {
    /// The caller asked for the final usage chunk (`stream_options.include_usage`); the gateway always asks
    /// the provider for it, and passes it on only then.
    pub wants_usage: bool,
}

impl Dialect for OpenAi {
    fn whole(&self, resp: &ChatResponse) -> Vec<u8> {
        serde_json::to_vec(resp).unwrap_or_default()
    }

    fn stream(&self) -> Box<dyn StreamEncoder> {
        Box::new(OpenAiChunks { wants_usage: self.wants_usage })
    }
}

struct OpenAiChunks {
    wants_usage: bool,
}

impl StreamEncoder for OpenAiChunks {
    fn chunk(&mut self, chunk: &ChatChunk, out: &mut Vec<Bytes>) {
        if chunk.usage.is_some() && !self.wants_usage {
            if chunk.choices.is_empty() {
                return; // The usage chunk we asked for on our own account.
            }
            let mut chunk = chunk.clone();
            chunk.usage = None;
            out.extend(serde_json::to_vec(&chunk).ok().map(|json| data_frame(&json)));
            return;
        }
        out.extend(serde_json::to_vec(chunk).ok().map(|json| data_frame(&json)));
    }

    fn done(&mut self, out: &mut Vec<Bytes>) {
        out.push(Bytes::from_static(DONE_FRAME));
    }

    fn error(&mut self, e: &ErrorReply<'_>) -> Bytes {
        data_frame(&render_error(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cohere_reranks_go_to_its_own_v2_api_beside_the_compatibility_one() {
        let headers = HeaderMap::new();
        let req: RerankRequest =
            serde_json::from_value(serde_json::json!({"model": "rerank-v3.5", "query": "q", "documents": ["a"],
                                                      "max_tokens_per_doc": 512}))
            .unwrap();
        let url_for = |base: &str, rerank: Rerank| {
            let adapter = OpenAiAdapter { quirks: Quirks { rerank, ..Quirks::COMPATIBLE } };
            let endpoint = Endpoint { base_url: base, api_key: None, key_index: None, headers: &headers };
            adapter
                .rerank_request(&req, &endpoint)
                .map(|r| (r.url, serde_json::from_slice::<serde_json::Value>(&r.body).unwrap()))
        };
        let (url, body) = url_for("https://api.cohere.ai/compatibility/v1", Rerank::CohereV2).unwrap();
        assert_eq!(url, "https://api.cohere.ai/v2/rerank");
        assert_eq!(body["max_tokens_per_doc"], 512);
        assert_eq!(url_for("https://api.cohere.com/", Rerank::CohereV2).unwrap().0, "https://api.cohere.com/v2/rerank");
        let (url, body) = url_for("https://api.jina.ai/v1", Rerank::Compatible).unwrap();
        assert_eq!(url, "https://api.jina.ai/v1/rerank");
        assert!(body.get("max_tokens_per_doc").is_none(), "Cohere's own field, for Cohere only");
        assert!(url_for("https://api.openai.com/v1", Rerank::None).is_err());
    }

    fn classify_json(status: u16, body: serde_json::Value) -> ProviderError {
        classify(StatusCode::from_u16(status).unwrap(), &HeaderMap::new(), body.to_string().as_bytes())
    }

    #[test]
    fn errors_are_classified_by_status_and_code() {
        let quota = classify_json(
            429,
            serde_json::json!({"error": {"message": "You exceeded your current quota", "type": "insufficient_quota", "code": "insufficient_quota"}}),
        );
        assert_eq!(quota.kind, ErrorKind::QuotaExhausted);
        let ctx = classify_json(
            400,
            serde_json::json!({"error": {"message": "too long", "type": "invalid_request_error", "code": "context_length_exceeded", "param": "messages"}}),
        );
        assert_eq!(
            (ctx.kind, ctx.message.as_str(), ctx.param.as_deref()),
            (ErrorKind::ContextTooLong, "too long", Some("messages"))
        );
        let auth =
            classify_json(401, serde_json::json!({"error": {"message": "Incorrect API key provided: sk-abc***xyz"}}));
        assert_eq!(auth.kind, ErrorKind::Authentication);
        assert!(!auth.message.contains("sk-"), "credential-bearing messages are not relayed");
        assert_eq!(classify_json(503, serde_json::json!({})).kind, ErrorKind::ServerError);
    }

    #[test]
    fn quirks_rewrite_only_what_a_provider_needs() {
        let req: ChatRequest = serde_json::from_value(serde_json::json!({
            "model": "o3-mini", "max_tokens": 50, "stream": true, "stream_options": {"include_usage": true},
            "messages": [{"role": "user", "content": "hi"}], "seed": 3, "vendor_field": 1
        }))
        .unwrap();
        let body = |quirks| -> serde_json::Value {
            serde_json::from_slice(&OpenAiAdapter { quirks }.chat_body(&req).unwrap()).unwrap()
        };
        let official = body(Quirks::OPENAI);
        assert_eq!((official["max_completion_tokens"].as_u64(), official.get("max_tokens")), (Some(50), None));
        assert_eq!(official["vendor_field"], 1);
        let strict = body(Quirks { stream_options: false, strict_fields: true, ..Quirks::COMPATIBLE });
        assert_eq!(strict["max_tokens"], 50);
        assert!(strict.get("vendor_field").is_none() && strict.get("stream_options").is_none());
        assert_eq!(strict["seed"], 3);
        assert_eq!(body(Quirks::COMPATIBLE), serde_json::to_value(&req).unwrap(), "no quirk, no change");
    }

    #[test]
    fn retry_after_headers_are_read() {
        let mut h = HeaderMap::new();
        h.insert("retry-after", HeaderValue::from_static("2"));
        let e = classify(StatusCode::TOO_MANY_REQUESTS, &h, b"not json");
        assert_eq!((e.kind, e.retry_after), (ErrorKind::RateLimited, Some(std::time::Duration::from_secs(2))));
        h.insert("retry-after-ms", HeaderValue::from_static("250"));
        assert_eq!(retry_after(&h), Some(std::time::Duration::from_millis(250)));
    }

    #[test]
    fn in_band_stream_errors_are_failures() {
        let mut out = Vec::new();
        let ev = SseEvent {
            data: r#"{"error":{"message":"overloaded","code":"server_error"}}"#.into(),
            ..Default::default()
        };
        let err = OpenAiStream.map(&ev, &mut out).unwrap_err();
        assert_eq!((err.kind, err.message.as_str()), (ErrorKind::StreamInterrupted, "overloaded"));
        let done = SseEvent { data: "[DONE]".into(), ..Default::default() };
        assert!(matches!(OpenAiStream.map(&done, &mut out), Ok(StreamStep::Done)));
    }
}
