//! Observability: structured logs (tracing), Prometheus metrics, request spans exported over
//! OTLP with the GenAI semantic conventions, the request log, and the accounting of how much
//! of a request's time the gateway itself spent (its overhead) versus waiting on upstreams.

mod background;
mod capture;
mod exchange;
pub mod gen_ai;
mod logs;
mod metrics;
mod overhead;
mod request_trace;
mod tracing_export;

pub mod request_log;

pub use capture::{Capture, Captured};
pub use exchange::{Content, Ending, Exchange, KeyRef, Record, RequestParams, TokenCounts};
pub use logs::init_logging;
pub use metrics::{Metrics, names, record_exchange};
pub use overhead::UpstreamClock;
pub use request_trace::{
    EngineSpans, RequestTrace, UpstreamCall, UpstreamSpan, propagation_headers,
};
pub use tracing_export::{OtlpSettings, Tracing};
