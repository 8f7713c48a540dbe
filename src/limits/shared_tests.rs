//! The scripts against a real Redis (`PASARELA_TEST_REDIS_URL`, else 127.0.0.1:6379): they
//! must count exactly as [`Quota`] does, on a clock the test sets. Where no Redis answers
//! they say SKIPPED, unless `PASARELA_REQUIRE_ALL` is set, where that is a failure.

use std::sync::atomic::{AtomicU32, Ordering};

use super::*;

const MS: u64 = 1000;

/// A connection under a prefix of this test's own that never leases (the scripts' arithmetic
/// is checked exactly), or None (after saying so) without Redis.
async fn shared_limits(test: &str) -> Option<Arc<SharedLimits>> {
    connect(test, Duration::ZERO).await
}

/// As [`shared_limits`], with leases that last `lease_ttl`.
async fn connect(test: &str, lease_ttl: Duration) -> Option<Arc<SharedLimits>> {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let url = std::env::var("PASARELA_TEST_REDIS_URL")
        .unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
    let prefix = format!(
        "pasarela-test-{}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed),
        chrono::Utc::now().timestamp_micros()
    );
    let limits = SharedLimits::connect(
        &SecretString::from(url.clone()),
        &prefix,
        Duration::from_secs(1),
        lease_ttl,
    )
    .await
    .unwrap();
    if limits.is_up() {
        return Some(limits);
    }
    assert!(
        std::env::var_os("PASARELA_REQUIRE_ALL").is_none(),
        "Redis not reachable at {url} and PASARELA_REQUIRE_ALL is set"
    );
    eprintln!("SKIPPED {test}: Redis not reachable at {url}");
    None
}

fn hash(n: u8) -> String {
    format!("sha256:{}", hex::encode([n; 32]))
}

#[tokio::test]
async fn the_take_script_counts_as_quota_take_does() {
    let Some(redis) = shared_limits("the_take_script_counts_as_quota_take_does").await else {
        return;
    };
    // One cell every 100 ms: microseconds and nanoseconds give the same interval.
    let quota = Quota::per_minute(600);
    let bucket = redis.bucket(&hash(1), RateKind::Tokens, quota);
    let mut tat = 0u128;
    // (now in ms, cost): a burst, refusals, refills, a cost above the limit.
    let steps = [
        (0, 500),
        (0, 100),
        (0, 1),
        (50, 1),
        (100, 1),
        (100, 1),
        (350, 3),
        (350, 601),
        (2_000, 20),
        (90_000, 600),
    ];
    for (now_ms, cost) in steps {
        let now_us = now_ms * MS;
        let expected = quota.take(tat, u128::from(now_us) * 1000, cost);
        if let Ok((next, _)) = expected {
            tat = next;
        }
        let got = take_together_at(&[(&bucket, cost)], Some(now_us))
            .await
            .unwrap()
            .pop()
            .unwrap();
        assert_eq!(got, expected.map(|(_, s)| s), "at {now_ms} ms, cost {cost}");
    }
}

#[tokio::test]
async fn the_adjust_script_gives_back_and_charges_as_quota_adjust_does() {
    let Some(redis) =
        shared_limits("the_adjust_script_gives_back_and_charges_as_quota_adjust_does").await
    else {
        return;
    };
    let quota = Quota::per_minute(1000); // one cell every 60 ms
    let bucket = redis.bucket(&hash(2), RateKind::Tokens, quota);
    let (mut tat, _) = quota.take(0, 0, 500).unwrap();
    take_together_at(&[(&bucket, 500)], Some(0)).await.unwrap()[0].unwrap();
    for (now_ms, delta) in [(0, -300), (10, 900), (20, -5_000), (30, 0), (5_000, -10)] {
        let now = u128::from(now_ms * MS) * 1000;
        tat = quota.adjust(tat, now, delta);
        let got = bucket.adjust_at(delta, Some(now_ms * MS)).await.unwrap();
        assert_eq!(got, quota.status(tat, now), "at {now_ms} ms, delta {delta}");
    }
}

