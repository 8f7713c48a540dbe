//! The request log's repository on both engines: batches round-trip every field, filters
//! and pages select the same rows, and pruning deletes by age.

use chrono::{DateTime, TimeDelta, Utc};
use pasarela::store::{LogEnding, LogEntry, LogFilter};

use crate::backends::{TestDb, on_both_backends};

/// A time to the millisecond, as stored.
fn at(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap()
}

fn entry(id: &str, created_at: DateTime<Utc>) -> LogEntry {
    LogEntry {
        request_id: id.into(),
        created_at,
        key_id: Some(7),
        key_name: Some("team-a".into()),
        endpoint: "/v1/chat/completions".into(),
        model: Some("gpt-test".into()),
        deployment: Some("up/upstream-model".into()),
        response_model: Some("upstream-model-2024".into()),
        status: 200,
        stream: true,
        duration_ms: 1234,
        first_token_ms: Some(56),
        input_tokens: Some(9),
        output_tokens: Some(3),
        finish_reasons: vec!["stop".into()],
        prompt: Some(("support-reply".into(), 3)),
        ending: LogEnding::Complete,
        error: None,
        request_body: Some(r#"{"messages":[{"role":"user","content":"Hi ✓"}]}"#.into()),
        response_body: Some(r#"{"choices":[]}"#.into()),
    }
}

async fn a_batch_round_trips_every_field_in_order(db: TestDb) {
    let rows = db.open().await.request_log();
    let full = entry("req-1", at(1_700_000_000_123));
    let bare = LogEntry {
        key_id: None,
        key_name: None,
        endpoint: "/v1/embeddings".into(),
        model: None,
        deployment: None,
        response_model: None,
        status: 401,
        stream: false,
        first_token_ms: None,
        input_tokens: None,
        output_tokens: None,
        finish_reasons: vec![],
        prompt: None,
        ending: LogEnding::Failed,
        error: Some("Incorrect API key provided.".into()),
        request_body: None,
        response_body: None,
        ..entry("req-2", at(1_700_000_000_456))
    };
    rows.insert(&[full.clone(), bare.clone()]).await.unwrap();
    rows.insert(&[]).await.unwrap();
    let page = rows.page(&LogFilter::default(), 0, 10).await.unwrap();
    let entries: Vec<LogEntry> = page.iter().map(|r| r.entry.clone()).collect();
    assert_eq!(entries, [full, bare]);
    assert!(page[0].id < page[1].id);
    let latest = rows.latest(&LogFilter::default(), 1).await.unwrap();
    assert_eq!(latest[0].entry.request_id, "req-2");
}

async fn filters_and_pages_select_the_same_rows_on_both_engines(db: TestDb) {
    let rows = db.open().await.request_log();
    let mut batch = Vec::new();
    for i in 0..7_i64 {
        let mut e = entry(&format!("req-{i}"), at(1_000_000 + i * 1000));
        if i % 2 == 1 {
            e.model = Some("other-model".into());
            e.key_name = Some("team-b".into());
            e.prompt = None;
        }
        if i == 6 {
            e.endpoint = "/v1/completions".into();
        }
        batch.push(e);
    }
    rows.insert(&batch).await.unwrap();
    let ids = |page: Vec<pasarela::store::LoggedRequest>| {
        page.into_iter()
            .map(|r| r.entry.request_id)
            .collect::<Vec<_>>()
    };
    let chat = LogFilter {
        endpoint: Some("/v1/chat/completions".into()),
        ..LogFilter::default()
    };
    // Pages of two, following the last id.
    let mut seen = Vec::new();
    let mut after = 0;
    loop {
        let page = rows.page(&chat, after, 2).await.unwrap();
        let Some(last) = page.last() else { break };
        after = last.id;
        seen.extend(ids(page));
    }
    assert_eq!(seen, ["req-0", "req-1", "req-2", "req-3", "req-4", "req-5"]);
    let window = LogFilter {
        since: Some(at(1_002_000)),
        until: Some(at(1_005_000)),
        ..chat.clone()
    };
    assert_eq!(
        ids(rows.page(&window, 0, 100).await.unwrap()),
        ["req-2", "req-3", "req-4"]
    );
    let by_model = LogFilter {
        model: Some("gpt-test".into()),
        ..LogFilter::default()
    };
    assert_eq!(
        ids(rows.page(&by_model, 0, 100).await.unwrap()),
        ["req-0", "req-2", "req-4", "req-6"]
    );
    let by_key_and_prompt = LogFilter {
        key_name: Some("team-a".into()),
        prompt_name: Some("support-reply".into()),
        until: Some(at(1_003_000)),
        ..LogFilter::default()
    };
    assert_eq!(
        ids(rows.page(&by_key_and_prompt, 0, 100).await.unwrap()),
        ["req-0", "req-2"]
    );
    let newest_of_b = LogFilter {
        key_name: Some("team-b".into()),
        ..LogFilter::default()
    };
    assert_eq!(
        ids(rows.latest(&newest_of_b, 2).await.unwrap()),
        ["req-5", "req-3"]
    );
}

async fn pruning_deletes_rows_older_than_the_cutoff_and_keeps_the_rest(db: TestDb) {
    let rows = db.open().await.request_log();
    let now = Utc::now();
    let day = TimeDelta::days(1);
    rows.insert(&[
        entry("ancient", now - day * 400),
        entry("old", now - day * 31),
        entry("recent", now - day * 29),
        entry("now", now),
    ])
    .await
    .unwrap();
    let pruned = rows.prune(now - day * 30).await.unwrap();
    assert_eq!(pruned, 2);
    let left: Vec<String> = rows
        .page(&LogFilter::default(), 0, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.entry.request_id)
        .collect();
    assert_eq!(left, ["recent", "now"]);
    assert_eq!(rows.prune(now - day * 30).await.unwrap(), 0);
}

on_both_backends!(
    a_batch_round_trips_every_field_in_order,
    filters_and_pages_select_the_same_rows_on_both_engines,
    pruning_deletes_rows_older_than_the_cutoff_and_keeps_the_rest,
);
