//! Text similarity metrics for assertions, computed as the reference implementations compute
//! them, so that a threshold means the same here as in the papers and tools people know:
//!
//! - ROUGE-L: the F-measure of the longest common subsequence, tokenized as Google's
//!   `rouge-score` package does without stemming (lowercase, every run of characters other
//!   than `a-z0-9` is a separator, so non-ASCII letters drop out);
//! - BLEU: sacrebleu's `sentence_bleu` defaults (13a tokenization, exponential smoothing,
//!   effective order), scaled to 0..=1 rather than 0..=100.
//!
//! The test data (`tests/data/text_metrics`) holds both packages' scores and the command that
//! produced them. Must not contain anything but the arithmetic.

use std::collections::HashMap;
use std::sync::LazyLock;

use regex::Regex;

/// `rouge-score`'s tokens: lowercased runs of ASCII letters and digits.
fn rouge_tokens(text: &str) -> Vec<String> {
    text.to_lowercase()
        .split(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit()))
        .filter(|t| !t.is_empty())
        .map(str::to_owned)
        .collect()
}

fn lcs_len(a: &[String], b: &[String]) -> usize {
    // One row of the dynamic programme at a time.
    let mut prev = vec![0usize; b.len() + 1];
    let mut row = vec![0usize; b.len() + 1];
    for x in a {
        for (j, y) in b.iter().enumerate() {
            row[j + 1] = if x == y {
                prev[j] + 1
            } else {
                row[j].max(prev[j + 1])
            };
        }
        std::mem::swap(&mut prev, &mut row);
    }
    prev[b.len()]
}

/// ROUGE-L F-measure of `candidate` against `reference`, in 0..=1.
pub fn rouge_l(reference: &str, candidate: &str) -> f64 {
    let (r, c) = (rouge_tokens(reference), rouge_tokens(candidate));
    if r.is_empty() || c.is_empty() {
        return 0.0;
    }
    let lcs = lcs_len(&r, &c) as f64;
    let precision = lcs / c.len() as f64;
    let recall = lcs / r.len() as f64;
    if precision + recall == 0.0 {
        0.0
    } else {
        2.0 * precision * recall / (precision + recall)
    }
}

/// The regular expressions of sacrebleu's 13a tokenizer (mteval-v13a), in order.
static TOKENIZE_13A: LazyLock<Vec<(Regex, &'static str)>> = LazyLock::new(|| {
    [
        // Symbols and punctuation other than period, comma and dash become tokens.
        (r"([\{-~\[-` -&\(-\+:-@/])", " $1 "),
        // Period and comma, unless between digits.
        (r"([^0-9])([\.,])", "$1 $2 "),
        (r"([\.,])([^0-9])", " $1 $2"),
        // A dash after a digit.
        (r"([0-9])(-)", "$1 $2 "),
    ]
    .into_iter()
    .filter_map(|(pattern, replacement)| Some((Regex::new(pattern).ok()?, replacement)))
    .collect()
});

fn bleu_tokens(text: &str) -> Vec<String> {
    let mut line = text
        .replace("<skipped>", "")
        .replace("-\n", "")
        .replace('\n', " ");
    if line.contains('&') {
        line = line
            .replace("&quot;", "\"")
            .replace("&amp;", "&")
            .replace("&lt;", "<")
            .replace("&gt;", ">");
    }
    let mut line = format!(" {line} ");
    for (re, replacement) in TOKENIZE_13A.iter() {
        line = re.replace_all(&line, *replacement).into_owned();
    }
    line.split_whitespace().map(str::to_owned).collect()
}

fn ngram_counts(tokens: &[String], n: usize) -> HashMap<&[String], usize> {
    let mut counts = HashMap::new();
    for gram in tokens.windows(n) {
        *counts.entry(gram).or_insert(0) += 1;
    }
    counts
}

/// Sentence BLEU of `candidate` against one `reference`, in 0..=1.
pub fn bleu(reference: &str, candidate: &str) -> f64 {
    const MAX_ORDER: usize = 4;
    let (r, c) = (bleu_tokens(reference), bleu_tokens(candidate));
    let mut correct = [0usize; MAX_ORDER];
    let mut total = [0usize; MAX_ORDER];
    for n in 1..=MAX_ORDER {
        let (rc, cc) = (ngram_counts(&r, n), ngram_counts(&c, n));
        correct[n - 1] = cc
            .iter()
            .map(|(gram, &k)| k.min(rc.get(gram).copied().unwrap_or(0)))
            .sum();
        total[n - 1] = c.len().saturating_sub(n - 1);
    }
    if correct.iter().all(|&k| k == 0) {
        return 0.0;
    }
    let mut precisions = [0f64; MAX_ORDER];
    let mut order = MAX_ORDER;
    let mut smooth = 1.0;
    for n in 1..=MAX_ORDER {
        if total[n - 1] == 0 {
            break;
        }
        order = n;
        precisions[n - 1] = if correct[n - 1] == 0 {
            smooth *= 2.0;
            1.0 / (smooth * total[n - 1] as f64)
        } else {
            correct[n - 1] as f64 / total[n - 1] as f64
        };
    }
    let brevity = if c.len() < r.len() {
        (1.0 - r.len() as f64 / c.len() as f64).exp()
    } else {
        1.0
    };
    let log_sum: f64 = precisions[..order].iter().map(|p| p.ln()).sum();
    brevity * (log_sum / order as f64).exp()
}

/// Cosine similarity; 0 when either vector is zero.
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na: f32 = a.iter().map(|x| x * x).sum::<f32>().sqrt();
    let nb: f32 = b.iter().map(|x| x * x).sum::<f32>().sqrt();
    if na == 0.0 || nb == 0.0 {
        0.0
    } else {
        dot / (na * nb)
    }
}
