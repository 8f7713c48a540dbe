//! In-process inference with candle: model files (local paths or the Hugging Face cache),
//! tokenizers (tokenizer.json or built from GGUF metadata), chat templates, the llama-family
//! forward pass with per-sequence KV caches, sampling, the scheduler that batches concurrent
//! sequences on a dedicated thread, and BERT-family embedders.
//!
//! Must not contain anything about HTTP: `providers::local` adapts it to OpenAI shapes.

mod error;
pub mod llama;
#[cfg(test)]
pub(crate) mod testing;

pub use error::EngineError;
