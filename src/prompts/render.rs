//! Strict rendering: a prompt's message templates with the caller's variables, checked against
//! the declared ones, into chat messages and request parameters; and the load-time checks that
//! make a rendering failure a matter of the values passed, never of the prompt.
//!
//! The templates are minijinja with Hugging Face's conventions (`trim_blocks`, `lstrip_blocks`,
//! Python string methods), no autoescaping (it is chat text, not HTML), and
//! [`UndefinedBehavior::Strict`], so a typo prints nothing only in a test that fails.

use std::collections::{BTreeMap, HashSet};

use minijinja::value::{Kwargs, Serde, ValueKind};
use minijinja::{
    AutoEscape, Environment, Error, ErrorKind, UndefinedBehavior, Value, syntax::SyntaxConfig,
};
use serde::Serialize;
use serde_json::Map;

use super::content::{ContentError, ContentParts, PromptContent, Role};
use super::variables::{VariableType, json_type_name};

/// One rendered chat message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RenderedMessage {
    pub role: Role,
    pub content: String,
}

/// A prompt rendered for one call: its messages, and what it asks of the request.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RenderedPrompt {
    pub messages: Vec<RenderedMessage>,
    /// The prompt's model, if it names one.
    pub model: Option<String>,
    /// OpenAI request fields the prompt sets (its params, their pass-through `extra` merged in,
    /// and `response_format`), for the caller to merge under its own overrides.
    pub parameters: Map<String, serde_json::Value>,
}

/// Why a prompt did not render. All but [`RenderError::BrokenTemplate`] are the caller's fault
/// (HTTP 400): see [`RenderError::is_client_error`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RenderError {
    #[error("unknown variable `{name}`: this prompt declares {}", list(declared))]
    UnknownVariable { name: String, declared: Vec<String> },
    #[error("missing required variable `{name}` ({expected})")]
    MissingVariable {
        name: String,
        expected: VariableType,
    },
    #[error("variable `{name}` should be {expected}, not {found}")]
    WrongType {
        name: String,
        expected: VariableType,
        found: &'static str,
    },
    /// The values passed type-check but the template cannot use them (say, an object without
    /// the key the template reads).
    #[error("messages[{index}] failed to render: {detail}")]
    Template { index: usize, detail: String },
    /// The template is wrong whatever the values (an unknown filter or test, an include) on a
    /// path the load-time trial render did not take: the prompt's fault.
    #[error("messages[{index}] of the prompt is broken: {detail}")]
    BrokenTemplate { index: usize, detail: String },
}

impl RenderError {
    /// The variable at fault, if one is.
    pub fn variable(&self) -> Option<&str> {
        match self {
            RenderError::UnknownVariable { name, .. }
            | RenderError::MissingVariable { name, .. }
            | RenderError::WrongType { name, .. } => Some(name),
            RenderError::Template { .. } | RenderError::BrokenTemplate { .. } => None,
        }
    }

    /// Whether the values passed are at fault (HTTP 400), not the prompt (HTTP 500).
    pub fn is_client_error(&self) -> bool {
        !matches!(self, RenderError::BrokenTemplate { .. })
    }

    /// OpenAI's `param` for a client error: `variables.<name>`, or `variables` when no single
    /// variable is at fault.
    pub fn param(&self) -> Option<String> {
        match (self.variable(), self.is_client_error()) {
            (Some(name), _) => Some(format!("variables.{name}")),
            (None, true) => Some("variables".to_owned()),
            (None, false) => None,
        }
    }
}

