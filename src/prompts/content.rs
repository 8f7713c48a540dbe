//! A prompt's content (messages, variables, model, parameters, response format, description)
//! and its identity: a canonical JSON form, stored as text, whose SHA-256 is the content hash.
//! Two pushes of the same content get the same hash whatever file, form or key order they came
//! from; any change to the content, whitespace in a template included, changes it.

use std::collections::BTreeMap;
use std::fmt::{self, Write as _};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::params::{Params, ResponseFormat};
use super::render;
use super::variables::{VariableName, VariableSpec, VariableType, json_type_name};

/// Who says a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    System,
    Developer,
    User,
    Assistant,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::System, Role::Developer, Role::User, Role::Assistant];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::System => "system",
            Role::Developer => "developer",
            Role::User => "user",
            Role::Assistant => "assistant",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One chat message whose text is a minijinja template.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MessageTemplate {
    pub role: Role,
    pub content: String,
}

/// The parts of a prompt's content, not yet checked: what files and stored text deserialise
/// into, and what [`PromptContent::new`] checks. Field order is the order `to_yaml` writes.
///
/// Optional parts are left out of the canonical form when absent, so adding a new optional part
/// later leaves the hashes of existing content unchanged.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContentParts {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The model the prompt was written for; the caller's request may name another.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(default, skip_serializing_if = "Params::is_empty")]
    pub params: Params,
    /// Sorted by name: declaration order is not content, so it does not change the hash.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub variables: BTreeMap<VariableName, VariableSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_format: Option<ResponseFormat>,
    pub messages: Vec<MessageTemplate>,
}

/// Content that failed [`PromptContent::new`] or [`PromptContent::from_stored`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ContentError {
    #[error("a prompt needs at least one message")]
    NoMessages,
    /// A syntax error, or a fault the trial render found (an unknown filter, an include).
    #[error("messages[{index}]: template error{}: {detail}", at_line(*line))]
    Template {
        index: usize,
        /// The line within the message's template.
        line: Option<usize>,
        detail: String,
    },
    #[error(
        "messages[{index}] uses `{variable}`, which is not declared: declare it under `variables`"
    )]
    UndeclaredVariable { index: usize, variable: String },
    #[error("the default of variable `{variable}` should be {expected}, not {found}")]
    DefaultType {
        variable: String,
        expected: VariableType,
        found: &'static str,
    },
    #[error("stored prompt content is malformed: {0}")]
    Stored(String),
    #[error("cannot write the canonical form of the content: {0}")]
    Canonical(String),
}

fn at_line(line: Option<usize>) -> String {
    line.map(|l| format!(" on line {l} of the template"))
        .unwrap_or_default()
}

/// The SHA-256, in lower-case hex, of a prompt's canonical content ([`PromptContent::to_stored`]).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ContentHash(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid content hash `{0}`: 64 lower-case hex digits")]
pub struct ContentHashError(pub String);

impl ContentHash {
    pub fn of(canonical: &str) -> Self {
        ContentHash(hex::encode(Sha256::digest(canonical.as_bytes())))
    }

    pub fn parse(text: &str) -> Result<Self, ContentHashError> {
        let well_formed =
            text.len() == 64 && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        if well_formed {
            Ok(ContentHash(text.to_owned()))
        } else {
            Err(ContentHashError(text.to_owned()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for ContentHash {
    type Error = ContentHashError;
    fn try_from(text: String) -> Result<Self, ContentHashError> {
        ContentHash::parse(&text)
    }
}

impl From<ContentHash> for String {
    fn from(hash: ContentHash) -> String {
        hash.0
    }
}

impl fmt::Display for ContentHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Checked content: at least one message, every template compiles and names only declared
/// variables, every default has its variable's type. Immutable; its canonical form is computed
/// once.
#[derive(Debug, Clone)]
pub struct PromptContent {
    parts: ContentParts,
    canonical: String,
}

impl PartialEq for PromptContent {
    fn eq(&self, other: &Self) -> bool {
        self.canonical == other.canonical
    }
}

impl Eq for PromptContent {}

impl PromptContent {
    pub fn new(parts: ContentParts) -> Result<Self, ContentError> {
        if parts.messages.is_empty() {
            return Err(ContentError::NoMessages);
        }
        for (name, spec) in &parts.variables {
            if let Some(default) = &spec.default
                && !spec.kind.accepts(default)
            {
                return Err(ContentError::DefaultType {
                    variable: name.to_string(),
                    expected: spec.kind,
                    found: json_type_name(default),
                });
            }
        }
        render::check_templates(&parts)?;
        let value =
            serde_json::to_value(&parts).map_err(|e| ContentError::Canonical(e.to_string()))?;
        let mut canonical = String::new();
        write_canonical(&value, &mut canonical);
        Ok(PromptContent { parts, canonical })
    }

    pub fn parts(&self) -> &ContentParts {
        &self.parts
    }

    pub fn into_parts(self) -> ContentParts {
        self.parts
    }

    pub fn messages(&self) -> &[MessageTemplate] {
        &self.parts.messages
    }

    pub fn variables(&self) -> &BTreeMap<VariableName, VariableSpec> {
        &self.parts.variables
    }

    pub fn model(&self) -> Option<&str> {
        self.parts.model.as_deref()
    }

    pub fn params(&self) -> &Params {
        &self.parts.params
    }

    pub fn response_format(&self) -> Option<&ResponseFormat> {
        self.parts.response_format.as_ref()
    }

    pub fn description(&self) -> Option<&str> {
        self.parts.description.as_deref()
    }

    pub fn content_hash(&self) -> ContentHash {
        ContentHash::of(&self.canonical)
    }

    /// The canonical JSON text (sorted keys, no insignificant whitespace) the hash is taken of,
    /// for a store to keep as is.
    pub fn to_stored(&self) -> String {
        self.canonical.clone()
    }

    /// Content back from [`PromptContent::to_stored`]'s text, checked again: stored text is
    /// input like any other.
    pub fn from_stored(text: &str) -> Result<Self, ContentError> {
        let parts: ContentParts =
            serde_json::from_str(text).map_err(|e| ContentError::Stored(e.to_string()))?;
        PromptContent::new(parts)
    }
}

/// JSON with object keys sorted at every level and no whitespace: what Python writes with
/// `json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)`, so a hash
/// can be checked outside pasarela. `serde_json` sorts keys only
/// while no crate in the build turns on its `preserve_order` feature, so the hash does not rely
/// on that.
fn write_canonical(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            out.push('{');
            for (i, (key, item)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                let _ = write!(out, "{}", Value::String(key.clone()));
                out.push(':');
                write_canonical(item, out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        scalar => {
            let _ = write!(out, "{scalar}");
        }
    }
}
