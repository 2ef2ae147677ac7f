//! `Idempotency-Key` on `POST` inference and admin create routes: the first request with a key runs,
//! and its answer (status, headers, body; a stream whole, byte for byte) is kept for 24 hours; a repeat
//! from the same API key with the same body gets that answer back without running (so without a second
//! upstream call or a second charge), marked `idempotent-replayed: true`. A repeat while the first is
//! still running gets 409; the same key with another body (or on another route) 422; a key whose answer
//! was too large to keep ([`MAX_KEPT`]) 409 saying so.
//!
//! Only successful answers are kept: a request that failed (any non-2xx, or a stream that ended with an
//! error event), or whose client left before its answer ended, gives its claim up, so the SDKs' own
//! retries (which resend the same key) run again. While the database is down, an inference request
//! runs without the replay (inference does not depend on the database); an admin one is refused. Claims live in the database (`store::idempotency`), so every replica agrees: the first to
//! insert the key wins. A claim still `running` after [`ABANDONED_AFTER_MS`] (its replica died) is
//! taken over; each claim carries its request's token, so a late first request cannot keep or free the
//! claim of the one that took over. Nothing here runs for a request without the header, nor for a
//! multipart upload (it is spooled as it arrives, never read whole, so it is neither fingerprinted nor
//! kept).
//!
//! A key's secret is never kept: a replay of `POST /admin/v1/keys` (or of a regeneration, by an admin
//! or by the key itself) returns the key without it.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use bytes::{Bytes, BytesMut};
use futures_util::Stream;
use http::{HeaderName, HeaderValue, Method, StatusCode};
use sha2::{Digest, Sha256};

use super::{GatewayError, body};
use crate::app::AppState;
use crate::store::idempotency::{Claim, IdempotencyRow, IdempotencyScope};
use crate::tenancy::ActiveKey;

/// How long a kept answer is replayed.
pub const KEPT_FOR_MS: i64 = 24 * 3600 * 1000;
/// A claim `running` for longer than this is taken as abandoned (beyond any request's deadline).
pub const ABANDONED_AFTER_MS: i64 = 60 * 60 * 1000;
/// The largest answer kept, in bytes.
pub const MAX_KEPT: usize = 4 << 20;
/// The longest key accepted.
const MAX_KEY_LEN: usize = 255;

/// Response headers not kept for a replay: the connection's, and the request's own id.
const NOT_KEPT: [&str; 6] = ["content-length", "transfer-encoding", "connection", "date", "x-request-id", "set-cookie"];

