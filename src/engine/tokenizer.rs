//! Text ↔ token ids for local models: a Hugging Face `tokenizers::Tokenizer` loaded from a
//! `tokenizer.json` or rebuilt from a GGUF file's `tokenizer.ggml.*` metadata, which special
//! tokens end a generation, and [`StreamDecoder`], which turns generated ids into text one token
//! at a time without ever splitting a UTF-8 character.
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

/// How the text of one token becomes bytes, which is what [`StreamDecoder`] needs: the
/// tokenizer's own decoder works on whole sequences and replaces partial characters.
#[derive(Debug, Clone)]
struct TokenSpelling {
    /// The bytes of token `id` are `bytes[offsets[id]..offsets[id + 1]]`. Special tokens have
    /// none: they are not text.
    bytes: Vec<u8>,
    offsets: Vec<usize>,
    /// SentencePiece decoders drop the space that the encoder put before the first word.
    strip_leading_space: bool,
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
        StreamDecoder {
            spelling: Arc::clone(&self.spelling),
            pending: Vec::new(),
            at_start: true,
        }
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

/// Turns the ids of one generated sequence into text as they come. Each step returns only
/// complete characters: a byte-level or byte-fallback token can end inside a multi-byte
/// character (emoji, CJK), and those bytes wait for the tokens that complete them. Special
/// tokens produce no text.
#[derive(Debug, Clone)]
pub struct StreamDecoder {
    spelling: Arc<TokenSpelling>,
    pending: Vec<u8>,
    at_start: bool,
}

impl StreamDecoder {
    /// The text that `id` completes; empty while a character is still partial.
    pub fn step(&mut self, id: u32) -> String {
        let mut bytes = self.spelling.bytes_of(id);
        if self.at_start && !bytes.is_empty() {
            self.at_start = false;
            if self.spelling.strip_leading_space {
                bytes = bytes.strip_prefix(b" ").unwrap_or(bytes);
            }
        }
        self.pending.extend_from_slice(bytes);
        self.take_complete()
    }

    /// The rest at the end of the sequence: bytes that never became a character are written as
    /// U+FFFD, as a lossy decode would.
    pub fn finish(&mut self) -> String {
        let rest = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        rest
    }

    /// Whether bytes are waiting for the rest of their character.
    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    fn take_complete(&mut self) -> String {
        let mut out = String::new();
        let mut start = 0;
        while start < self.pending.len() {
            match std::str::from_utf8(&self.pending[start..]) {
                Ok(text) => {
                    out.push_str(text);
                    start = self.pending.len();
                }
                Err(e) => {
                    let valid = start + e.valid_up_to();
                    // The prefix up to `valid` is UTF-8: from_utf8 just said so.
                    out.push_str(&String::from_utf8_lossy(&self.pending[start..valid]));
                    match e.error_len() {
                        // Bytes that no continuation can make valid.
                        Some(len) => {
                            out.push(char::REPLACEMENT_CHARACTER);
                            start = valid + len;
                        }
                        // A character cut short at the end: keep it for the next token.
                        None => {
                            self.pending.drain(..valid);
                            return out;
                        }
                    }
                }
            }
        }
        self.pending.clear();
        out
    }
}

impl TokenSpelling {
    fn build(
        count: usize,
        strip_leading_space: bool,
        mut spell: impl FnMut(usize, &mut Vec<u8>),
    ) -> Self {
        let mut bytes = Vec::new();
        let mut offsets = Vec::with_capacity(count + 1);
        offsets.push(0);
        for id in 0..count {
            spell(id, &mut bytes);
            offsets.push(bytes.len());
        }
        TokenSpelling {
            bytes,
            offsets,
            strip_leading_space,
        }
    }

    /// GPT-2's byte-level alphabet: each character of a token stands for one byte. A token with a
    /// character outside it (an added token such as `<｜end▁of▁sentence｜>`) is its own UTF-8
    /// text, as in the `tokenizers` ByteLevel decoder.
    fn byte_level(tokens: &[&str], special: &HashSet<usize>) -> Self {
        Self::build(tokens.len(), false, |id, out| {
            if !special.contains(&id) {
                push_byte_level(tokens[id], out);
            }
        })
    }

    /// SentencePiece: `▁` is a space and `<0xNN>` is the byte NN.
    fn sentencepiece(tokens: &[&str], special: &HashSet<usize>, strip_leading_space: bool) -> Self {
        Self::build(tokens.len(), strip_leading_space, |id, out| {
            if !special.contains(&id) {
                push_sentencepiece(tokens[id], out);
            }
        })
    }

