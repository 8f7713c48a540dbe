//! OpenAI chat request → Anthropic Messages request: the request shapes Anthropic accepts and
//! the translation into them, refusing what Anthropic cannot honour.
//!
//! Must not contain HTTP or response handling.
//!
//! Dropped on purpose, since Anthropic has no equivalent and ignoring them changes no answer's
//! shape: `seed`, `presence_penalty`, `frequency_penalty`, `metadata` (Anthropic's `metadata`
//! holds only `user_id`), `stream_options` (read by the stream translator instead),
//! `top_logprobs` without `logprobs`, and any field the OpenAI types keep in `extra`
//! (`logit_bias`, `store`, `service_tier`, …).

use serde::Serialize;
use serde_json::{Map, Value, json};

use crate::openai::chat::{
    ChatCompletionRequest, ChatMessage, ContentPart, MessageContent, ResponseFormat, Role,
    ToolCall, ToolChoice, ToolChoiceMode,
};
use crate::providers::ProviderError;

/// The body of `POST /v1/messages`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(super) struct MessagesRequest {
    pub model: String,
    pub messages: Vec<Message>,
    pub max_tokens: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub system: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stop_sequences: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Metadata>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stream: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tools: Option<Vec<ToolDefinition>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_choice: Option<AnthropicToolChoice>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub(super) struct Metadata {
    pub user_id: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub(super) enum Speaker {
    User,
    Assistant,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub(super) struct Message {
    pub role: Speaker,
    pub content: Content,
}

/// A plain string, or typed blocks once a message needs more than text.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub(super) enum Content {
    Text(String),
    Blocks(Vec<Block>),
}

impl Content {
    fn into_blocks(self) -> Vec<Block> {
        match self {
            // Anthropic rejects empty text blocks.
            Content::Text(text) if text.is_empty() => Vec::new(),
            Content::Text(text) => vec![Block::Text { text }],
            Content::Blocks(blocks) => blocks,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(super) enum Block {
    Text {
        text: String,
    },
    Image {
        source: ImageSource,
    },
    ToolUse {
        id: String,
        name: String,
        input: Value,
    },
    ToolResult {
        tool_use_id: String,
        content: String,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(super) enum ImageSource {
    Base64 { media_type: String, data: String },
    Url { url: String },
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub(super) struct ToolDefinition {
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub input_schema: Value,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub(super) struct AnthropicToolChoice {
    #[serde(flatten)]
    pub mode: ChoiceMode,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disable_parallel_tool_use: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(super) enum ChoiceMode {
    Auto,
    Any,
    None,
    Tool { name: String },
}

fn unsupported(what: impl std::fmt::Display) -> ProviderError {
    ProviderError::Unsupported(format!("{what} is not supported by the anthropic provider"))
}

/// Translates `req` for Anthropic. `default_max_tokens` fills in the cap Anthropic requires
/// when the client set none.
pub(super) fn translate(
    req: &ChatCompletionRequest,
    default_max_tokens: u32,
    stream: bool,
) -> Result<MessagesRequest, ProviderError> {
    refuse_unsupported(req)?;

    let mut system = Vec::new();
    let mut messages: Vec<Message> = Vec::new();
    for (i, m) in req.messages.iter().enumerate() {
        let message = match m.role {
            Role::System | Role::Developer => {
                let text = m.content.as_ref().map(MessageContent::text);
                system.extend(text.filter(|t| !t.is_empty()));
                continue;
            }
            Role::User => Message {
                role: Speaker::User,
                content: user_content(m, i)?,
            },
            Role::Assistant => Message {
                role: Speaker::Assistant,
                content: assistant_content(m, i)?,
            },
            Role::Tool => Message {
                role: Speaker::User,
                content: Content::Blocks(vec![Block::ToolResult {
                    tool_use_id: m.tool_call_id.clone().unwrap_or_default(),
                    content: m
                        .content
                        .as_ref()
                        .map(MessageContent::text)
                        .unwrap_or_default(),
                }]),
            },
            Role::Function => {
                return Err(unsupported(format_args!(
                    "messages[{i}]: the deprecated `function` role (use `tool`)"
                )));
            }
        };
        push_alternating(&mut messages, message);
    }

    let tools = req
        .tools
        .as_ref()
        .filter(|t| !t.is_empty())
        .map(|tools| {
            tools
                .iter()
                .enumerate()
                .map(|(i, t)| {
                    if t.kind != "function" {
                        return Err(unsupported(format_args!(
                            "tools[{i}]: tool type `{}`",
                            t.kind
                        )));
                    }
                    Ok(ToolDefinition {
                        name: t.function.name.clone(),
                        description: t.function.description.clone(),
                        input_schema: t
                            .function
                            .parameters
                            .clone()
                            .unwrap_or_else(|| json!({"type": "object", "properties": {}})),
                    })
                })
                .collect::<Result<Vec<_>, _>>()
        })
        .transpose()?;

    Ok(MessagesRequest {
        model: req.model.clone(),
        messages,
        max_tokens: req.max_output_tokens().unwrap_or(default_max_tokens),
        system: (!system.is_empty()).then(|| system.join("\n\n")),
        temperature: req.temperature,
        top_p: req.top_p,
        stop_sequences: req
            .stop
            .as_ref()
            .map(|s| s.sequences())
            .filter(|s| !s.is_empty()),
        metadata: req.user.clone().map(|user_id| Metadata { user_id }),
        stream: stream.then_some(true),
        // Anthropic rejects `tool_choice` without tools; OpenAI's is moot without them.
        tool_choice: tools.as_ref().and_then(|_| tool_choice(req)),
        tools,
    })
}

fn refuse_unsupported(req: &ChatCompletionRequest) -> Result<(), ProviderError> {
    if let Some(n) = req.n.filter(|n| *n > 1) {
        return Err(unsupported(format_args!(
            "`n` = {n} (Anthropic returns one choice per request)"
        )));
    }
    match &req.response_format {
        Some(ResponseFormat::JsonObject) => {
            return Err(unsupported("`response_format` of type `json_object`"));
        }
        Some(ResponseFormat::JsonSchema { .. }) => {
            return Err(unsupported("`response_format` of type `json_schema`"));
        }
        Some(ResponseFormat::Text) | None => {}
    }
    if req.logprobs == Some(true) {
        return Err(unsupported("`logprobs`"));
    }
    // OpenAI allows up to 2; Anthropic answers 400 above 1. Saying so here is clearer than
    // relaying Anthropic's message, and costs no round trip.
    if let Some(t) = req.temperature.filter(|t| *t > 1.0) {
        return Err(unsupported(format_args!(
            "`temperature` = {t} (Anthropic accepts 0 to 1)"
        )));
    }
    Ok(())
}

/// Appends `message`, merging it into the last one when both have the same role: Anthropic
/// wants user and assistant turns to alternate.
fn push_alternating(messages: &mut Vec<Message>, message: Message) {
    match messages.last_mut() {
        Some(last) if last.role == message.role => {
            let previous = std::mem::replace(&mut last.content, Content::Blocks(Vec::new()));
            let mut blocks = previous.into_blocks();
            blocks.extend(message.content.into_blocks());
            last.content = Content::Blocks(blocks);
        }
        _ => messages.push(message),
    }
}

fn user_content(m: &ChatMessage, i: usize) -> Result<Content, ProviderError> {
    match &m.content {
        None => Ok(Content::Text(String::new())),
        Some(MessageContent::Text(text)) => Ok(Content::Text(text.clone())),
        Some(MessageContent::Parts(parts)) => parts
            .iter()
            .enumerate()
            .filter_map(|(j, part)| user_block(part, i, j).transpose())
            .collect::<Result<Vec<_>, _>>()
            .map(Content::Blocks),
    }
}

/// One user content part as a block; `None` for an empty text part, which Anthropic would
/// reject.
fn user_block(part: &ContentPart, i: usize, j: usize) -> Result<Option<Block>, ProviderError> {
    match part.kind.as_str() {
        "text" => Ok(part
            .text
            .clone()
            .filter(|t| !t.is_empty())
            .map(|text| Block::Text { text })),
        "image_url" => {
            let Some(image) = &part.image_url else {
                return Err(ProviderError::Unsupported(format!(
                    "messages[{i}].content[{j}] is an `image_url` part without `image_url`"
                )));
            };
            Ok(Some(Block::Image {
                source: image_source(&image.url),
            }))
        }
        other => Err(unsupported(format_args!(
            "messages[{i}].content[{j}]: content part type `{other}`"
        ))),
    }
}

/// `data:<media type>;base64,<data>` becomes an inline image; any other URL is fetched by
/// Anthropic.
fn image_source(url: &str) -> ImageSource {
    let inline = url.strip_prefix("data:").and_then(|rest| {
        let (header, data) = rest.split_once(',')?;
        let media_type = header.strip_suffix(";base64")?;
        Some(ImageSource::Base64 {
            media_type: media_type.to_owned(),
            data: data.to_owned(),
        })
    });
    inline.unwrap_or_else(|| ImageSource::Url {
        url: url.to_owned(),
    })
}

fn assistant_content(m: &ChatMessage, i: usize) -> Result<Content, ProviderError> {
    let text = m
        .content
        .as_ref()
        .map(MessageContent::text)
        .unwrap_or_default();
    let calls = m.tool_calls.as_deref().unwrap_or_default();
    if calls.is_empty() {
        return Ok(Content::Text(text));
    }
    let mut blocks = Content::Text(text).into_blocks();
    for (j, call) in calls.iter().enumerate() {
        blocks.push(tool_use(call, i, j)?);
    }
    Ok(Content::Blocks(blocks))
}

fn tool_use(call: &ToolCall, i: usize, j: usize) -> Result<Block, ProviderError> {
    let arguments = call.function.arguments.trim();
    // Models and clients send "" for a call without arguments; Anthropic wants an object.
    let input = if arguments.is_empty() {
        Value::Object(Map::new())
    } else {
        serde_json::from_str::<Value>(arguments).map_err(|e| {
            ProviderError::Unsupported(format!(
                "messages[{i}].tool_calls[{j}].function.arguments is not valid JSON: {e}"
            ))
        })?
    };
    if !input.is_object() {
        return Err(ProviderError::Unsupported(format!(
            "messages[{i}].tool_calls[{j}].function.arguments must be a JSON object for the \
             anthropic provider"
        )));
    }
    Ok(Block::ToolUse {
        id: call.id.clone(),
        name: call.function.name.clone(),
        input,
    })
}

fn tool_choice(req: &ChatCompletionRequest) -> Option<AnthropicToolChoice> {
    let mode = req.tool_choice.as_ref().map(|c| match c {
        ToolChoice::Mode(ToolChoiceMode::Auto) => ChoiceMode::Auto,
        ToolChoice::Mode(ToolChoiceMode::Required) => ChoiceMode::Any,
        ToolChoice::Mode(ToolChoiceMode::None) => ChoiceMode::None,
        ToolChoice::Named(named) => ChoiceMode::Tool {
            name: named.function.name.clone(),
        },
    });
    let serial = req.parallel_tool_calls == Some(false);
    match mode {
        // `none` takes no parallelism flag: no tool is called at all.
        Some(ChoiceMode::None) => Some(AnthropicToolChoice {
            mode: ChoiceMode::None,
            disable_parallel_tool_use: None,
        }),
        Some(mode) => Some(AnthropicToolChoice {
            mode,
            disable_parallel_tool_use: serial.then_some(true),
        }),
        None if serial => Some(AnthropicToolChoice {
            mode: ChoiceMode::Auto,
            disable_parallel_tool_use: Some(true),
        }),
        None => None,
    }
}

#[cfg(test)]
#[path = "request_tests.rs"]
mod tests;
