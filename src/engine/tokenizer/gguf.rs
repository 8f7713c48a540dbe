//! Tokenizers rebuilt from a GGUF file's `tokenizer.ggml.*` metadata: byte-level BPE with the
//! pre-tokenizer the file names, and SentencePiece-style BPE.

use super::*;

/// Byte-level BPE with the pre-tokenizer named by `tokenizer.ggml.pre`.
pub(super) fn byte_level_bpe(
    meta: &Metadata<'_>,
    tokens: &[&str],
) -> Result<Tokenizer, EngineError> {
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
pub(super) fn sentencepiece_bpe(
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

/// Typed reads of GGUF metadata whose errors name the file and the key.
pub(super) struct Metadata<'a> {
    pub(super) map: &'a HashMap<String, Value>,
    pub(super) path: &'a Path,
}

impl<'a> Metadata<'a> {
    pub(super) fn invalid(&self, reason: impl std::fmt::Display) -> EngineError {
        EngineError::load(self.path, format!("tokenizer metadata: {reason}"))
    }

    pub(super) fn get(&self, key: &str) -> Result<&'a Value, EngineError> {
        self.map
            .get(key)
            .ok_or_else(|| self.invalid(format!("{key} is missing")))
    }

    pub(super) fn string(&self, key: &str) -> Result<&'a str, EngineError> {
        match self.get(key)? {
            Value::String(s) => Ok(s),
            other => Err(self.wrong_type(key, "a string", other)),
        }
    }

    pub(super) fn optional_string(&self, key: &str) -> Result<Option<&'a str>, EngineError> {
        self.map.get(key).map(|_| self.string(key)).transpose()
    }

    pub(super) fn strings(&self, key: &str) -> Result<Vec<&'a str>, EngineError> {
        self.array(key)?
            .iter()
            .map(|v| match v {
                Value::String(s) => Ok(s.as_str()),
                other => Err(self.wrong_type(key, "an array of strings", other)),
            })
            .collect()
    }

    pub(super) fn optional_strings(&self, key: &str) -> Result<Option<Vec<&'a str>>, EngineError> {
        self.map.get(key).map(|_| self.strings(key)).transpose()
    }

    pub(super) fn optional_ints(&self, key: &str) -> Result<Option<Vec<i64>>, EngineError> {
        if !self.map.contains_key(key) {
            return Ok(None);
        }
        self.array(key)?
            .iter()
            .map(|v| integer(v).ok_or_else(|| self.wrong_type(key, "an array of integers", v)))
            .collect::<Result<Vec<_>, _>>()
            .map(Some)
    }

    pub(super) fn floats(&self, key: &str) -> Result<Vec<f64>, EngineError> {
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

    pub(super) fn optional_u32(&self, key: &str) -> Result<Option<u32>, EngineError> {
        let Some(value) = self.map.get(key) else {
            return Ok(None);
        };
        integer(value)
            .and_then(|i| u32::try_from(i).ok())
            .map(Some)
            .ok_or_else(|| self.wrong_type(key, "a token id", value))
    }

    pub(super) fn optional_bool(&self, key: &str) -> Result<Option<bool>, EngineError> {
        match self.map.get(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(other) => match integer(other) {
                Some(i) => Ok(Some(i != 0)),
                None => Err(self.wrong_type(key, "a boolean", other)),
            },
        }
    }

    pub(super) fn array(&self, key: &str) -> Result<&'a [Value], EngineError> {
        match self.get(key)? {
            Value::Array(values) => Ok(values),
            other => Err(self.wrong_type(key, "an array", other)),
        }
    }

    pub(super) fn wrong_type(&self, key: &str, wanted: &str, got: &Value) -> EngineError {
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
