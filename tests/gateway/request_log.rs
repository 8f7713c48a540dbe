//! The request log end to end: requests through the real gateway (against the stand-in
//! upstream) land in its store with their metadata, bodies only when sampled and with
//! secrets removed, and a log whose store is stuck drops entries instead of slowing requests.

use std::path::Path;
use std::time::{Duration, Instant};

use chrono::Utc;
use pasarela::config::Config;
use pasarela::store::{LogEnding, LogEntry, LogFilter, Store};
use serde_json::{Value, json};
use sqlx::{Connection, SqliteConnection};

use crate::helpers::{TestApp, admin_config, chat_as, create_key, one_route, user_message};
use crate::openai_upstream::{OpenAiUpstream, Reply};

/// The store section that puts the gateway's database in `dir`, which the test keeps after
/// the gateway stops.
fn store_in(dir: &Path) -> String {
    format!(
        "[store]\ndatabase_url = \"sqlite://{}\"\n",
        dir.join("pasarela.db").display()
    )
}

async fn gateway(up: &OpenAiUpstream, dir: &Path, log: &str) -> TestApp {
    let extra = format!(
        "{store}\n{auth}\n[request_log]\n{log}",
        store = store_in(dir),
        auth = admin_config("")
    );
    TestApp::spawn(&one_route(&up.base_url(), &extra)).await
}

/// Every logged row, oldest first (read after the gateway stopped and flushed its log).
async fn logged(dir: &Path) -> Vec<LogEntry> {
    let config = Config::parse(&store_in(dir), "test").unwrap();
    let store = Store::open(&config.store).await.unwrap();
    let rows = store
        .request_log()
        .page(&LogFilter::default(), 0, 1000)
        .await
        .unwrap();
    store.close().await;
    rows.into_iter().map(|r| r.entry).collect()
}

