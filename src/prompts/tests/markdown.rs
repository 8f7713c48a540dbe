use super::{markdown, markdown_error, yaml};
use crate::prompts::{PromptFileError, Role};

fn roles_and_texts(text: &str) -> Vec<(Role, String)> {
    markdown(text)
        .content
        .messages()
        .iter()
        .map(|m| (m.role, m.content.clone()))
        .collect()
}

fn layout_error(text: &str) -> (usize, String) {
    match markdown_error(text) {
        PromptFileError::Markdown { line, message, .. } => (line, message),
        other => panic!("expected a Markdown layout error, got {other:?}"),
    }
}

#[test]
fn sections_become_messages_in_order_without_surrounding_blank_lines() {
    let messages = roles_and_texts(
        "---\nname: m\n---\n\n## System\n\nBe brief.\n\n## user\nFirst line\n\n   indented second\n\n\n## assistant\nOK\n",
    );
    assert_eq!(
        messages,
        [
            (Role::System, "Be brief.".to_owned()),
            (Role::User, "First line\n\n   indented second".to_owned()),
            (Role::Assistant, "OK".to_owned()),
        ]
    );
}

#[test]
fn other_headings_and_role_headings_in_code_fences_are_text() {
    let messages = roles_and_texts(
        "---\nname: m\n---\n## user\n## Notes\n### user\n```\n## system\n```\n##user\n",
    );
    assert_eq!(
        messages,
        [(
            Role::User,
            "## Notes\n### user\n```\n## system\n```\n##user".to_owned()
        )]
    );
}

#[test]
fn role_in_front_matter_makes_the_whole_body_one_message() {
    let messages = roles_and_texts("---\nname: m\nrole: user\n---\n\n## system\nnot a section\n\n");
    assert_eq!(
        messages,
        [(Role::User, "## system\nnot a section".to_owned())]
    );
}

#[test]
fn text_before_the_first_section_is_an_error_at_its_line() {
    let (line, message) = layout_error("---\nname: m\n---\n\nstray\n## user\nhi\n");
    assert_eq!(line, 5);
    assert!(
        message.contains("text before the first message heading"),
        "{message}"
    );
}

#[test]
fn body_without_sections_or_role_is_an_error() {
    let (line, message) = layout_error("---\nname: m\n---\n\n\n");
    assert_eq!(line, 4);
    assert!(message.contains("no messages"), "{message}");
}

#[test]
fn empty_section_is_an_error_at_its_heading() {
    let (line, message) = layout_error("---\nname: m\n---\n## system\n\n## user\nhi\n");
    assert_eq!(line, 4);
    assert!(
        message.contains("`## system` section is empty"),
        "{message}"
    );
}

#[test]
fn empty_single_message_body_is_an_error() {
    let (line, _) = layout_error("---\nname: m\nrole: user\n---\n  \n");
    assert_eq!(line, 5);
}

#[test]
fn missing_or_unclosed_front_matter_is_an_error_at_line_one() {
    assert_eq!(layout_error("name: m\n## user\nhi\n").0, 1);
    assert_eq!(layout_error("---\nname: m\n## user\nhi\n").0, 1);
}

#[test]
fn front_matter_errors_use_the_file_line_numbers() {
    match markdown_error("---\nname: m\nvariables:\n  x: {type: strng}\n---\n## user\n{{ x }}\n") {
        PromptFileError::Yaml { line, .. } => assert_eq!(line, Some(4)),
        other => panic!("expected a YAML error, got {other:?}"),
    }
}

#[test]
fn messages_key_in_front_matter_is_an_unknown_key() {
    match markdown_error("---\nname: m\nmessages: []\n---\n## user\nhi\n") {
        PromptFileError::Yaml { key, line, .. } => {
            assert_eq!((key.as_deref(), line), (Some("messages"), Some(3)));
        }
        other => panic!("expected a YAML error, got {other:?}"),
    }
}

#[test]
fn same_prompt_as_markdown_and_yaml_is_the_same_content() {
    let from_markdown = markdown(
        "---\nname: same\nmodel: m\nvariables:\n  who: {type: string}\n---\n## system\nBe kind.\n\n## user\nGreet {{ who }}.\nTwice.\n",
    );
    let from_yaml = yaml(
        "name: same\nmessages:\n  - role: system\n    content: Be kind.\n  - role: user\n    content: |-\n      Greet {{ who }}.\n      Twice.\nvariables:\n  who:\n    type: string\nmodel: m\n",
    );
    assert_eq!(
        from_markdown.content.content_hash(),
        from_yaml.content.content_hash()
    );
    assert_eq!(from_markdown.content, from_yaml.content);
}
