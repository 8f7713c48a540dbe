//! Assertions: what a suite checks about one output. Parsed and checked when the suite is read
//! (a bad regex or JSON schema is a load error with its line), then scored per output.
//!
//! Every assertion yields pass or fail; `similar`, `rouge-l` and `bleu` also report the metric
//! they compared with their threshold. A case's score is the weighted share of its assertions
//! that passed, so weights say how much each check matters to the case's threshold.
//!
//! Must not contain HTTP: the two assertions that need a model (`similar`, `llm-rubric`) ask
//! a [`Graders`] for embeddings and verdicts.

use std::fmt;

use serde::Deserialize;
use serde_json::Value;

use super::text_metrics;

/// One output, as the assertions see it.
#[derive(Debug, Clone, Default)]
pub struct Output {
    pub text: String,
    pub latency_ms: f64,
    pub completion_tokens: Option<u64>,
    /// US dollars; None when the model has no price.
    pub cost_usd: Option<f64>,
    pub finish_reason: Option<String>,
}

/// The models assertions may consult.
#[async_trait::async_trait]
pub trait Graders: Send + Sync {
    /// Embedding vectors of `texts`, in order.
    async fn embed(&self, model: &str, texts: &[&str]) -> Result<Vec<Vec<f32>>, String>;
    /// A judge model's answer to `prompt` (the whole judging instruction).
    async fn judge(&self, model: &str, prompt: &str) -> Result<String, String>;
}

/// What one assertion found.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Verdict {
    /// The assertion as written (`not-contains`).
    pub assertion: String,
    pub pass: bool,
    pub weight: f64,
    /// The metric compared with a threshold, for the assertions that have one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metric: Option<f64>,
    pub reason: String,
}

/// The kinds of assertion, with what each compares against.
#[derive(Debug, Clone)]
pub enum Check {
    Equals(Option<Value>),
    Contains(Option<String>),
    IContains(Option<String>),
    ContainsAny(Vec<String>),
    ContainsAll(Vec<String>),
    StartsWith(Option<String>),
    Regex(regex::Regex),
    IsJson,
    JsonSchema(Box<jsonschema::Validator>),
    /// Cosine similarity of embeddings ≥ threshold.
    Similar {
        reference: Option<String>,
        threshold: f64,
        model: Option<String>,
    },
    /// A judge model's pass/fail verdict on a rubric.
    LlmRubric {
        rubric: String,
        model: Option<String>,
    },
    RougeL {
        reference: Option<String>,
        threshold: f64,
    },
    Bleu {
        reference: Option<String>,
        threshold: f64,
    },
    /// Milliseconds from request to full response.
    Latency(f64),
    /// US dollars.
    Cost(f64),
    /// Completion tokens.
    MaxTokens(u64),
    FinishReason(String),
}

/// An assertion: a check, possibly negated, with its weight.
#[derive(Debug, Clone)]
pub struct Assertion {
    pub check: Check,
    pub negate: bool,
    pub weight: f64,
}

/// The names assertions are written with, for error messages.
pub const KINDS: &[&str] = &[
    "equals",
    "contains",
    "icontains",
    "contains-any",
    "contains-all",
    "starts-with",
    "regex",
    "is-json",
    "json-schema",
    "similar",
    "llm-rubric",
    "rouge-l",
    "bleu",
    "latency",
    "cost",
    "max-tokens",
    "finish-reason",
];

/// Default thresholds where a suite gives none (the common choices of eval tools).
const DEFAULT_SIMILAR: f64 = 0.8;
const DEFAULT_ROUGE_L: f64 = 0.5;
const DEFAULT_BLEU: f64 = 0.3;

/// An assertion as written in a suite file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAssertion {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    value: Option<Value>,
    #[serde(default)]
    threshold: Option<f64>,
    #[serde(default)]
    weight: Option<f64>,
    /// The model `similar` embeds with or `llm-rubric` asks, instead of the suite's.
    #[serde(default)]
    model: Option<String>,
}

