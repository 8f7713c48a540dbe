//! The time a request spends waiting on upstreams, so that the rest can be called overhead.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

/// Accumulates time spent awaiting upstream work (calls, first stream chunks, retry back-off)
/// for one request (tokio's `Instant`, so paused-clock tests can drive it). Shared between the HTTP layer, which knows when the request began, and
/// the gateway, which knows when it waits.
#[derive(Debug, Default)]
pub struct UpstreamClock {
    nanos: AtomicU64,
}

impl UpstreamClock {
    /// Runs `fut`, counting its whole duration as upstream time.
    pub async fn time<F: Future>(&self, fut: F) -> F::Output {
        let start = Instant::now();
        let out = fut.await;
        self.add(start.elapsed());
        out
    }

    pub fn add(&self, d: Duration) {
        let nanos = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    pub fn total(&self) -> Duration {
        Duration::from_nanos(self.nanos.load(Ordering::Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn counts_only_the_timed_futures() {
        let clock = UpstreamClock::default();
        clock
            .time(tokio::time::sleep(Duration::from_millis(30)))
            .await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        clock
            .time(tokio::time::sleep(Duration::from_millis(20)))
            .await;
        let total = clock.total();
        assert!(total >= Duration::from_millis(50), "{total:?}");
        assert!(total < Duration::from_millis(100), "{total:?}");
    }
}
