//! Unit tests of `embedder`.

use std::path::{Path, PathBuf};
use std::sync::{MutexGuard, OnceLock};

use candle_core::Device;
use serde::Deserialize;

use super::Embedder;
use crate::engine::EngineError;
use crate::engine::testing::{embedder_dir, max_abs_diff, model_lock};

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
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/embeddings/minilm_reference.json");
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
    let Some((embedder, _guard)) = model("token_ids_outside_the_vocabulary_are_an_invalid_request")
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
    let Some(model_dir) = embedder_dir("cls_pooling_is_used_when_the_pooling_config_asks_for_it")
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
        candle_core::Tensor::zeros((30522, 384), candle_core::DType::F32, &Device::Cpu).unwrap(),
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
