//! Sentence embeddings from a BERT-family model directory laid out as sentence-transformers
//! saves it: loading and checking its files, tokenizing (text or token ids), batching inputs
//! of similar length, running the encoder, pooling and L2 normalisation. Vectors match
//! sentence-transformers' `encode(..., normalize_embeddings=True)`.
//!
//! Must not contain the forward pass itself (`bert`), request queues or threads (the caller
//! decides where this blocking work runs), or anything about the OpenAI wire format.

use std::path::{Path, PathBuf};

use candle_core::Device;
use serde::Deserialize;
use tokenizers::{Tokenizer, TruncationDirection, TruncationParams, TruncationStrategy};

use super::EngineError;
use super::bert::{Bert, BertConfig};

/// How many token slots (rows × longest length) one forward pass holds. Inputs are sorted by
/// length first, so the rows of a batch are of nearly equal length, and only attention sees
/// their padding anyway (`bert` runs everything else on the packed tokens). Measured with
/// `examples/embed_speed.rs` on 2 cores: 2048 beat 512 by a quarter and 1024 a little (the
/// matmuls use the cores better when larger), and 4096 and 8192 were slower (larger tensors
/// are fresh pages from the OS at every step, and wider attention padding).
const TOKENS_PER_BATCH: usize = 2048;

/// A loaded embedding model. Embedding takes `&self`, so one instance can be shared between
/// threads; each call blocks its thread while it runs on the cores (candle's and rayon's
/// thread pools): one call at a time uses them best.
pub struct Embedder {
    tokenizer: Tokenizer,
    bert: Bert,
    pooling: Pooling,
    max_tokens: usize,
    /// Special tokens the tokenizer puts around one sequence (`[CLS]` … `[SEP]` for BERT),
    /// also put around pre-tokenized input.
    prefix: Vec<u32>,
    suffix: Vec<u32>,
    vocab_size: usize,
}

/// How token vectors become one sentence vector (sentence-transformers' `Pooling` module).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pooling {
    /// The mean of the non-padding tokens' vectors.
    Mean,
    /// The first token's (`[CLS]`) vector.
    Cls,
}

/// `1_Pooling/config.json`. Flags that are absent count as off.
#[derive(Debug, Deserialize)]
struct PoolingConfig {
    #[serde(default)]
    pooling_mode_cls_token: bool,
    #[serde(default)]
    pooling_mode_mean_tokens: bool,
    #[serde(default)]
    pooling_mode_max_tokens: bool,
    #[serde(default)]
    pooling_mode_mean_sqrt_len_tokens: bool,
}

/// One entry of `modules.json`.
#[derive(Debug, Deserialize)]
struct ModuleEntry {
    path: String,
    #[serde(rename = "type")]
    kind: String,
}

#[derive(Debug, Deserialize)]
struct SentenceBertConfig {
    max_seq_length: Option<usize>,
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, EngineError> {
    let text = std::fs::read_to_string(path).map_err(|e| EngineError::load(path, e))?;
    serde_json::from_str(&text).map_err(|e| EngineError::load(path, e))
}

fn require_file(path: PathBuf) -> Result<PathBuf, EngineError> {
    if path.is_file() {
        Ok(path)
    } else {
        Err(EngineError::load(&path, "no such file"))
    }
}

impl Embedder {
    /// Loads a model directory: `config.json`, `model.safetensors` and `tokenizer.json`, and,
    /// when present, sentence-transformers' `modules.json`, `sentence_bert_config.json` and the
    /// pooling module's `config.json` (`1_Pooling/` by default; mean pooling without it).
    /// PyTorch `pytorch_model.bin` checkpoints are not supported: convert them to safetensors.
    pub fn load(dir: &Path, device: &Device) -> Result<Self, EngineError> {
        if !dir.is_dir() {
            return Err(EngineError::load(dir, "no such model directory"));
        }
        let config_path = require_file(dir.join("config.json"))?;
        let config: BertConfig = read_json(&config_path)?;
        config
            .check()
            .map_err(|reason| EngineError::load(&config_path, reason))?;

        let weights_path = dir.join("model.safetensors");
        if !weights_path.is_file() {
            let reason = if dir.join("pytorch_model.bin").is_file() {
                "no such file; pytorch_model.bin is there, but PyTorch checkpoints are not \
                 supported: convert it to safetensors"
            } else {
                "no such file"
            };
            return Err(EngineError::load(&weights_path, reason));
        }
        let tokenizer_path = require_file(dir.join("tokenizer.json"))?;

        let pooling = read_pooling(dir)?;
        let max_tokens = read_max_tokens(dir, &config)?;

        let tensors = candle_core::safetensors::load(&weights_path, device)
            .map_err(|e| EngineError::load(&weights_path, e))?;
        let bert = Bert::load(tensors, &config).map_err(|e| EngineError::load(&weights_path, e))?;

        let mut tokenizer = Tokenizer::from_file(&tokenizer_path)
            .map_err(|e| EngineError::load(&tokenizer_path, e))?;
        // The shipped tokenizer.json pads everything to 128 and truncates at 128. Padding is
        // the encoder's business here (only its attention sees any, within a batch of similar
        // lengths), and truncation follows max_tokens.
        tokenizer.with_padding(None);
        tokenizer
            .with_truncation(Some(TruncationParams {
                direction: TruncationDirection::Right,
                max_length: max_tokens,
                strategy: TruncationStrategy::LongestFirst,
                stride: 0,
            }))
            .map_err(|e| EngineError::load(&tokenizer_path, e))?;
        let (prefix, suffix) = special_tokens(&tokenizer)
            .map_err(|reason| EngineError::load(&tokenizer_path, reason))?;
        if prefix.len() + suffix.len() >= max_tokens {
            return Err(EngineError::load(
                &tokenizer_path,
                format!("the special tokens alone fill the {max_tokens}-token limit"),
            ));
        }

        Ok(Embedder {
            tokenizer,
            bert,
            pooling,
            max_tokens,
            prefix,
            suffix,
            vocab_size: config.vocab_size,
        })
    }

