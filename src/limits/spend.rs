//! What requests cost and whether a key's budget allows another: a price table per model,
//! spend added up per key and budget period, and the budget check.
//!
//! Spend is counted in this replica's memory at once and written to the store every
//! [`FLUSH_INTERVAL`] by a background task, which also reads back every replica's sums: a
//! key's budget is checked against its own replica's spend immediately and other replicas'
//! within about one interval. A budget is therefore a limit on starting requests, as in every
//! gateway: requests already running when it is reached still finish and are counted.
//!
//! Must not contain SQL (that is `store`) nor HTTP.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Datelike, Duration as Days, NaiveDate, TimeZone, Utc};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::store::{Budget, BudgetPeriod, Store, StoreError};
use crate::telemetry::TokenCounts;

/// How often spend is written to the store and every replica's sums read back.
pub const FLUSH_INTERVAL: Duration = Duration::from_secs(1);

/// A model's price in US dollars per million tokens.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Price {
    pub input_per_million: f64,
    pub output_per_million: f64,
}

/// Prices by route name (what clients call the model) or deployment (`provider/model`); a
/// deployment's own price wins, since a fallback may cost more than the route's first choice.
/// Local models cost nothing unless priced.
#[derive(Debug, Clone, Default)]
pub struct Prices {
    by_name: BTreeMap<String, Price>,
    warned: std::sync::Arc<Mutex<HashSet<String>>>,
}

impl Prices {
    pub fn new(by_name: BTreeMap<String, Price>) -> Prices {
        Prices {
            by_name,
            warned: std::sync::Arc::default(),
        }
    }

    /// The cost in millionths of a dollar; None when the model has no price (said once in
    /// the logs, and the request costs nothing).
    pub fn cost(
        &self,
        deployment: Option<&str>,
        model: Option<&str>,
        usage: TokenCounts,
    ) -> Option<i64> {
        let price = deployment
            .and_then(|d| self.by_name.get(d))
            .or_else(|| model.and_then(|m| self.by_name.get(m)));
        let Some(price) = price else {
            if deployment.is_some_and(|d| d.starts_with("local/")) {
                return Some(0);
            }
            let name = deployment.or(model).unwrap_or("unknown").to_owned();
            let mut warned = self.warned.lock().unwrap_or_else(|e| e.into_inner());
            if warned.insert(name.clone()) {
                tracing::warn!(model = %name, "no price for this model in [prices]: its spend counts as zero");
            }
            return None;
        };
        // Dollars per million tokens are millionths of a dollar per token.
        let micro = usage.input as f64 * price.input_per_million
            + usage.output as f64 * price.output_per_million;
        #[expect(
            clippy::cast_possible_truncation,
            reason = "prices are checked finite and non-negative at load; rounding up to a millionth is intended"
        )]
        Some(micro.ceil().min(i64::MAX as f64) as i64)
    }
}

/// The start (UTC) of the budget period that `now` falls in.
pub fn period_start(period: BudgetPeriod, now: DateTime<Utc>) -> DateTime<Utc> {
    let day = now.date_naive();
    let first = match period {
        BudgetPeriod::Day => day,
        BudgetPeriod::Week => day - Days::days(i64::from(day.weekday().num_days_from_monday())),
        BudgetPeriod::Month => day.with_day(1).unwrap_or(day),
    };
    midnight(first)
}

/// The start of the period after the one `now` falls in: when a spent budget comes back.
pub fn period_end(period: BudgetPeriod, now: DateTime<Utc>) -> DateTime<Utc> {
    let start = period_start(period, now).date_naive();
    let next = match period {
        BudgetPeriod::Day => start + Days::days(1),
        BudgetPeriod::Week => start + Days::days(7),
        BudgetPeriod::Month => start
            .checked_add_months(chrono::Months::new(1))
            .unwrap_or(start + Days::days(31)),
    };
    midnight(next)
}

fn midnight(day: NaiveDate) -> DateTime<Utc> {
    Utc.from_utc_datetime(&day.and_time(chrono::NaiveTime::MIN))
}

/// A key over its budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OverBudget {
    pub spent_micro_usd: i64,
    pub budget: Budget,
    pub resets_at: DateTime<Utc>,
}

type Slot = (i64, i64); // (key id, period start in ms)

#[derive(Debug, Default)]
struct Sums {
    /// Every replica's spend as the store last said.
    stored: HashMap<Slot, i64>,
    /// This replica's spend being written now.
    flushing: HashMap<Slot, (i64, i64)>,
    /// This replica's spend not written yet.
    pending: HashMap<Slot, (i64, i64)>,
}

/// Spend per key and period, kept in step with the store.
#[derive(Debug)]
pub struct SpendBook {
    store: Store,
    sums: Mutex<Sums>,
}

