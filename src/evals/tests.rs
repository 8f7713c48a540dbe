//! Suite parsing, assertions and metrics, without a model.

use std::path::Path;

use serde_json::{Value, json};

use super::assertion::{GradeContext, Graders};
use super::*;

fn parse(yaml: &str) -> Result<Suite, SuiteError> {
    Suite::parse(Path::new("evals/test.yaml"), yaml)
}

fn line_and_reason(e: SuiteError) -> (u64, String) {
    match e {
        SuiteError::Invalid { line, reason, .. } => (line, reason),
        other => panic!("not a validation error: {other}"),
    }
}

const MINIMAL: &str = "\
targets:
  - model: m
dataset:
  - vars: { input: hi }
    assert:
      - { type: contains, value: hello }
";

#[test]
fn a_minimal_suite_parses_with_its_defaults() {
    let suite = parse(MINIMAL).expect("parses");
    assert_eq!(suite.name, "test");
    assert_eq!(suite.targets[0].label, "m");
    assert_eq!(suite.cases[0].id, "case-1");
    assert_eq!(suite.cases[0].line, 4);
    assert_eq!(suite.threshold, 1.0);
    assert_eq!(suite.repeat, 1);
    assert_eq!(suite.embedding_model, "all-minilm-l6-v2");
}

#[test]
fn an_unknown_key_names_its_line_and_the_key() {
    let yaml = "\
targets:
  - model: m
dataset:
  - vars: { input: hi }
    assert:
      - { type: contains, value: hello, wieght: 2 }
";
    let (line, reason) = line_and_reason(parse(yaml).expect_err("unknown key"));
    assert_eq!(line, 6, "{reason}");
    assert!(reason.contains("wieght"), "{reason}");

    let top = format!("{MINIMAL}treshold: 0.5\n");
    let (line, reason) = line_and_reason(parse(&top).expect_err("unknown key"));
    assert_eq!(line, 7, "{reason}");
    assert!(reason.contains("treshold"), "{reason}");
}

#[test]
fn a_bad_assertion_is_refused_at_load_with_its_line() {
    for (assertion, wanted) in [
        ("{ type: regex, value: \"a(b\" }", "regex"),
        (
            "{ type: contians, value: x }",
            "unknown assertion type `contians`",
        ),
        (
            "{ type: json-schema, value: { type: 12 } }",
            "not a valid JSON schema",
        ),
        ("{ type: similar, value: x, threshold: 1.5 }", "0..=1"),
        ("{ type: contains-any, value: [] }", "non-empty list"),
        ("{ type: latency }", "threshold"),
        ("{ type: contains, value: x, weight: -1 }", "weight"),
        ("{ type: is-json, value: x }", "takes no value"),
    ] {
        let yaml = format!(
            "targets:\n  - model: m\ndataset:\n  - vars: {{ input: hi }}\n    assert:\n      - {assertion}\n"
        );
        let (line, reason) = line_and_reason(parse(&yaml).expect_err(assertion));
        assert_eq!(line, 6, "{assertion}: {reason}");
        assert!(reason.contains(wanted), "{assertion}: {reason}");
    }
}

#[test]
fn an_assertion_without_a_value_needs_the_cases_expected() {
    let yaml = "\
targets:
  - model: m
default_assertions:
  - { type: equals }
dataset:
  - vars: { input: hi }
    expected: hello
  - id: second
    vars: { input: ho }
";
    let (line, reason) = line_and_reason(parse(yaml).expect_err("no expected"));
    assert_eq!(line, 8, "{reason}");
    assert!(
        reason.contains("`second`") && reason.contains("expected"),
        "{reason}"
    );
}

#[test]
fn suite_level_mistakes_are_refused() {
    let no_model = "targets:\n  - prompt: { messages: [{ role: user, content: hi }] }\ndataset:\n  - { vars: {}, assert: [{ type: is-json }] }\n";
    assert!(
        line_and_reason(parse(no_model).expect_err("no model"))
            .1
            .contains("names no model")
    );
    let twice = "targets:\n  - model: m\n  - model: m\ndataset:\n  - { vars: {}, assert: [{ type: is-json }] }\n";
    assert!(
        line_and_reason(parse(twice).expect_err("same label"))
            .1
            .contains("two targets")
    );
    let repeat = format!("{MINIMAL}repeat: 0\n");
    assert_eq!(line_and_reason(parse(&repeat).expect_err("repeat 0")).0, 7);
    let judge = "targets:\n  - model: m\ndataset:\n  - { vars: {}, assert: [{ type: llm-rubric, value: polite }] }\n";
    assert!(
        line_and_reason(parse(judge).expect_err("no judge"))
            .1
            .contains("judge")
    );
    let bad_ref = "targets:\n  - model: m\n    prompt: \"bad name@\"\ndataset:\n  - { vars: {}, assert: [{ type: is-json }] }\n";
    assert_eq!(
        line_and_reason(parse(bad_ref).expect_err("bad reference")).0,
        3
    );
}

