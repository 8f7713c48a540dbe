//! What can go wrong between a parsed request and an answer.

use std::time::Duration;

use crate::providers::ProviderError;

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("{message}")]
    InvalidRequest {
        message: String,
        param: Option<String>,
    },
    #[error("The model `{0}` does not exist or you do not have access to it.")]
    ModelNotFound(String),
    #[error("{0}")]
    Unsupported(String),
    /// Every attempt, retry and fallback failed; this is the last failure.
    #[error(transparent)]
    Upstream(#[from] ProviderError),
}

impl GatewayError {
    pub fn invalid(message: impl Into<String>, param: &str) -> Self {
        GatewayError::InvalidRequest {
            message: message.into(),
            param: Some(param.to_owned()),
        }
    }

    /// The HTTP status OpenAI would answer with.
    pub fn status(&self) -> u16 {
        match self {
            GatewayError::InvalidRequest { .. } | GatewayError::Unsupported(_) => 400,
            GatewayError::ModelNotFound(_) => 404,
            GatewayError::Upstream(e) => match e {
                ProviderError::Timeout => 504,
                ProviderError::Connect(_)
                | ProviderError::Protocol(_)
                | ProviderError::StreamBroken(_) => 502,
                ProviderError::Unsupported(_) => 400,
                ProviderError::Internal(_) => 500,
                ProviderError::Status { status, .. } => match status {
                    429 => 429,
                    408 => 504,
                    // The client's request was at fault: let it see the upstream's verdict.
                    400 | 413 | 415 | 422 => *status,
                    // 401/403/404 from an upstream mean the gateway's credentials or model
                    // mapping are wrong, not the client's: that is a bad gateway.
                    _ => 502,
                },
            },
        }
    }

    /// OpenAI's `type` field.
    pub fn kind(&self) -> &'static str {
        match self.status() {
            400 | 404 | 413 | 415 | 422 => "invalid_request_error",
            429 => "rate_limit_error",
            _ => "server_error",
        }
    }

    /// OpenAI's `code` field.
    pub fn code(&self) -> Option<String> {
        match self {
            GatewayError::ModelNotFound(_) => Some("model_not_found".into()),
            GatewayError::InvalidRequest { .. } | GatewayError::Unsupported(_) => None,
            GatewayError::Upstream(e) => match e {
                ProviderError::Timeout => Some("upstream_timeout".into()),
                ProviderError::Internal(_) => Some("internal_error".into()),
                ProviderError::Unsupported(_) => None,
                ProviderError::Status { status: 429, .. } => Some("rate_limit_exceeded".into()),
                ProviderError::Status {
                    body,
                    status: 400 | 413 | 415 | 422,
                    ..
                } => body.code.clone(),
                _ => Some("upstream_error".into()),
            },
        }
    }

    pub fn param(&self) -> Option<String> {
        match self {
            GatewayError::InvalidRequest { param, .. } => param.clone(),
            GatewayError::ModelNotFound(_) => Some("model".into()),
            GatewayError::Upstream(ProviderError::Status { body, .. }) => body.param.clone(),
            _ => None,
        }
    }

    /// The message a client sees. Upstream client errors keep the upstream's own words.
    pub fn client_message(&self) -> String {
        match self {
            GatewayError::Upstream(ProviderError::Status {
                body,
                status: 400 | 413 | 415 | 422 | 429,
                ..
            }) => body.message.clone(),
            other => other.to_string(),
        }
    }

    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            GatewayError::Upstream(e) => e.retry_after(),
            _ => None,
        }
    }
}
