//! Anthropic's errors in both directions: one table from HTTP status to Anthropic's error `type` (used by
//! the door and the fake), the classification of an Anthropic upstream's errors, and the rendering of
//! ours. Reference: Anthropic API docs, "Errors" (`overloaded_error` is 529).

use std::time::Duration;

use serde_json::Value;

use super::wire::{ErrorDetail, ErrorEnvelope};
use crate::protocols::ErrorReply;
use crate::protocols::error::{ErrorKind, ProviderError, TimeoutPhase};

/// Anthropic's error `type` for a status.
pub fn error_type(status: u16) -> &'static str {
    match status {
        400 | 413 | 415 | 422 => "invalid_request_error",
        401 => "authentication_error",
        402 => "billing_error",
        403 => "permission_error",
        404 => "not_found_error",
        408 | 504 => "timeout_error",
        429 => "rate_limit_error",
        503 | 529 => "overloaded_error",
        _ => "api_error",
    }
}

/// The error body for an Anthropic `type` and message.
pub fn body(kind: &str, message: &str) -> ErrorEnvelope {
    ErrorEnvelope {
        kind: "error".to_owned(),
        error: ErrorDetail { kind: kind.to_owned(), message: message.to_owned(), extra: Default::default() },
    }
}

/// Our error in Anthropic's shape; OpenAI's `code` and `param` ride along for diagnosis.
pub fn render(e: &ErrorReply<'_>) -> Vec<u8> {
    let kind = match error_type(e.status) {
        // A gateway-side rate limit on another status (none today) still reads as one.
        "api_error" if e.kind == "rate_limit_error" => "rate_limit_error",
        kind => kind,
    };
    let mut envelope = body(kind, e.message);
    for (field, value) in [("code", e.code), ("param", e.param)] {
        if let Some(v) = value {
            envelope.error.extra.insert(field.to_owned(), Value::String(v.to_owned()));
        }
    }
    serde_json::to_vec(&envelope).unwrap_or_default()
}

/// Classifies an Anthropic error by status, `type` and message.
pub fn classify(status: u16, kind_text: &str, upstream: &str, retry_after: Option<Duration>) -> ProviderError {
    let lower = upstream.to_lowercase();
    let kind = match (status, kind_text) {
        (529, _) | (_, "overloaded_error") => ErrorKind::Overloaded,
        (429, _) | (_, "rate_limit_error") => ErrorKind::RateLimited,
        (401 | 403, _) | (_, "authentication_error" | "permission_error") => ErrorKind::Authentication,
        (402, _) | (_, "billing_error") => ErrorKind::QuotaExhausted,
        _ if lower.contains("credit balance") => ErrorKind::QuotaExhausted,
        (404, _) | (_, "not_found_error") => ErrorKind::NotFound,
        (408 | 504, _) | (_, "timeout_error") => ErrorKind::Timeout(TimeoutPhase::Total),
        (400 | 413, _) if lower.contains("prompt is too long") || lower.contains("too many tokens") => {
            ErrorKind::ContextTooLong
        }
        (400..=499, _) | (_, "invalid_request_error" | "request_too_large") => ErrorKind::BadRequest,
        _ => ErrorKind::ServerError,
    };
    let message = match kind {
        ErrorKind::BadRequest | ErrorKind::NotFound | ErrorKind::ContextTooLong if !upstream.is_empty() => {
            upstream.to_owned()
        }
        ErrorKind::BadRequest | ErrorKind::NotFound | ErrorKind::ContextTooLong => {
            format!("Anthropic rejected the request ({status})")
        }
        ErrorKind::Overloaded => "Anthropic is overloaded".to_owned(),
        ErrorKind::RateLimited => "Anthropic is rate limiting requests".to_owned(),
        ErrorKind::Authentication => "Anthropic rejected the gateway's credentials".to_owned(),
        ErrorKind::QuotaExhausted => "the Anthropic account's credit is exhausted".to_owned(),
        _ => format!("Anthropic failed with HTTP {status}"),
    };
    ProviderError { kind, status: Some(status), retry_after, message, code: None, param: None }
}

/// An `error` event inside a 200 stream: classified by its type, a server error counting as a cut.
pub fn in_stream(error: &ErrorDetail) -> ProviderError {
    let status = match error.kind.as_str() {
        "overloaded_error" => 529,
        "rate_limit_error" => 429,
        _ => 500,
    };
    let mut e = classify(status, &error.kind, &error.message, None);
    if e.kind == ErrorKind::ServerError {
        e.kind = ErrorKind::StreamInterrupted;
    }
    e
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_map_to_anthropic_types_and_back() {
        for (status, kind) in
            [(400, ErrorKind::BadRequest), (429, ErrorKind::RateLimited), (529, ErrorKind::Overloaded)]
        {
            assert_eq!(classify(status, error_type(status), "x", None).kind, kind);
        }
        let reply = ErrorReply {
            status: 404,
            kind: "invalid_request_error",
            code: Some("model_not_found"),
            param: Some("model"),
            message: "no",
        };
        let v: Value = serde_json::from_slice(&render(&reply)).unwrap();
        assert_eq!(v["type"], "error");
        assert_eq!(
            (v["error"]["type"].as_str(), v["error"]["code"].as_str()),
            (Some("not_found_error"), Some("model_not_found"))
        );
    }
}
