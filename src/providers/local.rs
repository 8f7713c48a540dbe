//! Local models behind the `Provider` trait: OpenAI requests become prompts and sampling
//! parameters for `engine`, and its events become completions, chunks and embeddings.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine as _;
use futures::StreamExt;
use tokio::sync::mpsc::UnboundedReceiver;

use super::{ChatStream, CompletionStream, Provider, ProviderError};
use crate::engine::EngineError;
use crate::engine::chat::ChatModel;
use crate::engine::embedder::Embedder;
use crate::engine::sampler::SamplingParams;
use crate::engine::scheduler::{GenEvent, Generation};
use crate::engine::template::TemplateMessage;
use crate::openai::chat::{
    AssistantMessage, ChatChoice, ChatCompletion, ChatCompletionChunk, ChatCompletionRequest,
    ChunkChoice, ChunkDelta, ResponseFormat, Role, Usage,
};
use crate::openai::completions::{Completion, CompletionChoice, CompletionRequest, Prompt};
use crate::openai::embeddings::{
    Embedding, EmbeddingInput, EmbeddingRequest, EmbeddingResponse, EmbeddingUsage,
    EmbeddingVector, EncodingFormat,
};
use crate::openai::{Extra, unix_now};
use crate::telemetry::EngineSpans;

impl From<EngineError> for ProviderError {
    fn from(e: EngineError) -> Self {
        match e {
            EngineError::Busy { .. } => ProviderError::Status {
                status: 429,
                body: crate::openai::error::ErrorBody {
                    message: e.to_string(),
                    kind: "rate_limit_error".into(),
                    param: None,
                    code: Some("model_busy".into()),
                },
                // One decode step per sequence ahead is tens of milliseconds; a second is a
                // fair wait for a slot.
                retry_after: Some(Duration::from_secs(1)),
            },
            EngineError::InvalidRequest(m) | EngineError::Template(m) => {
                ProviderError::Unsupported(m)
            }
            other => ProviderError::Internal(other.to_string()),
        }
    }
}

fn refuse(what: &str, model: &str) -> ProviderError {
    ProviderError::Unsupported(format!(
        "{what} is not supported by the local model `{model}`"
    ))
}

fn completion_id(prefix: &str) -> String {
    use rand::RngCore;
    format!(
        "{prefix}-{:016x}{:08x}",
        rand::rng().next_u64(),
        rand::rng().next_u32()
    )
}

/// OpenAI's sampling fields, plus `top_k` (not OpenAI's, but vLLM and llama.cpp accept it).
fn sampling(
    temperature: Option<f64>,
    top_p: Option<f64>,
    seed: Option<i64>,
    presence: Option<f64>,
    frequency: Option<f64>,
    extra: &Extra,
) -> Result<SamplingParams, ProviderError> {
    let top_k = match extra.get("top_k") {
        None | Some(serde_json::Value::Null) => None,
        Some(v) => Some(v.as_u64().map(|k| k as usize).ok_or_else(|| {
            ProviderError::Unsupported("'top_k' must be a non-negative integer".into())
        })?),
    };
    Ok(SamplingParams {
        temperature: temperature.unwrap_or(1.0) as f32,
        top_p: top_p.unwrap_or(1.0) as f32,
        top_k,
        // The bits of the client's integer: negative seeds are as good as positive ones.
        seed: seed.map(|s| s as u64),
        presence_penalty: presence.unwrap_or(0.0) as f32,
        frequency_penalty: frequency.unwrap_or(0.0) as f32,
    })
}

#[derive(Debug)]
pub struct LocalChat {
    model: Arc<ChatModel>,
}

impl LocalChat {
    pub fn new(model: Arc<ChatModel>) -> Self {
        LocalChat { model }
    }

    fn name(&self) -> &str {
        self.model.name()
    }

