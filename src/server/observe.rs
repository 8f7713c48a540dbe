//! The outermost middleware: opens the request's [`Exchange`], times the request, subtracts
//! the time spent waiting on upstreams, and reports the rest as `x-pasarela-overhead-ms` and
//! as metrics. It also writes the one log line for a failed request, and finishes the exchange
//! when the response body is over (sent to the end, or dropped when the client goes away), so
//! that its hooks see a stream's final usage. Every response carries the request's id
//! (`x-request-id`), which the request log and the failure log line name too.

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
use crate::telemetry::{self, Ending, Exchange, Tracing, names};

pub const OVERHEAD_HEADER: &str = "x-pasarela-overhead-ms";
/// A request's id: the client's, when it sent a usable one, else one made here. Every
/// response carries it, and the request log stores it.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

pub async fn observe(State(tracing): State<Tracing>, mut req: Request, next: Next) -> Response {
    let endpoint = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let trace = tracing.begin_request(req.method().as_str(), &endpoint, req.headers());
    let exchange = Exchange::traced(endpoint.clone(), trace);
    let request_id = request_id(&req);
    exchange.update(|r| r.request_id.clone_from(&request_id));
    req.extensions_mut().insert(exchange.clone());

    let mut resp = next.run(req).await;

    let total = exchange.started().elapsed();
    let overhead = total.saturating_sub(exchange.clock().total());
    let ms = overhead.as_secs_f64() * 1000.0;
    if let Ok(v) = HeaderValue::from_str(&format!("{ms:.3}")) {
        resp.headers_mut().insert(OVERHEAD_HEADER, v);
    }
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        resp.headers_mut().insert(REQUEST_ID_HEADER, v);
    }
    let status = resp.status();
    let error = resp.extensions().get::<ErrorDetail>().map(|d| d.0.clone());
    exchange.update(|r| {
        r.status = status.as_u16();
        r.error = error;
    });
    metrics::histogram!(names::OVERHEAD, "endpoint" => endpoint.clone())
        .record(overhead.as_secs_f64());
    // Counted when the response is over, so that a stream's usage and duration are known.
    exchange.on_finish(telemetry::record_exchange);
    if let Some(ErrorDetail(detail)) = resp.extensions().get::<ErrorDetail>() {
        // The trace id lets a log line be found in the tracing backend.
        let trace_id = exchange.trace().map(|t| t.trace_id());
        if status.is_server_error() {
            tracing::warn!(%endpoint, %request_id, status = status.as_u16(), error = %detail,
                trace_id, "request failed");
        } else {
            tracing::debug!(%endpoint, %request_id, status = status.as_u16(), error = %detail,
                trace_id, "request rejected");
        }
    }
    resp.map(|body| Body::new(Finishing { body, exchange }))
}

/// The client's `x-request-id` when it is 1 to 128 visible ASCII characters, else a new
/// random one.
fn request_id(req: &Request) -> String {
    let theirs = req
        .headers()
        .get(REQUEST_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|v| (1..=128).contains(&v.len()) && v.bytes().all(|b| b.is_ascii_graphic()));
    match theirs {
        Some(id) => id.to_owned(),
        None => format!("req_{:032x}", rand::random::<u128>()),
    }
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
