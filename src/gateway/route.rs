//! Routes: a client-facing model name, the deployments that can serve it with their weights,
//! the fallbacks to try after them, and the retry policy between attempts.

use std::sync::Arc;
use std::time::Duration;

use rand::Rng;

use crate::config::RetryConfig;
use crate::providers::Provider;

#[derive(Debug)]
pub struct Deployment {
    /// `provider/model`, for logs, metrics and the `x-pasarela-deployment` header.
    pub label: String,
    pub provider: Arc<dyn Provider>,
    /// The upstream's kind as `gen_ai.provider.name`: `openai`, `anthropic`, `pasarela.local`.
    pub kind: &'static str,
    /// The model name the upstream knows.
    pub model: String,
    pub weight: u32,
}

#[derive(Debug)]
pub struct Route {
    pub name: String,
    pub deployments: Vec<Deployment>,
    pub fallbacks: Vec<String>,
    pub retry: RetryConfig,
    /// What `/v1/models` says beyond the name: `kind`, and for local models
    /// `context_length` (and `dimensions` for embedders).
    pub info: crate::openai::Extra,
}

impl Route {
    /// Picks a deployment at random in proportion to weight, preferring ones not yet `tried`
    /// so that a retry goes elsewhere when the route has somewhere else to go.
    pub fn pick(&self, tried: &[usize]) -> usize {
        let fresh = |i: &usize| !tried.contains(i);
        let any_fresh =
            (0..self.deployments.len()).any(|i| fresh(&i) && self.deployments[i].weight > 0);
        let eligible: Vec<usize> = (0..self.deployments.len())
            .filter(|i| self.deployments[*i].weight > 0 && (!any_fresh || fresh(i)))
            .collect();
        let total: u64 = eligible
            .iter()
            .map(|&i| u64::from(self.deployments[i].weight))
            .sum();
        if total == 0 {
            return 0;
        }
        let mut ticket = rand::rng().random_range(0..total);
        for &i in &eligible {
            let w = u64::from(self.deployments[i].weight);
            if ticket < w {
                return i;
            }
            ticket -= w;
        }
        eligible.last().copied().unwrap_or(0)
    }
}

/// The wait before retry number `attempt` (0-based): exponential back-off with full jitter,
/// but never less than what the upstream asked for in `Retry-After`. `None` when the upstream
/// asks for longer than the policy allows: better to move on to a fallback.
pub fn backoff(
    policy: &RetryConfig,
    attempt: u32,
    retry_after: Option<Duration>,
) -> Option<Duration> {
    let cap = policy
        .initial_backoff_ms
        .saturating_mul(1u64 << attempt.min(20))
        .min(policy.max_backoff_ms);
    let jittered = Duration::from_millis(rand::rng().random_range(cap / 2..=cap));
    match retry_after {
        Some(asked) if asked > Duration::from_millis(policy.max_retry_after_ms) => None,
        Some(asked) => Some(asked.max(jittered)),
        None => Some(jittered),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RetryConfig {
        RetryConfig {
            max_retries: 3,
            initial_backoff_ms: 100,
            max_backoff_ms: 1_000,
            max_retry_after_ms: 5_000,
        }
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        for _ in 0..100 {
            let first = backoff(&policy(), 0, None).unwrap();
            assert!((50..=100).contains(&first.as_millis()), "{first:?}");
            let third = backoff(&policy(), 2, None).unwrap();
            assert!((200..=400).contains(&third.as_millis()), "{third:?}");
            let late = backoff(&policy(), 30, None).unwrap();
            assert!((500..=1_000).contains(&late.as_millis()), "{late:?}");
        }
    }

    #[test]
    fn backoff_honours_retry_after_within_the_limit() {
        let wait = backoff(&policy(), 0, Some(Duration::from_secs(2))).unwrap();
        assert_eq!(wait, Duration::from_secs(2));
        assert_eq!(backoff(&policy(), 0, Some(Duration::from_secs(60))), None);
    }
}