    fn chat_generation(&self, req: &ChatCompletionRequest) -> Result<Generation, ProviderError> {
        if req.n.unwrap_or(1) > 1 {
            return Err(refuse("`n` above 1", self.name()));
        }
        if req.tools.as_ref().is_some_and(|t| !t.is_empty()) {
            return Err(refuse("tool calling", self.name()));
        }
        if matches!(
            req.response_format,
            Some(ResponseFormat::JsonObject | ResponseFormat::JsonSchema { .. })
        ) {
            return Err(refuse("a JSON `response_format`", self.name()));
        }
        if req.logprobs == Some(true) {
            return Err(refuse("`logprobs`", self.name()));
        }
        let mut messages = Vec::with_capacity(req.messages.len());
        for (i, m) in req.messages.iter().enumerate() {
            if let Some(crate::openai::chat::MessageContent::Parts(parts)) = &m.content
                && let Some(p) = parts.iter().find(|p| p.kind != "text")
            {
                return Err(ProviderError::Unsupported(format!(
                    "messages[{i}]: content of type `{}` is not supported by the local model `{}` (text only)",
                    p.kind,
                    self.name()
                )));
            }
            let role = match m.role {
                Role::System | Role::Developer => "system",
                Role::User => "user",
                Role::Assistant => "assistant",
                Role::Tool | Role::Function => "tool",
            };
            messages.push(TemplateMessage::new(
                role,
                m.content.as_ref().map(|c| c.text()).unwrap_or_default(),
            ));
        }
        let prompt = self.model.chat_prompt(&messages)?;
        Ok(Generation {
            prompt,
            sampling: sampling(
                req.temperature,
                req.top_p,
                req.seed,
                req.presence_penalty,
                req.frequency_penalty,
                &req.extra,
            )?,
            max_tokens: req
                .max_output_tokens()
                .map_or(self.model.default_max_tokens(), |m| m as usize),
            stop: req.stop.as_ref().map(|s| s.sequences()).unwrap_or_default(),
        })
    }

    fn completion_generation(&self, req: &CompletionRequest) -> Result<Generation, ProviderError> {
        if req.n.unwrap_or(1) > 1 {
            return Err(refuse("`n` above 1", self.name()));
        }
        if req.logprobs.is_some() || req.echo == Some(true) || req.suffix.is_some() {
            return Err(refuse("`logprobs`, `echo` and `suffix`", self.name()));
        }
        let prompt = match &req.prompt {
            Prompt::Text(t) => self.model.encode(t)?,
            Prompt::Tokens(ids) => ids.clone(),
            Prompt::Texts(v) if v.len() == 1 => self.model.encode(&v[0])?,
            Prompt::TokenLists(v) if v.len() == 1 => v[0].clone(),
            _ => return Err(refuse("more than one prompt per request", self.name())),
        };
        Ok(Generation {
            prompt,
            sampling: sampling(
                req.temperature,
                req.top_p,
                req.seed,
                req.presence_penalty,
                req.frequency_penalty,
                &req.extra,
            )?,
            max_tokens: req.max_tokens.map_or(16, |m| m as usize),
            stop: req.stop.as_ref().map(|s| s.sequences()).unwrap_or_default(),
        })
    }
}

/// Everything a finished generation produced.
struct Collected {
    text: String,
    finish: &'static str,
    usage: Usage,
}

/// Feeds the engine's phase reports and its end to the request's spans, if it is traced.
fn note_phase(spans: &mut Option<EngineSpans>, event: &GenEvent) {
    let Some(spans) = spans else { return };
    match event {
        GenEvent::Admitted(at) => spans.admitted(*at),
        GenEvent::Prefilled(at) => spans.prefilled(*at),
        GenEvent::Done {
            prompt_tokens,
            completion_tokens,
            ..
        } => spans.done(*prompt_tokens, *completion_tokens),
        GenEvent::Failed(e) => spans.failed(e),
        GenEvent::Text(_) => {}
    }
}

