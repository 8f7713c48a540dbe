use std::path::{Path, PathBuf};

use serde_json::json;

use super::{markdown, markdown_error, prompt_with, yaml, yaml_error};
use crate::prompts::{
    ContentError, PromptFile, PromptFileError, ResponseFormat, Role, VariableType, load_dir, render,
};

const FULL: &str = r#"
name: full
description: Every part.
model: smollm2-135m-instruct
params:
  temperature: 0.5
  top_p: 0.9
  max_tokens: 64
  stop: ["END", "\n\n"]
  presence_penalty: 0.1
  frequency_penalty: -0.1
  seed: 42
  extra:
    logit_bias: {"50256": -100}
    max_completion_tokens: 64
variables:
  topic:
    type: string
    description: What to write about.
  count:
    type: integer
    default: 3
response_format:
  type: json_schema
  json_schema:
    name: facts
    strict: true
    schema:
      type: object
      properties:
        facts: {type: array, items: {type: string}}
messages:
  - role: system
    content: You list facts.
  - role: user
    content: |
      List {{ count }} facts about {{ topic }}.
"#;

#[test]
fn yaml_form_reads_every_part() {
    let file = yaml(FULL);
    let content = &file.content;
    assert_eq!(file.name.as_str(), "full");
    assert_eq!(content.description(), Some("Every part."));
    assert_eq!(content.model(), Some("smollm2-135m-instruct"));
    let params = content.params();
    assert_eq!(params.temperature, Some(0.5));
    assert_eq!(params.top_p, Some(0.9));
    assert_eq!(params.max_tokens, Some(64));
    assert_eq!(params.stop, Some(vec!["END".to_owned(), "\n\n".to_owned()]));
    assert_eq!(params.presence_penalty, Some(0.1));
    assert_eq!(params.frequency_penalty, Some(-0.1));
    assert_eq!(params.seed, Some(42));
    assert_eq!(params.extra["logit_bias"], json!({"50256": -100}));
    let count = content
        .variables()
        .iter()
        .find(|(n, _)| n.as_str() == "count")
        .unwrap()
        .1;
    assert_eq!(
        (count.kind, count.default.clone()),
        (VariableType::Integer, Some(json!(3)))
    );
    assert!(
        matches!(content.response_format(), Some(ResponseFormat::JsonSchema { json_schema }) if json_schema.name == "facts")
    );
    let roles: Vec<Role> = content.messages().iter().map(|m| m.role).collect();
    assert_eq!(roles, [Role::System, Role::User]);
    assert_eq!(
        content.messages()[1].content,
        "List {{ count }} facts about {{ topic }}.\n"
    );
}

#[test]
fn stop_may_be_one_string_or_a_list() {
    let one = yaml("name: t\nparams: {stop: END}\nmessages: [{role: user, content: hi}]\n");
    assert_eq!(one.content.params().stop, Some(vec!["END".to_owned()]));
}

fn expect_yaml_error(error: PromptFileError) -> (Option<u64>, Option<String>, String) {
    let text = error.to_string();
    match error {
        PromptFileError::Yaml {
            path, line, key, ..
        } => {
            assert!(text.starts_with(&format!("{}: ", path.display())), "{text}");
            (line, key, text)
        }
        other => panic!("expected a YAML error, got {other:?}"),
    }
}

#[test]
fn unknown_top_level_key_is_an_error_naming_file_line_and_key() {
    let (line, key, text) =
        expect_yaml_error(yaml_error("name: t\ntemprature: 0.2\nmessages: []\n"));
    assert_eq!(line, Some(2));
    assert_eq!(key.as_deref(), Some("temprature"));
    assert!(
        text.starts_with("prompts/p.yaml: ")
            && text.contains("temprature")
            && text.contains("line 2"),
        "{text}"
    );
}

#[test]
fn unknown_nested_keys_are_errors_at_their_own_line() {
    let cases = [
        (
            "name: t\nvariables:\n  a:\n    type: string\n    defualt: x\nmessages: []\n",
            5,
            "defualt",
        ),
        (
            "name: t\nparams:\n  max_tokens: 3\n  temprature: 1\nmessages: []\n",
            4,
            "temprature",
        ),
        (
            "name: t\nmessages:\n  - role: user\n    contents: hi\n",
            4,
            "contents",
        ),
    ];
    for (text, expected_line, expected_key) in cases {
        let (line, key, _) = expect_yaml_error(yaml_error(text));
        assert_eq!(
            (line, key.as_deref()),
            (Some(expected_line), Some(expected_key)),
            "{text}"
        );
    }
}

