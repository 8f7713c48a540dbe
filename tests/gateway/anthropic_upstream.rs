//! A stand-in Anthropic Messages API: an axum server speaking Anthropic's wire format (message
//! JSON, SSE with `event:` and `data:` lines, `{"type":"error",…}` bodies, `retry-after`), with
//! scripted replies and a record of every request. Like the real API it refuses requests
//! without `x-api-key`, `anthropic-version` or `max_tokens`, and `system` turns in `messages`.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde_json::{Value, json};

pub const MODEL: &str = "claude-sonnet-4-5";

#[derive(Clone, Debug)]
pub enum Reply {
    /// A finished message whose content is these blocks, with this stop reason.
    Message {
        content: Vec<Value>,
        stop_reason: &'static str,
    },
    /// Any JSON body, with a status and extra headers.
    Json {
        status: u16,
        body: Value,
        headers: Vec<(&'static str, String)>,
    },
    /// SSE events, each framed as `event: {type}` + `data: {json}`; the connection closes
    /// after the last one, whatever it is.
    Events(Vec<Value>),
}

impl Reply {
    pub fn text(text: &str) -> Reply {
        Reply::Message {
            content: vec![json!({"type": "text", "text": text})],
            stop_reason: "end_turn",
        }
    }

    /// Anthropic's error body: `{"type":"error","error":{"type","message"},"request_id"}`.
    pub fn error(status: u16, kind: &str, message: &str) -> Reply {
        Reply::Json {
            status,
            body: error_body(kind, message),
            headers: vec![],
        }
    }

    pub fn rate_limited(retry_after_secs: &str) -> Reply {
        Reply::Json {
            status: 429,
            body: error_body(
                "rate_limit_error",
                "Number of request tokens has exceeded your per-minute rate limit",
            ),
            headers: vec![("retry-after", retry_after_secs.to_owned())],
        }
    }

    pub fn overloaded() -> Reply {
        Reply::error(529, "overloaded_error", "Overloaded")
    }

    /// A complete stream of `pieces` as text deltas.
    pub fn text_stream(pieces: &[&str]) -> Reply {
        let mut events = vec![message_start(), text_block_start(0)];
        events.extend(pieces.iter().map(|p| text_delta(0, p)));
        events.extend(stream_end(0, "end_turn", pieces.len()));
        Reply::Events(events)
    }
}

fn error_body(kind: &str, message: &str) -> Value {
    json!({"type": "error", "error": {"type": kind, "message": message},
           "request_id": "req_stand_in"})
}

pub fn message(content: &[Value], stop_reason: &str) -> Value {
    json!({
        "id": "msg_stand_in", "type": "message", "role": "assistant", "model": MODEL,
        "content": content, "stop_reason": stop_reason, "stop_sequence": null,
        "usage": {"input_tokens": 21, "output_tokens": 7,
                  "cache_creation_input_tokens": 0, "cache_read_input_tokens": 4}
    })
}

pub fn message_start() -> Value {
    json!({"type": "message_start", "message": {
        "id": "msg_stand_in", "type": "message", "role": "assistant", "model": MODEL,
        "content": [], "stop_reason": null, "stop_sequence": null,
        "usage": {"input_tokens": 21, "output_tokens": 1,
                  "cache_creation_input_tokens": 0, "cache_read_input_tokens": 4}
    }})
}

pub fn text_block_start(index: u32) -> Value {
    json!({"type": "content_block_start", "index": index,
           "content_block": {"type": "text", "text": ""}})
}

pub fn text_delta(index: u32, text: &str) -> Value {
    json!({"type": "content_block_delta", "index": index,
           "delta": {"type": "text_delta", "text": text}})
}

pub fn tool_use_start(index: u32, id: &str, name: &str) -> Value {
    json!({"type": "content_block_start", "index": index,
           "content_block": {"type": "tool_use", "id": id, "name": name, "input": {}}})
}

pub fn input_json_delta(index: u32, partial_json: &str) -> Value {
    json!({"type": "content_block_delta", "index": index,
           "delta": {"type": "input_json_delta", "partial_json": partial_json}})
}

pub fn ping() -> Value {
    json!({"type": "ping"})
}

pub fn error_event(kind: &str, message: &str) -> Value {
    json!({"type": "error", "error": {"type": kind, "message": message}})
}

/// `content_block_stop` for `last_block`, then `message_delta` and `message_stop`.
pub fn stream_end(last_block: u32, stop_reason: &str, output_tokens: usize) -> Vec<Value> {
    vec![
        json!({"type": "content_block_stop", "index": last_block}),
        json!({"type": "message_delta",
               "delta": {"stop_reason": stop_reason, "stop_sequence": null},
               "usage": {"output_tokens": output_tokens}}),
        json!({"type": "message_stop"}),
    ]
}

pub struct Recorded {
    pub path: String,
    pub headers: HeaderMap,
    pub body: Value,
}

#[derive(Clone)]
struct Shared {
    script: Arc<Mutex<VecDeque<Reply>>>,
    default: Reply,
    requests: Arc<Mutex<Vec<Recorded>>>,
    hits: Arc<AtomicUsize>,
}

pub struct AnthropicUpstream {
    pub addr: SocketAddr,
    shared: Shared,
}

impl AnthropicUpstream {
    /// Starts on a free port; every request gets `default` unless a scripted reply is queued.
    pub async fn start(default: Reply) -> AnthropicUpstream {
        let shared = Shared {
            script: Arc::default(),
            default,
            requests: Arc::default(),
            hits: Arc::default(),
        };
        let app = Router::new().fallback(handle).with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        AnthropicUpstream { addr, shared }
    }