    /// The length of every vector (384 for all-MiniLM-L6-v2).
    pub fn dimensions(&self) -> usize {
        self.bert.hidden_size()
    }

    /// The most tokens of one input, special tokens included, that reach the model; the rest
    /// is cut off. sentence-transformers' `max_seq_length` where the model sets one (256 for
    /// all-MiniLM-L6-v2, which was trained at that length), else the position table's size.
    pub fn max_tokens(&self) -> usize {
        self.max_tokens
    }

    /// Embeds texts; returns one unit vector per text, in order, and the number of tokens the
    /// model read (special tokens included, padding not), for `usage`.
    pub fn embed(&self, texts: &[&str]) -> Result<(Vec<Vec<f32>>, usize), EngineError> {
        if texts.is_empty() {
            return Ok((Vec::new(), 0));
        }
        let encodings = self
            .tokenizer
            .encode_batch_fast(texts.to_vec(), true)
            .map_err(|e| EngineError::Tokenizer(e.to_string()))?;
        let sequences: Vec<&[u32]> = encodings.iter().map(|e| e.get_ids()).collect();
        self.embed_sequences(&sequences)
    }

    /// Embeds pre-tokenized inputs: ids from this model's vocabulary, without special tokens
    /// (they are added here, as the tokenizer would), cut to fit `max_tokens`.
    pub fn embed_tokens(&self, inputs: &[Vec<u32>]) -> Result<(Vec<Vec<f32>>, usize), EngineError> {
        let room = self.max_tokens - self.prefix.len() - self.suffix.len();
        let mut sequences = Vec::with_capacity(inputs.len());
        for (index, ids) in inputs.iter().enumerate() {
            if let Some(bad) = ids.iter().find(|&&id| id as usize >= self.vocab_size) {
                return Err(EngineError::InvalidRequest(format!(
                    "input {index}: token id {bad} is outside the model's vocabulary of {} tokens",
                    self.vocab_size
                )));
            }
            let kept = &ids[..ids.len().min(room)];
            let mut seq = Vec::with_capacity(self.prefix.len() + kept.len() + self.suffix.len());
            seq.extend_from_slice(&self.prefix);
            seq.extend_from_slice(kept);
            seq.extend_from_slice(&self.suffix);
            sequences.push(seq);
        }
        let sequences: Vec<&[u32]> = sequences.iter().map(Vec::as_slice).collect();
        self.embed_sequences(&sequences)
    }

    /// Runs complete sequences (special tokens in place, within `max_tokens`) through the model
    /// in batches of similar length, so that little compute goes to padding.
    fn embed_sequences(&self, sequences: &[&[u32]]) -> Result<(Vec<Vec<f32>>, usize), EngineError> {
        // Only a tokenizer that adds no special tokens can give an empty sequence.
        if let Some(index) = sequences.iter().position(|s| s.is_empty()) {
            return Err(EngineError::InvalidRequest(format!(
                "input {index} has no tokens"
            )));
        }
        let used = sequences.iter().map(|s| s.len()).sum();
        let mut order: Vec<usize> = (0..sequences.len()).collect();
        // Longest first: each batch's first row sets its padded length.
        order.sort_by_key(|&i| std::cmp::Reverse(sequences[i].len()));
        let mut vectors = vec![Vec::new(); sequences.len()];
        let mut rest = order.as_slice();
        while let Some(&longest) = rest.first() {
            let seq_len = sequences[longest].len();
            let rows = (TOKENS_PER_BATCH / seq_len).clamp(1, rest.len());
            let (batch, tail) = rest.split_at(rows);
            let batch_seqs: Vec<&[u32]> = batch.iter().map(|&i| sequences[i]).collect();
            for (&i, vector) in batch.iter().zip(self.embed_batch(&batch_seqs)?) {
                vectors[i] = vector;
            }
            rest = tail;
        }
        Ok((vectors, used))
    }

