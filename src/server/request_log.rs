//! The request log's two hooks on the `/v1` routes. Outside authentication, [`record`] has
//! every request's record offered to the log when its response ends, refusals included.
//! Inside it, where the key is known, [`capture`] draws whether this request's bodies are
//! kept and, only then, copies the request body into its exchange (the gateway keeps the
//! response).

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{FromRequest, Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::AppState;
use crate::telemetry::{Capture, Exchange};

pub async fn record(State(state): State<AppState>, req: Request, next: Next) -> Response {
    if let (Some(log), Some(exchange)) =
        (&state.request_log, req.extensions().get::<Arc<Exchange>>())
    {
        log.observe(exchange);
    }
    next.run(req).await
}

pub async fn capture(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let Some(log) = &state.request_log else {
        return next.run(req).await;
    };
    let Some(exchange) = req.extensions().get::<Arc<Exchange>>().cloned() else {
        return next.run(req).await;
    };
    if req.method() != Method::POST {
        return next.run(req).await;
    }
    let mut sampled = false;
    exchange.update(|r| {
        sampled = log.samples_bodies(&r.endpoint, r.key.as_ref().map(|k| k.name.as_str()));
    });
    if !sampled {
        return next.run(req).await;
    }
    let (parts, body) = req.into_parts();
    // The body limit travels in the extensions; the probe carries them so that it applies.
    let mut probe = Request::new(body);
    *probe.extensions_mut() = parts.extensions.clone();
    let bytes = match Bytes::from_request(probe, &()).await {
        Ok(bytes) => bytes,
        Err(rejection) => return super::extract::body_error(rejection).into_response(),
    };
    exchange.update(|r| {
        r.capture = Some(Box::new(Capture {
            request: Some(bytes.clone()),
            ..Capture::default()
        }));
    });
    next.run(Request::from_parts(parts, Body::from(bytes)))
        .await
}
