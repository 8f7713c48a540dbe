//! Virtual keys: keys made and revoked at run time (admin API, CLI), each with the models it
//! may use and its own limits. Their settings live in the store; this module makes keys,
//! checks what a request may do, and keeps every active key in memory so that the request
//! path reads no database.
//!
//! The cache follows the store's `keys` change counter, checked every [`REFRESH_INTERVAL`]
//! (and at once after this replica's own writes), as the prompt registry does. A key's
//! settings never change once stored, so a refresh keeps the entries of keys it already holds:
//! their rate limiter and concurrency slots carry on rather than start afresh.
//!
//! Counted here: request rate (GCRA, `governor`, one limiter per key since each key has its
//! own quota), token rate (the same algorithm with reservations settled afterwards, `gcra`)
//! and concurrent requests (a semaphore per key). Spend is counted in `spend`. With
//! `limits.redis_url` the two rates are counted in Redis instead, shared by every replica
//! (`shared`), and here only while Redis is away; concurrency stays per replica.
//!
//! Must not contain SQL (that is `store`) nor HTTP (that is `server`).

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};
use secrecy::SecretString;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use super::gcra::{self, LocalBucket, Refused};
use super::governed;
use super::shared::{self, RateKind, SharedBucket, SharedLimits};
use super::spend::{Prices, SpendBook};
use super::{ApiKeyHash, generate_key};
use crate::store::{Budget, NewKey, Store, StoreError, VirtualKey};

/// How often the cache checks the store for keys made or revoked by another replica or the
/// CLI: a revoked key stops working within this long everywhere.
pub const REFRESH_INTERVAL: Duration = Duration::from_secs(2);

/// Shown in lists to tell keys apart: `sk-pasarela-` and four hex digits (16 bits, so the
/// prefix reveals nothing useful about the other 240).
const PREFIX_CHARS: usize = 16;

const MAX_NAME_CHARS: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum KeysError {
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error(transparent)]
    Store(StoreError),
}

impl From<StoreError> for KeysError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(what) => KeysError::NotFound(format!("no {what}")),
            StoreError::Conflict(why) => KeysError::Conflict(why),
            other => KeysError::Store(other),
        }
    }
}

/// What a new key may do. `None`: no limit.
#[derive(Debug, Clone, Default)]
pub struct KeySpec {
    pub name: String,
    /// Empty: every model.
    pub models: Vec<String>,
    pub rpm: Option<u32>,
    pub tpm: Option<u32>,
    pub max_concurrent: Option<u32>,
    pub budget: Option<Budget>,
    /// Record the prompt and completion text of this key's requests on their spans.
    pub record_content: bool,
}

/// A key just made: the only time its secret exists outside the caller's hands.
pub struct CreatedKey {
    pub key: SecretString,
    pub record: VirtualKey,
}

/// Makes a key for `spec` and stores its hash.
pub async fn create_key(store: &Store, spec: KeySpec) -> Result<CreatedKey, KeysError> {
    check_name(&spec.name)?;
    for (what, value) in [
        ("rpm", spec.rpm),
        ("tpm", spec.tpm),
        ("max_concurrent", spec.max_concurrent),
    ] {
        if value == Some(0) {
            return Err(KeysError::Invalid(format!(
                "{what} must be at least 1 (leave it out for no limit)"
            )));
        }
    }
    if spec.models.iter().any(|m| m.trim().is_empty()) {
        return Err(KeysError::Invalid("model names must not be empty".into()));
    }
    if spec.budget.is_some_and(|b| b.micro_usd < 0) {
        return Err(KeysError::Invalid("a budget must not be negative".into()));
    }
    let key = generate_key();
    let new = NewKey {
        name: spec.name,
        key_hash: ApiKeyHash::of(&key).to_string(),
        key_prefix: key.chars().take(PREFIX_CHARS).collect(),
        allowed_models: spec.models,
        rpm: spec.rpm,
        tpm: spec.tpm,
        max_concurrent: spec.max_concurrent,
        budget: spec.budget,
        record_content: spec.record_content,
    };
    let record = store.keys().create(&new).await?;
    Ok(CreatedKey {
        key: SecretString::from(key),
        record,
    })
}

