//! The OTLP span pipeline: which collector, over which protocol (`[telemetry.otlp]` first, the
//! standard `OTEL_*` variables for what it leaves unset), and a batch processor that exports
//! from its own thread. A request only hands its finished spans to a bounded queue: a full
//! queue drops spans, it never makes a request wait.
//!
//! Must not contain what spans say (that is `gen_ai` and `request_trace`).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig, WithTonicConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, Sampler, SdkTracer, SdkTracerProvider,
};

use super::background::{ExportRuntime, LowPriority, OnRuntime};
use super::request_trace::RequestTrace;
use crate::config::{ConfigError, OtlpConfig, OtlpProtocol, check_otlp_endpoint};

/// The standard variables read here; the exporter also reads `OTEL_EXPORTER_OTLP_HEADERS`,
/// `…_TIMEOUT`, `…_COMPRESSION`, `…_INSECURE` (and their `TRACES_` forms) itself.
pub mod env {
    pub const ENDPOINT: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";
    pub const TRACES_ENDPOINT: &str = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT";
    pub const PROTOCOL: &str = "OTEL_EXPORTER_OTLP_PROTOCOL";
    pub const TRACES_PROTOCOL: &str = "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL";
    pub const SERVICE_NAME: &str = "OTEL_SERVICE_NAME";
    pub const SDK_DISABLED: &str = "OTEL_SDK_DISABLED";
    pub const TRACES_EXPORTER: &str = "OTEL_TRACES_EXPORTER";
    pub const BSP_MAX_QUEUE_SIZE: &str = "OTEL_BSP_MAX_QUEUE_SIZE";
    pub const BSP_SCHEDULE_DELAY: &str = "OTEL_BSP_SCHEDULE_DELAY";
}

/// Where the environment's settings come from in error messages.
const ENV_ORIGIN: &str = "environment";

/// Spans queued for export at most. A batch leaves whenever 512 are queued, so the queue only
/// has to hold what arrives while an export is in flight: at 1,000 requests/s and two spans
/// each, 4,096 is two seconds of a slow collector. The queue's memory is taken up front
/// (16,384 cost about 7 MB of idle RSS).
const MAX_QUEUE: usize = 4_096;
/// How long a finished span waits for its batch at most (the SDK's default is 5 s).
const EXPORT_DELAY: Duration = Duration::from_secs(1);
/// One HTTP export's limit when none is configured: OTLP's default.
const DEFAULT_EXPORT_TIMEOUT: Duration = Duration::from_secs(10);
/// Endpoints not traced: probes and scrapes arrive every few seconds and would bury the
/// requests worth seeing.
const UNTRACED: [&str; 3] = ["/healthz", "/readyz", "/metrics"];

/// The resolved settings of an enabled exporter.
#[derive(Debug, Clone, PartialEq)]
pub struct OtlpSettings {
    /// The URL the exporter posts to (HTTP: with `/v1/traces`).
    pub endpoint: String,
    pub protocol: OtlpProtocol,
    pub headers: HashMap<String, String>,
    pub service_name: String,
    pub sample_ratio: f64,
    pub record_content: bool,
    pub timeout: Option<Duration>,
}

