//! Anthropic's streamed events → OpenAI chat completion chunks: the event shapes, a translator
//! that turns one event into at most one chunk, and the stream that drives it over an
//! upstream's `data:` payloads. A stream that breaks, or ends before `message_stop`, ends with
//! an error so that no client mistakes it for a finished answer.
//!
//! Must not contain HTTP or request handling.

use std::collections::HashMap;

use futures::{Stream, StreamExt};
use serde::Deserialize;

use super::response::{AnthropicUsage, ResponseBlock, finish_reason};
use crate::openai::Extra;
use crate::openai::chat::{
    ChatCompletionChunk, ChunkChoice, ChunkDelta, FunctionCallDelta, ToolCallDelta,
};
use crate::providers::ProviderError;

/// One event's `data:`. Its `type` repeats the `event:` name, so the name is not needed.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(super) enum StreamEvent {
    MessageStart {
        message: StartedMessage,
    },
    ContentBlockStart {
        index: u32,
        content_block: ResponseBlock,
    },
    ContentBlockDelta {
        index: u32,
        delta: BlockDelta,
    },
    ContentBlockStop {},
    MessageDelta {
        delta: MessageDeltaBody,
        #[serde(default)]
        usage: Option<AnthropicUsage>,
    },
    MessageStop {},
    Ping {},
    Error {
        error: StreamErrorBody,
    },
    /// Anthropic may add event types; their documentation asks clients to skip unknown ones.
    #[serde(other)]
    Unknown,
}

#[derive(Debug, Clone, Deserialize)]
pub(super) struct StartedMessage {
    pub id: String,
    pub model: String,
    #[serde(default)]
    pub usage: AnthropicUsage,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(super) enum BlockDelta {
    TextDelta {
        text: String,
    },
    InputJsonDelta {
        partial_json: String,
    },
    /// `thinking_delta`, `signature_delta`, `citations_delta`: nothing OpenAI has a place for.
    #[serde(other)]
    Other,
}

#[derive(Debug, Clone, Deserialize)]
pub(super) struct MessageDeltaBody {
    #[serde(default)]
    pub stop_reason: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub(super) struct StreamErrorBody {
    #[serde(default)]
    pub message: Option<String>,
    #[serde(rename = "type", default)]
    pub kind: Option<String>,
}

/// What one event asks of the stream.
#[derive(Debug)]
pub(super) enum Step {
    Emit(ChatCompletionChunk),
    Skip,
    /// The answer is complete: emit this last chunk, if any, then end.
    Finish(Option<ChatCompletionChunk>),
}

/// The identity every chunk of one answer shares, known from `message_start`.
#[derive(Debug)]
struct Started {
    id: String,
    model: String,
}

/// Turns Anthropic events into OpenAI chunks, one event at a time.
#[derive(Debug)]
pub(super) struct Translator {
    include_usage: bool,
    created: u64,
    started: Option<Started>,
    usage: AnthropicUsage,
    /// Content-block index → OpenAI tool-call index, which counts tool calls only.
    tool_calls: HashMap<u32, u32>,
}

impl Translator {
    pub fn new(include_usage: bool, created: u64) -> Self {
        Translator {
            include_usage,
            created,
            started: None,
            usage: AnthropicUsage::default(),
            tool_calls: HashMap::new(),
        }
    }

    pub fn step(&mut self, event: StreamEvent) -> Result<Step, ProviderError> {
        match event {
            StreamEvent::MessageStart { message } => self.start(message),
            StreamEvent::Ping {} | StreamEvent::Unknown => Ok(Step::Skip),
            StreamEvent::Error { error } => Err(ProviderError::StreamBroken(
                error
                    .message
                    .or(error.kind)
                    .unwrap_or_else(|| "upstream reported an error".into()),
            )),
            _ if self.started.is_none() => Err(ProviderError::Protocol(
                "upstream stream did not begin with message_start".into(),
            )),
            StreamEvent::ContentBlockStart {
                index,
                content_block,
            } => Ok(self.block_start(index, content_block)),
            StreamEvent::ContentBlockDelta { index, delta } => self.block_delta(index, delta),
            StreamEvent::ContentBlockStop {} => Ok(Step::Skip),
            StreamEvent::MessageDelta { delta, usage } => {
                if let Some(usage) = usage {
                    self.usage.update(&usage);
                }
                Ok(match delta.stop_reason {
                    Some(reason) => Step::Emit(
                        self.chunk(ChunkDelta::default(), Some(finish_reason(&reason).into())),
                    ),
                    None => Step::Skip,
                })
            }
            StreamEvent::MessageStop {} => Ok(Step::Finish(self.include_usage.then(|| {
                let mut chunk = self.chunk(ChunkDelta::default(), None);
                chunk.choices.clear();
                chunk.usage = Some(self.usage.to_openai());
                chunk
            }))),
        }
    }