/// Revokes the active key named `name`.
pub async fn revoke_key(store: &Store, name: &str) -> Result<VirtualKey, KeysError> {
    Ok(store.keys().revoke(name).await?)
}

/// Every key, revoked ones included, sorted by name.
pub async fn list_keys(store: &Store) -> Result<Vec<VirtualKey>, KeysError> {
    Ok(store.keys().list().await?)
}

/// Dollars to the store's millionths, refusing amounts that are not a sum of money.
pub fn micro_usd(usd: f64) -> Result<i64, KeysError> {
    // 9e12 millionths (9 million dollars) keeps far inside i64 and above any real budget.
    if !usd.is_finite() || !(0.0..=9e6).contains(&usd) {
        return Err(KeysError::Invalid(format!(
            "a budget of {usd} USD: give an amount from 0 to 9000000"
        )));
    }
    #[expect(
        clippy::cast_possible_truncation,
        reason = "the range is checked above; rounding to a millionth is intended"
    )]
    Ok((usd * 1e6).round() as i64)
}

fn check_name(name: &str) -> Result<(), KeysError> {
    let ok = !name.is_empty()
        && name.chars().count() <= MAX_NAME_CHARS
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(KeysError::Invalid(format!(
            "invalid key name `{name}`: use 1 to {MAX_NAME_CHARS} letters, digits, `-`, `_` or `.`"
        )))
    }
}

type Limiter = RateLimiter<NotKeyed, InMemoryState, DefaultClock, StateInformationMiddleware>;

/// Where a key stands against its request rate, for the `x-ratelimit-*-requests` headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateStatus {
    pub limit: u32,
    pub remaining: u32,
    /// Until the key could make `limit` requests at once again.
    pub reset: Duration,
}

/// A request over the rate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateDenied {
    pub status: RateStatus,
    /// Until one more request would be let through.
    pub retry_after: Duration,
}

/// What a request took from its key's rates.
#[derive(Debug)]
pub struct TakenRates {
    /// `None`: the key has no request rate.
    pub requests: Option<Result<RateStatus, RateDenied>>,
    /// `None`: no tokens asked for, no token rate, or the request rate refused first.
    pub tokens: Option<Result<(RateStatus, Reservation), Refused>>,
}

/// Every concurrent-request slot of a key is taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlotsTaken;

/// Tokens reserved for one request, and where, so that it is settled there.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Reservation {
    pub tokens: u64,
    /// In Redis rather than this replica's bucket.
    pub shared: bool,
}

/// One active key as the request path sees it.
pub struct KeyPolicy {
    pub id: i64,
    pub name: String,
    /// Empty: every model.
    pub allowed_models: Vec<String>,
    pub max_concurrent: Option<u32>,
    pub budget: Option<Budget>,
    /// Record the prompt and completion text of this key's requests on their spans.
    pub record_content: bool,
    rate: Option<Limiter>,
    /// Tokens per minute: reserved before a call, settled on its usage.
    tokens: Option<LocalBucket>,
    /// The same two rates in Redis, shared by the replicas; the local ones count while
    /// Redis is away.
    shared_rate: Option<SharedBucket>,
    shared_tokens: Option<SharedBucket>,
    slots: Option<Arc<Semaphore>>,
}

impl KeyPolicy {
    fn new(key: &VirtualKey, shared: Option<&Arc<SharedLimits>>) -> KeyPolicy {
        let shared_bucket = |kind, limit: Option<u32>| {
            let limit = u64::from(limit.filter(|l| *l > 0)?);
            Some(shared?.bucket(&key.key_hash, kind, gcra::Quota::per_minute(limit)))
        };
        KeyPolicy {
            shared_rate: shared_bucket(RateKind::Requests, key.rpm),
            shared_tokens: shared_bucket(RateKind::Tokens, key.tpm),
            id: key.id,
            name: key.name.clone(),
            allowed_models: key.allowed_models.clone(),
            max_concurrent: key.max_concurrent,
            budget: key.budget,
            record_content: key.record_content,
            tokens: key
                .tpm
                .map(|tpm| LocalBucket::new(gcra::Quota::per_minute(u64::from(tpm)))),
            // A rate of N per minute allows a burst of N, as OpenAI's per-minute limits do.
            rate: key
                .rpm
                .and_then(NonZeroU32::new)
                .map(|rpm| RateLimiter::direct(Quota::per_minute(rpm)).with_middleware()),
            slots: key
                .max_concurrent
                .map(|n| Arc::new(Semaphore::new(n as usize))),
        }
    }

