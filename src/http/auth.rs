//! Who is calling. For now the master key alone opens the API; virtual keys come with tenancy.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::header;

use super::GatewayError;
use crate::app::AppState;

pub async fn require_master_key(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    match bearer_token(&req) {
        None => GatewayError::missing_key().into_response(),
        Some(token) if state.master_key.matches(token) => next.run(req).await,
        Some(_) => GatewayError::invalid_key().into_response(),
    }
}

fn bearer_token(req: &Request) -> Option<&str> {
    let value = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}
