//! Operations: probes, the OpenAPI document, metrics, the overhead header, binding rules and
//! graceful shutdown.

use std::time::Duration;

use futures::StreamExt;
use serde_json::{Value, json};

use crate::helpers::{TestApp, one_route, user_message};
use crate::openai_upstream::{OpenAiUpstream, Reply, chat_chunks};

#[tokio::test]
async fn probes_answer_ok() {
    let app = TestApp::spawn("").await;
    assert_eq!(
        app.get("/healthz").await.json::<Value>().await.unwrap()["status"],
        "ok"
    );
    let ready = app.get("/readyz").await;
    assert_eq!(ready.status(), 200);
}

#[tokio::test]
async fn openapi_document_describes_every_public_endpoint() {
    let app = TestApp::spawn("").await;
    let doc: Value = app.get("/openapi.json").await.json().await.unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    for path in [
        "/v1/chat/completions",
        "/v1/completions",
        "/v1/embeddings",
        "/v1/models",
        "/v1/models/{id}",
        "/healthz",
        "/readyz",
        "/metrics",
        "/openapi.json",
    ] {
        assert!(doc["paths"].get(path).is_some(), "missing {path}");
    }
    let schemas = &doc["components"]["schemas"];
    for schema in [
        "ChatCompletionRequest",
        "ChatCompletion",
        "ChatCompletionChunk",
        "ErrorResponse",
    ] {
        assert!(schemas.get(schema).is_some(), "missing schema {schema}");
    }
    assert!(
        schemas["ChatCompletionRequest"]["properties"]
            .get("tools")
            .is_some()
    );
}

#[tokio::test]
async fn models_lists_configured_routes() {
    let up = OpenAiUpstream::start(Reply::Chat("x".into())).await;
    let app = TestApp::spawn(&one_route(&up.base_url(), "")).await;
    let list: Value = app.get("/v1/models").await.json().await.unwrap();
    assert_eq!(list["object"], "list");
    assert_eq!(list["data"][0]["id"], "gpt-test");
    assert_eq!(list["data"][0]["object"], "model");
    let one: Value = app.get("/v1/models/gpt-test").await.json().await.unwrap();
    assert_eq!(one["id"], "gpt-test");
}

#[tokio::test]
async fn every_response_carries_the_overhead_header_and_metrics_count_it() {
    let up = OpenAiUpstream::start(Reply::Chat("x".into())).await;
    let app = TestApp::spawn(&one_route(&up.base_url(), "")).await;
    for resp in [
        app.chat(user_message("gpt-test", "hi")).await,
        app.get("/nope").await,
        app.get("/healthz").await,
    ] {
        let value = resp.headers()["x-pasarela-overhead-ms"]
            .to_str()
            .unwrap()
            .to_owned();
        let ms: f64 = value.parse().unwrap();
        assert!((0.0..1000.0).contains(&ms), "{value}");
    }
    let metrics = app.get("/metrics").await.text().await.unwrap();
    assert!(
        metrics.contains("pasarela_overhead_seconds_bucket"),
        "{metrics}"
    );
    assert!(
        metrics.contains("pasarela_upstream_attempts_total"),
        "{metrics}"
    );
}

#[tokio::test]
async fn overhead_excludes_time_spent_waiting_on_the_upstream() {
    let up = OpenAiUpstream::start(Reply::Stream {
        frames: chat_chunks(&["slow"], false),
        delay: Duration::from_millis(300),
        done: true,
    })
    .await;
    let app = TestApp::spawn(&one_route(&up.base_url(), "")).await;
    let mut req = user_message("gpt-test", "hi");
    req["stream"] = json!(true);
    let resp = app.chat(req).await;
    let ms: f64 = resp.headers()["x-pasarela-overhead-ms"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    // The first chunk took 300 ms to arrive; none of that is the gateway's.
    assert!(ms < 150.0, "overhead {ms} ms");
}

#[tokio::test]
async fn without_keys_a_public_listen_address_is_narrowed_to_loopback() {
    let data = tempfile::tempdir().unwrap();
    let mut config = pasarela::config::Config::parse("", "test").unwrap();
    config.server.listen = "0.0.0.0:0".parse().unwrap();
    config.store.data_dir = data.path().to_owned();
    let app = pasarela::server::Application::build(config).await.unwrap();
    assert!(app.local_addr().ip().is_loopback(), "{}", app.local_addr());

    let hash = pasarela::limits::ApiKeyHash::of("k");
    let mut config = pasarela::config::Config::parse(
        &format!("[auth]\napi_key_hashes = [\"{hash}\"]\n"),
        "test",
    )
    .unwrap();
    config.server.listen = "0.0.0.0:0".parse().unwrap();
    config.store.data_dir = data.path().to_owned();
    let app = pasarela::server::Application::build(config).await.unwrap();
    assert!(
        app.local_addr().ip().is_unspecified(),
        "{}",
        app.local_addr()
    );
}

#[tokio::test]
async fn shutdown_drains_an_in_flight_stream_to_done() {
    let up = OpenAiUpstream::start(Reply::Stream {
        frames: chat_chunks(&["a", "b", "c", "d"], false),
        delay: Duration::from_millis(100),
        done: true,
    })
    .await;
    let app = TestApp::spawn(&one_route(&up.base_url(), "")).await;
    let mut req = user_message("gpt-test", "hi");
    req["stream"] = json!(true);
    let resp = app.chat(req).await;
    let mut body = resp.bytes_stream();
    let mut text = String::from_utf8(body.next().await.unwrap().unwrap().to_vec()).unwrap();

    app.begin_shutdown();
    while let Some(chunk) = body.next().await {
        text.push_str(std::str::from_utf8(&chunk.unwrap()).unwrap());
    }
    assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");
    app.stop().await;
}

#[tokio::test]
async fn config_errors_name_the_key() {
    let err =
        pasarela::config::Config::parse("[routes.m]\ndeployments = []\n", "bad.toml").unwrap_err();
    assert!(err.to_string().contains("bad.toml"));
    assert!(err.to_string().contains("routes.m.deployments"));
    // A provider whose key variable is not set fails at startup, not at the first request.
    let text = "[providers.p]\nkind = \"anthropic\"\napi_key_env = \"PASARELA_TEST_SURELY_UNSET\"\n\
                [routes.m]\ndeployments = [{ provider = \"p\", model = \"claude\" }]\n";
    let config = pasarela::config::Config::parse(text, "t.toml").unwrap();
    let err = pasarela::server::Application::build(config)
        .await
        .err()
        .unwrap();
    assert!(
        err.to_string().contains("PASARELA_TEST_SURELY_UNSET"),
        "{err}"
    );
}