    fn bytes_of(&self, id: u32) -> &[u8] {
        let id = id as usize;
        match (self.offsets.get(id), self.offsets.get(id + 1)) {
            (Some(&start), Some(&end)) => &self.bytes[start..end],
            _ => &[],
        }
    }
}

fn push_byte_level(token: &str, out: &mut Vec<u8>) {
    let start = out.len();
    for c in token.chars() {
        match byte_level_byte(c) {
            Some(b) => out.push(b),
            None => {
                out.truncate(start);
                out.extend_from_slice(token.as_bytes());
                return;
            }
        }
    }
}

/// The byte that `c` stands for in GPT-2's byte-to-unicode table: printable Latin-1 bytes stand
/// for themselves, and the 68 others (0–32, 127–160, 173, in that order) for U+0100 onwards.
fn byte_level_byte(c: char) -> Option<u8> {
    let code = u32::from(c);
    let printable = (0x21..=0x7E).contains(&code)
        || (0xA1..=0xAC).contains(&code)
        || (0xAE..=0xFF).contains(&code);
    let byte = if printable {
        code
    } else {
        match code.checked_sub(0x100)? {
            n @ 0..=32 => n,
            n @ 33..=66 => n - 33 + 0x7F,
            67 => 0xAD,
            _ => return None,
        }
    };
    u8::try_from(byte).ok()
}

fn push_sentencepiece(token: &str, out: &mut Vec<u8>) {
    if let Some(byte) = sentencepiece_byte(token) {
        out.push(byte);
        return;
    }
    for c in token.chars() {
        if c == METASPACE {
            out.push(b' ');
        } else {
            let mut buf = [0; 4];
            out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
        }
    }
}

/// `<0xNN>`, SentencePiece's byte-fallback token for byte NN.
fn sentencepiece_byte(token: &str) -> Option<u8> {
    let hex = token.strip_prefix("<0x")?.strip_suffix('>')?;
    if hex.len() != 2 {
        return None;
    }
    u8::from_str_radix(hex, 16).ok()
}

/// A tokenizer.json's decoder tells how its tokens spell text. Those it does not describe fall
/// back to decoding each token alone, which is exact for whole-character tokens.
fn spelling_from_decoder(inner: &Tokenizer) -> TokenSpelling {
    let count = inner.get_vocab_size(true);
    let special: HashSet<usize> = inner
        .get_added_tokens_decoder()
        .iter()
        .filter(|(_, token)| token.special)
        .map(|(id, _)| *id as usize)
        .collect();
    let token = |id: usize| u32::try_from(id).ok().and_then(|id| inner.id_to_token(id));

    enum Kind {
        ByteLevel,
        SentencePiece { strip: bool },
        Other,
    }
    let kind = match inner.get_decoder() {
        Some(DecoderWrapper::ByteLevel(_)) => Kind::ByteLevel,
        Some(DecoderWrapper::Metaspace(m)) => Kind::SentencePiece {
            strip: m.get_prepend_scheme() != PrependScheme::Never,
        },
        Some(DecoderWrapper::Sequence(seq)) => {
            let parts = seq.get_decoders();
            let sentencepiece = parts.iter().any(|d| {
                matches!(
                    d,
                    DecoderWrapper::ByteFallback(_) | DecoderWrapper::Metaspace(_)
                )
            });
            let strip = parts.iter().any(|d| match d {
                DecoderWrapper::Strip(s) => s.content == ' ' && s.start > 0,
                DecoderWrapper::Metaspace(m) => m.get_prepend_scheme() != PrependScheme::Never,
                _ => false,
            });
            if sentencepiece {
                Kind::SentencePiece { strip }
            } else if parts
                .iter()
                .any(|d| matches!(d, DecoderWrapper::ByteLevel(_)))
            {
                Kind::ByteLevel
            } else {
                Kind::Other
            }
        }
        _ => Kind::Other,
    };
    match kind {
        Kind::ByteLevel => TokenSpelling::build(count, false, |id, out| {
            if !special.contains(&id)
                && let Some(t) = token(id)
            {
                push_byte_level(&t, out);
            }
        }),
        Kind::SentencePiece { strip } => TokenSpelling::build(count, strip, |id, out| {
            if !special.contains(&id)
                && let Some(t) = token(id)
            {
                push_sentencepiece(&t, out);
            }
        }),
        Kind::Other => TokenSpelling::build(count, false, |id, out| {
            if !special.contains(&id)
                && let Ok(id) = u32::try_from(id)
                && let Ok(text) = inner.decode(&[id], false)
            {
                out.extend_from_slice(text.as_bytes());
            }
        }),
    }
}

/// Byte-level BPE with the pre-tokenizer named by `tokenizer.ggml.pre`.
fn byte_level_bpe(meta: &Metadata<'_>, tokens: &[&str]) -> Result<Tokenizer, EngineError> {
    let merges = meta
        .strings("tokenizer.ggml.merges")?
        .into_iter()
        .map(|merge| {
            merge
                .split_once(' ')
                .map(|(a, b)| (a.to_owned(), b.to_owned()))
                .ok_or_else(|| meta.invalid(format!("merge `{merge}` is not two tokens")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let pre = meta
        .optional_string("tokenizer.ggml.pre")?
        .unwrap_or("default");

    let byte_level =
        |use_regex: bool| -> PreTokenizerWrapper { ByteLevel::new(false, true, use_regex).into() };
    let split = |regex: &str| -> Result<PreTokenizerWrapper, EngineError> {
        Split::new(
            SplitPattern::Regex(regex.to_owned()),
            SplitDelimiterBehavior::Isolated,
            false,
        )
        .map(Into::into)
        .map_err(|e| meta.invalid(format!("split regex for `{pre}`: {e}")))
    };
    // (pre-tokenizer, normalizer, ignore_merges), as in each family's own tokenizer.json.
    let (pre_tokenizer, normalizer, ignore_merges): (
        PreTokenizerWrapper,
        Option<NormalizerWrapper>,
        bool,
    ) = match pre {
        "smollm" => (
            PreTokenizerSequence::new(vec![Digits::new(true).into(), byte_level(true)]).into(),
            None,
            false,
        ),
        "gpt2" | "default" => (byte_level(true), None, false),
        "llama-bpe" | "llama3" | "llama-v3" | "falcon3" | "smaug-bpe" | "dbrx" => (
            PreTokenizerSequence::new(vec![split(LLAMA3_SPLIT)?, byte_level(false)]).into(),
            None,
            true,
        ),
        "qwen2" | "deepseek-r1-qwen" => (
            PreTokenizerSequence::new(vec![split(QWEN2_SPLIT)?, byte_level(false)]).into(),
            Some(NFC.into()),
            false,
        ),
        other => {
            return Err(meta.invalid(format!(
                "tokenizer.ggml.pre `{other}` is not supported (supported: smollm, llama-bpe, \
                 qwen2, gpt2, default)"
            )));
        }
    };

    let vocab: Vocab = tokens
        .iter()
        .enumerate()
        .map(|(id, token)| Ok(((*token).to_owned(), token_id(id)?)))
        .collect::<Result<_, EngineError>>()?;
    let bpe = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .ignore_merges(ignore_merges)
        .build()
        .map_err(|e| meta.invalid(format!("BPE model: {e}")))?;

    let mut inner = Tokenizer::new(bpe);
    inner.with_pre_tokenizer(Some(pre_tokenizer));
    if let Some(normalizer) = normalizer {
        inner
            .with_normalizer(Some(normalizer))
            .map_err(|e| meta.invalid(format!("normalizer: {e}")))?;
    }
    inner.with_decoder(Some(ByteLevel::default()));
    Ok(inner)
}

/// SentencePiece-style BPE (Llama 2, Mistral) the way llama.cpp reads it and Llama 2's own
/// `tokenizer.json` spells it: spaces as `▁` with one put before each stretch of text, byte
/// fallback through the `<0xNN>` tokens, and merges derived from the scores when the file has
/// none (each token that splits into two tokens is a merge of those, ranked by its score).
fn sentencepiece_bpe(
    meta: &Metadata<'_>,
    tokens: &[&str],
    type_of: impl Fn(usize) -> Option<i64>,
) -> Result<Tokenizer, EngineError> {
    let mut vocab: HashMap<&str, usize> = HashMap::with_capacity(tokens.len());
    for (id, token) in tokens.iter().enumerate() {
        vocab.insert(token, id);
    }
    let merges = match meta.optional_strings("tokenizer.ggml.merges")? {
        Some(merges) => merges
            .into_iter()
            .map(|merge| {
                merge
                    .split_once(' ')
                    .map(|(a, b)| (a.to_owned(), b.to_owned()))
                    .ok_or_else(|| meta.invalid(format!("merge `{merge}` is not two tokens")))
            })
            .collect::<Result<Vec<_>, _>>()?,
        None => {
            let scores = meta.floats("tokenizer.ggml.scores")?;
            if scores.len() != tokens.len() {
                return Err(meta.invalid(format!(
                    "tokenizer.ggml.scores has {} entries for {} tokens",
                    scores.len(),
                    tokens.len()
                )));
            }
            merges_from_scores(tokens, &scores, &vocab)
        }
    };
    let unk = meta
        .optional_u32("tokenizer.ggml.unknown_token_id")?
        .and_then(|id| tokens.get(id as usize))
        .map(|t| (*t).to_owned());
    let byte_tokens = tokens
        .iter()
        .enumerate()
        .any(|(id, t)| type_of(id) == Some(TOKEN_TYPE_BYTE) || sentencepiece_byte(t).is_some());

    let bpe_vocab: Vocab = tokens
        .iter()
        .enumerate()
        .map(|(id, token)| Ok(((*token).to_owned(), token_id(id)?)))
        .collect::<Result<_, EngineError>>()?;
    let mut builder = BPE::builder()
        .vocab_and_merges(bpe_vocab, merges)
        .fuse_unk(true)
        .byte_fallback(byte_tokens);
    if let Some(unk) = unk {
        builder = builder.unk_token(unk);
    }
    let bpe = builder
        .build()
        .map_err(|e| meta.invalid(format!("BPE model: {e}")))?;

    // llama.cpp (like SentencePiece itself) puts a space before every stretch of text: at the
    // start, even when the text already starts with one, and after each special token. A
    // normalizer does exactly that, since each stretch between added tokens is normalized on its
    // own. (transformers' GGUF conversion uses a `Metaspace` pre-tokenizer instead, which skips
    // both cases.)
    let add_prefix = meta
        .optional_bool("tokenizer.ggml.add_space_prefix")?
        .unwrap_or(true);
    let to_metaspace: NormalizerWrapper = Replace::new(" ", METASPACE.to_string())
        .map_err(|e| meta.invalid(format!("normalizer: {e}")))?
        .into();
    let normalizer: NormalizerWrapper = if add_prefix {
        NormalizerSequence::new(vec![
            Prepend::new(METASPACE.to_string()).into(),
            to_metaspace,
        ])
        .into()
    } else {
        to_metaspace
    };
    let mut inner = Tokenizer::new(bpe);
    inner
        .with_normalizer(Some(normalizer))
        .map_err(|e| meta.invalid(format!("normalizer: {e}")))?;
    let mut decoders: Vec<DecoderWrapper> = vec![
        Replace::new(METASPACE.to_string(), " ")
            .map_err(|e| meta.invalid(format!("decoder: {e}")))?
            .into(),
        ByteFallback::new().into(),
        Fuse::new().into(),
    ];
    if add_prefix {
        decoders.push(Strip::new(' ', 1, 0).into());
    }
    inner.with_decoder(Some(DecoderSequence::new(decoders)));
    Ok(inner)
}

/// The merges a SentencePiece vocabulary implies, in the order transformers' `generate_merges`
/// gives them: every split of a token into two tokens is a merge carrying that token's score;
/// splits of one token are ordered by the ids of their parts; then all are sorted by score,
/// longer left and right parts first on ties, stably.
fn merges_from_scores(
    tokens: &[&str],
    scores: &[f64],
    vocab: &HashMap<&str, usize>,
) -> Vec<(String, String)> {
    let mut seen = HashSet::new();
    let mut merges: Vec<(&str, &str, f64)> = Vec::new();
    for (token, score) in tokens.iter().zip(scores) {
        // A repeated token counts once, where it first appears, as a Python dict would keep it.
        if !seen.insert(*token) {
            continue;
        }
        let mut local: Vec<(&str, &str, f64)> = token
            .char_indices()
            .skip(1)
            .map(|(at, _)| token.split_at(at))
            .filter(|(left, right)| vocab.contains_key(left) && vocab.contains_key(right))
            .map(|(left, right)| (left, right, *score))
            .collect();
        local.sort_by_key(|(left, right, _)| (vocab.get(left), vocab.get(right)));
        merges.extend(local);
    }
    merges.sort_by(|a, b| {
        b.2.total_cmp(&a.2)
            .then_with(|| b.0.chars().count().cmp(&a.0.chars().count()))
            .then_with(|| b.1.chars().count().cmp(&a.1.chars().count()))
    });
    merges
        .into_iter()
        .map(|(left, right, _)| (left.to_owned(), right.to_owned()))
        .collect()
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

/// Typed reads of GGUF metadata whose errors name the file and the key.
struct Metadata<'a> {
    map: &'a HashMap<String, Value>,
    path: &'a Path,
}

impl<'a> Metadata<'a> {
    fn invalid(&self, reason: impl std::fmt::Display) -> EngineError {
        EngineError::load(self.path, format!("tokenizer metadata: {reason}"))
    }

    fn get(&self, key: &str) -> Result<&'a Value, EngineError> {
        self.map
            .get(key)
            .ok_or_else(|| self.invalid(format!("{key} is missing")))
    }

    fn string(&self, key: &str) -> Result<&'a str, EngineError> {
        match self.get(key)? {
            Value::String(s) => Ok(s),
            other => Err(self.wrong_type(key, "a string", other)),
        }
    }

    fn optional_string(&self, key: &str) -> Result<Option<&'a str>, EngineError> {
        self.map.get(key).map(|_| self.string(key)).transpose()
    }

    fn strings(&self, key: &str) -> Result<Vec<&'a str>, EngineError> {
        self.array(key)?
            .iter()
            .map(|v| match v {
                Value::String(s) => Ok(s.as_str()),
                other => Err(self.wrong_type(key, "an array of strings", other)),
            })
            .collect()
    }

    fn optional_strings(&self, key: &str) -> Result<Option<Vec<&'a str>>, EngineError> {
        self.map.get(key).map(|_| self.strings(key)).transpose()
    }

