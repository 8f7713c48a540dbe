//! Anthropic message → OpenAI chat completion: the response shapes Anthropic sends (also read
//! by the stream translator, whose events carry the same blocks and usage), the stop-reason
//! and usage mappings, and the translation of a whole message.
//!
//! Must not contain HTTP or request handling.

use serde::Deserialize;
use serde_json::{Value, json};

use crate::openai::Extra;
use crate::openai::chat::{
    AssistantMessage, ChatChoice, ChatCompletion, FunctionCall, ToolCall, Usage,
};

/// The body of a successful non-streaming `POST /v1/messages`.
#[derive(Debug, Clone, Deserialize)]
pub(super) struct MessageResponse {
    pub id: String,
    pub model: String,
    #[serde(default)]
    pub content: Vec<ResponseBlock>,
    #[serde(default)]
    pub stop_reason: Option<String>,
    #[serde(default)]
    pub usage: AnthropicUsage,
}

/// A content block the model produced. Blocks this translation has no OpenAI place for
/// (`thinking`, `redacted_thinking`, server tool blocks, …) are read and skipped.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(super) enum ResponseBlock {
    Text {
        #[serde(default)]
        text: String,
    },
    ToolUse {
        id: String,
        name: String,
        #[serde(default)]
        input: Value,
    },
    #[serde(other)]
    Other,
}

/// Anthropic's token counts. The cache counts are absent or null when caching was not used.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub(super) struct AnthropicUsage {
    #[serde(default)]
    pub input_tokens: Option<u64>,
    #[serde(default)]
    pub output_tokens: Option<u64>,
    #[serde(default)]
    pub cache_creation_input_tokens: Option<u64>,
    #[serde(default)]
    pub cache_read_input_tokens: Option<u64>,
}

impl AnthropicUsage {
    /// Takes every count `later` carries; a streamed `message_delta` reports final counts.
    pub fn update(&mut self, later: &AnthropicUsage) {
        let fields = [
            (&mut self.input_tokens, later.input_tokens),
            (&mut self.output_tokens, later.output_tokens),
            (
                &mut self.cache_creation_input_tokens,
                later.cache_creation_input_tokens,
            ),
            (
                &mut self.cache_read_input_tokens,
                later.cache_read_input_tokens,
            ),
        ];
        for (mine, theirs) in fields {
            if theirs.is_some() {
                *mine = theirs;
            }
        }
    }

    /// OpenAI counts every prompt token, cached or not, in `prompt_tokens`; Anthropic reports
    /// uncached input, cache writes and cache reads apart.
    pub fn to_openai(&self) -> Usage {
        let cached = self.cache_read_input_tokens.unwrap_or(0);
        let prompt =
            self.input_tokens.unwrap_or(0) + self.cache_creation_input_tokens.unwrap_or(0) + cached;
        let mut usage = Usage::new(prompt, self.output_tokens.unwrap_or(0));
        usage.extra.insert(
            "prompt_tokens_details".into(),
            json!({"cached_tokens": cached}),
        );
        usage
    }
}

/// OpenAI's `finish_reason` for Anthropic's `stop_reason`.
pub(super) fn finish_reason(stop_reason: &str) -> &'static str {
    match stop_reason {
        "max_tokens" | "model_context_window_exceeded" => "length",
        "tool_use" => "tool_calls",
        "refusal" => "content_filter",
        // end_turn, stop_sequence, pause_turn and reasons added after this was written.
        _ => "stop",
    }
}

