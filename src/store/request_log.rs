//! The request log's repository: one row per API request (who called, which model and
//! deployment answered, status, timings, tokens, how it ended) and, when they were sampled,
//! its request and response bodies, already redacted by whoever wrote them. Rows are written
//! in batches, read back in pages by id, and pruned by age.
//!
//! Must not contain policy: what is sampled, what is redacted, how long rows are kept.

use chrono::{DateTime, Utc};
use sqlx::any::AnyRow;
use sqlx::{Any, AnyPool, Row, Transaction};

use super::{Backend, StoreError, time_from_ms};

/// The columns every read returns, as a macro so that statements stay `&'static str`.
macro_rules! columns {
    () => {
        "id, request_id, created_at, key_id, key_name, endpoint, model, deployment, \
         response_model, status, stream, duration_ms, first_token_ms, input_tokens, \
         output_tokens, finish_reasons, prompt_name, prompt_version, ending, error, \
         request_body, response_body"
    };
}

/// The filters of a read, each `$n` bound in [`LogFilter::bind`]'s order.
macro_rules! filters {
    () => {
        " created_at >= $1 AND created_at < $2
          AND ($3 IS NULL OR endpoint = $3)
          AND ($4 IS NULL OR model = $4)
          AND ($5 IS NULL OR key_name = $5)
          AND ($6 IS NULL OR prompt_name = $6) "
    };
}

/// How a logged response ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogEnding {
    /// Sent to the end.
    Complete,
    /// A stream that broke after it started.
    Failed,
    /// The client went away first.
    Abandoned,
}

impl LogEnding {
    pub fn as_str(self) -> &'static str {
        match self {
            LogEnding::Complete => "complete",
            LogEnding::Failed => "failed",
            LogEnding::Abandoned => "abandoned",
        }
    }

    fn parse(text: &str) -> Option<LogEnding> {
        match text {
            "complete" => Some(LogEnding::Complete),
            "failed" => Some(LogEnding::Failed),
            "abandoned" => Some(LogEnding::Abandoned),
            _ => None,
        }
    }
}

/// One request, as logged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEntry {
    pub request_id: String,
    /// When the request arrived (stored to the millisecond).
    pub created_at: DateTime<Utc>,
    pub key_id: Option<i64>,
    pub key_name: Option<String>,
    pub endpoint: String,
    pub model: Option<String>,
    pub deployment: Option<String>,
    pub response_model: Option<String>,
    pub status: u16,
    pub stream: bool,
    pub duration_ms: i64,
    pub first_token_ms: Option<i64>,
    pub input_tokens: Option<i64>,
    pub output_tokens: Option<i64>,
    pub finish_reasons: Vec<String>,
    /// The registry prompt's name and version.
    pub prompt: Option<(String, i64)>,
    pub ending: LogEnding,
    pub error: Option<String>,
    /// JSON text; None when bodies were not sampled.
    pub request_body: Option<String>,
    pub response_body: Option<String>,
}

/// A stored entry and its row id (increasing in the order rows were written).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggedRequest {
    pub id: i64,
    pub entry: LogEntry,
}

/// Which rows a read returns; every filter left `None` matches everything.
#[derive(Debug, Clone, Default)]
pub struct LogFilter {
    /// Arrived at or after.
    pub since: Option<DateTime<Utc>>,
    /// Arrived before.
    pub until: Option<DateTime<Utc>>,
    pub endpoint: Option<String>,
    /// The model the client asked for.
    pub model: Option<String>,
    pub key_name: Option<String>,
    pub prompt_name: Option<String>,
}

impl LogFilter {
    fn bind<'q>(
        &'q self,
        query: sqlx::query::Query<'q, Any, sqlx::any::AnyArguments>,
    ) -> sqlx::query::Query<'q, Any, sqlx::any::AnyArguments> {
        query
            .bind(self.since.map_or(i64::MIN, |t| t.timestamp_millis()))
            .bind(self.until.map_or(i64::MAX, |t| t.timestamp_millis()))
            .bind(self.endpoint.as_deref())
            .bind(self.model.as_deref())
            .bind(self.key_name.as_deref())
            .bind(self.prompt_name.as_deref())
    }
}

/// The request log. Cheap to clone; get one from [`super::Store::request_log`].
#[derive(Debug, Clone)]
pub struct RequestLogRows {
    pool: AnyPool,
    backend: Backend,
}

impl RequestLogRows {
    pub(super) fn new(pool: AnyPool, backend: Backend) -> RequestLogRows {
        RequestLogRows { pool, backend }
    }

