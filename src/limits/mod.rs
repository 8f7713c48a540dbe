//! Who may call the gateway and how much: API keys from the config, and virtual keys made at
//! run time with their allowed models, request and token rates, concurrency limits and spend
//! budgets, and the price table that turns usage into spend. With Redis, request and token
//! rates are shared by every replica of the gateway.

mod api_keys;
mod estimate;
mod gcra;
mod governed;
mod lease;
mod per_ip;
mod shared;
mod spend;
mod virtual_keys;

pub use api_keys::{ApiKeyHash, ApiKeys, generate_key};
pub use estimate::{Estimate, estimate};
pub use gcra::{Quota, Refused};
pub use per_ip::PerIp;
pub use shared::{SharedError, SharedLimits};
pub use spend::{OverBudget, Price, Prices, SpendBook, period_end, period_start};
pub use virtual_keys::{
    Accounting, CreatedKey, KeyPolicy, KeySpec, KeysError, REFRESH_INTERVAL, RateDenied,
    RateStatus, Reservation, SlotsTaken, TakenRates, VirtualKeys, create_key, list_keys, micro_usd,
    reset_text, revoke_key,
};
