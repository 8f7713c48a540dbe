//! A stand-in OpenAI-compatible upstream: an axum server speaking OpenAI's wire format
//! (JSON, SSE with `[DONE]`, error envelopes, `Retry-After`), with scripted replies, a record
//! of every request, and a signal when a client goes away mid-answer.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde_json::{Value, json};
use tokio::sync::Notify;

#[derive(Clone, Debug)]
pub enum Reply {
    /// A chat completion whose assistant content is this text.
    Chat(String),
    /// Any JSON body, with a status and extra headers.
    Json {
        status: u16,
        body: Value,
        headers: Vec<(&'static str, String)>,
    },
    /// SSE frames, each sent as `data: {frame}` after `delay`; then `[DONE]` if `done`, else
    /// the connection just ends (a broken stream).
    Stream {
        frames: Vec<String>,
        delay: Duration,
        done: bool,
    },
    /// Never answers.
    Hang,
}

impl Reply {
    pub fn status(status: u16, message: &str) -> Reply {
        Reply::Json {
            status,
            body: json!({"error": {"message": message, "type": "server_error", "param": null, "code": null}}),
            headers: vec![],
        }
    }

    pub fn rate_limited(retry_after_secs: &str) -> Reply {
        Reply::Json {
            status: 429,
            body: json!({"error": {"message": "Rate limit reached", "type": "requests", "param": null, "code": "rate_limit_exceeded"}}),
            headers: vec![("retry-after", retry_after_secs.to_owned())],
        }
    }

    /// A well-formed stream of `pieces` as content deltas, with a usage chunk when asked.
    pub fn stream_of(pieces: &[&str], include_usage: bool) -> Reply {
        Reply::Stream {
            frames: chat_chunks(pieces, include_usage),
            delay: Duration::ZERO,
            done: true,
        }
    }
}

pub struct Recorded {
    pub path: String,
    pub headers: HeaderMap,
    pub body: Value,
}

#[derive(Clone)]
struct Shared {
    script: Arc<Mutex<VecDeque<Reply>>>,
    default: Arc<Mutex<Reply>>,
    requests: Arc<Mutex<Vec<Recorded>>>,
    hits: Arc<AtomicUsize>,
    abandoned: Arc<AtomicUsize>,
    abandoned_notify: Arc<Notify>,
}

pub struct OpenAiUpstream {
    pub addr: SocketAddr,
    shared: Shared,
}

impl OpenAiUpstream {
    /// Starts on a free port; every request gets `default` unless a scripted reply is queued.
    pub async fn start(default: Reply) -> OpenAiUpstream {
        let shared = Shared {
            script: Arc::default(),
            default: Arc::new(Mutex::new(default)),
            requests: Arc::default(),
            hits: Arc::default(),
            abandoned: Arc::default(),
            abandoned_notify: Arc::default(),
        };
        let app = Router::new().fallback(handle).with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        OpenAiUpstream { addr, shared }
    }

    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// Queues `reply` for the next request not yet answered.
    pub fn push(&self, reply: Reply) {
        self.shared.script.lock().unwrap().push_back(reply);
    }

    pub fn hits(&self) -> usize {
        self.shared.hits.load(Ordering::SeqCst)
    }

    pub fn last(&self) -> (String, HeaderMap, Value) {
        let reqs = self.shared.requests.lock().unwrap();
        let r = reqs.last().expect("upstream received a request");
        (r.path.clone(), r.headers.clone(), r.body.clone())
    }

