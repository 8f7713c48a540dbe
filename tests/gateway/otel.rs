//! Request spans exported over OTLP to a real receiver in the test, over gRPC and
//! HTTP/protobuf: span names, `gen_ai.*` attributes, parent links to the client's
//! `traceparent` and from upstream attempts, the `traceparent` sent upstream, and prompt text
//! kept out unless enabled.

use std::time::Duration;

use serde_json::json;

use crate::anthropic_upstream::{self, AnthropicUpstream};
use crate::helpers::{TestApp, one_route, user_message};
use crate::openai_upstream::{OpenAiUpstream, Reply};
use crate::otlp_receiver::{OtlpReceiver, ReceivedSpan};

const SERVER: i32 = 2;
const CLIENT: i32 = 3;
const STATUS_ERROR: i32 = 2;
const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CLIENT_SPAN: &str = "00f067aa0ba902b7";

fn named<'a>(spans: &'a [ReceivedSpan], name: &str) -> Vec<&'a ReceivedSpan> {
    spans.iter().filter(|s| s.name == name).collect()
}

fn one<'a>(spans: &'a [ReceivedSpan], name: &str) -> &'a ReceivedSpan {
    let found = named(spans, name);
    assert_eq!(found.len(), 1, "one span named {name:?} in {spans:#?}");
    found[0]
}

