//! Chat templates: the Jinja template a model ships (GGUF `tokenizer.chat_template`, or
//! `chat_template` in `tokenizer_config.json`) rendered with minijinja the way Hugging Face
//! transformers renders it (`trim_blocks`, `lstrip_blocks`, `raise_exception`, a Python-style
//! `tojson`, `strftime_now`, Python string and dict methods), and a ChatML fallback for models
//! without one.
//!
//! Must not contain tokenization or OpenAI request types: callers flatten content parts to text
//! and hand over plain [`TemplateMessage`]s.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::path::Path;

use candle_core::quantized::gguf_file;
use minijinja::value::{Kwargs, Serde, ValueKind};
use minijinja::{AutoEscape, Environment, Error, ErrorKind, Value, syntax::SyntaxConfig};

use super::EngineError;

const TEMPLATE_NAME: &str = "chat_template";

/// ChatML, for models that ship no template: what SmolLM, Qwen and many fine-tunes use.
pub const CHATML_TEMPLATE: &str = "{% for message in messages %}\
{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}\
{% endfor %}\
{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

/// One message as a chat template sees it. `extra` carries what some templates read besides
/// role and content (`tool_calls`, `tool_call_id`, `name`); absent keys stay undefined, so a
/// template's `is defined` tests work as with transformers.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TemplateMessage {
    pub role: String,
    pub content: String,
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

impl TemplateMessage {
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        TemplateMessage {
            role: role.into(),
            content: content.into(),
            extra: serde_json::Map::new(),
        }
    }

    fn to_value(&self) -> Value {
        let mut map: BTreeMap<String, Value> = self
            .extra
            .iter()
            .map(|(key, value)| (key.clone(), Value::from(Serde(value))))
            .collect();
        map.insert("role".into(), Value::from(self.role.as_str()));
        map.insert("content".into(), Value::from(self.content.as_str()));
        Value::from(map)
    }
}

/// The special-token texts a template may print (`{{ bos_token }}`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SpecialTokens {
    pub bos: Option<String>,
    pub eos: Option<String>,
}

/// A compiled chat template.
#[derive(Debug)]
pub struct ChatTemplate {
    env: Environment<'static>,
    tokens: SpecialTokens,
}

/// The error `raise_exception` raises: the template refuses the conversation, and its message
/// is for the client.
#[derive(Debug)]
struct RaisedByTemplate(String);

impl std::fmt::Display for RaisedByTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for RaisedByTemplate {}

impl ChatTemplate {
    /// Compile `source`. A syntax error is an [`EngineError::Template`] saying where.
    pub fn new(source: impl Into<String>, tokens: SpecialTokens) -> Result<Self, EngineError> {
        let mut env = Environment::new();
        let syntax = SyntaxConfig::builder()
            .trim_blocks(true)
            .lstrip_blocks(true)
            .build()
            .map_err(|e| EngineError::Template(describe(&e)))?;
        env.set_syntax(syntax);
        // transformers renders without escaping; Jinja2 drops the template's one trailing
        // newline, as minijinja does by default.
        env.set_auto_escape_callback(|_| AutoEscape::None);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", raise_exception);
        env.add_function("strftime_now", strftime_now);
        env.add_filter("tojson", tojson);
        env.add_template_owned(TEMPLATE_NAME, source.into())
            .map_err(|e| EngineError::Template(describe(&e)))?;
        Ok(ChatTemplate { env, tokens })
    }

    /// The ChatML fallback for a model without a template.
    pub fn chatml(tokens: SpecialTokens) -> Result<Self, EngineError> {
        Self::new(CHATML_TEMPLATE, tokens)
    }

    /// The template for the GGUF model at `path`: a `tokenizer_config.json` beside the file wins
    /// when it has one, else the metadata's; `None` when neither has (see [`ChatTemplate::chatml`]).
    pub fn for_gguf(
        metadata: &HashMap<String, gguf_file::Value>,
        path: &Path,
        tokens: SpecialTokens,
    ) -> Result<Option<Self>, EngineError> {
        let sibling = path.with_file_name("tokenizer_config.json");
        if sibling.is_file()
            && let Some(template) = Self::from_tokenizer_config(&sibling)?
        {
            return Ok(Some(template));
        }
        Self::from_gguf(metadata, path, tokens)
    }

