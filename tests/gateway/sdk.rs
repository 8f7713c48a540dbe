//! Real client SDKs against the gateway: Rust's `async-openai` and the official Python
//! `openai` package (installed by `scripts/test` into a virtual environment).

use std::process::Stdio;

use async_openai::Client;
use async_openai::config::OpenAIConfig;
use async_openai::types::chat::{
    ChatCompletionRequestUserMessageArgs, CreateChatCompletionRequestArgs,
};
use async_openai::types::embeddings::CreateEmbeddingRequestArgs;
use futures::StreamExt;

use crate::helpers::{TestApp, one_route};
use crate::openai_upstream::{OpenAiUpstream, Reply, chat_chunks};

const KEY: &str = "sk-sdk-test";

async fn app_with_key(up: &OpenAiUpstream) -> TestApp {
    let hash = pasarela::limits::ApiKeyHash::of(KEY);
    TestApp::spawn(&one_route(
        &up.base_url(),
        &format!("[auth]\napi_key_hashes = [\"{hash}\"]\n"),
    ))
    .await
}

#[tokio::test]
async fn async_openai_client_works_with_and_without_streaming() {
    let up = OpenAiUpstream::start(Reply::Chat("Hello, SDK".into())).await;
    up.push(Reply::Chat("Hello, SDK".into()));
    up.push(Reply::Stream {
        frames: chat_chunks(&["str", "eam"], true),
        delay: std::time::Duration::ZERO,
        done: true,
    });
    up.push(Reply::Json {
        status: 200,
        body: serde_json::json!({"object": "list", "model": "upstream-model",
            "data": [{"object": "embedding", "index": 0, "embedding": [0.5, 0.25]}],
            "usage": {"prompt_tokens": 1, "total_tokens": 1}}),
        headers: vec![],
    });
    let app = app_with_key(&up).await;
    let client = Client::with_config(
        OpenAIConfig::new()
            .with_api_base(app.url("/v1"))
            .with_api_key(KEY),
    );

    let request = CreateChatCompletionRequestArgs::default()
        .model("gpt-test")
        .messages([ChatCompletionRequestUserMessageArgs::default()
            .content("hi")
            .build()
            .unwrap()
            .into()])
        .build()
        .unwrap();
    let response = client.chat().create(request.clone()).await.unwrap();
    assert_eq!(
        response.choices[0].message.content.as_deref(),
        Some("Hello, SDK")
    );
    assert_eq!(response.usage.unwrap().total_tokens, 12);

    let mut stream = client.chat().create_stream(request).await.unwrap();
    let mut text = String::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.unwrap();
        for choice in chunk.choices {
            text.push_str(choice.delta.content.as_deref().unwrap_or(""));
        }
    }
    assert_eq!(text, "stream");

    let embedding = client
        .embeddings()
        .create(
            CreateEmbeddingRequestArgs::default()
                .model("gpt-test")
                .input("x")
                .build()
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(embedding.data[0].embedding, vec![0.5, 0.25]);

    let models = client.models().list().await.unwrap();
    assert_eq!(models.data[0].id, "gpt-test");
}

/// The official Python SDK, run by the interpreter `scripts/test` prepares. Without it (a bare
/// `cargo test`), this test says so and skips, unless `PASARELA_REQUIRE_ALL=1` demands it.
#[tokio::test]
async fn official_python_sdk_works_with_and_without_streaming() {
    let Ok(python) = std::env::var("PASARELA_TEST_PYTHON") else {
        assert!(
            std::env::var("PASARELA_REQUIRE_ALL").is_err(),
            "PASARELA_TEST_PYTHON is not set but PASARELA_REQUIRE_ALL is: run scripts/test"
        );
        eprintln!(
            "SKIPPED official_python_sdk_works_with_and_without_streaming: PASARELA_TEST_PYTHON is not set (scripts/test sets it)"
        );
        return;
    };
    let up = OpenAiUpstream::start(Reply::Chat("Hello, Python".into())).await;
    up.push(Reply::Chat("Hello, Python".into()));
    up.push(Reply::stream_of(&["py", "thon"], true));
    up.push(Reply::status(400, "bad input from python"));
    let app = app_with_key(&up).await;

    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/sdk_roundtrip.py");
    let output = tokio::process::Command::new(python)
        .arg(script)
        .env("OPENAI_BASE_URL", app.url("/v1"))
        .env("OPENAI_API_KEY", KEY)
        .stdin(Stdio::null())
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "python failed\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(stdout.contains("non-stream: Hello, Python"), "{stdout}");
    assert!(stdout.contains("stream: python usage=11"), "{stdout}");
    assert!(
        stdout.contains("error: 400 bad input from python"),
        "{stdout}"
    );
}
