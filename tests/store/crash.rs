//! A gateway killed in the middle of writing to its SQLite file: this test binary runs again as
//! a child process that pushes versions and reports each acknowledged one, and is killed with
//! SIGKILL while it does. Postgres needs no such test: a dead client's transaction is the
//! server's to roll back.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use pasarela::config::StoreConfig;
use pasarela::store::{LATEST_LABEL, NewVersion, PushOutcome, SQLITE_FILE, Store};
use sqlx::{Connection, SqliteConnection};

/// Where the child writes; set only for the child.
const CHILD_DIR_ENV: &str = "PASARELA_TEST_CRASH_DIR";
/// Versions the parent waits to see acknowledged before it kills the child.
const ACKNOWLEDGED_BEFORE_KILL: i64 = 40;

#[test]
fn sqlite_killed_mid_write_keeps_every_acknowledged_version_and_stays_consistent() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--ignored", "--exact", "crash::child_pushing_until_killed"])
        .args(["--nocapture", "--test-threads=1"])
        .env(CHILD_DIR_ENV, dir.path())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let mut acknowledged = 0;
    for line in stdout.lines() {
        if let Some(version) = line.unwrap().strip_prefix("acknowledged ") {
            acknowledged = version.parse().unwrap();
            if acknowledged >= ACKNOWLEDGED_BEFORE_KILL {
                break;
            }
        }
    }
    assert_eq!(
        acknowledged, ACKNOWLEDGED_BEFORE_KILL,
        "the child stopped early"
    );
    // SIGKILL: no destructors, no checkpoint, most likely in the middle of a transaction.
    child.kill().unwrap();
    child.wait().unwrap();

    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let file = dir.path().join(SQLITE_FILE);
        let mut conn = SqliteConnection::connect(&format!("sqlite://{}", file.display()))
            .await
            .unwrap();
        let integrity: String = sqlx::query_scalar("PRAGMA integrity_check")
            .fetch_one(&mut conn)
            .await
            .unwrap();
        assert_eq!(integrity, "ok");
        conn.close().await.unwrap();

        let prompts = Store::open(&child_config(dir.path()))
            .await
            .unwrap()
            .prompts();
        let versions: Vec<i64> = prompts
            .list_versions("p")
            .await
            .unwrap()
            .iter()
            .map(|v| v.meta.version)
            .collect();
        // The kill may land after a commit and before its report, never before the commit.
        let stored = versions.len() as i64;
        assert!(
            stored >= acknowledged,
            "{stored} stored, {acknowledged} acknowledged"
        );
        assert_eq!(versions, (1..=stored).collect::<Vec<_>>());
        let latest = prompts.get_by_label("p", LATEST_LABEL).await.unwrap();
        assert_eq!(latest.meta.version, stored);
        assert_eq!(latest.content, format!("content {stored}"));
        assert_eq!(
            prompts.label_history("p").await.unwrap().len() as i64,
            stored
        );
        assert_eq!(prompts.change_counter().await.unwrap(), stored);
    });
}

fn child_config(dir: &std::path::Path) -> StoreConfig {
    StoreConfig {
        data_dir: dir.to_owned(),
        database_url: None,
    }
}

/// The child's side of the test above; it never ends on its own before being killed.
#[tokio::test]
#[ignore = "run as a child process by the crash test"]
async fn child_pushing_until_killed() {
    let Some(dir) = std::env::var_os(CHILD_DIR_ENV) else {
        eprintln!("SKIPPED: only the crash test runs this, as its child process");
        return;
    };
    let prompts = Store::open(&child_config(dir.as_ref()))
        .await
        .unwrap()
        .prompts();
    // Bounded, so that a parent that dies first does not leave it running for long.
    for i in 1..=10_000 {
        let content = format!("content {i}");
        let new = NewVersion {
            content: &content,
            content_hash: &content,
            author: "child",
            message: None,
        };
        let PushOutcome::Created(meta) = prompts.push_version("p", new).await.unwrap() else {
            panic!("distinct content came back unchanged");
        };
        println!("acknowledged {}", meta.version);
    }
}