    /// The template in a GGUF file's metadata, if it has one.
    pub fn from_gguf(
        metadata: &HashMap<String, gguf_file::Value>,
        path: &Path,
        tokens: SpecialTokens,
    ) -> Result<Option<Self>, EngineError> {
        match metadata.get("tokenizer.chat_template") {
            None => Ok(None),
            Some(gguf_file::Value::String(source)) => Self::new(source.clone(), tokens)
                .map(Some)
                .map_err(|e| EngineError::load(path, e)),
            Some(other) => Err(EngineError::load(
                path,
                format!(
                    "tokenizer.chat_template should be a string, not {:?}",
                    other.value_type()
                ),
            )),
        }
    }

    /// The template in a `tokenizer_config.json` (`chat_template` as a string, or the one named
    /// `default` in a list of named templates), with its `bos_token` and `eos_token`.
    pub fn from_tokenizer_config(path: &Path) -> Result<Option<Self>, EngineError> {
        let bytes = std::fs::read(path).map_err(|e| EngineError::load(path, e))?;
        let config: serde_json::Value =
            serde_json::from_slice(&bytes).map_err(|e| EngineError::load(path, e))?;
        let token = |key: &str| {
            config.get(key).and_then(|v| {
                v.as_str()
                    .or_else(|| v.get("content").and_then(|c| c.as_str()))
                    .map(str::to_owned)
            })
        };
        let tokens = SpecialTokens {
            bos: token("bos_token"),
            eos: token("eos_token"),
        };
        let source = match config.get("chat_template") {
            None | Some(serde_json::Value::Null) => return Ok(None),
            Some(serde_json::Value::String(source)) => source.clone(),
            Some(serde_json::Value::Array(named)) => {
                let default = named
                    .iter()
                    .find(|t| t.get("name").and_then(|n| n.as_str()) == Some("default"));
                match default
                    .and_then(|t| t.get("template"))
                    .and_then(|t| t.as_str())
                {
                    Some(source) => source.to_owned(),
                    None => {
                        return Err(EngineError::load(
                            path,
                            "chat_template lists named templates but none named `default`",
                        ));
                    }
                }
            }
            Some(_) => {
                return Err(EngineError::load(
                    path,
                    "chat_template should be a string or a list of named templates",
                ));
            }
        };
        Self::new(source, tokens)
            .map(Some)
            .map_err(|e| EngineError::load(path, e))
    }

    /// The prompt text for `messages`. With `add_generation_prompt` it ends where the
    /// assistant's reply begins. `tools` (the OpenAI `tools` array) is passed as `tools`, and
    /// `none` when absent, as transformers does.
    ///
    /// A template that refuses the conversation through `raise_exception` gives
    /// [`EngineError::InvalidRequest`] with the template's own message.
    pub fn render(
        &self,
        messages: &[TemplateMessage],
        add_generation_prompt: bool,
        tools: Option<&serde_json::Value>,
    ) -> Result<String, EngineError> {
        let mut context: BTreeMap<&str, Value> = BTreeMap::new();
        let messages: Vec<Value> = messages.iter().map(TemplateMessage::to_value).collect();
        context.insert("messages", Value::from(messages));
        context.insert("add_generation_prompt", Value::from(add_generation_prompt));
        context.insert(
            "tools",
            tools.map_or(Value::from(()), |t| Value::from(Serde(t))),
        );
        context.insert("documents", Value::from(()));
        if let Some(bos) = &self.tokens.bos {
            context.insert("bos_token", Value::from(bos.as_str()));
        }
        if let Some(eos) = &self.tokens.eos {
            context.insert("eos_token", Value::from(eos.as_str()));
        }
        let template = self
            .env
            .get_template(TEMPLATE_NAME)
            .map_err(|e| EngineError::Template(describe(&e)))?;
        template.render(context).map_err(|e| {
            let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(&e);
            while let Some(err) = cause {
                if let Some(raised) = err.downcast_ref::<RaisedByTemplate>() {
                    return EngineError::InvalidRequest(raised.0.clone());
                }
                cause = err.source();
            }
            EngineError::Template(describe(&e))
        })
    }
}

/// minijinja's message with its cause chain, which holds the position in the template.
fn describe(e: &Error) -> String {
    let mut text = e.to_string();
    let mut cause = std::error::Error::source(e);
    while let Some(err) = cause {
        let _ = write!(text, ": {err}");
        cause = err.source();
    }
    text
}

