//! The HTTP edge: routes, the middleware around them, and the rendering of errors.
//!
//! Handlers decode the caller's dialect, call into routing and providers, and encode the answer; they hold
//! no business rules of their own. Tower is used only for edge concerns, each layer commented with why.

pub mod accounts;
pub mod admin;
pub mod admission;
pub mod auth;
pub mod azure;
pub mod body;
pub mod cache;
pub mod chat;
pub mod completions;
pub mod dashboard;
pub mod embeddings;
pub mod error;
pub mod files;
pub mod framing;
pub mod gemini;
pub mod health;
pub mod idempotency;
pub mod input;
pub mod media;
pub mod messages;
pub mod models;
pub mod observe;
pub mod pipeline;
pub mod relay;
pub mod rerank;
pub mod responses;
mod resume;
pub mod upload;

use std::sync::Arc;

use axum::Router;
use axum::extract::OriginalUri;
use axum::middleware::{from_fn, from_fn_with_state};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use http::Method;
use tower_http::catch_panic::CatchPanicLayer;

pub use error::GatewayError;

use crate::app::AppState;
use crate::protocols::ErrorDialect;

/// Builds the whole HTTP application.
pub fn router(state: Arc<AppState>) -> Router {
    let api = Router::new()
        .route("/v1/chat/completions", post(chat::create_chat_completion))
        .route("/v1/completions", post(completions::create_completion))
        .route("/v1/responses", post(responses::create_response))
        .route("/v1/responses/{id}", get(responses::get_response).delete(responses::delete_response))
        .route("/v1/responses/{id}/input_items", get(responses::list_input_items))
        .route("/v1/embeddings", post(embeddings::create_embeddings))
        .route("/v1/moderations", post(embeddings::create_moderation))
        .route("/v1/rerank", post(rerank::create_rerank))
        .route("/v1/images/generations", post(media::create_image))
        .route("/v1/images/edits", post(media::edit_image))
        .route("/v1/audio/speech", post(media::create_speech))
        .route("/v1/audio/transcriptions", post(media::create_transcription))
        .route("/v1/audio/translations", post(media::create_translation))
        .route("/v2/rerank", post(rerank::create_rerank))
        .route("/v1/files", post(files::upload_file).get(files::list_files))
        .route("/v1/files/{id}", get(files::retrieve_file).delete(files::delete_file))
        .route("/v1/files/{id}/content", get(files::file_content))
        .route("/v1/batches", post(files::create_batch).get(files::list_batches))
        .route("/v1/batches/{id}", get(files::retrieve_batch))
        .route("/v1/batches/{id}/cancel", post(files::cancel_batch))
        .route("/v1/models", get(models::list_models))
        .route("/v1/models/{*id}", get(models::retrieve_model))
        .route("/v1/route/explain", post(models::explain_route))
        // LiteLLM's model details (aider and other tools read it).
        .route("/model/info", get(models::model_info))
        .route("/v1/model/info", get(models::model_info))
        .route("/v1/key", get(admin::own_key).layer(axum::middleware::map_response(no_store)))
        .route("/v1/key/regenerate", post(admin::regenerate_own_key).layer(axum::middleware::map_response(no_store)))
        .route("/v1/key/revoke", post(admin::revoke_own_key).layer(axum::middleware::map_response(no_store)))
        // Azure OpenAI's paths: by deployment, and Responses by resource.
        .route("/openai/deployments/{deployment}/chat/completions", post(azure::chat_completions))
        .route("/openai/deployments/{deployment}/completions", post(azure::completions))
        .route("/openai/deployments/{deployment}/embeddings", post(azure::embeddings))
        .route("/openai/responses", post(responses::create_response))
        .route("/openai/responses/{id}", get(responses::get_response).delete(responses::delete_response))
        .route("/openai/responses/{id}/input_items", get(responses::list_input_items))
        // Azure's v1 API, OpenAI's paths under /openai/v1.
        .route("/openai/v1/chat/completions", post(chat::create_chat_completion))
        .route("/openai/v1/completions", post(completions::create_completion))
        .route("/openai/v1/embeddings", post(embeddings::create_embeddings))
        .route("/openai/v1/responses", post(responses::create_response))
        .route("/openai/v1/responses/{id}", get(responses::get_response).delete(responses::delete_response))
        .route("/openai/v1/responses/{id}/input_items", get(responses::list_input_items))
        .route("/openai/v1/models", get(models::list_models))
        // Inside authentication: a repeated Idempotency-Key is the same caller's.
        .route_layer(from_fn_with_state(state.clone(), idempotency::idempotent))
        // Only matched routes require a key, so an unknown path is a 404 whoever asks.
        .route_layer(from_fn_with_state(state.clone(), auth::require_caller));
    // Anthropic's front door: the same keys, and errors in Anthropic's shape whichever layer raised them.
    let anthropic = Router::new()
        .route("/v1/messages", post(messages::create_message))
        .route("/v1/messages/count_tokens", post(messages::count_tokens))
        .route_layer(from_fn_with_state(state.clone(), idempotency::idempotent))
        .route_layer(from_fn_with_state(state.clone(), auth::require_caller))
        .route_layer(from_fn_with_state(ErrorDialect::Anthropic, error::render_errors_as));
    // Gemini's front door: `?key=` or x-goog-api-key, and errors in Google's shape.
    let gemini = Router::new()
        .route("/v1beta/models", get(gemini::list_models))
        .route("/v1beta/models/{*target}", post(gemini::generate).get(gemini::get_model))
        .route_layer(from_fn_with_state(state.clone(), idempotency::idempotent))
        .route_layer(from_fn_with_state(state.clone(), auth::require_caller))
        .route_layer(from_fn(gemini::key_from_query))
        .route_layer(from_fn_with_state(ErrorDialect::Gemini, error::render_errors_as));
    let admin = Router::new()
        .route("/admin/v1/organizations", post(admin::create_organization).get(admin::list_organizations))
        .route(
            "/admin/v1/organizations/{id}",
            get(admin::get_organization).patch(admin::update_organization).delete(admin::delete_organization),
        )
        .route("/admin/v1/plans", get(admin::list_plans).post(admin::create_plan))
        .route("/admin/v1/plans/{name}", get(admin::get_plan).patch(admin::update_plan).delete(admin::delete_plan))
        .route("/admin/v1/keys", post(admin::create_key).get(admin::list_keys))
        .route("/admin/v1/usage", get(admin::usage))
        .route("/admin/v1/usage/requests", get(admin::usage_events))
        .route("/admin/v1/billing", get(admin::billing))
        .route("/admin/v1/audit", get(admin::list_audit))
        .route("/admin/v1/providers", get(admin::providers))
        .route("/admin/v1/config", get(admin::config_version))
        .route("/admin/v1/reload", post(admin::reload))
        .route("/admin/v1/keys/{id}", get(admin::get_key).patch(admin::update_key).delete(admin::delete_key))
        .route("/admin/v1/keys/{id}/revoke", post(admin::revoke_key))
        .route("/admin/v1/keys/{id}/regenerate", post(admin::regenerate_key))
        .route("/admin/v1/session", get(accounts::whoami).delete(accounts::sign_out))
        .route("/admin/v1/accounts", get(accounts::list_accounts).post(accounts::create_account))
        .route(
            "/admin/v1/accounts/{id}",
            get(accounts::get_account).patch(accounts::update_account).delete(accounts::delete_account),
        )
        .route("/admin/v1/management_keys", get(accounts::list_management_keys).post(accounts::create_management_key))
        .route("/admin/v1/management_keys/{id}/revoke", post(accounts::revoke_management_key))
        .route_layer(from_fn_with_state(state.clone(), idempotency::idempotent))
        // Who is calling and whether their role reaches the route (sessions and management keys are
        // looked up in the database, hence after its check).
        .route_layer(from_fn_with_state(state.clone(), auth::require_admin))
        // While the database is down, at once 503 (inference goes on from the key cache).
        .route_layer(from_fn_with_state(state.clone(), admin::database_up))
        .route_layer(axum::middleware::map_response(no_store));
    // Signing in: no credential yet (the handler counts failures per source and per account).
    let sign_in = Router::new()
        .route("/admin/v1/session", post(accounts::sign_in))
        .route_layer(from_fn_with_state(state.clone(), admin::database_up))
        .route_layer(axum::middleware::map_response(no_store));
    let metrics = Router::new()
        .route("/metrics", get(health::metrics))
        .route_layer(from_fn_with_state(state.clone(), auth::require_master_key));
    let app = Router::new()
        .route("/health/liveness", get(health::liveness))
        // LiteLLM's spelling, kept so probes written for it keep working.
        .route("/health/liveliness", get(health::liveness))
        .route("/health/readiness", get(health::readiness))
        .route("/openapi.json", get(openapi))
        .route("/dashboard", get(dashboard::page))
        .route("/dashboard/", get(dashboard::page))
        .route("/dashboard/{file}", get(dashboard::asset))
        .merge(api)
        .merge(anthropic)
        .merge(gemini)
        .merge(admin)
        .merge(sign_in)
        .merge(metrics)
        .fallback(route_not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state.clone());
    with_edge_layers(app, state.header_limits)
}

