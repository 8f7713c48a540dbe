//! Providers: the `Provider` trait and its implementations, one per upstream wire protocol.
//! `openai_compat` speaks to any OpenAI-compatible server; `anthropic` translates to and from
//! the Messages API.
//!
//! Must not contain routing policy (retries, fallbacks, weights): that is `gateway`'s.

pub mod anthropic;
pub mod local;
pub mod openai_compat;
mod sse;

use std::fmt;
use std::pin::Pin;
use std::time::Duration;

use async_trait::async_trait;
use futures::Stream;

use crate::openai::chat::{ChatCompletion, ChatCompletionChunk, ChatCompletionRequest};
use crate::openai::completions::{Completion, CompletionRequest};
use crate::openai::embeddings::{EmbeddingRequest, EmbeddingResponse};
use crate::openai::error::ErrorBody;

pub type ChatStream =
    Pin<Box<dyn Stream<Item = Result<ChatCompletionChunk, ProviderError>> + Send>>;
pub type CompletionStream = Pin<Box<dyn Stream<Item = Result<Completion, ProviderError>> + Send>>;

/// One upstream deployment: a protocol, an endpoint, credentials and timeouts. Requests arrive
/// with `model` already set to the upstream's model name.
#[async_trait]
pub trait Provider: Send + Sync + fmt::Debug {
    async fn chat(&self, req: ChatCompletionRequest) -> Result<ChatCompletion, ProviderError>;

    /// Resolves once the upstream has accepted the request (status 2xx); chunks follow.
    async fn chat_stream(&self, req: ChatCompletionRequest) -> Result<ChatStream, ProviderError>;

    async fn completions(&self, req: CompletionRequest) -> Result<Completion, ProviderError>;

    async fn completions_stream(
        &self,
        req: CompletionRequest,
    ) -> Result<CompletionStream, ProviderError>;

    async fn embeddings(&self, req: EmbeddingRequest) -> Result<EmbeddingResponse, ProviderError>;
}

/// Why an upstream call failed. `is_retryable` drives retries and fallbacks.
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    #[error("could not connect to upstream: {0}")]
    Connect(String),
    #[error("upstream did not answer in time")]
    Timeout,
    #[error("upstream answered {status}: {}", body.message)]
    Status {
        status: u16,
        body: ErrorBody,
        retry_after: Option<Duration>,
    },
    #[error("upstream sent something unreadable: {0}")]
    Protocol(String),
    #[error("upstream stream broke: {0}")]
    StreamBroken(String),
    #[error("{0}")]
    Unsupported(String),
    /// A failure inside the gateway itself (a local model's inference).
    #[error("internal error: {0}")]
    Internal(String),
}

impl ProviderError {
    /// Transient failures worth another attempt, here or at a fallback.
    pub fn is_retryable(&self) -> bool {
        match self {
            ProviderError::Connect(_) | ProviderError::Timeout | ProviderError::StreamBroken(_) => {
                true
            }
            ProviderError::Status { status, .. } => {
                matches!(status, 408 | 409 | 429) || *status >= 500
            }
            ProviderError::Protocol(_)
            | ProviderError::Unsupported(_)
            | ProviderError::Internal(_) => false,
        }
    }

    /// Failures of this deployment rather than of the request: worth a fallback, not a retry
    /// of the same deployment. An upstream 401/403 means our credentials are wrong, not the
    /// client's.
    pub fn should_fall_back(&self) -> bool {
        self.is_retryable()
            || matches!(
                self,
                ProviderError::Status {
                    status: 401 | 403,
                    ..
                }
            )
    }