#[tokio::test]
async fn a_streamed_chat_is_a_child_of_the_clients_trace_with_usage_over_grpc() {
    let receiver = OtlpReceiver::grpc().await;
    let upstream = OpenAiUpstream::start(Reply::stream_of(&["Hel", "lo", "!"], true)).await;
    let otlp = format!(
        "[telemetry.otlp]\nendpoint = \"{}\"\nprotocol = \"grpc\"\nservice_name = \"pasarela-test\"\n",
        receiver.endpoint()
    );
    let app = TestApp::spawn(&one_route(&upstream.base_url(), &otlp)).await;

    let mut body = user_message("gpt-test", "a secret prompt");
    body["stream"] = json!(true);
    body["temperature"] = json!(0.5);
    body["max_tokens"] = json!(20);
    let resp = app
        .client
        .post(app.url("/v1/chat/completions"))
        .header("traceparent", format!("00-{TRACE_ID}-{CLIENT_SPAN}-01"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let text = resp.text().await.unwrap();
    assert!(text.contains("[DONE]"), "{text}");
    // A graceful stop flushes the spans still queued.
    app.stop().await;
    let spans = receiver.wait_for(2, Duration::from_secs(10)).await;

    let request = one(&spans, "chat gpt-test");
    assert_eq!(request.kind, SERVER);
    assert_eq!(request.trace_id, TRACE_ID);
    assert_eq!(request.parent_span_id, CLIENT_SPAN);
    assert_eq!(request.service_name.as_deref(), Some("pasarela-test"));
    assert_eq!(request.str("gen_ai.operation.name"), Some("chat"));
    assert_eq!(request.str("gen_ai.provider.name"), Some("openai"));
    assert_eq!(request.str("gen_ai.request.model"), Some("gpt-test"));
    assert_eq!(request.str("gen_ai.response.model"), Some("upstream-model"));
    assert_eq!(request.double("gen_ai.request.temperature"), Some(0.5));
    assert_eq!(request.int("gen_ai.request.max_tokens"), Some(20));
    // The stand-in reports 9 prompt tokens and one completion token per piece, in the final
    // usage chunk of the stream.
    assert_eq!(request.int("gen_ai.usage.input_tokens"), Some(9));
    assert_eq!(request.int("gen_ai.usage.output_tokens"), Some(3));
    assert_eq!(
        request.strings("gen_ai.response.finish_reasons"),
        Some(vec!["stop".to_owned()])
    );
    assert_eq!(request.int("http.response.status_code"), Some(200));
    assert_eq!(
        request.str("pasarela.deployment"),
        Some("up/upstream-model")
    );
    assert!(request.attr("gen_ai.input.messages").is_none());
    assert!(request.attr("gen_ai.output.messages").is_none());

    let call = one(&spans, "chat upstream-model");
    assert_eq!(call.kind, CLIENT);
    assert_eq!(call.trace_id, TRACE_ID);
    assert_eq!(call.parent_span_id, request.span_id);
    assert_eq!(call.str("gen_ai.request.model"), Some("upstream-model"));
    assert_eq!(call.str("gen_ai.provider.name"), Some("openai"));
    assert_eq!(call.int("gen_ai.usage.output_tokens"), Some(3));
    assert!(call.start_unix_nano >= request.start_unix_nano);
    assert!(call.end_unix_nano <= request.end_unix_nano + 1_000_000);

    // The upstream saw the attempt's span as its parent, in the client's trace.
    let (_, headers, _) = upstream.last();
    assert_eq!(
        headers["traceparent"].to_str().unwrap(),
        format!("00-{TRACE_ID}-{}-01", call.span_id)
    );
    for span in &spans {
        for (key, value) in &span.attributes {
            assert!(
                !format!("{value:?}").contains("a secret prompt"),
                "prompt text in {key} of {}",
                span.name
            );
        }
    }
}

#[tokio::test]
async fn retries_get_a_span_each_and_content_is_recorded_when_enabled_over_http_protobuf() {
    let receiver = OtlpReceiver::http().await;
    let upstream = OpenAiUpstream::start(Reply::Chat("Bonjour".into())).await;
    upstream.push(Reply::status(503, "overloaded"));
    let otlp = format!(
        "[telemetry.otlp]\nendpoint = \"{}\"\nprotocol = \"http/protobuf\"\nrecord_content = true\nheaders = {{ x-tenant = \"team-a\" }}\n",
        receiver.endpoint()
    );
    let app = TestApp::spawn(&one_route(&upstream.base_url(), &otlp)).await;
    let resp = app.chat(user_message("gpt-test", "Say hello")).await;
    assert_eq!(resp.status(), 200);
    resp.text().await.unwrap();
    app.stop().await;
    let spans = receiver.wait_for(3, Duration::from_secs(10)).await;

    let request = one(&spans, "chat gpt-test");
    // No `traceparent` from the client: a new trace, rooted here.
    assert_eq!(request.parent_span_id, "");
    assert_eq!(request.service_name.as_deref(), Some("pasarela"));
    assert_eq!(request.int("gen_ai.usage.input_tokens"), Some(9));
    let input = request.str("gen_ai.input.messages").unwrap();
    let input: serde_json::Value = serde_json::from_str(input).unwrap();
    assert_eq!(
        input,
        json!([{"role": "user", "parts": [{"type": "text", "content": "Say hello"}]}])
    );
    let output = request.str("gen_ai.output.messages").unwrap();
    assert!(
        output.contains("Bonjour") && output.contains("stop"),
        "{output}"
    );

    let mut attempts = named(&spans, "chat upstream-model");
    attempts.sort_by_key(|s| s.int("pasarela.attempt"));
    assert_eq!(attempts.len(), 2, "{spans:#?}");
    assert!(
        attempts
            .iter()
            .all(|s| s.parent_span_id == request.span_id && s.trace_id == request.trace_id)
    );
    assert_eq!(attempts[0].int("pasarela.attempt"), Some(0));
    assert_eq!(attempts[0].str("error.type"), Some("503"));
    assert_eq!(attempts[0].status, STATUS_ERROR);
    assert_eq!(attempts[1].int("pasarela.attempt"), Some(1));
    assert_eq!(attempts[1].str("error.type"), None);
    assert_eq!(
        attempts[1].str("gen_ai.response.model"),
        Some("upstream-model")
    );

    let exports = receiver.export_headers();
    assert!(exports.iter().all(|h| h["x-tenant"] == "team-a"));
    assert!(
        exports
            .iter()
            .all(|h| h["content-type"] == "application/x-protobuf")
    );
}

#[tokio::test]
async fn without_otlp_settings_nothing_is_traced_or_sent_upstream() {
    let upstream = OpenAiUpstream::start(Reply::Chat("hi".into())).await;
    let app = TestApp::spawn(&one_route(&upstream.base_url(), "")).await;
    let resp = app.chat(user_message("gpt-test", "hello")).await;
    assert_eq!(resp.status(), 200);
    let (_, headers, _) = upstream.last();
    assert!(headers.get("traceparent").is_none());
    app.stop().await;
}

#[tokio::test]
async fn an_anthropic_call_carries_the_attempts_traceparent() {
    let key_var = "PASARELA_TEST_OTEL_ANTHROPIC_KEY";
    // SAFETY: the name is unique to this test and set before the gateway reads it; std
    // serialises its own environment access.
    unsafe { std::env::set_var(key_var, "sk-ant-otel") };
    let receiver = OtlpReceiver::http().await;
    let upstream = AnthropicUpstream::start(anthropic_upstream::Reply::text("Hi")).await;
    let config = format!(
        r#"
[providers.claude]
kind = "anthropic"
base_url = "{base_url}"
api_key_env = "{key_var}"

[routes.claude-test]
deployments = [{{ provider = "claude", model = "{model}" }}]

[telemetry.otlp]
endpoint = "{endpoint}/v1/traces"
"#,
        base_url = upstream.base_url(),
        model = anthropic_upstream::MODEL,
        endpoint = receiver.endpoint(),
    );
    let app = TestApp::spawn(&config).await;
    let resp = app
        .client
        .post(app.url("/v1/chat/completions"))
        .header("traceparent", format!("00-{TRACE_ID}-{CLIENT_SPAN}-01"))
        .json(&user_message("claude-test", "hello"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    app.stop().await;
    let spans = receiver.wait_for(2, Duration::from_secs(10)).await;
    let request = one(&spans, "chat claude-test");
    assert_eq!(request.str("gen_ai.provider.name"), Some("anthropic"));
    assert_eq!(request.parent_span_id, CLIENT_SPAN);
    let call = one(&spans, &format!("chat {}", anthropic_upstream::MODEL));
    assert_eq!(call.parent_span_id, request.span_id);
    let (_, headers, _) = upstream.last();
    assert_eq!(
        headers["traceparent"].to_str().unwrap(),
        format!("00-{TRACE_ID}-{}-01", call.span_id)
    );
}

#[tokio::test]
async fn a_key_that_asks_for_content_gets_it_recorded_while_others_do_not() {
    const ADMIN: &str = "sk-admin-otel";
    let receiver = OtlpReceiver::http().await;
    let upstream = OpenAiUpstream::start(Reply::Chat("Bonjour".into())).await;
    let extra = format!(
        "[auth]\nadmin_key_hashes = [\"{}\"]\n\n[telemetry.otlp]\nendpoint = \"{}\"\n",
        pasarela::limits::ApiKeyHash::of(ADMIN),
        receiver.endpoint()
    );
    let app = TestApp::spawn(&one_route(&upstream.base_url(), &extra)).await;
    let mut keys = Vec::new();
    for (name, record) in [("recorded", true), ("private", false)] {
        let resp = app
            .client
            .post(app.url("/api/keys"))
            .bearer_auth(ADMIN)
            .json(&json!({"name": name, "record_content": record}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 201);
        let created: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(created["record_content"], record);
        keys.push(created["key"].as_str().unwrap().to_owned());
    }
    for key in &keys {
        let resp = app
            .client
            .post(app.url("/v1/chat/completions"))
            .bearer_auth(key)
            .json(&user_message("gpt-test", "Say hello"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        resp.text().await.unwrap();
    }
    app.stop().await;
    let spans = receiver.wait_for(4, Duration::from_secs(10)).await;
    let by_key = |name: &str| {
        spans
            .iter()
            .find(|s| s.name == "chat gpt-test" && s.str("pasarela.key.name") == Some(name))
            .unwrap_or_else(|| panic!("no span for key {name} in {spans:#?}"))
    };
    let recorded = by_key("recorded");
    assert!(
        recorded
            .str("gen_ai.input.messages")
            .unwrap()
            .contains("Say hello")
    );
    assert!(
        recorded
            .str("gen_ai.output.messages")
            .unwrap()
            .contains("Bonjour")
    );
    let private = by_key("private");
    assert!(private.attr("gen_ai.input.messages").is_none());
    assert!(private.attr("gen_ai.output.messages").is_none());
}
