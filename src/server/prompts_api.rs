//! The prompt registry's admin API under `/api/prompts`: push versions, read them, move and
//! roll back labels, label history and diffs. Errors use the same envelope as `/v1`.
//!
//! Must not contain registry logic: handlers parse, call `prompts::Registry`, and shape JSON.

use std::collections::BTreeMap;
use std::path::Path;

use axum::extract::{Path as UrlPath, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::AppState;
use super::error::ApiError;
use super::extract::Json;
use crate::prompts::{DiffLine, Label, PromptFile, PromptName, PromptRef, RegistryError, Selector};
use crate::store::{LabelMove, MoveCause, MoveOutcome, PushOutcome, StoreError, VersionMeta};

/// Who the registry records for API writes when the request names nobody.
const DEFAULT_ACTOR: &str = "api";

impl From<RegistryError> for ApiError {
    fn from(e: RegistryError) -> Self {
        match &e {
            RegistryError::NotFound(_) => ApiError::not_found(e.to_string()),
            RegistryError::Protected { .. } => {
                ApiError::new(StatusCode::CONFLICT, "invalid_request_error", e.to_string())
                    .code("label_protected")
            }
            RegistryError::Invalid(_) => ApiError::invalid_request(e.to_string()),
            RegistryError::Store(StoreError::Conflict(_)) => {
                ApiError::new(StatusCode::CONFLICT, "invalid_request_error", e.to_string())
            }
            RegistryError::Unreadable { .. } | RegistryError::Store(_) => {
                tracing::error!(error = %crate::error_chain(&e), "prompt registry failure");
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "server_error",
                    e.to_string(),
                )
            }
        }
    }
}

fn name(text: &str) -> Result<PromptName, ApiError> {
    PromptName::parse(text).map_err(|e| ApiError::invalid_request(e.to_string()).param("name"))
}