    /// Waits until a client has gone away in the middle of an answer (the response was dropped
    /// before it finished), or panics after `limit`.
    pub async fn wait_abandoned(&self, limit: Duration) {
        let wait = async {
            loop {
                let notified = self.shared.abandoned_notify.notified();
                if self.shared.abandoned.load(Ordering::SeqCst) > 0 {
                    return;
                }
                notified.await;
            }
        };
        tokio::time::timeout(limit, wait)
            .await
            .expect("the upstream saw the request abandoned");
    }
}

/// Counts as abandoned unless disarmed: dropped mid-answer means the client went away.
struct AbandonGuard {
    shared: Shared,
    armed: bool,
}

impl Drop for AbandonGuard {
    fn drop(&mut self) {
        if self.armed {
            self.shared.abandoned.fetch_add(1, Ordering::SeqCst);
            self.shared.abandoned_notify.notify_waiters();
        }
    }
}

async fn handle(
    State(shared): State<Shared>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    shared.hits.fetch_add(1, Ordering::SeqCst);
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let model = body["model"].as_str().unwrap_or("unknown").to_owned();
    shared.requests.lock().unwrap().push(Recorded {
        path: uri.path().to_owned(),
        headers,
        body,
    });
    let reply = shared
        .script
        .lock()
        .unwrap()
        .pop_front()
        .unwrap_or_else(|| shared.default.lock().unwrap().clone());
    match reply {
        Reply::Chat(text) => axum::Json(chat_completion(&model, &text)).into_response(),
        Reply::Json {
            status,
            body,
            headers,
        } => {
            let mut resp =
                (StatusCode::from_u16(status).unwrap(), axum::Json(body)).into_response();
            for (k, v) in headers {
                resp.headers_mut().insert(k, v.parse().unwrap());
            }
            resp
        }
        Reply::Stream {
            frames,
            delay,
            done,
        } => {
            let guard = AbandonGuard {
                shared: shared.clone(),
                armed: true,
            };
            let frames: VecDeque<String> = frames.into();
            let body = futures::stream::unfold(
                (frames, guard, done),
                move |(mut frames, mut guard, done)| async move {
                    if !delay.is_zero() {
                        tokio::time::sleep(delay).await;
                    }
                    match frames.pop_front() {
                        Some(f) => Some((
                            Ok::<_, std::io::Error>(Bytes::from(format!("data: {f}\n\n"))),
                            (frames, guard, done),
                        )),
                        None => {
                            guard.armed = false;
                            if done {
                                Some((
                                    Ok(Bytes::from_static(b"data: [DONE]\n\n")),
                                    (frames, guard, false),
                                ))
                            } else {
                                None
                            }
                        }
                    }
                },
            );
            Response::builder()
                .header("content-type", "text/event-stream")
                .body(Body::from_stream(body))
                .unwrap()
        }
        Reply::Hang => {
            let _guard = AbandonGuard {
                shared: shared.clone(),
                armed: true,
            };
            std::future::pending::<Response>().await
        }
    }
}

pub fn chat_completion(model: &str, text: &str) -> Value {
    json!({
        "id": "chatcmpl-stand-in",
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": model,
        "system_fingerprint": "fp_stand_in",
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": text, "refusal": null},
            "logprobs": null,
            "finish_reason": "stop"
        }],
        "usage": {"prompt_tokens": 9, "completion_tokens": 3, "total_tokens": 12,
                  "prompt_tokens_details": {"cached_tokens": 0}},
        "service_tier": "default"
    })
}

pub fn chat_chunks(pieces: &[&str], include_usage: bool) -> Vec<String> {
    let chunk = |delta: Value, finish: Value| {
        json!({
            "id": "chatcmpl-stand-in", "object": "chat.completion.chunk", "created": 1_700_000_000,
            "model": "upstream-model",
            "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}]
        })
        .to_string()
    };
    let mut frames = vec![chunk(
        json!({"role": "assistant", "content": ""}),
        Value::Null,
    )];
    frames.extend(
        pieces
            .iter()
            .map(|p| chunk(json!({"content": p}), Value::Null)),
    );
    frames.push(chunk(json!({}), json!("stop")));
    if include_usage {
        frames.push(
            json!({
                "id": "chatcmpl-stand-in", "object": "chat.completion.chunk", "created": 1_700_000_000,
                "model": "upstream-model", "choices": [],
                "usage": {"prompt_tokens": 9, "completion_tokens": pieces.len(), "total_tokens": 9 + pieces.len()}
            })
            .to_string(),
        );
    }
    frames
}
