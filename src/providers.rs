//! Upstream providers: the adapter contract, each configured provider at run time, and the executor.
//!
//! An [`Adapter`] is pure and synchronous: it builds the upstream call, parses a body, maps one SSE event
//! and classifies an error response, so it can be tested from fixture files alone. [`exec`] is the only
//! code that does upstream I/O. This module never imports `http` (ours) or `store`.

pub mod anthropic;
pub mod error;
pub mod exec;
pub mod gemini;
pub mod openai;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};

pub use error::{ErrorKind, ProviderError, TimeoutPhase};

use crate::config::{ProviderConfig, ProviderKind, Timeouts};
use crate::schema::{
    ChatChunk, ChatRequest, ChatResponse, EmbeddingRequest, EmbeddingResponse, ModerationRequest,
};
use crate::secret::Secret;
use crate::sse::SseEvent;

/// Where and how to reach a provider for one attempt.
pub struct Endpoint<'a> {
    pub base_url: &'a str,
    pub api_key: Option<&'a Secret>,
    /// The operator's extra headers for this provider.
    pub headers: &'a HeaderMap,
}

/// A request ready to send: always a POST of a JSON body.
#[derive(Debug)]
pub struct UpstreamRequest {
    pub url: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// What a stream mapper wants after an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamStep {
    Continue,
    /// The provider signalled the end of the stream.
    Done,
}

/// Translation between the canonical types and one provider's wire protocol. No I/O.
pub trait Adapter: Send + Sync {
    /// Called once per attempt with the request already carrying the upstream model id. Returns the call
    /// to make, or an error when the request cannot be expressed in this protocol.
    fn chat_request(
        &self,
        req: &ChatRequest,
        endpoint: &Endpoint<'_>,
    ) -> Result<UpstreamRequest, ProviderError>;

    /// Called with the body of a successful (2xx) non-streamed response to `req`.
    fn parse_chat_response(
        &self,
        req: &ChatRequest,
        body: &[u8],
    ) -> Result<ChatResponse, ProviderError>;

    /// Called once per streamed attempt; the mapper keeps whatever per-stream state the protocol needs.
    fn stream_mapper(&self, req: &ChatRequest) -> Box<dyn StreamMapper>;

    /// Called with a non-2xx response; the body may be cut to a bounded prefix.
    fn classify_error(&self, status: StatusCode, headers: &HeaderMap, body: &[u8])
    -> ProviderError;

    /// Builds an embeddings call (model already the upstream id). Providers without embeddings refuse.
    fn embeddings_request(
        &self,
        _req: &EmbeddingRequest,
        _endpoint: &Endpoint<'_>,
    ) -> Result<UpstreamRequest, ProviderError> {
        Err(bad_request(
            "This model's provider does not offer embeddings.",
            "model",
        ))
    }

    /// Called with the body of a successful embeddings response to `req`.
    fn parse_embeddings(
        &self,
        _req: &EmbeddingRequest,
        _body: &[u8],
    ) -> Result<EmbeddingResponse, ProviderError> {
        Err(bad_request(
            "This model's provider does not offer embeddings.",
            "model",
        ))
    }

    /// Builds a moderations call; only OpenAI offers them.
    fn moderation_request(
        &self,
        _req: &ModerationRequest,
        _endpoint: &Endpoint<'_>,
    ) -> Result<UpstreamRequest, ProviderError> {
        Err(bad_request(
            "This model's provider does not offer moderations.",
            "model",
        ))
    }
}

/// Maps one upstream SSE event to zero or more canonical chunks.
pub trait StreamMapper: Send {
    /// Appends the chunks this event yields to `out`. An `Err` is an in-band upstream failure.
    fn map(
        &mut self,
        event: &SseEvent,
        out: &mut Vec<ChatChunk>,
    ) -> Result<StreamStep, ProviderError>;
}

enum Transport {
    Http(reqwest::Client),
    /// The built-in fake provider, answered by its router without a socket.
    InProcess(axum::Router),
}