#[tokio::test]
async fn a_request_takes_both_rates_in_one_call_and_a_refusal_spares_the_rest() {
    let Some(redis) =
        shared_limits("a_request_takes_both_rates_in_one_call_and_a_refusal_spares_the_rest").await
    else {
        return;
    };
    let requests = Quota::per_minute(2); // one request every 30 s
    let tokens = Quota::per_minute(600); // one token every 100 ms
    let rate = redis.bucket(&hash(8), RateKind::Requests, requests);
    let toks = redis.bucket(&hash(8), RateKind::Tokens, tokens);
    let take = |now_ms: u64, cost: u64| {
        let (rate, toks) = (&rate, &toks);
        async move {
            take_together_at(&[(rate, 1), (toks, cost)], Some(now_ms * MS))
                .await
                .unwrap()
        }
    };
    // Both taken: 1 of 2 requests, 400 of 600 tokens.
    let both = take(0, 400).await;
    assert_eq!(both.len(), 2);
    assert_eq!(both[0].unwrap().remaining, 1);
    assert_eq!(both[1].unwrap().remaining, 200);
    // The request is counted, the tokens refused: 200 left, 300 asked.
    let tokens_refused = take(0, 300).await;
    assert_eq!(tokens_refused[0].unwrap().remaining, 0);
    let refused = tokens_refused[1].unwrap_err();
    assert_eq!(refused.retry_after, Some(Duration::from_secs(10)));
    // The request rate refuses: one answer, and the token bucket is not charged.
    let requests_refused = take(0, 100).await;
    assert_eq!(requests_refused.len(), 1);
    assert!(requests_refused[0].is_err());
    let (tat, _) = tokens.take(0, 0, 400).unwrap();
    let expected = tokens.take(tat, 0, 200).map(|(_, s)| s);
    let still_there = take_together_at(&[(&toks, 200)], Some(0)).await.unwrap();
    assert_eq!(still_there, vec![expected]);
}

#[tokio::test]
async fn settlements_go_in_one_batch_summed_per_bucket() {
    let Some(redis) = shared_limits("settlements_go_in_one_batch_summed_per_bucket").await else {
        return;
    };
    let quota = Quota::per_minute(1000); // one cell every 60 ms
    let a = redis.bucket(&hash(9), RateKind::Tokens, quota);
    let b = redis.bucket(&hash(10), RateKind::Tokens, quota);
    take_together_at(&[(&a, 800)], Some(0)).await.unwrap()[0].unwrap();
    take_together_at(&[(&b, 100)], Some(0)).await.unwrap()[0].unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    for (bucket, delta) in [(&a, -300), (&b, 50), (&a, -100)] {
        let seen = seen.clone();
        bucket.settle(delta, move |status| {
            seen.lock().unwrap().push(status.remaining)
        });
    }
    redis.settle_queued(Some(10 * MS)).await;
    // a: 800 - 400 = 400 used, b: 150; each settlement learns its bucket's state.
    let mut seen = seen.lock().unwrap().clone();
    seen.sort_unstable();
    assert_eq!(seen, vec![600, 600, 850]);
    assert!(redis.settlements.lock().unwrap().is_empty());
}

#[tokio::test]
async fn a_bucket_on_redis_time_refuses_past_the_limit_and_expires_when_full_again() {
    let Some(redis) =
        shared_limits("a_bucket_on_redis_time_refuses_past_the_limit_and_expires_when_full_again")
            .await
    else {
        return;
    };
    let bucket = redis.bucket(&hash(3), RateKind::Requests, Quota::per_minute(3));
    for remaining in [2, 1, 0] {
        let status = bucket.take(1).await.unwrap().unwrap();
        assert_eq!(status.remaining, remaining);
    }
    let refused = bucket.take(1).await.unwrap().unwrap_err();
    // One request comes back every 20 s.
    let wait = refused.retry_after.unwrap();
    assert!(
        wait > Duration::from_secs(19) && wait <= Duration::from_secs(20),
        "{wait:?}"
    );
    let mut conn = redis.connection().unwrap().conn;
    let ttl: i64 = redis::cmd("PTTL")
        .arg(&bucket.key)
        .query_async(&mut conn)
        .await
        .unwrap();
    // Full again after 60 s, and gone then.
    assert!((59_000..=60_001).contains(&ttl), "{ttl}");
    assert!(bucket.key.ends_with(&"03".repeat(16)), "{}", bucket.key);
    assert!(!bucket.key.contains(&"03".repeat(17)), "{}", bucket.key);
}

