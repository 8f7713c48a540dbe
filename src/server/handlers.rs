//! The handlers of the OpenAI surface: extract, call the gateway, shape the reply. Nothing
//! interesting happens here; it happens in `gateway`.

use std::sync::Arc;

use axum::Extension;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value};
use tracing::Instrument;

use super::AppState;
use super::error::ApiError;
use super::extract::{Json, from_value};
use super::sse;
use crate::gateway::prompt::{self, PromptError};
use crate::gateway::{Reply, Served};
use crate::limits::KeyPolicy;
use crate::openai::chat::{ChatCompletion, ChatCompletionChunk, ChatCompletionRequest};
use crate::openai::completions::{Completion, CompletionRequest};
use crate::openai::embeddings::{EmbeddingRequest, EmbeddingResponse};
use crate::openai::error::ErrorResponse;
use crate::openai::models::{Model, ModelList};
use crate::telemetry::Exchange;

pub const DEPLOYMENT_HEADER: &str = "x-pasarela-deployment";
/// The registry prompt a chat request used, and its version.
pub const PROMPT_NAME_HEADER: &str = "x-pasarela-prompt-name";
pub const PROMPT_VERSION_HEADER: &str = "x-pasarela-prompt-version";

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
    Extension(exchange): Extension<Arc<Exchange>>,
    headers: HeaderMap,
    Json(mut body): Json<Map<String, Value>>,
) -> Result<Response, ApiError> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let applied = prompt::apply(
        &state.registry,
        &mut body,
        header(prompt::PROMPT_HEADER),
        header(prompt::VARIABLES_HEADER),
    )
    .await?;
    // The request log keeps the request as the model saw it, the prompt rendered into it.
    if applied.is_some() && exchange.captures_bodies() {
        let rendered = serde_json::to_vec(&body).ok().map(Bytes::from);
        exchange.capture(|c| c.request = rendered);
    }
    let req: ChatCompletionRequest = from_value(Value::Object(body))?;
    if let Some(p) = &applied {
        exchange.update(|r| r.prompt = Some((p.name.clone(), p.version)));
    }
    let span = match &applied {
        Some(p) => tracing::info_span!("chat", prompt.name = %p.name, prompt.version = p.version),
        None => tracing::Span::none(),
    };
    let Served { value, deployment } = state.gateway.chat(req, &exchange).instrument(span).await?;
    let resp = match value {
        Reply::Complete(c) => axum::Json(c).into_response(),
        Reply::Stream(s) => sse::respond(s, "/v1/chat/completions"),
    };
    let mut resp = with_deployment(resp, &deployment);
    if let Some(p) = applied {
        let h = resp.headers_mut();
        if let Ok(v) = HeaderValue::from_str(&p.name) {
            h.insert(PROMPT_NAME_HEADER, v);
        }
        h.insert(PROMPT_VERSION_HEADER, HeaderValue::from(p.version));
    }
    Ok(resp)
}

impl From<PromptError> for ApiError {
    fn from(e: PromptError) -> Self {
        match e {
            PromptError::Invalid { message, param } => {
                ApiError::invalid_request(message).param(param)
            }
            PromptError::NotFound(message) => ApiError::not_found(message).code("prompt_not_found"),
            PromptError::Broken(message) => ApiError::new(
                axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                "server_error",
                message,
            ),
            PromptError::Registry(e) => e.into(),
        }
    }
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
    Extension(exchange): Extension<Arc<Exchange>>,
    Json(req): Json<CompletionRequest>,
) -> Result<Response, ApiError> {
    let Served { value, deployment } = state.gateway.completions(req, &exchange).await?;
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
    Extension(exchange): Extension<Arc<Exchange>>,
    Json(req): Json<EmbeddingRequest>,
) -> Result<Response, ApiError> {
    let Served { value, deployment } = state.gateway.embeddings(req, &exchange).await?;
    Ok(with_deployment(
        axum::Json(value).into_response(),
        &deployment,
    ))
}

/// Lists the models clients can ask for.
#[utoipa::path(get, path = "/v1/models", tag = "openai",
    responses((status = 200, body = ModelList), (status = 401, body = ErrorResponse)))]
pub async fn list_models(
    State(state): State<AppState>,
    key: Option<Extension<Arc<KeyPolicy>>>,
) -> axum::Json<ModelList> {
    let mut data = state.gateway.models();
    if let Some(Extension(key)) = key {
        data.retain(|m| key.allows_model(&m.id));
    }
    axum::Json(ModelList {
        object: "list".into(),
        data,
    })
}

/// Describes one model.
#[utoipa::path(get, path = "/v1/models/{id}", tag = "openai",
    params(("id" = String, Path, description = "A model name as `/v1/models` lists it")),
    responses((status = 200, body = Model), (status = 401, body = ErrorResponse),
        (status = 404, body = ErrorResponse)))]
pub async fn get_model(
    State(state): State<AppState>,
    key: Option<Extension<Arc<KeyPolicy>>>,
    Path(id): Path<String>,
) -> Result<axum::Json<Model>, ApiError> {
    // A model a key may not use does not exist for it, as in OpenAI's project-scoped lists.
    let visible = key.is_none_or(|Extension(k)| k.allows_model(&id));
    let model = state.gateway.model(&id).filter(|_| visible);
    model.map(axum::Json).ok_or_else(|| {
        ApiError::not_found(format!("The model '{id}' does not exist"))
            .code("model_not_found")
            .param("model")
    })
}
