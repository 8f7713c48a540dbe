//! A prompt's request parameters: the common OpenAI sampling parameters, typed and range-checked
//! at load, a pass-through map for the rest, and `response_format`.

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Request fields a prompt may not set through `extra`: the typed parameters (so each has one
/// spelling and is checked), what the prompt sets elsewhere (`model`, `messages`,
/// `response_format`), and the caller's transport choices (`stream`, `stream_options`).
const RESERVED_EXTRA: &[&str] = &[
    "temperature",
    "top_p",
    "max_tokens",
    "stop",
    "presence_penalty",
    "frequency_penalty",
    "seed",
    "model",
    "messages",
    "response_format",
    "stream",
    "stream_options",
];

/// Sampling parameters. Every field is optional: what the prompt leaves out, the caller (or the
/// model's default) decides.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Params {
    /// 0 to 2.
    #[serde(
        default,
        deserialize_with = "temperature",
        skip_serializing_if = "Option::is_none"
    )]
    pub temperature: Option<f64>,
    /// Above 0, at most 1.
    #[serde(
        default,
        deserialize_with = "top_p",
        skip_serializing_if = "Option::is_none"
    )]
    pub top_p: Option<f64>,
    /// At least 1.
    #[serde(
        default,
        deserialize_with = "max_tokens",
        skip_serializing_if = "Option::is_none"
    )]
    pub max_tokens: Option<u32>,
    /// One stop sequence or several; a single string is read as a list of one.
    #[serde(
        default,
        deserialize_with = "stop",
        skip_serializing_if = "Option::is_none"
    )]
    pub stop: Option<Vec<String>>,
    /// -2 to 2.
    #[serde(
        default,
        deserialize_with = "penalty",
        skip_serializing_if = "Option::is_none"
    )]
    pub presence_penalty: Option<f64>,
    /// -2 to 2.
    #[serde(
        default,
        deserialize_with = "penalty",
        skip_serializing_if = "Option::is_none"
    )]
    pub frequency_penalty: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<i64>,
    /// Any other OpenAI request field (`logit_bias`, `max_completion_tokens`, `n`, …), sent
    /// as written. A separate map rather than unknown keys, so that a misspelt parameter is an
    /// error instead of a silent pass-through.
    #[serde(
        default,
        deserialize_with = "pass_through",
        skip_serializing_if = "Map::is_empty"
    )]
    pub extra: Map<String, Value>,
}

impl Params {
    pub fn is_empty(&self) -> bool {
        *self == Params::default()
    }

    /// The parameters as OpenAI request fields, `extra` merged in.
    pub fn to_request_fields(&self) -> Map<String, Value> {
        let mut fields = match serde_json::to_value(self) {
            Ok(Value::Object(fields)) => fields,
            // A struct of numbers, strings and a map always serialises to an object.
            _ => Map::new(),
        };
        fields.remove("extra");
        fields.extend(self.extra.clone());
        fields
    }
}

fn bounded<'de, D: Deserializer<'de>>(
    deserializer: D,
    name: &str,
    accepts: impl Fn(f64) -> bool,
    rule: &str,
) -> Result<Option<f64>, D::Error> {
    let value = f64::deserialize(deserializer)?;
    if accepts(value) {
        Ok(Some(value))
    } else {
        Err(de::Error::custom(format!(
            "{name} {value} is out of range: {rule}"
        )))
    }
}

fn temperature<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    bounded(d, "temperature", |t| (0.0..=2.0).contains(&t), "0 to 2")
}

fn top_p<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    bounded(d, "top_p", |p| p > 0.0 && p <= 1.0, "above 0, at most 1")
}

fn penalty<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    bounded(d, "penalty", |p| (-2.0..=2.0).contains(&p), "-2 to 2")
}

fn max_tokens<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    match u32::deserialize(d)? {
        0 => Err(de::Error::custom("max_tokens must be at least 1")),
        n => Ok(Some(n)),
    }
}

fn stop<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<String>>, D::Error> {
    struct StopVisitor;

    impl<'de> Visitor<'de> for StopVisitor {
        type Value = Vec<String>;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a stop sequence or a list of them")
        }

        fn visit_str<E: de::Error>(self, text: &str) -> Result<Vec<String>, E> {
            Ok(vec![text.to_owned()])
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<String>, A::Error> {
            let mut all = Vec::new();
            while let Some(one) = seq.next_element::<String>()? {
                all.push(one);
            }
            Ok(all)
        }
    }

    let sequences = d.deserialize_any(StopVisitor)?;
    if sequences.iter().any(String::is_empty) {
        return Err(de::Error::custom("a stop sequence cannot be empty"));
    }
    Ok(Some(sequences))
}

fn pass_through<'de, D: Deserializer<'de>>(d: D) -> Result<Map<String, Value>, D::Error> {
    let extra = Map::<String, Value>::deserialize(d)?;
    match extra
        .keys()
        .find(|key| RESERVED_EXTRA.contains(&key.as_str()))
    {
        Some(key) => Err(de::Error::custom(format!(
            "`{key}` cannot go in params.extra: set it where the prompt format defines it, or \
             leave it to the caller"
        ))),
        None => Ok(extra),
    }
}

/// OpenAI's `response_format`, in OpenAI's own shape.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ResponseFormat {
    Text,
    JsonObject,
    JsonSchema { json_schema: JsonSchemaSpec },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JsonSchemaSpec {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// A JSON Schema; an object, as OpenAI requires.
    pub schema: Map<String, Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strict: Option<bool>,
}
