//! Wire protocols: for each API the gateway speaks, its wire types and both directions of translation in
//! one place, so a front door, an adapter and the fake provider cannot disagree about a field.
//!
//! The hub is the canonical OpenAI-shaped chat request in `schema`. Per protocol:
//! - *outbound* ([`Adapter`], [`StreamMapper`]): canonical → the provider's request, its answer → canonical;
//! - *inbound* ([`Dialect`], [`StreamEncoder`]): the caller's request → canonical, canonical → its answer;
//! - *errors*: the provider's error bodies classified ([`ProviderError`]), ours rendered ([`ErrorReply`]).
//!
//! Everything here is pure and synchronous: no I/O, no clock but `unix_now` for `created` fields. What a
//! translation cannot carry is listed in each protocol's header. Not here: sending (`providers::exec`),
//! routing, accounting, HTTP handlers.

pub mod anthropic;
pub mod azure;
pub mod bedrock;
pub mod cohere;
pub mod completions;
pub mod continuation;
pub mod error;
pub mod gemini;
pub mod openai;
pub mod responses;
pub mod tool_blocks;
pub mod vertex;

use bytes::Bytes;
use http::{HeaderMap, StatusCode};

pub use error::{ErrorKind, ProviderError, TimeoutPhase};

use crate::schema::{
    ChatChunk, ChatRequest, ChatResponse, EmbeddingRequest, EmbeddingResponse, ModerationRequest, RerankRequest,
};
use crate::secret::Secret;
use crate::sse::SseEvent;

/// A request body as JSON bytes.
pub fn encode(body: &impl serde::Serialize) -> Result<Bytes, ProviderError> {
    serde_json::to_vec(body)
        .map(Bytes::from)
        .map_err(|e| ProviderError::new(ErrorKind::BadRequest, format!("cannot encode the request: {e}")))
}

/// Where and how to reach a provider for one attempt.
pub struct Endpoint<'a> {
    pub base_url: &'a str,
    pub api_key: Option<&'a Secret>,
    /// Which of the provider's keys this is, so a rejected one can be set aside.
    pub key_index: Option<usize>,
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

/// A call that is not a POST of one JSON document, for the endpoints passed to OpenAI-compatible providers
/// as they are: an upload streamed from the gateway's spool, or no body at all (a GET, a DELETE).
pub struct ForwardRequest {
    pub method: http::Method,
    pub url: String,
    pub headers: HeaderMap,
    pub body: ForwardBody,
}

/// A forwarded call's body.
pub enum ForwardBody {
    Empty,
    Whole(Bytes),
    /// Read as it is sent (a multipart upload), `len` bytes in all (sent as its `content-length`); it
    /// cannot be sent twice.
    Streamed {
        stream: std::pin::Pin<Box<dyn futures_util::Stream<Item = Result<Bytes, std::io::Error>> + Send>>,
        len: u64,
    },
}

impl From<UpstreamRequest> for ForwardRequest {
    fn from(req: UpstreamRequest) -> Self {
        ForwardRequest {
            method: http::Method::POST,
            url: req.url,
            headers: req.headers,
            body: ForwardBody::Whole(req.body),
        }
    }
}

