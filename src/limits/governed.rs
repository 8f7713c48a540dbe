//! A `governor` decision as the gateway reports it: the `x-ratelimit-*-requests` figures, or
//! the refusal with its wait. Shared by the per-key and per-address request rates.

use governor::NotUntil;
use governor::clock::Reference;
use governor::middleware::StateSnapshot;

use super::{RateDenied, RateStatus};

pub(super) fn decision<P: Reference>(
    checked: Result<StateSnapshot, NotUntil<P>>,
    now: P,
) -> Result<RateStatus, RateDenied> {
    match checked {
        Ok(snapshot) => {
            let quota = snapshot.quota();
            let limit = quota.burst_size().get();
            let remaining = snapshot.remaining_burst_capacity();
            Ok(RateStatus {
                limit,
                remaining,
                // Each used slot comes back one interval after the one before; this is at most
                // one interval late, since the oldest may be partly back.
                reset: quota.replenish_interval() * limit.saturating_sub(remaining),
            })
        }
        Err(not_until) => {
            let quota = not_until.quota();
            let limit = quota.burst_size().get();
            let retry_after = not_until.wait_time_from(now);
            Err(RateDenied {
                status: RateStatus {
                    limit,
                    remaining: 0,
                    reset: retry_after + quota.replenish_interval() * (limit - 1),
                },
                retry_after,
            })
        }
    }
}
