//! A virtual key's limits on a `/v1` request, in this order: request rate (429 with
//! `Retry-After`), concurrent requests (429), allowed models (403). The rate is counted first
//! so that every response to a rate-limited key, refusals included, carries OpenAI's
//! `x-ratelimit-{limit,remaining,reset}-requests` headers.
//!
//! Allowed models are checked here, on the body's `model`, rather than in each handler: one
//! place covers chat, completions and embeddings. A model-restricted key must name its model
//! in the body; one left for a registry prompt to fill in is refused, since the prompt's
//! model is only known later. The model list endpoints are not filtered yet.
//!
//! A concurrency slot is held until the response body ends: for a stream, its last chunk
//! (or the client going away).

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::{Body, Bytes};
use axum::extract::{FromRequest, Request};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use tokio::sync::OwnedSemaphorePermit;

use super::error::ApiError;
use crate::limits::{KeyPolicy, RateStatus, reset_text};

pub const LIMIT_REQUESTS: &str = "x-ratelimit-limit-requests";
pub const REMAINING_REQUESTS: &str = "x-ratelimit-remaining-requests";
pub const RESET_REQUESTS: &str = "x-ratelimit-reset-requests";

pub async fn enforce(policy: Arc<KeyPolicy>, req: Request, next: Next) -> Response {
    let rate = match policy.check_rate() {
        None => None,
        Some(Ok(status)) => Some(status),
        Some(Err(denied)) => {
            let mut err = ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "requests",
                format!(
                    "Rate limit reached for requests on key `{}`: limit {} per minute. Please \
                     try again in {}.",
                    policy.name,
                    denied.status.limit,
                    reset_text(denied.retry_after)
                ),
            )
            .code("rate_limit_exceeded");
            err.retry_after = Some(denied.retry_after);
            return with_rate_headers(err.into_response(), Some(denied.status));
        }
    };
    let permit = match policy.try_start() {
        Ok(permit) => permit,
        Err(_taken) => {
            let err = ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "requests",
                format!(
                    "Too many concurrent requests on key `{}`: at most {} at a time.",
                    policy.name,
                    policy.max_concurrent.unwrap_or_default()
                ),
            )
            .code("concurrency_limit_exceeded");
            return with_rate_headers(err.into_response(), rate);
        }
    };
    let req = if policy.allowed_models.is_empty() || req.method() != Method::POST {
        req
    } else {
        match check_model(&policy, req).await {
            Ok(req) => req,
            Err(err) => return with_rate_headers(err.into_response(), rate),
        }
    };
    let resp = next.run(req).await;
    let resp = match permit {
        Some(permit) => resp.map(|body| {
            Body::new(HoldsPermit {
                body,
                _permit: permit,
            })
        }),
        None => resp,
    };
    with_rate_headers(resp, rate)
}

#[derive(Deserialize)]
struct ModelField {
    model: Option<String>,
}

/// Reads the body (within the gateway's body limit), refuses a model the key may not use,
/// and puts the body back for the handler.
async fn check_model(policy: &KeyPolicy, req: Request) -> Result<Request, ApiError> {
    let (parts, body) = req.into_parts();
    // The body limit travels in the extensions; the probe carries them so that it applies.
    let mut probe = Request::new(body);
    *probe.extensions_mut() = parts.extensions.clone();
    let bytes = Bytes::from_request(probe, &())
        .await
        .map_err(super::extract::body_error)?;
    // An unreadable body is the handler's to reject, with its own message.
    let model = serde_json::from_slice::<ModelField>(&bytes)
        .ok()
        .and_then(|f| f.model);
    let allowed = policy.allowed_models.join(", ");
    match model {
        Some(model) if policy.allows_model(&model) => {
            Ok(Request::from_parts(parts, Body::from(bytes)))
        }
        Some(model) => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "invalid_request_error",
            format!(
                "Key `{}` may not use model `{model}`; it may use: {allowed}.",
                policy.name
            ),
        )
        .param("model")
        .code("model_not_allowed")),
        None => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "invalid_request_error",
            format!(
                "Key `{}` may use only some models ({allowed}): name one in 'model'.",
                policy.name
            ),
        )
        .param("model")
        .code("model_not_allowed")),
    }
}

fn with_rate_headers(mut resp: Response, rate: Option<RateStatus>) -> Response {
    if let Some(rate) = rate {
        set_rate_headers(resp.headers_mut(), rate);
    }
    resp
}

fn set_rate_headers(headers: &mut HeaderMap, rate: RateStatus) {
    headers.insert(LIMIT_REQUESTS, HeaderValue::from(rate.limit));
    headers.insert(REMAINING_REQUESTS, HeaderValue::from(rate.remaining));
    if let Ok(v) = HeaderValue::from_str(&reset_text(rate.reset)) {
        headers.insert(RESET_REQUESTS, v);
    }
}

/// A response body that holds a concurrency slot until it is finished or dropped.
struct HoldsPermit {
    body: Body,
    _permit: OwnedSemaphorePermit,
}

impl http_body::Body for HoldsPermit {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}