    /// Anthropic's base URL: the endpoint is `{base_url}/v1/messages`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
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
}

/// The refusal the real API gives to a request it cannot accept, if this is one.
fn refusal(headers: &HeaderMap, body: &Value) -> Option<Reply> {
    if !headers.contains_key("x-api-key") {
        return Some(Reply::error(
            401,
            "authentication_error",
            "x-api-key header is required",
        ));
    }
    if !headers.contains_key("anthropic-version") {
        return Some(Reply::error(
            400,
            "invalid_request_error",
            "anthropic-version: header is required",
        ));
    }
    if !body["max_tokens"].is_u64() {
        return Some(Reply::error(
            400,
            "invalid_request_error",
            "max_tokens: Field required",
        ));
    }
    let roles = body["messages"].as_array().into_iter().flatten();
    for (i, m) in roles.enumerate() {
        if !matches!(m["role"].as_str(), Some("user" | "assistant")) {
            return Some(Reply::error(
                400,
                "invalid_request_error",
                &format!("messages.{i}.role: Input should be 'user' or 'assistant'"),
            ));
        }
    }
    None
}

async fn handle(
    State(shared): State<Shared>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    shared.hits.fetch_add(1, Ordering::SeqCst);
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let refused = refusal(&headers, &body);
    shared.requests.lock().unwrap().push(Recorded {
        path: uri.path().to_owned(),
        headers,
        body,
    });
    if uri.path() != "/v1/messages" {
        return reply(Reply::error(404, "not_found_error", "Not found"));
    }
    if let Some(refused) = refused {
        return reply(refused);
    }
    let next = shared.script.lock().unwrap().pop_front();
    reply(next.unwrap_or_else(|| shared.default.clone()))
}

fn reply(reply: Reply) -> Response {
    match reply {
        Reply::Message {
            content,
            stop_reason,
        } => axum::Json(message(&content, stop_reason)).into_response(),
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
        Reply::Events(events) => {
            let frames = events.into_iter().map(|e| {
                let name = e["type"].as_str().unwrap_or("unknown").to_owned();
                Ok::<_, std::io::Error>(Bytes::from(format!("event: {name}\ndata: {e}\n\n")))
            });
            Response::builder()
                .header("content-type", "text/event-stream; charset=utf-8")
                .header("cache-control", "no-cache")
                .body(Body::from_stream(futures::stream::iter(frames)))
                .unwrap()
        }
    }
}