#[test]
fn unknown_front_matter_key_is_an_error_naming_file_line_and_key() {
    let error = markdown_error("---\nname: t\nrole: user\ntemperature: 1\n---\nhi\n");
    let (line, key, text) = expect_yaml_error(error);
    assert_eq!((line, key.as_deref()), (Some(4), Some("temperature")));
    assert!(text.starts_with("prompts/p.md: "), "{text}");
}

#[test]
fn invalid_prompt_name_is_an_error_at_its_line() {
    let (line, key, text) = expect_yaml_error(yaml_error("\nname: Bad Name\nmessages: []\n"));
    assert_eq!((line, key), (Some(2), None));
    assert!(text.contains("invalid prompt name `Bad Name`"), "{text}");
}

#[test]
fn invalid_variable_name_and_type_are_errors() {
    let bad_name = yaml_error("name: t\nvariables: {2x: {type: string}}\nmessages: []\n");
    assert!(
        bad_name.to_string().contains("invalid variable name `2x`"),
        "{bad_name}"
    );
    let bad_type = yaml_error("name: t\nvariables: {x: {type: text}}\nmessages: []\n");
    assert!(bad_type.to_string().contains("text"), "{bad_type}");
}

#[test]
fn out_of_range_and_reserved_params_are_errors() {
    let cases = [
        ("temperature: 2.5", "temperature 2.5 is out of range"),
        ("top_p: 0", "top_p 0 is out of range"),
        ("frequency_penalty: -3", "out of range"),
        ("max_tokens: 0", "max_tokens must be at least 1"),
        ("stop: ['']", "a stop sequence cannot be empty"),
        (
            "extra: {stream: true}",
            "`stream` cannot go in params.extra",
        ),
        (
            "extra: {temperature: 1}",
            "`temperature` cannot go in params.extra",
        ),
    ];
    for (params, expected) in cases {
        let error = yaml_error(&format!(
            "name: t\nparams: {{{params}}}\nmessages: [{{role: user, content: hi}}]\n"
        ));
        let (line, _, text) = expect_yaml_error(error);
        assert_eq!(line, Some(2), "{text}");
        assert!(text.contains(expected), "{params}: {text}");
    }
}

#[test]
fn response_format_in_openai_shape_is_checked() {
    let json_object = yaml(
        "name: t\nresponse_format: {type: json_object}\nmessages: [{role: user, content: hi}]\n",
    );
    assert_eq!(
        json_object.content.response_format(),
        Some(&ResponseFormat::JsonObject)
    );
    let missing_schema = yaml_error(
        "name: t\nresponse_format: {type: json_schema}\nmessages: [{role: user, content: hi}]\n",
    );
    assert!(
        missing_schema.to_string().contains("json_schema"),
        "{missing_schema}"
    );
    let unknown_type = yaml_error(
        "name: t\nresponse_format: {type: xml}\nmessages: [{role: user, content: hi}]\n",
    );
    assert!(unknown_type.to_string().contains("xml"), "{unknown_type}");
}

fn expect_content_error(error: PromptFileError) -> ContentError {
    match error {
        PromptFileError::Content { source, .. } => source,
        other => panic!("expected a content error, got {other:?}"),
    }
}

#[test]
fn template_syntax_error_names_file_message_and_line() {
    let error = yaml_error(
        "name: t\nmessages:\n  - role: system\n    content: fine\n  - role: user\n    content: \"line one\\n{{ oops\"\n",
    );
    let text = error.to_string();
    let ContentError::Template { index, line, .. } = expect_content_error(error) else {
        panic!("expected a syntax error: {text}");
    };
    assert_eq!((index, line), (1, Some(2)));
    assert!(
        text.starts_with("prompts/p.yaml: messages[1]: template error on line 2"),
        "{text}"
    );
}