    /// Writes `entries` in one transaction (one commit, one sync, however many rows): all or
    /// none.
    pub async fn insert(&self, entries: &[LogEntry]) -> Result<(), StoreError> {
        if entries.is_empty() {
            return Ok(());
        }
        let mut tx = self.begin_write().await?;
        for e in entries {
            let reasons = serde_json::to_string(&e.finish_reasons)
                .map_err(|err| StoreError::Corrupt(format!("unserialisable reasons: {err}")))?;
            sqlx::query(
                "INSERT INTO request_log (request_id, created_at, key_id, key_name, endpoint,
                 model, deployment, response_model, status, stream, duration_ms, first_token_ms,
                 input_tokens, output_tokens, finish_reasons, prompt_name, prompt_version,
                 ending, error, request_body, response_body)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16,
                 $17, $18, $19, $20, $21)",
            )
            .bind(&e.request_id)
            .bind(e.created_at.timestamp_millis())
            .bind(e.key_id)
            .bind(e.key_name.as_deref())
            .bind(&e.endpoint)
            .bind(e.model.as_deref())
            .bind(e.deployment.as_deref())
            .bind(e.response_model.as_deref())
            .bind(i64::from(e.status))
            .bind(i64::from(e.stream))
            .bind(e.duration_ms)
            .bind(e.first_token_ms)
            .bind(e.input_tokens)
            .bind(e.output_tokens)
            .bind(reasons)
            .bind(e.prompt.as_ref().map(|(name, _)| name.as_str()))
            .bind(e.prompt.as_ref().map(|(_, version)| *version))
            .bind(e.ending.as_str())
            .bind(e.error.as_deref())
            .bind(e.request_body.as_deref())
            .bind(e.response_body.as_deref())
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Up to `limit` rows matching `filter` with ids above `after`, oldest first: a page of
    /// an export that may span more rows than fit in memory.
    pub async fn page(
        &self,
        filter: &LogFilter,
        after: i64,
        limit: u32,
    ) -> Result<Vec<LoggedRequest>, StoreError> {
        let query = sqlx::query(concat!(
            "SELECT ",
            columns!(),
            " FROM request_log WHERE",
            filters!(),
            "AND id > $7 ORDER BY id LIMIT $8"
        ));
        let rows = filter
            .bind(query)
            .bind(after)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(logged_request).collect()
    }

    /// The `limit` latest rows matching `filter`, newest first.
    pub async fn latest(
        &self,
        filter: &LogFilter,
        limit: u32,
    ) -> Result<Vec<LoggedRequest>, StoreError> {
        let query = sqlx::query(concat!(
            "SELECT ",
            columns!(),
            " FROM request_log WHERE",
            filters!(),
            "ORDER BY id DESC LIMIT $7"
        ));
        let rows = filter
            .bind(query)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(logged_request).collect()
    }

    /// Deletes the rows of requests that arrived before `before`; returns how many.
    pub async fn prune(&self, before: DateTime<Utc>) -> Result<u64, StoreError> {
        let done = sqlx::query("DELETE FROM request_log WHERE created_at < $1")
            .bind(before.timestamp_millis())
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }

    async fn begin_write(&self) -> Result<Transaction<'static, Any>, StoreError> {
        Ok(self.pool.begin_with(self.backend.begin_write()).await?)
    }
}

fn count(row: &AnyRow, column: &str) -> Result<Option<i64>, StoreError> {
    Ok(row.try_get(column)?)
}

fn logged_request(row: &AnyRow) -> Result<LoggedRequest, StoreError> {
    let reasons: String = row.try_get("finish_reasons")?;
    let finish_reasons = serde_json::from_str(&reasons)
        .map_err(|_| StoreError::Corrupt(format!("finish reasons `{reasons}`")))?;
    let ending: String = row.try_get("ending")?;
    let status: i64 = row.try_get("status")?;
    let stream: i64 = row.try_get("stream")?;
    let prompt_name: Option<String> = row.try_get("prompt_name")?;
    let prompt_version: Option<i64> = row.try_get("prompt_version")?;
    Ok(LoggedRequest {
        id: row.try_get("id")?,
        entry: LogEntry {
            request_id: row.try_get("request_id")?,
            created_at: time_from_ms(row.try_get("created_at")?)?,
            key_id: row.try_get("key_id")?,
            key_name: row.try_get("key_name")?,
            endpoint: row.try_get("endpoint")?,
            model: row.try_get("model")?,
            deployment: row.try_get("deployment")?,
            response_model: row.try_get("response_model")?,
            status: u16::try_from(status)
                .map_err(|_| StoreError::Corrupt(format!("a status of {status}")))?,
            stream: stream != 0,
            duration_ms: row.try_get("duration_ms")?,
            first_token_ms: count(row, "first_token_ms")?,
            input_tokens: count(row, "input_tokens")?,
            output_tokens: count(row, "output_tokens")?,
            finish_reasons,
            prompt: prompt_name.zip(prompt_version),
            ending: LogEnding::parse(&ending)
                .ok_or_else(|| StoreError::Corrupt(format!("a request ending `{ending}`")))?,
            error: row.try_get("error")?,
            request_body: row.try_get("request_body")?,
            response_body: row.try_get("response_body")?,
        },
    })
}
