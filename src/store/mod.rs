//! Persistence: an embedded SQLite database under `store.data_dir` by default, or a shared
//! Postgres when `store.database_url` names one; their migrations; and one repository per
//! aggregate ([`Prompts`], [`Keys`], [`Spend`], [`RequestLogRows`], [`EvalRuns`]). Every SQL statement of
//! the gateway lives in this module.
//! Repositories take and return domain values, never rows, and each write is one transaction.
//!
//! Both engines run the same statements through `sqlx::Any`: they are written once, with `$1`
//! placeholders (which SQLite accepts too) and only SQL that both engines read alike. What
//! differs is kept here: the schema (one migration set per dialect, `migrations/`), how a
//! connection is set up, and how a writing transaction takes its lock ([`Backend`]). An enum
//! over the two native pools would have kept each driver's typed options, but every query and
//! every helper would then be written as a macro or generic over the driver; the few SQLite
//! settings that a URL cannot carry are set on each new connection instead.
//!
//! Must not contain policy (which labels are protected, what a valid name is, who may write),
//! nor anything of HTTP.

mod change_counter;
mod eval_runs;
mod keys;
mod prompts;
mod request_log;
mod spend;

pub use eval_runs::{EvalRunRow, EvalRuns, EvalTargetRow, NewEvalRun, PromptEval};
pub use keys::{Budget, BudgetPeriod, Keys, NewKey, VirtualKey};
pub use request_log::{LogEnding, LogEntry, LogFilter, LoggedRequest, RequestLogRows};
pub use spend::{PeriodSpend, Spend};

pub use prompts::{
    LATEST_LABEL, LabelMove, LabelledVersion, MoveCause, MoveOutcome, NewVersion, PromptSummary,
    PromptVersion, Prompts, PushOutcome, VersionMeta,
};

use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use secrecy::ExposeSecret;
use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::migrate::{MigrateError, Migrator};
use sqlx::postgres::PgConnectOptions;
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{AnyPool, ConnectOptions};

use crate::config::StoreConfig;

static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("src/store/migrations/sqlite");
static POSTGRES_MIGRATIONS: Migrator = sqlx::migrate!("src/store/migrations/postgres");

/// The embedded database's file, inside `store.data_dir`.
pub const SQLITE_FILE: &str = "pasarela.db";

/// Run on every new SQLite connection, since a URL cannot carry them.
/// - WAL: readers never wait for the writer, and a process killed mid-write leaves the last
///   committed state (the journal mode is stored in the file; setting it again is a no-op).
/// - `synchronous = FULL`: the WAL is synced at every commit, so a version the gateway has
///   acknowledged survives a power cut too, not only a crash of the process (NORMAL would keep
///   the file consistent but may lose the last commits). Registry writes are rare and made by
///   people or CI, so one fsync each costs nothing anyone would notice.
/// - foreign keys are off by default in SQLite.
/// - the busy timeout bounds how long a writer waits for another one (in this process or
///   another) before failing, instead of failing at once.
const SQLITE_SETUP: &str = "PRAGMA journal_mode = WAL;
PRAGMA synchronous = FULL;
PRAGMA foreign_keys = ON;
PRAGMA busy_timeout = 5000;";

/// SQLite has one writer at a time; a few connections let reads proceed beside it.
const SQLITE_CONNECTIONS: u32 = 8;
const POSTGRES_CONNECTIONS: u32 = 10;
/// Longer than a busy writer could hold anyone up, short enough that an unreachable database
/// fails startup in seconds rather than hanging.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Callers answer 404.
    #[error("{0} not found")]
    NotFound(String),
    /// A write collided with another one; callers answer 409.
    #[error("conflict: {0}")]
    Conflict(String),
    #[error("cannot create the directory {path}")]
    DataDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot open the {backend} database")]
    Open {
        backend: Backend,
        #[source]
        source: sqlx::Error,
    },
    #[error("cannot migrate the {backend} database")]
    Migrate {
        backend: Backend,
        #[source]
        source: MigrateError,
    },
    #[error("database error")]
    Database(#[source] sqlx::Error),
    /// A stored value this code cannot read: written by something else, or by a newer version.
    #[error("the database holds {0}")]
    Corrupt(String),
}

