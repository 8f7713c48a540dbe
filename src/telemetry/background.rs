//! Where span export runs: never on the threads that serve requests, and below them in CPU
//! priority. Encoding a batch of spans and sending it is a burst of work every few hundred
//! milliseconds; on a small machine, running it beside the request path at equal priority
//! shows up as the gateway's tail latency. So the SDK's batch thread (which encodes) and a
//! one-thread runtime of our own (which sends, for both OTLP/HTTP and gRPC) run at a lower
//! priority: they use the CPU requests leave, and a queue that fills meanwhile drops spans
//! (counted by the SDK), as it would for a slow collector.
//!
//! Must not contain what spans say or which collector they go to (`tracing_export`).

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{SpanData, SpanExporter};

/// How much nicer than the rest of the process the export threads are: ten steps give a
/// runnable request thread about ten times their share of a contended core.
const EXPORT_NICER_BY: i32 = 10;

/// Lowers the calling thread's CPU priority. On Linux a nice value belongs to one thread,
/// not the process; elsewhere this does nothing.
fn lower_this_threads_priority() {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: getpriority and setpriority take plain integers and touch no memory of
        // ours; `who` 0 with PRIO_PROCESS is the calling thread on Linux. Relative to where
        // the thread is, so that a process started nice is never raised.
        let rc = unsafe {
            let now = libc::getpriority(libc::PRIO_PROCESS, 0);
            libc::setpriority(libc::PRIO_PROCESS, 0, (now + EXPORT_NICER_BY).min(19))
        };
        if rc != 0 {
            tracing::debug!(error = %std::io::Error::last_os_error(),
                "could not lower the span export thread's priority");
        }
    }
}

/// A one-thread Tokio runtime for the exporter's network work, at low priority. Dropped
/// without waiting (a runtime may not block while it is dropped inside another one).
pub struct ExportRuntime(Option<tokio::runtime::Runtime>);

impl ExportRuntime {
    pub fn start() -> std::io::Result<ExportRuntime> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("pasarela-otlp")
            .on_thread_start(lower_this_threads_priority)
            .enable_all()
            .build()?;
        Ok(ExportRuntime(Some(runtime)))
    }

    pub fn handle(&self) -> Option<tokio::runtime::Handle> {
        self.0.as_ref().map(|rt| rt.handle().clone())
    }
}

impl Drop for ExportRuntime {
    fn drop(&mut self) {
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}

impl fmt::Debug for ExportRuntime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ExportRuntime")
    }
}

/// An exporter whose calls lower the priority of the thread they run on (the SDK's batch
/// thread, which it starts itself) the first time.
#[derive(Debug)]
pub struct LowPriority<E> {
    exporter: E,
    lowered: AtomicBool,
}

impl<E> LowPriority<E> {
    pub fn new(exporter: E) -> LowPriority<E> {
        LowPriority {
            exporter,
            lowered: AtomicBool::new(false),
        }
    }
}

impl<E: SpanExporter> SpanExporter for LowPriority<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        if !self.lowered.swap(true, Ordering::Relaxed) {
            lower_this_threads_priority();
        }
        self.exporter.export(batch).await
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.exporter.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.exporter.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.exporter.set_resource(resource);
    }
}

/// Our reqwest client for OTLP/HTTP. The batch processor exports from its own thread, outside
/// any Tokio runtime, where reqwest cannot run; each export is spawned onto the export
/// runtime and awaited from there.
#[derive(Debug)]
pub struct OnRuntime {
    pub client: reqwest::Client,
    pub runtime: tokio::runtime::Handle,
}

#[async_trait::async_trait]
impl opentelemetry_http::HttpClient for OnRuntime {
    async fn send_bytes(
        &self,
        request: opentelemetry_http::Request<opentelemetry_http::Bytes>,
    ) -> Result<
        opentelemetry_http::Response<opentelemetry_http::Bytes>,
        opentelemetry_http::HttpError,
    > {
        let client = self.client.clone();
        let task = self.runtime.spawn(async move {
            let request = reqwest::Request::try_from(request)?;
            let resp = client.execute(request).await?;
            let mut out = opentelemetry_http::Response::builder().status(resp.status());
            if let Some(headers) = out.headers_mut() {
                *headers = resp.headers().clone();
            }
            let body = resp.bytes().await?;
            Ok::<_, opentelemetry_http::HttpError>(out.body(body)?)
        });
        task.await?
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    fn nice_of_this_thread() -> i32 {
        // SAFETY: as above; getpriority reads the calling thread's nice value.
        unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) }
    }

    #[test]
    fn the_export_runtime_runs_below_the_callers_priority() {
        let before = nice_of_this_thread();
        let runtime = ExportRuntime::start().unwrap();
        let inside = runtime
            .handle()
            .unwrap()
            .block_on(async { tokio::spawn(async { nice_of_this_thread() }).await })
            .unwrap();
        assert!(
            inside > before,
            "export thread nice {inside}, caller {before}"
        );
        assert_eq!(nice_of_this_thread(), before, "the caller is untouched");
    }
}