    pub fn allows_model(&self, model: &str) -> bool {
        self.allowed_models.is_empty() || self.allowed_models.iter().any(|m| m == model)
    }

    /// Counts one request against the key's request rate and, if it is let through and
    /// `tokens` is given, reserves that many against its token rate: with shared limits, one
    /// round trip to Redis for both.
    pub async fn take_rates(&self, tokens: Option<u64>) -> TakenRates {
        let tokens = tokens.filter(|_| self.tokens.is_some());
        let mut takes = Vec::with_capacity(2);
        if let Some(bucket) = &self.shared_rate {
            takes.push((bucket, 1));
        }
        if let (Some(bucket), Some(estimate)) = (&self.shared_tokens, tokens) {
            takes.push((bucket, estimate));
        }
        if !takes.is_empty()
            && let Some(taken) = shared::take_together(&takes).await
        {
            return self.shared_taken(taken, tokens);
        }
        let requests = self
            .rate
            .as_ref()
            .map(|limiter| governed::decision(limiter.check(), limiter.clock().now()));
        if matches!(requests, Some(Err(_))) {
            return TakenRates {
                requests,
                tokens: None,
            };
        }
        let reservation = |estimate| Reservation {
            tokens: estimate,
            shared: false,
        };
        let tokens = match (&self.tokens, tokens) {
            (Some(local), Some(estimate)) => Some(
                local
                    .take(estimate)
                    .map(|status| (status, reservation(estimate))),
            ),
            _ => None,
        };
        TakenRates { requests, tokens }
    }

    /// Reads Redis' answers in the order `take_rates` asked.
    fn shared_taken(
        &self,
        taken: Vec<Result<RateStatus, Refused>>,
        estimate: Option<u64>,
    ) -> TakenRates {
        let mut taken = taken.into_iter();
        let requests = self.shared_rate.as_ref().and_then(|_| {
            taken.next().map(|checked| {
                checked.map_err(|refused| RateDenied {
                    status: refused.status,
                    retry_after: refused.retry_after.unwrap_or_default(),
                })
            })
        });
        let tokens = match (&self.tokens, estimate, taken.next()) {
            (Some(local), Some(estimate), Some(taken)) => {
                local.mirror(taken.map_or_else(|r| r.status.reset, |s| s.reset));
                let reservation = Reservation {
                    tokens: estimate,
                    shared: true,
                };
                Some(taken.map(|status| (status, reservation)))
            }
            _ => None,
        };
        TakenRates { requests, tokens }
    }

    /// The key's tokens-per-minute limit, if it has one.
    pub fn token_limit(&self) -> Option<u64> {
        self.tokens.as_ref().map(|b| b.quota().limit)
    }

    /// Where the key stands against its token rate, without taking any.
    pub fn token_status(&self) -> Option<RateStatus> {
        self.tokens.as_ref().map(|b| b.adjust(0))
    }

    /// Settles a reservation on what the request really used, where it was made. Called
    /// when a response ends (synchronously), so a shared one goes with the next batch of
    /// settlements; if Redis is gone by then, the correction is lost and the shared bucket
    /// refills on its own.
    pub fn settle_tokens(self: &Arc<Self>, reservation: Reservation, used: u64) {
        let delta = i64::try_from(used).unwrap_or(i64::MAX)
            - i64::try_from(reservation.tokens).unwrap_or(i64::MAX);
        if delta == 0 {
            return;
        }
        if reservation.shared {
            if let Some(shared) = &self.shared_tokens {
                let policy = self.clone();
                shared.settle(delta, move |status| {
                    if let Some(local) = &policy.tokens {
                        local.mirror(status.reset);
                    }
                });
            }
        } else if let Some(bucket) = &self.tokens {
            bucket.adjust(delta);
        }
    }