impl<'de> Deserialize<'de> for Assertion {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = RawAssertion::deserialize(d)?;
        Assertion::try_from(raw).map_err(serde::de::Error::custom)
    }
}

impl TryFrom<RawAssertion> for Assertion {
    type Error = String;

    fn try_from(raw: RawAssertion) -> Result<Self, String> {
        let (negate, kind) = match raw.kind.strip_prefix("not-") {
            Some(kind) => (true, kind),
            None => (false, raw.kind.as_str()),
        };
        let weight = raw.weight.unwrap_or(1.0);
        if !weight.is_finite() || weight < 0.0 {
            return Err(format!("`{}`: weight must be a number ≥ 0", raw.kind));
        }
        let name = raw.kind.clone();
        let text = |v: Option<Value>| -> Result<Option<String>, String> {
            match v {
                None => Ok(None),
                Some(Value::String(s)) => Ok(Some(s)),
                Some(other) => Err(format!("`{name}`: value must be a string, not {other}")),
            }
        };
        let required = |v: Option<String>, what: &str| {
            v.ok_or_else(|| format!("`{name}`: needs a value ({what})"))
        };
        let list = |v: Option<Value>| -> Result<Vec<String>, String> {
            let items = match v {
                Some(Value::Array(items)) if !items.is_empty() => items,
                _ => {
                    return Err(format!(
                        "`{name}`: value must be a non-empty list of strings"
                    ));
                }
            };
            items
                .into_iter()
                .map(|item| match item {
                    Value::String(s) => Ok(s),
                    other => Err(format!("`{name}`: list items must be strings, not {other}")),
                })
                .collect()
        };
        let unit_threshold = |default: f64| -> Result<f64, String> {
            let t = raw.threshold.unwrap_or(default);
            if (0.0..=1.0).contains(&t) {
                Ok(t)
            } else {
                Err(format!("`{name}`: threshold must lie in 0..=1"))
            }
        };
        let limit = || -> Result<f64, String> {
            let from_value = raw.value.as_ref().and_then(Value::as_f64);
            match raw.threshold.or(from_value) {
                Some(t) if t.is_finite() && t >= 0.0 => Ok(t),
                _ => Err(format!("`{name}`: needs a threshold ≥ 0")),
            }
        };
        let no_threshold = || match raw.threshold {
            Some(_) => Err(format!("`{name}` takes no threshold")),
            None => Ok(()),
        };
        let no_model = || match raw.model {
            Some(_) => Err(format!("`{name}` takes no model")),
            None => Ok(()),
        };
        let check = match kind {
            "equals" => {
                no_threshold()?;
                no_model()?;
                Check::Equals(raw.value.clone())
            }
            "contains" | "icontains" | "starts-with" => {
                no_threshold()?;
                no_model()?;
                let v = text(raw.value.clone())?;
                match kind {
                    "contains" => Check::Contains(v),
                    "icontains" => Check::IContains(v),
                    _ => Check::StartsWith(v),
                }
            }
            "contains-any" | "contains-all" => {
                no_threshold()?;
                no_model()?;
                let items = list(raw.value.clone())?;
                match kind {
                    "contains-any" => Check::ContainsAny(items),
                    _ => Check::ContainsAll(items),
                }
            }
            "regex" => {
                no_threshold()?;
                no_model()?;
                let pattern = required(text(raw.value.clone())?, "a regular expression")?;
                let re = regex::Regex::new(&pattern).map_err(|e| format!("`{name}`: {e}"))?;
                Check::Regex(re)
            }
            "is-json" => {
                no_threshold()?;
                no_model()?;
                if raw.value.is_some() {
                    return Err(format!("`{name}` takes no value (use json-schema)"));
                }
                Check::IsJson
            }
            "json-schema" => {
                no_threshold()?;
                no_model()?;
                let schema = match raw.value.clone() {
                    Some(schema @ (Value::Object(_) | Value::Bool(_))) => schema,
                    _ => return Err(format!("`{name}`: value must be a JSON schema (an object)")),
                };
                let validator = jsonschema::validator_for(&schema)
                    .map_err(|e| format!("`{name}`: not a valid JSON schema: {e}"))?;
                Check::JsonSchema(Box::new(validator))
            }
            "similar" => Check::Similar {
                reference: text(raw.value.clone())?,
                threshold: unit_threshold(DEFAULT_SIMILAR)?,
                model: raw.model.clone(),
            },
            "llm-rubric" => {
                no_threshold()?;
                Check::LlmRubric {
                    rubric: required(text(raw.value.clone())?, "the rubric")?,
                    model: raw.model.clone(),
                }
            }
            "rouge-l" | "bleu" => {
                no_model()?;
                let reference = text(raw.value.clone())?;
                match kind {
                    "rouge-l" => Check::RougeL {
                        reference,
                        threshold: unit_threshold(DEFAULT_ROUGE_L)?,
                    },
                    _ => Check::Bleu {
                        reference,
                        threshold: unit_threshold(DEFAULT_BLEU)?,
                    },
                }
            }
            "latency" => {
                no_model()?;
                Check::Latency(limit()?)
            }
            "cost" => {
                no_model()?;
                Check::Cost(limit()?)
            }
            "max-tokens" => {
                no_threshold()?;
                no_model()?;
                match raw.value.as_ref().and_then(Value::as_u64) {
                    Some(n) => Check::MaxTokens(n),
                    None => return Err(format!("`{name}`: value must be a whole number ≥ 0")),
                }
            }
            "finish-reason" => {
                no_threshold()?;
                no_model()?;
                Check::FinishReason(required(text(raw.value.clone())?, "stop, length, …")?)
            }
            other => {
                return Err(format!(
                    "unknown assertion type `{other}`: expected one of {} (each may start with `not-`)",
                    KINDS.join(", ")
                ));
            }
        };
        Ok(Assertion {
            check,
            negate,
            weight,
        })
    }
}

