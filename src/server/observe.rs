//! The outermost middleware: opens the request's [`Exchange`], times the request, subtracts
//! the time spent waiting on upstreams, and reports the rest as `x-pasarela-overhead-ms` and
//! as metrics. It also writes the one log line for a failed request, and finishes the exchange
//! when the response body is over (sent to the end, or dropped when the client goes away), so
//! that its hooks see a stream's final usage.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::{Body, Bytes};
use axum::extract::{MatchedPath, Request, State};
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;
use http_body::Body as _;

use super::error::ErrorDetail;
use crate::telemetry::{Ending, Exchange, Tracing, names};

pub const OVERHEAD_HEADER: &str = "x-pasarela-overhead-ms";

pub async fn observe(State(tracing): State<Tracing>, mut req: Request, next: Next) -> Response {
    let endpoint = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let trace = tracing.begin_request(req.method().as_str(), &endpoint, req.headers());
    let exchange = Exchange::traced(endpoint.clone(), trace);
    req.extensions_mut().insert(exchange.clone());

    let mut resp = next.run(req).await;

    let total = exchange.started().elapsed();
    let overhead = total.saturating_sub(exchange.clock().total());
    let ms = overhead.as_secs_f64() * 1000.0;
    if let Ok(v) = HeaderValue::from_str(&format!("{ms:.3}")) {
        resp.headers_mut().insert(OVERHEAD_HEADER, v);
    }
    let status = resp.status();
    exchange.update(|r| r.status = status.as_u16());
    metrics::histogram!(names::OVERHEAD, "endpoint" => endpoint.clone())
        .record(overhead.as_secs_f64());
    metrics::histogram!(names::REQUEST_DURATION, "endpoint" => endpoint.clone())
        .record(total.as_secs_f64());
    metrics::counter!(names::REQUESTS, "endpoint" => endpoint.clone(),
        "status" => status.as_u16().to_string())
    .increment(1);
    if let Some(ErrorDetail(detail)) = resp.extensions().get::<ErrorDetail>() {
        // The trace id lets a log line be found in the tracing backend.
        let trace_id = exchange.trace().map(|t| t.trace_id());
        if status.is_server_error() {
            tracing::warn!(%endpoint, status = status.as_u16(), error = %detail, trace_id,
                "request failed");
        } else {
            tracing::debug!(%endpoint, status = status.as_u16(), error = %detail, trace_id,
                "request rejected");
        }
    }
    resp.map(|body| Body::new(Finishing { body, exchange }))
}

/// A response body that finishes its exchange when it ends or is dropped.
struct Finishing {
    body: Body,
    exchange: Arc<Exchange>,
}

impl http_body::Body for Finishing {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        let polled = Pin::new(&mut self.body).poll_frame(cx);
        if let Poll::Ready(None) = polled {
            self.exchange.finish(Ending::Complete);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        // The server may stop polling a body that says it has ended, and drop it.
        let ended = self.body.is_end_stream();
        if ended {
            self.exchange.finish(Ending::Complete);
        }
        ended
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

impl Drop for Finishing {
    fn drop(&mut self) {
        let ending = if self.body.is_end_stream() {
            Ending::Complete
        } else {
            Ending::Abandoned
        };
        self.exchange.finish(ending);
    }
}