#[test]
fn template_using_an_undeclared_variable_is_a_load_error_naming_it() {
    let error = yaml_error(
        "name: t\nvariables: {name: {type: string}}\nmessages:\n  - role: user\n    content: Hi {{ name }}, {{ nmae }}\n",
    );
    let text = error.to_string();
    assert_eq!(
        expect_content_error(error),
        ContentError::UndeclaredVariable {
            index: 0,
            variable: "nmae".into()
        }
    );
    assert!(
        text.starts_with("prompts/p.yaml: messages[0] uses `nmae`"),
        "{text}"
    );
}

#[test]
fn unknown_filter_test_or_include_reached_with_sample_values_is_a_load_error() {
    let cases = [
        ("line one\n{{ x | nosuch }}", 2, "unknown filter"),
        ("{% if x is nosuch %}{% endif %}", 1, "unknown test"),
        ("{% include 'other' %}", 1, "template not found"),
    ];
    for (template, expected_line, expected) in cases {
        let error = yaml_error(&format!(
            "name: t\nvariables: {{x: {{type: string}}}}\nmessages: [{{role: user, content: {}}}]\n",
            json!(template)
        ));
        let text = error.to_string();
        let ContentError::Template {
            index,
            line,
            detail,
        } = expect_content_error(error)
        else {
            panic!("expected a template error: {text}");
        };
        assert_eq!(
            (index, line),
            (0, Some(expected_line)),
            "{template}: {text}"
        );
        assert!(detail.contains(expected), "{template}: {text}");
    }
}

#[test]
fn trial_render_at_load_ignores_failures_that_depend_on_the_values() {
    for template in [
        "{{ user.name }}",
        "{{ 10 // n }}",
        "{{ user.items() | list }}",
    ] {
        let file = prompt_with(
            template,
            "{user: {type: object, default: {}}, n: {type: integer, default: 0}}",
        );
        assert_eq!(file.content.messages()[0].content, template);
    }
}

#[test]
fn loop_set_and_global_names_are_not_undeclared_variables() {
    let file = prompt_with(
        "{% set sep = ', ' %}{% for i in range(n) %}{{ loop.index }}{{ sep }}{% endfor %}{% set ns = namespace(x=1) %}{{ ns.x }}",
        "{n: {type: integer}}",
    );
    let vars = json!({"n": 2}).as_object().unwrap().clone();
    assert_eq!(
        render(&file.content, &vars).unwrap().messages[0].content,
        "1, 2, 1"
    );
}

#[test]
fn default_of_the_wrong_type_is_a_load_error() {
    let error = yaml_error(
        "name: t\nvariables: {n: {type: integer, default: 2.5}}\nmessages: [{role: user, content: '{{ n }}'}]\n",
    );
    assert_eq!(
        expect_content_error(error),
        ContentError::DefaultType {
            variable: "n".into(),
            expected: VariableType::Integer,
            found: "number"
        }
    );
}

#[test]
fn prompt_without_messages_is_an_error() {
    assert_eq!(
        expect_content_error(yaml_error("name: t\nmessages: []\n")),
        ContentError::NoMessages
    );
}

#[test]
fn other_extensions_are_not_prompt_files() {
    let error = PromptFile::parse(Path::new("prompts/p.txt"), "name: t").unwrap_err();
    assert!(
        matches!(error, PromptFileError::NotAPromptFile { .. }),
        "{error}"
    );
}

fn write(dir: &Path, name: &str, text: &str) {
    std::fs::write(dir.join(name), text).unwrap();
}