    /// A short, low-cardinality name for the failure (`error.type` on spans): the status code
    /// for an upstream's HTTP error, else the kind of failure.
    pub fn error_type(&self) -> std::borrow::Cow<'static, str> {
        match self {
            ProviderError::Status { status, .. } => status.to_string().into(),
            ProviderError::Connect(_) => "connect_error".into(),
            ProviderError::Timeout => "timeout".into(),
            ProviderError::Protocol(_) => "protocol_error".into(),
            ProviderError::StreamBroken(_) => "stream_broken".into(),
            ProviderError::Unsupported(_) => "unsupported".into(),
            ProviderError::Internal(_) => "internal_error".into(),
        }
    }

    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ProviderError::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    pub(crate) fn from_reqwest(err: reqwest::Error) -> Self {
        if err.is_timeout() {
            ProviderError::Timeout
        } else if err.is_connect() {
            ProviderError::Connect(crate::error_chain(&err))
        } else if err.is_decode() {
            ProviderError::Protocol(crate::error_chain(&err))
        } else if err.is_body() {
            ProviderError::StreamBroken(crate::error_chain(&err))
        } else {
            ProviderError::Connect(crate::error_chain(&err))
        }
    }
}

/// Reads `Retry-After` as seconds (the form OpenAI and Anthropic send) or `retry-after-ms`.
pub(crate) fn parse_retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    if let Some(ms) = headers
        .get("retry-after-ms")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<f64>().ok())
    {
        return Some(Duration::from_secs_f64(ms.max(0.0) / 1000.0));
    }
    headers
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|s| s.is_finite())
        .map(|s| Duration::from_secs_f64(s.max(0.0)))
}

/// Turns a non-2xx upstream answer into a `ProviderError::Status`, keeping the upstream's own
/// error message when it sent one in a recognisable shape.
pub(crate) async fn status_error(resp: reqwest::Response) -> ProviderError {
    let status = resp.status().as_u16();
    let retry_after = parse_retry_after(resp.headers());
    let text = resp.text().await.unwrap_or_default();
    let body = serde_json::from_str::<serde_json::Value>(&text)
        .ok()
        .and_then(|v| {
            let e = v.get("error")?;
            let message = e.get("message")?.as_str()?.to_owned();
            let kind = e
                .get("type")
                .and_then(|t| t.as_str())
                .unwrap_or("upstream_error")
                .to_owned();
            Some(ErrorBody {
                message,
                kind,
                param: e.get("param").and_then(|p| p.as_str()).map(str::to_owned),
                code: e.get("code").and_then(|c| c.as_str()).map(str::to_owned),
            })
        })
        .unwrap_or_else(|| ErrorBody {
            message: format!(
                "upstream answered HTTP {status}: {}",
                text.chars().take(200).collect::<String>()
            ),
            kind: "upstream_error".into(),
            param: None,
            code: None,
        });
    ProviderError::Status {
        status,
        body,
        retry_after,
    }
}

/// An HTTP client for upstream calls. Clients are shared between deployments with the same
/// connect timeout so that they share connection pools.
pub fn http_client(connect_timeout: Duration) -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder()
        .connect_timeout(connect_timeout)
        .tcp_nodelay(true)
        .pool_idle_timeout(Duration::from_secs(90))
        .user_agent(concat!("pasarela/", env!("CARGO_PKG_VERSION")))
        .build()
}

/// The provider a config entry describes; an error says what in the entry is unusable.
pub fn from_config(
    config: &crate::config::ProviderConfig,
    client: reqwest::Client,
    api_key: Option<secrecy::SecretString>,
    timeout: Duration,
) -> Result<std::sync::Arc<dyn Provider>, String> {
    use crate::config::ProviderConfig;
    Ok(match config {
        ProviderConfig::Openai(c) => std::sync::Arc::new(openai_compat::OpenAiCompat::new(
            client,
            &c.base_url,
            api_key,
            timeout,
        )?),
        ProviderConfig::Anthropic(c) => std::sync::Arc::new(anthropic::Anthropic::new(
            client,
            &c.base_url,
            api_key,
            &c.version,
            c.default_max_tokens,
            timeout,
        )),
    })
}
