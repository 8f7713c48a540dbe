//! Server-sent events in OpenAI's framing: `data: {chunk}` frames, then `data: [DONE]`. A
//! stream that fails part-way ends with one `data: {"error": …}` frame and no `[DONE]`, so no
//! client can mistake a broken answer for a complete one.

use std::convert::Infallible;
use std::pin::Pin;
use std::time::Duration;

use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::{Stream, StreamExt};
use serde::Serialize;

use super::error::ApiError;
use crate::gateway::GatewayError;
use crate::openai::error::ErrorResponse;
use crate::providers::ProviderError;
use crate::telemetry::names;

type ItemStream<T> = Pin<Box<dyn Stream<Item = Result<T, ProviderError>> + Send>>;

pub fn respond<T: Serialize + Send + 'static>(
    stream: ItemStream<T>,
    endpoint: &'static str,
) -> Response {
    let events = futures::stream::unfold(Some(stream), move |state| async move {
        let mut stream = state?;
        let event = match stream.next().await {
            Some(Ok(item)) => match serde_json::to_string(&item) {
                Ok(json) => {
                    return Some((
                        Ok::<_, Infallible>(Event::default().data(json)),
                        Some(stream),
                    ));
                }
                Err(e) => error_event(ProviderError::Protocol(e.to_string()), endpoint),
            },
            Some(Err(e)) => error_event(e, endpoint),
            None => Event::default().data("[DONE]"),
        };
        Some((Ok(event), None))
    });
    // Comments keep idle connections open through proxies; SDKs ignore them.
    Sse::new(events)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}

fn error_event(e: ProviderError, endpoint: &'static str) -> Event {
    tracing::warn!(endpoint, error = %crate::error_chain(&e), "stream failed after it started");
    metrics::counter!(names::STREAM_ERRORS, "endpoint" => endpoint).increment(1);
    let api = ApiError::from(GatewayError::Upstream(e));
    let body = ErrorResponse { error: *api.body };
    let json = serde_json::to_string(&body)
        .unwrap_or_else(|_| r#"{"error":{"message":"stream failed","type":"server_error","param":null,"code":null}}"#.into());
    Event::default().data(json)
}
