//! Spend per virtual key and budget period: what each key's requests cost, added up exactly
//! in millionths of a dollar. Replicas add their own spend; every replica reads the sum.
//!
//! Must not contain policy: what a request costs and when a budget is spent.

use sqlx::AnyPool;

use super::{StoreError, now_ms};

/// The spend repository. Cheap to clone; get one from [`super::Store::spend`].
#[derive(Debug, Clone)]
pub struct Spend {
    pool: AnyPool,
}

/// One key's spend in one period.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeriodSpend {
    pub key_id: i64,
    /// Milliseconds since the Unix epoch.
    pub period_start: i64,
    pub micro_usd: i64,
    pub requests: i64,
}

impl Spend {
    pub(super) fn new(pool: AnyPool) -> Spend {
        Spend { pool }
    }

    /// Adds `micro_usd` over `requests` to a key's period, in one statement so that
    /// concurrent replicas never lose an addition.
    pub async fn add(
        &self,
        key_id: i64,
        period_start: i64,
        micro_usd: i64,
        requests: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO key_spend (key_id, period_start, micro_usd, requests, updated_at)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (key_id, period_start) DO UPDATE SET
                 micro_usd = key_spend.micro_usd + excluded.micro_usd,
                 requests = key_spend.requests + excluded.requests,
                 updated_at = excluded.updated_at",
        )
        .bind(key_id)
        .bind(period_start)
        .bind(micro_usd)
        .bind(requests)
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Every key's spend in periods that started at or after `since` (ms).
    pub async fn since(&self, since: i64) -> Result<Vec<PeriodSpend>, StoreError> {
        let rows: Vec<(i64, i64, i64, i64)> = sqlx::query_as(
            "SELECT key_id, period_start, micro_usd, requests FROM key_spend
             WHERE period_start >= $1",
        )
        .bind(since)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(key_id, period_start, micro_usd, requests)| PeriodSpend {
                key_id,
                period_start,
                micro_usd,
                requests,
            })
            .collect())
    }

    /// One key's spend in one period; zero when nothing was spent.
    pub async fn of(&self, key_id: i64, period_start: i64) -> Result<PeriodSpend, StoreError> {
        let row: Option<(i64, i64)> = sqlx::query_as(
            "SELECT micro_usd, requests FROM key_spend WHERE key_id = $1 AND period_start = $2",
        )
        .bind(key_id)
        .bind(period_start)
        .fetch_optional(&self.pool)
        .await?;
        let (micro_usd, requests) = row.unwrap_or((0, 0));
        Ok(PeriodSpend {
            key_id,
            period_start,
            micro_usd,
            requests,
        })
    }
}
