//! The variables a prompt declares: their names, types and defaults, and the type check that
//! both defaults (at load) and callers' values (at render) go through.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

/// The rule for [`VariableName`], quoted in errors: what a template can name without quoting.
pub const VARIABLE_RULE: &str =
    "a variable name is 1 to 64 characters of A-Z, a-z, 0-9 and `_`, not starting with a digit";

const VARIABLE_MAX: usize = 64;

/// A declared variable's name, usable as a bare identifier in a template.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct VariableName(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid variable name `{0}`: {VARIABLE_RULE}")]
pub struct VariableNameError(pub String);

impl VariableName {
    pub fn parse(text: &str) -> Result<Self, VariableNameError> {
        let starts_well = text
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
        let rest_ok = text.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if starts_well && rest_ok && text.len() <= VARIABLE_MAX {
            Ok(VariableName(text.to_owned()))
        } else {
            Err(VariableNameError(text.to_owned()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for VariableName {
    type Error = VariableNameError;
    fn try_from(text: String) -> Result<Self, VariableNameError> {
        VariableName::parse(&text)
    }
}

impl From<VariableName> for String {
    fn from(name: VariableName) -> String {
        name.0
    }
}

impl fmt::Display for VariableName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The JSON type a variable's value must have.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VariableType {
    String,
    /// Any JSON number, whole or not.
    Number,
    /// A whole JSON number (`3`, not `3.0`): what a count or a limit needs.
    Integer,
    Boolean,
    Array,
    Object,
    /// Anything, `null` included: for values a template only passes through (`tojson`).
    Any,
}

impl VariableType {
    pub fn accepts(self, value: &Value) -> bool {
        match self {
            VariableType::String => value.is_string(),
            VariableType::Number => value.is_number(),
            VariableType::Integer => value.is_i64() || value.is_u64(),
            VariableType::Boolean => value.is_boolean(),
            VariableType::Array => value.is_array(),
            VariableType::Object => value.is_object(),
            VariableType::Any => true,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            VariableType::String => "string",
            VariableType::Number => "number",
            VariableType::Integer => "integer",
            VariableType::Boolean => "boolean",
            VariableType::Array => "array",
            VariableType::Object => "object",
            VariableType::Any => "any",
        }
    }
}

impl fmt::Display for VariableType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The name of a JSON value's type, in [`VariableType`]'s words, for "expected X, got Y".
pub fn json_type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// One declared variable. Without a `default` it is required.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VariableSpec {
    #[serde(rename = "type")]
    pub kind: VariableType,
    /// `default: null` is a default (of an `any` variable), not the absence of one.
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub default: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

impl VariableSpec {
    pub fn is_required(&self) -> bool {
        self.default.is_none()
    }
}

/// A field that is present is `Some`, even when it holds `null`; `#[serde(default)]` makes an
/// absent one `None`.
fn present<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(deserializer).map(Some)
}