impl fmt::Display for Assertion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.negate {
            f.write_str("not-")?;
        }
        f.write_str(self.check.name())
    }
}

impl Check {
    pub fn name(&self) -> &'static str {
        match self {
            Check::Equals(_) => "equals",
            Check::Contains(_) => "contains",
            Check::IContains(_) => "icontains",
            Check::ContainsAny(_) => "contains-any",
            Check::ContainsAll(_) => "contains-all",
            Check::StartsWith(_) => "starts-with",
            Check::Regex(_) => "regex",
            Check::IsJson => "is-json",
            Check::JsonSchema(_) => "json-schema",
            Check::Similar { .. } => "similar",
            Check::LlmRubric { .. } => "llm-rubric",
            Check::RougeL { .. } => "rouge-l",
            Check::Bleu { .. } => "bleu",
            Check::Latency(_) => "latency",
            Check::Cost(_) => "cost",
            Check::MaxTokens(_) => "max-tokens",
            Check::FinishReason(_) => "finish-reason",
        }
    }

    /// Whether the check compares with a reference that the case's `expected` may supply,
    /// and has none of its own.
    pub fn wants_expected(&self) -> bool {
        match self {
            Check::Equals(v) => v.is_none(),
            Check::Contains(v) | Check::IContains(v) | Check::StartsWith(v) => v.is_none(),
            Check::Similar { reference, .. }
            | Check::RougeL { reference, .. }
            | Check::Bleu { reference, .. } => reference.is_none(),
            _ => false,
        }
    }
}

/// Where an assertion's model-backed checks send their calls, and the suite's defaults.
pub struct GradeContext<'a> {
    pub graders: &'a dyn Graders,
    pub embedding_model: &'a str,
    pub judge_model: &'a str,
}

