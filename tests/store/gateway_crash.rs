//! A real `pasarela serve` process killed (SIGKILL) during a burst of concurrent pushes through
//! its admin API: every version it acknowledged must be in the SQLite file afterwards, the file
//! must pass SQLite's integrity check, and the registry must be consistent (versions without
//! gaps, `latest` at the newest, one history entry and one change per version).

use std::time::Duration;

use pasarela::config::StoreConfig;
use pasarela::store::{LATEST_LABEL, SQLITE_FILE, Store};
use serde_json::{Value, json};
use sqlx::{Connection, SqliteConnection};
use tokio::sync::mpsc;

use crate::gateway_process::GatewayProcess;

const WRITERS: usize = 8;
/// Acknowledged versions the test waits for before it kills the gateway.
const ACKNOWLEDGED_BEFORE_KILL: usize = 60;

fn prompt(writer: usize, i: usize) -> Value {
    json!({
        "prompt": {
            "name": "p",
            "messages": [{"role": "user", "content": format!("variant {writer}-{i}")}]
        },
        "author": format!("writer-{writer}")
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_killed_during_a_burst_of_pushes_keeps_every_acknowledged_version() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = dir.path().join("pasarela.toml");
    std::fs::write(&config, "[server]\nshutdown_grace_secs = 1\n").unwrap();
    let mut gateway = GatewayProcess::start(&config, &data, &[]).await;
    let base = gateway.base.clone();
    let client = reqwest::Client::new();

    // Writers push distinct contents until the gateway dies; each acknowledged version goes
    // to the test with the hash the gateway reported.
    let (acks, mut acked) = mpsc::unbounded_channel::<(i64, String)>();
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let (client, base, acks) = (client.clone(), base.clone(), acks.clone());
            tokio::spawn(async move {
                for i in 0.. {
                    let sent = client
                        .post(format!("{base}/api/prompts"))
                        .json(&prompt(w, i))
                        .send()
                        .await;
                    let Ok(resp) = sent else { return };
                    if resp.status() != 201 {
                        // Only a dying gateway may fail a push.
                        let status = resp.status();
                        if let Ok(body) = resp.text().await {
                            eprintln!("writer {w}: push {i} answered {status}: {body}");
                        }
                        return;
                    }
                    let Ok(body) = resp.json::<Value>().await else {
                        return;
                    };
                    let version = body["version"].as_i64().unwrap();
                    let hash = body["content_hash"].as_str().unwrap().to_owned();
                    if acks.send((version, hash)).is_err() {
                        return;
                    }
                }
            })
        })
        .collect();
    drop(acks);
    let mut acknowledged = Vec::new();
    while acknowledged.len() < ACKNOWLEDGED_BEFORE_KILL {
        let ack = tokio::time::timeout(Duration::from_secs(30), acked.recv())
            .await
            .expect("pushes keep being acknowledged")
            .expect("writers are running");
        acknowledged.push(ack);
    }
    // SIGKILL: no graceful shutdown, no checkpoint, pushes in flight.
    gateway.kill().await;
    for w in writers {
        w.await.unwrap();
    }
    // Acknowledgements that were on their way when the gateway died count too.
    while let Some(ack) = acked.recv().await {
        acknowledged.push(ack);
    }

    let file = data.join(SQLITE_FILE);
    let mut conn = SqliteConnection::connect(&format!("sqlite://{}", file.display()))
        .await
        .unwrap();
    let integrity: String = sqlx::query_scalar("PRAGMA integrity_check")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(integrity, "ok");
    conn.close().await.unwrap();

    let prompts = Store::open(&StoreConfig {
        data_dir: data,
        database_url: None,
    })
    .await
    .unwrap()
    .prompts();
    for (version, hash) in &acknowledged {
        let stored = prompts.get_version("p", *version).await.unwrap();
        assert_eq!(&stored.meta.content_hash, hash, "version {version}");
    }
    let versions: Vec<i64> = prompts
        .list_versions("p")
        .await
        .unwrap()
        .iter()
        .map(|v| v.meta.version)
        .collect();
    let stored = versions.len() as i64;
    assert!(
        stored >= acknowledged.len() as i64,
        "{stored} stored, {} acknowledged",
        acknowledged.len()
    );
    assert_eq!(versions, (1..=stored).collect::<Vec<_>>());
    let latest = prompts.get_by_label("p", LATEST_LABEL).await.unwrap();
    assert_eq!(latest.meta.version, stored);
    assert_eq!(
        prompts.label_history("p").await.unwrap().len() as i64,
        stored
    );
    assert_eq!(prompts.change_counter().await.unwrap(), stored);
}