fn raise_exception(message: String) -> Result<Value, Error> {
    Err(Error::new(ErrorKind::InvalidOperation, message.clone())
        .with_source(RaisedByTemplate(message)))
}

/// `strftime_now(format)`, as transformers provides it (Llama 3.1 prints today's date with it).
/// The current UTC time; supports %Y %y %m %d %e %B %b %A %a %H %I %M %S %p %j %%.
fn strftime_now(format: String) -> Result<String, Error> {
    let seconds = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    strftime(&format, seconds)
}

fn strftime(format: &str, unix_seconds: u64) -> Result<String, Error> {
    const MONTHS: [&str; 12] = [
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    ];
    const WEEKDAYS: [&str; 7] = [
        "Monday",
        "Tuesday",
        "Wednesday",
        "Thursday",
        "Friday",
        "Saturday",
        "Sunday",
    ];
    let days = unix_seconds / 86_400;
    let secs = unix_seconds % 86_400;
    let (hour, minute, second) = (secs / 3600, secs / 60 % 60, secs % 60);
    let (year, month, day) = civil_from_days(days);
    // 1970-01-01 was a Thursday (index 3 counting from Monday).
    let weekday = ((days + 3) % 7) as usize;
    let day_of_year = days - days_from_civil(year, 1, 1) + 1;
    let month_name = MONTHS[(month - 1) as usize];
    let hour12 = if hour % 12 == 0 { 12 } else { hour % 12 };

    let mut out = String::new();
    let mut chars = format.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let _ = match chars.next() {
            Some('Y') => write!(out, "{year}"),
            Some('y') => write!(out, "{:02}", year % 100),
            Some('m') => write!(out, "{month:02}"),
            Some('d') => write!(out, "{day:02}"),
            Some('e') => write!(out, "{day:2}"),
            Some('B') => write!(out, "{month_name}"),
            Some('b') => write!(out, "{}", &month_name[..3]),
            Some('A') => write!(out, "{}", WEEKDAYS[weekday]),
            Some('a') => write!(out, "{}", &WEEKDAYS[weekday][..3]),
            Some('H') => write!(out, "{hour:02}"),
            Some('I') => write!(out, "{hour12:02}"),
            Some('M') => write!(out, "{minute:02}"),
            Some('S') => write!(out, "{second:02}"),
            Some('p') => write!(out, "{}", if hour < 12 { "AM" } else { "PM" }),
            Some('j') => write!(out, "{day_of_year:03}"),
            Some('%') => write!(out, "%"),
            other => {
                return Err(Error::new(
                    ErrorKind::InvalidOperation,
                    format!(
                        "strftime_now: unsupported directive %{}",
                        other.unwrap_or(' ')
                    ),
                ));
            }
        };
    }
    Ok(out)
}

/// (year, month, day) of the day `days` after 1970-01-01, proleptic Gregorian (the
/// era-based algorithm: 400-year eras of 146097 days, years starting in March).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let day_of_era = z % 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153; // 0 = March
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    };
    let year = year_of_era + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

/// Days from 1970-01-01 to the given date (not before it).
fn days_from_civil(year: u64, month: u64, day: u64) -> u64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year / 400;
    let year_of_era = year % 400;
    let month_index = if month > 2 { month - 3 } else { month + 9 };
    let day_of_year = (153 * month_index + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    (era * 146_097 + day_of_era).saturating_sub(719_468)
}

/// `tojson` as transformers defines it: Python's `json.dumps` with `ensure_ascii=False`, so
/// `", "` and `": "` between items, no HTML escaping, and `indent`, `sort_keys` and
/// `ensure_ascii` as keyword arguments. minijinja's own `tojson` is compact and HTML-safe,
/// which would change the prompt.
fn tojson(value: &Value, kwargs: Kwargs) -> Result<String, Error> {
    let indent: Option<Value> = kwargs.get("indent")?;
    let indent = match indent {
        None => None,
        Some(v) if v.is_none() => None,
        Some(v) => match v.as_usize() {
            Some(n) => Some(" ".repeat(n)),
            None => v.as_str().map(str::to_owned),
        },
    };
    let options = JsonOptions {
        indent,
        sort_keys: kwargs.get::<Option<bool>>("sort_keys")?.unwrap_or(false),
        ensure_ascii: kwargs.get::<Option<bool>>("ensure_ascii")?.unwrap_or(false),
    };
    kwargs.assert_all_used()?;
    let mut out = String::new();
    write_json(&mut out, value, &options, 0)?;
    Ok(out)
}