impl SpendBook {
    pub fn new(store: Store) -> SpendBook {
        SpendBook {
            store,
            sums: Mutex::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Sums> {
        self.sums.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// What `key_id` has spent in the current period of `budget`, in millionths of a dollar.
    pub fn spent(&self, key_id: i64, period: BudgetPeriod) -> i64 {
        let slot = (key_id, period_start(period, Utc::now()).timestamp_millis());
        let sums = self.lock();
        sums.stored.get(&slot).copied().unwrap_or(0)
            + sums.flushing.get(&slot).map_or(0, |s| s.0)
            + sums.pending.get(&slot).map_or(0, |s| s.0)
    }

    /// Whether a key may start another request.
    pub fn check(&self, key_id: i64, budget: Budget) -> Result<(), OverBudget> {
        let spent = self.spent(key_id, budget.period);
        if spent < budget.micro_usd {
            return Ok(());
        }
        Err(OverBudget {
            spent_micro_usd: spent,
            budget,
            resets_at: period_end(budget.period, Utc::now()),
        })
    }

    /// Counts one finished request's cost against the key's current period.
    pub fn record(&self, key_id: i64, period: BudgetPeriod, micro_usd: i64) {
        let slot = (key_id, period_start(period, Utc::now()).timestamp_millis());
        let mut sums = self.lock();
        let entry = sums.pending.entry(slot).or_insert((0, 0));
        entry.0 = entry.0.saturating_add(micro_usd.max(0));
        entry.1 += 1;
    }

    /// Writes this replica's pending spend and reads every replica's sums for the periods
    /// now running. Spend that could not be written stays pending for the next call.
    pub async fn sync(&self) -> Result<(), StoreError> {
        let batch = {
            let mut sums = self.lock();
            let pending = std::mem::take(&mut sums.pending);
            for (slot, (micro, n)) in pending {
                let e = sums.flushing.entry(slot).or_insert((0, 0));
                e.0 += micro;
                e.1 += n;
            }
            sums.flushing.clone()
        };
        let spend = self.store.spend();
        for (&(key, start), &(micro, n)) in &batch {
            // On an error, what was written is in the store and the rest stays in `flushing`
            // for the next call.
            spend.add(key, start, micro, n).await?;
            let mut sums = self.lock();
            sums.flushing.remove(&(key, start));
            *sums.stored.entry((key, start)).or_insert(0) += micro;
        }
        // The earliest period that can still be running: a month back.
        let since = period_start(BudgetPeriod::Month, Utc::now())
            .min(period_start(BudgetPeriod::Week, Utc::now()))
            .timestamp_millis();
        let rows = spend.since(since).await?;
        let mut sums = self.lock();
        sums.stored = rows
            .into_iter()
            .map(|r| ((r.key_id, r.period_start), r.micro_usd))
            .collect();
        Ok(())
    }

    /// Runs `sync` every [`FLUSH_INTERVAL`] until `stop` is cancelled, then once more so that
    /// a clean shutdown loses no spend.
    pub fn spawn_syncer(
        self: &std::sync::Arc<Self>,
        stop: CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        let book = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(FLUSH_INTERVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                let stopping = tokio::select! {
                    () = stop.cancelled() => true,
                    _ = tick.tick() => false,
                };
                if let Err(e) = book.sync().await {
                    tracing::warn!(error = %crate::error_chain(&e), "cannot write or read key spend");
                }
                if stopping {
                    return;
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(y: i32, m: u32, d: u32, h: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, m, d, h, 30, 0).unwrap()
    }

    #[test]
    fn periods_start_at_utc_midnight_monday_and_the_first() {
        // 2026-11-25 is a Wednesday.
        let now = at(2026, 11, 25, 15);
        assert_eq!(
            period_start(BudgetPeriod::Day, now),
            at(2026, 11, 25, 0) - Days::minutes(30)
        );
        assert_eq!(
            period_start(BudgetPeriod::Week, now).date_naive(),
            NaiveDate::from_ymd_opt(2026, 11, 23).unwrap()
        );
        assert_eq!(
            period_start(BudgetPeriod::Month, now).date_naive(),
            NaiveDate::from_ymd_opt(2026, 11, 1).unwrap()
        );
        assert_eq!(
            period_end(BudgetPeriod::Month, at(2026, 12, 31, 23)).date_naive(),
            NaiveDate::from_ymd_opt(2027, 1, 1).unwrap()
        );
        assert_eq!(
            period_end(BudgetPeriod::Week, now).date_naive(),
            NaiveDate::from_ymd_opt(2026, 11, 30).unwrap()
        );
    }

    #[test]
    fn cost_uses_the_deployment_price_then_the_model_and_local_is_free() {
        let prices = Prices::new(BTreeMap::from([
            (
                "gpt".to_owned(),
                Price {
                    input_per_million: 1.0,
                    output_per_million: 4.0,
                },
            ),
            (
                "openai/gpt-big".to_owned(),
                Price {
                    input_per_million: 10.0,
                    output_per_million: 40.0,
                },
            ),
        ]));
        let usage = TokenCounts {
            input: 1000,
            output: 500,
        };
        assert_eq!(
            prices.cost(Some("openai/gpt-small"), Some("gpt"), usage),
            Some(3000)
        );
        assert_eq!(
            prices.cost(Some("openai/gpt-big"), Some("gpt"), usage),
            Some(30_000)
        );
        assert_eq!(
            prices.cost(Some("local/smollm2"), Some("smollm2"), usage),
            Some(0)
        );
        assert_eq!(
            prices.cost(Some("openai/other"), Some("other"), usage),
            None
        );
        // A fraction of a millionth rounds up: nothing is free by rounding.
        let one = TokenCounts {
            input: 1,
            output: 0,
        };
        let cheap = Prices::new(BTreeMap::from([(
            "m".to_owned(),
            Price {
                input_per_million: 0.15,
                output_per_million: 0.6,
            },
        )]));
        assert_eq!(cheap.cost(None, Some("m"), one), Some(1));
    }
}
