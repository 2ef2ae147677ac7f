//! `GET /v1/models` and `GET /v1/models/{id}` in OpenAI's shape.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use serde::Serialize;

use super::GatewayError;
use crate::app::AppState;
use crate::routing::{ModelEntry, RouteError};

#[derive(Serialize)]
pub struct ModelObject<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    owned_by: &'a str,
}

#[derive(Serialize)]
pub struct ModelList<'a> {
    object: &'static str,
    data: Vec<ModelObject<'a>>,
}

fn object(entry: &ModelEntry, created: u64) -> ModelObject<'_> {
    ModelObject { id: &entry.name, object: "model", created, owned_by: &entry.provider.name }
}

pub async fn list_models(State(state): State<Arc<AppState>>) -> Json<serde_json::Value> {
    let data = state.catalog.models().iter().map(|m| object(m, state.created)).collect();
    Json(serde_json::to_value(ModelList { object: "list", data }).unwrap_or_default())
}

pub async fn retrieve_model(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, GatewayError> {
    let entry = state.catalog.get(&id).ok_or_else(|| RouteError::UnknownModel(id.clone()))?;
    Ok(Json(serde_json::to_value(object(entry, state.created)).unwrap_or_default()))
}
