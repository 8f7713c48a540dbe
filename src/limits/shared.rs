//! Virtual keys' request and token rates shared by every replica through Redis
//! (`limits.redis_url`). A request's checks are one round trip: a Lua script (EVALSHA, loaded
//! again on NOSCRIPT) that takes from its request and token buckets atomically, with the
//! arithmetic of [`Quota`] on Redis' own clock, so that a key behaves the same on one replica
//! or many. A busy key's checks mostly skip even that round trip: a check that goes to Redis
//! may lease cells ahead for the next ones on this replica (`lease`). Settlements after the
//! response are batched: one script call per [`SETTLE_INTERVAL`] for all of them. Every
//! request shares one multiplexed connection; none sets one up.
//!
//! Redis is a helper, never a dependency: a check that fails or gets no answer within
//! `limits.redis_timeout_ms` is counted on this replica (the caller's local limiter) instead,
//! and from then on every check is, at once, until a background probe reconnects. Going away
//! and coming back are logged once each and shown by `pasarela_limits_redis_up`.
//!
//! Must not contain the local limiters (that is `virtual_keys`, `gcra`) nor HTTP.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, FromRedisValue, Script, ScriptInvocation};
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::gcra::{Quota, Refused};
use super::lease::{LEASE_FLOOR, Lease};
use super::virtual_keys::RateStatus;
use crate::telemetry::names;

/// Takes cells from buckets in turn, atomically: `Quota::take` in microseconds, plus a lease.
/// KEYS are the buckets; ARGV[1] is `now` (µs) or empty for Redis' clock, then six per bucket:
/// interval, period, cost, limit, extra (cells asked beyond the cost, to lease) and floor (the
/// room a lease must leave above half the limit). Replies four numbers per bucket tried:
/// `1, used, 0, leased` (the bucket is full for `used` more µs, the lease included) or
/// `0, used, retry, 0` (`retry` -1: the cost exceeds the limit). The first refusal ends it:
/// later buckets are not charged for a request that will not run. A key expires when its
/// bucket is empty again, which is the state of no key.
const TAKE: &str = include_str!("lua/take.lua");

/// Charges (delta > 0) or gives back (delta < 0) cells after the fact: `Quota::adjust`. KEYS
/// are the buckets; ARGV[1] is `now` or empty, then two per bucket: interval, delta. Replies
/// `used` per bucket, as `TAKE` does.
const ADJUST: &str = include_str!("lua/adjust.lua");

/// Settlements wait at most this long to go to Redis together: one script call per interval
/// whatever the request rate, instead of one per request.
const SETTLE_INTERVAL: Duration = Duration::from_millis(10);

/// How often the probe checks on Redis: reconnects while it is away, PINGs while it is up
/// (so that an idle replica's gauge tells the truth too).
const PROBE_INTERVAL: Duration = Duration::from_secs(1);

/// Connecting may take a few round trips (TCP, TLS, AUTH, loading the scripts); only the
/// probe waits for it, never a request.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Hex digits of the key's SHA-256 in its Redis names: 128 bits keep keys apart, and the
/// whole hash, which the store keeps to recognise the key, stays out of Redis.
const KEY_ID_CHARS: usize = 32;

/// A `limits.redis_url` the client refuses.
#[derive(Debug, thiserror::Error)]
#[error("`limits.redis_url`: {0}")]
pub struct SharedError(String);

/// The rate a bucket counts, in metrics and Redis key names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateKind {
    Requests,
    Tokens,
}

impl RateKind {
    fn as_str(self) -> &'static str {
        match self {
            RateKind::Requests => "requests",
            RateKind::Tokens => "tokens",
        }
    }
}

/// The connection to Redis and whether it answers.
pub struct SharedLimits {
    client: redis::Client,
    /// `None` while Redis is away; only the probe puts one back.
    conn: RwLock<Option<Connection>>,
    /// Connections opened so far, to number them.
    opened: AtomicU64,
    up: AtomicBool,
    prefix: String,
    timeout: Duration,
    /// How long leased cells may be spent here; zero: every check goes to Redis.
    lease_ttl: Duration,
    take: Script,
    adjust: Script,
    wake_probe: Notify,
    /// Settlements for the next batch, and the settler's wake-up.
    settlements: Mutex<Vec<Settlement>>,
    wake_settler: Notify,
}

