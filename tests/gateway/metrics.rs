//! `GET /metrics` after real traffic: the families an operator graphs are there with their
//! labels, and Prometheus' own `promtool check metrics` accepts the exposition.

use std::process::Stdio;

use pasarela::limits::ApiKeyHash;
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;

use crate::helpers::{TestApp, one_route, sse_data, user_message};
use crate::openai_upstream::{OpenAiUpstream, Reply};

const ADMIN: &str = "sk-admin";

/// Lines of the exposition that start with `family` and contain every one of `labels`.
fn samples<'a>(text: &'a str, family: &str, labels: &[&str]) -> Vec<&'a str> {
    text.lines()
        .filter(|l| l.starts_with(family) && labels.iter().all(|lb| l.contains(lb)))
        .collect()
}

#[tokio::test]
async fn metrics_cover_requests_tokens_latency_limits_and_upstream_errors_and_pass_promtool() {
    let up = OpenAiUpstream::start(Reply::Chat("Hi".into())).await;
    let admin = ApiKeyHash::of(ADMIN);
    let app = TestApp::spawn(&one_route(
        &up.base_url(),
        &format!("[auth]\nadmin_key_hashes = [\"{admin}\"]\n"),
    ))
    .await;
    let created: Value = app
        .client
        .post(app.url("/api/keys"))
        .bearer_auth(ADMIN)
        .json(&json!({"name": "metered", "rpm": 3}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let key = created["key"].as_str().unwrap().to_owned();
    let chat = |body: Value| {
        app.client
            .post(app.url("/v1/chat/completions"))
            .bearer_auth(&key)
            .json(&body)
            .send()
    };
    // A plain answer, a stream, an upstream failure (500 twice, so retries give up), then a
    // refusal by the key's rate.
    assert_eq!(
        chat(user_message("gpt-test", "hi")).await.unwrap().status(),
        200
    );
    up.push(Reply::stream_of(&["a", "b"], true));
    let mut stream = user_message("gpt-test", "hi");
    stream["stream"] = json!(true);
    let frames = sse_data(&chat(stream).await.unwrap().text().await.unwrap());
    assert_eq!(frames.last().map(String::as_str), Some("[DONE]"));
    for _ in 0..3 {
        up.push(Reply::status(500, "upstream broke"));
    }
    assert_eq!(
        chat(user_message("gpt-test", "hi")).await.unwrap().status(),
        502
    );
    assert_eq!(
        chat(user_message("gpt-test", "hi")).await.unwrap().status(),
        429
    );

    // Requests are counted when their response is over: poll until the last one is in.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let text = loop {
        let text = app.get("/metrics").await.text().await.unwrap();
        // Refused before its body was read, the 429 has no model.
        let counted = samples(
            &text,
            "pasarela_requests_total",
            &["model=\"none\"", "status=\"429\""],
        );
        if !counted.is_empty() {
            break text;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "429 never counted:\n{text}"
        );
        tokio::task::yield_now().await;
    };
    for (family, labels) in [
        (
            "pasarela_requests_total",
            vec![
                "endpoint=\"/v1/chat/completions\"",
                "model=\"gpt-test\"",
                "status=\"200\"",
            ],
        ),
        ("pasarela_requests_total", vec!["status=\"502\""]),
        (
            "pasarela_request_duration_seconds_bucket",
            vec!["model=\"gpt-test\""],
        ),
        (
            "pasarela_time_to_first_token_seconds_bucket",
            vec!["model=\"gpt-test\""],
        ),
        (
            "pasarela_tokens_total",
            vec!["model=\"gpt-test\"", "direction=\"input\""],
        ),
        (
            "pasarela_tokens_total",
            vec!["model=\"gpt-test\"", "direction=\"output\""],
        ),
        (
            "pasarela_overhead_seconds_bucket",
            vec!["endpoint=\"/v1/chat/completions\""],
        ),
        ("pasarela_rate_limited_total", vec!["limit=\"requests\""]),
        (
            "pasarela_upstream_attempts_total",
            vec!["outcome=\"retryable_error\""],
        ),
    ] {
        assert!(
            !samples(&text, family, &labels).is_empty(),
            "no {family} with {labels:?} in:\n{text}"
        );
    }
    // 9 input tokens from the plain answer and 9 from the stream (its usage chunk).
    let input = samples(&text, "pasarela_tokens_total", &["direction=\"input\""]);
    assert!(input[0].ends_with(" 18"), "{input:?}");
    assert!(text.contains("# HELP pasarela_time_to_first_token_seconds "));

    let Ok(promtool) = std::env::var("PASARELA_PROMTOOL") else {
        assert!(
            std::env::var_os("PASARELA_REQUIRE_ALL").is_none(),
            "PASARELA_PROMTOOL is not set but PASARELA_REQUIRE_ALL is: run scripts/test"
        );
        eprintln!("SKIPPED promtool check: PASARELA_PROMTOOL is not set (scripts/setup-promtool)");
        return;
    };
    let mut child = tokio::process::Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(text.as_bytes()).await.unwrap();
    drop(stdin);
    let out = child.wait_with_output().await.unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{}{}\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
