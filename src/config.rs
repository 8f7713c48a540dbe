//! Typed configuration: a TOML file (or the embedded defaults), then `PASARELA_*` environment
//! variables and command-line flags on top. Everything is checked at startup and every error
//! names the file, the key and the reason. Secrets are read from the environment variables the
//! file names, never from the file.
//!
//! Must not contain I/O beyond reading the config file and those environment variables.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

/// The configuration compiled into the binary, used when no file is given or found.
pub const EMBEDDED_DEFAULTS: &str = include_str!("../pasarela.toml");

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config {origin}: {message}")]
    Parse { origin: String, message: String },
    #[error("config {origin}: `{key}`: {reason}")]
    Invalid {
        origin: String,
        key: String,
        reason: String,
    },
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub server: ServerConfig,
    #[serde(default)]
    pub auth: AuthConfig,
    #[serde(default)]
    pub telemetry: TelemetryConfig,
    /// Upstreams by name.
    #[serde(default)]
    pub providers: BTreeMap<String, ProviderConfig>,
    /// Model names clients use, each mapped to deployments and fallbacks.
    #[serde(default)]
    pub routes: BTreeMap<String, RouteConfig>,
    /// Where local model files live.
    #[serde(default)]
    pub engine: EngineConfig,
    /// Models run in this process, by the name clients use.
    #[serde(default)]
    pub models: BTreeMap<String, LocalModelConfig>,
    /// Where the gateway keeps what it must remember (prompts, …).
    #[serde(default)]
    pub store: StoreConfig,
    /// The prompt registry's policy.
    #[serde(default)]
    pub prompts: PromptsConfig,
    /// How virtual keys' limits are counted.
    #[serde(default)]
    pub limits: LimitsConfig,
    /// US dollars per million tokens, by route name or deployment (`provider/model`), for
    /// spend and budgets. Local models cost nothing unless priced here.
    #[serde(default)]
    pub prices: BTreeMap<String, crate::limits::Price>,
    /// What is kept of each API request, and for how long.
    #[serde(default)]
    pub request_log: RequestLogConfig,
    /// Where the configuration came from, for error messages.
    #[serde(skip)]
    pub origin: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    /// Largest request body accepted; larger ones get 413.
    pub max_body_bytes: usize,
    /// How long a shutdown waits for in-flight requests and streams.
    pub shutdown_grace_secs: u64,
    /// Without API keys the gateway binds to loopback only, unless this is set.
    pub allow_unauthenticated_remote: bool,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            // OpenAI accepts bodies of tens of MB (images inline as base64).
            max_body_bytes: 32 * 1024 * 1024,
            shutdown_grace_secs: 30,
            allow_unauthenticated_remote: false,
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// SHA-256 hashes of accepted keys, as `sha256:<hex>` (`pasarela keys hash` prints them).
    pub api_key_hashes: Vec<String>,
    /// Environment variables that each hold one accepted key in clear; hashed at startup.
    pub api_key_envs: Vec<String>,
    /// Keys that may also manage the gateway: the prompt registry's API and the dashboard's
    /// actions. Admin keys are accepted wherever API keys are.
    pub admin_key_hashes: Vec<String>,
    /// Environment variables that each hold one admin key in clear.
    pub admin_key_envs: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetryConfig {
    /// `text` or `json`.
    pub log_format: LogFormat,
    /// A tracing filter such as `info` or `pasarela=debug`; `PASARELA_LOG` overrides it.
    pub log_level: String,
    /// Span export over OTLP; off unless an endpoint is set here or in `OTEL_EXPORTER_OTLP_*`.
    pub otlp: OtlpConfig,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        TelemetryConfig {
            log_format: LogFormat::Text,
            log_level: "info".into(),
            otlp: OtlpConfig::default(),
        }
    }
}

