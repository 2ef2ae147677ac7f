//! The edge's first look at a request, before any route: framing two HTTP parsers could read
//! differently, and headers larger than the operator allows, are refused in the door's dialect.
//!
//! hyper already refuses most bad framing itself (a `Transfer-Encoding` that does not end in `chunked`,
//! conflicting `Content-Length`s, `Transfer-Encoding` on HTTP/1.0) and treats `Transfer-Encoding` with
//! `Content-Length` as RFC 9112 says (the length is ignored, the connection closed after the response).
//! What it lets through and a proxy in front might read otherwise is refused here: `Transfer-Encoding`
//! given more than once or as a list (`chunked, chunked`, `gzip, chunked`), or with anything but
//! `chunked`; the connection is closed after the refusal, so no byte after it is read as a request.
//! Header sizes: hyper's read buffer bounds the whole block (`server` sets it from the configuration,
//! with room for this layer to answer first); each header and the block are measured here (431).

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, header};

use super::GatewayError;
use crate::protocols::ErrorDialect;

/// The operator's header limits (`server.max_header_bytes`, `server.max_header_block_bytes`).
#[derive(Debug, Clone, Copy)]
pub struct HeaderLimits {
    pub max_header_bytes: usize,
    pub max_block_bytes: usize,
}

pub async fn check(State(limits): State<HeaderLimits>, req: Request, next: Next) -> Response {
    let refusal = framing_problem(&req)
        .map(|m| (GatewayError::ambiguous_framing(m), true))
        .or_else(|| header_problem(&req, limits).map(|m| (GatewayError::header_too_large(m), false)));
    let Some((error, close)) = refusal else { return next.run(req).await };
    let dialect = ErrorDialect::for_path(req.uri().path());
    let body = dialect.render(&error.reply());
    let mut resp = (error.status, [(header::CONTENT_TYPE, "application/json")], body).into_response();
    if close {
        resp.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    resp
}

fn framing_problem(req: &Request) -> Option<&'static str> {
    let mut values = req.headers().get_all(header::TRANSFER_ENCODING).iter();
    let first = values.next()?;
    if values.next().is_some() {
        return Some("Transfer-Encoding is given more than once; send it once, as `chunked`.");
    }
    let only_chunked = first.to_str().is_ok_and(|v| v.trim().eq_ignore_ascii_case("chunked"));
    if !only_chunked {
        return Some("Transfer-Encoding must be exactly `chunked`.");
    }
    None
}

fn header_problem(req: &Request, limits: HeaderLimits) -> Option<String> {
    let mut block = 0usize;
    for (name, value) in req.headers() {
        // As on the wire: `name: value\r\n`.
        let size = name.as_str().len() + value.len() + 4;
        if size > limits.max_header_bytes {
            return Some(format!(
                "The `{name}` header is {size} bytes; at most {} are accepted for one header.",
                limits.max_header_bytes
            ));
        }
        block += size;
    }
    (block > limits.max_block_bytes)
        .then(|| format!("The request's headers are {block} bytes; at most {} are accepted.", limits.max_block_bytes))
}
