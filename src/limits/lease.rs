//! Cells a replica takes from a shared bucket ahead of need, so that a busy key's requests are
//! counted without a round trip to Redis each.
//!
//! A check that goes to Redis anyway may ask for cells beyond its own cost (one check per
//! bucket asks at a time, so that a burst does not lease once per request in flight). Redis
//! grants them only while the bucket stays under half spent with room for [`LEASE_FLOOR`] more
//! such requests (the `TAKE` script decides, atomically), so a small or nearly spent bucket is
//! always counted exactly. The replica spends the cells locally until they run out or the lease
//! ends; what is left then goes back to Redis. Cells are charged in Redis when leased, so
//! leasing never lets more through than the limit: at worst one replica holds, for one lease,
//! cells that another could have used.
//!
//! Must not contain Redis calls (see `shared`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::gcra::Quota;
use super::virtual_keys::RateStatus;

/// A lease is granted only while the bucket keeps, after it, this many requests' worth of room
/// above half its limit.
pub(super) const LEASE_FLOOR: u64 = 64;
/// Requests' worth asked ahead at first; doubled each time a lease runs out before it ends,
/// halved each time one ends unspent.
const FIRST_AHEAD: u64 = 8;
const MAX_AHEAD: u64 = 4096;

/// One bucket's leased cells on this replica.
#[derive(Debug)]
pub(super) struct Lease {
    state: Mutex<State>,
    asking: AtomicBool,
}

#[derive(Debug)]
pub(super) struct State {
    cells: u64,
    /// The bucket's use in Redis when cells were last granted (nanoseconds ahead of then),
    /// which counts every cell still held here.
    used_at_grant: u128,
    granted_at: Instant,
    ends: Instant,
    /// Tells a lease's end from a later lease's.
    generation: u64,
    ahead: u64,
}

/// The right to ask Redis for cells ahead, held by one check at a time per bucket.
#[derive(Debug)]
pub(super) struct Asking<'a> {
    lease: &'a Lease,
    pub extra: u64,
}

impl Drop for Asking<'_> {
    fn drop(&mut self) {
        self.lease.asking.store(false, Ordering::Release);
    }
}

impl Lease {
    pub(super) fn new() -> Lease {
        let now = Instant::now();
        Lease {
            state: Mutex::new(State {
                cells: 0,
                used_at_grant: 0,
                granted_at: now,
                ends: now,
                generation: 0,
                ahead: FIRST_AHEAD,
            }),
            asking: AtomicBool::new(false),
        }
    }

    /// The state, to check several buckets' leases together (lock them in one order).
    pub(super) fn lock(&self) -> Option<MutexGuard<'_, State>> {
        self.state.lock().ok()
    }

    /// How many cells beyond `cost` a check to Redis asks for; `None` while another check of
    /// this bucket is asking.
    pub(super) fn ask(&self, cost: u64) -> Option<Asking<'_>> {
        if self.asking.swap(true, Ordering::AcqRel) {
            return None;
        }
        let ahead = self.lock().map_or(FIRST_AHEAD, |mut s| {
            let now = Instant::now();
            if s.generation > 0 && s.cells == 0 && now < s.ends {
                // The last lease ran out while it could still be spent: ask for more, once.
                s.ahead = (s.ahead * 2).min(MAX_AHEAD);
                s.ends = now;
            }
            s.ahead
        });
        Some(Asking {
            lease: self,
            extra: ahead.saturating_mul(cost.max(1)),
        })
    }

    /// Adds `cells` granted by a check after which the bucket's use in Redis was `used`
    /// (nanoseconds); they may be spent until `ttl` from now. Returns the lease's generation,
    /// for [`Lease::end`].
    pub(super) fn grant(&self, cells: u64, used: u128, ttl: Duration) -> Option<u64> {
        let mut s = self.lock()?;
        let now = Instant::now();
        s.cells += cells;
        s.used_at_grant = used;
        s.granted_at = now;
        s.ends = now + ttl;
        s.generation += 1;
        Some(s.generation)
    }

    /// Ends the lease of `generation`, unless a later grant extended it: the cells left, to
    /// give back.
    pub(super) fn end(&self, generation: u64) -> u64 {
        let Some(mut s) = self.lock() else {
            return 0;
        };
        if s.generation != generation || s.cells == 0 {
            return 0;
        }
        s.ahead = (s.ahead / 2).max(1);
        s.ends = Instant::now();
        std::mem::take(&mut s.cells)
    }
}