impl fmt::Debug for SharedLimits {
    // The client's own `Debug` shows its password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedLimits")
            .field("redis", &self.addr())
            .field("prefix", &self.prefix)
            .field("up", &self.is_up())
            .finish_non_exhaustive()
    }
}

impl SharedLimits {
    /// Connects to `url`. Only an unusable URL is an error: when Redis does not answer, the
    /// gateway starts with rates counted per replica and the probe connects later.
    pub async fn connect(
        url: &SecretString,
        prefix: &str,
        timeout: Duration,
        lease_ttl: Duration,
    ) -> Result<Arc<SharedLimits>, SharedError> {
        let client =
            redis::Client::open(url.expose_secret()).map_err(|e| SharedError(e.to_string()))?;
        let limits = Arc::new(SharedLimits {
            client,
            conn: RwLock::new(None),
            opened: AtomicU64::new(0),
            up: AtomicBool::new(false),
            prefix: prefix.to_owned(),
            timeout,
            lease_ttl,
            take: Script::new(TAKE),
            adjust: Script::new(ADJUST),
            wake_probe: Notify::new(),
            settlements: Mutex::new(Vec::new()),
            wake_settler: Notify::new(),
        });
        metrics::gauge!(names::LIMITS_REDIS_UP).set(0.0);
        match limits.open().await {
            Ok(conn) => {
                limits.came_back(conn);
            }
            Err(e) => tracing::warn!(redis = %limits.addr(), error = %e,
                "Redis is unavailable: virtual keys' rates are counted on each replica alone \
                 until it answers"),
        }
        Ok(limits)
    }