impl OtlpSettings {
    /// The settings `config` and the environment (`env(name)`) give; `None` when export is off
    /// (no endpoint anywhere, `OTEL_SDK_DISABLED=true` or `OTEL_TRACES_EXPORTER=none`).
    pub fn resolve(
        config: &OtlpConfig,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Option<OtlpSettings>, ConfigError> {
        let var = |name: &str| {
            env(name)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        if var(env::SDK_DISABLED).is_some_and(|v| v.eq_ignore_ascii_case("true"))
            || var(env::TRACES_EXPORTER).is_some_and(|v| v.eq_ignore_ascii_case("none"))
        {
            return Ok(None);
        }
        let invalid = |key: &str, reason: String| ConfigError::Invalid {
            origin: ENV_ORIGIN.to_owned(),
            key: key.to_owned(),
            reason,
        };
        let protocol = match config.protocol {
            Some(p) => p,
            None => match [env::TRACES_PROTOCOL, env::PROTOCOL]
                .into_iter()
                .find_map(|name| var(name).map(|v| (name, v)))
            {
                None => OtlpProtocol::HttpProtobuf,
                Some((name, value)) => OtlpProtocol::parse(&value).ok_or_else(|| {
                    invalid(
                        name,
                        format!("`{value}`: expected `grpc` or `http/protobuf`"),
                    )
                })?,
            },
        };
        // A signal-specific URL is used as it is; a base URL gets the HTTP path.
        let (endpoint, is_base) = match (&config.endpoint, var(env::TRACES_ENDPOINT)) {
            (Some(e), _) => (e.clone(), true),
            (None, Some(e)) => {
                check_otlp_endpoint(&e).map_err(|r| invalid(env::TRACES_ENDPOINT, r))?;
                (e, false)
            }
            (None, None) => match var(env::ENDPOINT) {
                Some(e) => {
                    check_otlp_endpoint(&e).map_err(|r| invalid(env::ENDPOINT, r))?;
                    (e, true)
                }
                None => return Ok(None),
            },
        };
        let endpoint = if is_base && protocol == OtlpProtocol::HttpProtobuf {
            with_traces_path(&endpoint)
        } else {
            endpoint
        };
        let service_name = config
            .service_name
            .clone()
            .or_else(|| var(env::SERVICE_NAME))
            .unwrap_or_else(|| "pasarela".to_owned());
        Ok(Some(OtlpSettings {
            endpoint,
            protocol,
            headers: config.headers.clone().into_iter().collect(),
            service_name,
            sample_ratio: config.sample_ratio,
            record_content: config.record_content,
            timeout: config.timeout_ms.map(Duration::from_millis),
        }))
    }
}

/// `base` with `/v1/traces`, unless it ends with it already.
fn with_traces_path(base: &str) -> String {
    let base = base.trim_end_matches('/');
    if base.ends_with("/v1/traces") {
        base.to_owned()
    } else {
        format!("{base}/v1/traces")
    }
}

/// The process's (or one test app's) tracing: nothing when export is off, else the tracer
/// that request spans come from. Cloning is cheap.
#[derive(Clone, Default)]
pub struct Tracing {
    inner: Option<Arc<Inner>>,
}

struct Inner {
    provider: SdkTracerProvider,
    tracer: SdkTracer,
    record_content: bool,
    /// Where the exporter sends from; outlives the provider (fields drop in order).
    _runtime: ExportRuntime,
}

impl std::fmt::Debug for Tracing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tracing")
            .field("enabled", &self.inner.is_some())
            .finish()
    }
}

impl Tracing {
    /// Tracing as `config` and the process environment set it up. Must run inside the Tokio
    /// runtime that will serve requests: the exporters send on it.
    pub fn start(config: &OtlpConfig, origin: &str) -> Result<Tracing, ConfigError> {
        let settings = OtlpSettings::resolve(config, &|name| std::env::var(name).ok())?;
        match settings {
            None => Ok(Tracing::default()),
            Some(s) => Tracing::with_settings(&s, origin),
        }
    }

