//! The transport-free core: validate a request, find its route, call a deployment with
//! retries, weighted load balancing and fallbacks, and hand back a response or a stream.
//! Callable from the HTTP server, the CLI and tests alike.
//!
//! Must not contain HTTP types: it speaks in OpenAI wire types and `GatewayError`.

mod accounting;
mod error;
pub mod prompt;
mod route;
mod validate;

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::{StreamExt, stream};
use serde::Serialize;

pub use error::GatewayError;
pub use route::{Deployment, Route};

use crate::config::{Config, ConfigError};
use crate::engine::local_models::{LocalModel, LocalModels};
use crate::openai::Extra;
use crate::openai::chat::{ChatCompletion, ChatCompletionRequest};
use crate::openai::completions::{Completion, CompletionRequest};
use crate::openai::embeddings::{EmbeddingRequest, EmbeddingResponse};
use crate::openai::models::Model;
use crate::providers::local::{LocalChat, LocalEmbedding};
use crate::providers::{self, ChatStream, CompletionStream, Provider, ProviderError};
use crate::telemetry::{Exchange, UpstreamCall, UpstreamSpan, names};
use opentelemetry::context::FutureExt as _;

/// A response or a stream of chunks, as the client asked.
pub enum Reply<T, S> {
    Complete(T),
    Stream(S),
}

pub type ChatReply = Reply<ChatCompletion, ChatStream>;
pub type CompletionReply = Reply<Completion, CompletionStream>;

/// A result and the deployment that produced it.
pub struct Served<T> {
    pub value: T,
    pub deployment: String,
}

#[derive(Debug)]
pub struct Gateway {
    routes: BTreeMap<String, Route>,
}

impl Gateway {
    /// Builds providers and routes from a validated config, reading provider secrets from the
    /// environment; no local models.
    pub fn from_config(config: &Config) -> Result<Self, ConfigError> {
        Self::new(config, &LocalModels::default())
    }

    /// Routes for the configured remote providers, and one route per loaded local model.
    pub fn new(config: &Config, local: &LocalModels) -> Result<Self, ConfigError> {
        let secrets = config.provider_secrets()?;
        let mut clients: HashMap<Duration, reqwest::Client> = HashMap::new();
        let mut routes = BTreeMap::new();
        for (name, rc) in &config.routes {
            let mut deployments = Vec::with_capacity(rc.deployments.len());
            for (i, dc) in rc.deployments.iter().enumerate() {
                let pc =
                    config
                        .providers
                        .get(&dc.provider)
                        .ok_or_else(|| ConfigError::Invalid {
                            origin: config.origin.clone(),
                            key: format!("routes.{name}.deployments[{i}].provider"),
                            reason: format!("no provider named `{}`", dc.provider),
                        })?;
                let timeouts = dc.timeouts.or(*pc.timeouts());
                let client = match clients.get(&timeouts.connect()) {
                    Some(c) => c.clone(),
                    None => {
                        let c = providers::http_client(timeouts.connect()).map_err(|e| {
                            ConfigError::Invalid {
                                origin: config.origin.clone(),
                                key: format!("providers.{}", dc.provider),
                                reason: format!("cannot build an HTTP client: {e}"),
                            }
                        })?;
                        clients.insert(timeouts.connect(), c.clone());
                        c
                    }
                };
                let secret = secrets.get(&dc.provider).cloned().flatten();
                let provider = providers::from_config(pc, client, secret, timeouts.total())
                    .map_err(|reason| ConfigError::Invalid {
                        origin: config.origin.clone(),
                        key: format!("providers.{}.base_url", dc.provider),
                        reason,
                    })?;
                deployments.push(Deployment {
                    label: format!("{}/{}", dc.provider, dc.model),
                    provider,
                    kind: pc.kind(),
                    model: dc.model.clone(),
                    weight: dc.weight,
                });
            }
            let mut info = Extra::new();
            info.insert("kind".into(), "route".into());
            routes.insert(
                name.clone(),
                Route {
                    name: name.clone(),
                    deployments,
                    fallbacks: rc.fallbacks.clone(),
                    retry: rc.retry,
                    info,
                },
            );
        }
        for (name, model) in &local.models {
            let mut info = Extra::new();
            let provider: Arc<dyn Provider> = match model {
                LocalModel::Chat(m) => {
                    info.insert("kind".into(), "chat".into());
                    info.insert("context_length".into(), m.context_length().into());
                    Arc::new(LocalChat::new(m.clone()))
                }
                LocalModel::Embedding(e) => {
                    info.insert("kind".into(), "embedding".into());
                    info.insert("context_length".into(), e.max_tokens().into());
                    info.insert("dimensions".into(), e.dimensions().into());
                    Arc::new(LocalEmbedding::new(name, e.clone()))
                }
            };
            routes.insert(
                name.clone(),
                Route {
                    name: name.clone(),
                    deployments: vec![Deployment {
                        label: format!("local/{name}"),
                        provider,
                        kind: crate::telemetry::gen_ai::LOCAL_PROVIDER,
                        model: name.clone(),
                        weight: 1,
                    }],
                    fallbacks: Vec::new(),
                    // In-process: nothing transient to retry; a busy model answers 429 at once.
                    retry: crate::config::RetryConfig {
                        max_retries: 0,
                        ..crate::config::RetryConfig::default()
                    },
                    info,
                },
            );
        }
        Ok(Gateway { routes })
    }