/// The middleware, inside authentication (it needs the caller's key).
pub async fn idempotent(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    if req.method() != Method::POST {
        return next.run(req).await;
    }
    let Some(value) = req.headers().get("idempotency-key") else {
        return next.run(req).await;
    };
    // An upload is spooled as it arrives, never read into memory, so it is not fingerprinted or kept:
    // the key is not honoured for it.
    let multipart = req
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.trim_start().get(..10).is_some_and(|p| p.eq_ignore_ascii_case("multipart/")));
    if multipart {
        return next.run(req).await;
    }
    let key = match value.to_str().ok().map(str::trim).filter(|k| !k.is_empty() && k.len() <= MAX_KEY_LEN) {
        Some(k) => k.to_owned(),
        None => {
            return GatewayError::invalid_value(
                format!("'Idempotency-Key' must be 1 to {MAX_KEY_LEN} visible ASCII characters."),
                "Idempotency-Key",
            )
            .into_response();
        }
    };
    let (org, key_id) =
        match (req.extensions().get::<Arc<ActiveKey>>(), req.extensions().get::<super::auth::Principal>()) {
            (Some(k), _) => (k.organization_id.clone(), k.id.clone()),
            // The admin API: each principal's keys are its own.
            (None, Some(p)) => (p.organization_id.clone().unwrap_or_default(), p.actor.clone()),
            (None, None) => (String::new(), String::new()),
        };
    let (parts, raw) = req.into_parts();
    let bytes = match body::read(&parts.headers, raw, state.live().body_limits).await {
        Ok(b) => b,
        Err(e) => return e.into_response(),
    };
    let path = parts.uri.path().to_owned();
    let fingerprint = fingerprint(&path, parts.uri.query(), &bytes);
    let scope = Owned { scope: org, key_id, key, owner: uuid::Uuid::new_v4().simple().to_string() };
    let mut tries = 0;
    loop {
        let now = crate::clock::now_ms();
        let claim = state
            .store
            .claim_idempotency_key(&scope.as_ref(), &fingerprint, now, now + KEPT_FOR_MS, now - ABANDONED_AFTER_MS)
            .await;
        tries += 1;
        match claim {
            // Admin routes need the database anyway; inference goes on without it (as it does for keys
            // and limits), only without the replay.
            Err(e) if !path.starts_with("/admin/") => {
                tracing::warn!(error = %e, "idempotency key could not be claimed; the request runs without it");
                return next.run(Request::from_parts(parts, Body::from(bytes))).await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "idempotency key could not be claimed");
                return GatewayError::database_unavailable().into_response();
            }
            Ok(Claim::Held(row)) => return held(&row, &fingerprint),
            Ok(Claim::Released) if tries < 3 => continue,
            Ok(Claim::Released) => {
                return in_use();
            }
            Ok(Claim::Claimed) => break,
        }
    }
    let mut claim = Held { state: state.clone(), scope: Some(scope) };
    let response = next.run(Request::from_parts(parts, Body::from(bytes))).await;
    if !response.status().is_success() {
        claim.release();
        return response;
    }
    // A created or regenerated key's secret is shown once, never kept.
    // Answers that carry a secret (a key's, a management key's) are never kept.
    let secret_free = path.starts_with("/admin/v1/keys")
        || path.starts_with("/admin/v1/management_keys")
        || path.starts_with("/v1/key/");
    let (parts, body) = response.into_parts();
    let headers = kept_headers(&parts.headers);
    // A stream is kept only if it ended properly, not with an error event after a failure.
    let completed = parts.extensions.get::<super::relay::StreamCompleted>().cloned();
    let tee = Tee {
        completed,
        inner: body.into_data_stream(),
        kept: Some(BytesMut::new()),
        status: parts.status.as_u16(),
        headers,
        secret_free,
        claim: Some(claim),
    };
    Response::from_parts(parts, Body::from_stream(tee))
}

/// The answer for a key another request holds.
fn held(row: &IdempotencyRow, fingerprint: &str) -> Response {
    if row.fingerprint != fingerprint {
        return GatewayError::idempotency(
            StatusCode::UNPROCESSABLE_ENTITY,
            "idempotency_key_reused",
            "This Idempotency-Key was used with another request body or route; use a new key for a new request.",
        )
        .into_response();
    }
    match (row.state.as_str(), row.body.as_deref()) {
        ("done", Some(body)) => replay(row, body),
        ("too_large", _) => GatewayError::idempotency(
            StatusCode::CONFLICT,
            "idempotency_answer_not_kept",
            "The first request with this Idempotency-Key answered, but its answer was too large to keep for a \
             replay; use a new key to ask again.",
        )
        .into_response(),
        _ => in_use(),
    }
}

/// 409: another request holds the key and has not answered yet.
fn in_use() -> Response {
    GatewayError::idempotency(
        StatusCode::CONFLICT,
        "idempotency_key_in_use",
        "A request with this Idempotency-Key is still running; retry once it has answered.",
    )
    .into_response()
}

/// The kept answer, as it was first sent.
fn replay(row: &IdempotencyRow, body: &str) -> Response {
    let mut response = Response::new(Body::from(body.to_owned()));
    *response.status_mut() =
        row.status.and_then(|s| u16::try_from(s).ok()).and_then(|s| StatusCode::from_u16(s).ok()).unwrap_or_default();
    let pairs: Vec<(String, String)> =
        row.headers.as_deref().and_then(|h| serde_json::from_str(h).ok()).unwrap_or_default();
    let headers = response.headers_mut();
    for (name, value) in pairs {
        if let (Ok(name), Ok(value)) = (HeaderName::try_from(name), HeaderValue::try_from(value)) {
            headers.append(name, value);
        }
    }
    headers.insert("idempotent-replayed", HeaderValue::from_static("true"));
    response
}

