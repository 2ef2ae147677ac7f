//! Bedrock's errors classified: by the exception's name (`x-amzn-ErrorType`, the body's `__type`, or an
//! event-stream exception's `:exception-type`), else by status. The mapping is in the protocol's header.

use std::time::Duration;

use http::HeaderMap;

use super::wire::ErrorBody;
use crate::protocols::error::{ErrorKind, ProviderError, TimeoutPhase};

/// The exception's bare name: `ValidationException` from `ValidationException:http://…` or
/// `com.amazon.coral.validate#ValidationException`, in lower case for matching.
fn exception_name(raw: &str) -> String {
    let name = raw.split(':').next().unwrap_or(raw);
    name.rsplit('#').next().unwrap_or(name).trim().to_ascii_lowercase()
}

/// Classifies an error response by its exception name and status.
pub fn classify(status: u16, headers: &HeaderMap, body: &[u8], retry_after: Option<Duration>) -> ProviderError {
    let parsed: ErrorBody = serde_json::from_slice(body).unwrap_or_default();
    let name = headers
        .get("x-amzn-errortype")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or(parsed.kind)
        .map(|n| exception_name(&n))
        .unwrap_or_default();
    let mut e = from_exception(&name, parsed.message.unwrap_or_default(), Some(status));
    e.retry_after = retry_after;
    e
}

/// An exception message inside a 200 stream.
pub fn in_stream(exception_type: &str, payload: &str) -> ProviderError {
    let parsed: ErrorBody = serde_json::from_str(payload).unwrap_or_default();
    let message = parsed.message.unwrap_or_else(|| payload.to_owned());
    let mut e = from_exception(&exception_name(exception_type), message, None);
    // A stream that failed after it started is interrupted unless Bedrock said it was throttled.
    if !matches!(
        e.kind,
        ErrorKind::RateLimited | ErrorKind::Overloaded | ErrorKind::BadRequest | ErrorKind::ContextTooLong
    ) {
        e.kind = ErrorKind::StreamInterrupted;
    }
    e
}