async fn collect(
    mut rx: UnboundedReceiver<GenEvent>,
    mut spans: Option<EngineSpans>,
) -> Result<Collected, ProviderError> {
    let mut text = String::new();
    while let Some(event) = rx.recv().await {
        note_phase(&mut spans, &event);
        match event {
            GenEvent::Admitted(_) | GenEvent::Prefilled(_) => {}
            GenEvent::Text(t) => text.push_str(&t),
            GenEvent::Done {
                finish,
                prompt_tokens,
                completion_tokens,
            } => {
                return Ok(Collected {
                    text,
                    finish: finish.as_str(),
                    usage: Usage::new(prompt_tokens as u64, completion_tokens as u64),
                });
            }
            GenEvent::Failed(e) => return Err(ProviderError::Internal(e)),
        }
    }
    Err(ProviderError::Internal(
        "the model stopped without finishing".into(),
    ))
}

type TextFn<T> = Arc<dyn Fn(String) -> T + Send + Sync>;
type EndFn<T> = Arc<dyn Fn(&'static str, Usage) -> Vec<T> + Send + Sync>;

struct EventState<T> {
    rx: Option<UnboundedReceiver<GenEvent>>,
    pending: std::collections::VecDeque<T>,
    /// Dropped with the stream, which ends the engine's spans.
    spans: Option<EngineSpans>,
}

/// Turns generation events into a stream of `T`s: `first` if any, `text(piece)` for each piece,
/// the items of `end(finish, usage)` at the end. A failed or vanished generation ends the
/// stream with an error, never cleanly.
fn event_stream<T: Send + 'static>(
    rx: UnboundedReceiver<GenEvent>,
    spans: Option<EngineSpans>,
    first: Option<T>,
    text: TextFn<T>,
    end: EndFn<T>,
) -> futures::stream::BoxStream<'static, Result<T, ProviderError>> {
    let state = EventState {
        rx: Some(rx),
        pending: first.into_iter().collect(),
        spans,
    };
    futures::stream::unfold(state, move |mut st| {
        let (text, end) = (text.clone(), end.clone());
        async move {
            loop {
                if let Some(item) = st.pending.pop_front() {
                    return Some((Ok(item), st));
                }
                let rx = st.rx.as_mut()?;
                let event = rx.recv().await;
                if let Some(e) = &event {
                    note_phase(&mut st.spans, e);
                }
                match event {
                    Some(GenEvent::Admitted(_) | GenEvent::Prefilled(_)) => {}
                    Some(GenEvent::Text(t)) => st.pending.push_back(text(t)),
                    Some(GenEvent::Done {
                        finish,
                        prompt_tokens,
                        completion_tokens,
                    }) => {
                        let usage = Usage::new(prompt_tokens as u64, completion_tokens as u64);
                        st.pending.extend(end(finish.as_str(), usage));
                        st.rx = None;
                    }
                    Some(GenEvent::Failed(e)) => {
                        st.rx = None;
                        return Some((Err(ProviderError::StreamBroken(e)), st));
                    }
                    None => {
                        st.rx = None;
                        let e = ProviderError::StreamBroken(
                            "the model stopped without finishing".into(),
                        );
                        return Some((Err(e), st));
                    }
                }
            }
        }
    })
    .boxed()
}

#[async_trait]
impl Provider for LocalChat {
    async fn chat(&self, req: ChatCompletionRequest) -> Result<ChatCompletion, ProviderError> {
        let generation = self.chat_generation(&req)?;
        let spans = EngineSpans::current();
        let done = collect(self.model.generate(generation)?, spans).await?;
        Ok(ChatCompletion {
            id: completion_id("chatcmpl"),
            object: "chat.completion".into(),
            created: unix_now(),
            model: self.name().to_owned(),
            choices: vec![ChatChoice {
                index: 0,
                message: AssistantMessage {
                    role: "assistant".into(),
                    content: Some(done.text),
                    tool_calls: None,
                    extra: Extra::new(),
                },
                finish_reason: Some(done.finish.into()),
                logprobs: None,
                extra: Extra::new(),
            }],
            usage: Some(done.usage),
            system_fingerprint: None,
            extra: Extra::new(),
        })
    }