/// Where and how request spans are exported. Each key left unset falls back to the standard
/// `OTEL_*` variable (see README.md, "Tracing").
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OtlpConfig {
    /// The collector's base URL, e.g. `http://collector:4317` (gRPC) or `http://collector:4318`
    /// (HTTP, which gets `/v1/traces` appended unless the path already ends with it).
    pub endpoint: Option<String>,
    pub protocol: Option<OtlpProtocol>,
    /// Extra request headers (not secrets: those belong in `OTEL_EXPORTER_OTLP_HEADERS`).
    pub headers: BTreeMap<String, String>,
    /// `service.name` of the exported resource; `OTEL_SERVICE_NAME`, then `pasarela`.
    pub service_name: Option<String>,
    /// Fraction of traces started here that are kept (0.0–1.0); a client's sampled flag
    /// in `traceparent` decides for traces it started.
    pub sample_ratio: f64,
    /// Records prompt and completion text on spans (`gen_ai.input.messages`,
    /// `gen_ai.output.messages`). Off: they may hold personal data.
    pub record_content: bool,
    /// How long one export may take before it is given up.
    pub timeout_ms: Option<u64>,
}

impl Default for OtlpConfig {
    fn default() -> Self {
        OtlpConfig {
            endpoint: None,
            protocol: None,
            headers: BTreeMap::new(),
            service_name: None,
            sample_ratio: 1.0,
            record_content: false,
            timeout_ms: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum OtlpProtocol {
    #[serde(rename = "grpc")]
    Grpc,
    #[serde(rename = "http/protobuf")]
    HttpProtobuf,
}

impl OtlpProtocol {
    /// The names `OTEL_EXPORTER_OTLP_PROTOCOL` uses.
    pub fn parse(s: &str) -> Option<OtlpProtocol> {
        match s.trim() {
            "grpc" => Some(OtlpProtocol::Grpc),
            "http/protobuf" => Some(OtlpProtocol::HttpProtobuf),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EngineConfig {
    /// Relative model paths resolve against this directory; `PASARELA_MODELS_DIR` overrides it.
    pub models_dir: PathBuf,
    /// The Hugging Face cache for `hf_repo` models; unset, Hugging Face's own variables
    /// (`HF_HUB_CACHE`, `HF_HOME`) decide.
    pub hf_cache_dir: Option<PathBuf>,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            models_dir: PathBuf::from("models"),
            hf_cache_dir: None,
        }
    }
}

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
}

impl LimitsConfig {
    /// The environment variable that overrides `limits.redis_url`.
    pub const REDIS_URL_ENV: &str = "PASARELA_REDIS_URL";

    pub fn redis_timeout(&self) -> Duration {
        Duration::from_millis(self.redis_timeout_ms)
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
            retention_days: 30,
            prune_interval_secs: 3600,
            redact_keys: Vec::new(),
            redact_patterns: Vec::new(),
        }
    }
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

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModelKind {
    Chat,
    Embedding,
}

/// A model served in-process. Exactly one of `path` and `hf_repo` says where it is.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocalModelConfig {
    pub kind: ModelKind,
    /// A GGUF file (chat) or a directory with config.json, model.safetensors and
    /// tokenizer.json (embedding); relative to `engine.models_dir`.
    #[serde(default)]
    pub path: Option<PathBuf>,
    /// A Hugging Face repository, `owner/name`.
    #[serde(default)]
    pub hf_repo: Option<String>,
    /// The GGUF file within `hf_repo` (chat models).
    #[serde(default)]
    pub hf_file: Option<String>,
    /// Branch, tag or commit of `hf_repo` (default `main`).
    #[serde(default)]
    pub hf_revision: Option<String>,
    /// A tokenizer.json to use instead of the tokenizer in the GGUF metadata.
    #[serde(default)]
    pub tokenizer: Option<PathBuf>,
    /// Convert 4-bit weights to 8-bit at load: about three times faster decoding on CPUs
    /// (candle has no SIMD kernel for Q4_1), for 1.6× the memory.
    #[serde(default = "default_true")]
    pub requantize: bool,
    /// Most sequences decoded together (continuous batching).
    #[serde(default = "default_max_batch")]
    pub max_batch: usize,
    /// Requests waiting beyond this get 429 at once.
    #[serde(default = "default_queue_capacity")]
    pub queue_capacity: usize,
    /// Caps the context the model's metadata declares (memory for KV caches grows with it).
    #[serde(default)]
    pub context_length: Option<usize>,
    /// `max_tokens` when a request sets none.
    #[serde(default = "default_max_tokens")]
    pub default_max_tokens: usize,
}

fn default_true() -> bool {
    true
}
fn default_max_batch() -> usize {
    8
}
fn default_queue_capacity() -> usize {
    64
}
fn default_max_tokens() -> usize {
    512
}

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

    fn api_key_env(&self) -> Option<&str> {
        match self {
            ProviderConfig::Openai(c) => c.api_key_env.as_deref(),
            ProviderConfig::Anthropic(c) => Some(&c.api_key_env),
        }
    }

    fn base_url(&self) -> &str {
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

impl Config {
    /// The embedded defaults.
    pub fn embedded() -> Result<Self, ConfigError> {
        Self::parse(EMBEDDED_DEFAULTS, "(embedded defaults)")
    }

    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    /// Parses and validates. `origin` names the source in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Self, ConfigError> {
        let mut config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            origin: origin.to_owned(),
            message: e.to_string(),
        })?;
        config.origin = origin.to_owned();
        config.validate()?;
        Ok(config)
    }

