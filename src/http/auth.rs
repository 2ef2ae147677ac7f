//! Who is calling. For now the master key opens the API; virtual keys come with tenancy. The key may be
//! sent in any header an SDK uses (see `keys::from_headers`).

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::GatewayError;
use crate::app::AppState;
use crate::keys;

/// The `/v1` API: the master key or an active virtual key. The key is resolved from memory, no I/O.
pub async fn require_caller(State(state): State<Arc<AppState>>, mut req: Request, next: Next) -> Response {
    let key = match keys::from_headers(req.headers()) {
        Err(e) => return GatewayError::ambiguous_key(e).into_response(),
        Ok(None) => return GatewayError::missing_key().into_response(),
        Ok(Some(token)) if state.master_key.matches(token) => None,
        Ok(Some(token)) => match state.keys.authenticate(token, crate::tenancy::now_ms()) {
            Some(key) => Some(key),
            None => return GatewayError::invalid_key().into_response(),
        },
    };
    if let Some(key) = key {
        tracing::Span::current().record("key_id", key.id.as_str());
        req.extensions_mut().insert(key);
    }
    next.run(req).await
}

/// The admin API: the master key only.
pub async fn require_master_key(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    match keys::from_headers(req.headers()) {
        Err(e) => GatewayError::ambiguous_key(e).into_response(),
        Ok(None) => GatewayError::missing_key().into_response(),
        Ok(Some(token)) if state.master_key.matches(token) => next.run(req).await,
        Ok(Some(_)) => GatewayError::invalid_key().into_response(),
    }
}
