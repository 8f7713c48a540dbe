//! Anthropic's Messages API behind the `Provider` trait: the HTTP exchange with
//! `POST {base_url}/v1/messages` (`x-api-key`, `anthropic-version`). The wire translation lives
//! in `request` (OpenAI → Anthropic), `response` (Anthropic → OpenAI) and `stream` (streamed
//! events → chunks).
//!
//! Must not contain routing policy: retries and fallbacks are `gateway`'s.

mod request;
mod response;
mod stream;

use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use secrecy::{ExposeSecret, SecretString};

use super::sse::events;
use super::{ChatStream, CompletionStream, Provider, ProviderError, status_error};
use crate::openai::chat::{ChatCompletion, ChatCompletionRequest};
use crate::openai::completions::{Completion, CompletionRequest};
use crate::openai::embeddings::{EmbeddingRequest, EmbeddingResponse};
use crate::openai::unix_now;

#[derive(Debug)]
pub struct Anthropic {
    client: reqwest::Client,
    base_url: String,
    api_key: Option<SecretString>,
    version: String,
    default_max_tokens: u32,
    timeout: Duration,
}

impl Anthropic {
    /// `base_url` ends before `/v1/messages`, e.g. `https://api.anthropic.com`.
    pub fn new(
        client: reqwest::Client,
        base_url: &str,
        api_key: Option<SecretString>,
        version: &str,
        default_max_tokens: u32,
        timeout: Duration,
    ) -> Self {
        Anthropic {
            client,
            base_url: base_url.trim_end_matches('/').to_owned(),
            api_key,
            version: version.to_owned(),
            default_max_tokens,
            timeout,
        }
    }

    /// Sends a Messages request; a non-2xx answer becomes `ProviderError::Status`, with
    /// Anthropic's own message (its error body has OpenAI's `error.message`/`error.type`).
    async fn send(
        &self,
        body: &request::MessagesRequest,
    ) -> Result<reqwest::Response, ProviderError> {
        let mut req = self
            .client
            .post(format!("{}/v1/messages", self.base_url))
            .timeout(self.timeout)
            .header("anthropic-version", &self.version)
            .headers(crate::telemetry::propagation_headers())
            .json(body);
        if let Some(key) = &self.api_key {
            req = req.header("x-api-key", key.expose_secret());
        }
        let resp = req.send().await.map_err(ProviderError::from_reqwest)?;
        if resp.status().is_success() {
            Ok(resp)
        } else {
            Err(status_error(resp).await)
        }
    }
}

#[async_trait]
impl Provider for Anthropic {
    async fn chat(&self, req: ChatCompletionRequest) -> Result<ChatCompletion, ProviderError> {
        let body = request::translate(&req, self.default_max_tokens, false)?;
        let resp = self.send(&body).await?;
        let bytes = resp.bytes().await.map_err(ProviderError::from_reqwest)?;
        let message: response::MessageResponse = serde_json::from_slice(&bytes)
            .map_err(|e| ProviderError::Protocol(format!("unexpected message shape: {e}")))?;
        Ok(response::to_completion(message, unix_now()))
    }

    async fn chat_stream(&self, req: ChatCompletionRequest) -> Result<ChatStream, ProviderError> {
        let body = request::translate(&req, self.default_max_tokens, true)?;
        let resp = self.send(&body).await?;
        let data = events(resp).map(|event| event.map(|e| e.data));
        let translator = stream::Translator::new(req.include_usage(), unix_now());
        Ok(stream::chunks(data, translator).boxed())
    }

    async fn completions(&self, _req: CompletionRequest) -> Result<Completion, ProviderError> {
        Err(no_completions())
    }

    async fn completions_stream(
        &self,
        _req: CompletionRequest,
    ) -> Result<CompletionStream, ProviderError> {
        Err(no_completions())
    }

    async fn embeddings(&self, _req: EmbeddingRequest) -> Result<EmbeddingResponse, ProviderError> {
        Err(ProviderError::Unsupported(
            "embeddings are not supported by the anthropic provider: Anthropic has no \
             embeddings endpoint"
                .into(),
        ))
    }
}

fn no_completions() -> ProviderError {
    ProviderError::Unsupported(
        "legacy completions are not supported by the anthropic provider: Anthropic has no \
         completions endpoint; use /v1/chat/completions"
            .into(),
    )
}
