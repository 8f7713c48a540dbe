//! The generic cell rate algorithm with a variable cost and a correction afterwards: what a
//! token rate needs, since a request reserves an estimate before the call and settles on its
//! real usage after it. `governor` (which counts requests here) cannot give cells back, hence
//! this small version. Redis runs the same arithmetic in a script (see `shared`), so that a
//! key behaves the same on one replica or many.
//!
//! State is one instant, the theoretical arrival time (TAT): when the bucket would be empty
//! again. A rate of N per period emits one cell every `period / N`, and allows a burst of N.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::RateStatus;

/// A request over the rate, or larger than the whole burst.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refused {
    pub status: RateStatus,
    /// Until the request would fit; `None` when it never will (its cost exceeds the limit).
    pub retry_after: Option<Duration>,
}

/// The pure arithmetic, on nanoseconds from an arbitrary origin, so that both backends and
/// the tests share it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    pub limit: u64,
    pub period: Duration,
}

impl Quota {
    pub fn per_minute(limit: u64) -> Quota {
        Quota {
            limit,
            period: Duration::from_secs(60),
        }
    }

    pub(super) fn interval_nanos(&self) -> u128 {
        self.period.as_nanos() / u128::from(self.limit.max(1))
    }

    fn period_nanos(&self) -> u128 {
        self.period.as_nanos()
    }

    /// Takes `cost` cells at `now` from a bucket whose TAT is `tat`: the new TAT and the
    /// status, or the refusal (TAT unchanged).
    pub fn take(&self, tat: u128, now: u128, cost: u64) -> Result<(u128, RateStatus), Refused> {
        let base = tat.max(now);
        let next = base + self.interval_nanos() * u128::from(cost);
        if next - now <= self.period_nanos() {
            return Ok((next, self.status(next, now)));
        }
        let retry_after = (cost <= self.limit).then(|| next - now - self.period_nanos());
        Err(self.refused(base - now, retry_after))
    }

    /// A refusal while the bucket is full for `used` more nanoseconds, the request fitting
    /// after `retry_after` (`None`: never).
    pub(super) fn refused(&self, used: u128, retry_after: Option<u128>) -> Refused {
        Refused {
            status: RateStatus {
                limit: clamp_u32(self.limit),
                remaining: 0,
                reset: nanos(used),
            },
            retry_after: retry_after.map(nanos),
        }
    }

    /// The same quota in microseconds, for Redis: its clock, `TIME`, gives microseconds, and
    /// a Lua number (a double) holds microseconds since 1970 exactly but not nanoseconds.
    pub(super) fn interval_micros(&self) -> u128 {
        self.period.as_micros() / u128::from(self.limit.max(1))
    }

    pub(super) fn period_micros(&self) -> u128 {
        self.period.as_micros()
    }

    /// Gives back (`delta` < 0) or charges extra (`delta` > 0) cells after the fact. A charge
    /// is never refused: the usage happened; it only delays later requests.
    pub fn adjust(&self, tat: u128, now: u128, delta: i64) -> u128 {
        let step = self.interval_nanos() * u128::from(delta.unsigned_abs());
        if delta >= 0 {
            tat.max(now) + step
        } else {
            tat.saturating_sub(step).max(now)
        }
    }

    pub fn status(&self, tat: u128, now: u128) -> RateStatus {
        let used = tat.saturating_sub(now);
        let free = self.period_nanos().saturating_sub(used);
        let remaining = free / self.interval_nanos().max(1);
        RateStatus {
            limit: clamp_u32(self.limit),
            remaining: u32::try_from(remaining.min(u128::from(self.limit))).unwrap_or(u32::MAX),
            reset: nanos(used),
        }
    }
}

fn clamp_u32(v: u64) -> u32 {
    u32::try_from(v).unwrap_or(u32::MAX)
}

fn nanos(n: u128) -> Duration {
    Duration::from_nanos(u64::try_from(n).unwrap_or(u64::MAX))
}

/// One bucket in this process.
#[derive(Debug)]
pub struct LocalBucket {
    quota: Quota,
    origin: Instant,
    tat: Mutex<u128>,
}

impl LocalBucket {
    pub fn new(quota: Quota) -> LocalBucket {
        LocalBucket {
            quota,
            origin: Instant::now(),
            tat: Mutex::new(0),
        }
    }

    pub fn quota(&self) -> Quota {
        self.quota
    }

    fn now(&self) -> u128 {
        self.origin.elapsed().as_nanos()
    }

    pub fn take(&self, cost: u64) -> Result<RateStatus, Refused> {
        let now = self.now();
        let mut tat = self.tat.lock().unwrap_or_else(|e| e.into_inner());
        let (next, status) = self.quota.take(*tat, now, cost)?;
        *tat = next;
        Ok(status)
    }

    pub fn adjust(&self, delta: i64) -> RateStatus {
        let now = self.now();
        let mut tat = self.tat.lock().unwrap_or_else(|e| e.into_inner());
        *tat = self.quota.adjust(*tat, now, delta);
        self.quota.status(*tat, now)
    }

    /// Sets the bucket to where the shared one stands (full for `used` more), so that its
    /// status reads right and, should Redis go away, counting here carries on from there.
    pub fn mirror(&self, used: Duration) {
        let now = self.now();
        let mut tat = self.tat.lock().unwrap_or_else(|e| e.into_inner());
        *tat = now + used.as_nanos();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: u128 = 1_000_000_000;

    #[test]
    fn a_burst_of_the_limit_fits_then_one_cell_per_interval() {
        let q = Quota::per_minute(600); // one cell per 100 ms
        let (tat, s) = q.take(0, 0, 600).unwrap();
        assert_eq!(s.remaining, 0);
        let refused = q.take(tat, 0, 1).unwrap_err();
        assert_eq!(refused.retry_after, Some(Duration::from_millis(100)));
        let (_, s) = q.take(tat, SEC / 10, 1).unwrap();
        assert_eq!(s.remaining, 0);
    }

    #[test]
    fn a_cost_above_the_limit_never_fits() {
        let q = Quota::per_minute(100);
        let refused = q.take(0, 0, 101).unwrap_err();
        assert_eq!(refused.retry_after, None);
        assert_eq!(refused.status.remaining, 0);
    }

    #[test]
    fn settling_gives_back_unused_cells_and_charges_overruns() {
        let q = Quota::per_minute(1000);
        let (tat, s) = q.take(0, 0, 500).unwrap();
        assert_eq!(s.remaining, 500);
        // Used 200 of the 500 reserved.
        let tat = q.adjust(tat, 0, -300);
        assert_eq!(q.status(tat, 0).remaining, 800);
        // Used 900 more than reserved: the bucket is past empty; later requests wait.
        let tat = q.adjust(tat, 0, 900);
        assert_eq!(q.status(tat, 0).remaining, 0);
        assert!(q.take(tat, 0, 1).is_err());
        // A refund never moves the TAT before now.
        assert_eq!(q.adjust(0, 5 * SEC, -10), 5 * SEC);
    }

    #[test]
    fn remaining_refills_with_time() {
        let q = Quota::per_minute(60); // one per second
        let (tat, _) = q.take(0, 0, 60).unwrap();
        let s = q.status(tat, 10 * SEC);
        assert_eq!(s.remaining, 10);
        assert_eq!(s.reset, Duration::from_secs(50));
    }
}