/// How a provider frames the events of a streamed answer; the executor decodes each into [`SseEvent`]s.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Framing {
    /// Server-sent events (`text/event-stream`).
    #[default]
    Sse,
    /// AWS event-stream messages (`application/vnd.amazon.eventstream`): Bedrock's streams.
    EventStream,
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
    fn chat_request(&self, req: &ChatRequest, endpoint: &Endpoint<'_>) -> Result<UpstreamRequest, ProviderError>;

    /// Called with the body of a successful (2xx) non-streamed response to `req`.
    fn parse_chat_response(&self, req: &ChatRequest, body: &[u8]) -> Result<ChatResponse, ProviderError>;

    /// Called once per streamed attempt; the mapper keeps whatever per-stream state the protocol needs.
    fn stream_mapper(&self, req: &ChatRequest) -> Box<dyn StreamMapper>;

    /// How this provider frames a streamed answer.
    fn framing(&self) -> Framing {
        Framing::Sse
    }

    /// Called with a non-2xx response; the body may be cut to a bounded prefix.
    fn classify_error(&self, status: StatusCode, headers: &HeaderMap, body: &[u8]) -> ProviderError;

    /// Builds an embeddings call (model already the upstream id). Providers without embeddings refuse.
    fn embeddings_request(
        &self,
        _req: &EmbeddingRequest,
        _endpoint: &Endpoint<'_>,
    ) -> Result<UpstreamRequest, ProviderError> {
        Err(bad_request("This model's provider does not offer embeddings.", "model"))
    }

    /// How many inputs one embeddings call of `model` may carry, when the provider limits it (Titan
    /// embeds one text per call): the executor then makes one call per group and joins the answers.
    fn embeddings_per_call(&self, _model: &str) -> Option<usize> {
        None
    }

    /// Called with a successful embeddings response to `req`: its headers (Bedrock counts tokens there
    /// for some models) and body.
    fn parse_embeddings(
        &self,
        _req: &EmbeddingRequest,
        _headers: &HeaderMap,
        _body: &[u8],
    ) -> Result<EmbeddingResponse, ProviderError> {
        Err(bad_request("This model's provider does not offer embeddings.", "model"))
    }

    /// Whether the provider returns several choices (`n`) itself; when not, the gateway makes `n` calls.
    fn supports_n(&self) -> bool {
        true
    }

    /// How the provider is asked to continue a partial answer (a stream continued after another
    /// provider failed mid-way).
    fn prefill(&self) -> crate::config::presets::Prefill {
        crate::config::presets::Prefill::Instruction
    }

    /// Whether requests of a door's protocol pass through to this provider as they are, rather than
    /// through the canonical chat request.
    fn speaks(&self, _protocol: Native) -> bool {
        false
    }

    /// Builds a call of `protocol` for the upstream `model` from a whole request body (whose model is
    /// already that id), with the caller's own protocol headers the door forwards (`anthropic-beta`);
    /// only for protocols the provider [`speaks`](Adapter::speaks).
    fn native_request(
        &self,
        _protocol: Native,
        _call: NativeCall<'_>,
        _endpoint: &Endpoint<'_>,
    ) -> Result<UpstreamRequest, ProviderError> {
        Err(bad_request("This model's provider does not speak this API natively.", "model"))
    }

    /// Builds a moderations call; only OpenAI offers them.
    fn moderation_request(
        &self,
        _req: &ModerationRequest,
        _endpoint: &Endpoint<'_>,
    ) -> Result<UpstreamRequest, ProviderError> {
        Err(bad_request("This model's provider does not offer moderations.", "model"))
    }

    /// Whether the provider has an API for this dedicated work (a rerank, images, speech), for models
    /// passed through by `provider/model`.
    fn offers(&self, _work: crate::config::Capability) -> bool {
        false
    }

    /// Builds a call of one of OpenAI's JSON endpoints beyond chat (`images/generations`,
    /// `audio/speech`), the caller's body passed as it came with its `model` already the upstream id.
    /// Only OpenAI-compatible providers have them.
    fn media_request(
        &self,
        _path: &'static str,
        _body: Bytes,
        _endpoint: &Endpoint<'_>,
    ) -> Result<UpstreamRequest, ProviderError> {
        Err(ProviderError::new(ErrorKind::Untranslatable, "this model's provider does not offer this endpoint"))
    }

    /// Builds a call of one of OpenAI's endpoints passed through as they are (`audio/transcriptions`,
    /// `images/edits`, `files`, `batches`): `path` under the provider's base URL, `body` as the caller
    /// sent it (a multipart upload with its `model` already the upstream id) in `content_type`. Only
    /// OpenAI-compatible providers have them.
    fn forward_request(
        &self,
        _method: http::Method,
        _path: &str,
        _content_type: Option<http::HeaderValue>,
        _body: ForwardBody,
        _endpoint: &Endpoint<'_>,
    ) -> Result<ForwardRequest, ProviderError> {
        Err(ProviderError::new(ErrorKind::Untranslatable, "this model's provider does not offer this endpoint"))
    }

    /// Builds a rerank call (model already the upstream id); providers without a rerank API refuse, so
    /// the router moves on to the next target.
    fn rerank_request(&self, _req: &RerankRequest, _endpoint: &Endpoint<'_>) -> Result<UpstreamRequest, ProviderError> {
        Err(ProviderError::new(ErrorKind::Untranslatable, "this model's provider does not offer reranking"))
    }
}