    /// Takes one of the key's concurrent-request slots, held until the permit is dropped.
    /// `Ok(None)` when the key has no such limit; `Err` when every slot is taken.
    pub fn try_start(&self) -> Result<Option<OwnedSemaphorePermit>, SlotsTaken> {
        match &self.slots {
            None => Ok(None),
            Some(slots) => slots
                .clone()
                .try_acquire_owned()
                .map(Some)
                .map_err(|_| SlotsTaken),
        }
    }
}

/// OpenAI's form of a duration in `x-ratelimit-reset-*`: `20ms`, `1s`, `6m0s`, `1h2m3s`.
/// Whole seconds are rounded up, so that a client waiting that long is never early.
pub fn reset_text(wait: Duration) -> String {
    if wait < Duration::from_secs(1) {
        let ms = wait.as_millis() + u128::from(!wait.as_nanos().is_multiple_of(1_000_000));
        return format!("{ms}ms");
    }
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    match (h, m) {
        (0, 0) => format!("{s}s"),
        (0, _) => format!("{m}m{s}s"),
        _ => format!("{h}h{m}m{s}s"),
    }
}

/// How requests are counted against keys, from the configuration.
#[derive(Debug, Clone, Default)]
pub struct Accounting {
    pub prices: Prices,
    /// Output tokens reserved when a request sets no `max_tokens`.
    pub default_output_tokens: u32,
    /// Where rates are shared by the replicas (`limits.redis_url`); none: counted here.
    pub shared: Option<Arc<SharedLimits>>,
}

/// The active virtual keys, by hash, kept in step with the store, and their spend.
pub struct VirtualKeys {
    store: Store,
    seen_changes: AtomicI64,
    by_hash: RwLock<HashMap<String, Arc<KeyPolicy>>>,
    spend: Arc<SpendBook>,
    accounting: Accounting,
}

impl VirtualKeys {
    pub async fn load(store: Store, accounting: Accounting) -> Result<VirtualKeys, KeysError> {
        let keys = VirtualKeys {
            spend: Arc::new(SpendBook::new(store.clone())),
            store,
            seen_changes: AtomicI64::new(0),
            by_hash: RwLock::new(HashMap::new()),
            accounting,
        };
        keys.spend.sync().await?;
        keys.reload().await?;
        Ok(keys)
    }

    pub fn spend(&self) -> &SpendBook {
        &self.spend
    }

    pub fn accounting(&self) -> &Accounting {
        &self.accounting
    }

    pub fn is_empty(&self) -> bool {
        self.by_hash.read().map_or(true, |m| m.is_empty())
    }

    /// The active key `presented` is, if any. A map lookup on the SHA-256 rather than a
    /// constant-time scan: the timing can only reveal something about a hash, and nobody can
    /// choose a key for its hash.
    pub fn find(&self, presented: &str) -> Option<Arc<KeyPolicy>> {
        let hash = ApiKeyHash::of(presented).to_string();
        self.by_hash.read().ok()?.get(&hash).cloned()
    }

    pub async fn create(&self, spec: KeySpec) -> Result<CreatedKey, KeysError> {
        let created = create_key(&self.store, spec).await?;
        self.reload().await?;
        Ok(created)
    }

    pub async fn revoke(&self, name: &str) -> Result<VirtualKey, KeysError> {
        let revoked = revoke_key(&self.store, name).await?;
        self.reload().await?;
        Ok(revoked)
    }

    pub async fn list(&self) -> Result<Vec<VirtualKey>, KeysError> {
        list_keys(&self.store).await
    }

    /// Reloads the keys when the store's change counter moved. True when it did.
    pub async fn refresh(&self) -> Result<bool, KeysError> {
        let now = self.store.keys().change_counter().await?;
        if now == self.seen_changes.load(Ordering::SeqCst) {
            return Ok(false);
        }
        self.reload().await?;
        Ok(true)
    }

