//! What a key's requests use: token rates reserved before the call and settled on the usage
//! the upstream reports (streams included), spend priced from `[prices]` against budgets,
//! the per-address rate for callers without a key, and model lists filtered per key.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::helpers::{
    ADMIN, TestApp, admin_config, chat_as, create_key, expect_error, get_json_as, one_route,
    sse_data, user_message,
};
use crate::openai_upstream::{OpenAiUpstream, Reply};

async fn gateway(up: &OpenAiUpstream, extra: &str) -> TestApp {
    TestApp::spawn(&one_route(&up.base_url(), &admin_config(extra))).await
}

fn header_u64(resp: &reqwest::Response, name: &str) -> Option<u64> {
    resp.headers()
        .get(name)
        .map(|v| v.to_str().unwrap().parse().unwrap())
}

/// The key's remaining tokens as a request that reserves none sees them.
async fn remaining_tokens(app: &TestApp, key: &str) -> u64 {
    let resp = app
        .client
        .get(app.url("/v1/models"))
        .bearer_auth(key)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    header_u64(&resp, "x-ratelimit-remaining-tokens").unwrap()
}

/// Polls `check` until it holds: a settlement runs when the response body has ended on the
/// server, which may be a moment after the client has read it.
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(10);
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::task::yield_now().await;
    }
}

fn chat_with_max(max_tokens: Option<u64>, stream: bool) -> Value {
    let mut body = user_message("gpt-test", "hi");
    if let Some(m) = max_tokens {
        body["max_tokens"] = json!(m);
    }
    if stream {
        body["stream"] = json!(true);
    }
    body
}

#[tokio::test]
async fn a_token_rate_reserves_the_estimate_then_keeps_only_the_real_usage() {
    let up = OpenAiUpstream::start(Reply::Chat("Hi".into())).await;
    let app = gateway(&up, "").await;
    let key = create_key(&app, json!({"name": "tokens", "tpm": 100})).await;
    assert_eq!(remaining_tokens(&app, &key).await, 100);

    // "hi" is about 5 tokens with its message framing, plus 50 reserved for the output.
    let first = chat_as(&app, &key, &chat_with_max(Some(50), false)).await;
    assert_eq!(first.status(), 200);
    assert_eq!(header_u64(&first, "x-ratelimit-limit-tokens"), Some(100));
    assert_eq!(header_u64(&first, "x-ratelimit-remaining-tokens"), Some(45));
    assert!(first.headers().contains_key("x-ratelimit-reset-tokens"));
    first.bytes().await.unwrap();

    // The stand-in used 12 tokens (9 in, 3 out): the other 43 come back.
    eventually("the reservation is settled", || async {
        (88..=90).contains(&remaining_tokens(&app, &key).await)
    })
    .await;

    // About 100 tokens do not fit in the ~88 left: refused before reaching the upstream.
    let hits = up.hits();
    let refused = chat_as(&app, &key, &chat_with_max(Some(95), false)).await;
    assert!(refused.headers().contains_key("retry-after"));
    assert_eq!(
        header_u64(&refused, "x-ratelimit-remaining-tokens"),
        Some(0)
    );
    let error = expect_error(refused, 429).await;
    assert_eq!(error["type"], "tokens");
    assert_eq!(error["code"], "rate_limit_exceeded");
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("limit 100 per minute")
    );
    assert_eq!(up.hits(), hits);
}

#[tokio::test]
async fn a_request_refused_for_its_model_counts_as_a_request_but_reserves_no_tokens() {
    let up = OpenAiUpstream::start(Reply::Chat("Hi".into())).await;
    let app = gateway(&up, "").await;
    let key = create_key(
        &app,
        json!({"name": "narrow", "rpm": 10, "tpm": 100, "models": ["gpt-test"]}),
    )
    .await;
    let mut other = chat_with_max(Some(50), false);
    other["model"] = json!("other-model");
    let forbidden = chat_as(&app, &key, &other).await;
    assert_eq!(
        header_u64(&forbidden, "x-ratelimit-remaining-requests"),
        Some(9)
    );
    assert_eq!(
        header_u64(&forbidden, "x-ratelimit-remaining-tokens"),
        Some(100)
    );
    expect_error(forbidden, 403).await;
    assert_eq!(remaining_tokens(&app, &key).await, 100);
    assert_eq!(up.hits(), 0);
}

