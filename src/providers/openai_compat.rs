//! Any OpenAI-compatible upstream (OpenAI, vLLM, Ollama, llama.cpp's server, another pasarela).
//! Requests are forwarded as typed, with unknown fields intact; only `model` is rewritten.

use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::sse::openai_json_stream;
use super::{ChatStream, CompletionStream, Provider, ProviderError, status_error};
use crate::openai::chat::{ChatCompletion, ChatCompletionRequest};
use crate::openai::completions::{Completion, CompletionRequest};
use crate::openai::embeddings::{EmbeddingRequest, EmbeddingResponse};

#[derive(Debug)]
pub struct OpenAiCompat {
    client: reqwest::Client,
    /// Endpoint URLs parsed once: parsing per request showed in the profile.
    chat_url: reqwest::Url,
    completions_url: reqwest::Url,
    embeddings_url: reqwest::Url,
    api_key: Option<SecretString>,
    timeout: Duration,
}

impl OpenAiCompat {
    /// `base_url` ends before the endpoint path, e.g. `https://api.openai.com/v1`.
    pub fn new(
        client: reqwest::Client,
        base_url: &str,
        api_key: Option<SecretString>,
        timeout: Duration,
    ) -> Result<Self, String> {
        let base = base_url.trim_end_matches('/');
        let url = |path: &str| {
            reqwest::Url::parse(&format!("{base}{path}"))
                .map_err(|e| format!("`{base}{path}`: {e}"))
        };
        Ok(OpenAiCompat {
            client,
            chat_url: url("/chat/completions")?,
            completions_url: url("/completions")?,
            embeddings_url: url("/embeddings")?,
            api_key,
            timeout,
        })
    }

    async fn send<B: Serialize + Sync>(
        &self,
        url: &reqwest::Url,
        body: &B,
    ) -> Result<reqwest::Response, ProviderError> {
        let mut req = self
            .client
            .post(url.clone())
            .timeout(self.timeout)
            .headers(crate::telemetry::propagation_headers())
            .json(body);
        if let Some(key) = &self.api_key {
            req = req.bearer_auth(key.expose_secret());
        }
        let resp = req.send().await.map_err(ProviderError::from_reqwest)?;
        if resp.status().is_success() {
            Ok(resp)
        } else {
            Err(status_error(resp).await)
        }
    }

    async fn json<B: Serialize + Sync, T: DeserializeOwned>(
        &self,
        url: &reqwest::Url,
        body: &B,
    ) -> Result<T, ProviderError> {
        let resp = self.send(url, body).await?;
        let bytes = resp.bytes().await.map_err(ProviderError::from_reqwest)?;
        serde_json::from_slice(&bytes)
            .map_err(|e| ProviderError::Protocol(format!("unexpected response shape: {e}")))
    }
}

#[async_trait]
impl Provider for OpenAiCompat {
    async fn chat(&self, mut req: ChatCompletionRequest) -> Result<ChatCompletion, ProviderError> {
        req.stream = None;
        req.stream_options = None;
        self.json(&self.chat_url, &req).await
    }

    async fn chat_stream(
        &self,
        mut req: ChatCompletionRequest,
    ) -> Result<ChatStream, ProviderError> {
        req.stream = Some(true);
        let resp = self.send(&self.chat_url, &req).await?;
        Ok(openai_json_stream(resp).boxed())
    }

    async fn completions(&self, mut req: CompletionRequest) -> Result<Completion, ProviderError> {
        req.stream = None;
        req.stream_options = None;
        self.json(&self.completions_url, &req).await
    }

    async fn completions_stream(
        &self,
        mut req: CompletionRequest,
    ) -> Result<CompletionStream, ProviderError> {
        req.stream = Some(true);
        let resp = self.send(&self.completions_url, &req).await?;
        Ok(openai_json_stream(resp).boxed())
    }

    async fn embeddings(&self, req: EmbeddingRequest) -> Result<EmbeddingResponse, ProviderError> {
        self.json(&self.embeddings_url, &req).await
    }
}