    /// The models clients can ask for, as `/v1/models` lists them.
    pub fn models(&self) -> Vec<Model> {
        self.routes.values().map(model_entry).collect()
    }

    pub fn model(&self, id: &str) -> Option<Model> {
        self.routes.get(id).map(model_entry)
    }

    pub async fn chat(
        &self,
        mut req: ChatCompletionRequest,
        exchange: &Arc<Exchange>,
    ) -> Result<Served<ChatReply>, GatewayError> {
        validate::chat(&req)?;
        let model = req.model.clone();
        let stream = req.is_stream();
        accounting::chat_request(exchange, &req);
        if stream {
            let client_wants_usage = req.include_usage();
            req.stream_options = accounting::with_usage(req.stream_options.take());
            self.dispatch(&model, exchange, |p: Arc<dyn Provider>, upstream_model| {
                let mut req = req.clone();
                req.model = upstream_model;
                let exchange = exchange.clone();
                async move {
                    // Tracked only once committed: an attempt that fails before its first
                    // chunk is retried, not recorded.
                    let s = first_chunk_ready(p.chat_stream(req).await?).await?;
                    Ok(Reply::Stream(accounting::chat_stream(
                        s,
                        exchange,
                        client_wants_usage,
                    )))
                }
            })
            .await
        } else {
            let served = self
                .dispatch(&model, exchange, |p: Arc<dyn Provider>, upstream_model| {
                    let mut req = req.clone();
                    req.model = upstream_model;
                    async move { p.chat(req).await.map(Reply::Complete) }
                })
                .await?;
            if let Reply::Complete(c) = &served.value {
                accounting::chat(exchange, c);
            }
            Ok(served)
        }
    }

    pub async fn completions(
        &self,
        mut req: CompletionRequest,
        exchange: &Arc<Exchange>,
    ) -> Result<Served<CompletionReply>, GatewayError> {
        validate::completion(&req)?;
        let model = req.model.clone();
        let stream = req.is_stream();
        accounting::completion_request(exchange, &req);
        if stream {
            let client_wants_usage = req
                .stream_options
                .as_ref()
                .and_then(|o| o.include_usage)
                .unwrap_or(false);
            req.stream_options = accounting::with_usage(req.stream_options.take());
            self.dispatch(&model, exchange, |p: Arc<dyn Provider>, upstream_model| {
                let mut req = req.clone();
                req.model = upstream_model;
                let exchange = exchange.clone();
                async move {
                    // Tracked only once committed: an attempt that fails before its first
                    // chunk is retried, not recorded.
                    let s = first_chunk_ready(p.completions_stream(req).await?).await?;
                    Ok(Reply::Stream(accounting::completion_stream(
                        s,
                        exchange,
                        client_wants_usage,
                    )))
                }
            })
            .await
        } else {
            let served = self
                .dispatch(&model, exchange, |p: Arc<dyn Provider>, upstream_model| {
                    let mut req = req.clone();
                    req.model = upstream_model;
                    async move { p.completions(req).await.map(Reply::Complete) }
                })
                .await?;
            if let Reply::Complete(c) = &served.value {
                accounting::completion(exchange, c);
            }
            Ok(served)
        }
    }

    pub async fn embeddings(
        &self,
        req: EmbeddingRequest,
        exchange: &Arc<Exchange>,
    ) -> Result<Served<EmbeddingResponse>, GatewayError> {
        validate::embedding(&req)?;
        let model = req.model.clone();
        exchange.update(|r| r.model = Some(model.clone()));
        let served = self
            .dispatch(&model, exchange, |p: Arc<dyn Provider>, upstream_model| {
                let mut req = req.clone();
                req.model = upstream_model;
                async move { p.embeddings(req).await }
            })
            .await?;
        accounting::embeddings(exchange, &served.value);
        Ok(served)
    }