/// One item of a decoded upstream stream, as the executor and the pipeline need to see it: a canonical
/// chunk for a translated stream, or a protocol's own event when a stream is passed through natively.
pub trait StreamItem: Send + 'static {
    /// The item ends the answer (a finish reason, a terminal event), so a body that closes right after
    /// it ended properly even without the protocol's end marker.
    fn is_final(&self) -> bool;
    /// The item carries nothing a client would see yet (a role-only first chunk, `response.created`):
    /// until an item that does arrives, the stream is not committed and a failure can still fall back.
    fn is_preamble(&self) -> bool;
}

impl StreamItem for ChatChunk {
    fn is_final(&self) -> bool {
        self.choices.iter().any(|c| c.finish_reason.is_some())
    }

    fn is_preamble(&self) -> bool {
        ChatChunk::is_preamble(self)
    }
}

/// A door's protocol that a provider may speak itself, so its requests pass through untranslated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Native {
    /// OpenAI's Responses API.
    Responses,
    /// OpenAI's legacy completions.
    Completions,
    /// Anthropic's Messages API.
    Messages,
    /// Gemini's generateContent.
    GenerateContent,
}

/// One native call: what [`Adapter::native_request`] builds from.
pub struct NativeCall<'a> {
    /// The upstream model id (also in the body).
    pub model: &'a str,
    pub stream: bool,
    pub body: Bytes,
    /// Protocol headers of the caller's that travel with its request (never credentials).
    pub forwarded: &'a HeaderMap,
}

/// Maps one upstream event (an SSE event, or an event-stream message decoded as one) to zero or more stream items (canonical chunks unless said otherwise).
pub trait StreamMapper<I: StreamItem = ChatChunk>: Send {
    /// Appends the items this event yields to `out`. An `Err` is an in-band upstream failure.
    fn map(&mut self, event: &SseEvent, out: &mut Vec<I>) -> Result<StreamStep, ProviderError>;
    /// Called once when the stream ended properly (its last event mapped, or a body that closed after its
    /// final item): the items still held back, if any.
    fn end(&mut self, _out: &mut Vec<I>) {}
    /// Whether the stream's final item was read though not yet yielded (a mapper holding items back
    /// until [`end`](StreamMapper::end)), so a body that closes now has ended properly.
    fn finished(&self) -> bool {
        false
    }
}

/// Turns a chat stream's chunks into another protocol's stream items, keeping that protocol's envelope
/// (the one start, block indices, the one end): a door's encoder that yields items instead of frames.
pub trait ChunkTranslator<E>: Send {
    /// Called for each chunk in order: the items it yields (none is fine).
    fn chunk(&mut self, chunk: &ChatChunk, out: &mut Vec<E>);
    /// Called once when the chat stream finished properly: the items that end it.
    fn done(&mut self, out: &mut Vec<E>);
}

/// A model or deployment id as one URL path segment: everything but unreserved characters is
/// percent-encoded, so an id from a request (`provider/model` strings pass ids through) can never add
/// path segments, a query or a fragment to the configured upstream URL.
pub fn path_segment(id: &str) -> String {
    const SEGMENT: &percent_encoding::AsciiSet =
        &percent_encoding::NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');
    match id {
        // Dot segments would be resolved away by URL normalisation.
        "." | ".." => id.replace('.', "%2E"),
        _ => percent_encoding::utf8_percent_encode(id, SEGMENT).to_string(),
    }
}

