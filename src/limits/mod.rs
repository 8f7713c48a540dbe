//! Who may call the gateway and how much: API keys from the config, and virtual keys made at
//! run time with their allowed models, request rate and concurrency limits. Token rates and
//! budgets are stored with each virtual key but not enforced yet.

mod api_keys;
mod virtual_keys;

pub use api_keys::{ApiKeyHash, ApiKeys, generate_key};
pub use virtual_keys::{
    CreatedKey, KeyPolicy, KeySpec, KeysError, REFRESH_INTERVAL, RateDenied, RateStatus,
    SlotsTaken, VirtualKeys, create_key, list_keys, micro_usd, reset_text, revoke_key,
};
