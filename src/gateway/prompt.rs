//! Prompt references in chat requests. A request may name a registry prompt instead of (or
//! before) its own messages, in the body (`"prompt": {"name", "label" | "version",
//! "variables"}` or `"prompt": "name@label"`) or, for SDKs that cannot add fields, in the
//! `x-pasarela-prompt` header (a reference or the same JSON object) with variables in
//! `x-pasarela-prompt-variables`. The prompt is rendered strictly; its messages go first, its
//! model and parameters fill in whatever the request leaves unset.
//!
//! Works on the request's JSON before it is typed, so that a request with a prompt may omit
//! `model` and `messages`. Must not contain HTTP types: headers arrive as plain strings.

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::prompts::{PromptRef, Registry, RegistryError, RenderError, render};

pub const PROMPT_HEADER: &str = "x-pasarela-prompt";
pub const VARIABLES_HEADER: &str = "x-pasarela-prompt-variables";

/// The prompt version a request used, for response headers and traces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppliedPrompt {
    pub name: String,
    pub version: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum PromptError {
    /// The client's fault (400), naming the request field at fault.
    #[error("{message}")]
    Invalid { message: String, param: String },
    #[error("{0}")]
    NotFound(String),
    /// The stored prompt cannot render whatever the client sends (500).
    #[error("{0}")]
    Broken(String),
    #[error(transparent)]
    Registry(RegistryError),
}

fn invalid(message: impl Into<String>, param: &str) -> PromptError {
    PromptError::Invalid {
        message: message.into(),
        param: param.to_owned(),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PromptField {
    name: String,
    label: Option<String>,
    version: Option<u32>,
    #[serde(default)]
    variables: Map<String, Value>,
}

/// Where the prompt reference came from, for error messages.
struct Source {
    field: PromptField,
    param: &'static str,
}

/// The request's prompt reference, if any: the body's `prompt` field (removed from the body,
/// so it never reaches an upstream) wins over the headers.
fn take_reference(
    body: &mut Map<String, Value>,
    header: Option<&str>,
    header_variables: Option<&str>,
) -> Result<Option<Source>, PromptError> {
    if let Some(value) = body.remove("prompt") {
        let field = match value {
            Value::String(text) => reference_field(&text, Map::new(), "prompt")?,
            Value::Object(_) => serde_json::from_value(value)
                .map_err(|e| invalid(format!("Invalid value for 'prompt': {e}"), "prompt"))?,
            _ => {
                return Err(invalid(
                    "'prompt' must be a reference such as \"name@label\" or an object with \
                     name, label or version, and variables",
                    "prompt",
                ));
            }
        };
        return Ok(Some(Source {
            field,
            param: "prompt",
        }));
    }
    let Some(header) = header.map(str::trim).filter(|h| !h.is_empty()) else {
        return Ok(None);
    };
    let variables = match header_variables {
        Some(text) => serde_json::from_str::<Map<String, Value>>(text).map_err(|e| {
            invalid(
                format!("{VARIABLES_HEADER} must hold a JSON object: {e}"),
                VARIABLES_HEADER,
            )
        })?,
        None => Map::new(),
    };
    let field = if header.starts_with('{') {
        let mut field: PromptField = serde_json::from_str(header).map_err(|e| {
            invalid(
                format!("Invalid {PROMPT_HEADER} header: {e}"),
                PROMPT_HEADER,
            )
        })?;
        field.variables.extend(variables);
        field
    } else {
        reference_field(header, variables, PROMPT_HEADER)?
    };
    Ok(Some(Source {
        field,
        param: PROMPT_HEADER,
    }))
}

fn reference_field(
    text: &str,
    variables: Map<String, Value>,
    param: &str,
) -> Result<PromptField, PromptError> {
    let reference = PromptRef::parse(text).map_err(|e| invalid(e.to_string(), param))?;
    let (label, version) = match reference.selector {
        crate::prompts::Selector::Label(l) => (Some(l.as_str().to_owned()), None),
        crate::prompts::Selector::Version(v) => (None, Some(v.get())),
    };
    Ok(PromptField {
        name: reference.name.as_str().to_owned(),
        label,
        version,
        variables,
    })
}

/// Renders the request's prompt into `body`, if it names one.
pub async fn apply(
    registry: &Registry,
    body: &mut Map<String, Value>,
    header: Option<&str>,
    header_variables: Option<&str>,
) -> Result<Option<AppliedPrompt>, PromptError> {
    let Some(Source { field, param }) = take_reference(body, header, header_variables)? else {
        return Ok(None);
    };
    let text = match (&field.label, field.version) {
        (Some(_), Some(_)) => {
            return Err(invalid(
                "give either a label or a version of the prompt, not both",
                param,
            ));
        }
        (Some(label), None) => format!("{}@{label}", field.name),
        (None, Some(version)) => format!("{}#{version}", field.name),
        (None, None) => field.name.clone(),
    };
    let reference = PromptRef::parse(&text).map_err(|e| invalid(e.to_string(), param))?;
    let resolved = registry.resolve(&reference).await.map_err(|e| match e {
        RegistryError::NotFound(what) => {
            PromptError::NotFound(format!("The prompt `{reference}` does not exist: {what}."))
        }
        other => PromptError::Registry(other),
    })?;
    let rendered = render(&resolved.content, &field.variables).map_err(|e| {
        let message = format!(
            "prompt `{}` version {}: {e}",
            resolved.name.as_str(),
            resolved.version
        );
        match e {
            RenderError::BrokenTemplate { .. } => PromptError::Broken(message),
            ref client => PromptError::Invalid {
                message,
                param: client
                    .param()
                    .map_or_else(|| param.to_owned(), |p| format!("{param}.{p}")),
            },
        }
    })?;

    let mut messages: Vec<Value> = rendered
        .messages
        .iter()
        .map(|m| serde_json::json!({"role": m.role, "content": m.content}))
        .collect();
    match body.remove("messages") {
        Some(Value::Array(own)) => messages.extend(own),
        Some(Value::Null) | None => {}
        Some(_) => return Err(invalid("'messages' must be an array", "messages")),
    }
    body.insert("messages".into(), Value::Array(messages));
    if body.get("model").is_none_or(Value::is_null) {
        let model = rendered.model.clone().ok_or_else(|| {
            invalid(
                format!(
                    "prompt `{}` names no model: give 'model' in the request",
                    resolved.name.as_str()
                ),
                "model",
            )
        })?;
        body.insert("model".into(), Value::String(model));
    }
    // The request's own parameters win over the prompt's.
    for (key, value) in rendered.parameters {
        if body.get(&key).is_none_or(Value::is_null) {
            body.insert(key, value);
        }
    }
    registry.record_served(resolved.name.as_str(), resolved.version);
    Ok(Some(AppliedPrompt {
        name: resolved.name.as_str().to_owned(),
        version: resolved.version,
    }))
}