fn request_id(resp: &reqwest::Response) -> String {
    resp.headers()
        .get("x-request-id")
        .expect("x-request-id on every response")
        .to_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn every_v1_request_is_logged_with_its_metadata_and_by_default_no_bodies() {
    let up = OpenAiUpstream::start(Reply::Chat("Hi there".into())).await;
    let dir = tempfile::tempdir().unwrap();
    let app = gateway(&up, dir.path(), "").await;
    let key = create_key(&app, json!({"name": "team-a"})).await;

    let ok = chat_as(&app, &key, &user_message("gpt-test", "hello")).await;
    assert_eq!(ok.status(), 200);
    let ok_id = request_id(&ok);
    assert!(ok_id.starts_with("req_"), "{ok_id}");
    let theirs = app
        .client
        .post(app.url("/v1/chat/completions"))
        .bearer_auth(&key)
        .header("x-request-id", "client-chosen-42")
        .json(&user_message("no-such-model", "hello"))
        .send()
        .await
        .unwrap();
    assert_eq!(theirs.status(), 404);
    assert_eq!(request_id(&theirs), "client-chosen-42");
    let refused = app
        .client
        .post(app.url("/v1/chat/completions"))
        .bearer_auth("sk-wrong-key-000000000000")
        .json(&user_message("gpt-test", "hello"))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
    // Not a /v1 route: not logged.
    assert_eq!(app.get("/healthz").await.status(), 200);
    app.stop().await;

    let rows = logged(dir.path()).await;
    assert_eq!(rows.len(), 3, "{rows:#?}");
    let ok = &rows[0];
    assert_eq!(ok.request_id, ok_id);
    assert_eq!(ok.key_name.as_deref(), Some("team-a"));
    assert!(ok.key_id.is_some());
    assert_eq!(ok.endpoint, "/v1/chat/completions");
    assert_eq!(ok.model.as_deref(), Some("gpt-test"));
    assert_eq!(ok.deployment.as_deref(), Some("up/upstream-model"));
    assert_eq!(ok.response_model.as_deref(), Some("upstream-model"));
    assert_eq!((ok.status, ok.stream), (200, false));
    assert_eq!((ok.input_tokens, ok.output_tokens), (Some(9), Some(3)));
    assert_eq!(ok.finish_reasons, ["stop"]);
    assert_eq!(ok.ending, LogEnding::Complete);
    assert_eq!(
        (ok.request_body.as_deref(), ok.response_body.as_deref()),
        (None, None)
    );
    assert!((Utc::now() - ok.created_at).num_minutes() < 5);

    let missing = &rows[1];
    assert_eq!(missing.request_id, "client-chosen-42");
    assert_eq!(missing.status, 404);
    assert!(
        missing
            .error
            .as_deref()
            .is_some_and(|e| e.contains("no-such-model")),
        "{missing:?}"
    );
    assert_eq!(missing.deployment, None);

    let refused = &rows[2];
    assert_eq!((refused.status, refused.key_name.as_deref()), (401, None));
}

#[tokio::test]
async fn bodies_are_kept_only_for_sampled_keys_and_a_stream_is_stored_assembled_and_routes_can_opt_out()
 {
    let up = OpenAiUpstream::start(Reply::Chat("Plain answer".into())).await;
    let dir = tempfile::tempdir().unwrap();
    let app = gateway(
        &up,
        dir.path(),
        "[request_log.keys.sampled]\nbody_sample_rate = 1.0\n\
         [request_log.routes.\"/v1/embeddings\"]\nmetadata_sample_rate = 0.0\n",
    )
    .await;
    let sampled = create_key(&app, json!({"name": "sampled"})).await;
    let plain = create_key(&app, json!({"name": "plain"})).await;

    let body = json!({"model": "gpt-test", "temperature": 0.3,
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]});
    assert_eq!(chat_as(&app, &plain, &body).await.status(), 200);
    assert_eq!(chat_as(&app, &sampled, &body).await.status(), 200);
    up.push(Reply::stream_of(&["Hel", "lo, ", "world"], true));
    let mut streamed = body.clone();
    streamed["stream"] = json!(true);
    let resp = chat_as(&app, &sampled, &streamed).await;
    assert_eq!(resp.status(), 200);
    let text = resp.text().await.unwrap();
    assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
    // An endpoint whose metadata rate is 0 is not logged (for a key without rates of its own).
    let embedded = app
        .client
        .post(app.url("/v1/embeddings"))
        .bearer_auth(&plain)
        .json(&json!({"model": "gpt-test", "input": "hi"}))
        .send()
        .await
        .unwrap();
    assert!(embedded.headers().contains_key("x-request-id"));
    app.stop().await;

    let rows = logged(dir.path()).await;
    assert_eq!(rows.len(), 3, "{rows:#?}");
    let (unsampled, complete, stream) = (&rows[0], &rows[1], &rows[2]);
    assert_eq!(unsampled.key_name.as_deref(), Some("plain"));
    assert_eq!(
        (
            unsampled.request_body.as_ref(),
            unsampled.response_body.as_ref()
        ),
        (None, None)
    );

    let request: Value = serde_json::from_str(complete.request_body.as_deref().unwrap()).unwrap();
    assert_eq!(request, body);
    let response: Value = serde_json::from_str(complete.response_body.as_deref().unwrap()).unwrap();
    assert_eq!(response["choices"][0]["message"]["content"], "Plain answer");
    assert_eq!(response["usage"]["completion_tokens"], 3);

    assert!(stream.stream);
    assert_eq!(stream.ending, LogEnding::Complete);
    assert!(stream.first_token_ms.is_some());
    assert_eq!(
        (stream.input_tokens, stream.output_tokens),
        (Some(9), Some(3))
    );
    let request: Value = serde_json::from_str(stream.request_body.as_deref().unwrap()).unwrap();
    assert_eq!(request["stream"], true);
    let response: Value = serde_json::from_str(stream.response_body.as_deref().unwrap()).unwrap();
    assert_eq!(response["object"], "chat.completion");
    assert_eq!(response["choices"][0]["message"]["role"], "assistant");
    assert_eq!(response["choices"][0]["message"]["content"], "Hello, world");
    assert_eq!(response["choices"][0]["finish_reason"], "stop");
}

#[tokio::test]
async fn secrets_in_bodies_are_redacted_and_the_callers_key_is_never_stored() {
    let up = OpenAiUpstream::start(Reply::Chat(
        "Use header Authorization: Bearer abcdef0123456789 next time".into(),
    ))
    .await;
    let dir = tempfile::tempdir().unwrap();
    let app = gateway(
        &up,
        dir.path(),
        "body_sample_rate = 1.0\nredact_keys = [\"session\"]\n",
    )
    .await;
    let key = create_key(&app, json!({"name": "team-a"})).await;
    let pasted = "sk-proj-AbCdEfGhIjKlMnOpQrStUv0123";
    let body = json!({"model": "gpt-test",
        "metadata": {"api_key": "hunter2-plain", "session": "s-77", "team": "search"},
        "messages": [{"role": "user", "content": format!("my keys: {pasted} and {key}")}]});
    assert_eq!(chat_as(&app, &key, &body).await.status(), 200);
    app.stop().await;

    let rows = logged(dir.path()).await;
    let row = &rows[0];
    let stored = format!("{row:?}");
    for secret in [
        pasted,
        key.as_str(),
        "hunter2-plain",
        "s-77",
        "abcdef0123456789",
    ] {
        assert!(!stored.contains(secret), "`{secret}` stored: {stored}");
    }
    let request: Value = serde_json::from_str(row.request_body.as_deref().unwrap()).unwrap();
    assert_eq!(
        request["messages"][0]["content"],
        "my keys: [REDACTED] and [REDACTED]"
    );
    assert_eq!(
        request["metadata"],
        json!({"api_key": "[REDACTED]", "session": "[REDACTED]", "team": "search"})
    );
    let response: Value = serde_json::from_str(row.response_body.as_deref().unwrap()).unwrap();
    assert_eq!(
        response["choices"][0]["message"]["content"],
        "Use header Authorization: [REDACTED] next time"
    );
}