    pub fn with_settings(settings: &OtlpSettings, origin: &str) -> Result<Tracing, ConfigError> {
        let failed = |reason: String| ConfigError::Invalid {
            origin: origin.to_owned(),
            key: "telemetry.otlp".into(),
            reason: format!(
                "cannot build the OTLP exporter for {}: {reason}",
                settings.endpoint
            ),
        };
        let runtime = ExportRuntime::start().map_err(|e| failed(e.to_string()))?;
        let Some(handle) = runtime.handle() else {
            return Err(failed("the export runtime did not start".into()));
        };
        // gRPC's channel starts its connection task on the current runtime: make it ours.
        let entered = handle.enter();
        let exporter = match settings.protocol {
            OtlpProtocol::Grpc => {
                let mut headers = reqwest::header::HeaderMap::new();
                for (k, v) in &settings.headers {
                    // Checked by config validation; an odd one is skipped rather than fatal.
                    if let (Ok(k), Ok(v)) = (
                        reqwest::header::HeaderName::from_bytes(k.as_bytes()),
                        reqwest::header::HeaderValue::from_str(v),
                    ) {
                        headers.insert(k, v);
                    }
                }
                let metadata =
                    opentelemetry_otlp::tonic_types::metadata::MetadataMap::from_headers(headers);
                let mut b = opentelemetry_otlp::SpanExporter::builder()
                    .with_tonic()
                    .with_endpoint(settings.endpoint.clone())
                    .with_metadata(metadata);
                if let Some(t) = settings.timeout {
                    b = b.with_timeout(t);
                }
                b.build()
            }
            OtlpProtocol::HttpProtobuf => {
                // A hard cap, so that a collector that never answers cannot hold the export
                // thread (the exporter's own timeout is not applied to a client it is given).
                let client = reqwest::Client::builder()
                    .connect_timeout(Duration::from_secs(5))
                    .timeout(settings.timeout.unwrap_or(DEFAULT_EXPORT_TIMEOUT))
                    .user_agent(concat!("pasarela/", env!("CARGO_PKG_VERSION")))
                    .build()
                    .map_err(|e| failed(e.to_string()))?;
                let mut b = opentelemetry_otlp::SpanExporter::builder()
                    .with_http()
                    .with_protocol(Protocol::HttpBinary)
                    .with_endpoint(settings.endpoint.clone())
                    .with_headers(settings.headers.clone())
                    .with_http_client(OnRuntime {
                        client,
                        runtime: handle.clone(),
                    });
                if let Some(t) = settings.timeout {
                    b = b.with_timeout(t);
                }
                b.build()
            }
        }
        .map_err(|e| failed(e.to_string()))?;
        drop(entered);
        let mut batch = BatchConfigBuilder::default();
        if std::env::var_os(env::BSP_MAX_QUEUE_SIZE).is_none() {
            batch = batch.with_max_queue_size(MAX_QUEUE);
        }
        if std::env::var_os(env::BSP_SCHEDULE_DELAY).is_none() {
            batch = batch.with_scheduled_delay(EXPORT_DELAY);
        }
        let processor = BatchSpanProcessor::builder(LowPriority::new(exporter))
            .with_batch_config(batch.build())
            .build();
        let resource = Resource::builder()
            .with_service_name(settings.service_name.clone())
            .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
            .build();
        let provider = SdkTracerProvider::builder()
            .with_span_processor(processor)
            .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
                settings.sample_ratio,
            ))))
            .with_resource(resource)
            .build();
        let tracer = provider.tracer("pasarela");
        tracing::info!(endpoint = %settings.endpoint, protocol = ?settings.protocol,
            "exporting spans over OTLP");
        Ok(Tracing {
            inner: Some(Arc::new(Inner {
                provider,
                tracer,
                record_content: settings.record_content,
                _runtime: runtime,
            })),
        })
    }

    pub fn is_enabled(&self) -> bool {
        self.inner.is_some()
    }

    /// Opens the span of one HTTP request, continuing the client's trace when its headers carry
    /// a W3C `traceparent`; `None` when tracing is off.
    pub fn begin_request(
        &self,
        method: &str,
        endpoint: &str,
        headers: &axum::http::HeaderMap,
    ) -> Option<RequestTrace> {
        let inner = self.inner.as_ref()?;
        if UNTRACED.contains(&endpoint) {
            return None;
        }
        Some(RequestTrace::begin(
            &inner.tracer,
            inner.record_content,
            method,
            endpoint,
            headers,
        ))
    }

    /// Exports what is queued and stops the exporter; later spans are dropped. Blocks a
    /// thread while it waits, so it runs on the blocking pool, never on a runtime worker
    /// (on a single-threaded runtime that would stall the export it waits for).
    pub async fn shutdown(&self) {
        let Some(inner) = self.inner.clone() else {
            return;
        };
        let done = tokio::task::spawn_blocking(move || inner.provider.shutdown()).await;
        match done {
            Ok(Ok(())) => tracing::debug!("span export flushed"),
            Ok(Err(e)) => tracing::warn!(error = %e, "span export did not flush cleanly"),
            Err(e) => tracing::warn!(error = %e, "span export shutdown failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve(
        config: &OtlpConfig,
        vars: &[(&str, &str)],
    ) -> Result<Option<OtlpSettings>, ConfigError> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        OtlpSettings::resolve(config, &|name| vars.get(name).cloned())
    }

    #[test]
    fn off_without_an_endpoint_or_when_the_sdk_is_disabled() {
        assert_eq!(resolve(&OtlpConfig::default(), &[]).unwrap(), None);
        let vars = [
            (env::ENDPOINT, "http://c:4318"),
            (env::SDK_DISABLED, "TRUE"),
        ];
        assert_eq!(resolve(&OtlpConfig::default(), &vars).unwrap(), None);
        let vars = [
            (env::ENDPOINT, "http://c:4318"),
            (env::TRACES_EXPORTER, "none"),
        ];
        assert_eq!(resolve(&OtlpConfig::default(), &vars).unwrap(), None);
    }

    #[test]
    fn base_urls_get_the_traces_path_over_http_only() {
        let s = resolve(&OtlpConfig::default(), &[(env::ENDPOINT, "http://c:4318/")])
            .unwrap()
            .unwrap();
        assert_eq!(s.endpoint, "http://c:4318/v1/traces");
        assert_eq!(s.protocol, OtlpProtocol::HttpProtobuf);
        assert_eq!(s.service_name, "pasarela");
        let vars = [
            (env::ENDPOINT, "http://c:4317"),
            (env::PROTOCOL, "grpc"),
            (env::SERVICE_NAME, "gw"),
        ];
        let s = resolve(&OtlpConfig::default(), &vars).unwrap().unwrap();
        assert_eq!(
            (s.endpoint.as_str(), s.protocol),
            ("http://c:4317", OtlpProtocol::Grpc)
        );
        assert_eq!(s.service_name, "gw");
        // The signal-specific URL is taken as it is, and wins over the base one.
        let vars = [
            (env::ENDPOINT, "http://c:4318"),
            (env::TRACES_ENDPOINT, "http://t:9999/custom"),
        ];
        let s = resolve(&OtlpConfig::default(), &vars).unwrap().unwrap();
        assert_eq!(s.endpoint, "http://t:9999/custom");
    }

    #[test]
    fn the_config_file_wins_over_the_environment() {
        let config = OtlpConfig {
            endpoint: Some("http://file:4318/v1/traces".into()),
            protocol: Some(OtlpProtocol::HttpProtobuf),
            service_name: Some("from-file".into()),
            ..OtlpConfig::default()
        };
        let vars = [
            (env::TRACES_ENDPOINT, "http://env:1"),
            (env::PROTOCOL, "grpc"),
            (env::SERVICE_NAME, "from-env"),
        ];
        let s = resolve(&config, &vars).unwrap().unwrap();
        assert_eq!(s.endpoint, "http://file:4318/v1/traces");
        assert_eq!(s.protocol, OtlpProtocol::HttpProtobuf);
        assert_eq!(s.service_name, "from-file");
    }

    #[test]
    fn bad_environment_values_name_their_variable() {
        let vars = [
            (env::ENDPOINT, "http://c:4318"),
            (env::PROTOCOL, "http/json"),
        ];
        let msg = resolve(&OtlpConfig::default(), &vars)
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains(env::PROTOCOL) && msg.contains("http/json"),
            "{msg}"
        );
        let msg = resolve(&OtlpConfig::default(), &[(env::ENDPOINT, "collector:4317")])
            .unwrap_err()
            .to_string();
        assert!(msg.contains(env::ENDPOINT), "{msg}");
    }
}
