//! The virtual keys' repository: each key's name, the hash of its secret, the first
//! characters shown in lists, the models it may use, its limits and budget, and when it was
//! created and revoked. Revoking keeps the row (lists show it), and frees the name.
//!
//! Every write raises the `keys` change counter in its own transaction, so that caches on
//! every replica learn of it.
//!
//! Must not contain policy: what a valid name is, how keys are made, what limits mean.

use chrono::{DateTime, Utc};
use sqlx::any::AnyRow;
use sqlx::{Any, AnyPool, Row, Transaction};

use super::{Backend, StoreError, now_ms, time_from_ms};

/// This aggregate's row in `change_counters`.
const CHANGE_SCOPE: &str = "keys";

/// The columns every read returns, as a macro so that statements stay `&'static str`.
macro_rules! columns {
    () => {
        "id, name, key_hash, key_prefix, allowed_models, rpm, tpm, max_concurrent, \
         budget_micro_usd, budget_period, record_content, created_at, revoked_at"
    };
}

/// The period a budget is spent over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BudgetPeriod {
    Day,
    Week,
    Month,
}

impl BudgetPeriod {
    pub fn as_str(self) -> &'static str {
        match self {
            BudgetPeriod::Day => "day",
            BudgetPeriod::Week => "week",
            BudgetPeriod::Month => "month",
        }
    }

    pub fn parse(text: &str) -> Option<BudgetPeriod> {
        match text {
            "day" => Some(BudgetPeriod::Day),
            "week" => Some(BudgetPeriod::Week),
            "month" => Some(BudgetPeriod::Month),
            _ => None,
        }
    }
}

/// A spend limit: millionths of a US dollar per period.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    pub micro_usd: i64,
    pub period: BudgetPeriod,
}

/// What a new key stores. `key_hash` is `sha256:<hex>` of the key, never the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewKey {
    pub name: String,
    pub key_hash: String,
    pub key_prefix: String,
    /// Empty: every model.
    pub allowed_models: Vec<String>,
    pub rpm: Option<u32>,
    pub tpm: Option<u32>,
    pub max_concurrent: Option<u32>,
    pub budget: Option<Budget>,
    /// Record the prompt and completion text of this key's requests on their spans.
    pub record_content: bool,
}

/// A stored key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VirtualKey {
    pub id: i64,
    pub name: String,
    pub key_hash: String,
    pub key_prefix: String,
    pub allowed_models: Vec<String>,
    pub rpm: Option<u32>,
    pub tpm: Option<u32>,
    pub max_concurrent: Option<u32>,
    pub budget: Option<Budget>,
    pub record_content: bool,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
}

/// The virtual keys. Cheap to clone; get one from [`super::Store::keys`].
#[derive(Debug, Clone)]
pub struct Keys {
    pool: AnyPool,
    backend: Backend,
}

impl Keys {
    pub(super) fn new(pool: AnyPool, backend: Backend) -> Keys {
        Keys { pool, backend }
    }