fn list(names: &[String]) -> String {
    if names.is_empty() {
        "no variables".to_owned()
    } else {
        names
            .iter()
            .map(|n| format!("`{n}`"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Render `content` with `variables`: every variable passed must be declared, every declared
/// one without a default must be passed, and each must have its declared type (`null` is not a
/// way to ask for the default).
pub fn render(
    content: &PromptContent,
    variables: &Map<String, serde_json::Value>,
) -> Result<RenderedPrompt, RenderError> {
    let declared = content.variables();
    if let Some(name) = variables
        .keys()
        .find(|name| !declared.keys().any(|d| d.as_str() == name.as_str()))
    {
        return Err(RenderError::UnknownVariable {
            name: name.clone(),
            declared: declared.keys().map(|d| d.to_string()).collect(),
        });
    }
    let mut context: BTreeMap<&str, Value> = BTreeMap::new();
    for (name, spec) in declared {
        let value = match (variables.get(name.as_str()), &spec.default) {
            (Some(value), _) | (None, Some(value)) => value,
            (None, None) => {
                return Err(RenderError::MissingVariable {
                    name: name.to_string(),
                    expected: spec.kind,
                });
            }
        };
        if !spec.kind.accepts(value) {
            return Err(RenderError::WrongType {
                name: name.to_string(),
                expected: spec.kind,
                found: json_type_name(value),
            });
        }
        context.insert(name.as_str(), Value::from(Serde(value)));
    }
    let context = Value::from(context);

    // Content is checked when built, so this compiles; a failure is the prompt's all the same.
    let env = compile(content.parts()).map_err(|e| match e {
        ContentError::Template { index, detail, .. } => {
            RenderError::BrokenTemplate { index, detail }
        }
        other => RenderError::BrokenTemplate {
            index: 0,
            detail: other.to_string(),
        },
    })?;
    let mut messages = Vec::with_capacity(content.messages().len());
    for (index, message) in content.messages().iter().enumerate() {
        let text = env
            .get_template(&template_name(index))
            .and_then(|template| template.render(context.clone()))
            .map_err(|e| {
                let detail = describe(&e);
                if is_template_fault(e.kind()) {
                    RenderError::BrokenTemplate { index, detail }
                } else {
                    RenderError::Template { index, detail }
                }
            })?;
        messages.push(RenderedMessage {
            role: message.role,
            content: text,
        });
    }

    let mut parameters = content.params().to_request_fields();
    if let Some(format) = content.response_format()
        && let Ok(value) = serde_json::to_value(format)
    {
        parameters.insert("response_format".to_owned(), value);
    }
    Ok(RenderedPrompt {
        messages,
        model: content.model().map(str::to_owned),
        parameters,
    })
}

/// Compile every message, check that each names only declared variables (or the
/// environment's globals, such as `range` and `namespace`), and render each once with sample
/// values (defaults, else an empty value of the type) to catch what only rendering reveals
/// (unknown filters and tests, includes) on the path those values take. Other failures of the
/// trial are ignored: real values may well avoid them.
pub(super) fn check_templates(parts: &ContentParts) -> Result<(), ContentError> {
    let env = compile(parts)?;
    let globals: HashSet<&str> = env.globals().map(|(name, _)| name).collect();
    let sample: BTreeMap<&str, Value> = parts
        .variables
        .iter()
        .map(|(name, spec)| {
            let value = spec.default.clone().unwrap_or_else(|| sample_of(spec.kind));
            (name.as_str(), Value::from(Serde(&value)))
        })
        .collect();
    let sample = Value::from(sample);
    for index in 0..parts.messages.len() {
        let template = env
            .get_template(&template_name(index))
            .map_err(|e| template_error(index, &e))?;
        let mut used: Vec<String> = template.undeclared_variables(false).into_iter().collect();
        used.sort();
        for variable in used {
            let declared = parts.variables.keys().any(|d| d.as_str() == variable);
            if !declared && !globals.contains(variable.as_str()) {
                return Err(ContentError::UndeclaredVariable { index, variable });
            }
        }
        if let Err(e) = template.render(sample.clone())
            && is_template_fault(e.kind())
        {
            return Err(template_error(index, &e));
        }
    }
    Ok(())
}

/// A value of `kind` for the trial render.
fn sample_of(kind: VariableType) -> serde_json::Value {
    match kind {
        VariableType::String => serde_json::Value::String(String::new()),
        VariableType::Number | VariableType::Integer => serde_json::Value::from(1),
        VariableType::Boolean => serde_json::Value::Bool(false),
        VariableType::Array => serde_json::Value::Array(Vec::new()),
        VariableType::Object => serde_json::Value::Object(Map::new()),
        VariableType::Any => serde_json::Value::Null,
    }
}

/// Failures that come from the template whatever the values.
fn is_template_fault(kind: ErrorKind) -> bool {
    matches!(
        kind,
        ErrorKind::SyntaxError
            | ErrorKind::TemplateNotFound
            | ErrorKind::BadInclude
            | ErrorKind::UnknownFilter
            | ErrorKind::UnknownTest
            | ErrorKind::UnknownFunction
            | ErrorKind::UnknownBlock
    )
}

fn template_name(index: usize) -> String {
    format!("messages[{index}]")
}

fn template_error(index: usize, e: &Error) -> ContentError {
    ContentError::Template {
        index,
        line: e.line(),
        detail: describe(e),
    }
}

/// The kind and detail of a minijinja error, without the template name and line it appends
/// (the caller's message says which message and line).
fn describe(e: &Error) -> String {
    match e.detail() {
        Some(detail) => format!("{}: {detail}", e.kind()),
        None => e.kind().to_string(),
    }
}

fn compile(parts: &ContentParts) -> Result<Environment<'static>, ContentError> {
    let mut env = Environment::new();
    let syntax = SyntaxConfig::builder()
        .trim_blocks(true)
        .lstrip_blocks(true)
        .build()
        .map_err(|e| template_error(0, &e))?;
    env.set_syntax(syntax);
    env.set_auto_escape_callback(|_| AutoEscape::None);
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
    env.add_filter("tojson", tojson);
    for (index, message) in parts.messages.iter().enumerate() {
        env.add_template_owned(template_name(index), message.content.clone())
            .map_err(|e| template_error(index, &e))?;
    }
    Ok(env)
}

/// `tojson` that writes the value as it is: minijinja's own escapes `<`, `>`, `&` and `'` for
/// HTML, which would change what the model reads. Compact, or indented with `indent=N`.
fn tojson(value: &Value, kwargs: Kwargs) -> Result<String, Error> {
    let indent: Option<usize> = kwargs.get("indent")?;
    kwargs.assert_all_used()?;
    let json = value_to_json(value)?;
    let written = match indent {
        None => serde_json::to_string(&json),
        Some(width) => {
            let spaces = " ".repeat(width);
            let formatter = serde_json::ser::PrettyFormatter::with_indent(spaces.as_bytes());
            let mut out = Vec::new();
            let mut serializer = serde_json::Serializer::with_formatter(&mut out, formatter);
            json.serialize(&mut serializer)
                .map(|()| String::from_utf8_lossy(&out).into_owned())
        }
    };
    written.map_err(|e| Error::new(ErrorKind::InvalidOperation, format!("tojson: {e}")))
}

fn value_to_json(value: &Value) -> Result<serde_json::Value, Error> {
    Ok(match value.kind() {
        ValueKind::Undefined | ValueKind::None => serde_json::Value::Null,
        ValueKind::Bool => serde_json::Value::Bool(value.is_true()),
        ValueKind::Number => match i64::try_from(value.clone()) {
            Ok(i) => serde_json::Value::from(i),
            Err(_) => serde_json::Number::from_f64(f64::try_from(value.clone())?)
                .map_or(serde_json::Value::Null, serde_json::Value::Number),
        },
        ValueKind::String => serde_json::Value::String(value.as_str().unwrap_or("").to_owned()),
        ValueKind::Map => {
            let mut map = Map::new();
            for key in value.try_iter()? {
                let item = value.get_item(&key)?;
                map.insert(key.to_string(), value_to_json(&item)?);
            }
            serde_json::Value::Object(map)
        }
        ValueKind::Seq | ValueKind::Iterable => serde_json::Value::Array(
            value
                .try_iter()?
                .map(|item| value_to_json(&item))
                .collect::<Result<_, _>>()?,
        ),
        _ => serde_json::Value::String(value.to_string()),
    })
}
