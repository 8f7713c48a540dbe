//! Opening a store: where the SQLite file goes, how it is set up, and what a failure says.

use std::time::{Duration, Instant};

use pasarela::config::StoreConfig;
use pasarela::store::{Backend, SQLITE_FILE, Store, StoreError};
use secrecy::SecretString;
use sqlx::{Connection, SqliteConnection};

async fn journal_mode(file: &std::path::Path) -> String {
    let mut conn = SqliteConnection::connect(&format!("sqlite://{}", file.display()))
        .await
        .unwrap();
    sqlx::query_scalar("PRAGMA journal_mode")
        .fetch_one(&mut conn)
        .await
        .unwrap()
}

#[tokio::test]
async fn sqlite_store_creates_its_data_dir_and_a_wal_database_in_it() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("not/yet/there");
    let config = StoreConfig {
        data_dir: data_dir.clone(),
        database_url: None,
    };
    let store = Store::open(&config).await.unwrap();
    assert_eq!(store.backend(), Backend::Sqlite);
    let file = data_dir.join(SQLITE_FILE);
    assert!(file.is_file());
    // Kept in the file, so another connection sees it.
    assert_eq!(journal_mode(&file).await, "wal");
}

#[tokio::test]
async fn sqlite_url_puts_the_database_where_it_says_and_leaves_data_dir_alone() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("Elsewhere With Spaces/registry.db");
    let config = StoreConfig {
        data_dir: dir.path().join("data"),
        database_url: Some(SecretString::from(format!("sqlite://{}", file.display()))),
    };
    let store = Store::open(&config).await.unwrap();
    assert_eq!(store.backend(), Backend::Sqlite);
    assert!(file.is_file());
    assert!(!dir.path().join("data").exists());
    assert_eq!(journal_mode(&file).await, "wal");
}

#[tokio::test]
async fn unreachable_postgres_fails_to_open_without_echoing_the_password() {
    // Nothing listens on port 1; the connection is refused at once.
    let config = StoreConfig {
        data_dir: tempfile::tempdir().unwrap().path().join("data"),
        database_url: Some(SecretString::from(
            "postgres://pasarela:hunter2@127.0.0.1:1/registry".to_owned(),
        )),
    };
    let started = Instant::now();
    let err = Store::open(&config).await.unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::Open {
                backend: Backend::Postgres,
                ..
            }
        ),
        "{err:?}"
    );
    let message = pasarela::error_chain(&err);
    assert!(message.contains("postgres"), "{message}");
    assert!(!message.contains("hunter2"), "{message}");
    assert!(!format!("{err:?}").contains("hunter2"), "{err:?}");
    // Bounded by the pool's acquire timeout, not hanging.
    assert!(started.elapsed() < Duration::from_secs(30));
}