    /// Whether checks go to Redis now.
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Acquire)
    }

    /// The bucket in Redis for one rate of the key whose stored hash is `key_hash`.
    pub fn bucket(self: &Arc<Self>, key_hash: &str, kind: RateKind, quota: Quota) -> SharedBucket {
        let hex = key_hash.strip_prefix("sha256:").unwrap_or(key_hash);
        let id: String = hex.chars().take(KEY_ID_CHARS).collect();
        SharedBucket {
            limits: self.clone(),
            key: format!("{}:{}:{id}", self.prefix, kind.as_str()),
            kind,
            quota,
            lease: Arc::new(Lease::new()),
        }
    }

    /// Starts the background work until `stop` is cancelled: the probe, which checks on Redis
    /// every [`PROBE_INTERVAL`] and at once when a check found it gone, and the settler, which
    /// sends settlements in batches (and the last ones on the way out).
    pub fn spawn_tasks(self: &Arc<Self>, stop: &CancellationToken) {
        let limits = self.clone();
        let probe_stop = stop.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = probe_stop.cancelled() => return,
                    () = tokio::time::sleep(PROBE_INTERVAL) => {}
                    () = limits.wake_probe.notified() => {}
                }
                limits.probe().await;
            }
        });
        let limits = self.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = stop.cancelled() => break,
                    () = limits.wake_settler.notified() => {}
                }
                limits.settle_queued(None).await;
                // What arrives meanwhile waits for the next batch.
                tokio::select! {
                    () = stop.cancelled() => break,
                    () = tokio::time::sleep(SETTLE_INTERVAL) => {}
                }
            }
            limits.settle_queued(None).await;
        });
    }

    fn queue_settlement(&self, settlement: Settlement) {
        let Ok(mut queue) = self.settlements.lock() else {
            return;
        };
        queue.push(settlement);
        drop(queue);
        self.wake_settler.notify_one();
    }

    /// Sends every queued settlement in one script call, a bucket's deltas summed.
    async fn settle_queued(&self, now: Option<u64>) {
        let queued = match self.settlements.lock() {
            Ok(mut queue) => std::mem::take(&mut *queue),
            Err(_) => return,
        };
        if queued.is_empty() {
            return;
        }
        // One entry per bucket: its summed delta and everyone waiting on it.
        struct Merged {
            key: String,
            quota: Quota,
            delta: i64,
            thens: Vec<Then>,
        }
        let mut buckets: Vec<Merged> = Vec::new();
        for s in queued {
            match buckets.iter_mut().find(|b| b.key == s.key) {
                Some(bucket) => {
                    bucket.delta = bucket.delta.saturating_add(s.delta);
                    bucket.thens.push(s.then);
                }
                None => buckets.push(Merged {
                    key: s.key,
                    quota: s.quota,
                    delta: s.delta,
                    thens: vec![s.then],
                }),
            }
        }
        let mut call = self.adjust.prepare_invoke();
        call.arg(now_arg(now));
        for bucket in &buckets {
            call.key(&bucket.key)
                .arg(micros_arg(bucket.quota.interval_micros()))
                .arg(bucket.delta);
        }
        let Some(used) = self.eval::<Vec<i64>>(&[], &call).await else {
            return;
        };
        for (bucket, used) in buckets.into_iter().zip(used) {
            let status = bucket.quota.status(nanos(used), 0);
            for then in bucket.thens {
                then(status);
            }
        }
    }

    async fn probe(&self) {
        if let Some(Connection { number, mut conn }) = self.connection() {
            let ping = redis::cmd("PING");
            match tokio::time::timeout(self.timeout, ping.query_async::<()>(&mut conn)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => self.went_away(number, &e),
                Err(_) => self.went_away(number, &NoAnswer(self.timeout)),
            }
            return;
        }
        // Still away: it was said once, when it went.
        if let Ok(Ok(conn)) = tokio::time::timeout(CONNECT_TIMEOUT, self.open()).await {
            self.came_back(conn);
        }
    }

    async fn open(&self) -> redis::RedisResult<MultiplexedConnection> {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(self.timeout));
        let mut conn = self
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        // Proves that the server runs scripts, and spares the first checks a NOSCRIPT.
        self.take.load_async(&mut conn).await?;
        self.adjust.load_async(&mut conn).await?;
        Ok(conn)
    }

    fn came_back(&self, conn: MultiplexedConnection) {
        let number = self.opened.fetch_add(1, Ordering::Relaxed) + 1;
        let Ok(mut slot) = self.conn.write() else {
            return;
        };
        *slot = Some(Connection { number, conn });
        drop(slot);
        if !self.up.swap(true, Ordering::AcqRel) {
            metrics::gauge!(names::LIMITS_REDIS_UP).set(1.0);
            tracing::info!(redis = %self.addr(), prefix = %self.prefix,
                "Redis answers: virtual keys' rates are shared by the replicas");
        }
    }

    /// Connection `number` failed: unless it was replaced already, Redis is away.
    fn went_away(&self, number: u64, why: &dyn fmt::Display) {
        let Ok(mut slot) = self.conn.write() else {
            return;
        };
        if slot.as_ref().is_none_or(|c| c.number != number) {
            return;
        }
        *slot = None;
        drop(slot);
        if self.up.swap(false, Ordering::AcqRel) {
            metrics::gauge!(names::LIMITS_REDIS_UP).set(0.0);
            tracing::warn!(redis = %self.addr(), error = %why,
                "Redis is unavailable: virtual keys' rates are counted on each replica alone \
                 until it answers again");
            self.wake_probe.notify_one();
        }
    }

    fn connection(&self) -> Option<Connection> {
        if !self.is_up() {
            return None;
        }
        self.conn.read().ok()?.clone()
    }

    /// Host and port, never the password.
    fn addr(&self) -> String {
        self.client.get_connection_info().addr().to_string()
    }

    /// Runs a script; `None` when Redis did not answer it, after counting the checks it held
    /// (`kinds`) as served locally. Any error counts as Redis going away, even one of a
    /// single script call: the probe finds it back within a round trip if it is there.
    async fn eval<T: FromRedisValue>(
        &self,
        kinds: &[RateKind],
        invocation: &ScriptInvocation<'_>,
    ) -> Option<T> {
        if let Some(Connection { number, mut conn }) = self.connection() {
            let call = invocation.invoke_async(&mut conn);
            match tokio::time::timeout(self.timeout, call).await {
                Ok(Ok(value)) => return Some(value),
                Ok(Err(e)) => self.went_away(number, &e),
                Err(_) => self.went_away(number, &NoAnswer(self.timeout)),
            }
        }
        for kind in kinds {
            metrics::counter!(names::LIMITS_LOCAL_CHECKS, "limit" => kind.as_str()).increment(1);
        }
        None
    }
}

