//! Text ↔ token ids for local models: a Hugging Face `tokenizers::Tokenizer` loaded from a
//! `tokenizer.json` or rebuilt from a GGUF file's `tokenizer.ggml.*` metadata, which special
//! tokens end a generation, and [`StreamDecoder`], which turns generated ids into text one token
//! at a time without ever splitting a UTF-8 character.
//!
//! `gguf.rs` rebuilds a tokenizer from GGUF metadata; `spelling.rs` turns ids back into text.
//!
//! Must not contain chat templates (`template`) or anything about sampling or scheduling.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;

use candle_core::quantized::gguf_file::Value;
use tokenizers::decoders::DecoderWrapper;
use tokenizers::decoders::byte_fallback::ByteFallback;
use tokenizers::decoders::byte_level::ByteLevel;
use tokenizers::decoders::fuse::Fuse;
use tokenizers::decoders::sequence::Sequence as DecoderSequence;
use tokenizers::decoders::strip::Strip;
use tokenizers::models::bpe::{BPE, Vocab};
use tokenizers::normalizers::{
    NFC, NormalizerWrapper, Prepend, Replace, Sequence as NormalizerSequence,
};
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::metaspace::PrependScheme;
use tokenizers::pre_tokenizers::sequence::Sequence as PreTokenizerSequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{AddedToken, SplitDelimiterBehavior, Tokenizer};

use super::EngineError;

mod gguf;
mod spelling;

use gguf::{Metadata, byte_level_bpe, sentencepiece_bpe};
pub use spelling::StreamDecoder;
#[cfg(test)]
use spelling::byte_level_byte;
use spelling::{TokenSpelling, sentencepiece_byte, spelling_from_decoder};

/// GGUF token types (llama.cpp's `llama_token_type`).
const TOKEN_TYPE_CONTROL: i64 = 3;
const TOKEN_TYPE_USER_DEFINED: i64 = 4;
const TOKEN_TYPE_BYTE: i64 = 6;

/// SentencePiece's stand-in for a space.
const METASPACE: char = '\u{2581}';

/// Llama 3's split regex, as its `tokenizer.json` spells it (llama.cpp's `llama-bpe`).
const LLAMA3_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// Qwen2's split regex: Llama 3's with single digits.
const QWEN2_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// Special tokens that end a turn in the chat formats in use. A model's `eos` is often the
/// end-of-document token while its chat template closes turns with one of these, so any of them
/// present as a special token stops generation (llama.cpp collects its end-of-generation set the
/// same way).
const END_OF_TURN_TOKENS: &[&str] = &[
    "<|endoftext|>",
    "<|im_end|>",
    "<|eot_id|>",
    "<|end_of_text|>",
    "<|eom_id|>",
    "<|end|>",
    "<end_of_turn>",
    "</s>",
];

/// A model's tokenizer, with what the scheduler needs around it: the BOS it may prepend and the
/// ids that end a generation.
#[derive(Debug, Clone)]
pub struct TextTokenizer {
    inner: Tokenizer,
    bos: Option<u32>,
    eos: Option<u32>,
    eos_ids: Vec<u32>,
    /// Added by [`TextTokenizer::encode`] itself when asked for special tokens. A tokenizer.json
    /// adds its own through its post-processor instead, and these stay false.
    add_bos: bool,
    add_eos: bool,
    spelling: Arc<TokenSpelling>,
}

/// Load a `tokenizer.json`. Its BOS, EOS and whether it adds BOS come from the tokenizer itself
/// and, when present beside it, `tokenizer_config.json` and `generation_config.json`.
pub fn from_json(path: &Path) -> Result<TextTokenizer, EngineError> {
    let mut inner = Tokenizer::from_file(path).map_err(|e| EngineError::load(path, e))?;
    // Lengths are the caller's business: all-MiniLM-L6-v2's file, for one, pads everything to 128.
    inner.with_padding(None);
    inner
        .with_truncation(None)
        .map_err(|e| EngineError::load(path, e))?;
    let dir = path.parent().unwrap_or(Path::new("."));
    let config = read_optional_json(&dir.join("tokenizer_config.json"))?;
    let generation = read_optional_json(&dir.join("generation_config.json"))?;

    let token_id = |key: &str| {
        config
            .as_ref()
            .and_then(|c| c.get(key))
            .and_then(|v| {
                v.as_str()
                    .or_else(|| v.get("content").and_then(|c| c.as_str()))
            })
            .and_then(|token| inner.token_to_id(token))
    };
    let bos = token_id("bos_token");
    let mut eos = token_id("eos_token");
    let mut extra_eos = Vec::new();
    match generation.as_ref().and_then(|g| g.get("eos_token_id")) {
        Some(serde_json::Value::Number(n)) => extra_eos.extend(json_token_id(n)),
        Some(serde_json::Value::Array(ids)) => extra_eos.extend(
            ids.iter()
                .filter_map(|v| v.as_number())
                .filter_map(json_token_id),
        ),
        _ => {}
    }
    if eos.is_none() {
        eos = extra_eos.first().copied();
    }

    let spelling = spelling_from_decoder(&inner);
    Ok(TextTokenizer::assemble(
        inner, bos, eos, &extra_eos, false, false, spelling,
    ))
}

