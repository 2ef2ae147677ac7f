//! What went wrong upstream, classified by whose fault it was and whether another attempt could help.

use std::time::Duration;

use http::HeaderMap;

/// Which deadline expired.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeoutPhase {
    Connect,
    FirstByte,
    Idle,
    Total,
}

impl TimeoutPhase {
    pub fn as_str(self) -> &'static str {
        match self {
            TimeoutPhase::Connect => "connect",
            TimeoutPhase::FirstByte => "first_byte",
            TimeoutPhase::Idle => "idle",
            TimeoutPhase::Total => "total",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// 429: slow down; `retry_after` says for how long when the provider told us.
    RateLimited,
    /// The provider is at capacity (Anthropic 529, "overloaded").
    Overloaded,
    /// The gateway's account with the provider is out of credit or quota. Not the caller's fault.
    QuotaExhausted,
    /// The provider refused the gateway's credentials. Not the caller's fault.
    Authentication,
    /// The request itself is wrong; the provider's message explains why.
    BadRequest,
    /// The provider does not know the model or route.
    NotFound,
    /// The prompt plus the requested output does not fit the model's context window.
    ContextTooLong,
    /// The provider refused the content.
    ContentPolicy,
    /// 5xx from the provider.
    ServerError,
    /// A deadline expired.
    Timeout(TimeoutPhase),
    /// The connection could not be made or broke before a response.
    Connection,
    /// A stream broke after it started.
    StreamInterrupted,
    /// The provider answered something we cannot read.
    InvalidResponse,
    /// The provider is not configured (no credentials).
    Unavailable,
    /// The request asks for something this target's protocol cannot express (a content type, a field
    /// only another provider honours). Not the target's fault, and another target may take it.
    Untranslatable,
}

/// One failed upstream attempt.
#[derive(Debug, Clone)]
pub struct ProviderError {
    pub kind: ErrorKind,
    /// The upstream HTTP status, when there was one.
    pub status: Option<u16>,
    pub retry_after: Option<Duration>,
    /// For the caller's own mistakes, the provider's explanation; otherwise a gateway-written summary.
    pub message: String,
    /// The provider's error code, when it gave one (`context_length_exceeded`, …).
    pub code: Option<String>,
    pub param: Option<String>,
}

impl ProviderError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self { kind, status: None, retry_after: None, message: message.into(), code: None, param: None }
    }

    pub fn timeout(phase: TimeoutPhase) -> Self {
        Self::new(
            ErrorKind::Timeout(phase),
            format!("the provider did not answer within the {} deadline", phase.as_str()),
        )
    }

    /// Whether the next target of a plan should be tried after this failure.
    pub fn should_fallback(&self) -> bool {
        match self.kind {
            ErrorKind::RateLimited
            | ErrorKind::Overloaded
            | ErrorKind::QuotaExhausted
            | ErrorKind::Authentication
            | ErrorKind::ServerError
            | ErrorKind::Timeout(_)
            | ErrorKind::Connection
            | ErrorKind::StreamInterrupted
            | ErrorKind::InvalidResponse
            | ErrorKind::Unavailable
            | ErrorKind::Untranslatable => true,
            // The same request would fail the same way elsewhere; the router may still move a context
            // overflow to a larger window, which is its decision, not this one.
            ErrorKind::BadRequest | ErrorKind::NotFound | ErrorKind::ContextTooLong | ErrorKind::ContentPolicy => false,
        }
    }

    /// A short label for logs, headers and metrics.
    pub fn label(&self) -> String {
        match (self.kind, self.status) {
            (ErrorKind::Timeout(phase), _) => format!("timeout_{}", phase.as_str()),
            (ErrorKind::Connection, _) => "connect_error".to_owned(),
            (ErrorKind::StreamInterrupted, _) => "stream_interrupted".to_owned(),
            (ErrorKind::InvalidResponse, _) => "invalid_response".to_owned(),
            (ErrorKind::Unavailable, _) => "unavailable".to_owned(),
            (ErrorKind::Untranslatable, _) => "unsupported".to_owned(),
            (_, Some(status)) => status.to_string(),
            (kind, None) => format!("{kind:?}").to_lowercase(),
        }
    }
}

impl std::fmt::Display for ProviderError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.message, self.label())
    }
}

impl std::error::Error for ProviderError {}

/// Reads `retry-after-ms` (OpenAI) or `retry-after` in seconds. An HTTP-date form is ignored.
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let get = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim);
    if let Some(ms) = get("retry-after-ms").and_then(|v| v.parse::<f64>().ok())
        && ms.is_finite()
        && ms >= 0.0
    {
        return Some(Duration::from_millis(ms as u64));
    }
    let secs = get("retry-after")?.parse::<f64>().ok()?;
    (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs.min(86_400.0)))
}