/// The route, its query (which may choose the answer's form, as Gemini's `alt=sse` does; a `key=`
/// credential left out) and the body, hashed: a repeat must match all three.
fn fingerprint(path: &str, query: Option<&str>, body: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(path.as_bytes());
    h.update([0]);
    for pair in query.unwrap_or_default().split('&').filter(|p| !p.is_empty() && !p.starts_with("key=")) {
        h.update(pair.as_bytes());
        h.update([b'&']);
    }
    h.update([0]);
    h.update(body);
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

fn kept_headers(headers: &http::HeaderMap) -> String {
    let pairs: Vec<(&str, &str)> = headers
        .iter()
        .filter(|(name, _)| !NOT_KEPT.contains(&name.as_str()))
        .filter_map(|(name, value)| Some((name.as_str(), value.to_str().ok()?)))
        .collect();
    serde_json::to_string(&pairs).unwrap_or_else(|_| "[]".to_owned())
}

/// The key's three parts, owned.
struct Owned {
    scope: String,
    key_id: String,
    key: String,
    /// This request's token: a claim taken over after [`ABANDONED_AFTER_MS`] is no longer ours.
    owner: String,
}

impl Owned {
    fn as_ref(&self) -> IdempotencyScope<'_> {
        IdempotencyScope { scope: &self.scope, key_id: &self.key_id, idempotency_key: &self.key, owner: &self.owner }
    }
}

/// A claim this request holds: kept with its answer, or released (also when dropped unanswered, as when
/// the client leaves).
struct Held {
    state: Arc<AppState>,
    scope: Option<Owned>,
}

impl Held {
    fn release(&mut self) {
        if let Some(scope) = self.scope.take() {
            let state = self.state.clone();
            tokio::spawn(async move {
                if let Err(e) = state.store.release_idempotency_key(&scope.as_ref()).await {
                    tracing::warn!(error = %e, "an idempotency key could not be released");
                }
            });
        }
    }

    fn keep(&mut self, status: u16, headers: String, body: Option<String>) {
        if let Some(scope) = self.scope.take() {
            let state = self.state.clone();
            tokio::spawn(async move {
                let kept =
                    state.store.keep_idempotent_answer(&scope.as_ref(), status, Some(&headers), body.as_deref()).await;
                if let Err(e) = kept {
                    tracing::warn!(error = %e, "an idempotent answer could not be kept");
                    let _ = state.store.release_idempotency_key(&scope.as_ref()).await;
                }
            });
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.release();
    }
}

/// The answer's body on its way to the client, copied (up to [`MAX_KEPT`]) to be kept once it ends.
struct Tee<S> {
    inner: S,
    /// For a relayed stream: whether it ended properly.
    completed: Option<super::relay::StreamCompleted>,
    /// What was sent so far; `None` once it grew past the bound.
    kept: Option<BytesMut>,
    status: u16,
    headers: String,
    /// The answer holds a secret that must not be kept (a created key's).
    secret_free: bool,
    claim: Option<Held>,
}

impl<S: Stream<Item = Result<Bytes, axum::Error>> + Unpin> Stream for Tee<S> {
    type Item = Result<Bytes, axum::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let next = Pin::new(&mut self.inner).poll_next(cx);
        match &next {
            Poll::Ready(Some(Ok(bytes))) => {
                if let Some(kept) = &mut self.kept {
                    if kept.len() + bytes.len() > MAX_KEPT {
                        self.kept = None;
                    } else {
                        kept.extend_from_slice(bytes);
                    }
                }
            }
            Poll::Ready(Some(Err(_))) => {
                // A body that failed is not an answer to keep; the drop releases the claim.
                self.kept = None;
                if let Some(mut claim) = self.claim.take() {
                    claim.release();
                }
            }
            Poll::Ready(None) if self.completed.as_ref().is_some_and(|c| !c.get()) => {
                // A stream that ended with an error event: not an answer to keep; the key is free again.
                if let Some(mut claim) = self.claim.take() {
                    claim.release();
                }
            }
            Poll::Ready(None) => {
                if let Some(mut claim) = self.claim.take() {
                    let body = self.kept.take().and_then(|b| String::from_utf8(b.to_vec()).ok());
                    let body = if self.secret_free { body.map(|b| without_secret(&b)) } else { body };
                    claim.keep(self.status, std::mem::take(&mut self.headers), body);
                }
            }
            Poll::Pending => {}
        }
        next
    }
}

/// A created key's answer without its secret.
fn without_secret(body: &str) -> String {
    match serde_json::from_str::<serde_json::Value>(body) {
        Ok(mut v) => {
            if let Some(o) = v.as_object_mut() {
                o.remove("key");
            }
            v.to_string()
        }
        Err(_) => String::new(),
    }
}
