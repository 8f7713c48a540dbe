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
    base_url: String,
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
    ) -> Self {
        OpenAiCompat {
            client,
            base_url: base_url.trim_end_matches('/').to_owned(),
            api_key,
            timeout,
        }
    }

    async fn send<B: Serialize + Sync>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<reqwest::Response, ProviderError> {
        let mut req = self
            .client
            .post(format!("{}{path}", self.base_url))
            .timeout(self.timeout)
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
        path: &str,
        body: &B,
    ) -> Result<T, ProviderError> {
        let resp = self.send(path, body).await?;
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
        self.json("/chat/completions", &req).await
    }

    async fn chat_stream(
        &self,
        mut req: ChatCompletionRequest,
    ) -> Result<ChatStream, ProviderError> {
        req.stream = Some(true);
        let resp = self.send("/chat/completions", &req).await?;
        Ok(openai_json_stream(resp).boxed())
    }

    async fn completions(&self, mut req: CompletionRequest) -> Result<Completion, ProviderError> {
        req.stream = None;
        req.stream_options = None;
        self.json("/completions", &req).await
    }

    async fn completions_stream(
        &self,
        mut req: CompletionRequest,
    ) -> Result<CompletionStream, ProviderError> {
        req.stream = Some(true);
        let resp = self.send("/completions", &req).await?;
        Ok(openai_json_stream(resp).boxed())
    }

    async fn embeddings(&self, req: EmbeddingRequest) -> Result<EmbeddingResponse, ProviderError> {
        self.json("/embeddings", &req).await
    }
}
