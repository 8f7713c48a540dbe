//! Observability: structured logs (tracing), Prometheus metrics, and the accounting of how much
//! of a request's time the gateway itself spent (its overhead) versus waiting on upstreams,
//! and the request log.

mod capture;
mod exchange;
mod logs;
mod metrics;
mod overhead;
pub mod request_log;

pub use capture::{Capture, Captured};
pub use exchange::{Ending, Exchange, KeyRef, Record, TokenCounts};
pub use logs::init_logging;
pub use metrics::{Metrics, names, record_exchange};
pub use overhead::UpstreamClock;