fn label(text: &str) -> Result<Label, ApiError> {
    Label::parse(text).map_err(|e| ApiError::invalid_request(e.to_string()).param("label"))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct VersionInfo {
    pub version: i64,
    pub content_hash: String,
    pub author: String,
    pub message: Option<String>,
    pub created_at: DateTime<Utc>,
}

impl From<&VersionMeta> for VersionInfo {
    fn from(m: &VersionMeta) -> Self {
        VersionInfo {
            version: m.version,
            content_hash: m.content_hash.clone(),
            author: m.author.clone(),
            message: m.message.clone(),
            created_at: m.created_at,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PromptListEntry {
    pub name: String,
    pub latest_version: i64,
    /// Label → version.
    pub labels: BTreeMap<String, i64>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PromptList {
    pub data: Vec<PromptListEntry>,
}

/// Lists the prompts in the registry.
#[utoipa::path(get, path = "/api/prompts", tag = "prompts",
    responses((status = 200, body = PromptList), (status = 401, body = crate::openai::error::ErrorResponse)))]
pub async fn list(State(state): State<AppState>) -> Result<axum::Json<PromptList>, ApiError> {
    let data = state
        .registry
        .list()
        .await?
        .into_iter()
        .map(|p| PromptListEntry {
            name: p.name,
            latest_version: p.latest_version,
            labels: p.labels,
            updated_at: p.updated_at,
        })
        .collect();
    Ok(axum::Json(PromptList { data }))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PushRequest {
    /// The prompt as its file would hold it (the YAML form's keys, as JSON): `name`,
    /// `messages`, `variables`, `model`, `params`, `response_format`, `description`.
    #[schema(value_type = Object)]
    pub prompt: serde_json::Value,
    pub message: Option<String>,
    pub author: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PushResponse {
    pub name: String,
    /// False when the content equals the latest version's: nothing was written.
    pub created: bool,
    #[serde(flatten)]
    pub version: VersionInfo,
}

/// Pushes a prompt's content as a new version (201), or reports the latest version when the
/// content is unchanged (200).
#[utoipa::path(post, path = "/api/prompts", tag = "prompts", request_body = PushRequest,
    responses((status = 201, body = PushResponse), (status = 200, body = PushResponse),
              (status = 400, body = crate::openai::error::ErrorResponse)))]
pub async fn push(
    State(state): State<AppState>,
    Json(req): Json<PushRequest>,
) -> Result<Response, ApiError> {
    // JSON is YAML, so the body goes through the same strict reader as prompt files.
    let text = serde_json::to_string(&req.prompt)
        .map_err(|e| ApiError::invalid_request(format!("unreadable prompt: {e}")))?;
    let file = PromptFile::parse(Path::new("request-body.yaml"), &text)
        .map_err(|e| ApiError::invalid_request(crate::error_chain(&e)).param("prompt"))?;
    let author = req.author.as_deref().unwrap_or(DEFAULT_ACTOR);
    let outcome = state
        .registry
        .push(&file, author, req.message.as_deref())
        .await?;
    let (status, created) = match &outcome {
        PushOutcome::Created(_) => (StatusCode::CREATED, true),
        PushOutcome::Unchanged(_) => (StatusCode::OK, false),
    };
    let body = PushResponse {
        name: file.name.as_str().to_owned(),
        created,
        version: VersionInfo::from(outcome.meta()),
    };
    Ok((status, axum::Json(body)).into_response())
}

#[derive(Debug, Serialize, ToSchema)]
pub struct VersionEntry {
    #[serde(flatten)]
    pub version: VersionInfo,
    pub labels: Vec<String>,
    /// Requests this gateway process served with this version.
    pub served: u64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PromptDetail {
    pub name: String,
    /// Label → version.
    pub labels: BTreeMap<String, i64>,
    pub latest_version: i64,
    /// Oldest first.
    pub versions: Vec<VersionEntry>,
}

/// A prompt's versions and labels.
#[utoipa::path(get, path = "/api/prompts/{name}", tag = "prompts",
    params(("name" = String, Path)),
    responses((status = 200, body = PromptDetail), (status = 404, body = crate::openai::error::ErrorResponse)))]
pub async fn detail(
    State(state): State<AppState>,
    UrlPath(prompt): UrlPath<String>,
) -> Result<axum::Json<PromptDetail>, ApiError> {
    let prompt = name(&prompt)?;
    let versions = state.registry.versions(&prompt).await?;
    let served = state.registry.served(prompt.as_str());
    let mut labels = BTreeMap::new();
    for v in &versions {
        for l in &v.labels {
            labels.insert(l.clone(), v.meta.version);
        }
    }
    let latest_version = versions.last().map_or(0, |v| v.meta.version);
    let versions = versions
        .iter()
        .map(|v| VersionEntry {
            version: VersionInfo::from(&v.meta),
            labels: v.labels.clone(),
            served: served.get(&v.meta.version).copied().unwrap_or(0),
        })
        .collect();
    Ok(axum::Json(PromptDetail {
        name: prompt.as_str().to_owned(),
        labels,
        latest_version,
        versions,
    }))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct VersionContent {
    pub name: String,
    pub version: i64,
    /// The checked content, as stored.
    #[schema(value_type = Object)]
    pub content: serde_json::Value,
    /// The same content as a prompt file would hold it.
    pub yaml: String,
}

/// One version's content, by number or by label (`/api/prompts/NAME/versions/3` or
/// `/api/prompts/NAME/versions/production`).
#[utoipa::path(get, path = "/api/prompts/{name}/versions/{selector}", tag = "prompts",
    params(("name" = String, Path), ("selector" = String, Path, description = "a version number or a label")),
    responses((status = 200, body = VersionContent), (status = 404, body = crate::openai::error::ErrorResponse)))]
pub async fn version(
    State(state): State<AppState>,
    UrlPath((prompt, selector)): UrlPath<(String, String)>,
) -> Result<axum::Json<VersionContent>, ApiError> {
    let reference = match selector.parse::<u32>() {
        Ok(_) => PromptRef::parse(&format!("{prompt}#{selector}")),
        Err(_) => PromptRef::parse(&format!("{prompt}@{selector}")),
    }
    .map_err(|e| ApiError::invalid_request(e.to_string()))?;
    let resolved = state.registry.resolve(&reference).await?;
    let yaml = state
        .registry
        .version_yaml(&resolved.name, resolved.version)
        .await?;
    let content = serde_json::from_str(&resolved.content.to_stored()).map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            e.to_string(),
        )
    })?;
    Ok(axum::Json(VersionContent {
        name: resolved.name.as_str().to_owned(),
        version: resolved.version,
        content,
        yaml,
    }))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct LabelMoveEntry {
    pub label: String,
    pub from: Option<i64>,
    pub to: i64,
    pub actor: String,
    /// `push` (`latest` following a push) or `move`.
    pub cause: &'static str,
    pub moved_at: DateTime<Utc>,
}

