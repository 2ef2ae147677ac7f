//! Probes for orchestrators. No authentication, no dependency calls on liveness.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use serde_json::json;

use crate::app::AppState;

/// 200 while the process runs.
pub async fn liveness() -> Response {
    Json(json!({"status": "ok"})).into_response()
}

/// 200 while the gateway takes traffic; 503 from the moment shutdown begins, so load balancers drain it.
pub async fn readiness(State(state): State<Arc<AppState>>) -> Response {
    if state.draining.load(Ordering::Relaxed) {
        return (StatusCode::SERVICE_UNAVAILABLE, Json(json!({"status": "draining"}))).into_response();
    }
    let available = state.providers.iter().filter(|p| p.unavailable_reason().is_none()).count();
    Json(json!({"status": "ready", "providers_available": available, "providers_configured": state.providers.len()}))
        .into_response()
}
