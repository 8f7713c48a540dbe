use serde_json::{Map, Value, json};

use super::{prompt_with, yaml};
use crate::prompts::{RenderError, Role, VariableType, render};

fn vars(value: Value) -> Map<String, Value> {
    value.as_object().unwrap().clone()
}

fn render_one(template: &str, declared: &str, values: Value) -> Result<String, RenderError> {
    render(&prompt_with(template, declared).content, &vars(values))
        .map(|r| r.messages[0].content.clone())
}

const GREETING: &str = "name: g
model: smollm2-135m-instruct
params: {temperature: 0.2, max_tokens: 40, stop: END, extra: {seed_hint: 1}}
variables:
  who: {type: string}
  tone: {type: string, default: warm}
  times: {type: integer, default: 1}
messages:
  - role: system
    content: Be {{ tone }}.
  - role: user
    content: Greet {{ who }} {{ times }} time(s).
";

#[test]
fn render_fills_variables_and_applies_defaults() {
    let rendered = render(
        &yaml(GREETING).content,
        &vars(json!({"who": "Ada", "times": 2})),
    )
    .unwrap();
    let messages: Vec<(Role, &str)> = rendered
        .messages
        .iter()
        .map(|m| (m.role, m.content.as_str()))
        .collect();
    assert_eq!(
        messages,
        [
            (Role::System, "Be warm."),
            (Role::User, "Greet Ada 2 time(s).")
        ]
    );
    assert_eq!(rendered.model.as_deref(), Some("smollm2-135m-instruct"));
}

#[test]
fn rendered_parameters_are_request_fields_with_extra_and_response_format_merged() {
    let mut text = GREETING.replace(
        "name: g\n",
        "name: g\nresponse_format: {type: json_object}\n",
    );
    text.push('\n');
    let rendered = render(&yaml(&text).content, &vars(json!({"who": "Ada"}))).unwrap();
    assert_eq!(
        Value::Object(rendered.parameters),
        json!({
            "temperature": 0.2,
            "max_tokens": 40,
            "stop": ["END"],
            "seed_hint": 1,
            "response_format": {"type": "json_object"},
        })
    );
}

#[test]
fn missing_required_variable_names_it_and_its_type() {
    let error = render(&yaml(GREETING).content, &vars(json!({"tone": "dry"}))).unwrap_err();
    assert_eq!(
        error,
        RenderError::MissingVariable {
            name: "who".into(),
            expected: VariableType::String
        }
    );
    assert_eq!(
        error.to_string(),
        "missing required variable `who` (string)"
    );
    assert_eq!(error.param().as_deref(), Some("variables.who"));
    assert!(error.is_client_error());
}

#[test]
fn wrong_type_names_the_variable_the_expected_and_the_given_type() {
    let content = yaml(GREETING).content;
    let cases = [
        (json!({"who": 7}), "who", VariableType::String, "integer"),
        (
            json!({"who": "Ada", "times": 2.5}),
            "times",
            VariableType::Integer,
            "number",
        ),
        (
            json!({"who": "Ada", "times": "2"}),
            "times",
            VariableType::Integer,
            "string",
        ),
        (json!({"who": null}), "who", VariableType::String, "null"),
    ];
    for (values, name, expected, found) in cases {
        let error = render(&content, &vars(values.clone())).unwrap_err();
        assert_eq!(
            error,
            RenderError::WrongType {
                name: name.into(),
                expected,
                found
            },
            "{values}"
        );
        assert_eq!(error.variable(), Some(name));
    }
}

#[test]
fn null_does_not_ask_for_the_default() {
    let error = render(
        &yaml(GREETING).content,
        &vars(json!({"who": "Ada", "tone": null})),
    )
    .unwrap_err();
    assert_eq!(error.variable(), Some("tone"));
}

#[test]
fn undeclared_variable_passed_is_an_error_naming_it_and_the_declared_ones() {
    let error = render(
        &yaml(GREETING).content,
        &vars(json!({"who": "Ada", "nmae": "x"})),
    )
    .unwrap_err();
    assert_eq!(error.param().as_deref(), Some("variables.nmae"));
    assert_eq!(
        error.to_string(),
        "unknown variable `nmae`: this prompt declares `times`, `tone`, `who`"
    );
}