    /// One forward pass over `sequences`; one unit vector each.
    fn embed_batch(&self, sequences: &[&[u32]]) -> Result<Vec<Vec<f32>>, EngineError> {
        let dims = self.dimensions();
        let hidden = self
            .bert
            .forward(sequences)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        let mut out = Vec::with_capacity(sequences.len());
        let mut start = 0;
        for seq in sequences {
            let tokens = &hidden[start * dims..(start + seq.len()) * dims];
            start += seq.len();
            let mut vector = match self.pooling {
                Pooling::Cls => tokens[..dims].to_vec(),
                Pooling::Mean => {
                    let mut sum = vec![0f32; dims];
                    for token in tokens.chunks_exact(dims) {
                        for (s, v) in sum.iter_mut().zip(token) {
                            *s += v;
                        }
                    }
                    // sentence-transformers clamps the count at 1e-9; a sequence always holds
                    // at least its special tokens, so it is never zero here.
                    let count = seq.len().max(1) as f32;
                    sum.iter_mut().for_each(|s| *s /= count);
                    sum
                }
            };
            normalize(&mut vector);
            out.push(vector);
        }
        Ok(out)
    }
}

/// Scales to unit length, as torch's `F.normalize` does (norm clamped at 1e-12). OpenAI's
/// embeddings are unit vectors, and clients rely on a dot product being the cosine.
fn normalize(vector: &mut [f32]) {
    let norm = vector.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-12);
    vector.iter_mut().for_each(|v| *v /= norm);
}

/// The pooling module's config: its folder from `modules.json` when there is one, else
/// `1_Pooling`. Without a config, mean pooling (sentence-transformers' default).
fn read_pooling(dir: &Path) -> Result<Pooling, EngineError> {
    let modules_path = dir.join("modules.json");
    let pooling_dir = if modules_path.is_file() {
        let modules: Vec<ModuleEntry> = read_json(&modules_path)?;
        modules
            .into_iter()
            .find(|m| m.kind.ends_with(".Pooling"))
            .map(|m| dir.join(m.path))
    } else {
        Some(dir.join("1_Pooling"))
    };
    let Some(config_path) = pooling_dir.map(|d| d.join("config.json")) else {
        return Ok(Pooling::Mean);
    };
    if !config_path.is_file() {
        return Ok(Pooling::Mean);
    }
    let config: PoolingConfig = read_json(&config_path)?;
    match (
        config.pooling_mode_cls_token,
        config.pooling_mode_mean_tokens,
        config.pooling_mode_max_tokens,
        config.pooling_mode_mean_sqrt_len_tokens,
    ) {
        (false, true, false, false) => Ok(Pooling::Mean),
        (true, false, false, false) => Ok(Pooling::Cls),
        _ => Err(EngineError::load(
            &config_path,
            "unsupported pooling: exactly one of pooling_mode_mean_tokens and \
             pooling_mode_cls_token must be true",
        )),
    }
}

/// sentence-transformers' `max_seq_length` when set, capped by the position table.
fn read_max_tokens(dir: &Path, config: &BertConfig) -> Result<usize, EngineError> {
    let path = dir.join("sentence_bert_config.json");
    let configured = if path.is_file() {
        read_json::<SentenceBertConfig>(&path)?.max_seq_length
    } else {
        None
    };
    Ok(configured
        .unwrap_or(config.max_position_embeddings)
        .min(config.max_position_embeddings))
}

/// The special tokens the tokenizer adds before and after a single sequence, found by encoding
/// one word with and without them.
fn special_tokens(tokenizer: &Tokenizer) -> Result<(Vec<u32>, Vec<u32>), String> {
    let probe = "hello";
    let bare = tokenizer
        .encode_fast(probe, false)
        .map_err(|e| e.to_string())?;
    let full = tokenizer
        .encode_fast(probe, true)
        .map_err(|e| e.to_string())?;
    let (bare, full) = (bare.get_ids(), full.get_ids());
    let at = full
        .windows(bare.len().max(1))
        .position(|w| w == bare)
        .filter(|_| !bare.is_empty())
        .ok_or("cannot tell which special tokens the tokenizer adds")?;
    Ok((full[..at].to_vec(), full[at + bare.len()..].to_vec()))
}

#[cfg(test)]
#[path = "embedder_tests.rs"]
mod tests;
