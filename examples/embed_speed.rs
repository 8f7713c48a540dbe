//! Embedding throughput of `engine::embedder::Embedder` on CPU: 1,000 short sentences
//! (5–20 words, generated from a fixed seed, so every run embeds the same text) in one call,
//! which sorts them by length and batches them internally. Prints sentences per second for
//! each of a few runs after a warm-up, and the best.
//!
//! Usage: `cargo run --release --example embed_speed -- <model dir> [sentences.txt]`
//! With a second argument it also writes the sentences there, one a line, so that another
//! implementation can be timed on the same input (see BENCHMARKS.md). Run it alone: a second
//! process on the cores halves what it measures.
#![expect(clippy::print_stdout, reason = "a benchmark prints its figures")]

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use candle_core::Device;
use pasarela::engine::embedder::Embedder;

// The gateway's allocator (src/main.rs), so that the figure is the one the server would see.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const SENTENCES: usize = 1000;
const RUNS: usize = 3;

const SUBJECTS: &[&str] = &[
    "the gateway",
    "a small model",
    "our team",
    "the new release",
    "every request",
    "the scheduler",
    "this embedding",
    "the cache",
    "a careful engineer",
    "the dashboard",
];
const VERBS: &[&str] = &[
    "routes",
    "measures",
    "answers",
    "stores",
    "compares",
    "rejects",
    "streams",
    "retries",
    "explains",
    "summarises",
];
const OBJECTS: &[&str] = &[
    "the prompt",
    "long documents",
    "streamed tokens",
    "user questions",
    "error messages",
    "vector queries",
    "the weekly report",
    "fallback providers",
    "rate limits",
    "old logs",
];
const TAILS: &[&str] = &[
    "before lunch",
    "without any noticeable delay",
    "in three different regions",
    "when the queue is full",
    "for the finance department",
    "after the nightly deploy",
    "with surprising accuracy",
    "during peak traffic",
    "on a single small machine",
    "as the documentation promised",
    "while the team was asleep",
    "quickly",
];

/// A linear congruential generator: deterministic across platforms and runs.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, n: usize) -> usize {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 33) % n as u64) as usize
    }
}

/// A sentence of 5–20 words: subject, verb, object, then tails until the drawn length.
fn sentences() -> Vec<String> {
    let mut rng = Lcg(42);
    (0..SENTENCES)
        .map(|_| {
            let target = 5 + rng.next(16);
            let mut words: Vec<&str> = Vec::new();
            for part in [SUBJECTS, VERBS, OBJECTS] {
                words.extend(part[rng.next(part.len())].split(' '));
            }
            while words.len() < target {
                words.extend(TAILS[rng.next(TAILS.len())].split(' '));
            }
            words.truncate(target);
            let mut sentence = words.join(" ");
            sentence.push('.');
            sentence
        })
        .collect()
}

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let dir = PathBuf::from(
        args.next()
            .context("usage: embed_speed <model dir> [sentences.txt]")?,
    );
    let texts = sentences();
    if let Some(out) = args.next() {
        std::fs::write(&out, texts.join("\n") + "\n").with_context(|| format!("writing {out}"))?;
    }
    let texts: Vec<&str> = texts.iter().map(String::as_str).collect();

    let started = Instant::now();
    let embedder = Embedder::load(&dir, &Device::Cpu)?;
    println!(
        "loaded in {:.2} s; {} threads",
        started.elapsed().as_secs_f64(),
        candle_core::utils::get_num_threads()
    );

    embedder.embed(&texts[..64])?;
    let mut best = 0f64;
    for run in 1..=RUNS {
        let started = Instant::now();
        let (vectors, tokens) = embedder.embed(&texts)?;
        let seconds = started.elapsed().as_secs_f64();
        anyhow::ensure!(
            vectors.len() == texts.len(),
            "got {} vectors",
            vectors.len()
        );
        let rate = texts.len() as f64 / seconds;
        best = best.max(rate);
        println!(
            "run {run}: {} sentences ({:.1} tokens each) in {seconds:.2} s: {rate:.0} sentences/s",
            texts.len(),
            tokens as f64 / texts.len() as f64,
        );
    }
    println!("best: {best:.0} sentences/s");
    Ok(())
}