    /// Loads the active keys, keeping the entries (and so the limiter state) of those held.
    async fn reload(&self) -> Result<(), KeysError> {
        // Read before the keys: a write between the two is then seen again next time, never
        // missed.
        let counter = self.store.keys().change_counter().await?;
        let active = self.store.keys().active().await?;
        let Ok(mut map) = self.by_hash.write() else {
            return Err(KeysError::Invalid(
                "the key cache's lock is poisoned".into(),
            ));
        };
        let mut next = HashMap::with_capacity(active.len());
        for key in &active {
            let entry = map
                .remove(&key.key_hash)
                .unwrap_or_else(|| Arc::new(KeyPolicy::new(key, self.accounting.shared.as_ref())));
            next.insert(key.key_hash.clone(), entry);
        }
        *map = next;
        drop(map);
        self.seen_changes.store(counter, Ordering::SeqCst);
        tracing::debug!(
            active = active.len(),
            changes = counter,
            "virtual keys loaded"
        );
        Ok(())
    }

    /// Runs `refresh` every [`REFRESH_INTERVAL`] until `stop` is cancelled, and writes spend
    /// to the store (see [`SpendBook::spawn_syncer`]).
    pub fn spawn_refresher(
        self: &Arc<Self>,
        stop: CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        self.spend.spawn_syncer(stop.clone());
        let keys = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(REFRESH_INTERVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    () = stop.cancelled() => return,
                    _ = tick.tick() => {
                        if let Err(e) = keys.refresh().await {
                            tracing::warn!(error = %crate::error_chain(&e), "cannot check the virtual keys for changes");
                        }
                    }
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reset_text_follows_openai_forms_and_rounds_up() {
        assert_eq!(reset_text(Duration::from_millis(20)), "20ms");
        assert_eq!(reset_text(Duration::from_micros(19_500)), "20ms");
        assert_eq!(reset_text(Duration::from_secs(1)), "1s");
        assert_eq!(reset_text(Duration::from_millis(1_200)), "2s");
        assert_eq!(reset_text(Duration::from_secs(360)), "6m0s");
        assert_eq!(reset_text(Duration::from_secs(3723)), "1h2m3s");
    }

    #[test]
    fn key_names_are_short_and_plain() {
        assert!(check_name("team-a_1.prod").is_ok());
        for bad in ["", "has space", "slash/name", &"x".repeat(65)] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn budgets_convert_to_millionths_and_refuse_nonsense() {
        assert_eq!(micro_usd(12.5).unwrap(), 12_500_000);
        assert_eq!(micro_usd(0.000_001).unwrap(), 1);
        assert!(micro_usd(-1.0).is_err());
        assert!(micro_usd(f64::NAN).is_err());
    }

    fn policy(rpm: u32) -> KeyPolicy {
        KeyPolicy::new(
            &VirtualKey {
                id: 1,
                name: "k".into(),
                key_hash: String::new(),
                key_prefix: String::new(),
                allowed_models: vec!["a".into()],
                rpm: Some(rpm),
                tpm: None,
                max_concurrent: Some(1),
                budget: None,
                record_content: false,
                created_at: chrono::Utc::now(),
                revoked_at: None,
            },
            None,
        )
    }

    #[tokio::test]
    async fn a_burst_gets_the_rate_then_is_denied_with_a_wait() {
        let p = policy(3);
        let mut remaining = Vec::new();
        for _ in 0..3 {
            remaining.push(
                p.take_rates(None)
                    .await
                    .requests
                    .unwrap()
                    .unwrap()
                    .remaining,
            );
        }
        assert_eq!(remaining, [2, 1, 0]);
        let denied = p.take_rates(None).await.requests.unwrap().unwrap_err();
        assert_eq!(denied.status.limit, 3);
        assert_eq!(denied.status.remaining, 0);
        // One slot comes back every 20 s at 3 per minute.
        assert!(denied.retry_after <= Duration::from_secs(20));
        assert!(denied.retry_after > Duration::from_secs(19));
    }

    #[test]
    fn concurrency_slots_come_back_when_the_permit_drops() {
        let p = policy(3);
        let held = p.try_start().unwrap();
        assert!(held.is_some());
        assert!(p.try_start().is_err());
        drop(held);
        assert!(p.try_start().unwrap().is_some());
        assert!(p.allows_model("a") && !p.allows_model("b"));
    }
}
