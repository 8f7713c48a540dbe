//! The OpenAPI 3 document of the public API, generated from the handlers and wire types.

use utoipa::OpenApi;

use super::{handlers, health, keys_api, prompts_api};
use crate::openai::{chat, completions, embeddings, error, models};

#[derive(OpenApi)]
#[openapi(
    info(title = "pasarela", description = "An OpenAI-compatible gateway in front of local models and remote providers."),
    paths(
        handlers::chat_completions, handlers::completions, handlers::embeddings,
        handlers::list_models, handlers::get_model,
        health::healthz, health::readyz, health::metrics, spec,
        prompts_api::list, prompts_api::push, prompts_api::detail, prompts_api::version,
        prompts_api::history, prompts_api::move_label, prompts_api::rollback, prompts_api::diff,
        keys_api::create, keys_api::list, keys_api::revoke,
    ),
    components(schemas(
        chat::ChatCompletionRequest, chat::ChatCompletion, chat::ChatCompletionChunk,
        completions::CompletionRequest, completions::Completion,
        embeddings::EmbeddingRequest, embeddings::EmbeddingResponse,
        models::Model, models::ModelList, error::ErrorResponse, health::Health,
        prompts_api::PromptList, prompts_api::PushRequest, prompts_api::PushResponse,
        prompts_api::PromptDetail, prompts_api::VersionContent, prompts_api::LabelHistory,
        prompts_api::MoveLabelRequest, prompts_api::RollbackRequest,
        prompts_api::LabelMoveResult, prompts_api::VersionDiff,
        keys_api::CreateKeyRequest, keys_api::CreatedKeyResponse, keys_api::KeyInfo,
        keys_api::KeyList,
    )),
    modifiers(&BearerAuth),
    tags((name = "openai", description = "OpenAI-compatible endpoints"),
         (name = "prompts", description = "The prompt registry (admin key when keys are configured)"),
         (name = "keys", description = "Virtual keys and their limits (admin key when keys are configured)"),
         (name = "operations", description = "Probes, metrics and this document")),
)]
pub struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        doc.security = Some(vec![utoipa::openapi::security::SecurityRequirement::new(
            "bearer",
            Vec::<String>::new(),
        )]);
    }
}

/// This document.
#[utoipa::path(get, path = "/openapi.json", tag = "operations",
    responses((status = 200, description = "OpenAPI 3 document", content_type = "application/json")))]
pub async fn spec() -> axum::Json<utoipa::openapi::OpenApi> {
    axum::Json(ApiDoc::openapi())
}
