//! One 128-token prefill with the weights re-quantized to Q8_0, and optionally one decode
//! step of a batch of 8: a small, deterministic workload for counting instructions, where wall
//! clock is too noisy to compare kernels (a shared machine). Only `prefill_128` and
//! `decode_batch_8` are worth counting:
//! `CANDLE_NUM_THREADS=1 valgrind --tool=callgrind --toggle-collect='*prefill_128*' \
//!   target/release/examples/llama_prefill_once path/to/model.gguf`
//! (one thread: with two, callgrind also counts the pool's spinning).

use std::path::PathBuf;

use anyhow::Context;
use candle_core::Device;
use pasarela::engine::llama::LlamaModel;

#[inline(never)]
fn prefill_128(model: &LlamaModel, tokens: &[u32]) -> anyhow::Result<Vec<f32>> {
    Ok(model.prefill(tokens, &mut model.new_cache())?)
}

#[inline(never)]
fn decode_batch_8(model: &LlamaModel, tokens: &[u32]) -> anyhow::Result<Vec<Vec<f32>>> {
    let mut caches: Vec<_> = (0..tokens.len()).map(|_| model.new_cache()).collect();
    let mut refs: Vec<_> = caches.iter_mut().collect();
    Ok(model.decode_batch(tokens, &mut refs)?)
}

fn main() -> anyhow::Result<()> {
    let path = PathBuf::from(
        std::env::args()
            .nth(1)
            .context("usage: llama_prefill_once <model.gguf>")?,
    );
    let model = LlamaModel::open(&path, &Device::Cpu, true)?;
    let vocab = model.config().vocab_size;
    let tokens: Vec<u32> = (0..128)
        .map(|i| (100 + (i * 7919) % (vocab - 100)) as u32)
        .collect();
    let logits = prefill_128(&model, &tokens)?;
    let batch = decode_batch_8(&model, &tokens[..8])?;
    anyhow::ensure!(
        logits.len() == vocab && batch.len() == 8,
        "unexpected logits"
    );
    Ok(())
}
