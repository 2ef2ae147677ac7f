//! Reading and decoding request bodies: a size limit (413), a deadline for slow uploads (408), and JSON
//! errors that name the offending field in `param`.

use axum::body::Body;
use bytes::Bytes;
use http::HeaderMap;
use serde::de::DeserializeOwned;

use super::GatewayError;

pub use crate::config::BodyLimits;

pub async fn read(headers: &HeaderMap, body: Body, limits: BodyLimits) -> Result<Bytes, GatewayError> {
    // Compressed request bodies are not accepted: decoding them would bypass the size limit's intent.
    if let Some(encoding) = headers.get(http::header::CONTENT_ENCODING)
        && !encoding.as_bytes().eq_ignore_ascii_case(b"identity")
    {
        return Err(GatewayError::unsupported_encoding());
    }
    // A declared length over the limit is refused before reading a byte of it.
    let declared =
        headers.get(http::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limits.max_bytes as u64) {
        return Err(GatewayError::body_too_large(limits.max_bytes));
    }
    match tokio::time::timeout(limits.read_timeout, axum::body::to_bytes(body, limits.max_bytes)).await {
        Err(_) => Err(GatewayError::body_timeout()),
        Ok(Ok(bytes)) => Ok(bytes),
        Ok(Err(e)) => {
            let inner = e.into_inner();
            if inner.downcast_ref::<http_body_util::LengthLimitError>().is_some() {
                Err(GatewayError::body_too_large(limits.max_bytes))
            } else {
                Err(GatewayError::invalid_body("The request body could not be read.", None))
            }
        }
    }
}

/// Reads a request body within the limits and decodes it as JSON (the prologue of every JSON handler).
pub async fn read_json<T: DeserializeOwned>(
    headers: &HeaderMap,
    body: Body,
    limits: BodyLimits,
) -> Result<T, GatewayError> {
    decode(&read(headers, body, limits).await?)
}

/// Decodes JSON into `T`; on failure, `param` is the path of the field at fault (`messages[0].role`).
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, GatewayError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(GatewayError::invalid_body("The request body is empty; expected a JSON object.", None));
    }
    // The fast path; the slower path-tracking decoder runs only to explain a failure.
    if let Ok(value) = serde_json::from_slice(bytes) {
        return Ok(value);
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let mut param = (path != "." && !inner.is_syntax() && !inner.is_eof()).then_some(path);
        // serde reports a missing field at its parent; name the field itself.
        let text = inner.to_string();
        if let Some(field) = text.strip_prefix("missing field `").and_then(|r| r.split('`').next()) {
            param = Some(match param {
                Some(parent) => format!("{parent}.{field}"),
                None => field.to_owned(),
            });
        }
        let message = match &param {
            Some(p) => format!("Invalid value for '{p}': {text}"),
            None => format!("The request body is not valid JSON: {text}"),
        };
        GatewayError::invalid_body(message, param)
    })?;
    de.end().map_err(|e| GatewayError::invalid_body(format!("The request body is not valid JSON: {e}"), None))?;
    Ok(value)
}

/// Query-string parameters, with a bad query answered by an OpenAI-shaped 400 like every other error.
pub struct Query<T>(pub T);

impl<T, S> axum::extract::FromRequestParts<S> for Query<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = GatewayError;

    async fn from_request_parts(parts: &mut http::request::Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let query = parts.uri.query().unwrap_or_default();
        let de = serde_urlencoded::Deserializer::new(url::form_urlencoded::parse(query.as_bytes()));
        serde_path_to_error::deserialize(de).map(Query).map_err(|e| {
            // The parameter at fault, by name: an unknown filter, or a value of the wrong type.
            let param = e.path().to_string();
            let param = (param != ".").then_some(param);
            GatewayError::invalid_body(format!("Invalid query string: {}", e.inner()), param)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::ChatRequest;

    #[test]
    fn type_errors_name_the_field() {
        let e = decode::<ChatRequest>(br#"{"model":"m","messages":[{"role":"robot","content":"x"}]}"#).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("messages[0].role"));
        let e = decode::<ChatRequest>(br#"{"model":"m","messages":[],"temperature":"hot"}"#).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("temperature"));
        let e = decode::<ChatRequest>(br#"{"messages":[]}"#).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("model"));
    }

    #[test]
    fn syntax_errors_have_no_param() {
        let e = decode::<ChatRequest>(br#"{"model": "m", "#).unwrap_err();
        assert_eq!((e.status.as_u16(), e.param), (400, None));
        let e = decode::<ChatRequest>(br#"{"model":"m","messages":[]} trailing"#).unwrap_err();
        assert_eq!(e.param, None);
    }
}