#[tokio::test]
async fn a_request_without_max_tokens_reserves_the_default_and_still_runs() {
    let up = OpenAiUpstream::start(Reply::Chat("Hi".into())).await;
    let app = gateway(&up, "[limits]\ndefault_output_tokens = 300\n").await;
    let key = create_key(&app, json!({"name": "no-cap", "tpm": 1000})).await;
    let resp = chat_as(&app, &key, &chat_with_max(None, false)).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        header_u64(&resp, "x-ratelimit-remaining-tokens"),
        Some(1000 - 305)
    );
    resp.bytes().await.unwrap();
    eventually("the default reservation is settled", || async {
        (988..=990).contains(&remaining_tokens(&app, &key).await)
    })
    .await;

    // An output cap above the whole rate still runs on an idle key: it reserves the rate.
    let idle = create_key(&app, json!({"name": "idle", "tpm": 1000})).await;
    let big = chat_as(&app, &idle, &chat_with_max(Some(5000), false)).await;
    assert_eq!(big.status(), 200);
    assert_eq!(header_u64(&big, "x-ratelimit-remaining-tokens"), Some(0));
}

#[tokio::test]
async fn a_prompt_larger_than_the_token_rate_is_refused_as_too_large() {
    let up = OpenAiUpstream::start(Reply::Chat("Hi".into())).await;
    let app = gateway(&up, "").await;
    let key = create_key(&app, json!({"name": "small", "tpm": 10})).await;
    let long = user_message("gpt-test", &"word ".repeat(40));
    let error = expect_error(chat_as(&app, &key, &long).await, 429).await;
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .starts_with("Request too large"),
        "{error}"
    );
    assert_eq!(up.hits(), 0);
}

#[tokio::test]
async fn a_stream_is_settled_on_its_final_usage_which_the_client_sees_only_if_asked() {
    let up = OpenAiUpstream::start(Reply::stream_of(&["a", "b", "c", "d"], true)).await;
    let app = gateway(&up, "").await;
    let key = create_key(&app, json!({"name": "streams", "tpm": 1000})).await;

    let resp = chat_as(&app, &key, &chat_with_max(Some(100), true)).await;
    assert_eq!(resp.status(), 200);
    let frames = sse_data(&resp.text().await.unwrap());
    assert_eq!(frames.last().map(String::as_str), Some("[DONE]"));
    assert!(
        frames.iter().all(|f| !f.contains("\"usage\"")),
        "usage leaked to a client that did not ask: {frames:?}"
    );
    // The upstream was asked for usage all the same.
    let (_, _, sent) = up.last();
    assert_eq!(sent["stream_options"]["include_usage"], true);
    // 9 prompt + 4 completion tokens are kept of the 105 reserved.
    eventually("the stream is settled", || async {
        (987..=989).contains(&remaining_tokens(&app, &key).await)
    })
    .await;

    let mut asked = chat_with_max(Some(100), true);
    asked["stream_options"] = json!({"include_usage": true});
    let resp = chat_as(&app, &key, &asked).await;
    let frames = sse_data(&resp.text().await.unwrap());
    let usage: Value = serde_json::from_str(&frames[frames.len() - 2]).unwrap();
    assert_eq!(usage["usage"]["completion_tokens"], 4);
    assert_eq!(usage["choices"], json!([]));
}

