//! Every failure answers in OpenAI's error envelope with the status OpenAI would use.

use serde_json::json;

use crate::helpers::{TestApp, expect_error, one_route, user_message};
use crate::openai_upstream::{OpenAiUpstream, Reply};

async fn app_with_upstream(reply: Reply, extra: &str) -> (OpenAiUpstream, TestApp) {
    let up = OpenAiUpstream::start(reply).await;
    let app = TestApp::spawn(&one_route(&up.base_url(), extra)).await;
    (up, app)
}

#[tokio::test]
async fn malformed_json_is_a_400() {
    let (up, app) = app_with_upstream(Reply::Chat("x".into()), "").await;
    let resp = app
        .client
        .post(app.url("/v1/chat/completions"))
        .header("content-type", "application/json")
        .body("{\"model\": \"gpt-test\", \"messages\": [")
        .send()
        .await
        .unwrap();
    let error = expect_error(resp, 400).await;
    assert_eq!(error["type"], "invalid_request_error");
    assert_eq!(up.hits(), 0);
}

#[tokio::test]
async fn a_wrongly_typed_field_is_a_400_naming_the_field() {
    let (_up, app) = app_with_upstream(Reply::Chat("x".into()), "").await;
    let mut req = user_message("gpt-test", "hi");
    req["temperature"] = json!("warm");
    let error = expect_error(app.chat(req).await, 400).await;
    assert_eq!(error["param"], "temperature");

    let req = json!({"model": "gpt-test", "messages": [{"role": "wizard", "content": "hi"}]});
    let error = expect_error(app.chat(req).await, 400).await;
    assert_eq!(error["param"], "messages[0].role");
}

#[tokio::test]
async fn missing_messages_and_out_of_range_values_are_400s() {
    let (up, app) = app_with_upstream(Reply::Chat("x".into()), "").await;
    let error = expect_error(app.chat(json!({"model": "gpt-test"})).await, 400).await;
    assert!(
        error["message"].as_str().unwrap().contains("messages"),
        "{error}"
    );

    let error = expect_error(
        app.chat(json!({"model": "gpt-test", "messages": []})).await,
        400,
    )
    .await;
    assert_eq!(error["param"], "messages");

    let mut req = user_message("gpt-test", "hi");
    req["temperature"] = json!(3.5);
    let error = expect_error(app.chat(req).await, 400).await;
    assert_eq!(error["param"], "temperature");

    let mut req = user_message("gpt-test", "hi");
    req["stream_options"] = json!({"include_usage": true});
    let error = expect_error(app.chat(req).await, 400).await;
    assert_eq!(error["param"], "stream_options");
    assert_eq!(up.hits(), 0, "invalid requests never reach the upstream");
}

#[tokio::test]
async fn unknown_model_is_a_404_model_not_found() {
    let (_up, app) = app_with_upstream(Reply::Chat("x".into()), "").await;
    let error = expect_error(app.chat(user_message("no-such-model", "hi")).await, 404).await;
    assert_eq!(error["code"], "model_not_found");
    assert_eq!(error["param"], "model");
    let error = expect_error(app.get("/v1/models/no-such-model").await, 404).await;
    assert_eq!(error["code"], "model_not_found");
}

#[tokio::test]
async fn a_body_over_the_limit_is_a_413() {
    let up = OpenAiUpstream::start(Reply::Chat("x".into())).await;
    let config = one_route(&up.base_url(), "[server]\nmax_body_bytes = 2048\n");
    let small = TestApp::spawn(&config).await;
    let req = user_message("gpt-test", &"x".repeat(4096));
    let error = expect_error(small.chat(req).await, 413).await;
    assert_eq!(error["code"], "request_too_large");
    assert_eq!(
        small.chat(user_message("gpt-test", "short")).await.status(),
        200
    );
}

#[tokio::test]
async fn an_upstream_client_error_passes_through_without_retry() {
    let reply = Reply::Json {
        status: 400,
        body: json!({"error": {"message": "This model's maximum context length is 8192 tokens.",
                     "type": "invalid_request_error", "param": "messages", "code": "context_length_exceeded"}}),
        headers: vec![],
    };
    let (up, app) = app_with_upstream(reply, "").await;
    let error = expect_error(app.chat(user_message("gpt-test", "hi")).await, 400).await;
    assert_eq!(error["code"], "context_length_exceeded");
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("maximum context length")
    );
    assert_eq!(up.hits(), 1);
}

