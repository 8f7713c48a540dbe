//! The local engine's spans, exported to a real OTLP receiver: the request span, the engine
//! call under it, and the queue wait, prefill and decode phases under that.

use std::time::Duration;

use serde_json::json;

use crate::helpers::TestApp;
use crate::otlp_receiver::OtlpReceiver;
use crate::{CHAT, models_or_skip};

const SERVER: i32 = 2;
const INTERNAL: i32 = 1;

#[tokio::test]
async fn a_streamed_local_chat_has_queue_prefill_and_decode_spans_under_its_engine_call() {
    let Some(dir) = models_or_skip(
        "a_streamed_local_chat_has_queue_prefill_and_decode_spans_under_its_engine_call",
    ) else {
        return;
    };
    let receiver = OtlpReceiver::http().await;
    let config = format!(
        r#"
[engine]
models_dir = "{dir}"

[models.{CHAT}]
kind = "chat"
path = "smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf"

[telemetry.otlp]
endpoint = "{endpoint}"
"#,
        dir = dir.display(),
        endpoint = receiver.endpoint(),
    );
    let app = TestApp::spawn(&config).await;
    let body = json!({"model": CHAT, "messages": [{"role": "user", "content": "Hi"}],
        "temperature": 0, "max_tokens": 4, "stream": true});
    let resp = app.chat(body).await;
    assert_eq!(resp.status(), 200);
    assert!(resp.text().await.unwrap().contains("[DONE]"));
    app.stop().await;
    let spans = receiver.wait_for(5, Duration::from_secs(10)).await;

    let name = format!("chat {CHAT}");
    let request = spans
        .iter()
        .find(|s| s.name == name && s.kind == SERVER)
        .unwrap_or_else(|| panic!("no request span in {spans:#?}"));
    assert_eq!(request.str("gen_ai.provider.name"), Some("pasarela.local"));
    assert_eq!(request.int("gen_ai.usage.output_tokens"), Some(4));
    assert_eq!(
        request.strings("gen_ai.response.finish_reasons"),
        Some(vec!["length".to_owned()])
    );
    let call = spans
        .iter()
        .find(|s| s.name == name && s.kind == INTERNAL)
        .unwrap_or_else(|| panic!("no engine call span in {spans:#?}"));
    assert_eq!(call.parent_span_id, request.span_id);
    let phase = |n: &str| {
        let s = spans
            .iter()
            .find(|s| s.name == n)
            .unwrap_or_else(|| panic!("no {n} span in {spans:#?}"));
        assert_eq!(s.parent_span_id, call.span_id, "{n}");
        assert_eq!(s.trace_id, request.trace_id, "{n}");
        s
    };
    let (queue, prefill, decode) = (
        phase("engine.queue"),
        phase("engine.prefill"),
        phase("engine.decode"),
    );
    // One after the other, each within the engine call.
    assert!(call.start_unix_nano <= queue.start_unix_nano);
    assert!(queue.end_unix_nano <= prefill.start_unix_nano);
    assert!(prefill.end_unix_nano <= decode.start_unix_nano);
    assert!(decode.end_unix_nano <= call.end_unix_nano + 5_000_000);
    assert!(prefill.int("pasarela.engine.prompt_tokens").unwrap() > 0);
    assert_eq!(decode.int("pasarela.engine.output_tokens"), Some(4));
}
