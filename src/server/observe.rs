//! The outermost middleware: times each request, subtracts the time spent waiting on
//! upstreams, and reports the rest as `x-pasarela-overhead-ms` and as metrics. It also writes
//! the one log line for a failed request.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;

use super::error::ErrorDetail;
use crate::telemetry::{UpstreamClock, names};

pub const OVERHEAD_HEADER: &str = "x-pasarela-overhead-ms";

pub async fn observe(mut req: Request, next: Next) -> Response {
    let start = Instant::now();
    let endpoint = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let clock = Arc::new(UpstreamClock::default());
    req.extensions_mut().insert(clock.clone());

    let mut resp = next.run(req).await;

    let total = start.elapsed();
    let overhead = total.saturating_sub(clock.total());
    let ms = overhead.as_secs_f64() * 1000.0;
    if let Ok(v) = HeaderValue::from_str(&format!("{ms:.3}")) {
        resp.headers_mut().insert(OVERHEAD_HEADER, v);
    }
    let status = resp.status();
    metrics::histogram!(names::OVERHEAD, "endpoint" => endpoint.clone())
        .record(overhead.as_secs_f64());
    metrics::histogram!(names::REQUEST_DURATION, "endpoint" => endpoint.clone())
        .record(total.as_secs_f64());
    metrics::counter!(names::REQUESTS, "endpoint" => endpoint.clone(),
        "status" => status.as_u16().to_string())
    .increment(1);
    if let Some(ErrorDetail(detail)) = resp.extensions().get::<ErrorDetail>() {
        if status.is_server_error() {
            tracing::warn!(%endpoint, status = status.as_u16(), error = %detail, "request failed");
        } else {
            tracing::debug!(%endpoint, status = status.as_u16(), error = %detail, "request rejected");
        }
    }
    resp
}
