//! How many calls a run has in flight: up to `--concurrency`, halved whenever the target
//! answers 429 (and paused for its `Retry-After`), grown back by one after each run of
//! successes as long as the current limit. The additive-increase, multiplicative-decrease rule
//! of TCP congestion control, for the same reason: find the rate the other side accepts.

use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

pub struct Pace {
    max: usize,
    state: Mutex<State>,
    changed: Notify,
}

struct State {
    limit: usize,
    in_flight: usize,
    successes: usize,
    paused_until: Option<Instant>,
    /// The lowest limit reached, for the report.
    lowest: usize,
}

/// A slot for one call; dropping it frees the slot.
pub struct Slot<'a> {
    pace: &'a Pace,
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        if let Ok(mut s) = self.pace.state.lock() {
            s.in_flight = s.in_flight.saturating_sub(1);
        }
        self.pace.changed.notify_waiters();
    }
}

impl Pace {
    pub fn new(max: usize) -> Pace {
        let max = max.max(1);
        Pace {
            max,
            state: Mutex::new(State {
                limit: max,
                in_flight: 0,
                successes: 0,
                paused_until: None,
                lowest: max,
            }),
            changed: Notify::new(),
        }
    }

    /// Waits for a free slot under the current limit and outside a pause.
    pub async fn slot(&self) -> Slot<'_> {
        loop {
            // Registered before the check, so a release between the check and the wait
            // is not missed.
            let notified = self.changed.notified();
            let pause = {
                let Ok(mut s) = self.state.lock() else {
                    return Slot { pace: self };
                };
                match s.paused_until {
                    Some(until) if until > Instant::now() => Some(until),
                    _ if s.in_flight < s.limit => {
                        s.in_flight += 1;
                        return Slot { pace: self };
                    }
                    _ => None,
                }
            };
            match pause {
                Some(until) => tokio::time::sleep_until(until).await,
                None => notified.await,
            }
        }
    }

    /// A call succeeded: after as many successes as the limit, allow one more in flight.
    pub fn success(&self) {
        if let Ok(mut s) = self.state.lock() {
            s.successes += 1;
            if s.successes >= s.limit && s.limit < self.max {
                s.limit += 1;
                s.successes = 0;
                drop(s);
                self.changed.notify_waiters();
            }
        }
    }

    /// The target said 429: halve the limit and pause every call for `retry_after`.
    pub fn throttled(&self, retry_after: Duration) {
        if let Ok(mut s) = self.state.lock() {
            s.limit = (s.limit / 2).max(1);
            s.lowest = s.lowest.min(s.limit);
            s.successes = 0;
            let until = Instant::now() + retry_after;
            s.paused_until = Some(s.paused_until.map_or(until, |p| p.max(until)));
        }
    }

    /// The current and lowest limits.
    pub fn limits(&self) -> (usize, usize) {
        self.state
            .lock()
            .map(|s| (s.limit, s.lowest))
            .unwrap_or((self.max, self.max))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_throttle_halves_the_limit_and_successes_grow_it_back() {
        let pace = Pace::new(8);
        pace.throttled(Duration::from_millis(10));
        assert_eq!(pace.limits(), (4, 4));
        pace.throttled(Duration::from_millis(10));
        assert_eq!(pace.limits(), (2, 2));
        for _ in 0..2 {
            pace.success();
        }
        assert_eq!(pace.limits(), (3, 2));
    }

    #[tokio::test(start_paused = true)]
    async fn no_slot_is_given_during_a_pause_nor_beyond_the_limit() {
        let pace = Pace::new(2);
        let a = pace.slot().await;
        let _b = pace.slot().await;
        // Both slots taken: a third waits until one is freed.
        let third = tokio::time::timeout(Duration::from_secs(1), pace.slot()).await;
        assert!(third.is_err(), "a slot was given beyond the limit");
        drop(a);
        let _c = tokio::time::timeout(Duration::from_secs(1), pace.slot())
            .await
            .expect("a freed slot is given");

        let paused = Pace::new(4);
        paused.throttled(Duration::from_secs(5));
        let start = Instant::now();
        let _slot = paused.slot().await;
        assert!(
            start.elapsed() >= Duration::from_secs(5),
            "a slot was given during the pause"
        );
    }
}
