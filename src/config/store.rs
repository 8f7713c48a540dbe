//! `[store]` and `[prompts]`: where the gateway keeps what it must remember, and the prompt
//! registry's policy.

use std::path::PathBuf;

use secrecy::SecretString;
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// Holds the embedded SQLite database (`pasarela.db`) when `database_url` is unset.
    pub data_dir: PathBuf,
    /// `postgres://…` (or `postgresql://…`) for a shared Postgres, or `sqlite://PATH` for a
    /// SQLite file elsewhere than `data_dir`. `PASARELA_DATABASE_URL` overrides it, and only
    /// that variable may carry a password (Postgres also reads `PGPASSWORD`).
    pub database_url: Option<SecretString>,
}

impl StoreConfig {
    /// The environment variable that overrides `store.database_url`.
    pub const DATABASE_URL_ENV: &str = "PASARELA_DATABASE_URL";
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PromptsConfig {
    /// Prompt files that `pasarela prompts push` reads when no directory is given.
    pub dir: PathBuf,
    /// Labels that only move with `--force` (CLI) or `"force": true` (API, admin key).
    pub protected_labels: Vec<String>,
    /// How often each replica checks the store for label moves made elsewhere, so that its
    /// prompt cache follows within that time.
    pub refresh_interval_ms: u64,
}

impl Default for PromptsConfig {
    fn default() -> Self {
        PromptsConfig {
            dir: PathBuf::from("prompts"),
            protected_labels: vec!["production".into()],
            refresh_interval_ms: 2000,
        }
    }
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            data_dir: PathBuf::from("data"),
            database_url: None,
        }
    }
}
