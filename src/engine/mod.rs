//! In-process inference with candle: model files (local paths or the Hugging Face cache),
//! tokenizers (tokenizer.json or built from GGUF metadata), chat templates, the llama-family
//! forward pass with per-sequence KV caches, sampling, the scheduler that batches concurrent
//! sequences on a dedicated thread, and BERT-family embedders.
//!
//! Must not contain anything about HTTP: `providers::local` adapts it to OpenAI shapes.

mod bert;
pub mod chat;
#[cfg(all(test, feature = "cuda"))]
mod cuda_tests;
pub mod embedder;
mod error;
pub mod llama;
pub mod local_models;
pub mod sampler;
pub mod scheduler;
pub mod source;
pub mod stop;
pub mod template;
#[cfg(test)]
pub(crate) mod testing;
pub mod tokenizer;

pub use error::EngineError;

/// Where local models run: CUDA device 0 in a `cuda` build, else the CPU.
pub fn device() -> Result<candle_core::Device, EngineError> {
    #[cfg(feature = "cuda")]
    {
        candle_core::Device::new_cuda(0)
            .map_err(|e| EngineError::Inference(format!("cannot use CUDA device 0: {e}")))
    }
    #[cfg(not(feature = "cuda"))]
    {
        Ok(candle_core::Device::Cpu)
    }
}

/// How a log line names where a model runs: `cpu`, `cuda:0`.
pub fn device_label(device: &candle_core::Device) -> String {
    match device.location() {
        candle_core::DeviceLocation::Cpu => "cpu".to_owned(),
        candle_core::DeviceLocation::Cuda { gpu_id } => format!("cuda:{gpu_id}"),
        candle_core::DeviceLocation::Metal { gpu_id } => format!("metal:{gpu_id}"),
    }
}

/// Runs `f` while holding the process-wide inference lock. candle's kernels use every core;
/// two forward passes at once on a small machine slow both twentyfold (FACTS: oversubscription),
/// so chat steps and embedding batches take turns.
pub fn exclusive<R>(f: impl FnOnce() -> R) -> R {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _guard = LOCK
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    f()
}
