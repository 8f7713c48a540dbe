//! Extractors whose rejections are OpenAI errors rather than axum's plain-text ones.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use serde::de::DeserializeOwned;

use super::error::ApiError;

/// A JSON body. Malformed JSON and wrong types give 400 naming the offending field (`param`);
/// a body over the configured limit gives 413. The content type is not insisted on: curl's
/// `-d` sends form encoding by default and the intent is plain.
pub struct Json<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Json<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = Bytes::from_request(req, state).await.map_err(body_error)?;
        let mut de = serde_json::Deserializer::from_slice(&bytes);
        let value = serde_path_to_error::deserialize(&mut de).map_err(path_error)?;
        de.end().map_err(|e| {
            ApiError::invalid_request(format!(
                "We could not parse the JSON body of your request: {e}"
            ))
        })?;
        Ok(Json(value))
    }
}

pub(super) fn body_error(rejection: BytesRejection) -> ApiError {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "invalid_request_error",
            "The request body is larger than this gateway accepts (server.max_body_bytes).",
        )
        .code("request_too_large")
    } else {
        ApiError::invalid_request(format!("Could not read the request body: {rejection}"))
    }
}

/// Types an already parsed body, naming the field at fault like the extractor does.
pub fn from_value<T: DeserializeOwned>(value: serde_json::Value) -> Result<T, ApiError> {
    serde_path_to_error::deserialize(value).map_err(path_error)
}

fn path_error(e: serde_path_to_error::Error<serde_json::Error>) -> ApiError {
    let path = e.path().to_string();
    let inner = e.into_inner();
    let mut err = ApiError::invalid_request(if inner.is_syntax() || inner.is_eof() {
        format!("We could not parse the JSON body of your request: {inner}")
    } else if path == "." {
        format!("Invalid request body: {inner}")
    } else {
        format!("Invalid value for '{path}': {inner}")
    });
    if path != "." {
        err = err.param(path);
    }
    err
}
