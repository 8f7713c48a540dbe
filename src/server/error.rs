//! `ApiError`: every failure on the OpenAI surface, rendered as OpenAI's error envelope with
//! the status OpenAI would use. Rendering has no side effects; the request middleware logs.

use std::time::Duration;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::gateway::GatewayError;
use crate::openai::error::{ErrorBody, ErrorResponse};

#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    /// Boxed: errors travel in `Result`s on every handler path, and a small `Err` keeps
    /// them cheap to move.
    pub body: Box<ErrorBody>,
    pub retry_after: Option<Duration>,
    /// The full cause, for the log line; never sent to the client beyond `body.message`.
    pub detail: String,
}

/// Put on error responses so that the logging middleware can say why, once.
#[derive(Debug, Clone)]
pub struct ErrorDetail(pub String);

impl ApiError {
    pub fn new(status: StatusCode, kind: &str, message: impl Into<String>) -> Self {
        let message = message.into();
        ApiError {
            status,
            detail: message.clone(),
            body: Box::new(ErrorBody {
                message,
                kind: kind.to_owned(),
                param: None,
                code: None,
            }),
            retry_after: None,
        }
    }

    pub fn code(mut self, code: &str) -> Self {
        self.body.code = Some(code.to_owned());
        self
    }

    pub fn param(mut self, param: impl Into<String>) -> Self {
        self.body.param = Some(param.into());
        self
    }

    pub fn invalid_request(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_request_error", message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::NOT_FOUND, "invalid_request_error", message)
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::UNAUTHORIZED, "invalid_request_error", message)
            .code("invalid_api_key")
    }
}

impl From<GatewayError> for ApiError {
    fn from(e: GatewayError) -> Self {
        let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::BAD_GATEWAY);
        ApiError {
            status,
            body: Box::new(ErrorBody {
                message: e.client_message(),
                kind: e.kind().to_owned(),
                param: e.param(),
                code: e.code(),
            }),
            retry_after: e.retry_after(),
            detail: crate::error_chain(&e),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut resp =
            (self.status, axum::Json(ErrorResponse { error: *self.body })).into_response();
        if let Some(wait) = self.retry_after {
            // Whole seconds, rounded up: a client must not come back early.
            let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
                resp.headers_mut().insert(header::RETRY_AFTER, v);
            }
        }
        resp.extensions_mut().insert(ErrorDetail(self.detail));
        resp
    }
}
