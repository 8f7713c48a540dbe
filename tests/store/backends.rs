//! The two engines as fixtures: [`TestDb`] is an empty database of one engine, which a test
//! may open as many stores on as it likes (each store its own pool), and `on_both_backends!`
//! turns each behaviour into one test per engine.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use futures::FutureExt;
use pasarela::config::StoreConfig;
use pasarela::store::Store;
use secrecy::SecretString;
use sqlx::{AssertSqlSafe, Connection, PgConnection};
use tempfile::TempDir;

/// One engine's empty database, for one test.
pub struct TestDb {
    config: StoreConfig,
    // Holds the SQLite file (and the data dir of a Postgres test, which stays unused).
    _dir: TempDir,
}

impl TestDb {
    /// A store with a pool of its own.
    pub async fn open(&self) -> Store {
        Store::open(&self.config).await.expect("store opens")
    }

    /// The store settings of this database, for a whole gateway to use.
    pub fn config(&self) -> &StoreConfig {
        &self.config
    }
}

/// Runs each `async fn NAME(TestDb)` of the calling module as `sqlite::NAME` and
/// `postgres::NAME`.
macro_rules! on_both_backends {
    ($($behaviour:ident),+ $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $behaviour() {
                    crate::backends::on_sqlite(super::$behaviour).await;
                }
            )+
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $behaviour() {
                    crate::backends::on_postgres(
                        concat!(module_path!(), "::", stringify!($behaviour)),
                        super::$behaviour,
                    )
                    .await;
                }
            )+
        }
    };
}
pub(crate) use on_both_backends;

pub async fn on_sqlite<F, Fut>(behaviour: F)
where
    F: FnOnce(TestDb) -> Fut,
    Fut: Future<Output = ()>,
{
    let dir = tempfile::tempdir().unwrap();
    let config = StoreConfig {
        data_dir: dir.path().join("data"),
        database_url: None,
    };
    behaviour(TestDb { config, _dir: dir }).await;
}

/// Creates a database for the test, runs it, and drops the database whether it passed or not.
pub async fn on_postgres<F, Fut>(test: &str, behaviour: F)
where
    F: FnOnce(TestDb) -> Fut,
    Fut: Future<Output = ()>,
{
    let Some((admin_url, mut admin)) = admin_connection(test).await else {
        return;
    };
    // Unique within this run (nextest runs each test in a process of its own, cargo test all
    // in one); a leftover of a killed run with the same name is dropped first.
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let name = format!(
        "pasarela_test_{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    let drop_db = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
    sqlx::raw_sql(AssertSqlSafe(drop_db.clone()))
        .execute(&mut admin)
        .await
        .unwrap();
    sqlx::raw_sql(AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut admin)
        .await
        .unwrap();
    let mut url = admin_url;
    url.set_path(&name);
    let dir = tempfile::tempdir().unwrap();
    let config = StoreConfig {
        data_dir: dir.path().join("data"),
        database_url: Some(SecretString::from(url.to_string())),
    };
    let outcome = AssertUnwindSafe(behaviour(TestDb { config, _dir: dir }))
        .catch_unwind()
        .await;
    // FORCE ends the connections the test's stores still hold.
    sqlx::raw_sql(AssertSqlSafe(drop_db))
        .execute(&mut admin)
        .await
        .unwrap();
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

/// A connection to the server's maintenance database, or None (after saying so) when no
/// server answers and skipping is allowed.
async fn admin_connection(test: &str) -> Option<(reqwest::Url, PgConnection)> {
    let candidates = match std::env::var("PASARELA_TEST_POSTGRES_URL") {
        Ok(url) => vec![url],
        // Debian's server trusts local connections; which roles exist varies.
        Err(_) => vec![
            "postgres://postgres@127.0.0.1:5432/test".to_owned(),
            "postgres://root@127.0.0.1:5432/test".to_owned(),
        ],
    };
    let mut failures = Vec::new();
    for candidate in candidates {
        let url = reqwest::Url::parse(&candidate).expect("a Postgres URL");
        let attempt =
            tokio::time::timeout(Duration::from_secs(5), PgConnection::connect(url.as_str())).await;
        match attempt {
            Ok(Ok(conn)) => return Some((url, conn)),
            Ok(Err(e)) => failures.push(format!("{}: {e}", without_password(&url))),
            Err(_) => failures.push(format!("{}: no answer in 5 s", without_password(&url))),
        }
    }
    let why = failures.join("; ");
    assert!(
        std::env::var_os("PASARELA_REQUIRE_ALL").is_none(),
        "Postgres not reachable and PASARELA_REQUIRE_ALL is set: {why}"
    );
    eprintln!("SKIPPED {test}: Postgres not reachable at {why}");
    None
}

fn without_password(url: &reqwest::Url) -> reqwest::Url {
    let mut url = url.clone();
    // Fails only for URLs that cannot have a password at all.
    let _ = url.set_password(None);
    url
}
