//! One API request's account of itself, filled in as it goes and read once when its response
//! is over: the HTTP layer knows who called and which endpoint, the gateway which model and
//! deployment served it, the stream its usage, finish reasons and first token. Whatever
//! accounts for requests (token limits and spend, metrics, the request log, spans) registers a
//! hook with [`Exchange::on_finish`] and reads the finished [`Record`] there, so that none of
//! them has to know how a stream ends.
//!
//! A response is over when its body has been sent to the end, or dropped (the client went
//! away): for a stream, that is long after the handler returned.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::UpstreamClock;
use super::capture::Capture;
use super::request_trace::RequestTrace;

/// Input and output tokens of one request, as the model counted them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TokenCounts {
    pub input: u64,
    pub output: u64,
}

/// How the response ended.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Ending {
    /// Not over yet (seen only by code that peeks early).
    #[default]
    Open,
    /// Sent to the end (a stream: up to `[DONE]`).
    Complete,
    /// A stream that broke after it started; the reason.
    Failed(String),
    /// The client went away before the end.
    Abandoned,
}

/// The calling key, when the request carried a virtual key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRef {
    pub id: i64,
    pub name: String,
}

/// The sampling parameters a generation request set (as the client sent them).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct RequestParams {
    pub temperature: Option<f64>,
    pub max_tokens: Option<u64>,
    pub top_p: Option<f64>,
}

/// Prompt and completion text, kept only when content recording is on. Its `Debug` shows
/// sizes, never the text: records end up in debug logs.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Content {
    /// The input messages, as `gen_ai.input.messages` JSON.
    pub input: String,
    /// The generated text so far.
    pub output: String,
}

impl std::fmt::Debug for Content {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Content")
            .field("input_bytes", &self.input.len())
            .field("output_bytes", &self.output.len())
            .finish()
    }
}

/// What is known about a request. Fields stay `None` where they do not apply (an embeddings
/// request has no finish reason) or never became known (a refused request has no deployment).
#[derive(Debug, Clone, Default)]
pub struct Record {
    /// `x-request-id`: the client's, or one made for the request.
    pub request_id: String,
    /// The matched route, e.g. `/v1/chat/completions`.
    pub endpoint: String,
    pub status: u16,
    pub key: Option<KeyRef>,
    /// The model the client asked for (a route name).
    pub model: Option<String>,
    /// `provider/model` of the deployment that answered.
    pub deployment: Option<String>,
    /// The kind of upstream that answered, as `gen_ai.provider.name` (`openai`, `anthropic`,
    /// `pasarela.local`).
    pub provider: Option<&'static str>,
    pub params: RequestParams,
    /// The model the answer says produced it.
    pub response_model: Option<String>,
    pub stream: bool,
    pub usage: Option<TokenCounts>,
    pub finish_reasons: Vec<String>,
    /// From the start of the request to the first generated content.
    pub first_token: Option<Duration>,
    /// From the start of the request to the end of its response.
    pub duration: Duration,
    /// The registry prompt and version a chat request used.
    pub prompt: Option<(String, i64)>,
    pub ending: Ending,
    /// Set only when the request's trace records content.
    pub content: Option<Content>,
    /// Why the request failed, for an error response.
    pub error: Option<String>,
    /// The bodies, only when the request log sampled them: nothing is copied otherwise.
    pub capture: Option<Box<Capture>>,
}

type Hook = Box<dyn FnOnce(&Record) + Send>;

/// Shared by everything that handles one request (as an `Arc` in the request's extensions).
pub struct Exchange {
    started: Instant,
    clock: UpstreamClock,
    /// The request's span, when tracing is on; ended with the final record.
    trace: Option<RequestTrace>,
    /// The calling key asks for its requests' text on spans.
    key_records_content: AtomicBool,
    record: Mutex<Record>,
    hooks: Mutex<Option<Vec<Hook>>>,
}

impl Exchange {
    pub fn new(endpoint: impl Into<String>) -> Arc<Exchange> {
        Exchange::traced(endpoint, None)
    }

    pub fn traced(endpoint: impl Into<String>, trace: Option<RequestTrace>) -> Arc<Exchange> {
        Arc::new(Exchange {
            started: Instant::now(),
            clock: UpstreamClock::default(),
            trace,
            key_records_content: AtomicBool::new(false),
            record: Mutex::new(Record {
                endpoint: endpoint.into(),
                ..Record::default()
            }),
            hooks: Mutex::new(Some(Vec::new())),
        })
    }

    /// The time this request has spent waiting on upstreams.
    pub fn clock(&self) -> &UpstreamClock {
        &self.clock
    }

    pub fn started(&self) -> Instant {
        self.started
    }