/// A connection and its number: checks still in flight on one that failed must not take
/// down the next (a burst's worth of them time out together).
#[derive(Clone)]
struct Connection {
    number: u64,
    conn: MultiplexedConnection,
}

/// A check that waited too long.
struct NoAnswer(Duration);

impl fmt::Display for NoAnswer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "no answer within {} ms", self.0.as_millis())
    }
}

/// One rate of one key, in Redis.
pub struct SharedBucket {
    limits: Arc<SharedLimits>,
    key: String,
    kind: RateKind,
    quota: Quota,
    lease: Arc<Lease>,
}

impl SharedBucket {
    /// Takes `cost` cells from this bucket alone (requests take theirs with
    /// [`take_together`]); `None` when Redis did not answer.
    #[cfg(test)]
    async fn take(&self, cost: u64) -> Option<Result<RateStatus, Refused>> {
        let mut taken = take_together(&[(self, cost)]).await?;
        taken.pop()
    }

    /// Keeps `cells` leased by a check after which the bucket was used for `used` nanoseconds,
    /// and gives back what is left of them when the lease ends.
    fn leased(&self, cells: u64, used: u128) {
        let ttl = self.limits.lease_ttl;
        let Some(generation) = self.lease.grant(cells, used, ttl) else {
            return;
        };
        let (lease, limits) = (self.lease.clone(), self.limits.clone());
        let (key, quota) = (self.key.clone(), self.quota);
        tokio::spawn(async move {
            tokio::time::sleep(ttl).await;
            let left = lease.end(generation);
            if left > 0 {
                limits.queue_settlement(Settlement {
                    key,
                    quota,
                    delta: -i64::try_from(left).unwrap_or(i64::MAX),
                    then: Box::new(|_| {}),
                });
            }
        });
    }

    /// Charges or gives back `delta` cells with the next batch of settlements (within
    /// [`SETTLE_INTERVAL`]), then hands the bucket's state to `then`. Lost if Redis is away
    /// by then: the bucket refills on its own.
    pub fn settle(&self, delta: i64, then: impl FnOnce(RateStatus) + Send + 'static) {
        self.limits.queue_settlement(Settlement {
            key: self.key.clone(),
            quota: self.quota,
            delta,
            then: Box::new(then),
        });
    }

    /// Charges or gives back `delta` cells at once (tests: settlements go in batches);
    /// `now` as for [`take_together_at`].
    #[cfg(test)]
    async fn adjust_at(&self, delta: i64, now: Option<u64>) -> Option<RateStatus> {
        let mut call = self.limits.adjust.prepare_invoke();
        call.key(&self.key)
            .arg(now_arg(now))
            .arg(micros_arg(self.quota.interval_micros()))
            .arg(delta);
        let used: Vec<i64> = self.limits.eval(&[], &call).await?;
        Some(self.quota.status(nanos(*used.first()?), 0))
    }
}

/// Takes `cost` cells from each bucket in turn, stopping at the first that refuses: one result
/// per bucket tried. From cells leased here when every bucket has enough, else in one round
/// trip (which may lease more). `None` when Redis did not answer, for the caller to count every
/// bucket locally. The buckets must share one connection (one `SharedLimits`), and be given in
/// the same order by every caller (their leases are locked in that order).
pub async fn take_together(
    takes: &[(&SharedBucket, u64)],
) -> Option<Vec<Result<RateStatus, Refused>>> {
    if let Some(spent) = spend_leased(takes) {
        return Some(spent);
    }
    take_together_at(takes, None).await
}