    fn start(&mut self, message: StartedMessage) -> Result<Step, ProviderError> {
        if self.started.is_some() {
            return Err(ProviderError::Protocol(
                "upstream sent a second message_start".into(),
            ));
        }
        self.usage = message.usage;
        self.started = Some(Started {
            id: message.id,
            model: message.model,
        });
        Ok(Step::Emit(self.chunk(
            ChunkDelta {
                role: Some("assistant".into()),
                content: Some(String::new()),
                ..ChunkDelta::default()
            },
            None,
        )))
    }

    fn block_start(&mut self, index: u32, block: ResponseBlock) -> Step {
        match block {
            ResponseBlock::Text { text } if !text.is_empty() => Step::Emit(self.text(text)),
            ResponseBlock::ToolUse { id, name, .. } => {
                // Saturating: four billion tool calls in one answer cannot happen.
                let k = u32::try_from(self.tool_calls.len()).unwrap_or(u32::MAX);
                self.tool_calls.insert(index, k);
                Step::Emit(self.tool_call(ToolCallDelta {
                    index: k,
                    id: Some(id),
                    kind: Some("function".into()),
                    function: Some(FunctionCallDelta {
                        name: Some(name),
                        arguments: Some(String::new()),
                    }),
                }))
            }
            ResponseBlock::Text { .. } | ResponseBlock::Other => Step::Skip,
        }
    }

    fn block_delta(&self, index: u32, delta: BlockDelta) -> Result<Step, ProviderError> {
        Ok(match delta {
            BlockDelta::TextDelta { text } if !text.is_empty() => Step::Emit(self.text(text)),
            BlockDelta::InputJsonDelta { partial_json } if !partial_json.is_empty() => {
                let Some(&k) = self.tool_calls.get(&index) else {
                    return Err(ProviderError::Protocol(format!(
                        "upstream sent input_json_delta for block {index}, which is not a tool_use"
                    )));
                };
                Step::Emit(self.tool_call(ToolCallDelta {
                    index: k,
                    function: Some(FunctionCallDelta {
                        name: None,
                        arguments: Some(partial_json),
                    }),
                    ..ToolCallDelta::default()
                }))
            }
            _ => Step::Skip,
        })
    }

    fn text(&self, text: String) -> ChatCompletionChunk {
        self.chunk(
            ChunkDelta {
                content: Some(text),
                ..ChunkDelta::default()
            },
            None,
        )
    }

    fn tool_call(&self, call: ToolCallDelta) -> ChatCompletionChunk {
        self.chunk(
            ChunkDelta {
                tool_calls: Some(vec![call]),
                ..ChunkDelta::default()
            },
            None,
        )
    }