/// The layers every route sits behind.
fn with_edge_layers(app: Router, limits: framing::HeaderLimits) -> Router {
    app
        // A panicking handler becomes a generic 500; the connection and the process carry on.
        .layer(CatchPanicLayer::custom(panic_response))
        // Before any route: ambiguous framing and oversized headers are refused.
        .layer(from_fn_with_state(limits, framing::check))
        // Outermost: every response, errors and panics included, carries the request id and is logged in its span.
        .layer(from_fn(observe::request_context))
}

/// The OpenAPI 3.1 description of every route (kept in step with the router by a test).
const OPENAPI: &str = include_str!("http/openapi.json");

async fn openapi() -> impl IntoResponse {
    ([(http::header::CONTENT_TYPE, "application/json")], OPENAPI)
}

/// Admin answers (a new key's secret, tenants' settings and usage) and a key's own view are never kept
/// by a browser or proxy cache.
async fn no_store(mut resp: Response) -> Response {
    resp.headers_mut().insert(http::header::CACHE_CONTROL, http::HeaderValue::from_static("no-store"));
    resp
}

async fn route_not_found(method: Method, OriginalUri(uri): OriginalUri) -> GatewayError {
    GatewayError::route_not_found(&method, uri.path())
}

async fn method_not_allowed(method: Method, OriginalUri(uri): OriginalUri) -> GatewayError {
    GatewayError::method_not_allowed(&method, uri.path())
}