impl State {
    /// Whether `cost` cells can be spent here now.
    pub(super) fn covers(&self, cost: u64, now: Instant) -> bool {
        self.cells >= cost && now < self.ends
    }

    /// Spends `cost` cells ([`State::covers`] said so); the bucket as the client sees it, its
    /// cells still held here counted as free.
    pub(super) fn spend(&mut self, cost: u64, quota: &Quota, now: Instant) -> RateStatus {
        self.cells -= cost;
        let held = u128::from(self.cells) * quota.interval_nanos();
        let elapsed = now.saturating_duration_since(self.granted_at).as_nanos();
        quota.status(self.used_at_grant.saturating_sub(held + elapsed), 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TTL: Duration = Duration::from_secs(60);

    #[test]
    fn granted_cells_are_spent_here_until_they_run_out_and_count_as_free_meanwhile() {
        let lease = Lease::new();
        let quota = Quota::per_minute(600); // 100 ms a cell
        let cell = quota.interval_nanos();
        // Redis took 1 + 4 cells: 5 used.
        lease.grant(4, 5 * cell, TTL).unwrap();
        let now = Instant::now();
        let mut s = lease.lock().unwrap();
        assert!(s.covers(4, now) && !s.covers(5, now));
        let status = s.spend(1, &quota, now);
        // 2 requests spent so far (one at Redis, this one), 3 cells still held here.
        assert!(
            (598..=599).contains(&status.remaining),
            "{}",
            status.remaining
        );
        s.spend(3, &quota, now);
        assert!(!s.covers(1, now));
    }

    #[test]
    fn an_ended_lease_gives_its_cells_back_once_and_a_later_grant_is_not_ended_by_an_earlier_end() {
        let lease = Lease::new();
        let first = lease.grant(10, 0, TTL).unwrap();
        let second = lease.grant(5, 0, TTL).unwrap();
        assert_eq!(lease.end(first), 0, "the later grant holds the cells now");
        assert_eq!(lease.end(second), 15);
        assert_eq!(lease.end(second), 0);
    }

    #[test]
    fn a_lease_past_its_end_covers_nothing() {
        let lease = Lease::new();
        lease.grant(10, 0, Duration::ZERO).unwrap();
        assert!(!lease.lock().unwrap().covers(1, Instant::now()));
    }

    #[test]
    fn one_check_asks_at_a_time_and_the_size_follows_what_was_spent() {
        let lease = Lease::new();
        let asking = lease.ask(3).unwrap();
        assert_eq!(
            asking.extra,
            FIRST_AHEAD * 3,
            "requests' worth of this cost"
        );
        assert!(
            lease.ask(3).is_none(),
            "a second check does not ask meanwhile"
        );
        drop(asking);
        // Spent to the last cell while the lease held: the next asks for twice as much, and
        // one more ask without a grant between does not double it again.
        lease.grant(8, 0, TTL).unwrap();
        lease
            .lock()
            .unwrap()
            .spend(8, &Quota::per_minute(600), Instant::now());
        assert_eq!(lease.ask(1).unwrap().extra, FIRST_AHEAD * 2);
        assert_eq!(lease.ask(1).unwrap().extra, FIRST_AHEAD * 2);
        // Ended with cells left: half as much.
        let generation = lease.grant(16, 0, TTL).unwrap();
        assert_eq!(lease.end(generation), 16);
        assert_eq!(lease.ask(1).unwrap().extra, FIRST_AHEAD);
    }
}
