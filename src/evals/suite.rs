//! Suite files: reading one, with strict validation. An unknown key, a bad assertion, a missing
//! dataset file or a malformed JSONL line is an error naming the file, the line and the reason.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::de::{self, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer};
use serde_json::{Map, Value};
use serde_saphyr::Spanned;

use super::assertion::{Assertion, Check};
use crate::prompts::{MessageTemplate, PromptContent, PromptRef, VariableName, VariableSpec};

/// The most repeats a suite may ask for.
pub const MAX_REPEAT: u32 = 100;
/// The embedding model `similar` uses when a suite names none (the default local embedder).
pub const DEFAULT_EMBEDDING_MODEL: &str = "all-minilm-l6-v2";

#[derive(Debug, thiserror::Error)]
pub enum SuiteError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// `line` is 1-based; 0 when unknown.
    #[error("{}:{line}: {reason}", path.display())]
    Invalid {
        path: PathBuf,
        line: u64,
        reason: String,
    },
}

/// A suite, read and checked.
#[derive(Debug, Clone)]
pub struct Suite {
    pub path: PathBuf,
    /// The file name without its extension: how runs and baselines name the suite.
    pub name: String,
    pub description: Option<String>,
    pub targets: Vec<Target>,
    pub cases: Vec<Case>,
    pub default_assertions: Vec<Assertion>,
    /// The lowest pass rate each target must reach, in 0..=1, unless the target sets its own.
    pub threshold: f64,
    pub repeat: u32,
    /// The model `llm-rubric` asks when an assertion names none.
    pub judge: Option<String>,
    pub embedding_model: String,
}

/// What a suite runs its cases against.
#[derive(Debug, Clone)]
pub struct Target {
    /// How reports name the target (unique in the suite).
    pub label: String,
    pub model: Option<String>,
    pub prompt: Option<PromptSpec>,
    /// OpenAI request fields that override the prompt's.
    pub params: Map<String, Value>,
    /// The pass rate this target needs, when not the suite's.
    pub threshold: Option<f64>,
}

/// Where a target's messages come from.
#[derive(Debug, Clone)]
pub enum PromptSpec {
    /// A registry prompt: `name`, `name@label` or `name#3`.
    Registry(PromptRef),
    /// Messages written in the suite; `variables` absent means each case's vars are declared
    /// as they come.
    Inline(InlinePrompt),
    /// A prompt file (`prompts/x.yaml`) as it is in the working tree: its messages, variables,
    /// model and parameters.
    File(Box<PromptContent>),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InlinePrompt {
    pub messages: Vec<MessageTemplate>,
    #[serde(default)]
    pub variables: Option<std::collections::BTreeMap<VariableName, VariableSpec>>,
}

/// One case of the dataset.
#[derive(Debug, Clone)]
pub struct Case {
    pub id: String,
    /// Where the case starts: its line in the suite, or in the JSONL dataset.
    pub line: u64,
    pub description: Option<String>,
    pub vars: Map<String, Value>,
    pub expected: Option<Value>,
    pub metadata: Map<String, Value>,
    pub assertions: Vec<Assertion>,
    /// The weighted score the case needs, in 0..=1 (1: every assertion must pass).
    pub threshold: f64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSuite {
    #[serde(default)]
    description: Option<String>,
    targets: Vec<Spanned<RawTarget>>,
    dataset: Spanned<RawDataset>,
    #[serde(default)]
    default_assertions: Vec<Assertion>,
    #[serde(default)]
    threshold: Option<Spanned<f64>>,
    #[serde(default)]
    repeat: Option<Spanned<u32>>,
    #[serde(default)]
    judge: Option<String>,
    #[serde(default)]
    embedding_model: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTarget {
    #[serde(default)]
    label: Option<String>,
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    prompt: Option<RawPrompt>,
    #[serde(default)]
    params: Map<String, Value>,
    #[serde(default)]
    threshold: Option<f64>,
}

/// A case as written, in the suite or as one line of a JSONL file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCase {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    vars: Map<String, Value>,
    #[serde(default)]
    expected: Option<Value>,
    #[serde(default)]
    metadata: Map<String, Value>,
    #[serde(default, rename = "assert")]
    assertions: Vec<Assertion>,
    #[serde(default)]
    threshold: Option<f64>,
}

/// `dataset:` is a list of cases or the path of a JSONL file (relative to the suite).
#[derive(Debug)]
enum RawDataset {
    Inline(Vec<Spanned<RawCase>>),
    File(String),
}

impl<'de> Deserialize<'de> for RawDataset {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawDataset;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a list of cases or the path of a JSONL file")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawDataset, E> {
                Ok(RawDataset::File(v.to_owned()))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<RawDataset, A::Error> {
                let mut cases = Vec::new();
                while let Some(case) = seq.next_element()? {
                    cases.push(case);
                }
                Ok(RawDataset::Inline(cases))
            }
        }
        d.deserialize_any(V)
    }
}

