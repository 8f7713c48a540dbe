//! The HTTP surface: the route table, extractors, the OpenAI error envelope, SSE, the OpenAPI
//! document, and `Application`, which binds a listener and serves until shutdown.
//!
//! Must not contain model or provider logic: handlers call `gateway` and shape its answer.

mod application;
mod auth;
mod error;
mod extract;
mod handlers;
mod health;
mod key_limits;
mod keys_api;
mod observe;
mod openapi;
mod prompts_api;
mod request_log;
mod sse;

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::middleware::from_fn_with_state;
use axum::routing::{delete, get, post, put};

pub use application::{Application, StartError};
pub use error::ApiError;
pub use handlers::{DEPLOYMENT_HEADER, PROMPT_NAME_HEADER, PROMPT_VERSION_HEADER};
pub use key_limits::{
    LIMIT_REQUESTS, LIMIT_TOKENS, REMAINING_REQUESTS, REMAINING_TOKENS, RESET_REQUESTS,
    RESET_TOKENS,
};
pub use observe::{OVERHEAD_HEADER, REQUEST_ID_HEADER};
pub use openapi::ApiDoc;

use crate::gateway::Gateway;
use crate::limits::{ApiKeys, PerIp, VirtualKeys};
use crate::prompts::Registry;
use crate::telemetry::request_log::RequestLog;
use crate::telemetry::{Metrics, Tracing};

#[derive(Clone)]
pub struct AppState {
    pub gateway: Arc<Gateway>,
    /// Every accepted key, admin keys included.
    pub keys: Arc<ApiKeys>,
    /// Keys that may manage the gateway (prompt registry API, dashboard actions).
    pub admin_keys: Arc<ApiKeys>,
    /// Keys made at run time, with their limits.
    pub virtual_keys: Arc<VirtualKeys>,
    /// The request rate per client address for callers without a key, if configured.
    pub per_ip: Option<Arc<PerIp>>,
    pub registry: Arc<Registry>,
    /// False once shutdown has begun.
    pub ready: Arc<AtomicBool>,
    pub metrics: Metrics,
    /// Request spans, when OTLP export is on.
    pub tracing: Tracing,
    /// Where finished requests are logged; None when `request_log.enabled` is off.
    pub request_log: Option<Arc<RequestLog>>,
}

/// The route table.
pub fn app(state: AppState, max_body_bytes: usize) -> Router {
    let v1 = Router::new()
        .route("/v1/chat/completions", post(handlers::chat_completions))
        .route("/v1/completions", post(handlers::completions))
        .route("/v1/embeddings", post(handlers::embeddings))
        .route("/v1/models", get(handlers::list_models))
        // Model ids may contain slashes (`meta-llama/Llama-3.1-8B`).
        .route("/v1/models/{*id}", get(handlers::get_model))
        // The last layer is the outermost: the log sees refusals; bodies are sampled by key.
        .route_layer(from_fn_with_state(state.clone(), request_log::capture))
        .route_layer(from_fn_with_state(state.clone(), auth::require_key))
        .route_layer(from_fn_with_state(state.clone(), request_log::record));
    let admin = Router::new()
        .route(
            "/api/prompts",
            get(prompts_api::list).post(prompts_api::push),
        )
        .route("/api/prompts/{name}", get(prompts_api::detail))
        .route(
            "/api/prompts/{name}/versions/{selector}",
            get(prompts_api::version),
        )
        .route("/api/prompts/{name}/history", get(prompts_api::history))
        .route("/api/prompts/{name}/diff", get(prompts_api::diff))
        .route(
            "/api/prompts/{name}/labels/{label}",
            put(prompts_api::move_label),
        )
        .route(
            "/api/prompts/{name}/labels/{label}/rollback",
            post(prompts_api::rollback),
        )
        .route("/api/keys", get(keys_api::list).post(keys_api::create))
        .route("/api/keys/{name}", delete(keys_api::revoke))
        .route_layer(from_fn_with_state(state.clone(), auth::require_admin));
    Router::new()
        .merge(v1)
        .merge(admin)
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(health::metrics))
        .route("/openapi.json", get(openapi::spec))
        .merge(crate::ui::routes(state.clone()))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .layer(from_fn_with_state(state.tracing.clone(), observe::observe))
        .with_state(state)
}

async fn not_found(uri: axum::http::Uri) -> ApiError {
    ApiError::not_found(format!("Invalid URL ({uri}): no such endpoint."))
}

async fn method_not_allowed(method: axum::http::Method, uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        axum::http::StatusCode::METHOD_NOT_ALLOWED,
        "invalid_request_error",
        format!("Invalid method for URL ({method} {uri})."),
    )
}
