//! A real OTLP trace receiver for tests: a gRPC server (tonic, with the service trait that
//! opentelemetry-proto generates from the OTLP protos) or an HTTP/protobuf endpoint (axum,
//! decoding `ExportTraceServiceRequest` with prost), keeping every span it is sent.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use prost::Message;

/// One received span, with ids in lowercase hex as `traceparent` writes them.
#[derive(Debug, Clone)]
pub struct ReceivedSpan {
    pub name: String,
    pub trace_id: String,
    pub span_id: String,
    /// Empty for a root span.
    pub parent_span_id: String,
    /// OTLP's `SpanKind` number: 1 internal, 2 server, 3 client.
    pub kind: i32,
    pub attributes: HashMap<String, AnyValue>,
    /// OTLP's status code: 0 unset, 1 ok, 2 error.
    pub status: i32,
    pub start_unix_nano: u64,
    pub end_unix_nano: u64,
    pub service_name: Option<String>,
}

impl ReceivedSpan {
    pub fn attr(&self, key: &str) -> Option<&AnyValue> {
        self.attributes.get(key)
    }

    pub fn str(&self, key: &str) -> Option<&str> {
        match self.attr(key)? {
            AnyValue::StringValue(s) => Some(s),
            _ => None,
        }
    }

    pub fn int(&self, key: &str) -> Option<i64> {
        match self.attr(key)? {
            AnyValue::IntValue(i) => Some(*i),
            _ => None,
        }
    }

    pub fn double(&self, key: &str) -> Option<f64> {
        match self.attr(key)? {
            AnyValue::DoubleValue(d) => Some(*d),
            _ => None,
        }
    }

    pub fn strings(&self, key: &str) -> Option<Vec<String>> {
        match self.attr(key)? {
            AnyValue::ArrayValue(a) => a
                .values
                .iter()
                .map(|v| match &v.value {
                    Some(AnyValue::StringValue(s)) => Some(s.clone()),
                    _ => None,
                })
                .collect(),
            _ => None,
        }
    }
}

#[derive(Clone, Default)]
struct Received {
    spans: Arc<Mutex<Vec<ReceivedSpan>>>,
    /// Request headers of each export (HTTP), to check configured headers arrive.
    headers: Arc<Mutex<Vec<HeaderMap>>>,
}

impl Received {
    fn take(&self, request: ExportTraceServiceRequest) {
        let mut out = self.spans.lock().unwrap();
        for rs in request.resource_spans {
            let service_name = rs.resource.as_ref().and_then(|r| {
                r.attributes.iter().find_map(|kv| match &kv.value {
                    Some(v) if kv.key == "service.name" => match &v.value {
                        Some(AnyValue::StringValue(s)) => Some(s.clone()),
                        _ => None,
                    },
                    _ => None,
                })
            });
            for ss in rs.scope_spans {
                for s in ss.spans {
                    out.push(ReceivedSpan {
                        name: s.name,
                        trace_id: hex::encode(&s.trace_id),
                        span_id: hex::encode(&s.span_id),
                        parent_span_id: hex::encode(&s.parent_span_id),
                        kind: s.kind,
                        attributes: s
                            .attributes
                            .into_iter()
                            .filter_map(|kv| Some((kv.key, kv.value?.value?)))
                            .collect(),
                        status: s.status.map_or(0, |st| st.code),
                        start_unix_nano: s.start_time_unix_nano,
                        end_unix_nano: s.end_time_unix_nano,
                        service_name: service_name.clone(),
                    });
                }
            }
        }
    }
}

#[tonic::async_trait]
impl TraceService for Received {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.take(request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

async fn http_export(
    State(received): State<Received>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let Ok(request) = ExportTraceServiceRequest::decode(body) else {
        return StatusCode::BAD_REQUEST;
    };
    received.headers.lock().unwrap().push(headers);
    received.take(request);
    StatusCode::OK
}

pub struct OtlpReceiver {
    pub addr: SocketAddr,
    received: Received,
}

impl OtlpReceiver {
    /// A gRPC receiver (`TraceService/Export`) on a free port.
    pub async fn grpc() -> OtlpReceiver {
        let received = Received::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let service = TraceServiceServer::new(received.clone());
        tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener))
                .await
        });
        OtlpReceiver { addr, received }
    }

    /// An HTTP/protobuf receiver at `/v1/traces` on a free port.
    pub async fn http() -> OtlpReceiver {
        let received = Received::default();
        let app = Router::new()
            .route("/v1/traces", post(http_export))
            .with_state(received.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        OtlpReceiver { addr, received }
    }

    /// The base URL to configure as the endpoint.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn spans(&self) -> Vec<ReceivedSpan> {
        self.received.spans.lock().unwrap().clone()
    }

    pub fn export_headers(&self) -> Vec<HeaderMap> {
        self.received.headers.lock().unwrap().clone()
    }

    /// Waits until at least `n` spans have arrived, or panics after `limit`.
    pub async fn wait_for(&self, n: usize, limit: Duration) -> Vec<ReceivedSpan> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let spans = self.spans();
            if spans.len() >= n {
                return spans;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "expected {n} spans, received {}: {spans:#?}",
                spans.len()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