impl From<sqlx::Error> for StoreError {
    fn from(err: sqlx::Error) -> Self {
        match &err {
            // The transactions are designed not to collide (each write locks its prompt first),
            // so this is a last line of defence that still maps to the right status.
            sqlx::Error::Database(db) if db.is_unique_violation() => {
                StoreError::Conflict(db.message().to_owned())
            }
            _ => StoreError::Database(err),
        }
    }
}

/// The engine behind a [`Store`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    pub fn name(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }

    /// How a transaction that writes begins. SQLite: take the write lock at once, so two
    /// writers never both read "latest is 3" and then race (a deferred transaction would fail
    /// when upgrading its read lock instead of waiting for the busy timeout). Postgres: each
    /// write first locks its prompt's row, and READ COMMITTED (named, so a server default of
    /// SERIALIZABLE cannot turn waits into errors) lets the statements after that lock see what
    /// the writer before it committed.
    fn begin_write(self) -> &'static str {
        match self {
            Backend::Sqlite => "BEGIN IMMEDIATE",
            Backend::Postgres => "BEGIN ISOLATION LEVEL READ COMMITTED",
        }
    }

    fn migrator(self) -> &'static Migrator {
        match self {
            Backend::Sqlite => &SQLITE_MIGRATIONS,
            Backend::Postgres => &POSTGRES_MIGRATIONS,
        }
    }
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The database, migrated and ready. Cheap to clone: clones share one connection pool.
#[derive(Debug, Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
}

// Request handlers share one store across tasks and threads.
const _: fn() = || {
    fn shared<T: Clone + Send + Sync + 'static>() {}
    shared::<Store>();
    shared::<Prompts>();
    shared::<Keys>();
    shared::<Spend>();
    shared::<RequestLogRows>();
};

impl Store {
    /// Opens the database `config` names (creating the SQLite file and its directory where
    /// needed) and applies the migrations this build carries.
    pub async fn open(config: &StoreConfig) -> Result<Store, StoreError> {
        // Idempotent; the Any driver needs it before its first connection.
        sqlx::any::install_default_drivers();
        let store = match &config.database_url {
            None => {
                Self::open_sqlite(
                    SqliteConnectOptions::new().filename(config.data_dir.join(SQLITE_FILE)),
                )
                .await?
            }
            Some(url) if url.expose_secret().starts_with("sqlite:") => {
                let options =
                    SqliteConnectOptions::from_str(url.expose_secret()).map_err(|source| {
                        StoreError::Open {
                            backend: Backend::Sqlite,
                            source,
                        }
                    })?;
                Self::open_sqlite(options).await?
            }
            Some(url) => Self::open_postgres(url.expose_secret()).await?,
        };
        Ok(store)
    }

    /// Applies the migrations not yet applied. On Postgres, replicas starting together take
    /// turns (sqlx holds an advisory lock); a migration already applied but changed since
    /// stops startup rather than leave the schema in doubt.
    async fn migrate(&self) -> Result<(), StoreError> {
        self.backend
            .migrator()
            .run(&self.pool)
            .await
            .map_err(|source| StoreError::Migrate {
                backend: self.backend,
                source,
            })
    }

    async fn open_sqlite(options: SqliteConnectOptions) -> Result<Store, StoreError> {
        let backend = Backend::Sqlite;
        let open_error = |source| StoreError::Open { backend, source };
        // Absolute, because the URL the Any driver takes would read a relative path's first
        // component as a host name.
        let path =
            std::path::absolute(options.get_filename()).map_err(|source| StoreError::DataDir {
                path: options.get_filename().to_owned(),
                source,
            })?;
        if let Some(dir) = path.parent() {
            tokio::fs::create_dir_all(dir)
                .await
                .map_err(|source| StoreError::DataDir {
                    path: dir.to_owned(),
                    source,
                })?;
        }
        let url = options
            .filename(&path)
            .create_if_missing(true)
            .to_url_lossy();
        let pool = AnyPoolOptions::new()
            .max_connections(SQLITE_CONNECTIONS)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .after_connect(|conn, _| {
                Box::pin(async move { sqlx::raw_sql(SQLITE_SETUP).execute(conn).await.map(drop) })
            })
            .connect_with(AnyConnectOptions::from_url(&url).map_err(open_error)?)
            .await
            .map_err(open_error)?;
        let store = Store { pool, backend };
        store.migrate().await?;
        // A file system without shared memory (some network mounts) silently keeps the old
        // journal; say so rather than assume WAL's guarantees.
        let journal_mode: String = sqlx::query_scalar("PRAGMA journal_mode")
            .fetch_one(&store.pool)
            .await?;
        let path = path.display();
        if journal_mode.eq_ignore_ascii_case("wal") {
            tracing::info!(backend = %backend, %path, %journal_mode, "store opened");
        } else {
            tracing::warn!(
                backend = %backend,
                %path,
                %journal_mode,
                "store opened without WAL: writers will block readers"
            );
        }
        Ok(store)
    }