#[tokio::test]
async fn buckets_of_other_keys_kinds_or_prefixes_are_apart() {
    let Some(redis) = shared_limits("buckets_of_other_keys_kinds_or_prefixes_are_apart").await
    else {
        return;
    };
    let Some(elsewhere) = shared_limits("buckets_of_other_keys_kinds_or_prefixes_are_apart").await
    else {
        return;
    };
    let quota = Quota::per_minute(1);
    let first = redis.bucket(&hash(4), RateKind::Requests, quota);
    assert!(first.take(1).await.unwrap().is_ok());
    assert!(first.take(1).await.unwrap().is_err());
    for bucket in [
        redis.bucket(&hash(5), RateKind::Requests, quota),
        redis.bucket(&hash(4), RateKind::Tokens, quota),
        elsewhere.bucket(&hash(4), RateKind::Requests, quota),
    ] {
        assert!(bucket.take(1).await.unwrap().is_ok(), "{}", bucket.key);
    }
}

#[tokio::test]
async fn a_failure_on_a_replaced_connection_leaves_its_successor_up() {
    let Some(redis) =
        shared_limits("a_failure_on_a_replaced_connection_leaves_its_successor_up").await
    else {
        return;
    };
    let first = redis.connection().unwrap().number;
    redis.went_away(first, &"test");
    assert!(!redis.is_up());
    assert!(redis.connection().is_none());
    redis.probe().await;
    let second = redis.connection().unwrap().number;
    assert_ne!(first, second);
    // A check that was in flight on the first connection fails late.
    redis.went_away(first, &"late");
    assert!(redis.is_up());
    let bucket = redis.bucket(&hash(7), RateKind::Requests, Quota::per_minute(1));
    assert!(bucket.take(1).await.unwrap().is_ok());
}

#[tokio::test]
async fn without_redis_checks_are_left_to_the_replica_at_once() {
    // Nothing listens on port 1.
    let limits = SharedLimits::connect(
        &SecretString::from("redis://127.0.0.1:1".to_owned()),
        "pasarela-test",
        // Long, so that a check that waited for Redis would show.
        Duration::from_secs(5),
        Duration::from_secs(1),
    )
    .await
    .unwrap();
    assert!(!limits.is_up());
    let bucket = limits.bucket(&hash(6), RateKind::Requests, Quota::per_minute(1));
    let started = std::time::Instant::now();
    assert!(bucket.take(1).await.is_none());
    assert!(bucket.adjust_at(-1, None).await.is_none());
    assert!(started.elapsed() < Duration::from_secs(1));
    assert!(!format!("{limits:?}").contains("redis://"));
}

#[test]
fn an_unusable_url_is_refused_without_echoing_it() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let err = rt
        .block_on(SharedLimits::connect(
            &SecretString::from("redis://:hunter2@".to_owned()),
            "p",
            Duration::from_millis(100),
            Duration::from_secs(1),
        ))
        .unwrap_err();
    assert!(!err.to_string().contains("hunter2"), "{err}");
}

