//! Token ids back to text: how each token's text becomes bytes, and [`StreamDecoder`], which
//! gives out only complete UTF-8 characters as generated ids come in.

use super::*;

/// How the text of one token becomes bytes, which is what [`StreamDecoder`] needs: the
/// tokenizer's own decoder works on whole sequences and replaces partial characters.
#[derive(Debug, Clone)]
pub(super) struct TokenSpelling {
    /// The bytes of token `id` are `bytes[offsets[id]..offsets[id + 1]]`. Special tokens have
    /// none: they are not text.
    bytes: Vec<u8>,
    offsets: Vec<usize>,
    /// SentencePiece decoders drop the space that the encoder put before the first word.
    strip_leading_space: bool,
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
    /// A decoder at the start of a sequence.
    pub(super) fn new(spelling: Arc<TokenSpelling>) -> StreamDecoder {
        StreamDecoder {
            spelling,
            pending: Vec::new(),
            at_start: true,
        }
    }

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
    pub(super) fn build(
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
    pub(super) fn byte_level(tokens: &[&str], special: &HashSet<usize>) -> Self {
        Self::build(tokens.len(), false, |id, out| {
            if !special.contains(&id) {
                push_byte_level(tokens[id], out);
            }
        })
    }

    /// SentencePiece: `▁` is a space and `<0xNN>` is the byte NN.
    pub(super) fn sentencepiece(
        tokens: &[&str],
        special: &HashSet<usize>,
        strip_leading_space: bool,
    ) -> Self {
        Self::build(tokens.len(), strip_leading_space, |id, out| {
            if !special.contains(&id) {
                push_sentencepiece(tokens[id], out);
            }
        })
    }

    pub(super) fn bytes_of(&self, id: u32) -> &[u8] {
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
pub(super) fn byte_level_byte(c: char) -> Option<u8> {
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
pub(super) fn sentencepiece_byte(token: &str) -> Option<u8> {
    let hex = token.strip_prefix("<0x")?.strip_suffix('>')?;
    if hex.len() != 2 {
        return None;
    }
    u8::from_str_radix(hex, 16).ok()
}

/// A tokenizer.json's decoder tells how its tokens spell text. Those it does not describe fall
/// back to decoding each token alone, which is exact for whole-character tokens.
pub(super) fn spelling_from_decoder(inner: &Tokenizer) -> TokenSpelling {
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
