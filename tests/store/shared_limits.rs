//! Virtual keys' rates across replicas: two real `pasarela serve` processes over one SQLite
//! store and one Redis admit a key's rate once, not once each, under a burst spread over both;
//! and a gateway whose Redis goes away keeps serving with its own limits, says so, and shares
//! again when Redis is back. Redis is `PASARELA_TEST_REDIS_URL`, else 127.0.0.1:6379; where
//! none answers these tests say SKIPPED, unless `PASARELA_REQUIRE_ALL` is set.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use axum::Json;
use axum::routing::post;
use pasarela::config::StoreConfig;
use pasarela::limits::{KeySpec, create_key};
use pasarela::store::Store;
use secrecy::ExposeSecret;
use serde_json::json;

use crate::gateway_process::GatewayProcess;
use crate::tcp_proxy::TcpProxy;

/// Concurrent clients in a burst, each with its own connections, alternating replicas.
const CLIENTS: usize = 64;
const REQUESTS_LIMIT: u32 = 300;
/// Read inside `[limits]` by the tests of sharing: a check that waits past the default 100 ms
/// on a loaded test machine would be counted locally and blur what they measure (the
/// outage test keeps the default).
const PATIENT: &str = "redis_timeout_ms = 1000\n";

/// The Redis to test against, or None (after saying so) when none answers and skipping is
/// allowed.
async fn redis_url(test: &str) -> Option<reqwest::Url> {
    let url = std::env::var("PASARELA_TEST_REDIS_URL")
        .unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
    let ping = async {
        let client = redis::Client::open(url.as_str())?;
        let mut conn = client.get_multiplexed_async_connection().await?;
        redis::cmd("PING").query_async::<()>(&mut conn).await
    };
    let why = match tokio::time::timeout(Duration::from_secs(5), ping).await {
        Ok(Ok(())) => return Some(reqwest::Url::parse(&url).unwrap()),
        Ok(Err(e)) => e.to_string(),
        Err(_) => "no answer in 5 s".to_owned(),
    };
    assert!(
        std::env::var_os("PASARELA_REQUIRE_ALL").is_none(),
        "Redis not reachable at {url} and PASARELA_REQUIRE_ALL is set: {why}"
    );
    eprintln!("SKIPPED {test}: Redis not reachable at {url}: {why}");
    None
}

/// A data dir with one key and a config that shares limits under a prefix of this test's own;
/// `extra` goes on inside `[limits]`.
struct Setup {
    config: PathBuf,
    key: String,
    /// The key's token bucket in Redis.
    tokens_bucket: String,
}

async fn setup(dir: &Path, spec: KeySpec, extra: &str) -> Setup {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let store = Store::open(&StoreConfig {
        data_dir: dir.join("data"),
        database_url: None,
    })
    .await
    .unwrap();
    let key = create_key(&store, spec).await.unwrap();
    let prefix = format!(
        "pasarela-test-{}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed),
        chrono::Utc::now().timestamp_micros()
    );
    let config = dir.join("pasarela.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nshutdown_grace_secs = 1\n[limits]\nredis_prefix = \"{prefix}\"\n{extra}"
        ),
    )
    .unwrap();
    // `PREFIX:tokens:` and the first 32 hex digits of the key's SHA-256.
    let hex = key.record.key_hash.strip_prefix("sha256:").unwrap();
    Setup {
        config,
        key: key.key.expose_secret().to_owned(),
        tokens_bucket: format!("{prefix}:tokens:{}", &hex[..32]),
    }
}

/// Two replicas sharing `redis` (given through `PASARELA_REDIS_URL`, as a password would be).
async fn replicas(dir: &Path, redis: &reqwest::Url) -> [GatewayProcess; 2] {
    let (config, data) = (dir.join("pasarela.toml"), dir.join("data"));
    let env = [("PASARELA_REDIS_URL", redis.as_str())];
    let (a, b) = tokio::join!(
        GatewayProcess::start(&config, &data, &env),
        GatewayProcess::start(&config, &data, &env)
    );
    [a, b]
}

