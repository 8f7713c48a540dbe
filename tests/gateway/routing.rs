//! Retries, fallbacks and weighted load balancing, observed by counting upstream hits.

use std::time::{Duration, Instant};

use futures::StreamExt;

use serde_json::{Value, json};

use crate::helpers::{TestApp, one_route, sse_data, user_message};
use crate::openai_upstream::{OpenAiUpstream, Reply, chat_chunks};

/// Route `gpt-test` on `primary`, falling back to route `backup` on `secondary`.
fn with_fallback(primary: &str, secondary: &str, retry: &str) -> String {
    format!(
        r#"
[providers.a]
kind = "openai"
base_url = "{primary}"
[providers.b]
kind = "openai"
base_url = "{secondary}"

[routes.gpt-test]
deployments = [{{ provider = "a", model = "model-a" }}]
fallbacks = ["backup"]
retry = {retry}

[routes.backup]
deployments = [{{ provider = "b", model = "model-b" }}]
"#
    )
}

const FAST_RETRY: &str =
    "{ max_retries = 2, initial_backoff_ms = 1, max_backoff_ms = 5, max_retry_after_ms = 5000 }";

#[tokio::test]
async fn transient_errors_are_retried_until_success() {
    let up = OpenAiUpstream::start(Reply::Chat("finally".into())).await;
    up.push(Reply::status(503, "overloaded"));
    up.push(Reply::status(502, "bad gateway"));
    let app = TestApp::spawn(&one_route(&up.base_url(), "")).await;

    let resp = app.chat(user_message("gpt-test", "hi")).await;
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["choices"][0]["message"]["content"], "finally");
    assert_eq!(up.hits(), 3);
}

#[tokio::test]
async fn retry_after_from_the_upstream_is_honoured() {
    let up = OpenAiUpstream::start(Reply::Chat("ok".into())).await;
    up.push(Reply::rate_limited("1"));
    let app = TestApp::spawn(&one_route(&up.base_url(), "")).await;

    let started = Instant::now();
    let resp = app.chat(user_message("gpt-test", "hi")).await;
    assert_eq!(resp.status(), 200);
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "waited {:?}",
        started.elapsed()
    );
    assert_eq!(up.hits(), 2);
}

#[tokio::test]
async fn exhausted_retries_fall_back_to_the_next_route() {
    let a = OpenAiUpstream::start(Reply::status(500, "down")).await;
    let b = OpenAiUpstream::start(Reply::Chat("from backup".into())).await;
    let app = TestApp::spawn(&with_fallback(&a.base_url(), &b.base_url(), FAST_RETRY)).await;

    let resp = app.chat(user_message("gpt-test", "hi")).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-pasarela-deployment"], "b/model-b");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["choices"][0]["message"]["content"], "from backup");
    assert_eq!(a.hits(), 3);
    assert_eq!(b.hits(), 1);
    assert_eq!(b.last().2["model"], "model-b");
}

#[tokio::test]
async fn a_retry_after_longer_than_allowed_goes_straight_to_the_fallback() {
    let a = OpenAiUpstream::start(Reply::rate_limited("120")).await;
    let b = OpenAiUpstream::start(Reply::Chat("from backup".into())).await;
    let app = TestApp::spawn(&with_fallback(&a.base_url(), &b.base_url(), FAST_RETRY)).await;

    let started = Instant::now();
    let resp = app.chat(user_message("gpt-test", "hi")).await;
    assert_eq!(resp.status(), 200);
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(a.hits(), 1);
    assert_eq!(b.hits(), 1);
}

#[tokio::test]
async fn upstream_credential_errors_fall_back_but_client_errors_do_not() {
    let a = OpenAiUpstream::start(Reply::status(401, "Incorrect API key provided")).await;
    let b = OpenAiUpstream::start(Reply::Chat("from backup".into())).await;
    let app = TestApp::spawn(&with_fallback(&a.base_url(), &b.base_url(), FAST_RETRY)).await;
    assert_eq!(app.chat(user_message("gpt-test", "hi")).await.status(), 200);
    assert_eq!((a.hits(), b.hits()), (1, 1));

    let a = OpenAiUpstream::start(Reply::status(400, "bad request")).await;
    let b = OpenAiUpstream::start(Reply::Chat("from backup".into())).await;
    let app = TestApp::spawn(&with_fallback(&a.base_url(), &b.base_url(), FAST_RETRY)).await;
    assert_eq!(app.chat(user_message("gpt-test", "hi")).await.status(), 400);
    assert_eq!((a.hits(), b.hits()), (1, 0));
}