    fn invalid(&self, key: impl Into<String>, reason: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            origin: self.origin.clone(),
            key: key.into(),
            reason: reason.into(),
        }
    }

    fn validate(&self) -> Result<(), ConfigError> {
        for (name, m) in &self.models {
            let key = format!("models.{name}");
            if self.routes.contains_key(name) {
                return Err(
                    self.invalid(key, "a route has the same name; model names must be unique")
                );
            }
            match (&m.path, &m.hf_repo) {
                (Some(_), Some(_)) | (None, None) => {
                    return Err(self.invalid(key, "set exactly one of `path` and `hf_repo`"));
                }
                (None, Some(repo)) if !repo.contains('/') => {
                    return Err(self.invalid(format!("{key}.hf_repo"), "expected `owner/name`"));
                }
                (None, Some(_)) if m.kind == ModelKind::Chat && m.hf_file.is_none() => {
                    return Err(self.invalid(
                        format!("{key}.hf_file"),
                        "a chat model from the hub needs the GGUF file name",
                    ));
                }
                _ => {}
            }
            if m.max_batch == 0 || m.queue_capacity == 0 {
                return Err(self.invalid(key, "max_batch and queue_capacity must be at least 1"));
            }
        }
        self.validate_otlp()?;
        if self.limits.per_ip_rpm == Some(0) {
            return Err(self.invalid(
                "limits.per_ip_rpm",
                "must be at least 1 (leave it out for no limit)",
            ));
        }
        for (name, price) in &self.prices {
            let ok = [price.input_per_million, price.output_per_million]
                .iter()
                .all(|v| v.is_finite() && *v >= 0.0);
            if !ok {
                return Err(self.invalid(
                    format!("prices.{name}"),
                    "prices must be finite, non-negative dollars per million tokens",
                ));
            }
        }
        self.validate_request_log()?;
        if self.prompts.refresh_interval_ms == 0 {
            return Err(self.invalid("prompts.refresh_interval_ms", "must be greater than 0"));
        }
        for label in &self.prompts.protected_labels {
            if let Err(e) = crate::prompts::Label::parse(label) {
                return Err(self.invalid("prompts.protected_labels", e.to_string()));
            }
        }
        if let Some(url) = &self.limits.redis_url {
            if let Err(reason) = check_redis_url(url.expose_secret()) {
                return Err(self.invalid("limits.redis_url", reason));
            }
            if url_has_password(url.expose_secret()) {
                return Err(self.invalid(
                    "limits.redis_url",
                    format!(
                        "the config file must not hold a password: set {} instead",
                        LimitsConfig::REDIS_URL_ENV
                    ),
                ));
            }
        }
        let prefix = &self.limits.redis_prefix;
        if prefix.is_empty() || prefix.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(self.invalid(
                "limits.redis_prefix",
                "must be a non-empty name without spaces",
            ));
        }
        if self.limits.redis_timeout_ms == 0 {
            return Err(self.invalid("limits.redis_timeout_ms", "must be greater than 0"));
        }
        if let Some(url) = &self.store.database_url {
            if let Err(reason) = check_database_url(url.expose_secret()) {
                return Err(self.invalid("store.database_url", reason));
            }
            if url_has_password(url.expose_secret()) {
                return Err(self.invalid(
                    "store.database_url",
                    format!(
                        "the config file must not hold a password: set {} or PGPASSWORD instead",
                        StoreConfig::DATABASE_URL_ENV
                    ),
                ));
            }
        }
        if self.server.max_body_bytes == 0 {
            return Err(self.invalid("server.max_body_bytes", "must be greater than 0"));
        }
        for (i, hash) in self.auth.api_key_hashes.iter().enumerate() {
            if crate::limits::ApiKeyHash::parse(hash).is_none() {
                return Err(self.invalid(
                    format!("auth.api_key_hashes[{i}]"),
                    "expected `sha256:` followed by 64 hex digits (see `pasarela keys hash`)",
                ));
            }
        }
        for (name, provider) in &self.providers {
            let url = provider.base_url();
            if reqwest::Url::parse(url)
                .map(|u| !matches!(u.scheme(), "http" | "https"))
                .unwrap_or(true)
            {
                return Err(self.invalid(
                    format!("providers.{name}.base_url"),
                    format!("`{url}` is not an http(s) URL"),
                ));
            }
            self.validate_timeouts(&format!("providers.{name}"), provider.timeouts())?;
        }
        for (name, route) in &self.routes {
            if route.deployments.is_empty() {
                return Err(self.invalid(
                    format!("routes.{name}.deployments"),
                    "a route needs at least one deployment",
                ));
            }
            if route.deployments.iter().all(|d| d.weight == 0) {
                return Err(self.invalid(
                    format!("routes.{name}.deployments"),
                    "at least one deployment needs a weight above 0",
                ));
            }
            for (i, d) in route.deployments.iter().enumerate() {
                if !self.providers.contains_key(&d.provider) {
                    return Err(self.invalid(
                        format!("routes.{name}.deployments[{i}].provider"),
                        format!("no provider named `{}` in [providers]", d.provider),
                    ));
                }
                self.validate_timeouts(&format!("routes.{name}.deployments[{i}]"), &d.timeouts)?;
            }
            for (i, f) in route.fallbacks.iter().enumerate() {
                if f == name || !self.routes.contains_key(f) {
                    return Err(self.invalid(
                        format!("routes.{name}.fallbacks[{i}]"),
                        format!("`{f}` is not another route in [routes]"),
                    ));
                }
            }
            let r = &route.retry;
            if r.initial_backoff_ms > r.max_backoff_ms {
                return Err(self.invalid(
                    format!("routes.{name}.retry.initial_backoff_ms"),
                    "must not exceed max_backoff_ms",
                ));
            }
        }
        Ok(())
    }

    fn validate_otlp(&self) -> Result<(), ConfigError> {
        let otlp = &self.telemetry.otlp;
        if let Some(endpoint) = &otlp.endpoint
            && let Err(reason) = check_otlp_endpoint(endpoint)
        {
            return Err(self.invalid("telemetry.otlp.endpoint", reason));
        }
        if !(0.0..=1.0).contains(&otlp.sample_ratio) {
            return Err(self.invalid("telemetry.otlp.sample_ratio", "must be between 0.0 and 1.0"));
        }
        if otlp.timeout_ms == Some(0) {
            return Err(self.invalid("telemetry.otlp.timeout_ms", "must be greater than 0"));
        }
        for (name, value) in &otlp.headers {
            let valid = reqwest::header::HeaderName::from_bytes(name.as_bytes()).is_ok()
                && reqwest::header::HeaderValue::from_str(value).is_ok();
            if !valid {
                return Err(self.invalid(
                    format!("telemetry.otlp.headers.{name}"),
                    "not a valid HTTP header name and value",
                ));
            }
        }
        Ok(())
    }

    fn validate_request_log(&self) -> Result<(), ConfigError> {
        let log = &self.request_log;
        let rate_ok = |r: f64| (0.0..=1.0).contains(&r);
        let mut rates = vec![
            (
                "request_log.metadata_sample_rate".to_owned(),
                log.metadata_sample_rate,
            ),
            (
                "request_log.body_sample_rate".to_owned(),
                log.body_sample_rate,
            ),
        ];
        for (scope, table) in [("routes", &log.routes), ("keys", &log.keys)] {
            for (name, r) in table {
                let key = format!("request_log.{scope}.{name}");
                rates.extend(
                    r.metadata_sample_rate
                        .map(|v| (format!("{key}.metadata_sample_rate"), v)),
                );
                rates.extend(
                    r.body_sample_rate
                        .map(|v| (format!("{key}.body_sample_rate"), v)),
                );
            }
        }
        for (key, rate) in rates {
            if !rate_ok(rate) {
                return Err(self.invalid(key, "must be between 0.0 and 1.0"));
            }
        }
        for (key, value) in [
            ("request_log.buffer", log.buffer as u64),
            ("request_log.batch", log.batch as u64),
            ("request_log.prune_interval_secs", log.prune_interval_secs),
        ] {
            if value == 0 {
                return Err(self.invalid(key, "must be greater than 0"));
            }
        }
        for (i, pattern) in log.redact_patterns.iter().enumerate() {
            if let Err(e) = regex::Regex::new(pattern) {
                return Err(
                    self.invalid(format!("request_log.redact_patterns[{i}]"), e.to_string())
                );
            }
        }
        Ok(())
    }

    fn validate_timeouts(&self, key: &str, t: &Timeouts) -> Result<(), ConfigError> {
        if t.connect_timeout_ms == Some(0) {
            return Err(self.invalid(
                format!("{key}.connect_timeout_ms"),
                "must be greater than 0",
            ));
        }
        if t.timeout_ms == Some(0) {
            return Err(self.invalid(format!("{key}.timeout_ms"), "must be greater than 0"));
        }
        Ok(())
    }

    /// Puts `PASARELA_DATABASE_URL`, when set and not empty, over `store.database_url`. Called
    /// by whoever loads the configuration to serve, beside the command-line overrides; not by
    /// `parse`, so that parsing never depends on the environment.
    pub fn apply_store_env(&mut self) -> Result<(), ConfigError> {
        let var = StoreConfig::DATABASE_URL_ENV;
        match std::env::var(var) {
            Ok(url) if url.is_empty() => Ok(()),
            Ok(url) => self.override_database_url(var, url),
            Err(std::env::VarError::NotPresent) => Ok(()),
            Err(std::env::VarError::NotUnicode(_)) => Err(ConfigError::Invalid {
                origin: "environment".into(),
                key: var.into(),
                reason: "is not valid UTF-8".into(),
            }),
        }
    }

    /// Puts `PASARELA_REDIS_URL`, when set and not empty, over `limits.redis_url`; called
    /// where `apply_store_env` is.
    pub fn apply_limits_env(&mut self) -> Result<(), ConfigError> {
        let var = LimitsConfig::REDIS_URL_ENV;
        match std::env::var(var) {
            Ok(url) if url.is_empty() => Ok(()),
            Ok(url) => self.override_redis_url(var, url),
            Err(std::env::VarError::NotPresent) => Ok(()),
            Err(std::env::VarError::NotUnicode(_)) => Err(ConfigError::Invalid {
                origin: "environment".into(),
                key: var.into(),
                reason: "is not valid UTF-8".into(),
            }),
        }
    }

    /// Sets `limits.redis_url` from the environment variable `source`, which, unlike the
    /// file, may carry a password.
    pub fn override_redis_url(&mut self, source: &str, url: String) -> Result<(), ConfigError> {
        check_redis_url(&url).map_err(|reason| ConfigError::Invalid {
            origin: "environment".into(),
            key: source.into(),
            reason,
        })?;
        self.limits.redis_url = Some(SecretString::from(url));
        Ok(())
    }

    /// Sets `store.database_url` from the environment variable `source`, which, unlike the
    /// file, may carry a password.
    pub fn override_database_url(&mut self, source: &str, url: String) -> Result<(), ConfigError> {
        check_database_url(&url).map_err(|reason| ConfigError::Invalid {
            origin: "environment".into(),
            key: source.into(),
            reason,
        })?;
        self.store.database_url = Some(SecretString::from(url));
        Ok(())
    }

    /// Reads the API key of each provider from the environment variable its config names.
    /// A named variable that is unset or empty is an error: better at startup than at the
    /// first request.
    pub fn provider_secrets(&self) -> Result<BTreeMap<String, Option<SecretString>>, ConfigError> {
        let mut out = BTreeMap::new();
        for (name, provider) in &self.providers {
            let secret = match provider.api_key_env() {
                None => None,
                Some(var) => Some(self.read_secret(&format!("providers.{name}.api_key_env"), var)?),
            };
            out.insert(name.clone(), secret);
        }
        Ok(out)
    }

    /// The clear-text keys named by `auth.api_key_envs`.
    pub fn auth_env_keys(&self) -> Result<Vec<SecretString>, ConfigError> {
        self.auth
            .api_key_envs
            .iter()
            .enumerate()
            .map(|(i, var)| self.read_secret(&format!("auth.api_key_envs[{i}]"), var))
            .collect()
    }

    pub fn admin_env_keys(&self) -> Result<Vec<SecretString>, ConfigError> {
        self.auth
            .admin_key_envs
            .iter()
            .enumerate()
            .map(|(i, var)| self.read_secret(&format!("auth.admin_key_envs[{i}]"), var))
            .collect()
    }

    fn read_secret(&self, key: &str, var: &str) -> Result<SecretString, ConfigError> {
        match std::env::var(var) {
            Ok(v) if !v.is_empty() => Ok(SecretString::from(v)),
            _ => Err(self.invalid(key, format!("environment variable {var} is not set"))),
        }
    }
}