#[tokio::test]
async fn a_persistent_upstream_5xx_is_a_502_after_retries() {
    let (up, app) = app_with_upstream(Reply::status(500, "boom"), "").await;
    let error = expect_error(app.chat(user_message("gpt-test", "hi")).await, 502).await;
    assert_eq!(error["type"], "server_error");
    assert_eq!(up.hits(), 3, "one attempt and two retries");
}

#[tokio::test]
async fn a_persistent_upstream_429_is_a_429_with_retry_after() {
    let (up, app) = app_with_upstream(Reply::rate_limited("0"), "").await;
    let resp = app.chat(user_message("gpt-test", "hi")).await;
    assert!(resp.headers().contains_key("retry-after"));
    let error = expect_error(resp, 429).await;
    assert_eq!(error["code"], "rate_limit_exceeded");
    assert_eq!(up.hits(), 3);
}

#[tokio::test]
async fn an_upstream_that_does_not_answer_in_time_is_a_504() {
    let up = OpenAiUpstream::start(Reply::Hang).await;
    let config = format!(
        "[providers.up]\nkind = \"openai\"\nbase_url = \"{}\"\n\
         [routes.gpt-test]\ndeployments = [{{ provider = \"up\", model = \"m\", timeout_ms = 200 }}]\n\
         retry = {{ max_retries = 1, initial_backoff_ms = 1, max_backoff_ms = 1 }}\n",
        up.base_url()
    );
    let app = TestApp::spawn(&config).await;
    let error = expect_error(app.chat(user_message("gpt-test", "hi")).await, 504).await;
    assert_eq!(error["code"], "upstream_timeout");
    assert_eq!(up.hits(), 2, "timeouts are retried");
}

#[tokio::test]
async fn an_unreachable_upstream_is_a_502() {
    // Bind then drop a listener: nothing listens on that port afterwards.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let app = TestApp::spawn(&one_route(&format!("http://127.0.0.1:{port}/v1"), "")).await;
    let error = expect_error(app.chat(user_message("gpt-test", "hi")).await, 502).await;
    assert_eq!(error["code"], "upstream_error");
}

#[tokio::test]
async fn an_upstream_answering_garbage_is_a_502() {
    let reply = Reply::Json {
        status: 200,
        body: json!({"unexpected": true}),
        headers: vec![],
    };
    let (_up, app) = app_with_upstream(reply, "").await;
    expect_error(app.chat(user_message("gpt-test", "hi")).await, 502).await;
}

#[tokio::test]
async fn unknown_paths_and_methods_answer_in_the_envelope() {
    let (_up, app) = app_with_upstream(Reply::Chat("x".into()), "").await;
    expect_error(app.get("/v1/nope").await, 404).await;
    expect_error(app.get("/v1/chat/completions").await, 405).await;
}

#[tokio::test]
async fn with_keys_configured_v1_routes_need_a_valid_bearer_key() {
    let up = OpenAiUpstream::start(Reply::Chat("x".into())).await;
    let hash = pasarela::limits::ApiKeyHash::of("sk-client-1");
    let app = TestApp::spawn(&one_route(
        &up.base_url(),
        &format!("[auth]\napi_key_hashes = [\"{hash}\"]\n"),
    ))
    .await;

    let error = expect_error(app.chat(user_message("gpt-test", "hi")).await, 401).await;
    assert_eq!(error["code"], "invalid_api_key");

    let wrong = app
        .client
        .post(app.url("/v1/chat/completions"))
        .bearer_auth("sk-client-2")
        .json(&user_message("gpt-test", "hi"))
        .send()
        .await
        .unwrap();
    expect_error(wrong, 401).await;
    let models = app.client.get(app.url("/v1/models")).send().await.unwrap();
    expect_error(models, 401).await;
    assert_eq!(up.hits(), 0);

    let right = app
        .client
        .post(app.url("/v1/chat/completions"))
        .bearer_auth("sk-client-1")
        .json(&user_message("gpt-test", "hi"))
        .send()
        .await
        .unwrap();
    assert_eq!(right.status(), 200);
    assert_eq!(
        app.get("/healthz").await.status(),
        200,
        "probes need no key"
    );
    // The upstream gets the gateway's own credentials, never the client's key.
    assert!(!up.last().1.contains_key("authorization"));
}
