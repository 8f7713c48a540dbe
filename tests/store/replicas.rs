//! Two gateways sharing one database, as replicas behind a load balancer do: a label moved
//! through one must reach the other's prompt cache within its refresh interval.

use std::time::{Duration, Instant};

use pasarela::config::Config;
use pasarela::server::Application;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::backends::{TestDb, on_both_backends};

/// How often each replica checks the store for changes in this test.
const REFRESH_MS: u64 = 200;

async fn replica(db: &TestDb) -> (String, CancellationToken) {
    let mut config = Config::parse(
        &format!("[prompts]\nrefresh_interval_ms = {REFRESH_MS}\n"),
        "replica",
    )
    .unwrap();
    config.server.listen = "127.0.0.1:0".parse().unwrap();
    config.store = db.config().clone();
    let app = Application::build(config).await.unwrap();
    let base = format!("http://{}", app.local_addr());
    let stop = app.shutdown_token();
    tokio::spawn(app.run());
    (base, stop)
}

async fn staging_version(client: &reqwest::Client, base: &str) -> i64 {
    let v: Value = client
        .get(format!("{base}/api/prompts/p/versions/staging"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    v["version"].as_i64().unwrap()
}

async fn a_label_moved_on_one_replica_reaches_the_other_within_its_refresh_interval(db: TestDb) {
    let (a, stop_a) = replica(&db).await;
    let (b, stop_b) = replica(&db).await;
    let client = reqwest::Client::new();
    for text in ["one", "two"] {
        let pushed = client
            .post(format!("{a}/api/prompts"))
            .json(
                &json!({"prompt": {"name": "p", "messages": [{"role": "user", "content": text}]}}),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(pushed.status(), 201);
    }
    let move_staging = |version: i64| {
        client
            .put(format!("{a}/api/prompts/p/labels/staging"))
            .json(&json!({"version": version}))
            .send()
    };
    assert_eq!(move_staging(1).await.unwrap().status(), 200);
    // B reads (and caches) staging = 1, then A moves it.
    assert_eq!(staging_version(&client, &b).await, 1);
    assert_eq!(move_staging(2).await.unwrap().status(), 200);
    let moved = Instant::now();
    // Wait for the eventual change, polling B: it must come within a few refresh intervals.
    let limit = Duration::from_millis(5 * REFRESH_MS + 2000);
    while staging_version(&client, &b).await != 2 {
        assert!(
            moved.elapsed() < limit,
            "replica B still serves staging = 1 after {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(REFRESH_MS / 4)).await;
    }
    eprintln!("replica B followed the move after {:?}", moved.elapsed());
    stop_a.cancel();
    stop_b.cancel();
}

on_both_backends!(a_label_moved_on_one_replica_reaches_the_other_within_its_refresh_interval);
