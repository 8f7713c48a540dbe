//! Round trips through an OpenAI-compatible upstream: JSON and SSE, tools, usage, pass-through
//! of fields the gateway does not model, and cancellation when the client goes away.

use std::time::Duration;

use futures::StreamExt;
use serde_json::{Value, json};

use crate::helpers::{TestApp, one_route, sse_data, user_message};
use crate::openai_upstream::{OpenAiUpstream, Reply, chat_chunks};

#[tokio::test]
async fn non_streaming_round_trip_rewrites_model_and_passes_unknown_fields_both_ways() {
    let up = OpenAiUpstream::start(Reply::Chat("Hello from upstream".into())).await;
    let app = TestApp::spawn(&one_route(&up.base_url(), "")).await;

    let resp = app
        .chat(json!({
            "model": "gpt-test",
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": [
                    {"type": "text", "text": "What is in this image?"},
                    {"type": "image_url", "image_url": {"url": "https://example.com/cat.png", "detail": "low"}}
                ]}
            ],
            "temperature": 0.2, "top_p": 0.9, "seed": 7, "n": 1, "stop": ["\n\n"],
            "max_completion_tokens": 50, "presence_penalty": 0.5, "frequency_penalty": 0.1,
            "response_format": {"type": "json_schema", "json_schema": {"name": "answer", "schema": {"type": "object"}, "strict": true}},
            "logprobs": true, "top_logprobs": 2, "user": "u-1", "metadata": {"team": "search"},
            "logit_bias": {"50256": -100}, "store": false, "service_tier": "flex"
        }))
        .await;

    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-pasarela-deployment"], "up/upstream-model");
    let overhead: f64 = resp.headers()["x-pasarela-overhead-ms"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(overhead >= 0.0);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(
        body["choices"][0]["message"]["content"],
        "Hello from upstream"
    );
    assert_eq!(body["usage"]["total_tokens"], 12);
    // Fields the gateway does not model come back untouched.
    assert_eq!(body["service_tier"], "default");
    assert_eq!(body["usage"]["prompt_tokens_details"]["cached_tokens"], 0);

    let (path, _, sent) = up.last();
    assert_eq!(path, "/v1/chat/completions");
    assert_eq!(sent["model"], "upstream-model");
    assert_eq!(sent["logit_bias"], json!({"50256": -100}));
    assert_eq!(sent["store"], false);
    assert_eq!(sent["service_tier"], "flex");
    assert_eq!(
        sent["messages"][1]["content"][1]["image_url"]["detail"],
        "low"
    );
    assert_eq!(sent["response_format"]["json_schema"]["strict"], true);
    assert_eq!(sent["metadata"], json!({"team": "search"}));
    assert_eq!(sent["stop"], json!(["\n\n"]));
    assert!(
        sent.get("stream").is_none(),
        "a non-streaming call is not sent as a stream"
    );
}

#[tokio::test]
async fn streaming_round_trip_ends_with_done() {
    let up = OpenAiUpstream::start(Reply::stream_of(&["Hel", "lo", " world"], false)).await;
    let app = TestApp::spawn(&one_route(&up.base_url(), "")).await;

    let mut req = user_message("gpt-test", "hi");
    req["stream"] = json!(true);
    let resp = app.chat(req).await;
    assert_eq!(resp.status(), 200);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let frames = sse_data(&resp.text().await.unwrap());

    assert_eq!(frames.last().map(String::as_str), Some("[DONE]"));
    let chunks: Vec<Value> = frames[..frames.len() - 1]
        .iter()
        .map(|f| serde_json::from_str(f).unwrap())
        .collect();
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(text, "Hello world");
    assert_eq!(
        chunks.last().unwrap()["choices"][0]["finish_reason"],
        "stop"
    );
    assert_eq!(up.last().2["stream"], true);
}

