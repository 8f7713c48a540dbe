//! The spans of one request: the server span, opened when the request arrives (continuing the
//! client's W3C `traceparent`) and ended with the final [`Record`]; a child span for each
//! upstream attempt, whose context is current while the attempt runs so that providers can
//! send it on as `traceparent`; and the local engine's queue, prefill and decode phases.
//!
//! Must not contain the attribute mapping (`gen_ai`) or the export pipeline.

use std::time::SystemTime;

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{Span as _, SpanKind, Status, TraceContextExt, Tracer as _};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracer;

use super::exchange::{Exchange, Record};
use super::gen_ai::{self, attr};

/// Carried in every context below a request span, so that code deeper down (a provider, the
/// engine adapter) can open child spans from `Context::current()` alone.
#[derive(Clone)]
struct TracerValue(SdkTracer);

pub struct RequestTrace {
    cx: Context,
    /// The endpoint's `gen_ai.operation.name`, for the spans of its upstream calls.
    operation: &'static str,
    record_content: bool,
}

impl std::fmt::Debug for RequestTrace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestTrace")
            .field("trace_id", &self.trace_id())
            .finish()
    }
}

impl RequestTrace {
    pub(super) fn begin(
        tracer: &SdkTracer,
        record_content: bool,
        method: &str,
        endpoint: &str,
        headers: &axum::http::HeaderMap,
    ) -> RequestTrace {
        let parent = TraceContextPropagator::new()
            .extract(&opentelemetry_http::HeaderExtractor(headers))
            .with_value(TracerValue(tracer.clone()));
        // Renamed `{operation} {model}` at the end, once the model is known.
        let span = tracer
            .span_builder(format!("{method} {endpoint}"))
            .with_kind(SpanKind::Server)
            .with_attributes([
                KeyValue::new(attr::HTTP_METHOD, method.to_owned()),
                KeyValue::new(attr::HTTP_ROUTE, endpoint.to_owned()),
            ])
            .start_with_context(tracer, &parent);
        RequestTrace {
            cx: parent.with_span(span),
            operation: gen_ai::operation(endpoint).unwrap_or("unknown"),
            record_content,
        }
    }

    pub fn records_content(&self) -> bool {
        self.record_content
    }

    /// The W3C trace id, for log lines.
    pub fn trace_id(&self) -> String {
        self.cx.span().span_context().trace_id().to_string()
    }

    /// Ends the request span with what the record says.
    pub(super) fn end(&self, record: &Record) {
        let span = self.cx.span();
        if let Some(op) = gen_ai::operation(&record.endpoint) {
            span.update_name(gen_ai::span_name(op, record.model.as_deref()));
        }
        let (attributes, error) = gen_ai::request_attributes(record);
        span.set_attributes(attributes);
        // A server span fails on 5xx or a broken stream, not on the client's 4xx.
        if let Some(e) = error
            && (record.status >= 500 || e == "stream_broken")
        {
            span.set_status(Status::error(e));
        }
        span.end();
    }

    /// Opens the span of one upstream attempt.
    pub fn upstream(&self, call: &UpstreamCall<'_>) -> UpstreamSpan {
        let Some(TracerValue(tracer)) = self.cx.get::<TracerValue>() else {
            return UpstreamSpan { cx: None };
        };
        let kind = if call.provider == gen_ai::LOCAL_PROVIDER {
            SpanKind::Internal
        } else {
            SpanKind::Client
        };
        let span = tracer
            .span_builder(gen_ai::span_name(self.operation, Some(call.model)))
            .with_kind(kind)
            .with_attributes([
                KeyValue::new(attr::OPERATION_NAME, self.operation),
                KeyValue::new(attr::PROVIDER_NAME, call.provider),
                KeyValue::new(attr::REQUEST_MODEL, call.model.to_owned()),
                KeyValue::new(attr::DEPLOYMENT, call.deployment.to_owned()),
                KeyValue::new(attr::ATTEMPT, i64::from(call.attempt)),
            ])
            .start_with_context(tracer, &self.cx);
        UpstreamSpan {
            cx: Some(self.cx.with_span(span)),
        }
    }
}

/// What an upstream attempt's span is named and labelled with.
pub struct UpstreamCall<'a> {
    pub provider: &'static str,
    pub deployment: &'a str,
    /// The upstream's model name.
    pub model: &'a str,
    pub attempt: u32,
}

/// The span of one upstream attempt; ended by `failed` or `succeeded`, or (if neither is
/// called) when dropped.
pub struct UpstreamSpan {
    cx: Option<Context>,
}

impl UpstreamSpan {
    /// The context to make current while the attempt runs.
    pub fn context(&self) -> Option<&Context> {
        self.cx.as_ref()
    }

    pub fn failed(mut self, error_type: &str, message: String) {
        if let Some(cx) = self.cx.take() {
            let span = cx.span();
            span.set_attribute(KeyValue::new(attr::ERROR_TYPE, error_type.to_owned()));
            span.set_status(Status::error(message));
            span.end();
        }
    }