/// One configured provider at run time.
pub struct Provider {
    pub name: String,
    pub kind: ProviderKind,
    pub timeouts: Timeouts,
    adapter: Box<dyn Adapter>,
    base_url: String,
    keys: Vec<Secret>,
    next_key: AtomicUsize,
    /// Why the provider cannot be used, when it cannot (its key variable is unset).
    unavailable: Option<String>,
    headers: HeaderMap,
    transport: Transport,
}

impl std::fmt::Debug for Provider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Provider")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

impl Provider {
    /// Builds a provider from validated configuration. `env` looks up environment variables.
    pub fn from_config(
        cfg: &ProviderConfig,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Provider, String> {
        let timeouts = cfg.timeouts.resolve();
        let mut headers = HeaderMap::new();
        for (name, value) in &cfg.headers {
            let name = HeaderName::from_bytes(name.as_bytes()).map_err(|e| e.to_string())?;
            headers.insert(
                name,
                HeaderValue::from_str(value).map_err(|e| e.to_string())?,
            );
        }
        let keys: Vec<Secret> = cfg
            .api_key_env
            .as_deref()
            .and_then(env)
            .map(|v| {
                v.split(',')
                    .map(str::trim)
                    .filter(|k| !k.is_empty())
                    .map(Secret::new)
                    .collect()
            })
            .unwrap_or_default();
        let unavailable = match (&cfg.api_key_env, keys.is_empty()) {
            (Some(var), true) => Some(format!(
                "provider \"{}\" is not configured: set {var}",
                cfg.name
            )),
            _ => None,
        };
        let (transport, base_url) = match cfg.kind {
            ProviderKind::Fake => {
                let settings = cfg.fake.clone().unwrap_or_default();
                let router =
                    crate::fake::router(std::sync::Arc::new(crate::fake::FakeState::new(settings)));
                (
                    Transport::InProcess(router),
                    "http://fake.invalid/v1".to_owned(),
                )
            }
            ProviderKind::Openai => {
                let client = reqwest::Client::builder()
                    .connect_timeout(timeouts.connect)
                    .pool_idle_timeout(Duration::from_secs(90))
                    .pool_max_idle_per_host(1024)
                    .tcp_nodelay(true)
                    .tcp_keepalive(Duration::from_secs(30))
                    .redirect(reqwest::redirect::Policy::none())
                    .build()
                    .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
                (
                    Transport::Http(client),
                    cfg.base_url.clone().unwrap_or_default(),
                )
            }
        };
        Ok(Provider {
            name: cfg.name.clone(),
            kind: cfg.kind,
            timeouts,
            adapter: Box::new(openai::OpenAiAdapter),
            base_url,
            keys,
            next_key: AtomicUsize::new(0),
            unavailable,
            headers,
            transport,
        })
    }

    /// `None` when requests can be sent; otherwise a message for the caller saying what is missing.
    pub fn unavailable_reason(&self) -> Option<&str> {
        self.unavailable.as_deref()
    }

    pub fn adapter(&self) -> &dyn Adapter {
        self.adapter.as_ref()
    }

    /// The endpoint for the next attempt; keys are used in turn.
    pub fn endpoint(&self) -> Result<Endpoint<'_>, ProviderError> {
        if let Some(why) = &self.unavailable {
            return Err(ProviderError::new(ErrorKind::Unavailable, why.clone()));
        }
        let api_key = if self.keys.is_empty() {
            None
        } else {
            let i = self.next_key.fetch_add(1, Ordering::Relaxed) % self.keys.len();
            Some(&self.keys[i])
        };
        Ok(Endpoint {
            base_url: &self.base_url,
            api_key,
            headers: &self.headers,
        })
    }

    /// Removes any of this provider's credentials from text that may reach a client or a log.
    pub fn redact(&self, text: String) -> String {
        self.keys.iter().fold(text, |t, k| {
            if t.contains(k.expose()) {
                t.replace(k.expose(), "*****")
            } else {
                t
            }
        })
    }
}

/// The caller asked for something this provider's protocol cannot express.
pub(crate) fn bad_request(message: impl Into<String>, param: &str) -> ProviderError {
    let mut e = ProviderError::new(ErrorKind::BadRequest, message);
    e.status = Some(400);
    e.param = Some(param.to_owned());
    e.code = Some("unsupported_parameter".to_owned());
    e
}
