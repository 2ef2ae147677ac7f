//! Google's errors in both directions: one table from HTTP status to Google's canonical status name
//! (used by the door and the fake), the classification of a Gemini upstream's errors, and the rendering
//! of ours. Reference: Google AIP-193 "Errors" and the Gemini API troubleshooting guide.

use std::time::Duration;

use super::wire::{ErrorDetail, ErrorEnvelope};
use crate::protocols::ErrorReply;
use crate::protocols::error::{ErrorKind, ProviderError, TimeoutPhase};

/// Google's status name for an HTTP status.
pub fn status_name(status: u16) -> &'static str {
    match status {
        400 | 413 | 415 | 422 | 431 => "INVALID_ARGUMENT",
        401 => "UNAUTHENTICATED",
        403 => "PERMISSION_DENIED",
        404 => "NOT_FOUND",
        408 | 504 => "DEADLINE_EXCEEDED",
        409 => "ABORTED",
        429 => "RESOURCE_EXHAUSTED",
        501 => "UNIMPLEMENTED",
        503 => "UNAVAILABLE",
        _ => "INTERNAL",
    }
}

/// The error body for a status, a status name and a message.
pub fn body(code: u16, status: &str, message: &str) -> ErrorEnvelope {
    ErrorEnvelope {
        error: ErrorDetail { code, message: message.to_owned(), status: status.to_owned(), details: Vec::new() },
    }
}

/// Our error in Google's shape.
pub fn render(e: &ErrorReply<'_>) -> Vec<u8> {
    let mut envelope = body(e.status, status_name(e.status), e.message);
    if let Some(field) = e.param {
        // As Google names the field at fault (AIP-193): a `BadRequest` detail.
        envelope.error.details.push(serde_json::json!({
            "@type": "type.googleapis.com/google.rpc.BadRequest",
            "fieldViolations": [{"field": field, "description": e.message}],
        }));
    }
    serde_json::to_vec(&envelope).unwrap_or_default()
}

/// Classifies a Gemini error response by status, status name and message.
pub fn classify(status: u16, detail: Option<&ErrorDetail>, retry_after: Option<Duration>) -> ProviderError {
    let status_text = detail.map(|d| d.status.as_str()).unwrap_or_default();
    let upstream = detail.map(|d| d.message.clone()).unwrap_or_default();
    let lower = upstream.to_lowercase();
    let kind = match (status, status_text) {
        (429, _) | (_, "RESOURCE_EXHAUSTED") => ErrorKind::RateLimited,
        (401 | 403, _) | (_, "UNAUTHENTICATED" | "PERMISSION_DENIED") => ErrorKind::Authentication,
        (400, _) if lower.contains("api key not valid") => ErrorKind::Authentication,
        (404, _) | (_, "NOT_FOUND") => ErrorKind::NotFound,
        (504, _) | (_, "DEADLINE_EXCEEDED") => ErrorKind::Timeout(TimeoutPhase::Total),
        (400, _) if lower.contains("token count") || lower.contains("exceeds the maximum") => ErrorKind::ContextTooLong,
        (400..=499, _) => ErrorKind::BadRequest,
        (503, _) | (_, "UNAVAILABLE") => ErrorKind::Overloaded,
        _ => ErrorKind::ServerError,
    };
    let message = match kind {
        ErrorKind::BadRequest | ErrorKind::NotFound | ErrorKind::ContextTooLong if !upstream.is_empty() => upstream,
        ErrorKind::RateLimited => "Gemini is rate limiting requests".to_owned(),
        ErrorKind::Authentication => "Gemini rejected the gateway's credentials".to_owned(),
        ErrorKind::Overloaded => "Gemini is overloaded".to_owned(),
        _ => format!("Gemini failed with HTTP {status}"),
    };
    ProviderError { kind, status: Some(status), retry_after, message, code: None, param: None }
}

/// An error object inside a 200 stream.
pub fn in_stream(error: &ErrorDetail) -> ProviderError {
    let message =
        if error.message.is_empty() { "Gemini reported an error mid-stream".to_owned() } else { error.message.clone() };
    let kind = if error.status == "RESOURCE_EXHAUSTED" { ErrorKind::RateLimited } else { ErrorKind::StreamInterrupted };
    ProviderError::new(kind, message)
}