/// Sends `per_client` requests from each of [`CLIENTS`] clients, alternating replicas;
/// returns the statuses by replica and how long the burst took.
async fn burst(
    replicas: &[GatewayProcess; 2],
    per_client: usize,
    request: impl Fn(&reqwest::Client, &str) -> reqwest::RequestBuilder + Send + Sync + 'static,
) -> ([Vec<u16>; 2], Duration) {
    let bases = Arc::new([replicas[0].base.clone(), replicas[1].base.clone()]);
    let request = Arc::new(request);
    let started = Instant::now();
    let clients: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let (bases, request) = (bases.clone(), request.clone());
            tokio::spawn(async move {
                let client = reqwest::Client::new();
                let mut statuses = [Vec::new(), Vec::new()];
                for i in 0..per_client {
                    let replica = (c + i) % 2;
                    let resp = request(&client, &bases[replica]).send().await.unwrap();
                    statuses[replica].push(resp.status().as_u16());
                }
                statuses
            })
        })
        .collect();
    let mut all = [Vec::new(), Vec::new()];
    for client in clients {
        let [a, b] = client.await.unwrap();
        all[0].extend(a);
        all[1].extend(b);
    }
    (all, started.elapsed())
}

fn count(statuses: &[u16], status: u16) -> usize {
    statuses.iter().filter(|s| **s == status).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_sharing_redis_admit_a_request_rate_once_under_a_burst_over_both() {
    let Some(redis) =
        redis_url("two_replicas_sharing_redis_admit_a_request_rate_once_under_a_burst_over_both")
            .await
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let spec = KeySpec {
        name: "burst".into(),
        rpm: Some(REQUESTS_LIMIT),
        ..KeySpec::default()
    };
    let Setup { key, .. } = setup(dir.path(), spec, PATIENT).await;
    let replicas = replicas(dir.path(), &redis).await;

    // Twice the limit: every request past the limit and its refill must be refused.
    let per_client = 2 * REQUESTS_LIMIT as usize / CLIENTS + 1;
    let (statuses, took) = burst(&replicas, per_client, move |client, base| {
        client.get(format!("{base}/v1/models")).bearer_auth(&key)
    })
    .await;
    let all: Vec<u16> = statuses.concat();
    assert_eq!(count(&all, 200) + count(&all, 429), all.len(), "{all:?}");
    let admitted = count(&all, 200);
    // GCRA refills one request every minute / limit; the burst may use what came back
    // while it ran, and no more.
    let interval = Duration::from_secs(60) / REQUESTS_LIMIT;
    let refill = (took.as_nanos() / interval.as_nanos()) as usize + 1;
    let tolerance = REQUESTS_LIMIT as usize / 50; // 2 %
    let (low, high) = (
        REQUESTS_LIMIT as usize - tolerance,
        REQUESTS_LIMIT as usize + refill + tolerance,
    );
    eprintln!(
        "admitted {admitted} of {} requests (A {}, B {}) in {took:?}: limit {REQUESTS_LIMIT}, \
         refill during the burst at most {refill}",
        all.len(),
        count(&statuses[0], 200),
        count(&statuses[1], 200),
    );
    assert!(
        (low..=high).contains(&admitted),
        "admitted {admitted}: expected the limit {REQUESTS_LIMIT} plus at most {refill} refilled \
         during the {took:?} burst (one per {interval:?}), ±2 %: {low}..={high}"
    );
    assert!(count(&statuses[0], 200) > 0 && count(&statuses[1], 200) > 0);
    let client = reqwest::Client::new();
    for replica in &replicas {
        assert_eq!(
            replica.metric(&client, "pasarela_limits_redis_up").await,
            Some(1.0)
        );
        let local = "pasarela_limits_local_checks_total{limit=\"requests\"}";
        assert_eq!(replica.metric(&client, local).await, None);
    }
}

/// A route `gpt-test` to an upstream that answers every chat completion with `usage`
/// (prompt and completion tokens), or without any, so that each request then costs exactly
/// its reservation.
async fn route_to_upstream(usage: Option<(u64, u64)>) -> String {
    let mut reply = json!({
        "id": "chatcmpl-1", "object": "chat.completion", "created": 0,
        "model": "upstream-model",
        "choices": [{"index": 0, "finish_reason": "stop",
                     "message": {"role": "assistant", "content": "ok"}}]
    });
    if let Some((prompt, completion)) = usage {
        reply["usage"] = json!({"prompt_tokens": prompt, "completion_tokens": completion,
                                "total_tokens": prompt + completion});
    }
    let app = axum::Router::new().route(
        "/v1/chat/completions",
        post(move || async move { Json(reply) }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!(
        "[providers.up]\nkind = \"openai\"\nbase_url = \"http://{addr}/v1\"\n\
         [routes.gpt-test]\ndeployments = [{{ provider = \"up\", model = \"upstream-model\" }}]\n"
    )
}

fn remaining_tokens(resp: &reqwest::Response) -> u64 {
    resp.headers()["x-ratelimit-remaining-tokens"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_sharing_redis_admit_a_token_rate_once_under_a_burst_over_both() {
    let Some(redis) =
        redis_url("two_replicas_sharing_redis_admit_a_token_rate_once_under_a_burst_over_both")
            .await
    else {
        return;
    };
    const TOKENS_LIMIT: u32 = 3000;
    let dir = tempfile::tempdir().unwrap();
    let spec = KeySpec {
        name: "tokens".into(),
        tpm: Some(TOKENS_LIMIT),
        ..KeySpec::default()
    };
    let route = route_to_upstream(None).await;
    let Setup { key, .. } = setup(dir.path(), spec, &format!("{PATIENT}{route}")).await;
    let replicas = replicas(dir.path(), &redis).await;
    let body = json!({"model": "gpt-test", "max_tokens": 96,
                      "messages": [{"role": "user", "content": "hi"}]});
    let chat = move |client: &reqwest::Client, base: &str| {
        client
            .post(format!("{base}/v1/chat/completions"))
            .bearer_auth(&key)
            .json(&body)
    };

    // One request first, to learn what each one reserves; then one to the other replica, so
    // that neither meets the burst cold: a replica's first request opens its connections to
    // Redis and the upstream, and the warm one could take the whole budget meanwhile (seen
    // once in CI: 30 requests admitted, all by one replica).
    let started = Instant::now();
    let first = chat(&reqwest::Client::new(), &replicas[0].base)
        .send()
        .await
        .unwrap();
    assert_eq!(first.status(), 200);
    let cost = u64::from(TOKENS_LIMIT) - remaining_tokens(&first);
    assert!((90..=110).contains(&cost), "each request reserves {cost}");
    let second = chat(&reqwest::Client::new(), &replicas[1].base)
        .send()
        .await
        .unwrap();
    assert_eq!(second.status(), 200);

    let (statuses, _) = burst(&replicas, 1, chat).await;
    let took = started.elapsed();
    let all: Vec<u16> = statuses.concat();
    assert_eq!(count(&all, 200) + count(&all, 429), all.len(), "{all:?}");
    let admitted = 2 + count(&all, 200) as u64;
    let tokens = admitted * cost;
    let interval = Duration::from_secs(60) / TOKENS_LIMIT;
    let refill = (took.as_nanos() / interval.as_nanos()) as u64 + 1;
    let limit = u64::from(TOKENS_LIMIT);
    eprintln!(
        "admitted {admitted} requests of {cost} tokens = {tokens} tokens in {took:?}: \
         limit {limit}, refill during the burst at most {refill}"
    );
    // Refused only once less than one request's tokens was left; never past the limit and
    // its refill.
    assert!(
        tokens > limit - cost && tokens <= limit + refill,
        "admitted {tokens} tokens: expected more than {} and at most the limit {limit} plus \
         {refill} refilled during the {took:?} burst",
        limit - cost
    );
    assert!(count(&statuses[0], 200) > 0 && count(&statuses[1], 200) > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_whose_redis_goes_away_limits_alone_and_shares_again_when_it_returns() {
    let Some(redis) =
        redis_url("a_gateway_whose_redis_goes_away_limits_alone_and_shares_again_when_it_returns")
            .await
    else {
        return;
    };
    let server = tokio::net::lookup_host((redis.host_str().unwrap(), redis.port().unwrap_or(6379)))
        .await
        .unwrap()
        .next()
        .unwrap();
    let proxy = TcpProxy::start(server).await;
    let mut through_proxy = redis.clone();
    through_proxy.set_host(Some("127.0.0.1")).unwrap();
    through_proxy.set_port(Some(proxy.addr.port())).unwrap();

    const RPM: u32 = 5; // one request back every 12 s: none comes back during the test
    let dir = tempfile::tempdir().unwrap();
    let spec = KeySpec {
        name: "outage".into(),
        rpm: Some(RPM),
        ..KeySpec::default()
    };
    let Setup { config, key, .. } = setup(dir.path(), spec, "").await;
    let env = [("PASARELA_REDIS_URL", through_proxy.as_str())];
    let gateway = GatewayProcess::start(&config, &dir.path().join("data"), &env).await;
    let client = reqwest::Client::new();
    let up = "pasarela_limits_redis_up";
    let local = "pasarela_limits_local_checks_total{limit=\"requests\"}";
    let models = || {
        client
            .get(gateway.url("/v1/models"))
            .bearer_auth(&key)
            .timeout(Duration::from_secs(5))
            .send()
    };
    let remaining = |resp: &reqwest::Response| -> u32 {
        resp.headers()["x-ratelimit-remaining-requests"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap()
    };
    gateway
        .logged("INFO", "Redis answers", 1, Duration::from_secs(10))
        .await;
    assert_eq!(gateway.metric(&client, up).await, Some(1.0));
    let shared = models().await.unwrap();
    assert_eq!(shared.status(), 200);
    assert_eq!(remaining(&shared), RPM - 1);

    proxy.cut().await;
    // Served on this replica's own limiter, which starts full: the whole rate, then 429.
    let mut statuses = Vec::new();
    for _ in 0..=RPM {
        let started = Instant::now();
        statuses.push(models().await.unwrap().status().as_u16());
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "no request waits for Redis"
        );
    }
    let mut expected = vec![200; RPM as usize];
    expected.push(429);
    assert_eq!(statuses, expected);
    let warning = gateway
        .logged("WARN", "Redis is unavailable", 1, Duration::from_secs(10))
        .await;
    assert!(
        !warning.to_string().contains("redis://"),
        "the URL is never logged: {warning}"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while gateway.metric(&client, up).await != Some(0.0) {
        assert!(Instant::now() < deadline, "the gauge shows Redis away");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let counted_here = gateway.metric(&client, local).await.unwrap();
    assert!(counted_here >= f64::from(RPM + 1), "{counted_here}");

    proxy.restore();
    let deadline = Instant::now() + Duration::from_secs(10);
    while gateway.metric(&client, up).await != Some(1.0) {
        assert!(Instant::now() < deadline, "the gauge shows Redis back");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    gateway
        .logged("INFO", "Redis answers", 2, Duration::from_secs(10))
        .await;
    // Counted in Redis again, where the key has used one request: the local limiter, spent
    // during the outage, would refuse.
    let again = models().await.unwrap();
    assert_eq!(again.status(), 200);
    assert!(remaining(&again) >= RPM - 2, "{}", remaining(&again));
    assert_eq!(gateway.metric(&client, local).await, Some(counted_here));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_given_back_on_one_replica_can_be_reserved_on_the_other() {
    let Some(redis) =
        redis_url("tokens_given_back_on_one_replica_can_be_reserved_on_the_other").await
    else {
        return;
    };
    const TOKENS_LIMIT: u64 = 1000; // one token back every 60 ms
    let dir = tempfile::tempdir().unwrap();
    let spec = KeySpec {
        name: "refund".into(),
        tpm: Some(TOKENS_LIMIT as u32),
        ..KeySpec::default()
    };
    // Each request reserves about 500 tokens and uses 5.
    let route = route_to_upstream(Some((3, 2))).await;
    let setup = setup(dir.path(), spec, &format!("{PATIENT}{route}")).await;
    let replicas = replicas(dir.path(), &redis).await;
    let client = reqwest::Client::new();
    let chat = |replica: &GatewayProcess| {
        client
            .post(replica.url("/v1/chat/completions"))
            .bearer_auth(&setup.key)
            .json(&json!({"model": "gpt-test", "max_tokens": 500,
                          "messages": [{"role": "user", "content": "hi"}]}))
            .send()
    };
    let first = chat(&replicas[0]).await.unwrap();
    assert_eq!(first.status(), 200);
    let reserved = TOKENS_LIMIT - remaining_tokens(&first);
    assert!(
        reserved > TOKENS_LIMIT / 2,
        "two reservations of {reserved} do not fit"
    );
    first.text().await.unwrap();

    // Settled in Redis once the response is over: the bucket holds 5 tokens' worth (300 ms)
    // rather than the reservation's (about 30 s).
    let conn = redis::Client::open(redis.as_str()).unwrap();
    let mut conn = conn.get_multiplexed_async_connection().await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let ttl: i64 = redis::cmd("PTTL")
            .arg(&setup.tokens_bucket)
            .query_async(&mut conn)
            .await
            .unwrap();
        if ttl < 10_000 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the refund reaches Redis: PTTL {ttl} ms"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let second = chat(&replicas[1]).await.unwrap();
    assert_eq!(
        second.status(),
        200,
        "the other replica sees the tokens given back"
    );
    let remaining = remaining_tokens(&second);
    assert!(
        (TOKENS_LIMIT - 5 - reserved..=TOKENS_LIMIT - reserved).contains(&remaining),
        "{remaining} left after {reserved} reserved and 5 used"
    );
}
