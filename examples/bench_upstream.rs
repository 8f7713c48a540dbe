//! A stand-in OpenAI upstream for `scripts/bench-gateway`: answers every
//! `POST /v1/chat/completions` at once with the same small, valid chat completion, so that the
//! benchmark measures the gateway and not a model.
//!
//! It runs on a current-thread runtime on purpose: the load generator, this server and the
//! gateway share the benchmark machine's cores, and one thread here leaves the rest to the
//! gateway. It must not grow logic beyond answering; anything that costs time here blurs the
//! gateway overhead the benchmark reports.
//!
//! It also takes OTLP/HTTP span exports (`POST /v1/traces`) and drops them, so that a benchmark
//! run with tracing on has a local collector without one more process.
//!
//! Usage: `bench_upstream <port>` (listens on 127.0.0.1).

use std::net::SocketAddr;

use anyhow::Context;
use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::post;

/// One complete `chat.completion` object, as OpenAI sends it for a non-streamed request.
const CHAT_COMPLETION: &str = concat!(
    r#"{"id":"chatcmpl-bench","object":"chat.completion","created":1700000000,"#,
    r#""model":"stub-model","system_fingerprint":null,"#,
    r#""choices":[{"index":0,"message":{"role":"assistant","content":"Hello!"},"#,
    r#""logprobs":null,"finish_reason":"stop"}],"#,
    r#""usage":{"prompt_tokens":8,"completion_tokens":2,"total_tokens":10}}"#,
);

/// Answers without reading the body: a real upstream's parse time is not what is measured.
async fn chat_completions() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/json")],
        CHAT_COMPLETION,
    )
}

/// Accepts an export without decoding it: an empty `ExportTraceServiceResponse` is zero bytes.
async fn traces() -> impl IntoResponse {
    [(header::CONTENT_TYPE, "application/x-protobuf")]
}

fn main() -> anyhow::Result<()> {
    let port: u16 = std::env::args()
        .nth(1)
        .context("usage: bench_upstream <port>")?
        .parse()
        .context("the port must be a number from 0 to 65535")?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding {addr}"))?;
        let app = Router::new()
            .route("/v1/chat/completions", post(chat_completions))
            .route("/v1/traces", post(traces));
        axum::serve(listener, app).await.context("serving")
    })
}