    /// Stores a key. [`StoreError::Conflict`] when an active key has the name (or, against
    /// all odds, the hash).
    pub async fn create(&self, new: &NewKey) -> Result<VirtualKey, StoreError> {
        let models = serde_json::to_string(&new.allowed_models)
            .map_err(|e| StoreError::Corrupt(format!("unserialisable model names: {e}")))?;
        let mut tx = self.begin_write().await?;
        let taken: Option<i64> = sqlx::query_scalar(
            "SELECT id FROM virtual_keys WHERE name = $1 AND revoked_at IS NULL",
        )
        .bind(&new.name)
        .fetch_optional(&mut *tx)
        .await?;
        if taken.is_some() {
            tx.rollback().await?;
            return Err(StoreError::Conflict(format!(
                "an active key is already named `{}`",
                new.name
            )));
        }
        let row = sqlx::query(concat!(
            "INSERT INTO virtual_keys (name, key_hash, key_prefix, allowed_models, rpm, tpm,
             max_concurrent, budget_micro_usd, budget_period, record_content, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) RETURNING ",
            columns!()
        ))
        .bind(&new.name)
        .bind(&new.key_hash)
        .bind(&new.key_prefix)
        .bind(models)
        .bind(new.rpm.map(i64::from))
        .bind(new.tpm.map(i64::from))
        .bind(new.max_concurrent.map(i64::from))
        .bind(new.budget.map(|b| b.micro_usd))
        .bind(new.budget.map(|b| b.period.as_str()))
        .bind(i64::from(new.record_content))
        .bind(now_ms())
        .fetch_one(&mut *tx)
        .await?;
        let key = virtual_key(&row)?;
        super::change_counter::bump(&mut tx, CHANGE_SCOPE).await?;
        tx.commit().await?;
        Ok(key)
    }

    /// Every key, revoked ones included, by name and then age.
    pub async fn list(&self) -> Result<Vec<VirtualKey>, StoreError> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            columns!(),
            " FROM virtual_keys ORDER BY id"
        ))
        .fetch_all(&self.pool)
        .await?;
        let mut keys = rows
            .iter()
            .map(virtual_key)
            .collect::<Result<Vec<_>, _>>()?;
        // Sorted here: the engines collate text differently. Stable, so ids stay in order.
        keys.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(keys)
    }

    /// The keys not revoked.
    pub async fn active(&self) -> Result<Vec<VirtualKey>, StoreError> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            columns!(),
            " FROM virtual_keys WHERE revoked_at IS NULL ORDER BY id"
        ))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(virtual_key).collect()
    }

    /// The active key with this hash.
    pub async fn find_by_hash(&self, key_hash: &str) -> Result<Option<VirtualKey>, StoreError> {
        sqlx::query(concat!(
            "SELECT ",
            columns!(),
            " FROM virtual_keys WHERE key_hash = $1 AND revoked_at IS NULL"
        ))
        .bind(key_hash)
        .fetch_optional(&self.pool)
        .await?
        .as_ref()
        .map(virtual_key)
        .transpose()
    }

    /// Revokes the active key named `name`. [`StoreError::NotFound`] when there is none.
    pub async fn revoke(&self, name: &str) -> Result<VirtualKey, StoreError> {
        let mut tx = self.begin_write().await?;
        let row = sqlx::query(concat!(
            "UPDATE virtual_keys SET revoked_at = $1 WHERE name = $2 AND revoked_at IS NULL
             RETURNING ",
            columns!()
        ))
        .bind(now_ms())
        .bind(name)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            tx.rollback().await?;
            return Err(StoreError::NotFound(format!("active key `{name}`")));
        };
        let key = virtual_key(&row)?;
        super::change_counter::bump(&mut tx, CHANGE_SCOPE).await?;
        tx.commit().await?;
        Ok(key)
    }

    /// Raised by every write to the keys; caches compare it to what they loaded.
    pub async fn change_counter(&self) -> Result<i64, StoreError> {
        super::change_counter::read(&self.pool, CHANGE_SCOPE).await
    }

    async fn begin_write(&self) -> Result<Transaction<'static, Any>, StoreError> {
        Ok(self.pool.begin_with(self.backend.begin_write()).await?)
    }
}

fn limit(row: &AnyRow, column: &str) -> Result<Option<u32>, StoreError> {
    let value: Option<i64> = row.try_get(column)?;
    value
        .map(|v| u32::try_from(v).map_err(|_| StoreError::Corrupt(format!("a {column} of {v}"))))
        .transpose()
}

fn virtual_key(row: &AnyRow) -> Result<VirtualKey, StoreError> {
    let models: String = row.try_get("allowed_models")?;
    let allowed_models = serde_json::from_str(&models)
        .map_err(|_| StoreError::Corrupt(format!("allowed models `{models}`")))?;
    let amount: Option<i64> = row.try_get("budget_micro_usd")?;
    let period: Option<String> = row.try_get("budget_period")?;
    let budget = match (amount, period) {
        (Some(micro_usd), Some(period)) => Some(Budget {
            micro_usd,
            period: BudgetPeriod::parse(&period)
                .ok_or_else(|| StoreError::Corrupt(format!("a budget period `{period}`")))?,
        }),
        _ => None,
    };
    let revoked_at: Option<i64> = row.try_get("revoked_at")?;
    Ok(VirtualKey {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        key_hash: row.try_get("key_hash")?,
        key_prefix: row.try_get("key_prefix")?,
        allowed_models,
        rpm: limit(row, "rpm")?,
        tpm: limit(row, "tpm")?,
        max_concurrent: limit(row, "max_concurrent")?,
        budget,
        record_content: row.try_get::<i64, _>("record_content")? != 0,
        created_at: time_from_ms(row.try_get("created_at")?)?,
        revoked_at: revoked_at.map(time_from_ms).transpose()?,
    })
}