    /// The attempt answered. Its span takes the response's attributes when the exchange ends;
    /// a complete answer's span ends now, a stream's when the stream does.
    pub fn succeeded(mut self, exchange: &Exchange, streaming: bool) {
        let Some(cx) = self.cx.take() else { return };
        let ended = (!streaming).then(SystemTime::now);
        exchange.on_finish(move |record| {
            let span = cx.span();
            let mut attributes = Vec::new();
            gen_ai::response_attributes(record, &mut attributes);
            span.set_attributes(attributes);
            if let super::Ending::Failed(reason) = &record.ending {
                span.set_attribute(KeyValue::new(attr::ERROR_TYPE, "stream_broken"));
                span.set_status(Status::error(reason.clone()));
            }
            match ended {
                Some(t) => span.end_with_timestamp(t),
                None => span.end(),
            }
        });
    }
}

impl Drop for UpstreamSpan {
    fn drop(&mut self) {
        if let Some(cx) = &self.cx {
            cx.span().end();
        }
    }
}

/// Headers that carry the current span to an upstream (`traceparent`, `tracestate`); empty
/// outside a traced request.
pub fn propagation_headers() -> reqwest::header::HeaderMap {
    let mut headers = reqwest::header::HeaderMap::new();
    let cx = Context::current();
    if cx.has_active_span() {
        TraceContextPropagator::new()
            .inject_context(&cx, &mut opentelemetry_http::HeaderInjector(&mut headers));
    }
    headers
}

/// The phases of one generation on the local engine, reported by the scheduler as they happen
/// and turned into three child spans of the current attempt: waiting in the queue, prefilling
/// the prompt, decoding the answer.
pub struct EngineSpans {
    cx: Context,
    tracer: SdkTracer,
    submitted: SystemTime,
    admitted: Option<SystemTime>,
    prefilled: Option<SystemTime>,
    prompt_tokens: Option<usize>,
    output_tokens: Option<usize>,
    error: Option<String>,
}

impl EngineSpans {
    /// Starts timing a generation submitted now, under the current span; `None` outside a
    /// traced request.
    pub fn current() -> Option<EngineSpans> {
        let cx = Context::current();
        if !cx.has_active_span() {
            return None;
        }
        let TracerValue(tracer) = cx.get::<TracerValue>()?.clone();
        Some(EngineSpans {
            cx,
            tracer,
            submitted: SystemTime::now(),
            admitted: None,
            prefilled: None,
            prompt_tokens: None,
            output_tokens: None,
            error: None,
        })
    }

    pub fn admitted(&mut self, at: SystemTime) {
        self.admitted.get_or_insert(at);
    }

    pub fn prefilled(&mut self, at: SystemTime) {
        self.prefilled.get_or_insert(at);
    }

    pub fn done(&mut self, prompt_tokens: usize, output_tokens: usize) {
        self.prompt_tokens = Some(prompt_tokens);
        self.output_tokens = Some(output_tokens);
    }

    pub fn failed(&mut self, reason: &str) {
        self.error.get_or_insert_with(|| reason.to_owned());
    }

    fn span(&self, name: &'static str, from: SystemTime, to: SystemTime, attrs: Vec<KeyValue>) {
        let mut span = self
            .tracer
            .span_builder(name)
            .with_kind(SpanKind::Internal)
            .with_start_time(from)
            .with_attributes(attrs)
            .start_with_context(&self.tracer, &self.cx);
        span.end_with_timestamp(to);
    }
}

impl Drop for EngineSpans {
    /// Emits the phases that happened; the one running when the generation ended (finished,
    /// failed or abandoned) ends now, with the failure if there was one.
    fn drop(&mut self) {
        let now = SystemTime::now();
        let mut phases: Vec<(&'static str, SystemTime, SystemTime, Vec<KeyValue>)> = Vec::new();
        phases.push((
            "engine.queue",
            self.submitted,
            self.admitted.unwrap_or(now),
            Vec::new(),
        ));
        if let Some(admitted) = self.admitted {
            let mut attrs = Vec::new();
            if let Some(n) = self.prompt_tokens {
                attrs.push(KeyValue::new(attr::ENGINE_PROMPT_TOKENS, n as i64));
            }
            phases.push((
                "engine.prefill",
                admitted,
                self.prefilled.unwrap_or(now),
                attrs,
            ));
        }
        if let Some(prefilled) = self.prefilled {
            let mut attrs = Vec::new();
            if let Some(n) = self.output_tokens {
                attrs.push(KeyValue::new(attr::ENGINE_OUTPUT_TOKENS, n as i64));
            }
            phases.push(("engine.decode", prefilled, now, attrs));
        }
        if let (Some(e), Some(last)) = (&self.error, phases.last_mut()) {
            last.3.push(KeyValue::new(attr::ERROR_TYPE, "engine_error"));
            last.3.push(KeyValue::new("error.message", e.clone()));
        }
        for (name, from, to, attrs) in phases {
            self.span(name, from, to, attrs);
        }
    }
}