impl From<&LabelMove> for LabelMoveEntry {
    fn from(m: &LabelMove) -> Self {
        LabelMoveEntry {
            label: m.label.clone(),
            from: m.from,
            to: m.to,
            actor: m.actor.clone(),
            cause: match m.cause {
                MoveCause::Push => "push",
                MoveCause::Move => "move",
            },
            moved_at: m.moved_at,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct LabelHistory {
    /// Oldest first.
    pub data: Vec<LabelMoveEntry>,
}

/// Every label move of a prompt, oldest first.
#[utoipa::path(get, path = "/api/prompts/{name}/history", tag = "prompts",
    params(("name" = String, Path)),
    responses((status = 200, body = LabelHistory), (status = 404, body = crate::openai::error::ErrorResponse)))]
pub async fn history(
    State(state): State<AppState>,
    UrlPath(prompt): UrlPath<String>,
) -> Result<axum::Json<LabelHistory>, ApiError> {
    let prompt = name(&prompt)?;
    let moves = state.registry.history(&prompt).await?;
    Ok(axum::Json(LabelHistory {
        data: moves.iter().map(LabelMoveEntry::from).collect(),
    }))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MoveLabelRequest {
    pub version: i64,
    /// Required to move a protected label (`prompts.protected_labels`).
    #[serde(default)]
    pub force: bool,
    pub actor: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct RollbackRequest {
    #[serde(default)]
    pub force: bool,
    pub actor: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct LabelMoveResult {
    pub label: String,
    /// Where the label pointed before; equal to `to` when nothing moved.
    pub from: Option<i64>,
    pub to: i64,
    pub moved: bool,
}

impl From<MoveOutcome> for LabelMoveResult {
    fn from(outcome: MoveOutcome) -> Self {
        match outcome {
            MoveOutcome::Moved(m) => LabelMoveResult {
                label: m.label,
                from: m.from,
                to: m.to,
                moved: true,
            },
            MoveOutcome::Unchanged { label, version } => LabelMoveResult {
                label,
                from: Some(version),
                to: version,
                moved: false,
            },
        }
    }
}

/// Points a label at a version. Protected labels need `"force": true`.
#[utoipa::path(put, path = "/api/prompts/{name}/labels/{label}", tag = "prompts",
    params(("name" = String, Path), ("label" = String, Path)), request_body = MoveLabelRequest,
    responses((status = 200, body = LabelMoveResult), (status = 404, body = crate::openai::error::ErrorResponse),
              (status = 409, description = "the label is protected", body = crate::openai::error::ErrorResponse)))]
pub async fn move_label(
    State(state): State<AppState>,
    UrlPath((prompt, target)): UrlPath<(String, String)>,
    Json(req): Json<MoveLabelRequest>,
) -> Result<axum::Json<LabelMoveResult>, ApiError> {
    let (prompt, target) = (name(&prompt)?, label(&target)?);
    let actor = req.actor.as_deref().unwrap_or(DEFAULT_ACTOR);
    let outcome = state
        .registry
        .move_label(&prompt, &target, req.version, actor, req.force)
        .await?;
    Ok(axum::Json(outcome.into()))
}

/// Moves a label back to the version it pointed at before its last move.
#[utoipa::path(post, path = "/api/prompts/{name}/labels/{label}/rollback", tag = "prompts",
    params(("name" = String, Path), ("label" = String, Path)), request_body = RollbackRequest,
    responses((status = 200, body = LabelMoveResult), (status = 404, body = crate::openai::error::ErrorResponse),
              (status = 409, body = crate::openai::error::ErrorResponse)))]
pub async fn rollback(
    State(state): State<AppState>,
    UrlPath((prompt, target)): UrlPath<(String, String)>,
    body: axum::body::Bytes,
) -> Result<axum::Json<LabelMoveResult>, ApiError> {
    let (prompt, target) = (name(&prompt)?, label(&target)?);
    // The body is optional: an empty one means no force and the default actor.
    let req: RollbackRequest = match body.is_empty() {
        true => RollbackRequest::default(),
        false => serde_json::from_slice(&body)
            .map_err(|e| ApiError::invalid_request(format!("Invalid request body: {e}")))?,
    };
    let actor = req.actor.as_deref().unwrap_or(DEFAULT_ACTOR);
    let outcome = state
        .registry
        .rollback(&prompt, &target, actor, req.force)
        .await?;
    Ok(axum::Json(outcome.into()))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct DiffQuery {
    /// A version number or a label.
    pub from: String,
    /// A version number or a label.
    pub to: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct VersionDiff {
    pub from: i64,
    pub to: i64,
    pub lines: Vec<DiffLine>,
}

/// The line diff between two versions' YAML forms (template and parameters).
#[utoipa::path(get, path = "/api/prompts/{name}/diff", tag = "prompts",
    params(("name" = String, Path), DiffQuery),
    responses((status = 200, body = VersionDiff), (status = 404, body = crate::openai::error::ErrorResponse)))]
pub async fn diff(
    State(state): State<AppState>,
    UrlPath(prompt): UrlPath<String>,
    Query(q): Query<DiffQuery>,
) -> Result<axum::Json<VersionDiff>, ApiError> {
    let prompt = name(&prompt)?;
    let from = version_of(&state, &prompt, &q.from).await?;
    let to = version_of(&state, &prompt, &q.to).await?;
    let lines = state.registry.diff(&prompt, from, to).await?;
    Ok(axum::Json(VersionDiff { from, to, lines }))
}

/// A version number, or the version a label points at.
async fn version_of(state: &AppState, prompt: &PromptName, text: &str) -> Result<i64, ApiError> {
    if let Ok(n) = text.parse::<i64>() {
        return Ok(n);
    }
    let reference = PromptRef {
        name: prompt.clone(),
        selector: Selector::Label(label(text)?),
    };
    Ok(state.registry.resolve(&reference).await?.version)
}
