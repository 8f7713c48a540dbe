//! Unit tests of `template`.

use super::*;
use crate::engine::{testing, tokenizer};

#[derive(serde::Deserialize)]
struct Reference {
    generated_by: String,
    cases: Vec<ReferenceCase>,
}

#[derive(serde::Deserialize)]
struct ReferenceCase {
    name: String,
    messages: Vec<TemplateMessage>,
    add_generation_prompt: bool,
    tools: Option<serde_json::Value>,
    expected: Option<String>,
    error: Option<String>,
}

fn data(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/templates")
        .join(name)
}

fn reference(name: &str) -> Reference {
    serde_json::from_slice(&std::fs::read(data(name)).unwrap()).unwrap()
}

fn check(template: &ChatTemplate, reference: &Reference) {
    assert!(!reference.generated_by.is_empty());
    for case in &reference.cases {
        let rendered = template.render(
            &case.messages,
            case.add_generation_prompt,
            case.tools.as_ref(),
        );
        match (&case.expected, &case.error, rendered) {
            (Some(expected), None, Ok(rendered)) => {
                assert_eq!(&rendered, expected, "{}", case.name)
            }
            (None, Some(error), Err(EngineError::InvalidRequest(message))) => {
                assert_eq!(&message, error, "{}", case.name)
            }
            (_, _, other) => panic!("{}: {other:?}", case.name),
        }
    }
}

#[test]
fn smollm2_template_renders_like_transformers() {
    let Some(path) = testing::chat_gguf("smollm2_template_renders_like_transformers") else {
        return;
    };
    let mut file = std::fs::File::open(&path).unwrap();
    let metadata = gguf_file::Content::read(&mut file).unwrap().metadata;
    let tokenizer = tokenizer::from_gguf(&metadata, &path).unwrap();
    let tokens = SpecialTokens {
        bos: tokenizer.bos().and_then(|id| tokenizer.id_to_token(id)),
        eos: tokenizer.eos().and_then(|id| tokenizer.id_to_token(id)),
    };
    let template = ChatTemplate::from_gguf(&metadata, &path, tokens)
        .unwrap()
        .unwrap();
    let reference = reference("smollm2_reference.json");
    assert!(reference.cases.len() >= 5);
    check(&template, &reference);
}

#[test]
fn llama3_style_template_renders_like_transformers() {
    let source = include_str!("../../tests/data/templates/llama3_style.jinja");
    let tokens = SpecialTokens {
        bos: Some("<|begin_of_text|>".into()),
        eos: Some("<|eot_id|>".into()),
    };
    let template = ChatTemplate::new(source, tokens).unwrap();
    check(&template, &reference("llama3_style_reference.json"));
}

