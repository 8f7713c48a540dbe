//! `[limits]` and `[request_log]`: how virtual keys' limits are counted, and what is kept of
//! each API request.

use std::collections::BTreeMap;
use std::time::Duration;

use secrecy::SecretString;
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Output tokens reserved against a key's token rate when a request sets no `max_tokens`;
    /// the reservation is settled on the real usage when the response ends.
    pub default_output_tokens: u32,
    /// Requests per minute per client IP address for callers without a key (the gateway open
    /// on loopback); none when unset.
    pub per_ip_rpm: Option<u32>,
    /// `redis://HOST:PORT[/DB]` or `rediss://…` (TLS): virtual keys' request and token rates
    /// are then shared by every replica using it. `PASARELA_REDIS_URL` overrides it, and only
    /// that variable may carry a password.
    pub redis_url: Option<SecretString>,
    /// Starts the name of every Redis key the gateway writes, so that several deployments can
    /// share one Redis.
    pub redis_prefix: String,
    /// How long a rate check waits for Redis before it is counted on this replica instead.
    pub redis_timeout_ms: u64,
    /// How long cells a replica leased ahead from a busy key's shared bucket may be spent
    /// there before what is left goes back; 0: every check is a round trip to Redis.
    pub redis_lease_ms: u64,
}

impl LimitsConfig {
    /// The environment variable that overrides `limits.redis_url`.
    pub const REDIS_URL_ENV: &str = "PASARELA_REDIS_URL";

    pub fn redis_timeout(&self) -> Duration {
        Duration::from_millis(self.redis_timeout_ms)
    }

    pub fn redis_lease(&self) -> Duration {
        Duration::from_millis(self.redis_lease_ms)
    }
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            default_output_tokens: 256,
            per_ip_rpm: None,
            redis_url: None,
            redis_prefix: "pasarela".into(),
            // Far above a round trip inside a data centre (well under a millisecond), far below
            // what a client would notice.
            redis_timeout_ms: 100,
            // Long enough that a key busy enough to lease takes hundreds of checks per round
            // trip; short enough that cells a replica stops needing soon go back.
            redis_lease_ms: 1000,
        }
    }
}

/// The request log: a row per `/v1` request (metadata), with its bodies at a sampled rate.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RequestLogConfig {
    pub enabled: bool,
    /// Share of requests whose metadata is logged, 0.0 to 1.0.
    pub metadata_sample_rate: f64,
    /// Share of requests whose bodies are logged too, 0.0 to 1.0.
    pub body_sample_rate: f64,
    /// Rates by endpoint (`/v1/chat/completions`), over the defaults above.
    pub routes: BTreeMap<String, SampleRates>,
    /// Rates by virtual key name, over the endpoint's and the defaults.
    pub keys: BTreeMap<String, SampleRates>,
    /// Entries waiting to be written; beyond that, new ones are dropped (and counted).
    pub buffer: usize,
    /// Most rows written in one transaction.
    pub batch: usize,
    /// Longest a record waits for its batch to fill before it is written: a steady flow of
    /// requests costs one transaction (one sync of the store) per interval, not one each.
    pub flush_interval_ms: u64,
    /// Rows older than this are deleted; 0 keeps them forever.
    pub retention_days: u32,
    /// How often old rows are looked for.
    pub prune_interval_secs: u64,
    /// JSON keys whose values are replaced in stored bodies, beside the built-in ones
    /// (case-insensitive).
    pub redact_keys: Vec<String>,
    /// Regular expressions whose matches are replaced in stored bodies, beside the built-in
    /// API-key patterns.
    pub redact_patterns: Vec<String>,
}

/// Sample rates that override the defaults for one endpoint or key; unset ones inherit.
#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SampleRates {
    #[serde(default)]
    pub metadata_sample_rate: Option<f64>,
    #[serde(default)]
    pub body_sample_rate: Option<f64>,
}

impl Default for RequestLogConfig {
    fn default() -> Self {
        RequestLogConfig {
            enabled: true,
            metadata_sample_rate: 1.0,
            body_sample_rate: 0.0,
            routes: BTreeMap::new(),
            keys: BTreeMap::new(),
            buffer: 10_000,
            batch: 500,
            flush_interval_ms: 100,
            retention_days: 30,
            prune_interval_secs: 3600,
            redact_keys: Vec::new(),
            redact_patterns: Vec::new(),
        }
    }
}
