//! Typed configuration: a TOML file (or the embedded defaults), then `PASARELA_*` environment
//! variables and command-line flags on top. Everything is checked at startup and every error
//! names the file, the key and the reason. Secrets are read from the environment variables the
//! file names, never from the file.
//!
//! Must not contain I/O beyond reading the config file and those environment variables.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

mod limits;
mod models;
mod server;
mod store;
mod telemetry;
mod upstreams;

pub use limits::*;
pub use models::*;
pub use server::*;
pub use store::*;
pub use telemetry::*;
pub use upstreams::*;

/// The configuration compiled into the binary, used when no file is given or found.
pub const EMBEDDED_DEFAULTS: &str = include_str!("../../pasarela.toml");

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
mod tests;
