//! A request rate per client IP address, for callers without a key (the gateway open on
//! loopback): one local process's scripts cannot starve another's. GCRA through `governor`'s
//! keyed limiter; addresses idle for a whole period are forgotten by [`PerIp::forget_idle`].

use std::net::IpAddr;
use std::num::NonZeroU32;

use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};

use super::{RateDenied, RateStatus, governed};

type Limiter =
    RateLimiter<IpAddr, DefaultKeyedStateStore<IpAddr>, DefaultClock, StateInformationMiddleware>;

pub struct PerIp {
    limiter: Limiter,
}

impl PerIp {
    /// `rpm` requests per minute per address, in bursts of up to `rpm`.
    pub fn per_minute(rpm: NonZeroU32) -> PerIp {
        PerIp {
            limiter: RateLimiter::keyed(Quota::per_minute(rpm)).with_middleware(),
        }
    }

    pub fn check(&self, ip: IpAddr) -> Result<RateStatus, RateDenied> {
        governed::decision(self.limiter.check_key(&ip), self.limiter.clock().now())
    }

    /// Drops the state of addresses whose bucket is full again, so that memory follows the
    /// number of recent clients rather than every client ever seen.
    pub fn forget_idle(&self) {
        self.limiter.retain_recent();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_address_has_its_own_rate() {
        let limits = PerIp::per_minute(NonZeroU32::new(2).unwrap());
        let a: IpAddr = "127.0.0.1".parse().unwrap();
        let b: IpAddr = "127.0.0.2".parse().unwrap();
        assert_eq!(limits.check(a).unwrap().remaining, 1);
        assert_eq!(limits.check(a).unwrap().remaining, 0);
        let denied = limits.check(a).unwrap_err();
        assert!(denied.retry_after.as_secs() <= 30);
        assert!(limits.check(b).is_ok());
    }
}
