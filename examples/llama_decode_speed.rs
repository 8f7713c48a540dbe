//! How fast `engine::llama` runs a GGUF model on this machine: prompt tokens/s (one 128-token
//! prefill), single-stream decode tokens/s (64 steps) and aggregate batched decode tokens/s
//! (8 sequences × 64 steps), with the weights as stored and re-quantized to Q8_0; then decode
//! tokens/s of one sequence 2048 tokens in, where attention over the cache weighs more.
//!
//! Run it alone (other CPU-heavy processes distort it badly):
//! `cargo run --release --example llama_decode_speed -- path/to/model.gguf [batch …]`
//! Extra arguments are batch sizes to measure besides 8; `REPEATS` (default 3) sets how many
//! times each figure is measured (the best is printed); `WEIGHTS=stored` or `WEIGHTS=requantized`
//! measures only that form (for profiling one of them).

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use candle_core::Device;
use pasarela::engine::llama::{LlamaModel, SequenceCache};

const PROMPT_TOKENS: usize = 128;
const DECODE_STEPS: usize = 64;
/// Where the long-context decode figure is taken.
const LONG_CONTEXT: usize = 2048;

/// A deterministic 128-token prompt of ordinary (non-control) token ids.
fn prompt(vocab: usize, seed: usize) -> Vec<u32> {
    (0..PROMPT_TOKENS)
        .map(|i| (100 + (i * 7919 + seed * 104_729) % (vocab - 100)) as u32)
        .collect()
}

fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0;
    for (i, v) in logits.iter().enumerate() {
        if *v > logits[best] {
            best = i;
        }
    }
    best as u32
}

/// Best figures over the repeats: on a shared machine, interference only ever slows a run down,
/// so the fastest run is the closest to what the code can do.
#[derive(Default)]
struct Figures {
    load_s: f64,
    prompt_tps: f64,
    decode_tps: f64,
    batched: Vec<(usize, f64)>,
    long_decode_tps: f64,
}

fn measure(
    path: &Path,
    requantize: bool,
    batches: &[usize],
    repeats: usize,
) -> anyhow::Result<Figures> {
    let start = Instant::now();
    let model = LlamaModel::open(path, &Device::Cpu, requantize)?;
    let mut best = Figures {
        load_s: start.elapsed().as_secs_f64(),
        batched: batches.iter().map(|b| (*b, 0.0)).collect(),
        ..Figures::default()
    };
    let vocab = model.config().vocab_size;
    let max_batch = batches.iter().copied().max().unwrap_or(1);

    // Warm-up: starts candle's thread pool and touches every weight once.
    model.prefill(&prompt(vocab, 99)[..16], &mut model.new_cache())?;

    for _ in 0..repeats {
        // One prompt per sequence, of different lengths so that batched sequences sit at
        // different positions; each prefill is a prompt-speed sample.
        let mut caches: Vec<SequenceCache> = (0..max_batch).map(|_| model.new_cache()).collect();
        let mut next = Vec::with_capacity(max_batch);
        for (i, cache) in caches.iter_mut().enumerate() {
            let p = prompt(vocab, i);
            let p = &p[..PROMPT_TOKENS - 4 * i.min(16)];
            let start = Instant::now();
            next.push(argmax(&model.prefill(p, cache)?));
            best.prompt_tps = best
                .prompt_tps
                .max(p.len() as f64 / start.elapsed().as_secs_f64());
        }

        let (first, _) = caches.split_at_mut(1);
        let cache = first.first_mut().context("no sequence")?;
        let mut token = next.first().copied().context("no sequence")?;
        let start = Instant::now();
        for _ in 0..DECODE_STEPS {
            let logits = model.decode_batch(&[token], &mut [&mut *cache])?;
            token = argmax(logits.first().context("no logits")?);
        }
        best.decode_tps = best
            .decode_tps
            .max(DECODE_STEPS as f64 / start.elapsed().as_secs_f64());

        for (batch, tps) in best.batched.iter_mut() {
            let mut tokens = next[..*batch].to_vec();
            let start = Instant::now();
            for _ in 0..DECODE_STEPS {
                let mut refs: Vec<&mut SequenceCache> = caches[..*batch].iter_mut().collect();
                let logits = model.decode_batch(&tokens, &mut refs)?;
                tokens = logits.iter().map(|l| argmax(l)).collect();
            }
            let elapsed = start.elapsed().as_secs_f64();
            *tps = tps.max((*batch * DECODE_STEPS) as f64 / elapsed);
        }
    }

    let mut cache = model.new_cache();
    let mut token = 0;
    for chunk in 0..LONG_CONTEXT / PROMPT_TOKENS {
        token = argmax(&model.prefill(&prompt(vocab, chunk), &mut cache)?);
    }
    for _ in 0..repeats {
        let start = Instant::now();
        for _ in 0..DECODE_STEPS {
            let logits = model.decode_batch(&[token], &mut [&mut cache])?;
            token = argmax(logits.first().context("no logits")?);
        }
        best.long_decode_tps = best
            .long_decode_tps
            .max(DECODE_STEPS as f64 / start.elapsed().as_secs_f64());
    }
    Ok(best)
}

#[expect(
    clippy::print_stdout,
    reason = "printing the figures is this benchmark's job"
)]
fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let path = PathBuf::from(
        args.next()
            .context("usage: llama_decode_speed <model.gguf> [batch size …]")?,
    );
    let repeats: usize = match std::env::var("REPEATS") {
        Ok(r) => r.parse().context("REPEATS is a count")?,
        Err(_) => 3,
    };
    let mut batches = vec![8];
    for a in args {
        batches.push(a.parse().context("batch sizes are integers")?);
    }

    println!(
        "{}: {PROMPT_TOKENS}-token prompt, {DECODE_STEPS} decode steps, candle threads: {}, \
         best of {repeats}",
        path.display(),
        candle_core::utils::get_num_threads()
    );
    let forms: &[bool] = match std::env::var("WEIGHTS").as_deref() {
        Ok("stored") => &[false],
        Ok("requantized") => &[true],
        Ok(other) => anyhow::bail!("WEIGHTS is `stored` or `requantized`, not `{other}`"),
        Err(_) => &[false, true],
    };
    for &requantize in forms {
        let f = measure(&path, requantize, &batches, repeats)?;
        let weights = if requantize {
            "re-quantized to Q8_0"
        } else {
            "as stored"
        };
        println!(
            "weights {weights:<21} load {:>5.2} s | prompt {:>6.1} tok/s | decode {:>5.1} tok/s",
            f.load_s, f.prompt_tps, f.decode_tps
        );
        for (batch, tps) in f.batched {
            println!(
                "{:>30} batched decode ×{batch:<2}: {tps:>6.1} tok/s aggregate ({:.1} per sequence)",
                "",
                tps / batch as f64
            );
        }
        println!(
            "{:>30} decode after {LONG_CONTEXT} tokens: {:>6.1} tok/s",
            "", f.long_decode_tps
        );
    }
    Ok(())
}
