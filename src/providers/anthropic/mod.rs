//! Anthropic's Messages API (placeholder while the translation is written).

use std::time::Duration;

use async_trait::async_trait;
use secrecy::SecretString;

use super::{ChatStream, CompletionStream, Provider, ProviderError};
use crate::openai::chat::{ChatCompletion, ChatCompletionRequest};
use crate::openai::completions::{Completion, CompletionRequest};
use crate::openai::embeddings::{EmbeddingRequest, EmbeddingResponse};

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
}

#[async_trait]
impl Provider for Anthropic {
    async fn chat(&self, _req: ChatCompletionRequest) -> Result<ChatCompletion, ProviderError> {
        Err(ProviderError::Unsupported("pending".into()))
    }
    async fn chat_stream(&self, _req: ChatCompletionRequest) -> Result<ChatStream, ProviderError> {
        Err(ProviderError::Unsupported("pending".into()))
    }
    async fn completions(&self, _req: CompletionRequest) -> Result<Completion, ProviderError> {
        Err(ProviderError::Unsupported("pending".into()))
    }
    async fn completions_stream(
        &self,
        _req: CompletionRequest,
    ) -> Result<CompletionStream, ProviderError> {
        Err(ProviderError::Unsupported("pending".into()))
    }
    async fn embeddings(&self, _req: EmbeddingRequest) -> Result<EmbeddingResponse, ProviderError> {
        Err(ProviderError::Unsupported("pending".into()))
    }
}