/// `prompt:` is a reference (`name@label`), or a map with `messages` (inline) or `file`.
#[derive(Debug)]
enum RawPrompt {
    Reference(PromptRef),
    Inline(InlinePrompt),
    File(String),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct InlineOrFile {
    #[serde(default)]
    messages: Option<Vec<MessageTemplate>>,
    #[serde(default)]
    variables: Option<std::collections::BTreeMap<VariableName, VariableSpec>>,
    #[serde(default)]
    file: Option<String>,
}

impl<'de> Deserialize<'de> for RawPrompt {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawPrompt;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str(
                    "a prompt reference (name, name@label, name#version), or a map with \
                     `messages` (and optional `variables`) or `file`",
                )
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawPrompt, E> {
                PromptRef::parse(v)
                    .map(RawPrompt::Reference)
                    .map_err(|e| E::custom(format!("prompt `{v}`: {e}")))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<RawPrompt, A::Error> {
                let raw = InlineOrFile::deserialize(de::value::MapAccessDeserializer::new(map))?;
                match (raw.messages, raw.file) {
                    (Some(messages), None) => Ok(RawPrompt::Inline(InlinePrompt {
                        messages,
                        variables: raw.variables,
                    })),
                    (None, Some(file)) if raw.variables.is_none() => Ok(RawPrompt::File(file)),
                    _ => Err(de::Error::custom(
                        "an inline prompt has `messages` (and optional `variables`), or only `file`",
                    )),
                }
            }
        }
        d.deserialize_any(V)
    }
}

