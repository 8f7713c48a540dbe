use crate::prompts::{Label, PromptName, PromptRef, PromptVersion, RefError, Selector};

#[test]
fn prompt_name_accepts_lowercase_letters_digits_and_separators() {
    for name in [
        "greeting",
        "classify-sentiment",
        "v2.summary_long",
        "0day",
        &"a".repeat(64),
    ] {
        assert_eq!(PromptName::parse(name).unwrap().as_str(), name);
    }
}

#[test]
fn prompt_name_rejects_capitals_spaces_reference_separators_and_length() {
    let too_long = "a".repeat(65);
    for name in [
        "", "Greeting", "a b", "-lead", ".lead", "_lead", "a/b", "a@b", "a#1", "é", &too_long,
    ] {
        assert_eq!(
            PromptName::parse(name),
            Err(RefError::Name(name.to_owned())),
            "{name:?}"
        );
    }
}

#[test]
fn label_follows_langfuse_rule_of_up_to_36_characters() {
    assert!(Label::parse("production").is_ok());
    assert!(
        Label::parse("-staging_2.b").is_ok(),
        "a label may start with a separator"
    );
    assert!(Label::parse(&"l".repeat(36)).is_ok());
    for label in ["", "Prod", "a b", &"l".repeat(37)] {
        assert_eq!(
            Label::parse(label),
            Err(RefError::Label(label.to_owned())),
            "{label:?}"
        );
    }
}

#[test]
fn version_is_a_plain_positive_number() {
    assert_eq!(PromptVersion::parse("3").unwrap().get(), 3);
    assert_eq!(PromptVersion::FIRST.next().unwrap().get(), 2);
    for text in ["0", "03", "+3", "-1", " 3", "3.0", "", "99999999999"] {
        assert_eq!(
            PromptVersion::parse(text),
            Err(RefError::Version(text.to_owned())),
            "{text:?}"
        );
    }
}

#[test]
fn bare_reference_selects_the_production_label() {
    let reference = PromptRef::parse("greeting").unwrap();
    assert_eq!(reference.name.as_str(), "greeting");
    assert_eq!(reference.selector, Selector::Label(Label::production()));
}

#[test]
fn reference_with_at_selects_a_label_and_with_hash_a_version() {
    let labelled = PromptRef::parse("greeting@staging").unwrap();
    assert_eq!(
        labelled.selector,
        Selector::Label(Label::parse("staging").unwrap())
    );
    let pinned = PromptRef::parse("greeting#12").unwrap();
    assert_eq!(
        pinned.selector,
        Selector::Version(PromptVersion::new(12).unwrap())
    );
}

#[test]
fn reference_errors_name_the_part_at_fault() {
    let cases = [
        ("greeting@", RefError::Label(String::new())),
        ("greeting@Prod", RefError::Label("Prod".into())),
        ("greeting#0", RefError::Version("0".into())),
        ("greeting#x", RefError::Version("x".into())),
        ("Greeting#1", RefError::Name("Greeting".into())),
        ("@prod", RefError::Name(String::new())),
        (
            "greeting@prod#2",
            RefError::Reference("greeting@prod#2".into()),
        ),
        (
            "greeting#2@prod",
            RefError::Reference("greeting#2@prod".into()),
        ),
    ];
    for (text, expected) in cases {
        assert_eq!(PromptRef::parse(text), Err(expected), "{text:?}");
    }
}

#[test]
fn reference_display_parses_back_and_drops_the_production_label() {
    for text in ["greeting", "greeting@staging", "greeting#7"] {
        assert_eq!(PromptRef::parse(text).unwrap().to_string(), text);
    }
    assert_eq!(
        PromptRef::parse("greeting@production").unwrap().to_string(),
        "greeting"
    );
}
