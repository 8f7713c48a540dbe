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
mod tests {
    use std::path::{Path, PathBuf};
    use std::sync::{MutexGuard, OnceLock};

    use candle_core::Device;
    use serde::Deserialize;

    use super::Embedder;
    use crate::engine::EngineError;
    use crate::engine::testing::{embedder_dir, model_lock};

    /// Written by tests/data/embeddings/make_reference.py with sentence-transformers.
    #[derive(Deserialize)]
    struct Reference {
        max_seq_length: usize,
        texts: Vec<String>,
        tokens: Vec<usize>,
        vectors: Vec<Vec<f32>>,
        cls_vectors: Vec<Vec<f32>>,
    }

    fn reference() -> Reference {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/data/embeddings/minilm_reference.json");
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    }

    /// The model, loaded once for all tests in this process, with the lock that keeps model
    /// runs from overlapping.
    fn model(test: &str) -> Option<(&'static Embedder, MutexGuard<'static, ()>)> {
        static MODEL: OnceLock<Embedder> = OnceLock::new();
        let dir = embedder_dir(test)?;
        let guard = model_lock();
        let embedder = MODEL.get_or_init(|| Embedder::load(&dir, &Device::Cpu).unwrap());
        Some((embedder, guard))
    }

    fn cosine(a: &[f32], b: &[f32]) -> f64 {
        let dot: f64 = a
            .iter()
            .zip(b)
            .map(|(x, y)| f64::from(*x) * f64::from(*y))
            .sum();
        let norm = |v: &[f32]| v.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
        dot / (norm(a) * norm(b))
    }

    fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f32::max)
    }

    /// A scratch directory under the system's temp dir, removed when dropped.
    struct Scratch(PathBuf);

    impl Scratch {
        fn new(test: &str) -> Self {
            let dir = std::env::temp_dir().join(format!("pasarela-{test}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            Scratch(dir)
        }

        fn write(&self, name: &str, contents: impl AsRef<[u8]>) -> &Self {
            let path = self.0.join(name);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, contents).unwrap();
            self
        }

        /// Links the real model's file in, rather than copying 90 MB.
        fn link(&self, model: &Path, name: &str) -> &Self {
            std::os::unix::fs::symlink(model.join(name), self.0.join(name)).unwrap();
            self
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// all-MiniLM-L6-v2's config.json, for the tests that need no weights.
    const CONFIG: &str = r#"{"architectures":["BertModel"],"hidden_act":"gelu","hidden_size":384,
        "intermediate_size":1536,"layer_norm_eps":1e-12,"max_position_embeddings":512,
        "model_type":"bert","num_attention_heads":12,"num_hidden_layers":6,"pad_token_id":0,
        "position_embedding_type":"absolute","type_vocab_size":2,"vocab_size":30522}"#;

    fn load_error(dir: &Path) -> (PathBuf, String) {
        match Embedder::load(dir, &Device::Cpu) {
            Err(EngineError::Load { path, reason }) => (path, reason),
            Err(other) => panic!("expected a load error, got {other}"),
            Ok(_) => panic!("loaded a broken model directory"),
        }
    }

    #[test]
    fn vectors_match_sentence_transformers() {
        let Some((embedder, _guard)) = model("vectors_match_sentence_transformers") else {
            return;
        };
        let reference = reference();
        let texts: Vec<&str> = reference.texts.iter().map(String::as_str).collect();
        let (vectors, used) = embedder.embed(&texts).unwrap();
        assert_eq!(vectors.len(), texts.len());
        let mut worst = f64::INFINITY;
        for ((text, ours), theirs) in texts.iter().zip(&vectors).zip(&reference.vectors) {
            assert_eq!(ours.len(), 384);
            let c = cosine(ours, theirs);
            let short: String = text.chars().take(40).collect();
            eprintln!("1 - cosine = {:.1e} for {short:?}", 1.0 - c);
            assert!(c >= 0.9999, "cosine {c} for {text:?}");
            worst = worst.min(c);
        }
        eprintln!("lowest cosine with sentence-transformers: {worst:.9}");
        assert_eq!(used, reference.tokens.iter().sum::<usize>());
    }

    #[test]
    fn an_embedder_can_be_shared_between_threads() {
        fn shareable<T: Send + Sync>() {}
        shareable::<Embedder>();
    }

    #[test]
    fn vectors_are_unit_length() {
        let Some((embedder, _guard)) = model("vectors_are_unit_length") else {
            return;
        };
        let (vectors, _) = embedder.embed(&["a", "unit length, please"]).unwrap();
        for v in vectors {
            let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
            assert!((norm - 1.0).abs() < 1e-5, "norm {norm}");
        }
    }

    #[test]
    fn token_counts_match_sentence_transformers_and_truncate_at_max_tokens() {
        let Some((embedder, _guard)) =
            model("token_counts_match_sentence_transformers_and_truncate_at_max_tokens")
        else {
            return;
        };
        let reference = reference();
        assert_eq!(embedder.max_tokens(), reference.max_seq_length);
        assert_eq!(embedder.max_tokens(), 256);
        assert_eq!(embedder.dimensions(), 384);
        for (text, tokens) in reference.texts.iter().zip(&reference.tokens) {
            let (_, used) = embedder.embed(&[text]).unwrap();
            assert_eq!(used, *tokens, "tokens of {text:?}");
        }
    }

    #[test]
    fn batched_vectors_equal_one_at_a_time() {
        let Some((embedder, _guard)) = model("batched_vectors_equal_one_at_a_time") else {
            return;
        };
        let reference = reference();
        let texts: Vec<&str> = reference.texts.iter().map(String::as_str).collect();
        // All twelve in one forward pass, padded to the longest (256 tokens).
        let (batched, _) = embedder.embed(&texts).unwrap();
        let mut worst = 0f32;
        for (text, in_batch) in texts.iter().zip(&batched) {
            let (alone, _) = embedder.embed(&[text]).unwrap();
            let diff = max_abs_diff(&alone[0], in_batch);
            assert!(diff <= 1e-5, "padding moved {text:?} by {diff}");
            worst = worst.max(diff);
        }
        eprintln!("largest difference between batched and alone: {worst:e}");
    }

    #[test]
    fn token_ids_embed_like_the_text_they_spell() {
        let Some((embedder, _guard)) = model("token_ids_embed_like_the_text_they_spell") else {
            return;
        };
        let reference = reference();
        let texts: Vec<&str> = reference.texts.iter().map(String::as_str).collect();
        let mut untruncated = embedder.tokenizer.clone();
        untruncated.with_truncation(None).unwrap();
        let ids: Vec<Vec<u32>> = texts
            .iter()
            .map(|t| {
                untruncated
                    .encode_fast(*t, false)
                    .unwrap()
                    .get_ids()
                    .to_vec()
            })
            .collect();
        // The long text's ids run past max_tokens and must be cut like the text is.
        assert!(ids.iter().any(|i| i.len() > embedder.max_tokens()));
        let (from_ids, used_ids) = embedder.embed_tokens(&ids).unwrap();
        let (from_text, used_text) = embedder.embed(&texts).unwrap();
        assert_eq!(used_ids, used_text);
        for ((text, a), b) in texts.iter().zip(&from_ids).zip(&from_text) {
            assert!(max_abs_diff(a, b) <= 1e-6, "{text:?}");
        }
    }

    #[test]
    fn token_ids_outside_the_vocabulary_are_an_invalid_request() {
        let Some((embedder, _guard)) =
            model("token_ids_outside_the_vocabulary_are_an_invalid_request")
        else {
            return;
        };
        let err = embedder
            .embed_tokens(&[vec![101], vec![7592, 30522]])
            .unwrap_err();
        let EngineError::InvalidRequest(message) = err else {
            panic!("expected InvalidRequest, got {err}");
        };
        assert!(
            message.contains("input 1") && message.contains("30522"),
            "{message}"
        );
    }

    #[test]
    fn no_inputs_give_no_vectors() {
        let Some((embedder, _guard)) = model("no_inputs_give_no_vectors") else {
            return;
        };
        assert_eq!(embedder.embed(&[]).unwrap(), (Vec::new(), 0));
        assert_eq!(embedder.embed_tokens(&[]).unwrap(), (Vec::new(), 0));
    }

    #[test]
    fn cls_pooling_is_used_when_the_pooling_config_asks_for_it() {
        let Some(model_dir) =
            embedder_dir("cls_pooling_is_used_when_the_pooling_config_asks_for_it")
        else {
            return;
        };
        let scratch = Scratch::new("cls-pooling");
        for file in [
            "config.json",
            "model.safetensors",
            "tokenizer.json",
            "sentence_bert_config.json",
        ] {
            scratch.link(&model_dir, file);
        }
        scratch.write(
            "1_Pooling/config.json",
            r#"{"word_embedding_dimension":384,"pooling_mode_cls_token":true,
                "pooling_mode_mean_tokens":false}"#,
        );
        let _guard = model_lock();
        let embedder = Embedder::load(&scratch.0, &Device::Cpu).unwrap();
        let reference = reference();
        let texts: Vec<&str> = reference.texts.iter().map(String::as_str).collect();
        let (vectors, _) = embedder
            .embed(&texts[..reference.cls_vectors.len()])
            .unwrap();
        for ((text, ours), theirs) in texts.iter().zip(&vectors).zip(&reference.cls_vectors) {
            let c = cosine(ours, theirs);
            assert!(c >= 0.9999, "cosine {c} for {text:?}");
        }
    }

    #[test]
    fn a_missing_directory_is_a_load_error_naming_it() {
        let dir = std::env::temp_dir().join("pasarela-no-such-model-dir");
        let (path, _) = load_error(&dir);
        assert_eq!(path, dir);
    }

    #[test]
    fn a_missing_file_is_a_load_error_naming_it() {
        let scratch = Scratch::new("missing-file");
        let (path, _) = load_error(&scratch.0);
        assert!(path.ends_with("config.json"), "{}", path.display());

        scratch.write("config.json", CONFIG);
        let (path, reason) = load_error(&scratch.0);
        assert!(path.ends_with("model.safetensors"), "{}", path.display());
        assert!(!reason.contains("pytorch"), "{reason}");

        scratch.write("pytorch_model.bin", b"torch");
        let (path, reason) = load_error(&scratch.0);
        assert!(path.ends_with("model.safetensors"), "{}", path.display());
        assert!(
            reason.contains("pytorch_model.bin") && reason.contains("not supported"),
            "{reason}"
        );

        scratch.write("model.safetensors", b"weights");
        let (path, _) = load_error(&scratch.0);
        assert!(path.ends_with("tokenizer.json"), "{}", path.display());
    }

    #[test]
    fn corrupt_files_are_load_errors_naming_them() {
        let scratch = Scratch::new("corrupt-files");
        scratch.write("config.json", "{ not json");
        scratch.write("tokenizer.json", "{}");
        scratch.write("model.safetensors", [0xde, 0xad, 0xbe, 0xef].repeat(64));
        let (path, _) = load_error(&scratch.0);
        assert!(path.ends_with("config.json"), "{}", path.display());

        scratch.write("config.json", CONFIG.replace("\"bert\"", "\"llama\""));
        let (path, reason) = load_error(&scratch.0);
        assert!(
            path.ends_with("config.json") && reason.contains("llama"),
            "{reason}"
        );

        scratch.write("config.json", CONFIG);
        let (path, _) = load_error(&scratch.0);
        assert!(path.ends_with("model.safetensors"), "{}", path.display());

        // A valid header whose length runs past the end of the file.
        let mut truncated = 1_000_000u64.to_le_bytes().to_vec();
        truncated.extend_from_slice(br#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#);
        scratch.write("model.safetensors", truncated);
        let (path, _) = load_error(&scratch.0);
        assert!(path.ends_with("model.safetensors"), "{}", path.display());
    }

    #[test]
    fn weights_without_a_tensor_the_config_needs_are_a_load_error_naming_it() {
        let scratch = Scratch::new("missing-tensor");
        scratch
            .write("config.json", CONFIG)
            .write("tokenizer.json", "{}");
        let tensors = std::collections::HashMap::from([(
            "embeddings.word_embeddings.weight".to_owned(),
            candle_core::Tensor::zeros((30522, 384), candle_core::DType::F32, &Device::Cpu)
                .unwrap(),
        )]);
        candle_core::safetensors::save(&tensors, scratch.0.join("model.safetensors")).unwrap();
        let (path, reason) = load_error(&scratch.0);
        assert!(path.ends_with("model.safetensors"), "{}", path.display());
        assert!(
            reason.contains("embeddings.position_embeddings.weight"),
            "{reason}"
        );
    }

    #[test]
    fn unsupported_pooling_is_a_load_error_naming_its_config() {
        let scratch = Scratch::new("max-pooling");
        scratch
            .write("config.json", CONFIG)
            .write("tokenizer.json", "{}")
            .write("model.safetensors", b"weights")
            .write(
                "1_Pooling/config.json",
                r#"{"pooling_mode_max_tokens":true,"pooling_mode_mean_tokens":false}"#,
            );
        let (path, reason) = load_error(&scratch.0);
        assert!(
            path.ends_with("1_Pooling/config.json"),
            "{}",
            path.display()
        );
        assert!(reason.contains("pooling"), "{reason}");
    }

    #[test]
    fn a_corrupt_tokenizer_is_a_load_error_naming_it() {
        let Some(model_dir) = embedder_dir("a_corrupt_tokenizer_is_a_load_error_naming_it") else {
            return;
        };
        let scratch = Scratch::new("corrupt-tokenizer");
        scratch
            .link(&model_dir, "config.json")
            .link(&model_dir, "model.safetensors");
        scratch.write("tokenizer.json", r#"{"model": 3}"#);
        let (path, _) = load_error(&scratch.0);
        assert!(path.ends_with("tokenizer.json"), "{}", path.display());
    }
}
