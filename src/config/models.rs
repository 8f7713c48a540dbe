//! `[engine]` and `[models.NAME]`: the models run in this process and where their files are.

use std::path::PathBuf;

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EngineConfig {
    /// Relative model paths resolve against this directory; `PASARELA_MODELS_DIR` overrides it.
    pub models_dir: PathBuf,
    /// The Hugging Face cache for `hf_repo` models; unset, Hugging Face's own variables
    /// (`HF_HUB_CACHE`, `HF_HOME`) decide.
    pub hf_cache_dir: Option<PathBuf>,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            models_dir: PathBuf::from("models"),
            hf_cache_dir: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModelKind {
    Chat,
    Embedding,
}

/// A model served in-process. Exactly one of `path` and `hf_repo` says where it is.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocalModelConfig {
    pub kind: ModelKind,
    /// A GGUF file (chat) or a directory with config.json, model.safetensors and
    /// tokenizer.json (embedding); relative to `engine.models_dir`.
    #[serde(default)]
    pub path: Option<PathBuf>,
    /// A Hugging Face repository, `owner/name`.
    #[serde(default)]
    pub hf_repo: Option<String>,
    /// The GGUF file within `hf_repo` (chat models).
    #[serde(default)]
    pub hf_file: Option<String>,
    /// Branch, tag or commit of `hf_repo` (default `main`).
    #[serde(default)]
    pub hf_revision: Option<String>,
    /// A tokenizer.json to use instead of the tokenizer in the GGUF metadata.
    #[serde(default)]
    pub tokenizer: Option<PathBuf>,
    /// Convert 4-bit weights to 8-bit at load: about three times faster decoding on CPUs
    /// (candle has no SIMD kernel for Q4_1), for 1.6× the memory. CPU only: a CUDA build
    /// runs every format as stored.
    #[serde(default = "default_true")]
    pub requantize: bool,
    /// Most sequences decoded together (continuous batching).
    #[serde(default = "default_max_batch")]
    pub max_batch: usize,
    /// Requests waiting beyond this get 429 at once.
    #[serde(default = "default_queue_capacity")]
    pub queue_capacity: usize,
    /// Caps the context the model's metadata declares (memory for KV caches grows with it).
    #[serde(default)]
    pub context_length: Option<usize>,
    /// `max_tokens` when a request sets none.
    #[serde(default = "default_max_tokens")]
    pub default_max_tokens: usize,
}

fn default_true() -> bool {
    true
}
fn default_max_batch() -> usize {
    8
}
fn default_queue_capacity() -> usize {
    64
}
fn default_max_tokens() -> usize {
    512
}