#[tokio::test]
async fn stream_ends_with_usage_chunk_when_include_usage_is_set() {
    let up = OpenAiUpstream::start(Reply::stream_of(&["a", "b"], true)).await;
    let app = TestApp::spawn(&one_route(&up.base_url(), "")).await;

    let mut req = user_message("gpt-test", "hi");
    req["stream"] = json!(true);
    req["stream_options"] = json!({"include_usage": true});
    let frames = sse_data(&app.chat(req).await.text().await.unwrap());

    assert_eq!(up.last().2["stream_options"]["include_usage"], true);
    assert_eq!(frames.last().map(String::as_str), Some("[DONE]"));
    let last: Value = serde_json::from_str(&frames[frames.len() - 2]).unwrap();
    assert_eq!(last["choices"], json!([]));
    assert_eq!(last["usage"]["completion_tokens"], 2);
    assert_eq!(last["usage"]["total_tokens"], 11);
}

#[tokio::test]
async fn tool_calls_round_trip_without_streaming() {
    let completion = json!({
        "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "upstream-model",
        "choices": [{"index": 0, "finish_reason": "tool_calls", "logprobs": null, "message": {
            "role": "assistant", "content": null,
            "tool_calls": [{"id": "call_1", "type": "function",
                            "function": {"name": "get_weather", "arguments": "{\"city\":\"Lima\"}"}}]}}],
        "usage": {"prompt_tokens": 20, "completion_tokens": 8, "total_tokens": 28}
    });
    let up = OpenAiUpstream::start(Reply::Json {
        status: 200,
        body: completion,
        headers: vec![],
    })
    .await;
    let app = TestApp::spawn(&one_route(&up.base_url(), "")).await;

    let resp = app
        .chat(json!({
            "model": "gpt-test",
            "messages": [
                {"role": "user", "content": "Weather in Lima and Quito?"},
                {"role": "assistant", "content": null, "tool_calls": [
                    {"id": "call_0", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Quito\"}"}}]},
                {"role": "tool", "tool_call_id": "call_0", "content": "{\"temp_c\": 14}"}
            ],
            "tools": [{"type": "function", "function": {"name": "get_weather", "description": "Current weather",
                       "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}],
            "tool_choice": "auto",
            "parallel_tool_calls": false
        }))
        .await;

    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    let message = &body["choices"][0]["message"];
    assert_eq!(message["content"], Value::Null);
    assert_eq!(message["tool_calls"][0]["function"]["name"], "get_weather");
    assert_eq!(
        message["tool_calls"][0]["function"]["arguments"],
        "{\"city\":\"Lima\"}"
    );
    assert_eq!(body["choices"][0]["finish_reason"], "tool_calls");

    let sent = up.last().2;
    assert_eq!(sent["messages"][1]["tool_calls"][0]["id"], "call_0");
    assert_eq!(sent["messages"][2]["tool_call_id"], "call_0");
    assert_eq!(
        sent["tools"][0]["function"]["parameters"]["required"],
        json!(["city"])
    );
    assert_eq!(sent["tool_choice"], "auto");
    assert_eq!(sent["parallel_tool_calls"], false);
}

#[tokio::test]
async fn tool_call_deltas_stream_through_intact() {
    let chunk = |delta: Value, finish: Value| {
        json!({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
               "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
        .to_string()
    };
    let frames = vec![
        chunk(
            json!({"role": "assistant", "content": null, "tool_calls": [
            {"index": 0, "id": "call_9", "type": "function", "function": {"name": "lookup", "arguments": ""}}]}),
            Value::Null,
        ),
        chunk(
            json!({"tool_calls": [{"index": 0, "function": {"arguments": "{\"q\":"}}]}),
            Value::Null,
        ),
        chunk(
            json!({"tool_calls": [{"index": 0, "function": {"arguments": "\"rust\"}"}}]}),
            Value::Null,
        ),
        chunk(json!({}), json!("tool_calls")),
    ];
    let up = OpenAiUpstream::start(Reply::Stream {
        frames,
        delay: Duration::ZERO,
        done: true,
    })
    .await;
    let app = TestApp::spawn(&one_route(&up.base_url(), "")).await;

    let mut req = user_message("gpt-test", "search");
    req["stream"] = json!(true);
    req["tools"] = json!([{"type": "function", "function": {"name": "lookup"}}]);
    let frames = sse_data(&app.chat(req).await.text().await.unwrap());

    assert_eq!(frames.last().map(String::as_str), Some("[DONE]"));
    let chunks: Vec<Value> = frames[..frames.len() - 1]
        .iter()
        .map(|f| serde_json::from_str(f).unwrap())
        .collect();
    assert_eq!(
        chunks[0]["choices"][0]["delta"]["tool_calls"][0]["id"],
        "call_9"
    );
    let args: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"].as_str())
        .collect();
    assert_eq!(args, "{\"q\":\"rust\"}");
    assert_eq!(
        chunks.last().unwrap()["choices"][0]["finish_reason"],
        "tool_calls"
    );
}

#[tokio::test]
async fn stream_broken_midway_ends_with_an_error_frame_and_no_done() {
    let up = OpenAiUpstream::start(Reply::Stream {
        frames: chat_chunks(&["partial", " answer"], false)[..2].to_vec(),
        delay: Duration::ZERO,
        done: false,
    })
    .await;
    let app = TestApp::spawn(&one_route(&up.base_url(), "")).await;

    let mut req = user_message("gpt-test", "hi");
    req["stream"] = json!(true);
    let frames = sse_data(&app.chat(req).await.text().await.unwrap());

    assert!(!frames.iter().any(|f| f == "[DONE]"), "{frames:?}");
    let last: Value = serde_json::from_str(frames.last().unwrap()).unwrap();
    assert_eq!(last["error"]["type"], "server_error");
    assert!(
        last["error"]["message"]
            .as_str()
            .unwrap()
            .contains("[DONE]"),
        "{last}"
    );
    assert_eq!(up.hits(), 1, "no retry once bytes reached the client");
}

#[tokio::test]
async fn error_object_inside_an_upstream_stream_reaches_the_client_as_an_error_frame() {
    let mut frames = chat_chunks(&["x"], false)[..2].to_vec();
    frames.push(json!({"error": {"message": "The server had an error while processing your request.", "type": "server_error"}}).to_string());
    let up = OpenAiUpstream::start(Reply::Stream {
        frames,
        delay: Duration::ZERO,
        done: true,
    })
    .await;
    let app = TestApp::spawn(&one_route(&up.base_url(), "")).await;

    let mut req = user_message("gpt-test", "hi");
    req["stream"] = json!(true);
    let frames = sse_data(&app.chat(req).await.text().await.unwrap());

    assert!(!frames.iter().any(|f| f == "[DONE]"), "{frames:?}");
    let last: Value = serde_json::from_str(frames.last().unwrap()).unwrap();
    assert!(
        last["error"]["message"]
            .as_str()
            .unwrap()
            .contains("error while processing"),
        "{last}"
    );
}

#[tokio::test]
async fn client_disconnect_cancels_the_upstream_stream() {
    let up = OpenAiUpstream::start(Reply::Stream {
        frames: chat_chunks(&["tick"; 200], false),
        delay: Duration::from_millis(50),
        done: true,
    })
    .await;
    let app = TestApp::spawn(&one_route(&up.base_url(), "")).await;

    let mut req = user_message("gpt-test", "count forever");
    req["stream"] = json!(true);
    let resp = app.chat(req).await;
    let mut body = resp.bytes_stream();
    let first = body.next().await.unwrap().unwrap();
    assert!(String::from_utf8_lossy(&first).contains("data:"));
    drop(body);

    up.wait_abandoned(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn client_disconnect_cancels_a_pending_non_streaming_call() {
    let up = OpenAiUpstream::start(Reply::Hang).await;
    let app = TestApp::spawn(&one_route(&up.base_url(), "")).await;

    let client = reqwest::Client::builder()
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let result = client
        .post(app.url("/v1/chat/completions"))
        .json(&user_message("gpt-test", "hi"))
        .send()
        .await;
    assert!(result.is_err(), "the client gave up");

    up.wait_abandoned(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn completions_and_embeddings_pass_through() {
    let completion = json!({"id": "cmpl-1", "object": "text_completion", "created": 1, "model": "upstream-model",
        "choices": [{"text": " world", "index": 0, "logprobs": null, "finish_reason": "length"}],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}});
    let embedding = json!({"object": "list", "model": "upstream-model",
        "data": [{"object": "embedding", "index": 0, "embedding": [0.25, -0.5]}],
        "usage": {"prompt_tokens": 2, "total_tokens": 2}});
    let up = OpenAiUpstream::start(Reply::Chat("unused".into())).await;
    up.push(Reply::Json {
        status: 200,
        body: completion,
        headers: vec![],
    });
    up.push(Reply::Json {
        status: 200,
        body: embedding,
        headers: vec![],
    });
    let app = TestApp::spawn(&one_route(&up.base_url(), "")).await;

    let resp = app
        .post(
            "/v1/completions",
            &json!({"model": "gpt-test", "prompt": "hello", "max_tokens": 1, "echo": false}),
        )
        .await;
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["choices"][0]["text"], " world");
    let (path, _, sent) = up.last();
    assert_eq!(path, "/v1/completions");
    assert_eq!(sent["prompt"], "hello");

    let resp = app
        .post(
            "/v1/embeddings",
            &json!({"model": "gpt-test", "input": ["a", "b"], "encoding_format": "float"}),
        )
        .await;
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["data"][0]["embedding"], json!([0.25, -0.5]));
    let (path, _, sent) = up.last();
    assert_eq!(path, "/v1/embeddings");
    assert_eq!(sent["input"], json!(["a", "b"]));
    assert_eq!(sent["model"], "upstream-model");
}

#[tokio::test]
async fn completions_stream_ends_with_done() {
    let frame = |text: &str, finish: Value| {
        json!({"id": "cmpl-1", "object": "text_completion", "created": 1, "model": "m",
               "choices": [{"text": text, "index": 0, "logprobs": null, "finish_reason": finish}]})
        .to_string()
    };
    let up = OpenAiUpstream::start(Reply::Stream {
        frames: vec![frame("Once", Value::Null), frame(" upon", json!("length"))],
        delay: Duration::ZERO,
        done: true,
    })
    .await;
    let app = TestApp::spawn(&one_route(&up.base_url(), "")).await;

    let resp = app
        .post(
            "/v1/completions",
            &json!({"model": "gpt-test", "prompt": "Tell a story", "stream": true}),
        )
        .await;
    let frames = sse_data(&resp.text().await.unwrap());
    assert_eq!(frames.len(), 3);
    assert_eq!(frames[2], "[DONE]");
    let text: String = frames[..2]
        .iter()
        .map(|f| {
            serde_json::from_str::<Value>(f).unwrap()["choices"][0]["text"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(text, "Once upon");
}

#[tokio::test]
async fn provider_key_comes_from_the_named_environment_variable() {
    // SAFETY: this variable name is unique to this test and set before the server reads it;
    // no other thread reads or writes it.
    unsafe { std::env::set_var("PASARELA_TEST_UPSTREAM_KEY_1", "sk-upstream-secret") };
    let up = OpenAiUpstream::start(Reply::Chat("ok".into())).await;
    let config = format!(
        "[providers.up]\nkind = \"openai\"\nbase_url = \"{}\"\napi_key_env = \"PASARELA_TEST_UPSTREAM_KEY_1\"\n\
         [routes.gpt-test]\ndeployments = [{{ provider = \"up\", model = \"m\" }}]\n",
        up.base_url()
    );
    let app = TestApp::spawn(&config).await;

    assert_eq!(app.chat(user_message("gpt-test", "hi")).await.status(), 200);
    let (_, headers, _) = up.last();
    assert_eq!(headers["authorization"], "Bearer sk-upstream-secret");
}
