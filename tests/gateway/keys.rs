//! Virtual keys end to end: made and revoked through the admin API, used on `/v1` against the
//! stand-in upstream, with their request rate, concurrency and model limits.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::helpers::{
    ADMIN, TestApp, admin_config, chat_as, create_key, expect_error, get_json_as, one_route,
    user_message,
};
use crate::openai_upstream::{OpenAiUpstream, Reply, chat_chunks};

async fn gateway(up: &OpenAiUpstream) -> TestApp {
    TestApp::spawn(&one_route(&up.base_url(), &admin_config(""))).await
}

fn header(resp: &reqwest::Response, name: &str) -> Option<String> {
    resp.headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_owned())
}

#[tokio::test]
async fn a_virtual_key_works_on_v1_and_is_refused_right_after_revoke() {
    let up = OpenAiUpstream::start(Reply::Chat("Hi".into())).await;
    let app = gateway(&up).await;
    let key = create_key(&app, json!({"name": "team-a"})).await;
    let ok = chat_as(&app, &key, &user_message("gpt-test", "hi")).await;
    assert_eq!(ok.status(), 200);
    // Unlimited keys carry no rate headers.
    assert_eq!(header(&ok, "x-ratelimit-limit-requests"), None);

    let list: Value = get_json_as(&app, ADMIN, "/api/keys").await;
    let text = list.to_string();
    assert_eq!(list["data"][0]["name"], "team-a");
    assert_eq!(list["data"][0]["prefix"], key[..16]);
    assert!(!text.contains(&key), "the key is never listed: {text}");
    assert!(!text.contains("sha256"), "nor its hash: {text}");

    let revoked = app
        .client
        .delete(app.url("/api/keys/team-a"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(revoked.status(), 200);
    let refused = chat_as(&app, &key, &user_message("gpt-test", "hi")).await;
    let error = expect_error(refused, 401).await;
    assert_eq!(error["code"], "invalid_api_key");
    // A virtual key never opens the admin API.
    let other = create_key(&app, json!({"name": "team-b"})).await;
    let admin = app
        .client
        .get(app.url("/api/keys"))
        .bearer_auth(&other)
        .send()
        .await
        .unwrap();
    expect_error(admin, 403).await;
    let missing = app
        .client
        .delete(app.url("/api/keys/nobody"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    expect_error(missing, 404).await;
}

#[tokio::test]
async fn successful_responses_carry_rate_headers_with_decreasing_remaining() {
    let up = OpenAiUpstream::start(Reply::Chat("Hi".into())).await;
    let app = gateway(&up).await;
    let key = create_key(&app, json!({"name": "limited", "rpm": 3})).await;
    let mut remaining = Vec::new();
    for _ in 0..3 {
        let resp = chat_as(&app, &key, &user_message("gpt-test", "hi")).await;
        assert_eq!(resp.status(), 200);
        assert_eq!(
            header(&resp, "x-ratelimit-limit-requests").as_deref(),
            Some("3")
        );
        let reset = header(&resp, "x-ratelimit-reset-requests").unwrap();
        assert!(reset.ends_with('s'), "{reset}");
        remaining.push(header(&resp, "x-ratelimit-remaining-requests").unwrap());
    }
    assert_eq!(remaining, ["2", "1", "0"]);
}

#[tokio::test]
async fn a_burst_beyond_rpm_gets_429_with_retry_after_and_rate_headers() {
    let up = OpenAiUpstream::start(Reply::Chat("Hi".into())).await;
    let app = gateway(&up).await;
    let key = create_key(&app, json!({"name": "limited", "rpm": 3})).await;
    let mut statuses = Vec::new();
    let mut refusals = Vec::new();
    for _ in 0..6 {
        let resp = chat_as(&app, &key, &user_message("gpt-test", "hi")).await;
        statuses.push(resp.status().as_u16());
        if resp.status() == 429 {
            refusals.push(resp);
        }
    }
    assert_eq!(statuses, [200, 200, 200, 429, 429, 429]);
    assert_eq!(up.hits(), 3, "refused requests never reach the upstream");
    let resp = refusals.remove(0);
    // 3 per minute: one request comes back every 20 s.
    let retry: u64 = header(&resp, "retry-after").unwrap().parse().unwrap();
    assert!((19..=20).contains(&retry), "{retry}");
    assert_eq!(
        header(&resp, "x-ratelimit-limit-requests").as_deref(),
        Some("3")
    );
    assert_eq!(
        header(&resp, "x-ratelimit-remaining-requests").as_deref(),
        Some("0")
    );
    let reset = header(&resp, "x-ratelimit-reset-requests").unwrap();
    assert!(reset.ends_with('s'), "{reset}");
    let error = expect_error(resp, 429).await;
    assert_eq!(error["code"], "rate_limit_exceeded");
    assert!(error["message"].as_str().unwrap().contains("limited"));
}

#[tokio::test]
async fn a_model_outside_the_keys_models_is_refused_with_403_naming_it() {
    let up = OpenAiUpstream::start(Reply::Chat("Hi".into())).await;
    let app = gateway(&up).await;
    let key = create_key(
        &app,
        json!({"name": "narrow", "models": ["gpt-test"], "rpm": 100}),
    )
    .await;
    let ok = chat_as(&app, &key, &user_message("gpt-test", "hi")).await;
    assert_eq!(ok.status(), 200);
    let refused = chat_as(&app, &key, &user_message("gpt-other", "hi")).await;
    assert_eq!(
        header(&refused, "x-ratelimit-remaining-requests").as_deref(),
        Some("98")
    );
    let error = expect_error(refused, 403).await;
    assert_eq!(error["code"], "model_not_allowed");
    assert_eq!(error["param"], "model");
    assert!(
        error["message"].as_str().unwrap().contains("gpt-other"),
        "{error}"
    );
    let embed = app
        .client
        .post(app.url("/v1/embeddings"))
        .bearer_auth(&key)
        .json(&json!({"model": "gpt-other", "input": "x"}))
        .send()
        .await
        .unwrap();
    expect_error(embed, 403).await;
    assert_eq!(up.hits(), 1);
}

#[tokio::test]
async fn max_concurrent_refuses_while_a_stream_holds_the_only_slot() {
    let slow = Reply::Stream {
        frames: chat_chunks(&["a", "b", "c"], false),
        delay: Duration::from_millis(150),
        done: true,
    };
    let up = OpenAiUpstream::start(slow).await;
    let app = gateway(&up).await;
    let key = create_key(&app, json!({"name": "single", "max_concurrent": 1})).await;
    let mut stream_body = user_message("gpt-test", "hi");
    stream_body["stream"] = json!(true);
    // The headers have come back: the stream is open and holds the slot until its end.
    let first = chat_as(&app, &key, &stream_body).await;
    assert_eq!(first.status(), 200);
    let second = chat_as(&app, &key, &user_message("gpt-test", "hi")).await;
    let error = expect_error(second, 429).await;
    assert_eq!(error["code"], "concurrency_limit_exceeded");
    let text = first.text().await.unwrap();
    assert!(text.contains("[DONE]"));
    // The server lets the slot go when it drops the finished body, just after the client has
    // read its end; allow it that moment.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let third = chat_as(&app, &key, &stream_body).await;
        if third.status() == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "the slot never came back");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn create_validates_and_the_openapi_document_lists_the_keys_api() {
    let up = OpenAiUpstream::start(Reply::Chat("Hi".into())).await;
    let app = gateway(&up).await;
    for bad in [
        json!({"name": "has space"}),
        json!({"name": "x", "rpm": 0}),
        json!({"name": "x", "budget": 5.0}),
        json!({"name": "x", "budget": 5.0, "budget_period": "year"}),
    ] {
        let resp = app
            .client
            .post(app.url("/api/keys"))
            .bearer_auth(ADMIN)
            .json(&bad)
            .send()
            .await
            .unwrap();
        expect_error(resp, 400).await;
    }
    create_key(
        &app,
        json!({"name": "x", "tpm": 1000, "budget": 5.0, "budget_period": "week"}),
    )
    .await;
    let dup = app
        .client
        .post(app.url("/api/keys"))
        .bearer_auth(ADMIN)
        .json(&json!({"name": "x"}))
        .send()
        .await
        .unwrap();
    expect_error(dup, 409).await;
    let doc: Value = app.get("/openapi.json").await.json().await.unwrap();
    assert!(doc["paths"]["/api/keys"]["post"].is_object());
    assert!(doc["paths"]["/api/keys/{name}"]["delete"].is_object());
}
