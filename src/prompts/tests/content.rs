use std::path::Path;

use super::yaml;
use crate::prompts::{ContentError, ContentHash, PromptContent, PromptFile};

const BASE: &str = "name: base
description: A test prompt.
model: smollm2-135m-instruct
params:
  temperature: 0.2
  max_tokens: 40
  extra: {n: 1}
variables:
  who: {type: string}
  tone: {type: string, default: warm}
response_format: {type: json_object}
messages:
  - role: system
    content: Be {{ tone }}.
  - role: user
    content: Greet {{ who }}.
";

#[test]
fn hash_is_the_sha256_hex_of_the_stored_text() {
    let content = yaml(BASE).content;
    let hash = content.content_hash();
    assert_eq!(hash, ContentHash::of(&content.to_stored()));
    assert_eq!(ContentHash::parse(hash.as_str()), Ok(hash.clone()));
    assert!(ContentHash::parse(&hash.as_str().to_uppercase()).is_err());
    assert!(ContentHash::parse("abc").is_err());
}

#[test]
fn canonical_form_of_a_small_prompt_is_pinned() {
    // Changing this breaks every stored hash: a change here needs a migration, not an update.
    let content = yaml(
        "name: pin\nvariables: {who: {type: string}, n: {type: integer, default: 2}}\nparams: {temperature: 0.5, stop: END}\nmessages:\n  - role: user\n    content: \"Hi {{ who }} <b>\\u00e9\\n\"\n",
    )
    .content;
    assert_eq!(
        content.to_stored(),
        r#"{"messages":[{"content":"Hi {{ who }} <b>é\n","role":"user"}],"params":{"stop":["END"],"temperature":0.5},"variables":{"n":{"default":2,"type":"integer"},"who":{"type":"string"}}}"#
    );
    // Python: sha256(json.dumps(c, sort_keys=True, separators=(",", ":"), ensure_ascii=False))
    assert_eq!(
        content.content_hash().as_str(),
        "ca929d60ec75318ca923790b1482424d5d32d6b48be3796a1f4c4b4ecad61866"
    );
}

#[test]
fn hash_ignores_key_order_and_variable_declaration_order() {
    let reordered = "messages:
  - content: Be {{ tone }}.
    role: system
  - role: user
    content: Greet {{ who }}.
response_format: {type: json_object}
variables:
  tone: {default: warm, type: string}
  who: {type: string}
params: {extra: {n: 1}, max_tokens: 40, temperature: 0.2}
model: smollm2-135m-instruct
description: A test prompt.
name: base
";
    assert_eq!(
        yaml(reordered).content.content_hash(),
        yaml(BASE).content.content_hash()
    );
}

#[test]
fn hash_ignores_the_name_and_the_file_path() {
    let renamed = PromptFile::parse(
        Path::new("elsewhere/x.yml"),
        &BASE.replace("name: base", "name: other"),
    )
    .unwrap();
    assert_eq!(
        renamed.content.content_hash(),
        yaml(BASE).content.content_hash()
    );
}

#[test]
fn crlf_line_endings_give_the_same_hash() {
    let crlf = BASE.replace('\n', "\r\n");
    assert_eq!(
        yaml(&crlf).content.content_hash(),
        yaml(BASE).content.content_hash()
    );
}

#[test]
fn hash_changes_with_any_change_to_the_content() {
    let base = yaml(BASE).content.content_hash();
    let changes = [
        ("Greet {{ who }}.", "Greet  {{ who }}."),
        (
            "content: Greet {{ who }}.",
            "content: \"Greet {{ who }}. \"",
        ),
        ("Greet {{ who }}.", "Greet {{who}}."),
        ("role: user", "role: assistant"),
        ("A test prompt.", "A test prompt"),
        ("model: smollm2-135m-instruct", "model: other"),
        ("temperature: 0.2", "temperature: 0.3"),
        ("max_tokens: 40", "max_tokens: 41"),
        ("extra: {n: 1}", "extra: {n: 2}"),
        ("default: warm", "default: cold"),
        (
            "tone: {type: string, default: warm}",
            "tone: {type: string, default: warm, description: x}",
        ),
        ("type: json_object", "type: text"),
        ("description: A test prompt.\n", ""),
    ];
    for (from, to) in changes {
        assert!(BASE.contains(from), "{from}");
        let changed = yaml(&BASE.replacen(from, to, 1)).content.content_hash();
        assert_ne!(changed, base, "{from:?} -> {to:?}");
    }
}

#[test]
fn stored_text_reads_back_to_equal_content() {
    let content = yaml(BASE).content;
    let back = PromptContent::from_stored(&content.to_stored()).unwrap();
    assert_eq!(back.content_hash(), content.content_hash());
    assert_eq!(back.parts(), content.parts());
}

#[test]
fn stored_text_is_checked_like_a_file() {
    let malformed = PromptContent::from_stored("{\"messages\": [], \"colour\": 1}").unwrap_err();
    assert!(
        matches!(malformed, ContentError::Stored(ref m) if m.contains("colour")),
        "{malformed}"
    );
    let undeclared =
        PromptContent::from_stored(r#"{"messages":[{"role":"user","content":"{{ x }}"}]}"#);
    assert_eq!(
        undeclared,
        Err(ContentError::UndeclaredVariable {
            index: 0,
            variable: "x".into()
        })
    );
    let not_json = PromptContent::from_stored("messages: []");
    assert!(matches!(not_json, Err(ContentError::Stored(_))));
}