#[tokio::test]
async fn spend_is_priced_per_model_and_a_spent_budget_refuses_requests() {
    let up = OpenAiUpstream::start(Reply::Chat("Hi".into())).await;
    // One dollar per input token, two per output token: each stand-in answer (9 in, 3 out)
    // costs $15.
    let prices =
        "[prices.gpt-test]\ninput_per_million = 1000000.0\noutput_per_million = 2000000.0\n";
    let app = gateway(&up, prices).await;
    let key = create_key(
        &app,
        json!({"name": "budgeted", "budget": 20.0, "budget_period": "day"}),
    )
    .await;
    let spent = || async {
        let list: Value = get_json_as(&app, ADMIN, "/api/keys").await;
        list["data"][0]["spent"].as_f64().unwrap()
    };
    assert_eq!(spent().await, 0.0);
    let ok = chat_as(&app, &key, &user_message("gpt-test", "hi")).await;
    assert_eq!(ok.status(), 200);
    ok.bytes().await.unwrap();
    eventually("the first request is costed", || async {
        spent().await == 15.0
    })
    .await;
    // $15 of $20: one more may start; it takes the key past its budget.
    let ok = chat_as(&app, &key, &user_message("gpt-test", "hi")).await;
    assert_eq!(ok.status(), 200);
    ok.bytes().await.unwrap();
    eventually("the second request is costed", || async {
        spent().await == 30.0
    })
    .await;

    let hits = up.hits();
    let error = expect_error(
        chat_as(&app, &key, &user_message("gpt-test", "hi")).await,
        429,
    )
    .await;
    assert_eq!(error["type"], "insufficient_quota");
    assert_eq!(error["code"], "insufficient_quota");
    let message = error["message"].as_str().unwrap();
    assert!(
        message.contains("$30.000000 of $20.000000 this day"),
        "{message}"
    );
    assert_eq!(up.hits(), hits);
}

#[tokio::test]
async fn spend_reaches_the_store_for_other_replicas_and_the_cli() {
    let up = OpenAiUpstream::start(Reply::Chat("Hi".into())).await;
    let prices =
        "[prices.\"up/upstream-model\"]\ninput_per_million = 1.0\noutput_per_million = 1.0\n";
    let app = gateway(&up, prices).await;
    let key = create_key(&app, json!({"name": "stored"})).await;
    let ok = chat_as(&app, &key, &user_message("gpt-test", "hi")).await;
    assert_eq!(ok.status(), 200);
    ok.bytes().await.unwrap();
    // A second application on the same store sees the spend once the first has synced.
    let config = pasarela::config::StoreConfig {
        data_dir: app.data_dir.path().to_owned(),
        database_url: None,
    };
    let store = pasarela::store::Store::open(&config).await.unwrap();
    eventually("the spend is in the store", || async {
        let rows = store.spend().since(0).await.unwrap();
        // 12 tokens at $1 per million: 12 millionths, priced by the deployment.
        rows.len() == 1 && rows[0].micro_usd == 12 && rows[0].requests == 1
    })
    .await;
}

#[tokio::test]
async fn callers_without_a_key_share_a_rate_per_address() {
    let up = OpenAiUpstream::start(Reply::Chat("Hi".into())).await;
    let app = TestApp::spawn(&one_route(&up.base_url(), "[limits]\nper_ip_rpm = 2\n")).await;
    for remaining in [1, 0] {
        let resp = app.chat(user_message("gpt-test", "hi")).await;
        assert_eq!(resp.status(), 200);
        assert_eq!(
            header_u64(&resp, "x-ratelimit-remaining-requests"),
            Some(remaining)
        );
    }
    let refused = app.chat(user_message("gpt-test", "hi")).await;
    assert!(refused.headers().contains_key("retry-after"));
    let error = expect_error(refused, 429).await;
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("client 127.0.0.1"),
        "{error}"
    );
}

#[tokio::test]
async fn a_restricted_key_lists_and_finds_only_its_models() {
    let up = OpenAiUpstream::start(Reply::Chat("Hi".into())).await;
    let extra = "[routes.other]\ndeployments = [{ provider = \"up\", model = \"x\" }]\n";
    let app = gateway(&up, extra).await;
    let key = create_key(&app, json!({"name": "one-model", "models": ["gpt-test"]})).await;
    let list: Value = get_json_as(&app, &key, "/v1/models").await;
    let ids: Vec<&str> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["gpt-test"]);
    let hidden = app
        .client
        .get(app.url("/v1/models/other"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    expect_error(hidden, 404).await;
    // An admin key sees every model.
    let all: Value = get_json_as(&app, ADMIN, "/v1/models").await;
    assert_eq!(all["data"].as_array().unwrap().len(), 2);
}
