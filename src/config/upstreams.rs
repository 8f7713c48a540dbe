//! `[providers.NAME]` and `[routes.NAME]`: the upstreams, and how client model names map to
//! their deployments, retries and fallbacks.

use std::time::Duration;

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum ProviderConfig {
    /// Any OpenAI-compatible server.
    Openai(OpenAiProviderConfig),
    /// Anthropic's Messages API.
    Anthropic(AnthropicProviderConfig),
}

impl ProviderConfig {
    /// The `kind` key's value, which is also the provider's `gen_ai.provider.name`.
    pub fn kind(&self) -> &'static str {
        match self {
            ProviderConfig::Openai(_) => "openai",
            ProviderConfig::Anthropic(_) => "anthropic",
        }
    }

    pub fn timeouts(&self) -> &Timeouts {
        match self {
            ProviderConfig::Openai(c) => &c.timeouts,
            ProviderConfig::Anthropic(c) => &c.timeouts,
        }
    }

    pub(crate) fn api_key_env(&self) -> Option<&str> {
        match self {
            ProviderConfig::Openai(c) => c.api_key_env.as_deref(),
            ProviderConfig::Anthropic(c) => Some(&c.api_key_env),
        }
    }

    pub(crate) fn base_url(&self) -> &str {
        match self {
            ProviderConfig::Openai(c) => &c.base_url,
            ProviderConfig::Anthropic(c) => &c.base_url,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpenAiProviderConfig {
    /// Up to the endpoint path, e.g. `https://api.openai.com/v1`.
    pub base_url: String,
    /// The environment variable holding the upstream's API key (none for keyless servers).
    #[serde(default)]
    pub api_key_env: Option<String>,
    #[serde(flatten)]
    pub timeouts: Timeouts,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnthropicProviderConfig {
    #[serde(default = "default_anthropic_url")]
    pub base_url: String,
    pub api_key_env: String,
    /// The `anthropic-version` header.
    #[serde(default = "default_anthropic_version")]
    pub version: String,
    /// Anthropic requires `max_tokens`; used when the client sends none.
    #[serde(default = "default_anthropic_max_tokens")]
    pub default_max_tokens: u32,
    #[serde(flatten)]
    pub timeouts: Timeouts,
}

fn default_anthropic_url() -> String {
    "https://api.anthropic.com".into()
}
fn default_anthropic_version() -> String {
    "2023-06-01".into()
}
fn default_anthropic_max_tokens() -> u32 {
    4096
}

/// Connect and total timeouts, set on a provider and overridable per deployment.
#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Timeouts {
    #[serde(default)]
    pub connect_timeout_ms: Option<u64>,
    /// The whole upstream call, streamed body included.
    #[serde(default)]
    pub timeout_ms: Option<u64>,
}

impl Timeouts {
    pub const DEFAULT_CONNECT: Duration = Duration::from_secs(10);
    pub const DEFAULT_TOTAL: Duration = Duration::from_secs(600);

    /// `self` where set, else `fallback`.
    pub fn or(self, fallback: Timeouts) -> Timeouts {
        Timeouts {
            connect_timeout_ms: self.connect_timeout_ms.or(fallback.connect_timeout_ms),
            timeout_ms: self.timeout_ms.or(fallback.timeout_ms),
        }
    }

    pub fn connect(&self) -> Duration {
        self.connect_timeout_ms
            .map_or(Self::DEFAULT_CONNECT, Duration::from_millis)
    }

    pub fn total(&self) -> Duration {
        self.timeout_ms
            .map_or(Self::DEFAULT_TOTAL, Duration::from_millis)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    pub deployments: Vec<DeploymentConfig>,
    /// Other route names tried in order when every attempt on this one failed.
    #[serde(default)]
    pub fallbacks: Vec<String>,
    #[serde(default)]
    pub retry: RetryConfig,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeploymentConfig {
    pub provider: String,
    /// The model name the upstream knows.
    pub model: String,
    /// Share of traffic relative to the route's other deployments.
    #[serde(default = "default_weight")]
    pub weight: u32,
    #[serde(flatten)]
    pub timeouts: Timeouts,
}

fn default_weight() -> u32 {
    1
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetryConfig {
    /// Further attempts after the first, on connect errors, timeouts, 429 and 5xx.
    pub max_retries: u32,
    pub initial_backoff_ms: u64,
    pub max_backoff_ms: u64,
    /// An upstream asking to wait longer than this (`Retry-After`) is skipped for a fallback.
    pub max_retry_after_ms: u64,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            max_retries: 2,
            initial_backoff_ms: 100,
            max_backoff_ms: 5_000,
            max_retry_after_ms: 30_000,
        }
    }
}
