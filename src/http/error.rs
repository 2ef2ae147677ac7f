//! `GatewayError`: every failure a client can see, decided in one place with an honest status, and
//! rendered in the dialect of the door it came through: OpenAI's error object
//! `{"error":{"message","type","param","code"}}` by default, Anthropic's or Google's on their doors
//! ([`render_errors_as`]), each written by its protocol's own `errors` module.
//!
//! The caller's own mistakes get a precise message (and `param`); internal causes get a generic one.
//! Provider failures are translated here from their classification, never from upstream text alone.

use std::time::Duration;

use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};

use crate::protocols::{ErrorDialect, ErrorReply, Invalid};
use crate::providers::{ErrorKind, ProviderError};
use crate::routing::RouteError;

#[derive(Debug, Clone)]
pub struct GatewayError {
    pub status: StatusCode,
    pub kind: &'static str,
    // Boxed strings keep the error small: it travels in every handler's `Result`.
    pub code: Option<Box<str>>,
    pub param: Option<Box<str>>,
    pub message: Box<str>,
    pub retry_after: Option<Duration>,
    /// Sent as `x-should-retry` so the OpenAI SDKs do not retry what cannot succeed.
    pub should_retry: Option<bool>,
    /// Sent as `x-switchyard-attempts` when the router tried targets.
    pub attempts: Option<Box<str>>,
}

const INVALID_REQUEST: &str = "invalid_request_error";

impl GatewayError {
    fn new(status: StatusCode, kind: &'static str, code: Option<&str>, message: impl Into<String>) -> Self {
        Self {
            status,
            kind,
            code: code.map(Into::into),
            param: None,
            message: message.into().into_boxed_str(),
            retry_after: None,
            should_retry: None,
            attempts: None,
        }
    }

    pub fn with_param(mut self, param: Option<String>) -> Self {
        self.param = param.map(String::into_boxed_str);
        self
    }