fn scratch_dir(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("pasarela-prompts-{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("nested")).unwrap();
    dir
}

#[test]
fn load_dir_reads_prompt_files_and_skips_readme_hidden_files_and_subdirectories() {
    let dir = scratch_dir("load");
    write(
        &dir,
        "b.yml",
        "name: b\nmessages: [{role: user, content: hi}]\n",
    );
    write(&dir, "a.md", "---\nname: a\nrole: user\n---\nhi\n");
    write(&dir, "README.md", "# not a prompt\n");
    write(&dir, ".draft.yaml", "not: a prompt\n");
    write(&dir, "notes.txt", "not a prompt\n");
    write(&dir.join("nested"), "c.yaml", "not: a prompt\n");
    let names: Vec<String> = load_dir(&dir)
        .unwrap()
        .into_iter()
        .map(|f| f.name.to_string())
        .collect();
    assert_eq!(names, ["a", "b"]);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn load_dir_rejects_a_name_defined_twice_naming_both_files() {
    let dir = scratch_dir("duplicate");
    write(
        &dir,
        "one.yaml",
        "name: same\nmessages: [{role: user, content: hi}]\n",
    );
    write(&dir, "two.md", "---\nname: same\nrole: user\n---\nhi\n");
    let error = load_dir(&dir).unwrap_err();
    let text = error.to_string();
    assert!(
        matches!(error, PromptFileError::DuplicateName { ref name, .. } if name.as_str() == "same")
    );
    assert!(
        text.contains("one.yaml") && text.contains("two.md"),
        "{text}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn load_dir_reports_the_first_bad_file() {
    let dir = scratch_dir("bad");
    write(
        &dir,
        "ok.yaml",
        "name: ok\nmessages: [{role: user, content: hi}]\n",
    );
    write(&dir, "typo.yaml", "name: typo\nmesages: []\n");
    let text = load_dir(&dir).unwrap_err().to_string();
    assert!(
        text.contains("typo.yaml") && text.contains("mesages"),
        "{text}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn to_yaml_parses_back_to_the_same_content_hash() {
    let tricky = [
        "plain",
        "two\nlines",
        "trailing newline\n",
        "two trailing newlines\n\n",
        "  leading spaces\nthen text",
        "trailing spaces  \n  \n",
        "tab\there: colon, # hash, 'quotes' \"double\" {{ x }}",
        "- looks like a list",
        "true",
        "",
        "ünïcödé — 日本語",
        &"a long line that goes on ".repeat(10),
    ];
    for template in tricky {
        let file = prompt_with(template, "{x: {type: any, default: null}}");
        let written = file.to_yaml().unwrap();
        let back = PromptFile::parse(Path::new("back.yaml"), &written).unwrap();
        assert_eq!(back.name, file.name);
        assert_eq!(
            back.content.content_hash(),
            file.content.content_hash(),
            "{template:?} as\n{written}"
        );
    }
    let full = yaml(FULL);
    let written = full.to_yaml().unwrap();
    assert_eq!(
        yaml(&written).content.content_hash(),
        full.content.content_hash(),
        "{written}"
    );
    assert!(
        written.contains("content: |"),
        "multi-line templates are literal blocks:\n{written}"
    );
}

#[test]
fn markdown_prompt_writes_to_yaml_with_the_same_hash() {
    let file =
        markdown("---\nname: m\n---\n## system\nBe brief.\n\n## user\nHello\n\n  indented\n");
    assert_eq!(yaml(&file.to_yaml().unwrap()).content, file.content);
}

#[test]
fn shipped_prompts_load_and_render_with_sample_variables() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("prompts");
    let files = load_dir(&dir).unwrap();
    let names: Vec<&str> = files.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(names, ["classify-sentiment", "greeting", "summarize"]);
    let samples = json!({
        "greeting": {"name": "Ada"},
        "summarize": {"text": "The cat sat on the mat all day. It was warm."},
        "classify-sentiment": {"text": "I love this!"},
    });
    for file in &files {
        assert_eq!(file.content.model(), Some("smollm2-135m-instruct"));
        let vars = samples[file.name.as_str()].as_object().unwrap();
        let rendered = render(&file.content, vars).unwrap();
        let last = &rendered.messages.last().unwrap().content;
        for value in vars.values() {
            assert!(
                last.contains(value.as_str().unwrap()),
                "{}: {last}",
                file.name
            );
        }
        assert!(
            !last.contains("{{") && !last.contains("{%"),
            "{}: {last}",
            file.name
        );
        assert!(rendered.parameters["max_tokens"].as_u64().unwrap() <= 128);
    }
    let summarize = files
        .iter()
        .find(|f| f.name.as_str() == "summarize")
        .unwrap();
    let rendered = render(
        &summarize.content,
        samples["summarize"].as_object().unwrap(),
    )
    .unwrap();
    assert!(
        rendered.messages[1].content.contains("at most 30 words"),
        "{:?}",
        rendered.messages
    );
}