/// How long the bucket stays in Redis: its use in ms (it expires when full again).
async fn used_ms(redis: &SharedLimits, bucket: &SharedBucket) -> i64 {
    let mut conn = redis.connection().unwrap().conn;
    redis::cmd("PTTL")
        .arg(&bucket.key)
        .query_async(&mut conn)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_busy_key_leases_cells_ahead_and_spends_them_here_without_a_round_trip() {
    let Some(redis) = connect(
        "a_busy_key_leases_cells_ahead_and_spends_them_here_without_a_round_trip",
        Duration::from_secs(60),
    )
    .await
    else {
        return;
    };
    // One cell every 10 ms: 1 + 8 leased cells are 90 ms in Redis.
    let bucket = redis.bucket(&hash(11), RateKind::Requests, Quota::per_minute(6000));
    let first = bucket.take(1).await.unwrap().unwrap();
    assert_eq!(first.remaining, 5999, "leased cells count as free");
    let leased = used_ms(&redis, &bucket).await;
    assert!((80..=91).contains(&leased), "{leased} ms");
    let conn = redis.connection().unwrap().conn;
    let tat = || {
        let mut conn = conn.clone();
        let key = bucket.key.clone();
        async move {
            redis::cmd("GET")
                .arg(&key)
                .query_async::<String>(&mut conn)
                .await
                .unwrap()
        }
    };
    let before = tat().await;
    for spent in 2..=9 {
        let status = bucket.take(1).await.unwrap().unwrap();
        assert!(
            (6000 - spent..=6000 - spent + 2).contains(&status.remaining),
            "{spent} spent: {} left",
            status.remaining
        );
    }
    assert_eq!(
        tat().await,
        before,
        "the eight leased cells never went to Redis"
    );
    // The lease ran out while it held: the next check goes to Redis and leases twice as many.
    bucket.take(1).await.unwrap().unwrap();
    let after = used_ms(&redis, &bucket).await;
    assert!(
        (240..=261).contains(&after),
        "1 + 16 more cells: {after} ms"
    );
}

#[tokio::test]
async fn a_lease_that_ends_gives_back_the_cells_left() {
    let Some(redis) = connect(
        "a_lease_that_ends_gives_back_the_cells_left",
        Duration::from_millis(50),
    )
    .await
    else {
        return;
    };
    // Tokens: 100 per request, one token every 4.3 ms; 8 requests' worth leased are 3.4 s.
    let bucket = redis.bucket(&hash(12), RateKind::Tokens, Quota::per_minute(14_000));
    bucket.take(100).await.unwrap().unwrap();
    assert!(used_ms(&redis, &bucket).await > 3500);
    // The lease ends here; its settlement goes with the next batch.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while bucket
        .lease
        .lock()
        .unwrap()
        .covers(1, std::time::Instant::now())
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the lease never ended"
        );
        tokio::task::yield_now().await;
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while redis.settlements.lock().unwrap().is_empty() {
        assert!(std::time::Instant::now() < deadline, "nothing given back");
        tokio::task::yield_now().await;
    }
    redis.settle_queued(None).await;
    let used = used_ms(&redis, &bucket).await;
    assert!(
        used <= 430,
        "only the request's own 100 tokens stay used: {used} ms"
    );
}

#[tokio::test]
async fn small_and_half_spent_buckets_are_counted_exactly() {
    let Some(redis) = connect(
        "small_and_half_spent_buckets_are_counted_exactly",
        Duration::from_secs(60),
    )
    .await
    else {
        return;
    };
    // 100 a minute has no room for 64 requests above its half: 600 ms a cell, no lease.
    let small = redis.bucket(&hash(13), RateKind::Requests, Quota::per_minute(100));
    small.take(1).await.unwrap().unwrap();
    assert!((590..=601).contains(&used_ms(&redis, &small).await));
    // 1000 a minute, 60 ms a cell, 600 spent: past half, no lease either.
    let spent = redis.bucket(&hash(14), RateKind::Requests, Quota::per_minute(1000));
    spent.take(600).await.unwrap().unwrap();
    spent.take(1).await.unwrap().unwrap();
    let used = used_ms(&redis, &spent).await;
    assert!((36_000..=36_061).contains(&used), "601 cells: {used} ms");
}