    pub fn invalid_body(message: impl Into<String>, param: Option<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, INVALID_REQUEST, Some("invalid_request_body"), message).with_param(param)
    }

    pub fn invalid_value(message: impl Into<String>, param: &str) -> Self {
        Self::new(StatusCode::BAD_REQUEST, INVALID_REQUEST, Some("invalid_value"), message)
            .with_param(Some(param.to_owned()))
    }

    pub fn missing_key() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            INVALID_REQUEST,
            Some("missing_api_key"),
            "You didn't provide an API key. Send it as `Authorization: Bearer <key>` (or `x-api-key`).",
        )
    }

    /// Two keys, or one credential header twice: refused, whatever they are.
    pub fn ambiguous_key(e: crate::keys::KeyError) -> Self {
        let message = match e {
            crate::keys::KeyError::Conflicting => "The request carries two different API keys; send one.".to_owned(),
            crate::keys::KeyError::Repeated(name) => {
                format!("The request carries the `{name}` header more than once; send one credential.")
            }
        };
        Self::new(StatusCode::BAD_REQUEST, INVALID_REQUEST, Some("conflicting_api_keys"), message)
    }

    /// Framing two HTTP parsers could read differently (a request-smuggling shape).
    pub fn ambiguous_framing(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, INVALID_REQUEST, Some("ambiguous_framing"), message)
    }

    pub fn header_too_large(message: impl Into<String>) -> Self {
        Self::new(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, INVALID_REQUEST, Some("header_too_large"), message)
    }

    /// Too many wrong passwords or keys from this source (or for this account): wait and retry.
    pub fn too_many_attempts(wait_seconds: u64) -> Self {
        let mut g = Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limit_error",
            Some("too_many_attempts"),
            format!("Too many failed sign-in attempts; try again in {wait_seconds} seconds."),
        );
        g.retry_after = Some(Duration::from_secs(wait_seconds));
        g
    }

    pub fn invalid_credentials() -> Self {
        Self::new(StatusCode::UNAUTHORIZED, INVALID_REQUEST, Some("invalid_credentials"), "Wrong email or password.")
    }

    /// The caller is known but its role does not reach this.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "permission_error", Some("forbidden"), message)
    }

    /// The session cookie is unknown, expired or its account disabled: sign in again.
    pub fn session_expired() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            INVALID_REQUEST,
            Some("session_expired"),
            "The session has ended or is unknown; sign in again.",
        )
    }

    pub fn invalid_key() -> Self {
        Self::new(StatusCode::UNAUTHORIZED, INVALID_REQUEST, Some("invalid_api_key"), "Incorrect API key provided.")
    }

    pub fn body_too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            INVALID_REQUEST,
            Some("request_too_large"),
            format!("The request body is larger than the limit of {limit} bytes."),
        )
    }

    pub fn unsupported_encoding() -> Self {
        Self::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            INVALID_REQUEST,
            Some("unsupported_content_encoding"),
            "Compressed request bodies are not supported; send the body without Content-Encoding.",
        )
    }

    /// A key's limit was reached. Rate limits (per minute, in flight) pass soon, so the SDKs may retry after
    /// `retry-after`; quotas and budgets pass only at their window's end, so the SDKs are told not to retry.
    pub fn limit_exceeded(e: &crate::limits::Exceeded, now_ms: i64) -> Self {
        use crate::limits::Limit;
        let wait_ms = e.resets_at_ms.map_or(1_000, |at| (at - now_ms).max(0));
        let seconds = (wait_ms as u64).div_ceil(1000);
        let usd = super::admission::usd;
        let (rate_limit, message) = match e.limit {
            Limit::Parallel => {
                (true, format!("This key may have {} requests in flight at once; wait for one to finish.", e.max))
            }
            Limit::Rpm => (
                true,
                format!("Rate limit of {} requests per minute reached for this key; retry in {wait_ms} ms.", e.max),
            ),
            Limit::Tpm if e.asked > e.max => (
                false,
                format!(
                    "This request needs about {} tokens, more than this key's limit of {} tokens per minute; \
                     lower max_tokens or shorten the prompt.",
                    e.asked, e.max
                ),
            ),
            Limit::Tpm => (
                true,
                format!(
                    "Rate limit of {} tokens per minute reached for this key ({} used, this request needs about {}); \
                     retry in {wait_ms} ms.",
                    e.max, e.used, e.asked
                ),
            ),
            Limit::DailyPrompts | Limit::MonthlyPrompts => {
                let (window, unit) =
                    if e.limit == Limit::DailyPrompts { ("daily", "day") } else { ("monthly", "month") };
                (
                    false,
                    format!(
                        "This key's {window} prompt quota of {} is used up; it resets in {seconds} seconds \
                         (at the start of the next UTC {unit}).",
                        e.max
                    ),
                )
            }
            Limit::Budget(period) => (
                false,
                format!(
                    "This key's budget of ${} per {} would be exceeded: ${} is spent or held by running requests, \
                     and this request may cost up to ${} (set max_tokens to lower that). It resets in {seconds} seconds.",
                    usd(e.max),
                    period.as_str(),
                    usd(e.used),
                    usd(e.asked)
                ),
            ),
        };
        let too_large = e.limit == Limit::Tpm && e.asked > e.max;
        let mut g = if rate_limit || too_large {
            Self::new(StatusCode::TOO_MANY_REQUESTS, "rate_limit_error", Some("rate_limit_exceeded"), message)
        } else {
            Self::new(StatusCode::TOO_MANY_REQUESTS, "insufficient_quota", Some("insufficient_quota"), message)
        };
        if !too_large {
            g.retry_after = Some(std::time::Duration::from_millis(wait_ms as u64));
        }
        if !rate_limit {
            g.should_retry = Some(false);
        }
        g
    }

    /// The shared counters cannot be reached: limits are not waived, so the request is refused for now.
    pub fn limits_unavailable() -> Self {
        let mut g = Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "api_error",
            Some("limits_unavailable"),
            "Switchyard cannot check this key's limits right now; retry shortly.",
        );
        g.retry_after = Some(std::time::Duration::from_secs(1));
        g
    }

    pub fn body_timeout() -> Self {
        Self::new(
            StatusCode::REQUEST_TIMEOUT,
            INVALID_REQUEST,
            Some("request_timeout"),
            "The request body was not received in time.",
        )
    }

    /// A repeated `Idempotency-Key` that cannot be replayed (409: still running, or not kept; 422: another body).
    pub fn idempotency(status: StatusCode, code: &'static str, message: &'static str) -> Self {
        Self::new(status, INVALID_REQUEST, Some(code), message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, INVALID_REQUEST, Some("not_found"), message)
    }

    pub fn response_not_found(id: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            INVALID_REQUEST,
            Some("response_not_found"),
            format!("No response found with id '{id}'."),
        )
        .with_param(Some("response_id".to_owned()))
    }

    /// `previous_response_id` names nothing this caller stored (another organisation's, expired,
    /// deleted, or made with `store: false`).
    pub fn previous_response_not_found(id: &str) -> Self {
        let mut g = Self::new(
            StatusCode::BAD_REQUEST,
            INVALID_REQUEST,
            Some("previous_response_not_found"),
            format!("Previous response with id '{id}' not found."),
        )
        .with_param(Some("previous_response_id".to_owned()));
        g.should_retry = Some(false);
        g
    }

    /// The database cannot be reached: the admin API answers at once rather than waiting on it.
    pub fn database_unavailable() -> Self {
        let mut g = Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "api_error",
            Some("database_unavailable"),
            "Switchyard's database cannot be reached right now; retry shortly. Inference is not affected.",
        );
        g.retry_after = Some(Duration::from_secs(2));
        g.should_retry = Some(true);
        g
    }

    /// The store of responses cannot be read right now.
    pub fn store_unavailable() -> Self {
        let mut g = Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "api_error",
            Some("store_unavailable"),
            "Switchyard cannot read its stored responses right now; retry shortly.",
        );
        g.retry_after = Some(Duration::from_secs(1));
        g
    }

    pub fn route_not_found(method: &http::Method, path: &str) -> Self {
        Self::new(StatusCode::NOT_FOUND, INVALID_REQUEST, Some("unknown_url"), format!("Invalid URL ({method} {path})"))
    }

    pub fn method_not_allowed(method: &http::Method, path: &str) -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            INVALID_REQUEST,
            Some("method_not_allowed"),
            format!("Method {method} is not allowed for {path}."),
        )
    }

    pub fn internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            Some("internal_error"),
            "The server had an error while processing your request.",
        )
    }

    pub fn provider_unavailable(message: &str) -> Self {
        let mut e = Self::new(StatusCode::SERVICE_UNAVAILABLE, "server_error", Some("provider_unavailable"), message);
        e.should_retry = Some(false);
        e
    }

    pub fn shutting_down() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "server_error",
            Some("shutting_down"),
            "The gateway is shutting down.",
        )
    }

    /// The client-facing form of an upstream failure.
    pub fn from_provider(e: &ProviderError) -> Self {
        let upstream_status = e.status.and_then(|s| StatusCode::from_u16(s).ok());
        let mut out = match e.kind {
            ErrorKind::RateLimited => {
                let mut g = Self::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "rate_limit_error",
                    Some("rate_limit_exceeded"),
                    &e.message,
                );
                g.retry_after = e.retry_after;
                g
            }
            ErrorKind::Overloaded => {
                let mut g =
                    Self::new(StatusCode::SERVICE_UNAVAILABLE, "server_error", Some("provider_overloaded"), &e.message);
                g.retry_after = e.retry_after;
                g
            }
            ErrorKind::QuotaExhausted => {
                Self::new(StatusCode::BAD_GATEWAY, "upstream_error", Some("provider_quota_exhausted"), &e.message)
            }
            ErrorKind::Authentication => {
                Self::new(StatusCode::BAD_GATEWAY, "upstream_error", Some("provider_authentication_failed"), &e.message)
            }
            ErrorKind::BadRequest | ErrorKind::NotFound | ErrorKind::Untranslatable => {
                let status = upstream_status.filter(StatusCode::is_client_error).unwrap_or(StatusCode::BAD_REQUEST);
                Self::new(status, INVALID_REQUEST, e.code.as_deref(), &e.message).with_param(e.param.clone())
            }
            ErrorKind::ContextTooLong => {
                Self::new(StatusCode::BAD_REQUEST, INVALID_REQUEST, Some("context_length_exceeded"), &e.message)
                    .with_param(e.param.clone())
            }
            ErrorKind::ContentPolicy => {
                Self::new(StatusCode::BAD_REQUEST, INVALID_REQUEST, Some("content_policy_violation"), &e.message)
                    .with_param(e.param.clone())
            }
            ErrorKind::ServerError => {
                Self::new(StatusCode::BAD_GATEWAY, "upstream_error", Some("upstream_error"), &e.message)
            }
            ErrorKind::Timeout(_) => {
                Self::new(StatusCode::GATEWAY_TIMEOUT, "upstream_error", Some("upstream_timeout"), &e.message)
            }
            ErrorKind::Connection => {
                Self::new(StatusCode::BAD_GATEWAY, "upstream_error", Some("upstream_connection_error"), &e.message)
            }
            ErrorKind::StreamInterrupted => {
                Self::new(StatusCode::BAD_GATEWAY, "upstream_error", Some("stream_interrupted"), &e.message)
            }
            ErrorKind::InvalidResponse => {
                Self::new(StatusCode::BAD_GATEWAY, "upstream_error", Some("invalid_upstream_response"), &e.message)
            }
            ErrorKind::Unavailable => Self::provider_unavailable(&e.message),
        };
        if out.status.is_client_error() && out.status != StatusCode::TOO_MANY_REQUESTS {
            out.should_retry = Some(false);
        }
        out
    }

    /// The error as every protocol's renderer takes it.
    pub fn reply(&self) -> ErrorReply<'_> {
        ErrorReply {
            status: self.status.as_u16(),
            kind: self.kind,
            code: self.code.as_deref(),
            param: self.param.as_deref(),
            message: &self.message,
        }
    }

    /// The body in OpenAI's shape, for a terminal event inside a stream of an OpenAI door.
    pub fn to_json(&self) -> Vec<u8> {
        ErrorDialect::OpenAi.render(&self.reply())
    }
}