    async fn chat_stream(&self, req: ChatCompletionRequest) -> Result<ChatStream, ProviderError> {
        let generation = self.chat_generation(&req)?;
        let include_usage = req.include_usage();
        let spans = EngineSpans::current();
        let rx = self.model.generate(generation)?;
        let (id, created, model) = (
            completion_id("chatcmpl"),
            unix_now(),
            self.name().to_owned(),
        );
        let chunk = move |delta: ChunkDelta,
                          finish: Option<&str>,
                          usage: Option<Usage>,
                          choices: bool| ChatCompletionChunk {
            id: id.clone(),
            object: "chat.completion.chunk".into(),
            created,
            model: model.clone(),
            choices: if choices {
                vec![ChunkChoice {
                    index: 0,
                    delta,
                    finish_reason: finish.map(str::to_owned),
                    logprobs: None,
                    extra: Extra::new(),
                }]
            } else {
                vec![]
            },
            usage,
            system_fingerprint: None,
            extra: Extra::new(),
        };
        let first = chunk(
            ChunkDelta {
                role: Some("assistant".into()),
                content: Some(String::new()),
                ..ChunkDelta::default()
            },
            None,
            None,
            true,
        );
        let text_chunk = chunk.clone();
        Ok(event_stream(
            rx,
            spans,
            Some(first),
            Arc::new(move |t| {
                text_chunk(
                    ChunkDelta {
                        content: Some(t),
                        ..ChunkDelta::default()
                    },
                    None,
                    None,
                    true,
                )
            }),
            Arc::new(move |finish, usage| {
                let mut out = vec![chunk(ChunkDelta::default(), Some(finish), None, true)];
                if include_usage {
                    out.push(chunk(ChunkDelta::default(), None, Some(usage), false));
                }
                out
            }),
        ))
    }

    async fn completions(&self, req: CompletionRequest) -> Result<Completion, ProviderError> {
        let generation = self.completion_generation(&req)?;
        let spans = EngineSpans::current();
        let done = collect(self.model.generate(generation)?, spans).await?;
        Ok(Completion {
            id: completion_id("cmpl"),
            object: "text_completion".into(),
            created: unix_now(),
            model: self.name().to_owned(),
            choices: vec![CompletionChoice {
                text: done.text,
                index: 0,
                logprobs: None,
                finish_reason: Some(done.finish.into()),
                extra: Extra::new(),
            }],
            usage: Some(done.usage),
            system_fingerprint: None,
            extra: Extra::new(),
        })
    }

    async fn completions_stream(
        &self,
        req: CompletionRequest,
    ) -> Result<CompletionStream, ProviderError> {
        let generation = self.completion_generation(&req)?;
        let include_usage = req
            .stream_options
            .as_ref()
            .and_then(|o| o.include_usage)
            .unwrap_or(false);
        let spans = EngineSpans::current();
        let rx = self.model.generate(generation)?;
        let (id, created, model) = (completion_id("cmpl"), unix_now(), self.name().to_owned());
        let piece = move |text: String,
                          finish: Option<&str>,
                          usage: Option<Usage>,
                          choices: bool| Completion {
            id: id.clone(),
            object: "text_completion".into(),
            created,
            model: model.clone(),
            choices: if choices {
                vec![CompletionChoice {
                    text,
                    index: 0,
                    logprobs: None,
                    finish_reason: finish.map(str::to_owned),
                    extra: Extra::new(),
                }]
            } else {
                vec![]
            },
            usage,
            system_fingerprint: None,
            extra: Extra::new(),
        };
        let text_piece = piece.clone();
        Ok(event_stream(
            rx,
            spans,
            None,
            Arc::new(move |t| text_piece(t, None, None, true)),
            Arc::new(move |finish, usage| {
                let mut out = vec![piece(String::new(), Some(finish), None, true)];
                if include_usage {
                    out.push(piece(String::new(), None, Some(usage), false));
                }
                out
            }),
        ))
    }

