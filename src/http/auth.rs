//! Who is calling. For now the master key opens the API; virtual keys come with tenancy. The key may be
//! sent in any header an SDK uses (see `keys::from_headers`).

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::GatewayError;
use crate::app::AppState;
use crate::keys::{self, KeyError};

pub async fn require_master_key(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    match keys::from_headers(req.headers()) {
        Err(KeyError::Conflicting) => GatewayError::conflicting_keys().into_response(),
        Ok(None) => GatewayError::missing_key().into_response(),
        Ok(Some(token)) if state.master_key.matches(token) => next.run(req).await,
        Ok(Some(_)) => GatewayError::invalid_key().into_response(),
    }
}