#[test]
fn a_jsonl_dataset_is_read_and_its_bad_lines_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    let suite_path = dir.path().join("s.yaml");
    let yaml = "targets:\n  - model: m\ndataset: cases.jsonl\n";
    std::fs::write(
        dir.path().join("cases.jsonl"),
        "{\"id\": \"a\", \"vars\": {\"input\": \"x\"}, \"assert\": [{\"type\": \"contains\", \"value\": \"y\"}]}\n\n\
         {\"vars\": {\"input\": \"z\"}, \"assert\": [{\"type\": \"icontains\", \"value\": \"q\"}], \"threshold\": 0.5}\n",
    )
    .expect("write");
    let suite = Suite::parse(&suite_path, yaml).expect("parses");
    assert_eq!(suite.cases.len(), 2);
    assert_eq!(suite.cases[1].id, "case-2");
    assert_eq!(suite.cases[1].line, 3);
    assert_eq!(suite.cases[1].threshold, 0.5);

    std::fs::write(
        dir.path().join("cases.jsonl"),
        "{\"vars\": {}, \"assert\": [{\"type\": \"is-json\"}]}\n{\"vars\": {}, \"asert\": []}\n",
    )
    .expect("write");
    match Suite::parse(&suite_path, yaml).expect_err("bad line") {
        SuiteError::Invalid { path, line, reason } => {
            assert!(path.ends_with("cases.jsonl"));
            assert_eq!(line, 2);
            assert!(reason.contains("asert"), "{reason}");
        }
        other => panic!("{other}"),
    }
}

/// Graders that answer from fixed data, for the model-backed assertions.
struct Fixed {
    vectors: Vec<Vec<f32>>,
    reply: Result<String, String>,
}

#[async_trait::async_trait]
impl Graders for Fixed {
    async fn embed(&self, _: &str, _: &[&str]) -> Result<Vec<Vec<f32>>, String> {
        Ok(self.vectors.clone())
    }
    async fn judge(&self, _: &str, _: &str) -> Result<String, String> {
        self.reply.clone()
    }
}

fn assertion(yaml: &str) -> Assertion {
    serde_saphyr::from_str(yaml).expect("assertion parses")
}

async fn check(yaml: &str, output: &Output, expected: Option<Value>, graders: &Fixed) -> Verdict {
    let ctx = GradeContext {
        graders,
        embedding_model: "e",
        judge_model: "j",
    };
    assertion(yaml)
        .verdict(output, expected.as_ref(), &ctx)
        .await
}

fn text(t: &str) -> Output {
    Output {
        text: t.to_owned(),
        latency_ms: 120.0,
        completion_tokens: Some(9),
        cost_usd: Some(0.002),
        finish_reason: Some("stop".to_owned()),
    }
}

#[tokio::test]
async fn deterministic_assertions_pass_and_fail_as_written() {
    let none = Fixed {
        vectors: vec![],
        reply: Err("unused".into()),
    };
    let out = text("  Hello Alice! {\"a\": 1}");
    for (yaml, pass) in [
        ("{type: contains, value: Alice}", true),
        ("{type: contains, value: alice}", false),
        ("{type: icontains, value: ALICE}", true),
        ("{type: not-icontains, value: ALICE}", false),
        ("{type: starts-with, value: Hello}", true),
        ("{type: contains-any, value: [Bob, Alice]}", true),
        ("{type: contains-all, value: [Bob, Alice]}", false),
        ("{type: regex, value: \"Hel+o\\\\s+[A-Z]\"}", true),
        ("{type: is-json}", false),
        ("{type: not-is-json}", true),
        ("{type: latency, threshold: 100}", false),
        ("{type: latency, threshold: 120}", true),
        ("{type: cost, threshold: 0.001}", false),
        ("{type: max-tokens, value: 9}", true),
        ("{type: max-tokens, value: 8}", false),
        ("{type: finish-reason, value: length}", false),
        (
            "{type: equals, value: \"Hello Alice! {\\\"a\\\": 1}\"}",
            true,
        ),
    ] {
        let v = check(yaml, &out, None, &none).await;
        assert_eq!(v.pass, pass, "{yaml}: {}", v.reason);
    }
    // `expected` supplies the value of an assertion without one.
    let v = check("{type: contains}", &out, Some(json!("Alice")), &none).await;
    assert!(v.pass, "{}", v.reason);
    // A structured expected value equals the output parsed as JSON, whatever its layout.
    let json_out = text("{\"b\": [1, 2],\n \"a\": true}");
    let v = check(
        "{type: equals}",
        &json_out,
        Some(json!({"a": true, "b": [1, 2]})),
        &none,
    )
    .await;
    assert!(v.pass, "{}", v.reason);
}