/// The instruction a judge model gets. It must answer with a JSON object; anything else is
/// a failure (a missing verdict never passes).
fn judge_prompt(rubric: &str, output: &str) -> String {
    format!(
        "You are grading an AI assistant's answer against a rubric.\n\n\
         Rubric:\n{rubric}\n\n\
         Answer to grade:\n<answer>\n{output}\n</answer>\n\n\
         Reply with only a JSON object: {{\"pass\": true or false, \"reason\": \"one sentence\"}}"
    )
}

/// The verdict in a judge's reply: a JSON object with a boolean `pass` (also accepted:
/// `verdict` of "pass"/"fail"), possibly inside a code fence or surrounded by text.
pub fn parse_judgement(reply: &str) -> Result<(bool, String), String> {
    let start = reply.find('{');
    let end = reply.rfind('}');
    let object: Value = match (start, end) {
        (Some(s), Some(e)) if e > s => serde_json::from_str(&reply[s..=e])
            .map_err(|_| format!("the judge's reply holds no JSON verdict: {reply:?}"))?,
        _ => {
            return Err(format!(
                "the judge's reply holds no JSON verdict: {reply:?}"
            ));
        }
    };
    let pass = match (object.get("pass"), object.get("verdict")) {
        (Some(Value::Bool(b)), _) => *b,
        (_, Some(Value::String(v))) if v.eq_ignore_ascii_case("pass") => true,
        (_, Some(Value::String(v))) if v.eq_ignore_ascii_case("fail") => false,
        _ => {
            return Err(format!(
                "the judge's reply has no pass/fail verdict: {reply:?}"
            ));
        }
    };
    let reason = object
        .get("reason")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    Ok((pass, reason))
}

impl Assertion {
    /// Scores `output`; `expected` is the case's expected value, used where the assertion has
    /// no value of its own. A check that cannot be made (a grader call failed) fails.
    pub async fn verdict(
        &self,
        output: &Output,
        expected: Option<&Value>,
        ctx: &GradeContext<'_>,
    ) -> Verdict {
        let (held, metric, why) = self.check.evaluate(output, expected, ctx).await;
        // A check that could not be made fails whichever way it is negated.
        let (pass, reason) = match why {
            Err(reason) => (false, reason),
            Ok(reason) => (held != self.negate, reason),
        };
        Verdict {
            assertion: self.to_string(),
            pass,
            weight: self.weight,
            metric,
            reason,
        }
    }
}

fn expected_text<'a>(own: &'a Option<String>, expected: Option<&'a Value>) -> Option<&'a str> {
    own.as_deref().or_else(|| expected.and_then(Value::as_str))
}

