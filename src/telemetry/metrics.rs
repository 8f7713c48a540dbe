//! Prometheus metrics. The recorder is process-global (the `metrics` crate's design), so it is
//! installed once and every `Application` in the process shares it.

use std::sync::OnceLock;

use metrics::Unit;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use super::Record;

/// Metric names, in one place so that dashboards and code agree. Each is described (HELP) in
/// [`DESCRIPTIONS`].
pub mod names {
    /// Counter: finished HTTP requests, by `endpoint`, `model` (as asked; `none` when the
    /// request named none) and `status`.
    pub const REQUESTS: &str = "pasarela_requests_total";
    /// Histogram (seconds): from the request to the end of its response (a stream's last
    /// chunk), by `endpoint` and `model`.
    pub const REQUEST_DURATION: &str = "pasarela_request_duration_seconds";
    /// Histogram (seconds): from a streamed request to its first generated content, by `model`.
    pub const TIME_TO_FIRST_TOKEN: &str = "pasarela_time_to_first_token_seconds";
    /// Counter: tokens by `model` and `direction` (`input`/`output`), as the models reported.
    pub const TOKENS: &str = "pasarela_tokens_total";
    /// Histogram: output tokens per second of a local model's generation (after its first
    /// token for streams), by `model`.
    pub const OUTPUT_TOKENS_PER_SECOND: &str = "pasarela_output_tokens_per_second";
    /// Histogram (seconds): time spent in the gateway itself, upstream waits excluded.
    pub const OVERHEAD: &str = "pasarela_overhead_seconds";
    /// Counter: requests refused by a limit, by `limit` (`requests`, `tokens`, `budget`,
    /// `concurrency`, `client_ip`).
    pub const RATE_LIMITED: &str = "pasarela_rate_limited_total";
    /// Counter: upstream attempts, by `route`, `deployment` and `outcome` (`ok`,
    /// `retryable_error`, `error`).
    pub const UPSTREAM_ATTEMPTS: &str = "pasarela_upstream_attempts_total";
    /// Counter: streams that ended with an error event instead of `[DONE]`, by `endpoint`.
    pub const STREAM_ERRORS: &str = "pasarela_stream_errors_total";
    /// Histogram: sequences advanced together by one decode step of a local model, by `model`.
    pub const BATCH_SIZE: &str = "pasarela_engine_batch_size";
    /// Counter: tokens a local model processed, by `model` and `kind` (`prompt`/`completion`).
    pub const ENGINE_TOKENS: &str = "pasarela_engine_tokens_total";
    /// Gauge: requests waiting in a local model's queue, by `model`.
    pub const ENGINE_QUEUE_DEPTH: &str = "pasarela_engine_queue_depth";
    /// Gauge: sequences a local model is running, by `model`.
    pub const ENGINE_ACTIVE: &str = "pasarela_engine_active_sequences";
    /// Gauge: 1 while virtual keys' rates are shared through Redis, 0 while Redis is away and
    /// each replica counts them alone (only with `limits.redis_url`).
    pub const LIMITS_REDIS_UP: &str = "pasarela_limits_redis_up";
    /// Counter: rate checks counted on this replica because Redis was unavailable, by `limit`
    /// (`requests`/`tokens`).
    pub const LIMITS_LOCAL_CHECKS: &str = "pasarela_limits_local_checks_total";
    /// Counter: request log entries dropped because the buffer was full (never waited for).
    pub const REQUEST_LOG_DROPPED: &str = "pasarela_request_log_dropped_total";
    /// Counter: request log rows written to the store.
    pub const REQUEST_LOG_WRITTEN: &str = "pasarela_request_log_written_total";
    /// Counter: request log rows lost because the store refused their batch.
    pub const REQUEST_LOG_FAILED: &str = "pasarela_request_log_failed_total";
    /// Counter: request log rows deleted past their retention.
    pub const REQUEST_LOG_PRUNED: &str = "pasarela_request_log_pruned_total";
}