#[tokio::test]
async fn weighted_deployments_share_traffic_in_proportion() {
    let a = OpenAiUpstream::start(Reply::Chat("a".into())).await;
    let b = OpenAiUpstream::start(Reply::Chat("b".into())).await;
    let config = format!(
        r#"
[providers.a]
kind = "openai"
base_url = "{}"
[providers.b]
kind = "openai"
base_url = "{}"
[routes.gpt-test]
deployments = [{{ provider = "a", model = "m", weight = 3 }}, {{ provider = "b", model = "m", weight = 1 }}]
"#,
        a.base_url(),
        b.base_url()
    );
    let app = TestApp::spawn(&config).await;

    // Expected share 0.75. The pick is random, so the band must make a false failure
    // negligible: at N = 2,000 one binomial standard deviation is 0.0097 and ±0.05 is over
    // five of them (about 1 run in 5 million), while a 1:1 or 1:0 split still fails by far.
    const N: usize = 2_000;
    let statuses: Vec<u16> = futures::stream::iter(0..N)
        .map(|_| async {
            app.chat(user_message("gpt-test", "hi"))
                .await
                .status()
                .as_u16()
        })
        .buffer_unordered(16)
        .collect()
        .await;
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    assert_eq!(a.hits() + b.hits(), N);
    let share = a.hits() as f64 / N as f64;
    assert!(
        (0.70..=0.80).contains(&share),
        "share of the weight-3 deployment: {share}"
    );
}

#[tokio::test]
async fn a_retry_prefers_another_deployment_of_the_route() {
    let a = OpenAiUpstream::start(Reply::status(503, "down")).await;
    let b = OpenAiUpstream::start(Reply::Chat("b".into())).await;
    let config = format!(
        r#"
[providers.a]
kind = "openai"
base_url = "{}"
[providers.b]
kind = "openai"
base_url = "{}"
[routes.gpt-test]
deployments = [{{ provider = "a", model = "m" }}, {{ provider = "b", model = "m" }}]
retry = {FAST_RETRY}
"#,
        a.base_url(),
        b.base_url()
    );
    let app = TestApp::spawn(&config).await;
    for _ in 0..20 {
        assert_eq!(app.chat(user_message("gpt-test", "hi")).await.status(), 200);
    }
    assert_eq!(b.hits(), 20);
    assert!(a.hits() <= 20, "a is tried at most once per request");
}

#[tokio::test]
async fn a_stream_failing_before_its_first_chunk_is_retried() {
    let up = OpenAiUpstream::start(Reply::stream_of(&["second", " try"], false)).await;
    up.push(Reply::Stream {
        frames: vec![],
        delay: Duration::ZERO,
        done: false,
    });
    let app = TestApp::spawn(&one_route(&up.base_url(), "")).await;

    let mut req = user_message("gpt-test", "hi");
    req["stream"] = json!(true);
    let frames = sse_data(&app.chat(req).await.text().await.unwrap());
    assert_eq!(frames.last().map(String::as_str), Some("[DONE]"));
    assert_eq!(up.hits(), 2);
}

#[tokio::test]
async fn a_stream_is_never_retried_after_its_first_chunk() {
    let up = OpenAiUpstream::start(Reply::Stream {
        frames: chat_chunks(&["one"], false)[..2].to_vec(),
        delay: Duration::ZERO,
        done: false,
    })
    .await;
    let app = TestApp::spawn(&one_route(&up.base_url(), "")).await;
    let mut req = user_message("gpt-test", "hi");
    req["stream"] = json!(true);
    let frames = sse_data(&app.chat(req).await.text().await.unwrap());
    assert!(frames.last().unwrap().contains("\"error\""));
    assert_eq!(up.hits(), 1);
}

#[tokio::test]
async fn a_stream_request_falls_back_when_the_primary_refuses() {
    let a = OpenAiUpstream::start(Reply::status(500, "down")).await;
    let b = OpenAiUpstream::start(Reply::stream_of(&["backup"], false)).await;
    let app = TestApp::spawn(&with_fallback(&a.base_url(), &b.base_url(), FAST_RETRY)).await;
    let mut req = user_message("gpt-test", "hi");
    req["stream"] = json!(true);
    let resp = app.chat(req).await;
    assert_eq!(resp.headers()["x-pasarela-deployment"], "b/model-b");
    let frames = sse_data(&resp.text().await.unwrap());
    assert_eq!(frames.last().map(String::as_str), Some("[DONE]"));
    assert_eq!(a.hits(), 3);
}