struct JsonOptions {
    indent: Option<String>,
    sort_keys: bool,
    ensure_ascii: bool,
}

fn write_json(
    out: &mut String,
    value: &Value,
    options: &JsonOptions,
    depth: usize,
) -> Result<(), Error> {
    match value.kind() {
        ValueKind::Undefined => {
            return Err(Error::new(
                ErrorKind::InvalidOperation,
                "tojson: the value is undefined",
            ));
        }
        ValueKind::None => out.push_str("null"),
        ValueKind::Bool => out.push_str(if value.is_true() { "true" } else { "false" }),
        ValueKind::Number => write_number(out, value),
        ValueKind::String | ValueKind::Plain => {
            write_json_string(out, &value.to_string(), options.ensure_ascii)
        }
        ValueKind::Map => {
            let mut keys: Vec<Value> = value.try_iter()?.collect();
            if options.sort_keys {
                keys.sort();
            }
            write_container(out, options, depth, '{', '}', &keys, |out, key| {
                write_json_string(out, &key.to_string(), options.ensure_ascii);
                out.push_str(": ");
                write_json(out, &value.get_item(key)?, options, depth + 1)
            })?;
        }
        _ => {
            let items: Vec<Value> = value.try_iter()?.collect();
            write_container(out, options, depth, '[', ']', &items, |out, item| {
                write_json(out, item, options, depth + 1)
            })?;
        }
    }
    Ok(())
}

/// Python's layout: `[a, b]` on one line, or with `indent` one item a line and `[]` when empty.
fn write_container(
    out: &mut String,
    options: &JsonOptions,
    depth: usize,
    open: char,
    close: char,
    items: &[Value],
    mut write_item: impl FnMut(&mut String, &Value) -> Result<(), Error>,
) -> Result<(), Error> {
    out.push(open);
    if items.is_empty() {
        out.push(close);
        return Ok(());
    }
    for (i, item) in items.iter().enumerate() {
        match &options.indent {
            Some(indent) => {
                out.push_str(if i == 0 { "\n" } else { ",\n" });
                out.push_str(&indent.repeat(depth + 1));
            }
            None if i > 0 => out.push_str(", "),
            None => {}
        }
        write_item(out, item)?;
    }
    if let Some(indent) = &options.indent {
        out.push('\n');
        out.push_str(&indent.repeat(depth));
    }
    out.push(close);
    Ok(())
}

/// Integers as digits; floats as Python's `repr` writes them (`1.0`, `1e-05`, `1e+16`).
fn write_number(out: &mut String, value: &Value) {
    if value.is_integer() {
        // Value's Display of an integer is its digits.
        let _ = write!(out, "{value}");
        return;
    }
    let Ok(x) = f64::try_from(value.clone()) else {
        out.push_str(&value.to_string());
        return;
    };
    if x.is_nan() {
        out.push_str("NaN");
    } else if x.is_infinite() {
        out.push_str(if x > 0.0 { "Infinity" } else { "-Infinity" });
    } else {
        let debug = format!("{x:?}");
        match debug.split_once('e') {
            Some((mantissa, exponent)) => {
                let (sign, digits) = match exponent.strip_prefix('-') {
                    Some(digits) => ('-', digits),
                    None => ('+', exponent),
                };
                let mantissa = mantissa.strip_suffix(".0").unwrap_or(mantissa);
                let _ = write!(out, "{mantissa}e{sign}{digits:0>2}");
            }
            None => out.push_str(&debug),
        }
    }
}

/// A JSON string as Python writes it: the short escapes, `\u00XX` for other control
/// characters, and with `ensure_ascii` every non-ASCII character as `\uXXXX` (UTF-16).
fn write_json_string(out: &mut String, text: &str, ensure_ascii: bool) {
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if u32::from(c) < 0x20 || (ensure_ascii && !c.is_ascii()) => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    let _ = write!(out, "\\u{unit:04x}");
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
#[path = "template_tests.rs"]
mod tests;
