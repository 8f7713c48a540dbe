//! The same push and label flow on Postgres, through `PASARELA_DATABASE_URL`: the CLI must
//! reach whatever database the gateway uses. Postgres is `PASARELA_TEST_POSTGRES_URL`, else
//! the local server on 127.0.0.1:5432 (as `tests/store` finds it); where none answers the test
//! says SKIPPED, unless `PASARELA_REQUIRE_ALL` is set, where that is a failure.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use sqlx::{AssertSqlSafe, Connection, PgConnection};

use crate::command::TestCli;

/// A database of its own for one test, dropped afterwards whether the test passed or not.
struct TestDatabase {
    url: reqwest::Url,
    admin_url: reqwest::Url,
    name: String,
    runtime: tokio::runtime::Runtime,
}

impl TestDatabase {
    fn create(test: &str) -> Option<TestDatabase> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let (admin_url, mut admin) = runtime.block_on(admin_connection(test))?;
        // Unique within this run; a leftover of a killed run with the same name goes first.
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "pasarela_cli_test_{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        runtime.block_on(async {
            sqlx::raw_sql(AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
            )))
            .execute(&mut admin)
            .await
            .unwrap();
            sqlx::raw_sql(AssertSqlSafe(format!("CREATE DATABASE {name}")))
                .execute(&mut admin)
                .await
                .unwrap();
            admin.close().await.unwrap();
        });
        let mut url = admin_url.clone();
        url.set_path(&name);
        Some(TestDatabase {
            url,
            admin_url,
            name,
            runtime,
        })
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let drop_db = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
        let result = self.runtime.block_on(async {
            let mut admin = PgConnection::connect(self.admin_url.as_str()).await?;
            sqlx::raw_sql(AssertSqlSafe(drop_db))
                .execute(&mut admin)
                .await?;
            admin.close().await
        });
        if let Err(e) = result {
            eprintln!("cannot drop the test database {}: {e}", self.name);
        }
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
            "postgres://postgres@127.0.0.1:5432/postgres".to_owned(),
            "postgres://root@127.0.0.1:5432/test".to_owned(),
        ],
    };
    let mut failures = Vec::new();
    for candidate in candidates {
        let url = reqwest::Url::parse(&candidate).expect("a Postgres URL");
        let mut shown = url.clone();
        let _ = shown.set_password(None);
        match tokio::time::timeout(Duration::from_secs(5), PgConnection::connect(url.as_str()))
            .await
        {
            Ok(Ok(conn)) => return Some((url, conn)),
            Ok(Err(e)) => failures.push(format!("{shown}: {e}")),
            Err(_) => failures.push(format!("{shown}: no answer in 5 s")),
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

#[test]
fn push_label_and_show_work_on_postgres_through_the_database_url() {
    let Some(db) = TestDatabase::create("cli::postgres::push_label_and_show") else {
        return;
    };
    let cli = TestCli::new().env("PASARELA_DATABASE_URL", Some(db.url.as_str()));
    let first = cli.ok(&["push"]);
    assert_eq!(first.matches("created ").count(), 3, "{first}");
    assert_eq!(cli.ok(&["push"]).matches("unchanged ").count(), 3);
    cli.edit("greeting.yaml", "Say hello to", "Say hi to");
    assert!(cli.ok(&["push"]).contains("created greeting v2 "));

    let error = cli.fails(&["label", "greeting", "2", "production"]);
    assert!(error.contains("--force"), "{error}");
    assert_eq!(
        cli.ok(&["label", "greeting", "2", "production", "--force"]),
        "production: unset → 2\n"
    );
    let show = cli.ok(&["show", "greeting"]);
    assert!(
        show.contains("# version: 2\n") && show.contains("Say hi to"),
        "{show}"
    );
    let list = cli.ok(&["list"]);
    assert!(list.contains("production=2 latest=2"), "{list}");
    // Nothing went to the SQLite store beside it.
    assert!(!cli.path().join("data").exists());
}