/// The value of an unlabelled counter in Prometheus text, 0 when absent.
fn counter(metrics: &str, name: &str) -> u64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .map_or(0, |v| v.trim().parse::<f64>().unwrap() as u64)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_buffer_drops_and_counts_entries_and_requests_stay_fast_while_the_store_is_locked() {
    let up = OpenAiUpstream::start(Reply::Chat("ok".into())).await;
    let dir = tempfile::tempdir().unwrap();
    let app = gateway(&up, dir.path(), "buffer = 2\nbatch = 1\n").await;
    let key = create_key(&app, json!({"name": "team-a"})).await;
    let before = counter(
        &app.get("/metrics").await.text().await.unwrap(),
        "pasarela_request_log_dropped_total",
    );

    // Another writer holds SQLite's write lock: the log's writer waits on it (up to the
    // store's busy timeout, 5 s) with its first entry, and the buffer fills behind it.
    let mut holder = SqliteConnection::connect(&format!(
        "sqlite://{}",
        dir.path().join("pasarela.db").display()
    ))
    .await
    .unwrap();
    sqlx::raw_sql("BEGIN IMMEDIATE")
        .execute(&mut holder)
        .await
        .unwrap();

    const REQUESTS: u64 = 12;
    for _ in 0..REQUESTS {
        let started = Instant::now();
        let resp = chat_as(&app, &key, &user_message("gpt-test", "hi")).await;
        assert_eq!(resp.status(), 200);
        resp.bytes().await.unwrap();
        // Far below the busy timeout: the request never waited for the store.
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "{:?}",
            started.elapsed()
        );
    }
    let metrics = app.get("/metrics").await.text().await.unwrap();
    let dropped = counter(&metrics, "pasarela_request_log_dropped_total") - before;
    // At most one entry in the writer's hands and two in the buffer.
    assert!(dropped >= REQUESTS - 3, "dropped {dropped}\n{metrics}");

    sqlx::raw_sql("ROLLBACK")
        .execute(&mut holder)
        .await
        .unwrap();
    holder.close().await.unwrap();
    app.stop().await;
    let rows = logged(dir.path()).await;
    assert_eq!(
        rows.len() as u64,
        REQUESTS - dropped,
        "what was not dropped is written"
    );
}

#[tokio::test]
async fn the_writer_gathers_rows_into_full_batches_and_holds_a_partial_one_for_its_interval() {
    let up = OpenAiUpstream::start(Reply::Chat("ok".into())).await;
    let dir = tempfile::tempdir().unwrap();
    // An interval far longer than the test: only full batches can be written while it runs.
    let app = gateway(&up, dir.path(), "batch = 5\nflush_interval_ms = 600000\n").await;
    let key = create_key(&app, json!({"name": "team-a"})).await;
    let written = |metrics: &str| counter(metrics, "pasarela_request_log_written_total");
    let before = written(&app.get("/metrics").await.text().await.unwrap());

    const REQUESTS: u64 = 12;
    for _ in 0..REQUESTS {
        let resp = chat_as(&app, &key, &user_message("gpt-test", "hi")).await;
        assert_eq!(resp.status(), 200);
        resp.bytes().await.unwrap();
    }
    // Records are offered when their response is over: poll until two batches are in.
    let deadline = Instant::now() + Duration::from_secs(10);
    let metrics = loop {
        let metrics = app.get("/metrics").await.text().await.unwrap();
        if written(&metrics) - before >= 10 {
            break metrics;
        }
        assert!(
            Instant::now() < deadline,
            "two full batches never written\n{metrics}"
        );
        tokio::task::yield_now().await;
    };
    assert_eq!(
        written(&metrics) - before,
        10,
        "the last two records wait for their batch to fill or the interval to pass"
    );

    // A graceful stop writes the partial batch at once.
    app.stop().await;
    assert_eq!(logged(dir.path()).await.len() as u64, REQUESTS);
}
