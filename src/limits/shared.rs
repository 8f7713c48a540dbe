//! Virtual keys' request and token rates shared by every replica through Redis
//! (`limits.redis_url`). Each check is one round trip: a Lua script (EVALSHA, loaded again on
//! NOSCRIPT) that runs the arithmetic of [`Quota`] atomically on Redis' own clock, so that a
//! key behaves the same on one replica or many. Every request shares one multiplexed
//! connection; none sets one up.
//!
//! Redis is a helper, never a dependency: a check that fails or gets no answer within
//! `limits.redis_timeout_ms` is counted on this replica (the caller's local limiter) instead,
//! and from then on every check is, at once, until a background probe reconnects. Going away
//! and coming back are logged once each and shown by `pasarela_limits_redis_up`.
//!
//! Must not contain the local limiters (that is `virtual_keys`, `gcra`) nor HTTP.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, FromRedisValue, Script, ScriptInvocation};
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::gcra::{Quota, Refused};
use super::virtual_keys::RateStatus;
use crate::telemetry::names;

/// Takes `cost` cells from a bucket: `Quota::take` in microseconds. Replies `{1, used}` (the
/// bucket is full for `used` more µs) or `{0, used, retry}` (`retry` -1: the cost exceeds the
/// limit). The key expires when the bucket is empty again, which is the state of no key.
const TAKE: &str = r"
local interval, period = tonumber(ARGV[1]), tonumber(ARGV[2])
local cost, limit = tonumber(ARGV[3]), tonumber(ARGV[4])
local now = tonumber(ARGV[5])
if not now then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
end
local tat = tonumber(redis.call('GET', KEYS[1])) or 0
local base = math.max(tat, now)
local next = base + interval * cost
if next - now <= period then
  redis.call('SET', KEYS[1], string.format('%.0f', next), 'PX', math.ceil((next - now) / 1000) + 1)
  return {1, next - now}
end
local retry = -1
if cost <= limit then retry = next - now - period end
return {0, base - now, retry}
";

/// Charges (`delta` > 0) or gives back (`delta` < 0) cells after the fact: `Quota::adjust`.
/// Replies `used`, as `TAKE` does.
const ADJUST: &str = r"
local interval, delta = tonumber(ARGV[1]), tonumber(ARGV[2])
local now = tonumber(ARGV[3])
if not now then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
end
local tat = tonumber(redis.call('GET', KEYS[1])) or 0
local next
if delta >= 0 then
  next = math.max(tat, now) + interval * delta
else
  next = math.max(tat + interval * delta, now)
end
if next > now then
  redis.call('SET', KEYS[1], string.format('%.0f', next), 'PX', math.ceil((next - now) / 1000) + 1)
else
  redis.call('DEL', KEYS[1])
end
return next - now
";

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
    take: Script,
    adjust: Script,
    wake_probe: Notify,
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
            take: Script::new(TAKE),
            adjust: Script::new(ADJUST),
            wake_probe: Notify::new(),
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
        }
    }

    /// Checks on Redis every [`PROBE_INTERVAL`], and at once when a check found it gone,
    /// until `stop` is cancelled.
    pub fn spawn_probe(self: &Arc<Self>, stop: CancellationToken) -> tokio::task::JoinHandle<()> {
        let limits = self.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(PROBE_INTERVAL) => {}
                    () = limits.wake_probe.notified() => {}
                }
                limits.probe().await;
            }
        })
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

    /// Runs a script; `None` when Redis did not answer it, after counting the check as served
    /// locally when it is one (`kind`). Any error counts as Redis going away, even one of a
    /// single script call: the probe finds it back within a round trip if it is there.
    async fn eval<T: FromRedisValue>(
        &self,
        kind: Option<RateKind>,
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
        if let Some(kind) = kind {
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
}

impl SharedBucket {
    /// Takes `cost` cells; `None` when Redis did not answer, for the caller to count locally.
    pub async fn take(&self, cost: u64) -> Option<Result<RateStatus, Refused>> {
        self.take_at(cost, None).await
    }

    /// Charges or gives back `delta` cells; `None` when Redis did not answer.
    pub async fn adjust(&self, delta: i64) -> Option<RateStatus> {
        self.adjust_at(delta, None).await
    }

    /// `now`: microseconds on a clock of the caller's, for tests; `None`: Redis' clock.
    async fn take_at(&self, cost: u64, now: Option<u64>) -> Option<Result<RateStatus, Refused>> {
        let q = self.quota;
        let mut call = self.limits.take.key(&self.key);
        call.arg(micros_arg(q.interval_micros()))
            .arg(micros_arg(q.period_micros()))
            .arg(cost)
            .arg(q.limit);
        if let Some(now) = now {
            call.arg(now);
        }
        let reply: Vec<i64> = self.limits.eval(Some(self.kind), &call).await?;
        match reply.as_slice() {
            [1, used] => Some(Ok(q.status(nanos(*used), 0))),
            [0, used, retry] => {
                let retry = u64::try_from(*retry).ok().map(|r| u128::from(r) * 1000);
                Some(Err(q.refused(nanos(*used), retry)))
            }
            _ => {
                tracing::warn!(key = %self.key, ?reply, "unexpected reply from the rate script");
                None
            }
        }
    }

    async fn adjust_at(&self, delta: i64, now: Option<u64>) -> Option<RateStatus> {
        let mut call = self.limits.adjust.key(&self.key);
        call.arg(micros_arg(self.quota.interval_micros()))
            .arg(delta);
        if let Some(now) = now {
            call.arg(now);
        }
        let used: i64 = self.limits.eval(None, &call).await?;
        Some(self.quota.status(nanos(used), 0))
    }
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