impl Check {
    /// Whether the check holds, the metric if any, and why (Err when it could not be made).
    async fn evaluate(
        &self,
        output: &Output,
        expected: Option<&Value>,
        ctx: &GradeContext<'_>,
    ) -> (bool, Option<f64>, Result<String, String>) {
        let text = output.text.as_str();
        let missing =
            || {
                (
                false,
                None,
                Err("no value to compare with: the assertion has none and the case no `expected`"
                    .to_owned()),
            )
            };
        let plain = |held: bool, reason: String| (held, None, Ok(reason));
        match self {
            Check::Equals(value) => {
                let Some(want) = value.as_ref().or(expected) else {
                    return missing();
                };
                let held = match want {
                    Value::String(s) => text.trim() == s.trim(),
                    // A structured value equals the output parsed as JSON.
                    other => serde_json::from_str::<Value>(text).is_ok_and(|got| &got == other),
                };
                plain(
                    held,
                    format!(
                        "output {} {want}",
                        if held { "equals" } else { "differs from" }
                    ),
                )
            }
            Check::Contains(v) | Check::IContains(v) | Check::StartsWith(v) => {
                let Some(want) = expected_text(v, expected) else {
                    return missing();
                };
                let held = match self {
                    Check::Contains(_) => text.contains(want),
                    Check::IContains(_) => text.to_lowercase().contains(&want.to_lowercase()),
                    _ => text.trim_start().starts_with(want),
                };
                plain(held, format!("{} {want:?}: {held}", self.name()))
            }
            Check::ContainsAny(items) => {
                let found: Vec<&String> = items.iter().filter(|i| text.contains(*i)).collect();
                plain(!found.is_empty(), format!("found {found:?} of {items:?}"))
            }
            Check::ContainsAll(items) => {
                let absent: Vec<&String> = items.iter().filter(|i| !text.contains(*i)).collect();
                plain(
                    absent.is_empty(),
                    format!("missing {absent:?} of {items:?}"),
                )
            }
            Check::Regex(re) => {
                let held = re.is_match(text);
                plain(
                    held,
                    format!("/{re}/ {}", if held { "matches" } else { "does not match" }),
                )
            }
            Check::IsJson => match serde_json::from_str::<Value>(text.trim()) {
                Ok(_) => plain(true, "output is JSON".to_owned()),
                Err(e) => plain(false, format!("output is not JSON: {e}")),
            },
            Check::JsonSchema(validator) => match serde_json::from_str::<Value>(text.trim()) {
                Err(e) => plain(false, format!("output is not JSON: {e}")),
                Ok(value) => match validator.validate(&value) {
                    Ok(()) => plain(true, "output matches the schema".to_owned()),
                    Err(e) => plain(false, format!("schema: {e} at {}", e.instance_path())),
                },
            },
            Check::Similar {
                reference,
                threshold,
                model,
            } => {
                let Some(want) = expected_text(reference, expected) else {
                    return missing();
                };
                let model = model.as_deref().unwrap_or(ctx.embedding_model);
                match ctx.graders.embed(model, &[text, want]).await {
                    Ok(vectors) => match vectors.as_slice() {
                        [a, b] => {
                            let cos = f64::from(text_metrics::cosine(a, b));
                            (
                                cos >= *threshold,
                                Some(cos),
                                Ok(format!("cosine {cos:.4} (threshold {threshold})")),
                            )
                        }
                        _ => (
                            false,
                            None,
                            Err("the embedder returned the wrong count".into()),
                        ),
                    },
                    Err(e) => (false, None, Err(format!("embedding failed: {e}"))),
                }
            }
            Check::LlmRubric { rubric, model } => {
                let model = model.as_deref().unwrap_or(ctx.judge_model);
                match ctx.graders.judge(model, &judge_prompt(rubric, text)).await {
                    Err(e) => (false, None, Err(format!("the judge failed: {e}"))),
                    Ok(reply) => match parse_judgement(&reply) {
                        Ok((pass, reason)) => plain(pass, format!("judge: {reason}")),
                        Err(e) => (false, None, Err(e)),
                    },
                }
            }
            Check::RougeL {
                reference,
                threshold,
            }
            | Check::Bleu {
                reference,
                threshold,
            } => {
                let Some(want) = expected_text(reference, expected) else {
                    return missing();
                };
                let score = match self {
                    Check::RougeL { .. } => text_metrics::rouge_l(want, text),
                    _ => text_metrics::bleu(want, text),
                };
                (
                    score >= *threshold,
                    Some(score),
                    Ok(format!(
                        "{} {score:.4} (threshold {threshold})",
                        self.name()
                    )),
                )
            }
            Check::Latency(ms) => plain(
                output.latency_ms <= *ms,
                format!("{:.0} ms (limit {ms} ms)", output.latency_ms),
            ),
            Check::Cost(limit) => match output.cost_usd {
                Some(cost) => plain(cost <= *limit, format!("${cost:.6} (limit ${limit})")),
                None => (
                    false,
                    None,
                    Err("the model has no price in [prices]".to_owned()),
                ),
            },
            Check::MaxTokens(n) => match output.completion_tokens {
                Some(used) => plain(used <= *n, format!("{used} completion tokens (limit {n})")),
                None => (
                    false,
                    None,
                    Err("the response reported no usage".to_owned()),
                ),
            },
            Check::FinishReason(want) => {
                let got = output.finish_reason.as_deref().unwrap_or("none");
                plain(got == want, format!("finish_reason {got} (want {want})"))
            }
        }
    }
}
