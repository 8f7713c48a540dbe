//! Unit tests of `tokenizer`.

use std::path::PathBuf;

use candle_core::quantized::gguf_file;

use super::*;
use crate::engine::testing;

fn gguf_metadata(path: &Path) -> HashMap<String, Value> {
    let mut file = std::fs::File::open(path).unwrap();
    gguf_file::Content::read(&mut file).unwrap().metadata
}

fn smollm2(test: &str) -> Option<(PathBuf, TextTokenizer)> {
    let path = testing::chat_gguf(test)?;
    let tokenizer = from_gguf(&gguf_metadata(&path), &path).unwrap();
    Some((path, tokenizer))
}

#[derive(serde::Deserialize)]
struct Reference {
    generated_by: String,
    cases: Vec<ReferenceCase>,
}

#[derive(serde::Deserialize)]
struct ReferenceCase {
    text: String,
    ids: Vec<u32>,
}

fn reference(name: &str) -> Reference {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/tokenizer")
        .join(name);
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

#[test]
fn smollm2_ids_match_the_reference_implementations() {
    let Some((_, tokenizer)) = smollm2("smollm2_ids_match_the_reference_implementations") else {
        return;
    };
    let reference = reference("smollm2_reference.json");
    assert!(!reference.generated_by.is_empty());
    assert!(reference.cases.len() >= 12);
    for case in &reference.cases {
        let ids = tokenizer.encode(&case.text, false).unwrap();
        assert_eq!(ids, case.ids, "ids of {:?}", case.text);
    }
}

#[test]
fn smollm2_decodes_what_it_encodes() {
    let Some((_, tokenizer)) = smollm2("smollm2_decodes_what_it_encodes") else {
        return;
    };
    for case in reference("smollm2_reference.json").cases {
        let ids = tokenizer.encode(&case.text, false).unwrap();
        assert_eq!(tokenizer.decode(&ids, false).unwrap(), case.text);
    }
}

#[test]
fn smollm2_known_answers_and_special_tokens() {
    let Some((_, tokenizer)) = smollm2("smollm2_known_answers_and_special_tokens") else {
        return;
    };
    // Known answers recorded in FACTS.md (llama.cpp and transformers agree).
    assert_eq!(tokenizer.encode("Hello world", true).unwrap(), [19556, 905]);
    assert_eq!(
        tokenizer
            .encode("What is the capital of France?", false)
            .unwrap(),
        [1780, 314, 260, 3575, 282, 4649, 47]
    );
    assert_eq!(tokenizer.bos(), Some(1));
    assert_eq!(tokenizer.eos(), Some(2));
    assert!(!tokenizer.adds_bos());
    assert_eq!(tokenizer.eos_ids(), [2, 0]);
    assert_eq!(tokenizer.vocab_size(), 49152);
    assert_eq!(tokenizer.token_to_id("<|im_start|>"), Some(1));
    assert_eq!(tokenizer.decode(&[1, 19556, 2], true).unwrap(), "Hello");
}

/// Feeds ids one at a time, checking that no step cuts a character.
fn stream(tokenizer: &TextTokenizer, ids: &[u32]) -> (String, usize) {
    let mut decoder = tokenizer.stream_decoder();
    let mut text = String::new();
    let mut held = 0;
    for &id in ids {
        let piece = decoder.step(id);
        assert!(!piece.contains('\u{FFFD}'), "{piece:?} after {id}");
        if decoder.has_pending() {
            held += 1;
        }
        text.push_str(&piece);
    }
    text.push_str(&decoder.finish());
    (text, held)
}

#[test]
fn stream_decoder_holds_partial_emoji_and_cjk_until_complete() {
    let Some((_, tokenizer)) = smollm2("stream_decoder_holds_partial_emoji_and_cjk_until_complete")
    else {
        return;
    };
    for text in ["Emoji: 😀 👍🏽 👨‍👩‍👧‍👦 🏳️‍🌈", "日本語のテキスト、中文文本，한국어"]
    {
        let ids = tokenizer.encode(text, false).unwrap();
        let (decoded, held) = stream(&tokenizer, &ids);
        assert_eq!(decoded, text);
        assert!(held > 0, "no token of {text:?} split a character: {ids:?}");
    }
    // Every reference string streams to the same text as a whole decode, special tokens left out.
    for case in reference("smollm2_reference.json").cases {
        let (decoded, _) = stream(&tokenizer, &case.ids);
        assert_eq!(decoded, tokenizer.decode(&case.ids, true).unwrap());
    }
}

#[test]
fn sentencepiece_ids_match_llama_cpp() {
    // A made-up vocabulary (make_tiny_spm.py) in a GGUF of its own, so this runs everywhere.
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/tokenizer/tiny_spm.gguf");
    let tokenizer = from_gguf(&gguf_metadata(&path), &path).unwrap();
    let reference = reference("tiny_spm_reference.json");
    for case in &reference.cases {
        let ids = tokenizer.encode(&case.text, false).unwrap();
        assert_eq!(ids, case.ids, "ids of {:?}", case.text);
        let (streamed, _) = stream(&tokenizer, &ids);
        assert_eq!(
            streamed,
            tokenizer.decode(&ids, true).unwrap(),
            "{:?}",
            case.text
        );
        if !case.text.contains("</s>") && !case.text.contains("<s>") {
            assert_eq!(tokenizer.decode(&ids, false).unwrap(), case.text);
        }
    }
    assert!(tokenizer.adds_bos());
    assert_eq!(
        tokenizer.encode("hello world", true).unwrap(),
        [1, 282, 285]
    );
    assert_eq!(tokenizer.eos_ids(), [2]);
    // Byte-fallback tokens of one emoji stream as one character.
    let mut decoder = tokenizer.stream_decoder();
    let pieces: Vec<String> = tokenizer
        .encode("😀 test", false)
        .unwrap()
        .into_iter()
        .map(|id| decoder.step(id))
        .collect();
    // "▁" (the space put first, dropped), four bytes, then "▁t" "es" "t".
    assert_eq!(pieces, ["", "", "", "", "😀", " t", "es", "t"]);
}

#[test]
fn a_tokenizer_json_beside_the_gguf_wins() {
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/tokenizer/tiny_spm.gguf");
    let metadata = gguf_metadata(&source);
    let dir = std::env::temp_dir().join(format!("pasarela-tokenizer-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let gguf = dir.join("model.gguf");
    // Without a sibling the metadata is used: it asks for BOS.
    assert!(for_gguf(&metadata, &gguf).unwrap().adds_bos());
    // A tokenizer.json (here one with a single extra token) replaces it.
    let mut json_tokenizer = from_gguf(&metadata, &source).unwrap().inner().clone();
    json_tokenizer
        .add_special_tokens([AddedToken::from("<extra>", true)])
        .unwrap();
    json_tokenizer
        .save(dir.join("tokenizer.json"), false)
        .unwrap();
    let loaded = for_gguf(&metadata, &gguf);
    std::fs::remove_dir_all(&dir).unwrap();
    let loaded = loaded.unwrap();
    assert!(!loaded.adds_bos());
    assert_eq!(loaded.token_to_id("<extra>"), Some(301));
    assert_eq!(loaded.encode("hello world", false).unwrap(), [282, 285]);
    assert_eq!(loaded.stream_decoder().step(282), "hello");
}

#[test]
fn stream_decoder_replaces_bytes_that_never_complete() {
    let tokens = [
        "<s>", "<0xF0>", "<0x9F>", "<0x98>", "<0x80>", "<0xFF>", "▁hi", "▁there",
    ];
    let special = HashSet::from([0]);
    let spelling = Arc::new(TokenSpelling::sentencepiece(&tokens, &special, true));
    let mut decoder = StreamDecoder::new(spelling);
    assert_eq!(decoder.step(0), "");
    // The space SentencePiece put before the first word goes, the next one stays.
    assert_eq!(decoder.step(6), "hi");
    assert_eq!(decoder.step(7), " there");
    assert_eq!(decoder.step(1), "");
    assert_eq!(decoder.step(2), "");
    assert_eq!(decoder.step(3), "");
    assert_eq!(decoder.step(4), "😀");
    assert_eq!(decoder.step(5), "\u{FFFD}");
    assert_eq!(decoder.step(1), "");
    assert_eq!(decoder.step(6), "\u{FFFD} hi");
    assert_eq!(decoder.step(1), "");
    assert_eq!(decoder.finish(), "\u{FFFD}");
    assert_eq!(decoder.step(99), "");
}

#[test]
fn byte_level_alphabet_is_gpt2s() {
    // Spellings that every GPT-2-style vocabulary shows: Ġ space, Ċ newline, ĉ tab, č CR.
    assert_eq!(byte_level_byte('Ġ'), Some(b' '));
    assert_eq!(byte_level_byte('Ċ'), Some(b'\n'));
    assert_eq!(byte_level_byte('ĉ'), Some(b'\t'));
    assert_eq!(byte_level_byte('č'), Some(b'\r'));
    assert_eq!(byte_level_byte('Ā'), Some(0));
    assert_eq!(byte_level_byte('a'), Some(b'a'));
    assert_eq!(byte_level_byte('é'), Some(0xE9));
    assert_eq!(byte_level_byte(' '), None);
    assert_eq!(byte_level_byte('▁'), None);
    // A bijection between 256 characters and the 256 bytes.
    let bytes: HashSet<u8> = (0..0x200u32)
        .filter_map(char::from_u32)
        .filter_map(byte_level_byte)
        .collect();
    let chars = (0..0x200u32)
        .filter_map(char::from_u32)
        .filter(|c| byte_level_byte(*c).is_some())
        .count();
    assert_eq!((bytes.len(), chars), (256, 256));
}

#[test]
fn unknown_pre_tokenizer_is_an_error_naming_it_and_the_file() {
    let Some(path) = testing::chat_gguf("unknown_pre_tokenizer_is_an_error_naming_it_and_the_file")
    else {
        return;
    };
    let mut metadata = gguf_metadata(&path);
    metadata.insert(
        "tokenizer.ggml.pre".into(),
        Value::String("mystery-bpe".into()),
    );
    let message = from_gguf(&metadata, &path).unwrap_err().to_string();
    assert!(message.contains("mystery-bpe"), "{message}");
    assert!(message.contains(&path.display().to_string()), "{message}");

    metadata.insert("tokenizer.ggml.model".into(), Value::String("rwkv".into()));
    let message = from_gguf(&metadata, &path).unwrap_err().to_string();
    assert!(message.contains("`rwkv` is not supported"), "{message}");

    metadata.remove("tokenizer.ggml.tokens");
    let message = from_gguf(&metadata, &path).unwrap_err().to_string();
    assert!(
        message.contains("tokenizer.ggml.tokens is missing"),
        "{message}"
    );
}

#[test]
fn tokenizer_json_of_minilm_gives_bert_ids() {
    let Some(dir) = testing::embedder_dir("tokenizer_json_of_minilm_gives_bert_ids") else {
        return;
    };
    let tokenizer = from_json(&dir.join("tokenizer.json")).unwrap();
    // bert-base-uncased: [CLS] 101, hello 7592, world 2088, [SEP] 102.
    assert_eq!(
        tokenizer.encode("Hello world", true).unwrap(),
        [101, 7592, 2088, 102]
    );
    assert_eq!(
        tokenizer.encode("Hello world", false).unwrap(),
        [7592, 2088]
    );
    let mut decoder = tokenizer.stream_decoder();
    assert_eq!(decoder.step(101), "");
    assert_eq!(decoder.step(7592), "hello");
}