/// The engines `store` speaks. The reason never repeats the URL: it may hold a password.
/// An OTLP endpoint is an absolute `http` or `https` URL.
pub fn check_otlp_endpoint(endpoint: &str) -> Result<(), String> {
    let url = reqwest::Url::parse(endpoint).map_err(|e| format!("`{endpoint}`: {e}"))?;
    match url.scheme() {
        "http" | "https" if url.host_str().is_some() => Ok(()),
        _ => Err(format!("`{endpoint}`: expected an http:// or https:// URL")),
    }
}

fn check_database_url(url: &str) -> Result<(), String> {
    match reqwest::Url::parse(url) {
        Ok(u) if matches!(u.scheme(), "sqlite" | "postgres" | "postgresql") => Ok(()),
        Ok(u) => Err(format!(
            "unsupported scheme `{}`: expected `sqlite://`, `postgres://` or `postgresql://`",
            u.scheme()
        )),
        Err(e) => Err(format!(
            "not a URL ({e}): expected `sqlite://PATH` or `postgres://USER@HOST/DATABASE`"
        )),
    }
}

/// The reason never repeats the URL: it may hold a password.
fn check_redis_url(url: &str) -> Result<(), String> {
    match reqwest::Url::parse(url) {
        Ok(u) if matches!(u.scheme(), "redis" | "rediss") && u.host_str().is_some() => Ok(()),
        Ok(u) if matches!(u.scheme(), "redis" | "rediss") => Err("the URL names no host".into()),
        Ok(u) => Err(format!(
            "unsupported scheme `{}`: expected `redis://` or `rediss://`",
            u.scheme()
        )),
        Err(e) => Err(format!("not a URL ({e}): expected `redis://HOST:PORT`")),
    }
}

