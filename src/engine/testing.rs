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
pub fn embedder_dir(test: &str) -> Option<PathBuf> {
    let weights = require(
        models_dir().join("all-minilm-l6-v2/model.safetensors"),
        test,
    )?;
    weights.parent().map(PathBuf::from)
}

/// Held by every test that runs a model. Two candle thread pools on the same cores slow each
/// other down many times over, so such tests take turns within a test process; nextest's
/// `models` test group (.config/nextest.toml) does the same across processes.
pub fn model_lock() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    // A test that failed while holding the lock leaves nothing behind worth protecting.
    LOCK.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A ChatML prompt for SmolLM2 ("You are a helpful AI assistant named SmolLM, trained by
/// Hugging Face" / "Hello world"), 32 tokens.
pub const SMOLLM2_PROMPT: [u32; 32] = [
    1, 9690, 198, 2683, 359, 253, 5356, 5646, 11173, 3365, 3511, 308, 34519, 28, 7018, 411, 407,
    19712, 8182, 2, 198, 1, 4093, 198, 19556, 905, 2, 198, 1, 520, 9531, 198,
];

pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// The ids of the `k` largest logits, largest first.
pub fn top_k(logits: &[f32], k: usize) -> Vec<u32> {
    let mut ids: Vec<u32> = (0..logits.len() as u32).collect();
    ids.sort_by(|a, b| logits[*b as usize].total_cmp(&logits[*a as usize]));
    ids.truncate(k);
    ids
}
