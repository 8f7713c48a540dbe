//! Round trips through an Anthropic upstream: OpenAI requests in, Messages API calls out, and
//! OpenAI completions, chunks and error envelopes back — JSON and SSE, tools both ways, errors
//! before and during a stream, retries, and features Anthropic cannot honour.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::anthropic_upstream::{
    AnthropicUpstream, MODEL, Reply, error_event, input_json_delta, message_start, ping,
    stream_end, text_block_start, text_delta, tool_use_start,
};
use crate::helpers::{TestApp, expect_error, sse_data, user_message};

const ROUTE: &str = "claude-test";

/// Starts a stand-in Anthropic upstream and a gateway routing `claude-test` to it, with the
/// upstream key in `key_var`, a name no other test uses.
async fn spawn(default: Reply, key_var: &str) -> (AnthropicUpstream, TestApp) {
    // SAFETY: the variable name is unique to the calling test and is set before the gateway
    // reads it; no other thread reads or writes it, and std serialises its own environment
    // access.
    unsafe { std::env::set_var(key_var, format!("sk-ant-{key_var}")) };
    let up = AnthropicUpstream::start(default).await;
    let config = format!(
        r#"
[providers.claude]
kind = "anthropic"
base_url = "{base_url}"
api_key_env = "{key_var}"
default_max_tokens = 1024

[routes.{ROUTE}]
deployments = [{{ provider = "claude", model = "{MODEL}" }}]
retry = {{ max_retries = 2, initial_backoff_ms = 1, max_backoff_ms = 5 }}
"#,
        base_url = up.base_url(),
    );
    let app = TestApp::spawn(&config).await;
    (up, app)
}

fn streaming(mut req: Value, include_usage: bool) -> Value {
    req["stream"] = json!(true);
    if include_usage {
        req["stream_options"] = json!({"include_usage": true});
    }
    req
}

/// The chunks of an SSE body that ended with `[DONE]`, which is asserted.
fn chunks_until_done(body: &str) -> Vec<Value> {
    let frames = sse_data(body);
    assert_eq!(frames.last().map(String::as_str), Some("[DONE]"), "{body}");
    frames[..frames.len() - 1]
        .iter()
        .map(|f| serde_json::from_str(f).unwrap())
        .collect()
}