/// The tokenizer for the GGUF model at `path`: a `tokenizer.json` beside the file wins (it is the
/// model's own), else the one its metadata describes.
pub fn for_gguf(
    metadata: &HashMap<String, Value>,
    path: &Path,
) -> Result<TextTokenizer, EngineError> {
    let sibling = path.with_file_name("tokenizer.json");
    if sibling.is_file() {
        from_json(&sibling)
    } else {
        from_gguf(metadata, path)
    }
}

/// Rebuild the tokenizer a GGUF file describes in its `tokenizer.ggml.*` metadata. `path` only
/// names the file in errors.
///
/// Supported: byte-level BPE (`tokenizer.ggml.model = gpt2`) with the pre-tokenizers of SmolLM
/// (`smollm`), Llama 3 (`llama-bpe` and its aliases), Qwen2 (`qwen2`) and GPT-2 (`gpt2`,
/// `default`); and SentencePiece-style BPE (`llama`: Llama 2, Mistral), whose merges are derived
/// from the token scores.
pub fn from_gguf(
    metadata: &HashMap<String, Value>,
    path: &Path,
) -> Result<TextTokenizer, EngineError> {
    let meta = Metadata {
        map: metadata,
        path,
    };
    let model = meta.string("tokenizer.ggml.model")?;
    let tokens = meta.strings("tokenizer.ggml.tokens")?;
    let token_types = meta.optional_ints("tokenizer.ggml.token_type")?;
    if let Some(types) = &token_types
        && types.len() != tokens.len()
    {
        return Err(meta.invalid(format!(
            "tokenizer.ggml.token_type has {} entries for {} tokens",
            types.len(),
            tokens.len()
        )));
    }
    let type_of = |id: usize| token_types.as_ref().and_then(|t| t.get(id).copied());

    let mut inner = match model {
        "gpt2" => byte_level_bpe(&meta, &tokens)?,
        "llama" => sentencepiece_bpe(&meta, &tokens, type_of)?,
        other => {
            return Err(meta.invalid(format!(
                "tokenizer.ggml.model `{other}` is not supported (supported: gpt2, llama)"
            )));
        }
    };

    // Control tokens are special added tokens, matched whole in the text and skipped when
    // decoding with `skip_special_tokens`. User-defined ones are matched whole but are text.
    let added = |wanted: i64, special: bool| -> Vec<AddedToken> {
        tokens
            .iter()
            .enumerate()
            .filter(|(id, _)| type_of(*id) == Some(wanted))
            .map(|(_, token)| AddedToken::from(*token, special).normalized(false))
            .collect()
    };
    let special = added(TOKEN_TYPE_CONTROL, true);
    if !special.is_empty() {
        inner
            .add_special_tokens(special)
            .map_err(|e| meta.invalid(format!("adding control tokens: {e}")))?;
    }
    let user_defined = added(TOKEN_TYPE_USER_DEFINED, false);
    if !user_defined.is_empty() {
        inner
            .add_tokens(user_defined)
            .map_err(|e| meta.invalid(format!("adding user-defined tokens: {e}")))?;
    }

    let token_count = tokens.len();
    let id = |key: &str| -> Result<Option<u32>, EngineError> {
        match meta.optional_u32(key)? {
            Some(id) if id as usize >= token_count => {
                Err(meta.invalid(format!("{key} is {id}, beyond the {token_count} tokens")))
            }
            other => Ok(other),
        }
    };
    let bos = id("tokenizer.ggml.bos_token_id")?;
    let eos = id("tokenizer.ggml.eos_token_id")?;
    // llama.cpp adds BOS to a SentencePiece vocabulary that does not say otherwise.
    let add_bos = meta
        .optional_bool("tokenizer.ggml.add_bos_token")?
        .unwrap_or(model == "llama")
        && bos.is_some();
    let add_eos = meta
        .optional_bool("tokenizer.ggml.add_eos_token")?
        .unwrap_or(false)
        && eos.is_some();

    let special_ids: HashSet<usize> = (0..token_count)
        .filter(|&id| type_of(id) == Some(TOKEN_TYPE_CONTROL))
        .collect();
    let spelling = if model == "gpt2" {
        TokenSpelling::byte_level(&tokens, &special_ids)
    } else {
        let strip = meta
            .optional_bool("tokenizer.ggml.add_space_prefix")?
            .unwrap_or(true);
        TokenSpelling::sentencepiece(&tokens, &special_ids, strip)
    };
    Ok(TextTokenizer::assemble(
        inner,
        bos,
        eos,
        &[],
        add_bos,
        add_eos,
        spelling,
    ))
}

