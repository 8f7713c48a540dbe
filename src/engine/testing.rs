//! Locating the default model files in tests. They come from `scripts/fetch-models`
//! (`PASARELA_MODELS_DIR`, else `./models`). Without them a test says it skips, unless
//! `PASARELA_REQUIRE_ALL` is set (as `scripts/test` does), where their absence is a failure.

use std::path::PathBuf;

pub fn models_dir() -> PathBuf {
    std::env::var_os("PASARELA_MODELS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models"))
}

fn require(path: PathBuf, test: &str) -> Option<PathBuf> {
    if path.exists() {
        return Some(path);
    }
    assert!(
        std::env::var_os("PASARELA_REQUIRE_ALL").is_none(),
        "{} is missing and PASARELA_REQUIRE_ALL is set: run scripts/fetch-models",
        path.display()
    );
    eprintln!(
        "SKIPPED {test}: {} is missing (run scripts/fetch-models)",
        path.display()
    );
    None
}

/// SmolLM2-135M-Instruct, Q4_1 GGUF.
pub fn chat_gguf(test: &str) -> Option<PathBuf> {
    require(
        models_dir().join("smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf"),
        test,
    )
}

/// all-MiniLM-L6-v2: a directory with config.json, model.safetensors and tokenizer.json.
#[allow(
    dead_code,
    reason = "for the embedder's tests, which live on another branch until merged"
)]
pub fn embedder_dir(test: &str) -> Option<PathBuf> {
    let weights = require(
        models_dir().join("all-minilm-l6-v2/model.safetensors"),
        test,
    )?;
    weights.parent().map(PathBuf::from)
}