#[test]
fn each_variable_type_accepts_its_json_values() {
    let cases = [
        ("number", json!(2.5)),
        ("number", json!(2)),
        ("integer", json!(-3)),
        ("boolean", json!(true)),
        ("array", json!([1, "a"])),
        ("object", json!({"k": "v"})),
        ("any", json!(null)),
        ("any", json!({"k": [1]})),
    ];
    for (kind, value) in cases {
        let declared = format!("{{v: {{type: {kind}}}}}");
        assert!(
            render_one("{{ v }}", &declared, json!({"v": value})).is_ok(),
            "{kind} {value}"
        );
    }
    assert!(render_one("{{ v }}", "{v: {type: boolean}}", json!({"v": "true"})).is_err());
    assert!(render_one("{{ v }}", "{v: {type: array}}", json!({"v": {}})).is_err());
}

#[test]
fn any_variable_may_default_to_null() {
    let text = render_one(
        "{% if v is none %}nothing{% endif %}",
        "{v: {type: any, default: null}}",
        json!({}),
    )
    .unwrap();
    assert_eq!(text, "nothing");
}

#[test]
fn markup_in_templates_and_values_is_kept_verbatim() {
    let text = render_one(
        "<script>alert('t')</script> & {{ v }}",
        "{v: {type: string}}",
        json!({"v": "<b>\"x\" & 'y'</b>"}),
    )
    .unwrap();
    assert_eq!(text, "<script>alert('t')</script> & <b>\"x\" & 'y'</b>");
}

#[test]
fn block_tags_trim_their_newline_and_indentation() {
    let text = render_one(
        "Items:\n{% for item in items %}\n    {% if item %}\n- {{ item }}\n    {% endif %}\n{% endfor %}\nEnd",
        "{items: {type: array}}",
        json!({"items": ["a", "", "b"]}),
    )
    .unwrap();
    assert_eq!(text, "Items:\n- a\n- b\nEnd");
}

#[test]
fn python_string_methods_are_available() {
    let text = render_one(
        "{{ v.upper() }} {{ v.split(',') | join('+') }}",
        "{v: {type: string}}",
        json!({"v": "a,b"}),
    )
    .unwrap();
    assert_eq!(text, "A,B a+b");
}

#[test]
fn values_print_as_python_jinja_prints_them() {
    let declared = "{b: {type: boolean}, n: {type: number}, l: {type: array}, o: {type: object}, z: {type: any}}";
    let values = json!({"b": false, "n": 2.0, "l": [1, "a"], "o": {"k": "v"}, "z": null});
    let text = render_one("{{ b }} {{ n }} {{ l }} {{ o }} {{ z }}", declared, values).unwrap();
    assert_eq!(text, "False 2.0 [1, 'a'] {'k': 'v'} None");
}

#[test]
fn tojson_writes_json_without_html_escaping() {
    let declared = "{v: {type: object}}";
    let values = json!({"v": {"html": "<b>&'</b>", "n": [1, 2.5]}});
    let compact = render_one("{{ v | tojson }}", declared, values.clone()).unwrap();
    assert_eq!(compact, r#"{"html":"<b>&'</b>","n":[1,2.5]}"#);
    let indented = render_one("{{ v | tojson(indent=2) }}", declared, values).unwrap();
    assert_eq!(
        serde_json::from_str::<Value>(&indented).unwrap()["html"],
        "<b>&'</b>"
    );
    assert!(indented.contains("\n  \"html\""), "{indented}");
}

#[test]
fn value_that_fails_inside_the_template_is_a_render_error_for_its_message() {
    let error = render_one(
        "{{ user.name }}",
        "{user: {type: object}}",
        json!({"user": {"id": 1}}),
    )
    .unwrap_err();
    assert!(
        matches!(error, RenderError::Template { index: 0, .. }),
        "{error}"
    );
    assert!(error.is_client_error());
    assert_eq!(error.param().as_deref(), Some("variables"));
}

#[test]
fn unknown_filter_on_a_path_the_trial_render_missed_is_the_prompts_fault() {
    let declared = "{flag: {type: boolean}, x: {type: string}}";
    let template = "{% if flag %}{{ x | nosuch }}{% endif %}";
    assert_eq!(
        render_one(template, declared, json!({"flag": false, "x": "a"})),
        Ok(String::new())
    );
    let error = render_one(template, declared, json!({"flag": true, "x": "a"})).unwrap_err();
    assert!(
        matches!(error, RenderError::BrokenTemplate { index: 0, .. }),
        "{error}"
    );
    assert!(!error.is_client_error());
    assert_eq!(error.param(), None);
}