fn from_exception(name: &str, upstream: String, status: Option<u16>) -> ProviderError {
    let lower = upstream.to_lowercase();
    let too_long = ["too long", "too many tokens", "exceeds the maximum", "context length", "prompt is too long"]
        .iter()
        .any(|p| lower.contains(p));
    let model_cannot =
        ["doesn't support", "does not support", "not supported", "on-demand throughput", "isn't supported"]
            .iter()
            .any(|p| lower.contains(p));
    let kind = match (name, status) {
        ("throttlingexception" | "servicequotaexceededexception" | "toomanyrequestsexception", _) => {
            ErrorKind::RateLimited
        }
        ("modelnotreadyexception" | "serviceunavailableexception", _) => ErrorKind::Overloaded,
        ("internalserverexception" | "modelerrorexception" | "modelstreamerrorexception", _) => ErrorKind::ServerError,
        ("modeltimeoutexception", _) => ErrorKind::Timeout(TimeoutPhase::Total),
        (
            "accessdeniedexception"
            | "unrecognizedclientexception"
            | "invalidsignatureexception"
            | "signaturedoesnotmatch"
            | "expiredtokenexception"
            | "incompletesignatureexception"
            | "missingauthenticationtokenexception",
            _,
        ) => ErrorKind::Authentication,
        ("resourcenotfoundexception", _) => ErrorKind::NotFound,
        ("validationexception", _) if too_long => ErrorKind::ContextTooLong,
        // What this model cannot do (tool choice, on-demand use, a parameter), not what the caller got
        // wrong: another model may take the request.
        ("validationexception", _) if model_cannot => ErrorKind::Untranslatable,
        ("validationexception", _) => ErrorKind::BadRequest,
        (_, Some(429)) => ErrorKind::RateLimited,
        (_, Some(401 | 403)) => ErrorKind::Authentication,
        (_, Some(404)) => ErrorKind::NotFound,
        (_, Some(408)) => ErrorKind::Timeout(TimeoutPhase::Total),
        (_, Some(400..=499)) if too_long => ErrorKind::ContextTooLong,
        (_, Some(400..=499)) => ErrorKind::BadRequest,
        (_, Some(503)) => ErrorKind::Overloaded,
        _ => ErrorKind::ServerError,
    };
    let message = match kind {
        ErrorKind::BadRequest | ErrorKind::NotFound | ErrorKind::ContextTooLong | ErrorKind::Untranslatable
            if !upstream.is_empty() =>
        {
            upstream
        }
        ErrorKind::RateLimited => "Bedrock is throttling requests".to_owned(),
        ErrorKind::Overloaded => "Bedrock's model is not ready or is unavailable".to_owned(),
        ErrorKind::Authentication => "Bedrock rejected the gateway's AWS credentials".to_owned(),
        ErrorKind::Timeout(_) => "Bedrock's model timed out".to_owned(),
        _ => match status {
            Some(s) => format!("Bedrock failed with HTTP {s}"),
            None => "Bedrock failed mid-stream".to_owned(),
        },
    };
    ProviderError { kind, status, retry_after: None, message, code: None, param: None }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn typed(name: &str) -> HeaderMap {
        [("x-amzn-errortype", http::HeaderValue::from_str(name).unwrap())]
            .into_iter()
            .map(|(k, v)| (http::HeaderName::from_static(k), v))
            .collect()
    }

    #[test]
    fn exceptions_map_to_our_classes() {
        let cases = [
            ("ThrottlingException:http://internal.amazon.com/coral/com.amazon.bedrock/", 429, ErrorKind::RateLimited),
            ("ModelNotReadyException", 429, ErrorKind::Overloaded),
            ("ServiceUnavailableException", 503, ErrorKind::Overloaded),
            ("InternalServerException", 500, ErrorKind::ServerError),
            ("ModelErrorException", 424, ErrorKind::ServerError),
            ("ModelTimeoutException", 408, ErrorKind::Timeout(TimeoutPhase::Total)),
            ("AccessDeniedException", 403, ErrorKind::Authentication),
            ("UnrecognizedClientException", 403, ErrorKind::Authentication),
            ("ResourceNotFoundException", 404, ErrorKind::NotFound),
            ("ValidationException", 400, ErrorKind::BadRequest),
        ];
        for (name, status, kind) in cases {
            let e = classify(status, &typed(name), br#"{"message":"words"}"#, None);
            assert_eq!(e.kind, kind, "{name}");
        }
    }

    #[test]
    fn a_validation_error_keeps_bedrocks_words_and_a_long_input_is_a_context_overflow() {
        let e = classify(400, &HeaderMap::new(), br#"{"__type":"com.amazon#ValidationException","message":"The model returned the following errors: temperature: must be <= 1"}"#, None);
        assert_eq!(e.kind, ErrorKind::BadRequest);
        assert!(e.message.contains("temperature: must be <= 1"));
        let e = classify(
            400,
            &typed("ValidationException"),
            br#"{"message":"Input is too long for requested model."}"#,
            None,
        );
        assert_eq!(e.kind, ErrorKind::ContextTooLong);
        assert!(!e.should_fallback());
        // What the model cannot do moves on to another model.
        let e = classify(
            400,
            &typed("ValidationException"),
            br#"{"message":"This model doesn't support tool use in streaming mode."}"#,
            None,
        );
        assert_eq!(e.kind, ErrorKind::Untranslatable);
        assert!(e.should_fallback() && e.message.contains("tool use in streaming mode"));
    }

    #[test]
    fn stream_exceptions_fail_the_attempt() {
        assert_eq!(in_stream("throttlingException", r#"{"message":"slow"}"#).kind, ErrorKind::RateLimited);
        let e = in_stream("modelStreamErrorException", r#"{"message":"broke"}"#);
        assert_eq!(e.kind, ErrorKind::StreamInterrupted);
        assert!(e.should_fallback());
    }
}