#[test]
fn raise_exception_gives_the_templates_message_as_an_invalid_request() {
    let template = ChatTemplate::new(
        "{% if messages|length > 1 %}{{ raise_exception('Only one message, please') }}{% endif %}ok",
        SpecialTokens::default(),
    )
    .unwrap();
    let one = [TemplateMessage::new("user", "a")];
    assert_eq!(template.render(&one, false, None).unwrap(), "ok");
    let two = [
        TemplateMessage::new("user", "a"),
        TemplateMessage::new("user", "b"),
    ];
    match template.render(&two, false, None) {
        Err(EngineError::InvalidRequest(message)) => {
            assert_eq!(message, "Only one message, please")
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn syntax_errors_are_reported_when_loading() {
    let error = ChatTemplate::new(
        "{% for message in messages %}{{ message.content }}",
        SpecialTokens::default(),
    )
    .unwrap_err();
    match error {
        EngineError::Template(message) => {
            assert!(message.contains("syntax error"), "{message}")
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn other_render_failures_are_template_errors() {
    let template = ChatTemplate::new(
        "{{ messages[0].missing | tojson }}",
        SpecialTokens::default(),
    )
    .unwrap();
    let error = template
        .render(&[TemplateMessage::new("user", "a")], false, None)
        .unwrap_err();
    assert!(matches!(error, EngineError::Template(_)), "{error:?}");
}

#[test]
fn chatml_fallback_writes_chatml() {
    let template = ChatTemplate::chatml(SpecialTokens::default()).unwrap();
    let messages = [
        TemplateMessage::new("system", "Be brief."),
        TemplateMessage::new("user", "Hi"),
    ];
    assert_eq!(
        template.render(&messages, true, None).unwrap(),
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    );
}

#[test]
fn tokenizer_config_templates_and_tokens_are_read() {
    let dir = std::env::temp_dir().join(format!("pasarela-template-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("tokenizer_config.json");
    let config = serde_json::json!({
        "bos_token": {"content": "<s>"},
        "eos_token": "</s>",
        "chat_template": [
            {"name": "tool_use", "template": "tools"},
            {"name": "default", "template": "{{ bos_token }}{{ messages[0].content }}{{ eos_token }}"},
        ],
    });
    std::fs::write(&path, config.to_string()).unwrap();
    let template = ChatTemplate::from_tokenizer_config(&path).unwrap().unwrap();
    let rendered = template.render(&[TemplateMessage::new("user", "x")], false, None);
    std::fs::write(&path, r#"{"eos_token": "</s>"}"#).unwrap();
    let none = ChatTemplate::from_tokenizer_config(&path).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(rendered.unwrap(), "<s>x</s>");
    assert!(none.is_none());
}

fn render_one(source: &str, tools: serde_json::Value) -> String {
    ChatTemplate::new(source, SpecialTokens::default())
        .unwrap()
        .render(&[], false, Some(&tools))
        .unwrap()
}

#[test]
fn tojson_writes_what_pythons_json_dumps_writes() {
    // Expected strings from Python 3.11: json.dumps(x, ensure_ascii=False) and friends.
    let value = serde_json::json!({
        "a": [1, 2.5, "é\n\""], "b": null, "c": true, "d": 1e-05, "e": 1e16, "f": [], "g": {}
    });
    assert_eq!(
        render_one("{{ tools | tojson }}", value),
        r#"{"a": [1, 2.5, "é\n\""], "b": null, "c": true, "d": 1e-05, "e": 1e+16, "f": [], "g": {}}"#
    );
    assert_eq!(
        render_one(
            "{{ tools | tojson(indent=2) }}",
            serde_json::json!({"a": [1, {"x": "y"}], "f": []})
        ),
        "{\n  \"a\": [\n    1,\n    {\n      \"x\": \"y\"\n    }\n  ],\n  \"f\": []\n}"
    );
    assert_eq!(
        render_one(
            "{{ tools | tojson(ensure_ascii=true) }}",
            serde_json::json!("é😀")
        ),
        r#""\u00e9\ud83d\ude00""#
    );
    assert_eq!(
        render_one(
            "{{ tools | tojson }}",
            serde_json::json!("<a href='x'>&</a>")
        ),
        r#""<a href='x'>&</a>""#
    );
}

#[test]
fn python_string_and_dict_methods_work() {
    let rendered = render_one(
        "{{ tools.name.strip().upper() }}|{{ tools.get('missing', 'd') }}|{{ tools.name.split('-') | join(',') }}\
         |{{ tools.name.startswith(' a') }}|{% for k, v in tools.items() %}{{ k }}={{ v }};{% endfor %}\
         |{{ none }}|{{ tools.nothing }}|{{ tools.name.title() }}",
        serde_json::json!({"name": " a-b "}),
    );
    // Jinja2 prints Python's True and None.
    assert_eq!(rendered, "A-B|d| a,b |True|name= a-b ;|None|| A-B ");
}

#[test]
fn strftime_matches_pythons_for_known_instants() {
    // Expected strings from Python: datetime.fromtimestamp(t, timezone.utc).strftime(...).
    let format = "%d %b %Y|%A %a %B %j %H:%M:%S %I%p %y %m %e %%";
    assert_eq!(
        strftime(format, 0).unwrap(),
        "01 Jan 1970|Thursday Thu January 001 00:00:00 12AM 70 01  1 %"
    );
    assert_eq!(
        strftime(format, 1_700_000_000).unwrap(),
        "14 Nov 2023|Tuesday Tue November 318 22:13:20 10PM 23 11 14 %"
    );
    assert_eq!(
        strftime(format, 951_782_400).unwrap(),
        "29 Feb 2000|Tuesday Tue February 060 00:00:00 12AM 00 02 29 %"
    );
    assert!(strftime("%Q", 0).is_err());
}