impl From<Invalid> for GatewayError {
    fn from(e: Invalid) -> Self {
        Self::invalid_value(e.message, &e.param)
    }
}

impl From<RouteError> for GatewayError {
    fn from(e: RouteError) -> Self {
        match &e {
            RouteError::ContextTooLong(_) => {
                Self::new(StatusCode::BAD_REQUEST, INVALID_REQUEST, Some("context_length_exceeded"), e.to_string())
                    .with_param(Some("messages".to_owned()))
            }
            RouteError::NoCapableModel(_) => {
                Self::new(StatusCode::BAD_REQUEST, INVALID_REQUEST, Some("model_not_capable"), e.to_string())
                    .with_param(Some("model".to_owned()))
            }
            RouteError::InvalidField(field) => Self::invalid_value(e.to_string(), field),
            RouteError::NotAllowed(_) => {
                let mut g =
                    Self::new(StatusCode::FORBIDDEN, "permission_error", Some("model_not_allowed"), e.to_string())
                        .with_param(Some("model".to_owned()));
                g.should_retry = Some(false);
                g
            }
            RouteError::Unpriced(_) => {
                let mut g = Self::new(StatusCode::FORBIDDEN, "permission_error", Some("model_unpriced"), e.to_string())
                    .with_param(Some("model".to_owned()));
                g.should_retry = Some(false);
                g
            }
            RouteError::UnknownModel(_) => {
                Self::new(StatusCode::NOT_FOUND, INVALID_REQUEST, Some("model_not_found"), e.to_string())
                    .with_param(Some("model".to_owned()))
            }
        }
    }
}