#[derive(Clone, Copy)]
enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// Every metric's kind, unit and help text, given to the exporter once.
const DESCRIPTIONS: &[(&str, Kind, Option<Unit>, &str)] = &[
    (
        names::REQUESTS,
        Kind::Counter,
        None,
        "Finished API requests by endpoint, model and status.",
    ),
    (
        names::REQUEST_DURATION,
        Kind::Histogram,
        Some(Unit::Seconds),
        "Time from a request to the end of its response.",
    ),
    (
        names::TIME_TO_FIRST_TOKEN,
        Kind::Histogram,
        Some(Unit::Seconds),
        "Time from a streamed request to its first generated content.",
    ),
    (
        names::TOKENS,
        Kind::Counter,
        None,
        "Input and output tokens as the models reported them.",
    ),
    (
        names::OUTPUT_TOKENS_PER_SECOND,
        Kind::Histogram,
        None,
        "Output tokens per second of local models' generations.",
    ),
    (
        names::OVERHEAD,
        Kind::Histogram,
        Some(Unit::Seconds),
        "Time spent in the gateway itself, upstream waits excluded.",
    ),
    (
        names::RATE_LIMITED,
        Kind::Counter,
        None,
        "Requests refused by a limit.",
    ),
    (
        names::UPSTREAM_ATTEMPTS,
        Kind::Counter,
        None,
        "Upstream attempts by route, deployment and outcome.",
    ),
    (
        names::STREAM_ERRORS,
        Kind::Counter,
        None,
        "Streams that ended with an error event instead of [DONE].",
    ),
    (
        names::BATCH_SIZE,
        Kind::Histogram,
        None,
        "Sequences advanced together by one step of a local model.",
    ),
    (
        names::ENGINE_TOKENS,
        Kind::Counter,
        None,
        "Tokens a local model processed, prompt and completion.",
    ),
    (
        names::ENGINE_QUEUE_DEPTH,
        Kind::Gauge,
        None,
        "Requests waiting in a local model's queue.",
    ),
    (
        names::ENGINE_ACTIVE,
        Kind::Gauge,
        None,
        "Sequences a local model is running.",
    ),
    (
        names::LIMITS_REDIS_UP,
        Kind::Gauge,
        None,
        "1 while rate limits are shared through Redis, 0 while each replica counts alone.",
    ),
    (
        names::LIMITS_LOCAL_CHECKS,
        Kind::Counter,
        None,
        "Rate checks counted on this replica because Redis was unavailable.",
    ),
    (
        names::REQUEST_LOG_DROPPED,
        Kind::Counter,
        None,
        "Request log entries dropped because the buffer was full.",
    ),
    (
        names::REQUEST_LOG_WRITTEN,
        Kind::Counter,
        None,
        "Request log rows written to the store.",
    ),
    (
        names::REQUEST_LOG_FAILED,
        Kind::Counter,
        None,
        "Request log rows lost to a store error.",
    ),
    (
        names::REQUEST_LOG_PRUNED,
        Kind::Counter,
        None,
        "Request log rows deleted past their retention.",
    ),
];

fn describe_all() {
    for &(name, kind, unit, help) in DESCRIPTIONS {
        match (kind, unit) {
            (Kind::Counter, Some(u)) => metrics::describe_counter!(name, u, help),
            (Kind::Counter, None) => metrics::describe_counter!(name, help),
            (Kind::Gauge, Some(u)) => metrics::describe_gauge!(name, u, help),
            (Kind::Gauge, None) => metrics::describe_gauge!(name, help),
            (Kind::Histogram, Some(u)) => metrics::describe_histogram!(name, u, help),
            (Kind::Histogram, None) => metrics::describe_histogram!(name, help),
        }
    }
}

/// Counts a finished API request: called from its exchange's finish hook.
pub fn record_exchange(r: &Record) {
    let model = r.model.clone().unwrap_or_else(|| "none".to_owned());
    metrics::counter!(names::REQUESTS, "endpoint" => r.endpoint.clone(),
        "model" => model.clone(), "status" => r.status.to_string())
    .increment(1);
    metrics::histogram!(names::REQUEST_DURATION, "endpoint" => r.endpoint.clone(),
        "model" => model.clone())
    .record(r.duration.as_secs_f64());
    if let Some(first) = r.first_token {
        metrics::histogram!(names::TIME_TO_FIRST_TOKEN, "model" => model.clone())
            .record(first.as_secs_f64());
    }
    let Some(usage) = r.usage else { return };
    metrics::counter!(names::TOKENS, "model" => model.clone(), "direction" => "input")
        .increment(usage.input);
    metrics::counter!(names::TOKENS, "model" => model.clone(), "direction" => "output")
        .increment(usage.output);
    let local = r
        .deployment
        .as_deref()
        .is_some_and(|d| d.starts_with("local/"));
    let generating = r.duration.saturating_sub(r.first_token.unwrap_or_default());
    if local && usage.output > 0 && !generating.is_zero() {
        #[expect(
            clippy::cast_precision_loss,
            reason = "token counts are far below 2^52"
        )]
        let rate = usage.output as f64 / generating.as_secs_f64();
        metrics::histogram!(names::OUTPUT_TOKENS_PER_SECOND, "model" => model).record(rate);
    }
}

/// A handle that renders the current metrics in Prometheus' text format.
#[derive(Clone)]
pub struct Metrics {
    handle: PrometheusHandle,
}

impl Metrics {
    pub fn global() -> Metrics {
        static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
        let handle = HANDLE.get_or_init(|| {
            let buckets = [
                0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
            ];
            let batch_buckets = [1.0, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0, 16.0, 32.0];
            let speed_buckets = [
                1.0, 5.0, 10.0, 25.0, 50.0, 75.0, 100.0, 150.0, 200.0, 300.0, 500.0, 1000.0,
            ];
            let recorder = PrometheusBuilder::new()
                .set_buckets(&buckets)
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full(names::BATCH_SIZE.into()),
                        &batch_buckets,
                    )
                })
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full(names::OUTPUT_TOKENS_PER_SECOND.into()),
                        &speed_buckets,
                    )
                })
                .map(PrometheusBuilder::build_recorder)
                .unwrap_or_else(|_| PrometheusBuilder::new().build_recorder());
            let handle = recorder.handle();
            // Fails only if another recorder was installed first; then ours renders nothing
            // but the gateway still works.
            if metrics::set_global_recorder(recorder).is_ok() {
                describe_all();
            }
            handle
        });
        Metrics {
            handle: handle.clone(),
        }
    }

    pub fn render(&self) -> String {
        self.handle.render()
    }
}
