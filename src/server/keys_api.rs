//! The virtual keys' admin API under `/api/keys`: make a key (its secret is in that answer
//! and nowhere else, ever), list keys (prefix only, never the key or its hash), revoke one.
//!
//! Must not contain key logic: handlers parse, call `limits::VirtualKeys`, and shape JSON.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::AppState;
use super::error::ApiError;
use super::extract::Json;
use crate::limits::{KeySpec, KeysError, SpendBook, micro_usd, period_start};
use crate::store::{Budget, BudgetPeriod, VirtualKey};

impl From<KeysError> for ApiError {
    fn from(e: KeysError) -> Self {
        match &e {
            KeysError::Invalid(_) => ApiError::invalid_request(e.to_string()),
            KeysError::NotFound(_) => ApiError::not_found(e.to_string()),
            KeysError::Conflict(_) => {
                ApiError::new(StatusCode::CONFLICT, "invalid_request_error", e.to_string())
            }
            KeysError::Store(_) => {
                tracing::error!(error = %crate::error_chain(&e), "virtual keys failure");
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "server_error",
                    e.to_string(),
                )
            }
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateKeyRequest {
    /// 1 to 64 letters, digits, `-`, `_` or `.`; unique among active keys.
    pub name: String,
    /// The models the key may use; absent or empty: every model.
    #[serde(default)]
    pub models: Vec<String>,
    /// Requests per minute.
    pub rpm: Option<u32>,
    /// Tokens per minute: an estimate is reserved before each call and settled on its usage.
    pub tpm: Option<u32>,
    pub max_concurrent: Option<u32>,
    /// US dollars per `budget_period`; requests are refused (429 `insufficient_quota`) once it
    /// is spent, priced by `[prices]`.
    pub budget: Option<f64>,
    /// `day`, `week` or `month`; required with `budget`.
    pub budget_period: Option<String>,
    /// Record the prompt and completion text of this key's requests on their trace spans
    /// (when OTLP export is on), whatever `telemetry.otlp.record_content` says.
    #[serde(default)]
    pub record_content: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct KeyInfo {
    pub name: String,
    /// The key's first characters, to tell keys apart.
    pub prefix: String,
    /// Empty: every model.
    pub models: Vec<String>,
    pub rpm: Option<u32>,
    pub tpm: Option<u32>,
    pub max_concurrent: Option<u32>,
    pub budget: Option<f64>,
    pub budget_period: Option<String>,
    /// US dollars spent in the current period (the budget's, else the calendar month, UTC),
    /// by every replica: other replicas' spend arrives within about a second.
    pub spent: f64,
    /// When the current period began.
    pub period_start: DateTime<Utc>,
    /// Prompt and completion text of this key's requests are recorded on trace spans.
    pub record_content: bool,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
}

impl KeyInfo {
    fn of(k: &VirtualKey, spend: &SpendBook) -> KeyInfo {
        let period = k.budget.map_or(BudgetPeriod::Month, |b| b.period);
        #[expect(
            clippy::cast_precision_loss,
            reason = "spend is far below 2^53 millionths"
        )]
        let spent = spend.spent(k.id, period) as f64 / 1e6;
        KeyInfo {
            spent,
            period_start: period_start(period, Utc::now()),
            ..KeyInfo::from(k)
        }
    }
}

impl From<&VirtualKey> for KeyInfo {
    fn from(k: &VirtualKey) -> Self {
        KeyInfo {
            name: k.name.clone(),
            prefix: k.key_prefix.clone(),
            models: k.allowed_models.clone(),
            rpm: k.rpm,
            tpm: k.tpm,
            max_concurrent: k.max_concurrent,
            #[expect(
                clippy::cast_precision_loss,
                reason = "budgets are far below 2^53 millionths"
            )]
            budget: k.budget.map(|b| b.micro_usd as f64 / 1e6),
            budget_period: k.budget.map(|b| b.period.as_str().to_owned()),
            spent: 0.0,
            period_start: period_start(
                k.budget.map_or(BudgetPeriod::Month, |b| b.period),
                Utc::now(),
            ),
            record_content: k.record_content,
            created_at: k.created_at,
            revoked_at: k.revoked_at,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedKeyResponse {
    /// The key in clear: shown this once, stored only as a hash.
    pub key: String,
    #[serde(flatten)]
    pub info: KeyInfo,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct KeyList {
    pub data: Vec<KeyInfo>,
}

/// Makes a virtual key. The answer holds the key itself, which is never shown again.
#[utoipa::path(post, path = "/api/keys", tag = "keys", request_body = CreateKeyRequest,
    responses((status = 201, body = CreatedKeyResponse),
              (status = 400, body = crate::openai::error::ErrorResponse),
              (status = 409, body = crate::openai::error::ErrorResponse)))]
pub async fn create(
    State(state): State<AppState>,
    Json(req): Json<CreateKeyRequest>,
) -> Result<Response, ApiError> {
    let budget = match (req.budget, req.budget_period.as_deref()) {
        (None, None) => None,
        (Some(usd), Some(period)) => Some(Budget {
            micro_usd: micro_usd(usd)?,
            period: BudgetPeriod::parse(period).ok_or_else(|| {
                ApiError::invalid_request(format!(
                    "budget_period `{period}`: use day, week or month"
                ))
                .param("budget_period")
            })?,
        }),
        _ => {
            return Err(
                ApiError::invalid_request("give budget and budget_period together").param("budget"),
            );
        }
    };
    let created = state
        .virtual_keys
        .create(KeySpec {
            name: req.name,
            models: req.models,
            rpm: req.rpm,
            tpm: req.tpm,
            max_concurrent: req.max_concurrent,
            budget,
            record_content: req.record_content,
        })
        .await?;
    let body = CreatedKeyResponse {
        key: created.key.expose_secret().to_owned(),
        info: KeyInfo::from(&created.record),
    };
    Ok((StatusCode::CREATED, axum::Json(body)).into_response())
}

/// Lists the virtual keys, revoked ones included, without their secrets.
#[utoipa::path(get, path = "/api/keys", tag = "keys",
    responses((status = 200, body = KeyList), (status = 401, body = crate::openai::error::ErrorResponse)))]
pub async fn list(State(state): State<AppState>) -> Result<axum::Json<KeyList>, ApiError> {
    let data = state
        .virtual_keys
        .list()
        .await?
        .iter()
        .map(|k| KeyInfo::of(k, state.virtual_keys.spend()))
        .collect();
    Ok(axum::Json(KeyList { data }))
}

/// Revokes the active key of this name; it is refused from then on, on every replica within
/// a few seconds and on this one at once.
#[utoipa::path(delete, path = "/api/keys/{name}", tag = "keys",
    params(("name" = String, Path)),
    responses((status = 200, body = KeyInfo), (status = 404, body = crate::openai::error::ErrorResponse)))]
pub async fn revoke(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<axum::Json<KeyInfo>, ApiError> {
    let revoked = state.virtual_keys.revoke(&name).await?;
    Ok(axum::Json(KeyInfo::of(
        &revoked,
        state.virtual_keys.spend(),
    )))
}
