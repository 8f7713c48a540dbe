//! Reading an upstream's server-sent events, with OpenAI's `[DONE]` terminator.

use eventsource_stream::{Event, Eventsource};
use futures::{Stream, StreamExt};
use serde::de::DeserializeOwned;

use super::ProviderError;
use crate::openai::error::ErrorBody;

/// The raw events of an SSE response body. A transport failure ends the stream with an error.
pub(crate) fn events(
    resp: reqwest::Response,
) -> impl Stream<Item = Result<Event, ProviderError>> + Send {
    resp.bytes_stream().eventsource().map(|item| {
        item.map_err(|e| match e {
            eventsource_stream::EventStreamError::Transport(e) => ProviderError::from_reqwest(e),
            other => ProviderError::StreamBroken(other.to_string()),
        })
    })
}

/// An OpenAI-style stream: each `data:` is one JSON object of type `T`, and `data: [DONE]` ends
/// it. A stream that stops before `[DONE]`, or that carries an `{"error": …}` object, yields an
/// error as its last item so that the client never mistakes a broken stream for a finished one.
pub(crate) fn openai_json_stream<T: DeserializeOwned + Send + 'static>(
    resp: reqwest::Response,
) -> impl Stream<Item = Result<T, ProviderError>> + Send {
    let events = Box::pin(events(resp));
    futures::stream::unfold(Some(events), |state| async move {
        let mut events = state?;
        loop {
            match events.next().await {
                None => {
                    let err =
                        ProviderError::StreamBroken("upstream stream ended before [DONE]".into());
                    return Some((Err(err), None));
                }
                Some(Err(e)) => return Some((Err(e), None)),
                Some(Ok(event)) => {
                    let data = event.data.trim();
                    if data == "[DONE]" {
                        return None;
                    }
                    if data.is_empty() {
                        continue;
                    }
                    return Some(match parse_data::<T>(data) {
                        Ok(item) => (Ok(item), Some(events)),
                        Err(e) => (Err(e), None),
                    });
                }
            }
        }
    })
}

fn parse_data<T: DeserializeOwned>(data: &str) -> Result<T, ProviderError> {
    let value: serde_json::Value = serde_json::from_str(data)
        .map_err(|e| ProviderError::Protocol(format!("bad JSON in stream: {e}")))?;
    if let Some(error) = value.get("error") {
        let body =
            serde_json::from_value::<ErrorBody>(error.clone()).unwrap_or_else(|_| ErrorBody {
                message: error.to_string(),
                kind: "upstream_error".into(),
                param: None,
                code: None,
            });
        return Err(ProviderError::StreamBroken(body.message));
    }
    serde_json::from_value(value)
        .map_err(|e| ProviderError::Protocol(format!("unexpected chunk shape: {e}")))
}
