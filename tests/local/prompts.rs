//! The shipped example prompts against the default local model: pushed by the real CLI into
//! the gateway's store, then named in chat requests. A 135M model's answers are not judged
//! here (that is what eval suites are for); what must hold is that each prompt renders,
//! reaches the model with its own parameters, and comes back as a real answer.

use std::process::Command;

use serde_json::{Value, json};

use crate::helpers::TestApp;
use crate::{CHAT, config, models_or_skip};

#[tokio::test]
async fn the_shipped_prompts_pushed_by_the_cli_are_served_by_the_local_model() {
    let Some(dir) =
        models_or_skip("the_shipped_prompts_pushed_by_the_cli_are_served_by_the_local_model")
    else {
        return;
    };
    let app = TestApp::spawn(&config(&dir, 4, 8)).await;
    let shipped = concat!(env!("CARGO_MANIFEST_DIR"), "/prompts");
    let config_file = app.data_dir.path().join("cli.toml");
    std::fs::write(&config_file, "").unwrap();
    let push = Command::new(env!("CARGO_BIN_EXE_pasarela"))
        .args([
            "prompts", "push", shipped, "-m", "examples", "--author", "test",
        ])
        .arg("--config")
        .arg(&config_file)
        .arg("--data-dir")
        .arg(app.data_dir.path())
        .output()
        .unwrap();
    assert!(
        push.status.success(),
        "{}",
        String::from_utf8_lossy(&push.stderr)
    );

    let cases = [
        ("greeting", json!({"name": "Ada"})),
        (
            "summarize",
            json!({"text": "The cat sat on the mat all afternoon, then slept."}),
        ),
        (
            "classify-sentiment",
            json!({"text": "I love this, it is wonderful!"}),
        ),
    ];
    for (name, variables) in cases {
        let resp = app
            .chat(json!({"prompt": {"name": name, "label": "latest", "variables": variables}}))
            .await;
        assert_eq!(resp.status(), 200, "{name}");
        assert_eq!(resp.headers()["x-pasarela-prompt-name"], name);
        assert_eq!(resp.headers()["x-pasarela-prompt-version"], "1");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["model"], CHAT, "{name}: the prompt's model serves it");
        let text = body["choices"][0]["message"]["content"].as_str().unwrap();
        assert!(!text.trim().is_empty(), "{name}: an empty answer");
        // The prompt's own max_tokens bounds the answer.
        let limit = if name == "classify-sentiment" { 4 } else { 96 };
        let used = body["usage"]["completion_tokens"].as_u64().unwrap();
        assert!(used <= limit, "{name}: {used} tokens");
        eprintln!("{name}: {text:?}");
    }
}