/// Spends every bucket's `cost` from its lease, or none when one of them has too few cells.
fn spend_leased(takes: &[(&SharedBucket, u64)]) -> Option<Vec<Result<RateStatus, Refused>>> {
    let now = std::time::Instant::now();
    let mut states = Vec::with_capacity(takes.len());
    for (bucket, cost) in takes {
        let state = bucket.lease.lock()?;
        if !state.covers(*cost, now) {
            return None;
        }
        states.push(state);
    }
    let spent = takes
        .iter()
        .zip(&mut states)
        .map(|((bucket, cost), state)| Ok(state.spend(*cost, &bucket.quota, now)))
        .collect();
    Some(spent)
}

/// `now`: microseconds on a clock of the caller's, for tests; `None`: Redis' clock.
async fn take_together_at(
    takes: &[(&SharedBucket, u64)],
    now: Option<u64>,
) -> Option<Vec<Result<RateStatus, Refused>>> {
    let (first, _) = takes.first()?;
    let limits = &first.limits;
    let leasing = !limits.lease_ttl.is_zero();
    let asking: Vec<_> = takes
        .iter()
        .map(|(bucket, cost)| leasing.then(|| bucket.lease.ask(*cost)).flatten())
        .collect();
    let mut call = limits.take.prepare_invoke();
    call.arg(now_arg(now));
    for ((bucket, cost), asking) in takes.iter().zip(&asking) {
        let q = bucket.quota;
        call.key(&bucket.key)
            .arg(micros_arg(q.interval_micros()))
            .arg(micros_arg(q.period_micros()))
            .arg(*cost)
            .arg(q.limit)
            .arg(asking.as_ref().map_or(0, |a| a.extra))
            .arg(cost.saturating_mul(LEASE_FLOOR));
    }
    let kinds: Vec<RateKind> = takes.iter().map(|(b, _)| b.kind).collect();
    let reply: Vec<i64> = limits.eval(&kinds, &call).await?;
    let mut results = Vec::with_capacity(takes.len());
    for ((bucket, _), answer) in takes.iter().zip(reply.chunks(4)) {
        let q = bucket.quota;
        match answer {
            [1, used, _, leased] => {
                let leased = u64::try_from(*leased).unwrap_or(0);
                let used = nanos(*used);
                if leased > 0 {
                    bucket.leased(leased, used);
                }
                // The cells leased are this replica's to spend: free, as the client sees it.
                let held = u128::from(leased) * q.interval_nanos();
                results.push(Ok(q.status(used.saturating_sub(held), 0)));
            }
            [0, used, retry, _] => {
                let retry = u64::try_from(*retry).ok().map(|r| u128::from(r) * 1000);
                results.push(Err(q.refused(nanos(*used), retry)));
                break;
            }
            _ => {
                tracing::warn!(key = %bucket.key, ?reply, "unexpected reply from the rate script");
                return None;
            }
        }
    }
    if results.is_empty() {
        tracing::warn!(?reply, "empty reply from the rate script");
        return None;
    }
    Some(results)
}

/// A correction waiting to go to Redis, and what to do with the bucket's state after it.
struct Settlement {
    key: String,
    quota: Quota,
    delta: i64,
    then: Then,
}

/// What a settlement does with its bucket's state once Redis has it.
type Then = Box<dyn FnOnce(RateStatus) + Send>;

/// The script's `now`: a number, or empty for Redis' clock.
fn now_arg(now: Option<u64>) -> String {
    now.map(|n| n.to_string()).unwrap_or_default()
}

fn micros_arg(v: u128) -> u64 {
    u64::try_from(v).unwrap_or(u64::MAX)
}

/// Microseconds from a script to the nanoseconds of `Quota`.
fn nanos(micros: i64) -> u128 {
    u128::from(u64::try_from(micros).unwrap_or(0)) * 1000
}

#[cfg(test)]
#[path = "shared_tests.rs"]
mod tests;
