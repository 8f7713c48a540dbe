//! The handlers of the OpenAI surface: extract, call the gateway, shape the reply. Nothing
//! interesting happens here; it happens in `gateway`.

use std::sync::Arc;

use axum::Extension;
use axum::extract::{Path, State};
use axum::http::HeaderValue;
use axum::response::{IntoResponse, Response};

use super::AppState;
use super::error::ApiError;
use super::extract::Json;
use super::sse;
use crate::gateway::{Reply, Served};
use crate::openai::chat::{ChatCompletion, ChatCompletionChunk, ChatCompletionRequest};
use crate::openai::completions::{Completion, CompletionRequest};
use crate::openai::embeddings::{EmbeddingRequest, EmbeddingResponse};
use crate::openai::error::ErrorResponse;
use crate::openai::models::{Model, ModelList};
use crate::telemetry::UpstreamClock;

pub const DEPLOYMENT_HEADER: &str = "x-pasarela-deployment";

fn with_deployment(mut resp: Response, deployment: &str) -> Response {
    if let Ok(v) = HeaderValue::from_str(deployment) {
        resp.headers_mut().insert(DEPLOYMENT_HEADER, v);
    }
    resp
}

/// Creates a chat completion, as JSON or, with `stream: true`, as server-sent events.
#[utoipa::path(post, path = "/v1/chat/completions", tag = "openai",
    request_body = ChatCompletionRequest,
    responses(
        (status = 200, description = "A completion (JSON), or with `stream: true` a `text/event-stream` of chunks ending in `data: [DONE]`", body = ChatCompletion),
        (status = 200, description = "One stream chunk (SSE `data:` payload)", body = ChatCompletionChunk, content_type = "text/event-stream"),
        (status = 400, body = ErrorResponse), (status = 401, body = ErrorResponse),
        (status = 404, body = ErrorResponse), (status = 413, body = ErrorResponse),
        (status = 429, body = ErrorResponse), (status = 502, body = ErrorResponse),
        (status = 504, body = ErrorResponse),
    ))]
pub async fn chat_completions(
    State(state): State<AppState>,
    Extension(clock): Extension<Arc<UpstreamClock>>,
    Json(req): Json<ChatCompletionRequest>,
) -> Result<Response, ApiError> {
    let Served { value, deployment } = state.gateway.chat(req, &clock).await?;
    let resp = match value {
        Reply::Complete(c) => axum::Json(c).into_response(),
        Reply::Stream(s) => sse::respond(s, "/v1/chat/completions"),
    };
    Ok(with_deployment(resp, &deployment))
}

/// Creates a text completion (legacy), as JSON or as server-sent events.
#[utoipa::path(post, path = "/v1/completions", tag = "openai",
    request_body = CompletionRequest,
    responses(
        (status = 200, description = "A completion, or with `stream: true` a `text/event-stream` of completion chunks ending in `data: [DONE]`", body = Completion),
        (status = 400, body = ErrorResponse), (status = 401, body = ErrorResponse),
        (status = 404, body = ErrorResponse), (status = 413, body = ErrorResponse),
        (status = 429, body = ErrorResponse), (status = 502, body = ErrorResponse),
        (status = 504, body = ErrorResponse),
    ))]
pub async fn completions(
    State(state): State<AppState>,
    Extension(clock): Extension<Arc<UpstreamClock>>,
    Json(req): Json<CompletionRequest>,
) -> Result<Response, ApiError> {
    let Served { value, deployment } = state.gateway.completions(req, &clock).await?;
    let resp = match value {
        Reply::Complete(c) => axum::Json(c).into_response(),
        Reply::Stream(s) => sse::respond(s, "/v1/completions"),
    };
    Ok(with_deployment(resp, &deployment))
}

/// Creates embeddings for one or more inputs.
#[utoipa::path(post, path = "/v1/embeddings", tag = "openai",
    request_body = EmbeddingRequest,
    responses(
        (status = 200, body = EmbeddingResponse),
        (status = 400, body = ErrorResponse), (status = 401, body = ErrorResponse),
        (status = 404, body = ErrorResponse), (status = 413, body = ErrorResponse),
        (status = 429, body = ErrorResponse), (status = 502, body = ErrorResponse),
        (status = 504, body = ErrorResponse),
    ))]
pub async fn embeddings(
    State(state): State<AppState>,
    Extension(clock): Extension<Arc<UpstreamClock>>,
    Json(req): Json<EmbeddingRequest>,
) -> Result<Response, ApiError> {
    let Served { value, deployment } = state.gateway.embeddings(req, &clock).await?;
    Ok(with_deployment(
        axum::Json(value).into_response(),
        &deployment,
    ))
}

/// Lists the models clients can ask for.
#[utoipa::path(get, path = "/v1/models", tag = "openai",
    responses((status = 200, body = ModelList), (status = 401, body = ErrorResponse)))]
pub async fn list_models(State(state): State<AppState>) -> axum::Json<ModelList> {
    axum::Json(ModelList {
        object: "list".into(),
        data: state.gateway.models(),
    })
}

/// Describes one model.
#[utoipa::path(get, path = "/v1/models/{id}", tag = "openai",
    params(("id" = String, Path, description = "A model name as `/v1/models` lists it")),
    responses((status = 200, body = Model), (status = 401, body = ErrorResponse),
        (status = 404, body = ErrorResponse)))]
pub async fn get_model(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<axum::Json<Model>, ApiError> {
    state.gateway.model(&id).map(axum::Json).ok_or_else(|| {
        ApiError::not_found(format!("The model '{id}' does not exist"))
            .code("model_not_found")
            .param("model")
    })
}