    async fn open_postgres(url: &str) -> Result<Store, StoreError> {
        let backend = Backend::Postgres;
        let open_error = |source| StoreError::Open { backend, source };
        // Parsed here only to log where we connect; the URL itself may hold a password.
        let target = PgConnectOptions::from_str(url).map_err(open_error)?;
        let pool = AnyPoolOptions::new()
            .max_connections(POSTGRES_CONNECTIONS)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(AnyConnectOptions::from_str(url).map_err(open_error)?)
            .await
            .map_err(open_error)?;
        let store = Store { pool, backend };
        store.migrate().await?;
        tracing::info!(
            backend = %backend,
            host = target.get_host(),
            port = target.get_port(),
            database = target.get_database().unwrap_or_default(),
            user = target.get_username(),
            "store opened"
        );
        Ok(store)
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The prompt registry's repository.
    pub fn prompts(&self) -> Prompts {
        Prompts::new(self.pool.clone(), self.backend)
    }

    /// The virtual keys' repository.
    pub fn keys(&self) -> Keys {
        Keys::new(self.pool.clone(), self.backend)
    }

    /// Spend per virtual key and budget period.
    pub fn spend(&self) -> Spend {
        Spend::new(self.pool.clone())
    }

    /// Eval runs, their targets and the suites' baselines.
    pub fn eval_runs(&self) -> EvalRuns {
        EvalRuns::new(self.pool.clone(), self.backend)
    }

    /// The request log.
    pub fn request_log(&self) -> RequestLogRows {
        RequestLogRows::new(self.pool.clone(), self.backend)
    }

    /// Waits for the pool's connections to close; SQLite folds its WAL back into the database
    /// file when the last one does.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// Times are stored as milliseconds since the Unix epoch (UTC): the same integer on both
/// engines, compared and sorted alike.
fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

fn time_from_ms(ms: i64) -> Result<DateTime<Utc>, StoreError> {
    DateTime::from_timestamp_millis(ms)
        .ok_or_else(|| StoreError::Corrupt(format!("a time out of range ({ms} ms)")))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Per-connection settings cannot be seen from outside the pool, so they are checked here,
    /// on several connections held at once (each set up on its own).
    #[tokio::test]
    async fn every_sqlite_connection_has_wal_full_sync_foreign_keys_and_a_busy_timeout() {
        let dir = tempfile::tempdir().unwrap();
        let config = StoreConfig {
            data_dir: dir.path().to_owned(),
            database_url: None,
        };
        let store = Store::open(&config).await.unwrap();
        let mut held = Vec::new();
        for _ in 0..3 {
            let mut conn = store.pool.acquire().await.unwrap();
            let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
                .fetch_one(&mut *conn)
                .await
                .unwrap();
            assert_eq!(mode, "wal");
            for (pragma, expected) in [
                ("PRAGMA synchronous", 2), // FULL
                ("PRAGMA foreign_keys", 1),
                ("PRAGMA busy_timeout", 5000),
            ] {
                let value: i64 = sqlx::query_scalar(pragma)
                    .fetch_one(&mut *conn)
                    .await
                    .unwrap();
                assert_eq!(value, expected, "{pragma}");
            }
            held.push(conn);
        }
    }

    #[tokio::test]
    async fn a_unique_violation_becomes_a_conflict_and_other_errors_do_not() {
        let dir = tempfile::tempdir().unwrap();
        let config = StoreConfig {
            data_dir: dir.path().to_owned(),
            database_url: None,
        };
        let store = Store::open(&config).await.unwrap();
        let insert = "INSERT INTO prompts (name, created_at, updated_at) VALUES ('p', 0, 0)";
        sqlx::query(insert).execute(&store.pool).await.unwrap();
        let err = sqlx::query(insert).execute(&store.pool).await.unwrap_err();
        assert!(matches!(StoreError::from(err), StoreError::Conflict(_)));
        let io = sqlx::Error::Io(std::io::Error::other("gone"));
        assert!(matches!(StoreError::from(io), StoreError::Database(_)));
    }
}