    fn chunk(&self, delta: ChunkDelta, finish_reason: Option<String>) -> ChatCompletionChunk {
        let (id, model) = self
            .started
            .as_ref()
            .map(|s| (s.id.clone(), s.model.clone()))
            .unwrap_or_default();
        ChatCompletionChunk {
            id,
            object: "chat.completion.chunk".into(),
            created: self.created,
            model,
            choices: vec![ChunkChoice {
                index: 0,
                delta,
                finish_reason,
                logprobs: None,
                extra: Extra::new(),
            }],
            usage: None,
            system_fingerprint: None,
            extra: Extra::new(),
        }
    }
}

/// OpenAI chunks from the `data:` payloads of an Anthropic stream.
pub(super) fn chunks<S>(
    data: S,
    translator: Translator,
) -> impl Stream<Item = Result<ChatCompletionChunk, ProviderError>> + Send
where
    S: Stream<Item = Result<String, ProviderError>> + Send + 'static,
{
    let data = Box::pin(data);
    futures::stream::unfold(Some((data, translator)), |state| async move {
        let (mut data, mut translator) = state?;
        loop {
            let payload = match data.next().await {
                None => {
                    let err = ProviderError::StreamBroken(
                        "upstream stream ended before message_stop".into(),
                    );
                    return Some((Err(err), None));
                }
                Some(Err(e)) => return Some((Err(e), None)),
                Some(Ok(payload)) => payload,
            };
            if payload.trim().is_empty() {
                continue;
            }
            let step = serde_json::from_str::<StreamEvent>(&payload)
                .map_err(|e| ProviderError::Protocol(format!("unexpected stream event: {e}")))
                .and_then(|event| translator.step(event));
            match step {
                Err(e) => return Some((Err(e), None)),
                Ok(Step::Skip) => {}
                Ok(Step::Emit(chunk)) => return Some((Ok(chunk), Some((data, translator)))),
                Ok(Step::Finish(Some(chunk))) => return Some((Ok(chunk), None)),
                Ok(Step::Finish(None)) => return None,
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    const CREATED: u64 = 1_700_000_000;

    fn message_start() -> Value {
        json!({"type": "message_start", "message": {
            "id": "msg_01", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5",
            "content": [], "stop_reason": null, "stop_sequence": null,
            "usage": {"input_tokens": 25, "output_tokens": 1,
                      "cache_creation_input_tokens": 0, "cache_read_input_tokens": 5}
        }})
    }

    fn text_events(pieces: &[&str]) -> Vec<Value> {
        let mut events = vec![
            message_start(),
            json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
            json!({"type": "ping"}),
        ];
        events.extend(pieces.iter().map(|p| {
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": p}})
        }));
        events.push(json!({"type": "content_block_stop", "index": 0}));
        events.push(json!({"type": "message_delta",
            "delta": {"stop_reason": "end_turn", "stop_sequence": null},
            "usage": {"output_tokens": 15}}));
        events.push(json!({"type": "message_stop"}));
        events
    }

    /// Every item the stream yields, as JSON for chunks and as the error for a failure.
    async fn run(events: Vec<Value>, include_usage: bool) -> Vec<Result<Value, ProviderError>> {
        let data = futures::stream::iter(events.into_iter().map(|e| Ok(e.to_string())));
        chunks(data, Translator::new(include_usage, CREATED))
            .map(|item| item.map(|c| serde_json::to_value(c).unwrap()))
            .collect()
            .await
    }

    fn ok(items: Vec<Result<Value, ProviderError>>) -> Vec<Value> {
        items.into_iter().map(|i| i.unwrap()).collect()
    }

    #[tokio::test]
    async fn text_stream_becomes_role_content_and_finish_chunks() {
        let chunks = ok(run(text_events(&["Hel", "lo"]), false).await);
        let deltas: Vec<Value> = chunks
            .iter()
            .map(|c| c["choices"][0]["delta"].clone())
            .collect();
        assert_eq!(
            deltas,
            vec![
                json!({"role": "assistant", "content": ""}),
                json!({"content": "Hel"}),
                json!({"content": "lo"}),
                json!({}),
            ]
        );
        assert_eq!(chunks[3]["choices"][0]["finish_reason"], "stop");
        for c in &chunks {
            assert_eq!(c["id"], "msg_01");
            assert_eq!(c["model"], "claude-sonnet-4-5");
            assert_eq!(c["created"], CREATED);
            assert_eq!(c["object"], "chat.completion.chunk");
            assert!(c.get("usage").is_none(), "no usage unless asked: {c}");
        }
    }

    #[tokio::test]
    async fn usage_chunk_comes_last_and_only_when_asked() {
        let chunks = ok(run(text_events(&["Hi"]), true).await);
        let last = chunks.last().unwrap();
        assert_eq!(last["choices"], json!([]));
        assert_eq!(
            last["usage"],
            json!({"prompt_tokens": 30, "completion_tokens": 15, "total_tokens": 45,
                   "prompt_tokens_details": {"cached_tokens": 5}})
        );
        assert_eq!(chunks.len(), 4);
    }

    #[tokio::test]
    async fn tool_use_with_split_json_becomes_indexed_tool_call_deltas() {
        let events = vec![
            message_start(),
            json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Let me check."}}),
            json!({"type": "content_block_stop", "index": 0}),
            json!({"type": "content_block_start", "index": 1, "content_block": {"type": "tool_use", "id": "toolu_a", "name": "weather", "input": {}}}),
            json!({"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": ""}}),
            json!({"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": "{\"city\": \"Pa"}}),
            json!({"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": "ris\"}"}}),
            json!({"type": "content_block_stop", "index": 1}),
            json!({"type": "content_block_start", "index": 2, "content_block": {"type": "tool_use", "id": "toolu_b", "name": "time", "input": {}}}),
            json!({"type": "content_block_delta", "index": 2, "delta": {"type": "input_json_delta", "partial_json": "{}"}}),
            json!({"type": "content_block_stop", "index": 2}),
            json!({"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": null}, "usage": {"output_tokens": 40}}),
            json!({"type": "message_stop"}),
        ];
        let chunks = ok(run(events, false).await);
        let calls: Vec<Value> = chunks
            .iter()
            .filter_map(|c| c["choices"][0]["delta"].get("tool_calls").cloned())
            .collect();
        assert_eq!(
            calls,
            vec![
                json!([{"index": 0, "id": "toolu_a", "type": "function", "function": {"name": "weather", "arguments": ""}}]),
                json!([{"index": 0, "function": {"arguments": "{\"city\": \"Pa"}}]),
                json!([{"index": 0, "function": {"arguments": "ris\"}"}}]),
                json!([{"index": 1, "id": "toolu_b", "type": "function", "function": {"name": "time", "arguments": ""}}]),
                json!([{"index": 1, "function": {"arguments": "{}"}}]),
            ]
        );
        let last = chunks.last().unwrap();
        assert_eq!(last["choices"][0]["finish_reason"], "tool_calls");
    }

    #[tokio::test]
    async fn thinking_deltas_are_skipped() {
        let mut events = vec![
            message_start(),
            json!({"type": "content_block_start", "index": 0, "content_block": {"type": "thinking", "thinking": ""}}),
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": "Hmm"}}),
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "signature_delta", "signature": "abc"}}),
            json!({"type": "content_block_stop", "index": 0}),
            json!({"type": "some_future_event", "payload": 1}),
        ];
        events.extend(text_events(&["Yes"]).into_iter().skip(1));
        let chunks = ok(run(events, false).await);
        let text: String = chunks
            .iter()
            .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
            .collect();
        assert_eq!(text, "Yes");
    }

    #[tokio::test]
    async fn error_event_ends_the_stream_with_stream_broken() {
        let mut events = text_events(&["Hel"]);
        events.truncate(4);
        events.push(json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}));
        events.push(json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "never"}}));
        let items = run(events, false).await;
        assert_eq!(items.len(), 3, "{items:?}");
        match items.last() {
            Some(Err(ProviderError::StreamBroken(msg))) => assert_eq!(msg, "Overloaded"),
            other => panic!("expected StreamBroken, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn stream_ending_before_message_stop_is_broken_not_finished() {
        let mut events = text_events(&["Hel", "lo"]);
        events.pop();
        let items = run(events, true).await;
        match items.last() {
            Some(Err(ProviderError::StreamBroken(msg))) => {
                assert!(msg.contains("message_stop"), "{msg}");
            }
            other => panic!("expected StreamBroken, got {other:?}"),
        }
        assert!(items.iter().rev().skip(1).all(Result::is_ok));
    }

    #[tokio::test]
    async fn content_before_message_start_or_bad_json_is_a_protocol_error() {
        let items = run(
            vec![json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "x"}})],
            false,
        )
        .await;
        assert!(
            matches!(items.as_slice(), [Err(ProviderError::Protocol(_))]),
            "{items:?}"
        );

        let data = futures::stream::iter([Ok("{not json".to_owned())]);
        let items: Vec<_> = chunks(data, Translator::new(false, CREATED))
            .collect()
            .await;
        assert!(
            matches!(items.as_slice(), [Err(ProviderError::Protocol(_))]),
            "{items:?}"
        );
    }
}
