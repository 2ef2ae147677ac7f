//! Request identity and logging: every request gets an `x-request-id` (the caller's, when it sent a sane
//! one), which is returned on the response and recorded on every log line made while serving it.

use std::time::Instant;

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;
use http::HeaderValue;
use tracing::Instrument;

/// The request's ids, available to handlers as an extension.
#[derive(Debug, Clone)]
pub struct RequestId {
    /// Echoed as `x-request-id` and on every log line: the caller's, when it sent a sane one.
    pub id: String,
    /// The ledger's key for this request: always generated here, so a caller that reuses an
    /// `x-request-id` cannot make two requests count as one.
    pub ledger_id: String,
    /// The caller's own id, when it sent one (kept in the ledger beside ours).
    pub client_id: Option<String>,
}

const HEADER: &str = "x-request-id";

pub async fn request_context(mut req: Request, next: Next) -> Response {
    let client_id =
        req.headers().get(HEADER).and_then(|v| v.to_str().ok()).filter(|v| is_acceptable_id(v)).map(str::to_owned);
    let ledger_id = uuid::Uuid::now_v7().to_string();
    let id = client_id.clone().unwrap_or_else(|| ledger_id.clone());
    let span = match &client_id {
        Some(_) => tracing::info_span!("request", request_id = %id, ledger_id = %ledger_id),
        None => tracing::info_span!("request", request_id = %id),
    };
    req.extensions_mut().insert(RequestId { id: id.clone(), ledger_id, client_id });
    let started = Instant::now();
    tracing::debug!(parent: &span, method = %req.method(), path = %req.uri().path(), "request received");
    let mut resp = next.run(req).instrument(span.clone()).await;
    span.in_scope(|| {
        tracing::debug!(
            status = resp.status().as_u16(),
            elapsed_us = started.elapsed().as_micros() as u64,
            "response headers sent"
        );
    });
    if let Ok(v) = HeaderValue::from_str(&id) {
        resp.headers_mut().insert(HEADER, v);
    }
    resp
}

/// Ids from callers are echoed into headers and logs, so only short printable tokens are taken.
fn is_acceptable_id(v: &str) -> bool {
    (1..=128).contains(&v.len()) && v.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
}