impl TextTokenizer {
    fn assemble(
        inner: Tokenizer,
        bos: Option<u32>,
        eos: Option<u32>,
        extra_eos: &[u32],
        add_bos: bool,
        add_eos: bool,
        spelling: TokenSpelling,
    ) -> Self {
        let mut eos_ids: Vec<u32> = eos.into_iter().chain(extra_eos.iter().copied()).collect();
        let added = inner.get_added_tokens_decoder();
        for name in END_OF_TURN_TOKENS {
            if let Some(id) = inner.token_to_id(name)
                && added.get(&id).is_some_and(|token| token.special)
            {
                eos_ids.push(id);
            }
        }
        let mut seen = HashSet::new();
        eos_ids.retain(|id| seen.insert(*id));
        TextTokenizer {
            inner,
            bos,
            eos,
            eos_ids,
            add_bos,
            add_eos,
            spelling: Arc::new(spelling),
        }
    }

    /// Token ids for `text`. Special-token text such as `<|im_start|>` becomes its id. With
    /// `add_special`, BOS (and EOS) are added where the model wants them: leave it off for text
    /// from a chat template, which writes BOS itself when the model needs it.
    pub fn encode(&self, text: &str, add_special: bool) -> Result<Vec<u32>, EngineError> {
        let encoding = self
            .inner
            .encode_fast(text, add_special)
            .map_err(|e| EngineError::Tokenizer(e.to_string()))?;
        let ids = encoding.get_ids();
        let mut out = Vec::with_capacity(ids.len() + 2);
        if add_special
            && self.add_bos
            && let Some(bos) = self.bos
        {
            out.push(bos);
        }
        out.extend_from_slice(ids);
        if add_special
            && self.add_eos
            && let Some(eos) = self.eos
        {
            out.push(eos);
        }
        Ok(out)
    }

    /// The text of `ids`, special tokens left out when `skip_special`.
    pub fn decode(&self, ids: &[u32], skip_special: bool) -> Result<String, EngineError> {
        self.inner
            .decode(ids, skip_special)
            .map_err(|e| EngineError::Tokenizer(e.to_string()))
    }

    /// A decoder for one generated sequence. It shares the token table and borrows nothing, so
    /// it can live with its sequence on the scheduler's thread.
    pub fn stream_decoder(&self) -> StreamDecoder {
        StreamDecoder::new(Arc::clone(&self.spelling))
    }

    pub fn bos(&self) -> Option<u32> {
        self.bos
    }

    pub fn eos(&self) -> Option<u32> {
        self.eos
    }

    /// Every id that ends a generation: EOS, and the end-of-turn special tokens the vocabulary has.
    pub fn eos_ids(&self) -> &[u32] {
        &self.eos_ids
    }

    pub fn is_eos(&self, id: u32) -> bool {
        self.eos_ids.contains(&id)
    }

    /// Whether `encode(text, true)` puts BOS first.
    pub fn adds_bos(&self) -> bool {
        self.add_bos
    }

    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    /// The Hugging Face tokenizer underneath.
    pub fn inner(&self) -> &Tokenizer {
        &self.inner
    }
}

fn token_id(index: usize) -> Result<u32, EngineError> {
    u32::try_from(index)
        .map_err(|_| EngineError::Tokenizer(format!("token index {index} overflows")))
}

fn json_token_id(n: &serde_json::Number) -> Option<u32> {
    n.as_u64().and_then(|id| u32::try_from(id).ok())
}

fn read_optional_json(path: &Path) -> Result<Option<serde_json::Value>, EngineError> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| EngineError::load(path, e)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(EngineError::load(path, e)),
    }
}

#[cfg(test)]
mod tests;