    async fn embeddings(&self, _req: EmbeddingRequest) -> Result<EmbeddingResponse, ProviderError> {
        Err(ProviderError::Unsupported(format!(
            "`{}` is a chat model; use an embedding model for /v1/embeddings",
            self.name()
        )))
    }
}

pub struct LocalEmbedding {
    name: String,
    embedder: Arc<Embedder>,
}

impl std::fmt::Debug for LocalEmbedding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalEmbedding")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl LocalEmbedding {
    pub fn new(name: &str, embedder: Arc<Embedder>) -> Self {
        LocalEmbedding {
            name: name.to_owned(),
            embedder,
        }
    }

    fn not_generative(&self) -> ProviderError {
        ProviderError::Unsupported(format!(
            "`{}` is an embedding model; it serves /v1/embeddings only",
            self.name
        ))
    }
}

#[async_trait]
impl Provider for LocalEmbedding {
    async fn chat(&self, _req: ChatCompletionRequest) -> Result<ChatCompletion, ProviderError> {
        Err(self.not_generative())
    }

    async fn chat_stream(&self, _req: ChatCompletionRequest) -> Result<ChatStream, ProviderError> {
        Err(self.not_generative())
    }

    async fn completions(&self, _req: CompletionRequest) -> Result<Completion, ProviderError> {
        Err(self.not_generative())
    }

    async fn completions_stream(
        &self,
        _req: CompletionRequest,
    ) -> Result<CompletionStream, ProviderError> {
        Err(self.not_generative())
    }

    async fn embeddings(&self, req: EmbeddingRequest) -> Result<EmbeddingResponse, ProviderError> {
        if let Some(d) = req.dimensions
            && d as usize != self.embedder.dimensions()
        {
            return Err(ProviderError::Unsupported(format!(
                "`{}` produces {} dimensions; `dimensions` {d} is not supported",
                self.name,
                self.embedder.dimensions()
            )));
        }
        let embedder = self.embedder.clone();
        let input = req.input;
        // CPU-heavy: off the async runtime, and under the process-wide inference lock.
        let (vectors, tokens) = tokio::task::spawn_blocking(move || {
            crate::engine::exclusive(|| match &input {
                EmbeddingInput::Text(t) => embedder.embed(&[t.as_str()]),
                EmbeddingInput::Texts(v) => {
                    embedder.embed(&v.iter().map(String::as_str).collect::<Vec<_>>())
                }
                EmbeddingInput::Tokens(ids) => embedder.embed_tokens(std::slice::from_ref(ids)),
                EmbeddingInput::TokenLists(lists) => embedder.embed_tokens(lists),
            })
        })
        .await
        .map_err(|e| ProviderError::Internal(format!("embedding task failed: {e}")))??;
        let base64 = req.encoding_format == Some(EncodingFormat::Base64);
        let data = vectors
            .into_iter()
            .enumerate()
            .map(|(i, v)| Embedding {
                object: "embedding".into(),
                index: i as u32,
                embedding: if base64 {
                    // OpenAI's base64 format: the little-endian bytes of the f32s.
                    let bytes: Vec<u8> = v.iter().flat_map(|f| f.to_le_bytes()).collect();
                    EmbeddingVector::Base64(base64::engine::general_purpose::STANDARD.encode(bytes))
                } else {
                    EmbeddingVector::Float(v)
                },
            })
            .collect();
        Ok(EmbeddingResponse {
            object: "list".into(),
            data,
            model: self.name.clone(),
            usage: EmbeddingUsage {
                prompt_tokens: tokens as u64,
                total_tokens: tokens as u64,
            },
            extra: Extra::new(),
        })
    }
}
