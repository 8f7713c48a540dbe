//! The request log's background tasks: the writer, which gathers what the buffer holds (up
//! to a batch, waiting at most the flush interval for it to fill), redacts it and stores it in
//! one transaction, and the pruner, which deletes rows past their retention.
//!
//! Gathering matters under load: a writer that wrote whatever had arrived would commit a small
//! transaction per wake-up, each a sync of the store, on the cores that serve the requests.
//!
//! The writer redacts on a blocking thread: sampled bodies may be large, and scanning them
//! is CPU work that must not hold up the async runtime.

use std::sync::Arc;
use std::time::Duration;

use chrono::{TimeDelta, Utc};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::redact::Redactor;
use super::{Pending, names};
use crate::store::{LogEnding, LogEntry, RequestLogRows};
use crate::telemetry::{Ending, Record};

/// The running writer. [`LogWriter::flush`] writes what is buffered and stops it.
#[derive(Debug)]
pub struct LogWriter {
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl LogWriter {
    pub(super) fn spawn(
        rx: mpsc::Receiver<Pending>,
        rows: RequestLogRows,
        batch: usize,
        flush_interval: Duration,
        redactor: Redactor,
    ) -> LogWriter {
        let stop = CancellationToken::new();
        let gather = Gather {
            batch,
            flush_interval,
        };
        let task = tokio::spawn(run(rx, rows, gather, Arc::new(redactor), stop.clone()));
        LogWriter { stop, task }
    }

    /// Writes whatever the buffer holds now, then stops; gives up after `limit` (a store
    /// that does not answer must not hold up a shutdown forever).
    pub async fn flush(self, limit: Duration) {
        self.stop.cancel();
        if tokio::time::timeout(limit, self.task).await.is_err() {
            tracing::warn!(
                task = "request-log-writer",
                limit_secs = limit.as_secs(),
                "request log not flushed in time: its last entries are lost"
            );
        }
    }
}

/// How the writer fills a transaction.
#[derive(Debug, Clone, Copy)]
struct Gather {
    batch: usize,
    flush_interval: Duration,
}

async fn run(
    mut rx: mpsc::Receiver<Pending>,
    rows: RequestLogRows,
    gather: Gather,
    redactor: Arc<Redactor>,
    stop: CancellationToken,
) {
    tracing::debug!(task = "request-log-writer", "started");
    let batch = gather.batch;
    let mut buf = Vec::with_capacity(batch);
    loop {
        tokio::select! {
            // Entries first: a flush must not leave behind what was already there.
            biased;
            n = rx.recv_many(&mut buf, batch) => {
                if n == 0 {
                    break;
                }
                fill(&mut rx, &mut buf, gather, &stop).await;
                write(&rows, &redactor, std::mem::take(&mut buf)).await;
            }
            () = stop.cancelled() => {
                rx.close();
                while let Some(p) = rx.recv().await {
                    buf.push(p);
                    if buf.len() >= batch {
                        write(&rows, &redactor, std::mem::take(&mut buf)).await;
                    }
                }
                write(&rows, &redactor, std::mem::take(&mut buf)).await;
                break;
            }
        }
    }
    tracing::debug!(task = "request-log-writer", "stopped");
}

/// Adds to `buf` what arrives until it holds a batch, the flush interval has passed since
/// this call, the buffer's senders are gone, or a flush is asked for.
async fn fill(
    rx: &mut mpsc::Receiver<Pending>,
    buf: &mut Vec<Pending>,
    gather: Gather,
    stop: &CancellationToken,
) {
    let deadline = tokio::time::Instant::now() + gather.flush_interval;
    while buf.len() < gather.batch {
        tokio::select! {
            biased;
            () = stop.cancelled() => return,
            n = rx.recv_many(buf, gather.batch - buf.len()) => {
                if n == 0 {
                    return;
                }
            }
            () = tokio::time::sleep_until(deadline) => return,
        }
    }
}

async fn write(rows: &RequestLogRows, redactor: &Arc<Redactor>, batch: Vec<Pending>) {
    if batch.is_empty() {
        return;
    }
    let count = batch.len() as u64;
    let redactor = redactor.clone();
    let entries = tokio::task::spawn_blocking(move || {
        batch.into_iter().map(|p| entry(p, &redactor)).collect()
    })
    .await;
    let entries: Vec<LogEntry> = match entries {
        Ok(entries) => entries,
        Err(e) => {
            tracing::error!(task = "request-log-writer", error = %e, "redaction failed; entries lost");
            metrics::counter!(names::REQUEST_LOG_FAILED).increment(count);
            return;
        }
    };
    match rows.insert(&entries).await {
        Ok(()) => metrics::counter!(names::REQUEST_LOG_WRITTEN).increment(count),
        Err(e) => {
            tracing::warn!(task = "request-log-writer", rows = count,
                error = %crate::error_chain(&e), "cannot write the request log; entries lost");
            metrics::counter!(names::REQUEST_LOG_FAILED).increment(count);
        }
    }
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

fn tokens(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// The row for a finished request, its bodies redacted.
fn entry(pending: Pending, redactor: &Redactor) -> LogEntry {
    let Pending { arrived, record } = pending;
    let Record {
        request_id,
        endpoint,
        status,
        key,
        model,
        deployment,
        response_model,
        stream,
        usage,
        finish_reasons,
        first_token,
        duration,
        prompt,
        ending,
        error,
        capture,
        // For spans only: the row has its own (sampled, redacted) bodies in `capture`.
        provider: _,
        params: _,
        content: _,
    } = record;
    let (ending, error) = match ending {
        Ending::Complete => (LogEnding::Complete, error),
        Ending::Failed(reason) => (LogEnding::Failed, Some(reason)),
        Ending::Open | Ending::Abandoned => (LogEnding::Abandoned, error),
    };
    let (request_body, response_body) = match capture {
        Some(c) => (
            c.request.as_deref().map(|b| redactor.body(b)),
            c.response_json().map(|mut v| {
                redactor.json(&mut v);
                v.to_string()
            }),
        ),
        None => (None, None),
    };
    LogEntry {
        request_id,
        created_at: arrived,
        key_id: key.as_ref().map(|k| k.id),
        key_name: key.map(|k| k.name),
        endpoint,
        model,
        deployment,
        response_model,
        status,
        stream,
        duration_ms: millis(duration),
        first_token_ms: first_token.map(millis),
        input_tokens: usage.map(|u| tokens(u.input)),
        output_tokens: usage.map(|u| tokens(u.output)),
        finish_reasons,
        prompt,
        ending,
        error: error.map(|e| redactor.text(&e).into_owned()),
        request_body,
        response_body,
    }
}

/// Deletes rows older than `retention` every `every`, from now until `stop`.
pub(super) fn spawn_pruner(
    rows: RequestLogRows,
    retention: TimeDelta,
    every: Duration,
    stop: CancellationToken,
) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            match rows.prune(Utc::now() - retention).await {
                Ok(0) => {}
                Ok(n) => {
                    tracing::info!(
                        task = "request-log-pruner",
                        rows = n,
                        "pruned old request log rows"
                    );
                    metrics::counter!(names::REQUEST_LOG_PRUNED).increment(n);
                }
                Err(e) => tracing::warn!(task = "request-log-pruner",
                    error = %crate::error_chain(&e), "cannot prune the request log"),
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use axum::body::Bytes;
    use serde_json::json;

    use super::*;
    use crate::telemetry::{Capture, Captured, KeyRef, TokenCounts};

    #[test]
    fn a_broken_stream_is_stored_failed_with_its_reason_and_redacted_bodies() {
        let redactor = Redactor::new(&[], &[]).unwrap();
        let arrived = Utc::now();
        let record = Record {
            request_id: "req_1".into(),
            endpoint: "/v1/chat/completions".into(),
            status: 200,
            key: Some(KeyRef {
                id: 3,
                name: "team-a".into(),
            }),
            stream: true,
            usage: Some(TokenCounts {
                input: 5,
                output: 2,
            }),
            first_token: Some(Duration::from_millis(40)),
            duration: Duration::from_millis(1500),
            ending: Ending::Failed("upstream reset, key sk-abcdefghijklmnop0123".into()),
            capture: Some(Box::new(Capture {
                request: Some(Bytes::from_static(br#"{"api_key":"x","messages":[]}"#)),
                response: Captured::Json(json!({"choices": []})),
            })),
            ..Record::default()
        };
        let e = entry(Pending { arrived, record }, &redactor);
        assert_eq!(e.ending, LogEnding::Failed);
        assert_eq!(e.error.as_deref(), Some("upstream reset, key [REDACTED]"));
        assert_eq!((e.key_id, e.key_name.as_deref()), (Some(3), Some("team-a")));
        assert_eq!((e.duration_ms, e.first_token_ms), (1500, Some(40)));
        assert_eq!((e.input_tokens, e.output_tokens), (Some(5), Some(2)));
        assert_eq!(
            e.request_body.as_deref(),
            Some(r#"{"api_key":"[REDACTED]","messages":[]}"#)
        );
        assert_eq!(e.response_body.as_deref(), Some(r#"{"choices":[]}"#));
        assert_eq!(e.created_at, arrived);
    }
}