/// The caller asked for something this provider's protocol cannot express: the attempt fails (another
/// target may take the request) and, when no target can, the caller gets a 400 naming `param`.
pub fn bad_request(message: impl Into<String>, param: &str) -> ProviderError {
    let mut e = ProviderError::new(ErrorKind::Untranslatable, message);
    e.param = Some(param.to_owned());
    e.code = Some("unsupported_parameter".to_owned());
    e
}

/// Seconds since the Unix epoch, for `created` fields of translated responses.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or_default()
}

/// How a front door answers: a whole response, or a stream rendered chunk by chunk. Routing, admission,
/// fallback and accounting are the pipeline's; a dialect only renders.
pub trait Dialect: Send + Sync + 'static {
    /// The JSON body of a whole answer (already rewritten by the gateway: public model name, cost).
    fn whole(&self, resp: &ChatResponse) -> Vec<u8>;
    /// A renderer for one stream.
    fn stream(&self) -> Box<dyn StreamEncoder>;
    /// How this dialect spells a canonical request field, for refusals that name it (`param`).
    fn param_names(&self) -> fn(&'static str) -> &'static str {
        |canonical| canonical
    }
}

/// Renders one stream's items (already rewritten by the gateway) as the front door's frames. The encoder
/// owns the client's envelope: ids, indices, sequence numbers, the one start and the one end.
pub trait StreamEncoder<I = ChatChunk>: Send {
    /// Called for each item in order, the first ones before the response headers go: frames for it
    /// (none is fine).
    fn chunk(&mut self, item: &I, out: &mut Vec<Bytes>);
    /// Called once when the provider finished the stream properly: the frames that end it.
    fn done(&mut self, out: &mut Vec<Bytes>);
    /// Called at most once, instead of `done`, when the stream failed after it started (or the gateway is
    /// shutting down): the frame that ends it.
    fn error(&mut self, e: &ErrorReply<'_>) -> Bytes;
}

/// An error as the gateway decided it, before any protocol's shape: each protocol's `errors::render`
/// writes it in its own dialect. `kind` and `code` are OpenAI's vocabulary (the canonical one).
#[derive(Debug, Clone, Copy)]
pub struct ErrorReply<'a> {
    pub status: u16,
    /// OpenAI's error `type` (`invalid_request_error`, `rate_limit_error`, …).
    pub kind: &'a str,
    pub code: Option<&'a str>,
    pub param: Option<&'a str>,
    pub message: &'a str,
}

/// The error shape of a front door's protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorDialect {
    OpenAi,
    Anthropic,
    Gemini,
}

impl ErrorDialect {
    /// The dialect of the door a path belongs to, for errors raised before any route is matched.
    pub fn for_path(path: &str) -> Self {
        if path == "/v1/messages" || path.starts_with("/v1/messages/") {
            ErrorDialect::Anthropic
        } else if path == "/v1beta" || path.starts_with("/v1beta/") {
            ErrorDialect::Gemini
        } else {
            ErrorDialect::OpenAi
        }
    }

    /// The error body in this protocol's shape.
    pub fn render(self, e: &ErrorReply<'_>) -> Vec<u8> {
        match self {
            ErrorDialect::OpenAi => openai::render_error(e),
            ErrorDialect::Anthropic => anthropic::errors::render(e),
            ErrorDialect::Gemini => gemini::errors::render(e),
        }
    }
}

/// A caller's request that is not valid in its own protocol: the message and the field at fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    pub message: String,
    pub param: String,
}

impl Invalid {
    pub fn new(message: impl Into<String>, param: impl Into<String>) -> Self {
        Self { message: message.into(), param: param.into() }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn ids_from_requests_stay_one_path_segment() {
        assert_eq!(super::path_segment("gemini-2.5-flash"), "gemini-2.5-flash");
        assert_eq!(super::path_segment("../../admin?x=1#y"), "..%2F..%2Fadmin%3Fx%3D1%23y");
        assert_eq!(super::path_segment(".."), "%2E%2E");
        assert_eq!(super::path_segment("a b/c"), "a%20b%2Fc");
    }
}
