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
mod tests {
    use super::*;

    fn request(body: Value) -> ChatCompletionRequest {
        serde_json::from_value(body).unwrap()
    }

    fn wire(body: Value) -> Value {
        serde_json::to_value(translate(&request(body), 4096, false).unwrap()).unwrap()
    }

    fn refusal(body: Value) -> String {
        match translate(&request(body), 4096, false) {
            Err(ProviderError::Unsupported(msg)) => msg,
            other => panic!("expected Unsupported, got {other:?}"),
        }
    }

    #[test]
    fn system_and_developer_messages_become_one_system_prompt() {
        let sent = wire(json!({
            "model": "claude", "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "developer", "content": [{"type": "text", "text": "Answer in French."}]},
                {"role": "user", "content": "Hi"}
            ]
        }));
        assert_eq!(sent["system"], "Be brief.\n\nAnswer in French.");
        assert_eq!(sent["messages"], json!([{"role": "user", "content": "Hi"}]));
    }

    #[test]
    fn system_is_omitted_when_there_is_none() {
        let sent =
            wire(json!({"model": "claude", "messages": [{"role": "user", "content": "Hi"}]}));
        assert!(sent.get("system").is_none(), "{sent}");
        assert!(sent.get("stream").is_none(), "{sent}");
        assert!(sent.get("tools").is_none(), "{sent}");
    }

    #[test]
    fn max_tokens_comes_from_either_spelling_else_the_default() {
        let base = json!({"model": "claude", "messages": [{"role": "user", "content": "Hi"}]});
        assert_eq!(wire(base.clone())["max_tokens"], 4096);
        let mut old = base.clone();
        old["max_tokens"] = json!(100);
        assert_eq!(wire(old)["max_tokens"], 100);
        let mut both = base;
        both["max_tokens"] = json!(100);
        both["max_completion_tokens"] = json!(50);
        assert_eq!(wire(both)["max_tokens"], 50);
    }

    #[test]
    fn sampling_stop_user_and_stream_are_carried_over() {
        let req = request(json!({
            "model": "claude", "messages": [{"role": "user", "content": "Hi"}],
            "temperature": 0.5, "top_p": 0.9, "stop": "END", "user": "u-7",
            "seed": 3, "presence_penalty": 1.0, "logit_bias": {"1": 2}
        }));
        let sent = serde_json::to_value(translate(&req, 10, true).unwrap()).unwrap();
        assert_eq!(
            sent,
            json!({
                "model": "claude", "max_tokens": 10,
                "messages": [{"role": "user", "content": "Hi"}],
                "temperature": 0.5, "top_p": 0.9, "stop_sequences": ["END"],
                "metadata": {"user_id": "u-7"}, "stream": true
            })
        );
    }

    #[test]
    fn images_become_base64_or_url_sources() {
        let sent = wire(json!({
            "model": "claude", "messages": [{"role": "user", "content": [
                {"type": "text", "text": "Compare"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
                {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg", "detail": "low"}}
            ]}]
        }));
        assert_eq!(
            sent["messages"][0]["content"],
            json!([
                {"type": "text", "text": "Compare"},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}},
                {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}}
            ])
        );
    }

    #[test]
    fn assistant_tool_calls_become_tool_use_blocks_and_results_merge_into_one_user_turn() {
        let sent = wire(json!({
            "model": "claude", "messages": [
                {"role": "user", "content": "Weather in Paris and Rome?"},
                {"role": "assistant", "content": "Checking.", "tool_calls": [
                    {"id": "call_1", "type": "function", "function": {"name": "weather", "arguments": "{\"city\":\"Paris\"}"}},
                    {"id": "call_2", "type": "function", "function": {"name": "weather", "arguments": "{\"city\":\"Rome\"}"}}
                ]},
                {"role": "tool", "tool_call_id": "call_1", "content": "18C"},
                {"role": "tool", "tool_call_id": "call_2", "content": [{"type": "text", "text": "21C"}]},
                {"role": "user", "content": "Thanks"}
            ]
        }));
        assert_eq!(
            sent["messages"],
            json!([
                {"role": "user", "content": "Weather in Paris and Rome?"},
                {"role": "assistant", "content": [
                    {"type": "text", "text": "Checking."},
                    {"type": "tool_use", "id": "call_1", "name": "weather", "input": {"city": "Paris"}},
                    {"type": "tool_use", "id": "call_2", "name": "weather", "input": {"city": "Rome"}}
                ]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "call_1", "content": "18C"},
                    {"type": "tool_result", "tool_use_id": "call_2", "content": "21C"},
                    {"type": "text", "text": "Thanks"}
                ]}
            ])
        );
    }

    #[test]
    fn assistant_tool_call_without_text_has_only_tool_use_and_empty_arguments_are_an_object() {
        let sent = wire(json!({
            "model": "claude", "messages": [
                {"role": "user", "content": "Time?"},
                {"role": "assistant", "content": null, "tool_calls": [
                    {"id": "call_1", "type": "function", "function": {"name": "now", "arguments": ""}}
                ]},
                {"role": "tool", "tool_call_id": "call_1", "content": "noon"}
            ]
        }));
        assert_eq!(
            sent["messages"][1]["content"],
            json!([{"type": "tool_use", "id": "call_1", "name": "now", "input": {}}])
        );
    }

    #[test]
    fn consecutive_messages_of_one_role_are_merged() {
        let sent = wire(json!({
            "model": "claude", "messages": [
                {"role": "user", "content": "One"},
                {"role": "system", "content": "Be kind."},
                {"role": "user", "content": "Two"},
                {"role": "assistant", "content": "A"},
                {"role": "assistant", "content": "B"}
            ]
        }));
        assert_eq!(
            sent["messages"],
            json!([
                {"role": "user", "content": [{"type": "text", "text": "One"}, {"type": "text", "text": "Two"}]},
                {"role": "assistant", "content": [{"type": "text", "text": "A"}, {"type": "text", "text": "B"}]}
            ])
        );
    }

    #[test]
    fn unparseable_tool_arguments_are_refused_naming_the_message() {
        let msg = refusal(json!({
            "model": "claude", "messages": [
                {"role": "user", "content": "Hi"},
                {"role": "assistant", "tool_calls": [
                    {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{not json"}}
                ]}
            ]
        }));
        assert!(msg.contains("messages[1].tool_calls[0]"), "{msg}");
        let msg = refusal(json!({
            "model": "claude", "messages": [
                {"role": "assistant", "tool_calls": [
                    {"id": "c", "type": "function", "function": {"name": "f", "arguments": "[1]"}}
                ]}
            ]
        }));
        assert!(msg.contains("messages[0].tool_calls[0]"), "{msg}");
    }

    #[test]
    fn tools_get_input_schemas_with_an_empty_object_by_default() {
        let sent = wire(json!({
            "model": "claude", "messages": [{"role": "user", "content": "Hi"}],
            "tools": [
                {"type": "function", "function": {"name": "weather", "description": "Weather now",
                    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}},
                {"type": "function", "function": {"name": "now"}}
            ]
        }));
        assert_eq!(
            sent["tools"],
            json!([
                {"name": "weather", "description": "Weather now",
                 "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}},
                {"name": "now", "input_schema": {"type": "object", "properties": {}}}
            ])
        );
        assert!(sent.get("tool_choice").is_none(), "{sent}");
    }

    #[test]
    fn tool_choice_maps_to_anthropic_modes() {
        let with = |choice: Value, parallel: Option<bool>| {
            let mut body = json!({
                "model": "claude", "messages": [{"role": "user", "content": "Hi"}],
                "tools": [{"type": "function", "function": {"name": "f"}}]
            });
            if !choice.is_null() {
                body["tool_choice"] = choice;
            }
            if let Some(p) = parallel {
                body["parallel_tool_calls"] = json!(p);
            }
            wire(body)["tool_choice"].clone()
        };
        assert_eq!(with(json!("auto"), None), json!({"type": "auto"}));
        assert_eq!(with(json!("required"), None), json!({"type": "any"}));
        assert_eq!(with(json!("none"), None), json!({"type": "none"}));
        assert_eq!(
            with(json!({"type": "function", "function": {"name": "f"}}), None),
            json!({"type": "tool", "name": "f"})
        );
        assert_eq!(
            with(json!("required"), Some(false)),
            json!({"type": "any", "disable_parallel_tool_use": true})
        );
        assert_eq!(
            with(Value::Null, Some(false)),
            json!({"type": "auto", "disable_parallel_tool_use": true})
        );
        assert_eq!(with(Value::Null, Some(true)), Value::Null);
    }

    #[test]
    fn unsupported_features_are_refused_with_a_clear_message() {
        let base = json!({"model": "claude", "messages": [{"role": "user", "content": "Hi"}]});
        let with = |key: &str, value: Value| {
            let mut body = base.clone();
            body[key] = value;
            refusal(body)
        };
        assert!(with("n", json!(2)).contains("`n`"));
        assert!(with("response_format", json!({"type": "json_object"})).contains("json_object"));
        let schema = json!({"type": "json_schema", "json_schema": {"name": "a", "schema": {}}});
        assert!(with("response_format", schema).contains("json_schema"));
        assert!(with("logprobs", json!(true)).contains("logprobs"));
        assert!(with("temperature", json!(1.5)).contains("temperature"));
        for msg in [with("n", json!(2)), with("logprobs", json!(true))] {
            assert!(msg.contains("anthropic provider"), "{msg}");
        }

        let mut fine = base.clone();
        fine["n"] = json!(1);
        fine["response_format"] = json!({"type": "text"});
        fine["logprobs"] = json!(false);
        assert!(translate(&request(fine), 1, false).is_ok());
    }

    #[test]
    fn unknown_content_parts_are_refused_naming_the_part() {
        let msg = refusal(json!({
            "model": "claude", "messages": [{"role": "user", "content": [
                {"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}}
            ]}]
        }));
        assert!(msg.contains("messages[0].content[0]"), "{msg}");
        assert!(msg.contains("input_audio"), "{msg}");
    }
}