/// The OpenAI chat completion for `message`, stamped with `created`.
pub(super) fn to_completion(message: MessageResponse, created: u64) -> ChatCompletion {
    let mut text = String::new();
    let mut tool_calls = Vec::new();
    for block in message.content {
        match block {
            ResponseBlock::Text { text: t } => text.push_str(&t),
            ResponseBlock::ToolUse { id, name, input } => tool_calls.push(ToolCall {
                id,
                kind: "function".into(),
                function: FunctionCall {
                    name,
                    arguments: input.to_string(),
                },
            }),
            ResponseBlock::Other => {}
        }
    }
    let content = (!text.is_empty() || tool_calls.is_empty()).then_some(text);
    ChatCompletion {
        id: message.id,
        object: "chat.completion".into(),
        created,
        model: message.model,
        choices: vec![ChatChoice {
            index: 0,
            message: AssistantMessage {
                role: "assistant".into(),
                content,
                tool_calls: (!tool_calls.is_empty()).then_some(tool_calls),
                extra: Extra::new(),
            },
            finish_reason: Some(
                finish_reason(message.stop_reason.as_deref().unwrap_or("end_turn")).into(),
            ),
            logprobs: None,
            extra: Extra::new(),
        }],
        usage: Some(message.usage.to_openai()),
        system_fingerprint: None,
        extra: Extra::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn translate(body: Value) -> Value {
        let message: MessageResponse = serde_json::from_value(body).unwrap();
        serde_json::to_value(to_completion(message, 1_700_000_000)).unwrap()
    }

    #[test]
    fn text_message_becomes_a_completion_with_usage() {
        let got = translate(json!({
            "id": "msg_01", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5",
            "content": [{"type": "text", "text": "Hello"}, {"type": "text", "text": " there"}],
            "stop_reason": "end_turn", "stop_sequence": null,
            "usage": {"input_tokens": 12, "output_tokens": 5,
                      "cache_creation_input_tokens": null, "cache_read_input_tokens": null}
        }));
        assert_eq!(
            got,
            json!({
                "id": "msg_01", "object": "chat.completion", "created": 1_700_000_000,
                "model": "claude-sonnet-4-5",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello there"},
                             "finish_reason": "stop", "logprobs": null}],
                "usage": {"prompt_tokens": 12, "completion_tokens": 5, "total_tokens": 17,
                          "prompt_tokens_details": {"cached_tokens": 0}}
            })
        );
    }

    #[test]
    fn tool_use_blocks_become_tool_calls_with_json_arguments_and_null_content() {
        let got = translate(json!({
            "id": "msg_02", "type": "message", "role": "assistant", "model": "claude",
            "content": [
                {"type": "thinking", "thinking": "hmm", "signature": "sig"},
                {"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {"city": "Paris"}}
            ],
            "stop_reason": "tool_use",
            "usage": {"input_tokens": 1, "output_tokens": 2}
        }));
        let choice = &got["choices"][0];
        assert_eq!(choice["finish_reason"], "tool_calls");
        assert_eq!(choice["message"]["content"], Value::Null);
        assert_eq!(
            choice["message"]["tool_calls"],
            json!([{"id": "toolu_1", "type": "function",
                    "function": {"name": "weather", "arguments": "{\"city\":\"Paris\"}"}}])
        );
    }

    #[test]
    fn stop_reasons_map_to_finish_reasons() {
        assert_eq!(finish_reason("end_turn"), "stop");
        assert_eq!(finish_reason("stop_sequence"), "stop");
        assert_eq!(finish_reason("max_tokens"), "length");
        assert_eq!(finish_reason("tool_use"), "tool_calls");
        assert_eq!(finish_reason("refusal"), "content_filter");
    }

    #[test]
    fn cache_reads_and_writes_count_as_prompt_tokens() {
        let got = translate(json!({
            "id": "msg_03", "type": "message", "role": "assistant", "model": "claude",
            "content": [{"type": "text", "text": "ok"}], "stop_reason": "max_tokens",
            "usage": {"input_tokens": 10, "output_tokens": 4,
                      "cache_creation_input_tokens": 100, "cache_read_input_tokens": 1000}
        }));
        assert_eq!(got["choices"][0]["finish_reason"], "length");
        assert_eq!(
            got["usage"],
            json!({"prompt_tokens": 1110, "completion_tokens": 4, "total_tokens": 1114,
                   "prompt_tokens_details": {"cached_tokens": 1000}})
        );
    }

    #[test]
    fn later_usage_overrides_only_the_counts_it_carries() {
        let mut usage = AnthropicUsage {
            input_tokens: Some(20),
            output_tokens: Some(1),
            ..AnthropicUsage::default()
        };
        usage.update(&AnthropicUsage {
            output_tokens: Some(30),
            ..AnthropicUsage::default()
        });
        assert_eq!(usage.to_openai().total_tokens, 50);
    }
}