impl Suite {
    /// Reads and checks the suite at `path`, its dataset file and prompt files included.
    pub fn load(path: &Path) -> Result<Suite, SuiteError> {
        let text = std::fs::read_to_string(path).map_err(|source| SuiteError::Io {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(path, &text)
    }

    /// Parses `text` as the suite at `path` (relative paths inside it are relative to `path`'s
    /// directory).
    pub fn parse(path: &Path, text: &str) -> Result<Suite, SuiteError> {
        let invalid = |line: u64, reason: String| SuiteError::Invalid {
            path: path.to_owned(),
            line,
            reason,
        };
        let raw: RawSuite = serde_saphyr::from_str(text).map_err(|e| {
            let line = e.location().map_or(0, |l| l.line());
            invalid(line, e.without_snippet().to_string())
        })?;
        let dir = path.parent().unwrap_or(Path::new("."));
        let name = path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("suite")
            .to_owned();

        if raw.targets.is_empty() {
            return Err(invalid(
                0,
                "`targets` is empty: a suite needs at least one".into(),
            ));
        }
        let mut targets: Vec<Target> = Vec::with_capacity(raw.targets.len());
        for spanned in raw.targets {
            let line = spanned.referenced.line();
            let t = spanned.value;
            let prompt = match t.prompt {
                None => None,
                Some(RawPrompt::Reference(r)) => Some(PromptSpec::Registry(r)),
                Some(RawPrompt::Inline(p)) => Some(PromptSpec::Inline(p)),
                Some(RawPrompt::File(file)) => {
                    let loaded = crate::prompts::PromptFile::read(&dir.join(&file))
                        .map_err(|e| invalid(line, format!("prompt file: {e}")))?;
                    Some(PromptSpec::File(Box::new(loaded.content)))
                }
            };
            // A prompt file's model serves when the target names none.
            let model = t.model.or_else(|| match &prompt {
                Some(PromptSpec::File(content)) => content.model().map(str::to_owned),
                _ => None,
            });
            let label = match (&t.label, &prompt, &model) {
                (Some(label), _, _) => label.clone(),
                (None, Some(PromptSpec::Registry(r)), Some(m)) => format!("{r} on {m}"),
                (None, Some(PromptSpec::Registry(r)), None) => r.to_string(),
                (None, _, Some(m)) => m.clone(),
                (None, _, None) => format!("target {}", targets.len() + 1),
            };
            if model.is_none() && !matches!(prompt, Some(PromptSpec::Registry(_))) {
                return Err(invalid(
                    line,
                    format!(
                        "target `{label}` names no model (only a registry prompt may supply one)"
                    ),
                ));
            }
            if t.threshold.is_some_and(|t| !(0.0..=1.0).contains(&t)) {
                return Err(invalid(
                    line,
                    format!("target `{label}`: threshold must lie in 0..=1"),
                ));
            }
            if targets.iter().any(|o| o.label == label) {
                return Err(invalid(line, format!("two targets are labelled `{label}`")));
            }
            targets.push(Target {
                label,
                model,
                prompt,
                params: t.params,
                threshold: t.threshold,
            });
        }

        let dataset_line = raw.dataset.referenced.line();
        let defaults = &raw.default_assertions;
        let cases = match raw.dataset.value {
            RawDataset::Inline(cases) => cases
                .into_iter()
                .enumerate()
                .map(|(i, c)| {
                    let line = c.referenced.line();
                    finish_case(c.value, i, line, defaults).map_err(|reason| invalid(line, reason))
                })
                .collect::<Result<Vec<_>, _>>()?,
            RawDataset::File(file) => read_jsonl(&dir.join(file), defaults)?,
        };
        if cases.is_empty() {
            return Err(invalid(dataset_line, "the dataset has no cases".into()));
        }
        let mut ids = std::collections::HashSet::new();
        if let Some(dup) = cases.iter().find(|c| !ids.insert(c.id.as_str())) {
            return Err(invalid(
                dataset_line,
                format!("two cases have the id `{}`", dup.id),
            ));
        }

        let threshold = match raw.threshold {
            None => 1.0,
            Some(t) if (0.0..=1.0).contains(&t.value) => t.value,
            Some(t) => {
                return Err(invalid(
                    t.referenced.line(),
                    "threshold must lie in 0..=1".into(),
                ));
            }
        };
        let repeat = match raw.repeat {
            None => 1,
            Some(r) if (1..=MAX_REPEAT).contains(&r.value) => r.value,
            Some(r) => {
                return Err(invalid(
                    r.referenced.line(),
                    format!("repeat must lie in 1..={MAX_REPEAT}"),
                ));
            }
        };
        let needs_judge = raw
            .default_assertions
            .iter()
            .chain(cases.iter().flat_map(|c| &c.assertions))
            .any(|a| {
                matches!(
                    &a.check,
                    super::assertion::Check::LlmRubric { model: None, .. }
                )
            });
        if needs_judge && raw.judge.is_none() {
            return Err(invalid(
                0,
                "an `llm-rubric` assertion names no model and the suite no `judge`".into(),
            ));
        }
        Ok(Suite {
            path: path.to_owned(),
            name,
            description: raw.description,
            targets,
            cases,
            default_assertions: raw.default_assertions,
            threshold,
            repeat,
            judge: raw.judge,
            embedding_model: raw
                .embedding_model
                .unwrap_or_else(|| DEFAULT_EMBEDDING_MODEL.to_owned()),
        })
    }

    /// Whether an assertion needs a model besides the target (`similar`, `llm-rubric`).
    pub fn needs_graders(&self) -> bool {
        self.default_assertions
            .iter()
            .chain(self.cases.iter().flat_map(|c| &c.assertions))
            .any(|a| matches!(a.check, Check::Similar { .. } | Check::LlmRubric { .. }))
    }

    /// The assertions that apply to `case`: the suite's defaults, then its own.
    pub fn assertions_for<'a>(&'a self, case: &'a Case) -> impl Iterator<Item = &'a Assertion> {
        self.default_assertions.iter().chain(&case.assertions)
    }
}

fn finish_case(
    c: RawCase,
    index: usize,
    line: u64,
    defaults: &[Assertion],
) -> Result<Case, String> {
    let threshold = c.threshold.unwrap_or(1.0);
    if !(0.0..=1.0).contains(&threshold) {
        return Err("a case's threshold must lie in 0..=1".into());
    }
    let id = c.id.unwrap_or_else(|| format!("case-{}", index + 1));
    if c.assertions.is_empty() && defaults.is_empty() {
        return Err(format!(
            "case `{id}` has no assertions (and the suite no default_assertions)"
        ));
    }
    if c.expected.is_none()
        && let Some(a) = defaults
            .iter()
            .chain(&c.assertions)
            .find(|a| a.check.wants_expected())
    {
        return Err(format!(
            "case `{id}`: assertion `{a}` has no value and the case has no `expected`"
        ));
    }
    Ok(Case {
        id,
        line,
        description: c.description,
        vars: c.vars,
        expected: c.expected,
        metadata: c.metadata,
        assertions: c.assertions,
        threshold,
    })
}

/// Cases from a JSONL file, one object per non-blank line.
fn read_jsonl(path: &Path, defaults: &[Assertion]) -> Result<Vec<Case>, SuiteError> {
    let text = std::fs::read_to_string(path).map_err(|source| SuiteError::Io {
        path: path.to_owned(),
        source,
    })?;
    let mut cases = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let invalid = |reason: String| SuiteError::Invalid {
            path: path.to_owned(),
            line: i as u64 + 1,
            reason,
        };
        let raw: RawCase = serde_json::from_str(line).map_err(|e| invalid(e.to_string()))?;
        let line = i as u64 + 1;
        cases.push(finish_case(raw, cases.len(), line, defaults).map_err(invalid)?);
    }
    Ok(cases)
}
