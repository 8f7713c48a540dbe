//! Eval runs: each run's report (kept whole, as JSON), its targets with the prompt versions
//! they tested, and the run blessed as each suite's baseline.
//!
//! Must not contain policy: what passing means, or what a regression is (that is `evals`).

use chrono::{DateTime, Utc};
use sqlx::any::AnyRow;
use sqlx::{Any, AnyPool, Row, Transaction};

use super::{Backend, StoreError, now_ms, time_from_ms};

/// The eval runs repository. Cheap to clone; get one from [`super::Store::eval_runs`].
#[derive(Debug, Clone)]
pub struct EvalRuns {
    pool: AnyPool,
    backend: Backend,
}

/// One target of a run, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EvalTargetRow {
    pub label: String,
    pub model: String,
    /// The registry prompt and version the target called.
    pub prompt: Option<(String, i64)>,
    pub attempts: i64,
    pub passed_attempts: i64,
    pub met_threshold: bool,
}

/// A run to store.
#[derive(Debug, Clone)]
pub struct NewEvalRun<'a> {
    pub suite: &'a str,
    pub started_at: DateTime<Utc>,
    pub duration_ms: i64,
    pub endpoint: &'a str,
    pub passed: bool,
    /// The whole report, as JSON.
    pub report: &'a str,
    pub targets: Vec<EvalTargetRow>,
}

/// A stored run, without its report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EvalRunRow {
    pub id: i64,
    pub suite: String,
    pub started_at: DateTime<Utc>,
    pub duration_ms: i64,
    pub endpoint: String,
    pub passed: bool,
    /// This run is its suite's baseline.
    pub blessed: bool,
}

/// A run that tested a prompt version, with the target that did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PromptEval {
    pub run: EvalRunRow,
    pub target: EvalTargetRow,
}

/// The columns of [`EvalRunRow`], from `eval_runs r`.
macro_rules! run_columns {
    () => {
        "r.id, r.suite, r.started_at, r.duration_ms, r.endpoint, r.passed,
         (SELECT COUNT(*) FROM eval_baselines b WHERE b.run_id = r.id) AS blessed"
    };
}

impl EvalRuns {
    pub(super) fn new(pool: AnyPool, backend: Backend) -> EvalRuns {
        EvalRuns { pool, backend }
    }

    /// Stores a run and its targets in one transaction; returns the run's id.
    pub async fn insert(&self, run: &NewEvalRun<'_>) -> Result<i64, StoreError> {
        let mut tx = self.begin_write().await?;
        let (id,): (i64,) = sqlx::query_as(
            "INSERT INTO eval_runs (suite, started_at, duration_ms, endpoint, passed, report)
             VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
        )
        .bind(run.suite)
        .bind(run.started_at.timestamp_millis())
        .bind(run.duration_ms)
        .bind(run.endpoint)
        .bind(i64::from(run.passed))
        .bind(run.report)
        .fetch_one(&mut *tx)
        .await?;
        for t in &run.targets {
            sqlx::query(
                "INSERT INTO eval_run_targets (run_id, label, model, prompt_name, prompt_version,
                 attempts, passed_attempts, met_threshold) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            )
            .bind(id)
            .bind(&t.label)
            .bind(&t.model)
            .bind(t.prompt.as_ref().map(|(name, _)| name.as_str()))
            .bind(t.prompt.as_ref().map(|(_, version)| *version))
            .bind(t.attempts)
            .bind(t.passed_attempts)
            .bind(i64::from(t.met_threshold))
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(id)
    }

    /// A run and its report (JSON).
    pub async fn get(&self, id: i64) -> Result<(EvalRunRow, String), StoreError> {
        let row = sqlx::query(concat!(
            "SELECT ",
            run_columns!(),
            ", r.report FROM eval_runs r WHERE r.id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("eval run {id}")))?;
        Ok((run_row(&row)?, row.try_get("report")?))
    }

    /// The latest runs, newest first, of one suite or all.
    pub async fn list(
        &self,
        suite: Option<&str>,
        limit: u32,
    ) -> Result<Vec<EvalRunRow>, StoreError> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            run_columns!(),
            " FROM eval_runs r WHERE ($1 IS NULL OR r.suite = $1) ORDER BY r.id DESC LIMIT $2"
        ))
        .bind(suite)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(run_row).collect()
    }

    /// Makes run `id` its suite's baseline (replacing the previous one); returns the suite.
    pub async fn bless(&self, id: i64, by: &str) -> Result<String, StoreError> {
        let mut tx = self.begin_write().await?;
        let (suite,): (String,) = sqlx::query_as("SELECT suite FROM eval_runs WHERE id = $1")
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("eval run {id}")))?;
        sqlx::query(
            "INSERT INTO eval_baselines (suite, run_id, blessed_at, blessed_by)
             VALUES ($1, $2, $3, $4)
             ON CONFLICT (suite) DO UPDATE SET run_id = excluded.run_id,
                 blessed_at = excluded.blessed_at, blessed_by = excluded.blessed_by",
        )
        .bind(&suite)
        .bind(id)
        .bind(now_ms())
        .bind(by)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(suite)
    }

    /// The id of the run blessed as `suite`'s baseline.
    pub async fn baseline(&self, suite: &str) -> Result<Option<i64>, StoreError> {
        let row: Option<(i64,)> =
            sqlx::query_as("SELECT run_id FROM eval_baselines WHERE suite = $1")
                .bind(suite)
                .fetch_optional(&self.pool)
                .await?;
        Ok(row.map(|(id,)| id))
    }

    /// The runs whose targets called a version of prompt `name`, newest first.
    pub async fn for_prompt(&self, name: &str, limit: u32) -> Result<Vec<PromptEval>, StoreError> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            run_columns!(),
            ", t.label, t.model, t.prompt_name, t.prompt_version, t.attempts, t.passed_attempts,
             t.met_threshold FROM eval_run_targets t JOIN eval_runs r ON r.id = t.run_id
             WHERE t.prompt_name = $1 ORDER BY r.id DESC, t.label LIMIT $2"
        ))
        .bind(name)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(PromptEval {
                    run: run_row(row)?,
                    target: target_row(row)?,
                })
            })
            .collect()
    }

    async fn begin_write(&self) -> Result<Transaction<'static, Any>, StoreError> {
        Ok(self.pool.begin_with(self.backend.begin_write()).await?)
    }
}

fn run_row(row: &AnyRow) -> Result<EvalRunRow, StoreError> {
    let passed: i64 = row.try_get("passed")?;
    let blessed: i64 = row.try_get("blessed")?;
    Ok(EvalRunRow {
        id: row.try_get("id")?,
        suite: row.try_get("suite")?,
        started_at: time_from_ms(row.try_get("started_at")?)?,
        duration_ms: row.try_get("duration_ms")?,
        endpoint: row.try_get("endpoint")?,
        passed: passed != 0,
        blessed: blessed != 0,
    })
}

fn target_row(row: &AnyRow) -> Result<EvalTargetRow, StoreError> {
    let name: Option<String> = row.try_get("prompt_name")?;
    let version: Option<i64> = row.try_get("prompt_version")?;
    let met: i64 = row.try_get("met_threshold")?;
    Ok(EvalTargetRow {
        label: row.try_get("label")?,
        model: row.try_get("model")?,
        prompt: name.zip(version),
        attempts: row.try_get("attempts")?,
        passed_attempts: row.try_get("passed_attempts")?,
        met_threshold: met != 0,
    })
}