fn panic_response(_payload: Box<dyn std::any::Any + Send + 'static>) -> Response {
    tracing::error!("a request handler panicked");
    GatewayError::internal().into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower::ServiceExt;

    async fn boom() -> String {
        let nothing: Vec<String> = Vec::new();
        nothing[0].clone() // handler bug
    }

    #[tokio::test]
    async fn a_panicking_handler_becomes_a_500_in_openai_shape() {
        let limits = framing::HeaderLimits { max_header_bytes: 1024, max_block_bytes: 4096 };
        let app = with_edge_layers(Router::new().route("/boom", get(boom)), limits);
        let req = http::Request::get("/boom").body(axum::body::Body::empty()).unwrap();
        let resp = app.clone().oneshot(req).await.unwrap();
        assert_eq!(resp.status(), 500);
        assert!(resp.headers().contains_key("x-request-id"));
        let body = axum::body::to_bytes(resp.into_body(), 1 << 16).await.unwrap();
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["error"]["code"], "internal_error");
        assert!(!body.to_string().contains("index out of bounds"), "panic text is not shown to clients");
        // The service still answers.
        let req = http::Request::get("/boom").body(axum::body::Body::empty()).unwrap();
        assert_eq!(app.oneshot(req).await.unwrap().status(), 500);
    }
}
