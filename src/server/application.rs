//! `Application`: builds the gateway from config, binds its listener (port 0 in tests), and
//! serves until its shutdown token fires, then drains in-flight requests and streams.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::{AppState, app};
use crate::config::{Config, ConfigError};
use crate::engine::local_models::LocalModels;
use crate::engine::source::ModelDirs;
use crate::gateway::Gateway;
use crate::limits::{Accounting, ApiKeyHash, ApiKeys, PerIp, Prices, SharedLimits, VirtualKeys};
use crate::prompts::Registry;
use crate::store::Store;
use crate::telemetry::request_log::{LogWriter, RequestLog};
use crate::telemetry::{Metrics, Tracing};

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Model(#[from] crate::engine::EngineError),
    #[error("cannot open the store: {0}")]
    Store(#[from] crate::store::StoreError),
    #[error("cannot start the prompt registry: {0}")]
    Registry(#[from] crate::prompts::RegistryError),
    #[error("cannot load the virtual keys: {0}")]
    Keys(#[from] crate::limits::KeysError),
    #[error("cannot share limits through Redis: {0}")]
    SharedLimits(#[from] crate::limits::SharedError),
    #[error("cannot start the request log: {0}")]
    RequestLog(#[from] regex::Error),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

pub struct Application {
    listener: TcpListener,
    local_addr: SocketAddr,
    router: axum::Router,
    ready: Arc<AtomicBool>,
    shutdown: CancellationToken,
    grace: Duration,
    tracing: Tracing,
    log_writer: Option<LogWriter>,
}

impl Application {
    pub async fn build(config: Config) -> Result<Self, StartError> {
        // Before anything records a metric (the Redis gauge, at connect).
        let metrics = Metrics::global();
        let hashes = config
            .auth
            .api_key_hashes
            .iter()
            .filter_map(|h| ApiKeyHash::parse(h))
            .collect();
        let admin_hashes: Vec<ApiKeyHash> = config
            .auth
            .admin_key_hashes
            .iter()
            .filter_map(|h| ApiKeyHash::parse(h))
            .collect();
        let admin_keys = ApiKeys::new(admin_hashes.clone(), &config.admin_env_keys()?);
        // Admin keys open the API too: one key per operator is enough.
        let keys = ApiKeys::new(hashes, &config.auth_env_keys()?).with(&admin_keys);
        let store = Store::open(&config.store).await?;
        let registry = Arc::new(Registry::new(store.clone(), &config.prompts).await?);
        let shared = match &config.limits.redis_url {
            Some(url) => Some(
                SharedLimits::connect(
                    url,
                    &config.limits.redis_prefix,
                    config.limits.redis_timeout(),
                    config.limits.redis_lease(),
                )
                .await?,
            ),
            None => None,
        };
        let accounting = Accounting {
            prices: Prices::new(config.prices.clone()),
            default_output_tokens: config.limits.default_output_tokens,
            shared: shared.clone(),
        };
        let virtual_keys = Arc::new(VirtualKeys::load(store.clone(), accounting).await?);
        let shutdown = CancellationToken::new();
        if let Some(shared) = &shared {
            shared.spawn_tasks(&shutdown);
        }
        let (request_log, log_writer) =
            match RequestLog::start(&config.request_log, &store, &shutdown)? {
                Some((log, writer)) => (Some(log), Some(writer)),
                None => (None, None),
            };
        registry.spawn_refresher(shutdown.clone());
        virtual_keys.spawn_refresher(shutdown.clone());
        let per_ip = config
            .limits
            .per_ip_rpm
            .and_then(NonZeroU32::new)
            .map(|rpm| Arc::new(PerIp::per_minute(rpm)));
        if let Some(per_ip) = &per_ip {
            spawn_forgetter(per_ip.clone(), shutdown.clone());
        }
        let dirs = ModelDirs {
            models: config.engine.models_dir.clone(),
            hf_cache: config.engine.hf_cache_dir.clone(),
        };
        // Before the models: a bad tracing setting should fail at once, not after a load.
        let tracing = Tracing::start(&config.telemetry.otlp, &config.origin)?;
        let local = LocalModels::load(&config, &dirs).await?;
        let gateway = Gateway::new(&config, &local)?;

        let requested = config.server.listen;
        let addr = if keys.is_empty()
            && !config.server.allow_unauthenticated_remote
            && !requested.ip().is_loopback()
        {
            let loopback = match requested.ip() {
                IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
                IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::LOCALHOST),
            };
            tracing::warn!(requested = %requested, "no API keys configured: binding to loopback \
                only; configure [auth] keys (or set server.allow_unauthenticated_remote) to serve \
                other hosts");
            SocketAddr::new(loopback, requested.port())
        } else {
            requested
        };
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| StartError::Bind { addr, source })?;
        let local_addr = listener
            .local_addr()
            .map_err(|source| StartError::Bind { addr, source })?;
        if keys.is_empty() {
            tracing::warn!(%local_addr, "no API keys configured: /v1 routes accept any caller \
                that can reach this address");
        }

        let ready = Arc::new(AtomicBool::new(true));
        let state = AppState {
            gateway: Arc::new(gateway),
            keys: Arc::new(keys),
            admin_keys: Arc::new(admin_keys),
            virtual_keys,
            per_ip: per_ip.clone(),
            registry,
            ready: ready.clone(),
            metrics,
            request_log,
            tracing: tracing.clone(),
        };
        Ok(Application {
            listener,
            local_addr,
            router: app(state, config.server.max_body_bytes),
            ready,
            shutdown,
            grace: Duration::from_secs(config.server.shutdown_grace_secs),
            log_writer,
            tracing,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    pub fn port(&self) -> u16 {
        self.local_addr.port()
    }

    /// Cancelling this token starts a graceful shutdown.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Serves until the shutdown token is cancelled, then stops accepting connections, waits
    /// for in-flight requests and streams to finish, for at most the configured grace period.
    pub async fn run(self) -> std::io::Result<()> {
        tracing::info!(addr = %self.local_addr, "pasarela is listening");
        let token = self.shutdown.clone();
        let ready = self.ready.clone();
        // The peer address is kept for per-address limits.
        let service = self
            .router
            .into_make_service_with_connect_info::<SocketAddr>();
        let serve = axum::serve(self.listener, service).with_graceful_shutdown(async move {
            token.cancelled().await;
            ready.store(false, Ordering::Relaxed);
            tracing::info!("shutting down: draining in-flight requests");
        });
        let token = self.shutdown.clone();
        let grace = self.grace;
        let result = tokio::select! {
            result = serve.into_future() => result,
            () = async move { token.cancelled().await; tokio::time::sleep(grace).await } => {
                tracing::warn!(grace_secs = grace.as_secs(), "grace period over: closing remaining connections");
                Ok(())
            }
        };
        // The spans of the last requests, drained above, leave before the process does.
        self.tracing.shutdown().await;
        // Requests are over: what they logged is written before the process ends.
        if let Some(writer) = self.log_writer {
            writer.flush(LOG_FLUSH_LIMIT).await;
        }
        tracing::info!("shutdown complete");
        result
    }
}

/// How long a shutdown waits for the request log's last entries to be written.
const LOG_FLUSH_LIMIT: Duration = Duration::from_secs(10);

/// Forgets idle client addresses every minute, so that the per-address state stays small.
fn spawn_forgetter(per_ip: Arc<PerIp>, stop: CancellationToken) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(60));
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = tick.tick() => per_ip.forget_idle(),
            }
        }
    });
}
