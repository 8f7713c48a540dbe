//! Who may call the gateway and how much: API keys now; per-key rates and budgets later.

mod api_keys;

pub use api_keys::{ApiKeyHash, ApiKeys, generate_key};
