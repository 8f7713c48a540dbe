//! `[telemetry]`: logs, and the OpenTelemetry export of spans (`[telemetry.otlp]`).

use std::collections::BTreeMap;

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetryConfig {
    /// `text` or `json`.
    pub log_format: LogFormat,
    /// A tracing filter such as `info` or `pasarela=debug`; `PASARELA_LOG` overrides it.
    pub log_level: String,
    /// Span export over OTLP; off unless an endpoint is set here or in `OTEL_EXPORTER_OTLP_*`.
    pub otlp: OtlpConfig,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        TelemetryConfig {
            log_format: LogFormat::Text,
            log_level: "info".into(),
            otlp: OtlpConfig::default(),
        }
    }
}

/// Where and how request spans are exported. Each key left unset falls back to the standard
/// `OTEL_*` variable (see README.md, "Tracing").
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OtlpConfig {
    /// The collector's base URL, e.g. `http://collector:4317` (gRPC) or `http://collector:4318`
    /// (HTTP, which gets `/v1/traces` appended unless the path already ends with it).
    pub endpoint: Option<String>,
    pub protocol: Option<OtlpProtocol>,
    /// Extra request headers (not secrets: those belong in `OTEL_EXPORTER_OTLP_HEADERS`).
    pub headers: BTreeMap<String, String>,
    /// `service.name` of the exported resource; `OTEL_SERVICE_NAME`, then `pasarela`.
    pub service_name: Option<String>,
    /// Fraction of traces started here that are kept (0.0–1.0); a client's sampled flag
    /// in `traceparent` decides for traces it started.
    pub sample_ratio: f64,
    /// Records prompt and completion text on spans (`gen_ai.input.messages`,
    /// `gen_ai.output.messages`). Off: they may hold personal data.
    pub record_content: bool,
    /// How long one export may take before it is given up.
    pub timeout_ms: Option<u64>,
}

impl Default for OtlpConfig {
    fn default() -> Self {
        OtlpConfig {
            endpoint: None,
            protocol: None,
            headers: BTreeMap::new(),
            service_name: None,
            sample_ratio: 1.0,
            record_content: false,
            timeout_ms: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum OtlpProtocol {
    #[serde(rename = "grpc")]
    Grpc,
    #[serde(rename = "http/protobuf")]
    HttpProtobuf,
}

impl OtlpProtocol {
    /// The names `OTEL_EXPORTER_OTLP_PROTOCOL` uses.
    pub fn parse(s: &str) -> Option<OtlpProtocol> {
        match s.trim() {
            "grpc" => Some(OtlpProtocol::Grpc),
            "http/protobuf" => Some(OtlpProtocol::HttpProtobuf),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}