fn weather_tool() -> Value {
    json!({"type": "function", "function": {
        "name": "get_weather", "description": "Current weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    }})
}

#[tokio::test]
async fn non_streaming_round_trip_sends_anthropic_headers_system_and_max_tokens() {
    let (up, app) = spawn(Reply::text("Bonjour!"), "PASARELA_TEST_ANTHROPIC_KEY_1").await;

    let resp = app
        .chat(json!({
            "model": ROUTE,
            "messages": [
                {"role": "system", "content": "Answer in French."},
                {"role": "user", "content": "Hello"}
            ],
            "temperature": 0.3, "stop": ["\n\n"], "user": "u-42", "seed": 7
        }))
        .await;

    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["x-pasarela-deployment"],
        format!("claude/{MODEL}")
    );
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(body["id"], "msg_stand_in");
    assert_eq!(body["model"], MODEL);
    assert!(
        body["created"].as_u64().is_some_and(|t| t > 1_600_000_000),
        "{body}"
    );
    assert_eq!(body["choices"][0]["message"]["role"], "assistant");
    assert_eq!(body["choices"][0]["message"]["content"], "Bonjour!");
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    // 21 uncached + 0 cache writes + 4 cache reads.
    assert_eq!(
        body["usage"],
        json!({"prompt_tokens": 25, "completion_tokens": 7, "total_tokens": 32,
               "prompt_tokens_details": {"cached_tokens": 4}})
    );

    let (path, headers, sent) = up.last();
    assert_eq!(path, "/v1/messages");
    assert_eq!(headers["x-api-key"], "sk-ant-PASARELA_TEST_ANTHROPIC_KEY_1");
    assert_eq!(headers["anthropic-version"], "2023-06-01");
    assert!(
        headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json")
    );
    assert!(
        headers.get("authorization").is_none(),
        "no bearer token to Anthropic"
    );
    assert_eq!(
        sent,
        json!({
            "model": MODEL, "max_tokens": 1024, "system": "Answer in French.",
            "messages": [{"role": "user", "content": "Hello"}],
            "temperature": 0.3, "stop_sequences": ["\n\n"], "metadata": {"user_id": "u-42"}
        })
    );
}

#[tokio::test]
async fn streaming_round_trip_ends_with_usage_then_done_when_include_usage_is_set() {
    let (up, app) = spawn(
        Reply::text_stream(&["Hel", "lo", " world"]),
        "PASARELA_TEST_ANTHROPIC_KEY_2",
    )
    .await;

    let mut req = user_message(ROUTE, "hi");
    req["max_completion_tokens"] = json!(64);
    let resp = app.chat(streaming(req, true)).await;
    assert_eq!(resp.status(), 200);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let chunks = chunks_until_done(&resp.text().await.unwrap());

    assert_eq!(
        chunks[0]["choices"][0]["delta"],
        json!({"role": "assistant", "content": ""})
    );
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(text, "Hello world");
    let finish: Vec<&Value> = chunks
        .iter()
        .map(|c| &c["choices"][0]["finish_reason"])
        .filter(|f| !f.is_null())
        .collect();
    assert_eq!(finish, [&json!("stop")]);
    for c in &chunks {
        assert_eq!(c["object"], "chat.completion.chunk");
        assert_eq!(c["id"], chunks[0]["id"]);
        assert_eq!(c["created"], chunks[0]["created"]);
        assert_eq!(c["model"], MODEL);
    }
    let last = chunks.last().unwrap();
    assert_eq!(last["choices"], json!([]));
    assert_eq!(
        last["usage"],
        json!({"prompt_tokens": 25, "completion_tokens": 3, "total_tokens": 28,
               "prompt_tokens_details": {"cached_tokens": 4}})
    );
    assert!(
        chunks[..chunks.len() - 1]
            .iter()
            .all(|c| c.get("usage").is_none())
    );

    let (_, _, sent) = up.last();
    assert_eq!(sent["stream"], true);
    assert_eq!(sent["max_tokens"], 64);
    assert!(sent.get("stream_options").is_none(), "{sent}");
}

#[tokio::test]
async fn streaming_without_include_usage_sends_no_usage_chunk() {
    let (_up, app) = spawn(Reply::text_stream(&["Hi"]), "PASARELA_TEST_ANTHROPIC_KEY_3").await;
    let resp = app.chat(streaming(user_message(ROUTE, "hi"), false)).await;
    let chunks = chunks_until_done(&resp.text().await.unwrap());
    assert!(
        chunks.iter().all(|c| c.get("usage").is_none()),
        "{chunks:?}"
    );
    assert_eq!(
        chunks.last().unwrap()["choices"][0]["finish_reason"],
        "stop"
    );
}

#[tokio::test]
async fn tools_and_tool_results_reach_anthropic_and_tool_use_returns_as_tool_calls() {
    let reply = Reply::Message {
        content: vec![
            json!({"type": "text", "text": "Checking Rome too."}),
            json!({"type": "tool_use", "id": "toolu_01", "name": "get_weather", "input": {"city": "Rome"}}),
        ],
        stop_reason: "tool_use",
    };
    let (up, app) = spawn(reply, "PASARELA_TEST_ANTHROPIC_KEY_4").await;

    let resp = app
        .chat(json!({
            "model": ROUTE,
            "messages": [
                {"role": "user", "content": "Weather in Paris, then Rome?"},
                {"role": "assistant", "content": null, "tool_calls": [
                    {"id": "toolu_00", "type": "function",
                     "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}
                ]},
                {"role": "tool", "tool_call_id": "toolu_00", "content": "18C and sunny"}
            ],
            "tools": [weather_tool()],
            "tool_choice": "required",
            "parallel_tool_calls": false
        }))
        .await;
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    let choice = &body["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls");
    assert_eq!(choice["message"]["content"], "Checking Rome too.");
    let calls = choice["message"]["tool_calls"].as_array().unwrap();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0]["id"], "toolu_01");
    assert_eq!(calls[0]["type"], "function");
    assert_eq!(calls[0]["function"]["name"], "get_weather");
    let arguments: Value =
        serde_json::from_str(calls[0]["function"]["arguments"].as_str().unwrap()).unwrap();
    assert_eq!(arguments, json!({"city": "Rome"}));

    let (_, _, sent) = up.last();
    assert_eq!(
        sent["tools"],
        json!([{"name": "get_weather", "description": "Current weather in a city",
                "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}])
    );
    assert_eq!(
        sent["tool_choice"],
        json!({"type": "any", "disable_parallel_tool_use": true})
    );
    assert_eq!(
        sent["messages"],
        json!([
            {"role": "user", "content": "Weather in Paris, then Rome?"},
            {"role": "assistant", "content": [
                {"type": "tool_use", "id": "toolu_00", "name": "get_weather", "input": {"city": "Paris"}}
            ]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_00", "content": "18C and sunny"}
            ]}
        ])
    );
}

#[tokio::test]
async fn streamed_tool_use_arrives_as_tool_call_deltas_whose_arguments_join_into_json() {
    let mut events = vec![
        message_start(),
        text_block_start(0),
        text_delta(0, "Let me look."),
        json!({"type": "content_block_stop", "index": 0}),
        tool_use_start(1, "toolu_a", "get_weather"),
        ping(),
        input_json_delta(1, ""),
        input_json_delta(1, "{\"ci"),
        input_json_delta(1, "ty\": \"Pa"),
        input_json_delta(1, "ris\"}"),
        json!({"type": "content_block_stop", "index": 1}),
        tool_use_start(2, "toolu_b", "get_weather"),
        input_json_delta(2, "{\"city\": \"Rome\"}"),
    ];
    events.extend(stream_end(2, "tool_use", 30));
    let (_up, app) = spawn(Reply::Events(events), "PASARELA_TEST_ANTHROPIC_KEY_5").await;

    let mut req = user_message(ROUTE, "Weather in Paris and Rome?");
    req["tools"] = json!([weather_tool()]);
    let resp = app.chat(streaming(req, false)).await;
    assert_eq!(resp.status(), 200);
    let chunks = chunks_until_done(&resp.text().await.unwrap());

    // Reassemble the calls as an OpenAI client does: by `index`.
    let mut calls: BTreeMap<u64, (String, String, String)> = BTreeMap::new();
    for c in &chunks {
        for d in c["choices"][0]["delta"]["tool_calls"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let call = calls.entry(d["index"].as_u64().unwrap()).or_default();
            if let Some(id) = d["id"].as_str() {
                call.0 = id.to_owned();
                assert_eq!(d["type"], "function");
            }
            if let Some(name) = d["function"]["name"].as_str() {
                call.1 = name.to_owned();
            }
            call.2
                .push_str(d["function"]["arguments"].as_str().unwrap_or_default());
        }
    }
    assert_eq!(
        calls.keys().copied().collect::<Vec<_>>(),
        [0, 1],
        "indexes count tool calls"
    );
    let parsed = |args: &str| serde_json::from_str::<Value>(args).unwrap();
    assert_eq!(calls[&0].0, "toolu_a");
    assert_eq!(calls[&0].1, "get_weather");
    assert_eq!(parsed(&calls[&0].2), json!({"city": "Paris"}));
    assert_eq!(calls[&1].0, "toolu_b");
    assert_eq!(parsed(&calls[&1].2), json!({"city": "Rome"}));
    assert_eq!(
        chunks.last().unwrap()["choices"][0]["finish_reason"],
        "tool_calls"
    );
}

#[tokio::test]
async fn upstream_error_event_mid_stream_ends_with_an_error_frame_and_no_done() {
    let events = vec![
        message_start(),
        text_block_start(0),
        text_delta(0, "Partial"),
        error_event("overloaded_error", "Overloaded"),
    ];
    let (up, app) = spawn(Reply::Events(events), "PASARELA_TEST_ANTHROPIC_KEY_6").await;

    let resp = app.chat(streaming(user_message(ROUTE, "hi"), true)).await;
    assert_eq!(resp.status(), 200, "the stream had begun");
    let frames = sse_data(&resp.text().await.unwrap());
    assert!(!frames.iter().any(|f| f == "[DONE]"), "{frames:?}");
    let last: Value = serde_json::from_str(frames.last().unwrap()).unwrap();
    let message = last["error"]["message"].as_str().unwrap();
    assert!(message.contains("Overloaded"), "{last}");
    assert_eq!(last["error"]["type"], "server_error");
    let text: String = frames[..frames.len() - 1]
        .iter()
        .map(|f| serde_json::from_str::<Value>(f).unwrap())
        .filter_map(|c| {
            c["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_owned)
        })
        .collect();
    assert_eq!(text, "Partial");
    assert_eq!(up.hits(), 1, "a stream that has begun is not retried");
}

#[tokio::test]
async fn upstream_stream_cut_before_message_stop_ends_with_an_error_frame_and_no_done() {
    let events = vec![
        message_start(),
        text_block_start(0),
        text_delta(0, "Half an ans"),
    ];
    let (_up, app) = spawn(Reply::Events(events), "PASARELA_TEST_ANTHROPIC_KEY_7").await;

    let resp = app.chat(streaming(user_message(ROUTE, "hi"), false)).await;
    let frames = sse_data(&resp.text().await.unwrap());
    assert!(!frames.iter().any(|f| f == "[DONE]"), "{frames:?}");
    let last: Value = serde_json::from_str(frames.last().unwrap()).unwrap();
    assert!(
        last["error"]["message"]
            .as_str()
            .unwrap()
            .contains("message_stop"),
        "{last}"
    );
}

#[tokio::test]
async fn error_event_before_message_start_is_retried_like_a_failed_call() {
    let (up, app) = spawn(Reply::text_stream(&["ok"]), "PASARELA_TEST_ANTHROPIC_KEY_8").await;
    up.push(Reply::Events(vec![error_event(
        "overloaded_error",
        "Overloaded",
    )]));

    let resp = app.chat(streaming(user_message(ROUTE, "hi"), false)).await;
    let chunks = chunks_until_done(&resp.text().await.unwrap());
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(text, "ok");
    assert_eq!(up.hits(), 2);
}

#[tokio::test]
async fn upstream_429_with_retry_after_is_retried_after_the_wait_then_succeeds() {
    let (up, app) = spawn(Reply::text("fine now"), "PASARELA_TEST_ANTHROPIC_KEY_9").await;
    up.push(Reply::rate_limited("1"));

    let started = Instant::now();
    let resp = app.chat(user_message(ROUTE, "hi")).await;
    assert_eq!(resp.status(), 200);
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "waited {:?}",
        started.elapsed()
    );
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["choices"][0]["message"]["content"], "fine now");
    assert_eq!(up.hits(), 2);
}

#[tokio::test]
async fn upstream_529_overloaded_after_all_retries_is_a_502_envelope() {
    let (up, app) = spawn(Reply::overloaded(), "PASARELA_TEST_ANTHROPIC_KEY_10").await;

    let error = expect_error(app.chat(user_message(ROUTE, "hi")).await, 502).await;
    assert_eq!(error["type"], "server_error");
    assert_eq!(error["code"], "upstream_error");
    assert_eq!(up.hits(), 3, "the first attempt and two retries");
}

#[tokio::test]
async fn upstream_invalid_request_is_a_400_with_anthropics_message() {
    let reply = Reply::error(
        400,
        "invalid_request_error",
        "prompt is too long: 250000 tokens > 200000 maximum",
    );
    let (up, app) = spawn(reply, "PASARELA_TEST_ANTHROPIC_KEY_11").await;

    let error = expect_error(app.chat(user_message(ROUTE, "hi")).await, 400).await;
    assert_eq!(
        error["message"],
        "prompt is too long: 250000 tokens > 200000 maximum"
    );
    assert_eq!(error["type"], "invalid_request_error");
    assert_eq!(up.hits(), 1, "a client error is not retried");
}

#[tokio::test]
async fn n_above_one_is_a_400_envelope_without_calling_the_upstream() {
    let (up, app) = spawn(Reply::text("unused"), "PASARELA_TEST_ANTHROPIC_KEY_12").await;

    let mut req = user_message(ROUTE, "hi");
    req["n"] = json!(2);
    let error = expect_error(app.chat(req).await, 400).await;
    assert_eq!(error["type"], "invalid_request_error");
    let message = error["message"].as_str().unwrap();
    assert!(
        message.contains("`n`") && message.contains("anthropic"),
        "{message}"
    );
    assert_eq!(up.hits(), 0);
}

#[tokio::test]
async fn json_response_format_is_a_400_envelope_naming_the_feature() {
    let (up, app) = spawn(Reply::text("unused"), "PASARELA_TEST_ANTHROPIC_KEY_13").await;

    let mut req = user_message(ROUTE, "hi");
    req["response_format"] = json!({"type": "json_object"});
    let error = expect_error(app.chat(req).await, 400).await;
    assert!(
        error["message"].as_str().unwrap().contains("json_object"),
        "{error}"
    );
    assert_eq!(up.hits(), 0);
}

#[tokio::test]
async fn legacy_completions_and_embeddings_are_400s_naming_the_anthropic_provider() {
    let (up, app) = spawn(Reply::text("unused"), "PASARELA_TEST_ANTHROPIC_KEY_14").await;

    let resp = app
        .post(
            "/v1/completions",
            &json!({"model": ROUTE, "prompt": "Once upon"}),
        )
        .await;
    let error = expect_error(resp, 400).await;
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("anthropic provider"),
        "{error}"
    );

    let resp = app
        .post("/v1/embeddings", &json!({"model": ROUTE, "input": "hello"}))
        .await;
    let error = expect_error(resp, 400).await;
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("anthropic provider"),
        "{error}"
    );
    assert_eq!(up.hits(), 0);
}