#[tokio::test]
async fn json_schema_reports_where_the_output_breaks_it() {
    let none = Fixed {
        vectors: vec![],
        reply: Err("unused".into()),
    };
    let schema = "{type: json-schema, value: {type: object, required: [name], properties: {age: {type: integer}}}}";
    let ok = check(schema, &text("{\"name\": \"x\", \"age\": 3}"), None, &none).await;
    assert!(ok.pass, "{}", ok.reason);
    let bad = check(
        schema,
        &text("{\"name\": \"x\", \"age\": \"3\"}"),
        None,
        &none,
    )
    .await;
    assert!(!bad.pass);
    assert!(bad.reason.contains("/age"), "{}", bad.reason);
}

#[tokio::test]
async fn model_backed_assertions_fail_when_the_model_gives_no_verdict() {
    let similar = Fixed {
        vectors: vec![vec![1.0, 0.0], vec![0.6, 0.8]],
        reply: Ok("I think it is fine.".into()),
    };
    // cosine 0.6.
    let v = check(
        "{type: similar, value: x, threshold: 0.5}",
        &text("y"),
        None,
        &similar,
    )
    .await;
    assert!(
        v.pass && (v.metric.unwrap_or(0.0) - 0.6).abs() < 1e-6,
        "{v:?}"
    );
    let v = check(
        "{type: similar, value: x, threshold: 0.7}",
        &text("y"),
        None,
        &similar,
    )
    .await;
    assert!(!v.pass);
    // No JSON verdict: a failure, negated or not.
    let v = check(
        "{type: llm-rubric, value: polite}",
        &text("y"),
        None,
        &similar,
    )
    .await;
    assert!(!v.pass, "{}", v.reason);
    let v = check(
        "{type: not-llm-rubric, value: polite}",
        &text("y"),
        None,
        &similar,
    )
    .await;
    assert!(!v.pass, "{}", v.reason);
    let judged = Fixed {
        vectors: vec![],
        reply: Ok("```json\n{\"pass\": true, \"reason\": \"courteous\"}\n```".into()),
    };
    let v = check(
        "{type: llm-rubric, value: polite}",
        &text("y"),
        None,
        &judged,
    )
    .await;
    assert!(v.pass && v.reason.contains("courteous"), "{}", v.reason);
    let failed = Fixed {
        vectors: vec![],
        reply: Err("judge unreachable".into()),
    };
    let v = check(
        "{type: not-llm-rubric, value: polite}",
        &text("y"),
        None,
        &failed,
    )
    .await;
    assert!(!v.pass && v.reason.contains("unreachable"), "{}", v.reason);
}

#[test]
fn judgements_are_read_from_json_verdicts_only() {
    assert_eq!(
        parse_judgement("{\"verdict\": \"FAIL\", \"reason\": \"rude\"}"),
        Ok((false, "rude".to_owned()))
    );
    assert!(parse_judgement("PASS").is_err());
    assert!(parse_judgement("{\"pass\": \"yes\"}").is_err());
}

#[test]
fn rouge_l_and_bleu_equal_the_reference_packages() {
    let data: Vec<Value> = serde_json::from_str(include_str!(
        "../../tests/data/text_metrics/references.json"
    ))
    .expect("reference data");
    assert!(data.len() >= 15);
    for pair in &data {
        let reference = pair["reference"].as_str().expect("reference");
        let candidate = pair["candidate"].as_str().expect("candidate");
        let rouge = text_metrics::rouge_l(reference, candidate);
        let bleu = text_metrics::bleu(reference, candidate);
        let want_rouge = pair["rouge_l"].as_f64().expect("rouge_l");
        let want_bleu = pair["bleu"].as_f64().expect("bleu");
        assert!(
            (rouge - want_rouge).abs() < 1e-9,
            "rouge-l {reference:?} / {candidate:?}: {rouge} vs {want_rouge}"
        );
        assert!(
            (bleu - want_bleu).abs() < 1e-9,
            "bleu {reference:?} / {candidate:?}: {bleu} vs {want_bleu}"
        );
    }
}
