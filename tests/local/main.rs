//! Local models served through the real HTTP API: SmolLM2-135M-Instruct (GGUF) for chat and
//! completions, all-MiniLM-L6-v2 for embeddings. Needs `scripts/fetch-models`; without the
//! files each test says it skips, unless `PASARELA_REQUIRE_ALL` is set. These tests run one at
//! a time (.config/nextest.toml): each loads models that use every core.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../gateway/helpers.rs"]
#[allow(
    dead_code,
    reason = "shared with the gateway tests, which use all of it"
)]
mod helpers;
#[path = "../gateway/otlp_receiver.rs"]
#[allow(
    dead_code,
    reason = "shared with the gateway tests, which use all of it"
)]
mod otlp_receiver;

mod chat;
mod embeddings;
mod eval;
mod loading;
mod otel;
mod prompts;

use std::path::PathBuf;

pub fn models_dir() -> PathBuf {
    std::env::var_os("PASARELA_MODELS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models"))
}

/// The models dir when the default models are there; `None` (after saying so) when not.
pub fn models_or_skip(test: &str) -> Option<PathBuf> {
    let dir = models_dir();
    let present = dir
        .join("smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf")
        .exists()
        && dir.join("all-minilm-l6-v2/model.safetensors").exists();
    if present {
        return Some(dir);
    }
    assert!(
        std::env::var_os("PASARELA_REQUIRE_ALL").is_none(),
        "default models missing in {} and PASARELA_REQUIRE_ALL is set: run scripts/fetch-models",
        dir.display()
    );
    eprintln!(
        "SKIPPED {test}: default models missing in {} (run scripts/fetch-models)",
        dir.display()
    );
    None
}

pub const CHAT: &str = "smollm2-135m-instruct";
pub const EMBED: &str = "all-minilm-l6-v2";

/// Config serving the chat model (`max_batch`, `queue_capacity`) and the embedder.
pub fn config(dir: &std::path::Path, max_batch: usize, queue: usize) -> String {
    format!(
        r#"
[engine]
models_dir = "{dir}"

[models.{CHAT}]
kind = "chat"
path = "smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf"
max_batch = {max_batch}
queue_capacity = {queue}

[models.{EMBED}]
kind = "embedding"
path = "all-minilm-l6-v2"
"#,
        dir = dir.display()
    )
}
