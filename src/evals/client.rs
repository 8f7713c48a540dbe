//! Calls to an OpenAI-compatible endpoint for a run: chat completions for the targets and the
//! judge, embeddings for `similar`. A 429 slows the whole run down (see `pace.rs`) and is
//! retried after its `Retry-After`; 502/503/504 and broken connections are retried with
//! back-off; any other error answer is the case's error, reported with the target's message.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::pace::Pace;

/// Attempts per call, the first included.
const ATTEMPTS: u32 = 8;
/// The pause after a 429 without `Retry-After`.
const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(1);
/// The longest `Retry-After` honoured as given: a target asking for more is waited on for this.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);

/// A successful answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Answer {
    pub body: Value,
    /// The deployment that served it, when the target is a pasarela (`x-pasarela-deployment`).
    pub deployment: Option<String>,
    pub latency_ms: f64,
}

/// Where a run sends its calls.
#[derive(Clone)]
pub struct Endpoint {
    /// Ends in `/v1` (or whatever path the user gave).
    base: String,
    /// What the response cache knows the endpoint by: its URL, or a name that outlives it (an
    /// in-process gateway gets a new port every run, but serves the same models).
    identity: String,
    api_key: Option<SecretString>,
    http: reqwest::Client,
}

impl Endpoint {
    /// `url` is the API base (`http://host:8000/v1`); a URL with no path gets `/v1`.
    pub fn new(
        url: &str,
        api_key: Option<SecretString>,
        timeout: Duration,
    ) -> Result<Self, String> {
        let parsed = reqwest::Url::parse(url).map_err(|e| format!("`{url}` is not a URL: {e}"))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(format!("`{url}` is not an http(s) URL"));
        }
        let trimmed = url.trim_end_matches('/');
        let base = if parsed.path().trim_matches('/').is_empty() {
            format!("{trimmed}/v1")
        } else {
            trimmed.to_owned()
        };
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| format!("cannot build an HTTP client: {e}"))?;
        Ok(Endpoint {
            identity: base.clone(),
            base,
            api_key,
            http,
        })
    }

    /// The same endpoint, known to the response cache as `identity`.
    pub fn with_identity(mut self, identity: &str) -> Endpoint {
        self.identity = identity.to_owned();
        self
    }

    /// Checks that the endpoint answers (`GET /models`) and takes the key, so that a wrong URL
    /// or key fails the run at once instead of failing every case. Any other answer will do:
    /// not every compatible server lists its models.
    pub async fn probe(&self) -> Result<(), String> {
        let mut request = self.http.get(format!("{}/models", self.base));
        if let Some(key) = &self.api_key {
            request = request.bearer_auth(key.expose_secret());
        }
        match request.send().await {
            Ok(r) if matches!(r.status().as_u16(), 401 | 403) => Err(format!(
                "{} refused the API key ({}): set --api-key or PASARELA_EVAL_API_KEY",
                self.base,
                r.status()
            )),
            Ok(_) => Ok(()),
            Err(e) => Err(format!("{} is unreachable: {}", self.base, error_chain(&e))),
        }
    }

    /// POSTs `body` to `path` (`/chat/completions`), retrying as the module says.
    pub async fn post(&self, path: &str, body: &Value, pace: &Pace) -> Result<Answer, String> {
        let url = format!("{}{path}", self.base);
        let mut last_error = String::new();
        for attempt in 0..ATTEMPTS {
            let slot = pace.slot().await;
            let mut request = self.http.post(&url).json(body);
            if let Some(key) = &self.api_key {
                request = request.bearer_auth(key.expose_secret());
            }
            let started = Instant::now();
            let response = match request.send().await {
                Ok(r) => r,
                Err(e) => {
                    drop(slot);
                    last_error = format!("{url}: {}", error_chain(&e));
                    tokio::time::sleep(backoff(attempt)).await;
                    continue;
                }
            };
            let status = response.status();
            let retry_after = response
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<f64>().ok())
                .filter(|s| s.is_finite() && *s >= 0.0)
                .map(|s| Duration::from_secs_f64(s).min(MAX_RETRY_AFTER));
            let deployment = response
                .headers()
                .get("x-pasarela-deployment")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let text = match response.text().await {
                Ok(t) => t,
                Err(e) => {
                    drop(slot);
                    last_error = format!("{url}: reading the answer: {}", error_chain(&e));
                    tokio::time::sleep(backoff(attempt)).await;
                    continue;
                }
            };
            let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
            drop(slot);
            if status.is_success() {
                pace.success();
                let body = serde_json::from_str(&text)
                    .map_err(|e| format!("{url} answered {status} with invalid JSON: {e}"))?;
                return Ok(Answer {
                    body,
                    deployment,
                    latency_ms,
                });
            }
            last_error = format!("{url} answered {status}: {}", error_message(&text));
            match status.as_u16() {
                429 => pace.throttled(retry_after.unwrap_or(DEFAULT_RETRY_AFTER)),
                502..=504 => tokio::time::sleep(retry_after.unwrap_or(backoff(attempt))).await,
                _ => return Err(last_error),
            }
        }
        Err(format!("{last_error} (gave up after {ATTEMPTS} attempts)"))
    }
}

/// Exponential back-off from 250 ms, at most 8 s.
fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(250u64.saturating_mul(1 << attempt.min(5)))
}

/// The message of an OpenAI error envelope, else the text itself (shortened).
fn error_message(text: &str) -> String {
    let from_envelope = serde_json::from_str::<Value>(text).ok().and_then(|v| {
        v.pointer("/error/message")
            .and_then(Value::as_str)
            .map(str::to_owned)
    });
    from_envelope.unwrap_or_else(|| text.chars().take(300).collect())
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// Answers kept on disk by request, so that re-running a suite whose requests have not changed
/// makes no calls. Only successful answers are kept.
pub struct ResponseCache {
    dir: PathBuf,
}

impl ResponseCache {
    pub fn new(dir: &Path) -> ResponseCache {
        ResponseCache {
            dir: dir.to_owned(),
        }
    }

    /// The key: the endpoint's identity, the path and the whole request body.
    fn path_for(&self, endpoint: &Endpoint, path: &str, body: &Value) -> PathBuf {
        let mut hash = Sha256::new();
        hash.update(endpoint.identity.as_bytes());
        hash.update(b"\n");
        hash.update(path.as_bytes());
        hash.update(b"\n");
        hash.update(body.to_string().as_bytes());
        let key = hex::encode(hash.finalize());
        self.dir.join(&key[..2]).join(format!("{key}.json"))
    }

    /// A cached answer; an unreadable entry counts as absent.
    pub fn get(&self, endpoint: &Endpoint, path: &str, body: &Value) -> Option<Answer> {
        let text = std::fs::read_to_string(self.path_for(endpoint, path, body)).ok()?;
        serde_json::from_str(&text).ok()
    }

    /// Keeps `answer`; a failure to write is logged, not fatal (the run has its answer).
    pub fn put(&self, endpoint: &Endpoint, path: &str, body: &Value, answer: &Answer) {
        let file = self.path_for(endpoint, path, body);
        let write = || -> std::io::Result<()> {
            if let Some(dir) = file.parent() {
                std::fs::create_dir_all(dir)?;
            }
            // Written whole then renamed, so a concurrent reader never sees half an entry.
            let tmp = file.with_extension(format!("tmp{}", std::process::id()));
            std::fs::write(&tmp, serde_json::to_vec(answer)?)?;
            std::fs::rename(&tmp, &file)
        };
        if let Err(e) = write() {
            tracing::warn!(path = %file.display(), error = %e, "cannot write to the eval response cache");
        }
    }
}
