//! The `change_counters` table: one row per aggregate (`prompts`, `keys`), raised inside every
//! write to that aggregate. Replicas poll it to know when what they cache is stale; a counter
//! row rather than `max(id)` because Postgres can commit identity values out of order.

use sqlx::{Any, AnyPool, Transaction};

use super::StoreError;

/// The counter's current value for `scope`.
pub(super) async fn read(pool: &AnyPool, scope: &str) -> Result<i64, StoreError> {
    let value: Option<i64> =
        sqlx::query_scalar("SELECT value FROM change_counters WHERE scope = $1")
            .bind(scope)
            .fetch_optional(pool)
            .await?;
    value.ok_or_else(|| StoreError::Corrupt(format!("no change counter `{scope}`")))
}

/// Raises the counter for `scope` inside a write's transaction.
pub(super) async fn bump(
    tx: &mut Transaction<'static, Any>,
    scope: &str,
) -> Result<(), StoreError> {
    sqlx::query("UPDATE change_counters SET value = value + 1 WHERE scope = $1")
        .bind(scope)
        .execute(&mut **tx)
        .await?;
    Ok(())
}