impl From<&ProviderError> for GatewayError {
    fn from(e: &ProviderError) -> Self {
        Self::from_provider(e)
    }
}

impl IntoResponse for GatewayError {
    /// OpenAI's shape; a door of another protocol re-renders the error kept in the extensions.
    fn into_response(self) -> Response {
        let mut resp = (self.status, [(header::CONTENT_TYPE, "application/json")], self.to_json()).into_response();
        let h = resp.headers_mut();
        if let Some(d) = self.retry_after {
            h.insert(header::RETRY_AFTER, HeaderValue::from(d.as_secs_f64().ceil() as u64));
            h.insert("retry-after-ms", HeaderValue::from(d.as_millis() as u64));
        }
        if let Some(attempts) = self.attempts.as_deref().and_then(|a| HeaderValue::from_str(a).ok()) {
            h.insert("x-switchyard-attempts", attempts);
        }
        if let Some(retry) = self.should_retry {
            h.insert("x-should-retry", HeaderValue::from_static(if retry { "true" } else { "false" }));
        }
        resp.extensions_mut().insert(self);
        resp
    }
}

/// The layer of a door of another protocol: an error answered on its routes, from any layer below
/// (authentication, body limits, routing, providers), is written in `dialect` from the error itself.
pub async fn render_errors_as(
    axum::extract::State(dialect): axum::extract::State<ErrorDialect>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let mut resp = next.run(req).await;
    if let Some(e) = resp.extensions_mut().remove::<GatewayError>() {
        let (mut parts, _) = resp.into_parts();
        parts.headers.remove(header::CONTENT_LENGTH);
        return Response::from_parts(parts, axum::body::Body::from(dialect.render(&e.reply())));
    }
    resp
}