fn url_has_password(url: &str) -> bool {
    reqwest::Url::parse(url)
        .is_ok_and(|u| u.password().is_some() || u.query_pairs().any(|(key, _)| key == "password"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_defaults_parse() {
        let c = Config::embedded().unwrap();
        assert_eq!(c.server.listen.port(), 8080);
        assert!(c.server.listen.ip().is_loopback());
    }

    #[test]
    fn unknown_key_is_rejected_with_its_name_and_origin() {
        let err = Config::parse("[server]\nlisten_addr = \"1.2.3.4:1\"\n", "x.toml").unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("x.toml"), "{msg}");
        assert!(msg.contains("listen_addr"), "{msg}");
    }

    #[test]
    fn unknown_key_inside_a_provider_is_rejected() {
        let text =
            "[providers.up]\nkind = \"openai\"\nbase_url = \"http://x\"\napi_kee_env = \"K\"\n";
        let msg = Config::parse(text, "x.toml").unwrap_err().to_string();
        assert!(msg.contains("api_kee_env"), "{msg}");
    }

    #[test]
    fn route_to_unknown_provider_is_rejected() {
        let text = "[routes.m]\ndeployments = [{ provider = \"nope\", model = \"x\" }]\n";
        let msg = Config::parse(text, "x.toml").unwrap_err().to_string();
        assert!(msg.contains("routes.m.deployments[0].provider"), "{msg}");
        assert!(msg.contains("nope"), "{msg}");
    }

    #[test]
    fn fallback_to_unknown_route_is_rejected() {
        let text = "[providers.up]\nkind = \"openai\"\nbase_url = \"http://x\"\n\
                    [routes.m]\ndeployments = [{ provider = \"up\", model = \"x\" }]\nfallbacks = [\"ghost\"]\n";
        let msg = Config::parse(text, "x.toml").unwrap_err().to_string();
        assert!(msg.contains("routes.m.fallbacks[0]"), "{msg}");
    }

    #[test]
    fn bad_listen_address_names_the_key() {
        let msg = Config::parse("[server]\nlisten = \"not an address\"\n", "x.toml")
            .unwrap_err()
            .to_string();
        assert!(msg.contains("listen"), "{msg}");
    }

    #[test]
    fn otlp_is_off_by_default_and_its_bad_settings_name_their_key() {
        let c = Config::embedded().unwrap();
        assert!(c.telemetry.otlp.endpoint.is_none());
        let ok = "[telemetry.otlp]\nendpoint = \"http://127.0.0.1:4317\"\nprotocol = \"grpc\"\n";
        let c = Config::parse(ok, "x.toml").unwrap();
        assert_eq!(c.telemetry.otlp.protocol, Some(OtlpProtocol::Grpc));
        for (toml, key) in [
            ("endpoint = \"collector:4317\"", "telemetry.otlp.endpoint"),
            ("endpoint = \"ftp://collector\"", "telemetry.otlp.endpoint"),
            ("protocol = \"http/json\"", "protocol"),
            ("sample_ratio = 1.5", "telemetry.otlp.sample_ratio"),
            (
                "headers = { \"bad header\" = \"x\" }",
                "telemetry.otlp.headers.bad header",
            ),
        ] {
            let msg = Config::parse(&format!("[telemetry.otlp]\n{toml}\n"), "x.toml")
                .unwrap_err()
                .to_string();
            assert!(msg.contains(key), "{toml}: {msg}");
        }
    }

    #[test]
    fn bad_key_hash_is_rejected() {
        let msg = Config::parse("[auth]\napi_key_hashes = [\"md5:abc\"]\n", "x.toml")
            .unwrap_err()
            .to_string();
        assert!(msg.contains("auth.api_key_hashes[0]"), "{msg}");
    }

    #[test]
    fn deployment_timeouts_override_provider_timeouts() {
        let text = "[providers.up]\nkind = \"openai\"\nbase_url = \"http://x\"\ntimeout_ms = 5000\nconnect_timeout_ms = 100\n\
                    [routes.m]\ndeployments = [{ provider = \"up\", model = \"x\", timeout_ms = 50 }]\n";
        let c = Config::parse(text, "x.toml").unwrap();
        let d = &c.routes["m"].deployments[0];
        let t = d.timeouts.or(*c.providers["up"].timeouts());
        assert_eq!(t.total(), Duration::from_millis(50));
        assert_eq!(t.connect(), Duration::from_millis(100));
    }

    #[test]
    fn store_defaults_to_sqlite_under_data() {
        let c = Config::embedded().unwrap();
        assert_eq!(c.store.data_dir, PathBuf::from("data"));
        assert!(c.store.database_url.is_none());
    }

    #[test]
    fn store_accepts_postgres_and_sqlite_urls() {
        for url in [
            "postgres://pasarela@db.internal:5432/registry",
            "postgresql://pasarela@db.internal/registry?sslmode=require",
            "sqlite:///var/lib/pasarela/registry.db",
        ] {
            let text = format!("[store]\ndatabase_url = \"{url}\"\n");
            let c = Config::parse(&text, "x.toml").unwrap();
            assert_eq!(c.store.database_url.unwrap().expose_secret(), url);
        }
    }

    #[test]
    fn store_url_with_another_scheme_is_rejected_with_its_key() {
        let text = "[store]\ndatabase_url = \"mysql://root@localhost/x\"\n";
        let msg = Config::parse(text, "x.toml").unwrap_err().to_string();
        assert!(msg.contains("store.database_url"), "{msg}");
        assert!(msg.contains("`mysql`"), "{msg}");
    }

    #[test]
    fn store_url_with_a_password_in_the_file_is_rejected_without_echoing_it() {
        for url in [
            "postgres://pasarela:hunter2@db/registry",
            "postgres://pasarela@db/registry?password=hunter2",
        ] {
            let text = format!("[store]\ndatabase_url = \"{url}\"\n");
            let msg = Config::parse(&text, "x.toml").unwrap_err().to_string();
            assert!(msg.contains("PASARELA_DATABASE_URL"), "{msg}");
            assert!(!msg.contains("hunter2"), "{msg}");
        }
    }

    #[test]
    fn database_url_override_may_carry_a_password_but_is_checked() {
        let mut c = Config::embedded().unwrap();
        c.override_database_url("PASARELA_DATABASE_URL", "postgres://u:secret@db/x".into())
            .unwrap();
        assert_eq!(
            c.store.database_url.as_ref().unwrap().expose_secret(),
            "postgres://u:secret@db/x"
        );
        assert!(!format!("{c:?}").contains("secret"));
        let err = c
            .override_database_url("PASARELA_DATABASE_URL", "redis://secret@cache".into())
            .unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("PASARELA_DATABASE_URL"), "{msg}");
        assert!(!msg.contains("secret"), "{msg}");
    }

    #[test]
    fn redis_url_is_checked_and_its_password_comes_only_from_the_environment() {
        let c =
            Config::parse("[limits]\nredis_url = \"redis://cache:6379/2\"\n", "x.toml").unwrap();
        assert_eq!(
            c.limits.redis_url.as_ref().unwrap().expose_secret(),
            "redis://cache:6379/2"
        );
        for (url, reason) in [
            ("redis://:hunter2@cache", "PASARELA_REDIS_URL"),
            ("postgres://cache", "`postgres`"),
        ] {
            let text = format!("[limits]\nredis_url = \"{url}\"\n");
            let msg = Config::parse(&text, "x.toml").unwrap_err().to_string();
            assert!(msg.contains("limits.redis_url"), "{msg}");
            assert!(msg.contains(reason), "{msg}");
            assert!(!msg.contains("hunter2"), "{msg}");
        }
        let mut c = Config::embedded().unwrap();
        c.override_redis_url("PASARELA_REDIS_URL", "rediss://u:hunter2@cache".into())
            .unwrap();
        assert!(!format!("{c:?}").contains("hunter2"));
        let msg = Config::parse("[limits]\nredis_prefix = \"a b\"\n", "x.toml")
            .unwrap_err()
            .to_string();
        assert!(msg.contains("limits.redis_prefix"), "{msg}");
    }

    #[test]
    fn request_log_defaults_keep_metadata_and_no_bodies() {
        let c = Config::embedded().unwrap();
        assert!(c.request_log.enabled);
        assert_eq!(c.request_log.metadata_sample_rate, 1.0);
        assert_eq!(c.request_log.body_sample_rate, 0.0);
        assert_eq!(c.request_log.retention_days, 30);
    }

    #[test]
    fn request_log_rates_outside_zero_to_one_are_rejected_with_their_key() {
        let text = "[request_log.keys.team-a]\nbody_sample_rate = 1.5\n";
        let msg = Config::parse(text, "x.toml").unwrap_err().to_string();
        assert!(
            msg.contains("request_log.keys.team-a.body_sample_rate"),
            "{msg}"
        );
        let text = "[request_log]\nredact_patterns = [\"(\"]\n";
        let msg = Config::parse(text, "x.toml").unwrap_err().to_string();
        assert!(msg.contains("request_log.redact_patterns[0]"), "{msg}");
    }

    #[test]
    fn unknown_key_in_store_is_rejected() {
        let msg = Config::parse("[store]\ndatadir = \"x\"\n", "x.toml")
            .unwrap_err()
            .to_string();
        assert!(msg.contains("datadir"), "{msg}");
    }
}