    fn optional_ints(&self, key: &str) -> Result<Option<Vec<i64>>, EngineError> {
        if !self.map.contains_key(key) {
            return Ok(None);
        }
        self.array(key)?
            .iter()
            .map(|v| integer(v).ok_or_else(|| self.wrong_type(key, "an array of integers", v)))
            .collect::<Result<Vec<_>, _>>()
            .map(Some)
    }

    fn floats(&self, key: &str) -> Result<Vec<f64>, EngineError> {
        self.array(key)?
            .iter()
            .map(|v| match v {
                Value::F32(x) => Ok(f64::from(*x)),
                Value::F64(x) => Ok(*x),
                other => integer(other)
                    // Scores are small integers when they are integers at all.
                    .map(|i| i as f64)
                    .ok_or_else(|| self.wrong_type(key, "an array of numbers", other)),
            })
            .collect()
    }

    fn optional_u32(&self, key: &str) -> Result<Option<u32>, EngineError> {
        let Some(value) = self.map.get(key) else {
            return Ok(None);
        };
        integer(value)
            .and_then(|i| u32::try_from(i).ok())
            .map(Some)
            .ok_or_else(|| self.wrong_type(key, "a token id", value))
    }

    fn optional_bool(&self, key: &str) -> Result<Option<bool>, EngineError> {
        match self.map.get(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(other) => match integer(other) {
                Some(i) => Ok(Some(i != 0)),
                None => Err(self.wrong_type(key, "a boolean", other)),
            },
        }
    }

    fn array(&self, key: &str) -> Result<&'a [Value], EngineError> {
        match self.get(key)? {
            Value::Array(values) => Ok(values),
            other => Err(self.wrong_type(key, "an array", other)),
        }
    }

    fn wrong_type(&self, key: &str, wanted: &str, got: &Value) -> EngineError {
        self.invalid(format!(
            "{key} should be {wanted}, not {:?}",
            got.value_type()
        ))
    }
}

fn integer(value: &Value) -> Option<i64> {
    match *value {
        Value::U8(x) => Some(i64::from(x)),
        Value::I8(x) => Some(i64::from(x)),
        Value::U16(x) => Some(i64::from(x)),
        Value::I16(x) => Some(i64::from(x)),
        Value::U32(x) => Some(i64::from(x)),
        Value::I32(x) => Some(i64::from(x)),
        Value::U64(x) => i64::try_from(x).ok(),
        Value::I64(x) => Some(x),
        _ => None,
    }
}

#[cfg(test)]
#[path = "tokenizer_tests.rs"]
mod tests;