    /// Tries the route for `model`, then its fallbacks in order, until one succeeds or an error
    /// arrives that another deployment would not fix.
    async fn dispatch<T, F, Fut>(
        &self,
        model: &str,
        exchange: &Exchange,
        call: F,
    ) -> Result<Served<T>, GatewayError>
    where
        F: Fn(Arc<dyn Provider>, String) -> Fut,
        Fut: Future<Output = Result<T, ProviderError>>,
    {
        let route = self
            .routes
            .get(model)
            .ok_or_else(|| GatewayError::ModelNotFound(model.to_owned()))?;
        let chain =
            std::iter::once(route).chain(route.fallbacks.iter().filter_map(|f| self.routes.get(f)));
        let mut last = None;
        for route in chain {
            match self.try_route(route, exchange, &call).await {
                Ok((served, kind)) => {
                    exchange.update(|r| {
                        r.deployment = Some(served.deployment.clone());
                        r.provider = Some(kind);
                    });
                    return Ok(served);
                }
                Err(e) if e.should_fall_back() => {
                    tracing::warn!(route = %route.name, error = %e, "route failed; trying the next fallback");
                    last = Some(e);
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(last
            .unwrap_or_else(|| ProviderError::Connect("no deployment was tried".into()))
            .into())
    }

    /// Attempts on one route: the first, then up to `max_retries` more on retryable errors,
    /// each after a back-off and preferably on a deployment not tried yet.
    async fn try_route<T, F, Fut>(
        &self,
        route: &Route,
        exchange: &Exchange,
        call: &F,
    ) -> Result<(Served<T>, &'static str), ProviderError>
    where
        F: Fn(Arc<dyn Provider>, String) -> Fut,
        Fut: Future<Output = Result<T, ProviderError>>,
    {
        let clock = exchange.clock();
        let mut tried = Vec::new();
        let mut attempt = 0;
        loop {
            let index = route.pick(&tried);
            let Some(d) = route.deployments.get(index) else {
                return Err(ProviderError::Connect("route has no deployments".into()));
            };
            let span = exchange.trace().map(|t| {
                t.upstream(&UpstreamCall {
                    provider: d.kind,
                    deployment: &d.label,
                    model: &d.model,
                    attempt,
                })
            });
            let attempt_call = call(d.provider.clone(), d.model.clone());
            // The attempt's span is current while it runs: providers send it on upstream.
            let result = match span.as_ref().and_then(UpstreamSpan::context) {
                Some(cx) => clock.time(attempt_call.with_context(cx.clone())).await,
                None => clock.time(attempt_call).await,
            };
            let outcome = match &result {
                Ok(_) => "ok",
                Err(e) if e.is_retryable() => "retryable_error",
                Err(_) => "error",
            };
            metrics::counter!(names::UPSTREAM_ATTEMPTS, "route" => route.name.clone(),
                "deployment" => d.label.clone(), "outcome" => outcome)
            .increment(1);
            let err = match result {
                Ok(value) => {
                    if let Some(span) = span {
                        span.succeeded(exchange, exchange.snapshot().stream);
                    }
                    let served = Served {
                        value,
                        deployment: d.label.clone(),
                    };
                    return Ok((served, d.kind));
                }
                Err(e) => e,
            };
            if let Some(span) = span {
                span.failed(&err.error_type(), err.to_string());
            }
            if !err.is_retryable() || attempt >= route.retry.max_retries {
                return Err(err);
            }
            let Some(wait) = route::backoff(&route.retry, attempt, err.retry_after()) else {
                return Err(err);
            };
            tracing::info!(route = %route.name, deployment = %d.label, error = %err,
                wait_ms = wait.as_millis() as u64, "retrying upstream call");
            tried.push(index);
            attempt += 1;
            clock.time(tokio::time::sleep(wait)).await;
        }
    }
}

fn model_entry(route: &Route) -> Model {
    Model {
        id: route.name.clone(),
        object: "model".into(),
        created: 0,
        owned_by: "pasarela".into(),
        extra: route.info.clone(),
    }
}

/// Waits for a stream's first item so that a failure before anything reached the client can
/// still be retried or fall back; afterwards the stream is committed.
async fn first_chunk_ready<T: Serialize + Send + 'static>(
    mut s: std::pin::Pin<Box<dyn futures::Stream<Item = Result<T, ProviderError>> + Send>>,
) -> Result<
    std::pin::Pin<Box<dyn futures::Stream<Item = Result<T, ProviderError>> + Send>>,
    ProviderError,
> {
    match s.next().await {
        None => Err(ProviderError::StreamBroken(
            "upstream stream was empty".into(),
        )),
        Some(Err(e)) => Err(e),
        Some(Ok(first)) => Ok(stream::once(async move { Ok(first) }).chain(s).boxed()),
    }
}
