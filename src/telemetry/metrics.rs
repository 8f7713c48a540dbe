//! Prometheus metrics. The recorder is process-global (the `metrics` crate's design), so it is
//! installed once and every `Application` in the process shares it.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Metric names, in one place so that dashboards and code agree.
pub mod names {
    /// Counter: finished HTTP requests, by `endpoint` and `status`.
    pub const REQUESTS: &str = "pasarela_requests_total";
    /// Histogram (seconds): time to response headers, by `endpoint`.
    pub const REQUEST_DURATION: &str = "pasarela_request_duration_seconds";
    /// Histogram (seconds): time spent in the gateway itself, upstream waits excluded.
    pub const OVERHEAD: &str = "pasarela_overhead_seconds";
    /// Counter: upstream attempts, by `route`, `deployment` and `outcome`.
    pub const UPSTREAM_ATTEMPTS: &str = "pasarela_upstream_attempts_total";
    /// Counter: streams that ended with an error event instead of `[DONE]`, by `endpoint`.
    pub const STREAM_ERRORS: &str = "pasarela_stream_errors_total";
    /// Histogram: sequences advanced together by one decode step of a local model, by `model`.
    pub const BATCH_SIZE: &str = "pasarela_engine_batch_size";
    /// Counter: tokens a local model processed, by `model` and `kind` (`prompt`/`completion`).
    pub const ENGINE_TOKENS: &str = "pasarela_engine_tokens_total";
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
            let recorder = PrometheusBuilder::new()
                .set_buckets(&buckets)
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full(names::BATCH_SIZE.into()),
                        &batch_buckets,
                    )
                })
                .map(PrometheusBuilder::build_recorder)
                .unwrap_or_else(|_| PrometheusBuilder::new().build_recorder());
            let handle = recorder.handle();
            // Fails only if another recorder was installed first; then ours renders nothing
            // but the gateway still works.
            let _ = metrics::set_global_recorder(recorder);
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