    /// The request's trace, when tracing is on.
    pub fn trace(&self) -> Option<&RequestTrace> {
        self.trace.as_ref()
    }

    /// Whether prompt and completion text should be kept in the record: only for a traced
    /// request, when recording is on for every request or for the calling key.
    pub fn records_content(&self) -> bool {
        self.trace.as_ref().is_some_and(|t| {
            t.records_content() || self.key_records_content.load(Ordering::Relaxed)
        })
    }

    /// The calling key wants its requests' text on spans.
    pub fn record_content_for_key(&self) {
        self.key_records_content.store(true, Ordering::Relaxed);
    }

    /// Changes the record. A hook that panicked while holding the lock leaves the record
    /// readable: every field stays valid on its own.
    pub fn update(&self, f: impl FnOnce(&mut Record)) {
        f(&mut self.lock());
    }

    /// Whether the request log sampled this request's bodies, so that they should be kept.
    pub fn captures_bodies(&self) -> bool {
        self.lock().capture.is_some()
    }

    /// Changes the captured bodies, when they are being captured.
    pub fn capture(&self, f: impl FnOnce(&mut Capture)) {
        if let Some(c) = self.lock().capture.as_deref_mut() {
            f(c);
        }
    }

    /// A copy of the record as it stands.
    pub fn snapshot(&self) -> Record {
        self.lock().clone()
    }

    /// Runs `hook` with the finished record when the response is over; at once if it is over
    /// already.
    pub fn on_finish(&self, hook: impl FnOnce(&Record) + Send + 'static) {
        let mut hooks = self.hooks.lock().unwrap_or_else(|e| e.into_inner());
        match hooks.as_mut() {
            Some(list) => list.push(Box::new(hook)),
            None => {
                drop(hooks);
                hook(&self.snapshot());
            }
        }
    }

    /// Records the first generated content, once.
    pub fn first_token(&self) {
        let elapsed = self.started.elapsed();
        self.update(|r| {
            r.first_token.get_or_insert(elapsed);
        });
    }

    /// Ends the exchange: fixes its duration and ending (an ending a stream already recorded
    /// wins over `ending`) and runs the hooks. Only the first call does anything.
    pub fn finish(&self, ending: Ending) {
        let hooks = {
            let mut hooks = self.hooks.lock().unwrap_or_else(|e| e.into_inner());
            match hooks.take() {
                Some(h) => h,
                None => return,
            }
        };
        let record = {
            let mut r = self.lock();
            r.duration = self.started.elapsed();
            if r.ending == Ending::Open {
                r.ending = ending;
            }
            r.clone()
        };
        for hook in hooks {
            hook(&record);
        }
        if let Some(trace) = &self.trace {
            trace.end(&record);
        }
    }

    fn lock(&self) -> MutexGuard<'_, Record> {
        self.record.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl std::fmt::Debug for Exchange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Exchange")
            .field("record", &*self.lock())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[test]
    fn hooks_run_once_with_the_final_record() {
        let ex = Exchange::new("/v1/chat/completions");
        let runs = Arc::new(AtomicUsize::new(0));
        let seen = Arc::new(Mutex::new(None));
        {
            let (runs, seen) = (runs.clone(), seen.clone());
            ex.on_finish(move |r| {
                runs.fetch_add(1, Ordering::SeqCst);
                *seen.lock().unwrap_or_else(|e| e.into_inner()) = Some(r.clone());
            });
        }
        ex.update(|r| {
            r.usage = Some(TokenCounts {
                input: 7,
                output: 3,
            })
        });
        ex.finish(Ending::Complete);
        ex.finish(Ending::Abandoned);
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        let seen = seen.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let Some(r) = seen else {
            panic!("hook did not run")
        };
        assert_eq!(r.ending, Ending::Complete);
        assert_eq!(r.usage.map(|u| u.output), Some(3));
    }

    #[test]
    fn a_stream_failure_outranks_the_body_ending() {
        let ex = Exchange::new("/v1/chat/completions");
        ex.update(|r| r.ending = Ending::Failed("upstream reset".into()));
        ex.finish(Ending::Complete);
        assert_eq!(
            ex.snapshot().ending,
            Ending::Failed("upstream reset".into())
        );
    }

    #[test]
    fn a_hook_added_after_the_end_runs_at_once() {
        let ex = Exchange::new("/v1/embeddings");
        ex.finish(Ending::Abandoned);
        let ran = Arc::new(AtomicUsize::new(0));
        let r2 = ran.clone();
        ex.on_finish(move |r| {
            assert_eq!(r.ending, Ending::Abandoned);
            r2.fetch_add(1, Ordering::SeqCst);
        });
        assert_eq!(ran.load(Ordering::SeqCst), 1);
    }
}
