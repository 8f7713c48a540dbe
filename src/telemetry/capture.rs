//! The bodies of a request whose bodies the request log sampled: the request as the model saw
//! it, and the response, either as sent (JSON) or, for a stream, assembled from its chunks
//! into the shape the same request would have had without `stream` (a `chat.completion` or
//! `text_completion` object), so that both read alike later.
//!
//! Nothing here is redacted yet: that happens off the request path, in the log's writer.

use std::collections::BTreeMap;

use axum::body::Bytes;
use serde_json::{Value, json};

use crate::openai::chat::ChatCompletionChunk;
use crate::openai::completions::Completion;

/// A sampled request's bodies. Its `Debug` shows their sizes only: they are not redacted
/// yet, and a debug print of a record must not leak a pasted key into the logs.
#[derive(Clone, Default)]
pub struct Capture {
    /// The request body: what the client sent, or for a registry prompt the request after
    /// the prompt was rendered into it.
    pub request: Option<Bytes>,
    pub response: Captured,
}

impl std::fmt::Debug for Capture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let response = match &self.response {
            Captured::Nothing => "nothing",
            Captured::Json(_) => "json",
            Captured::ChatStream(_) => "chat stream",
            Captured::CompletionStream(_) => "completion stream",
        };
        f.debug_struct("Capture")
            .field("request_bytes", &self.request.as_ref().map(Bytes::len))
            .field("response", &response)
            .finish()
    }
}

/// A response, as far as it went.
#[derive(Clone, Default)]
pub enum Captured {
    #[default]
    Nothing,
    /// A complete JSON response.
    Json(Value),
    /// A chat stream's chunks, assembled.
    ChatStream(Assembled),
    /// A completions stream's chunks, assembled.
    CompletionStream(Assembled),
}

/// The choices of a stream so far, by index.
#[derive(Clone, Default)]
pub struct Assembled {
    model: String,
    choices: BTreeMap<u32, Choice>,
}

#[derive(Clone, Default)]
struct Choice {
    text: String,
    tool_calls: BTreeMap<u32, ToolCall>,
    finish_reason: Option<String>,
}

#[derive(Clone, Default)]
struct ToolCall {
    id: String,
    kind: String,
    name: String,
    arguments: String,
}

impl Capture {
    /// Adds a chat chunk's deltas to the assembled answer.
    pub fn chat_chunk(&mut self, chunk: &ChatCompletionChunk) {
        if !matches!(self.response, Captured::ChatStream(_)) {
            self.response = Captured::ChatStream(Assembled::default());
        }
        let Captured::ChatStream(a) = &mut self.response else {
            return;
        };
        a.note_model(&chunk.model);
        for c in &chunk.choices {
            let choice = a.choices.entry(c.index).or_default();
            if let Some(text) = &c.delta.content {
                choice.text.push_str(text);
            }
            for d in c.delta.tool_calls.iter().flatten() {
                let call = choice.tool_calls.entry(d.index).or_default();
                if let Some(id) = &d.id {
                    call.id.clone_from(id);
                }
                if let Some(kind) = &d.kind {
                    call.kind.clone_from(kind);
                }
                if let Some(f) = &d.function {
                    if let Some(name) = &f.name {
                        call.name.push_str(name);
                    }
                    if let Some(args) = &f.arguments {
                        call.arguments.push_str(args);
                    }
                }
            }
            if c.finish_reason.is_some() {
                choice.finish_reason.clone_from(&c.finish_reason);
            }
        }
    }

    /// Adds a completions chunk's text to the assembled answer.
    pub fn completion_chunk(&mut self, chunk: &Completion) {
        if !matches!(self.response, Captured::CompletionStream(_)) {
            self.response = Captured::CompletionStream(Assembled::default());
        }
        let Captured::CompletionStream(a) = &mut self.response else {
            return;
        };
        a.note_model(&chunk.model);
        for c in &chunk.choices {
            let choice = a.choices.entry(c.index).or_default();
            choice.text.push_str(&c.text);
            if c.finish_reason.is_some() {
                choice.finish_reason.clone_from(&c.finish_reason);
            }
        }
    }

    /// The response as JSON, if any of it arrived.
    pub fn response_json(&self) -> Option<Value> {
        match &self.response {
            Captured::Nothing => None,
            Captured::Json(v) => Some(v.clone()),
            Captured::ChatStream(a) => Some(a.chat_completion()),
            Captured::CompletionStream(a) => Some(a.text_completion()),
        }
    }
}

impl Assembled {
    fn note_model(&mut self, model: &str) {
        if self.model.is_empty() {
            model.clone_into(&mut self.model);
        }
    }

    fn chat_completion(&self) -> Value {
        let choices: Vec<Value> = self
            .choices
            .iter()
            .map(|(index, c)| {
                let mut message = json!({"role": "assistant", "content": c.text});
                if !c.tool_calls.is_empty() {
                    let calls: Vec<Value> = c
                        .tool_calls
                        .values()
                        .map(|t| {
                            json!({"id": t.id, "type": if t.kind.is_empty() { "function" } else { &t.kind },
                                "function": {"name": t.name, "arguments": t.arguments}})
                        })
                        .collect();
                    message["tool_calls"] = Value::Array(calls);
                    if c.text.is_empty() {
                        message["content"] = Value::Null;
                    }
                }
                json!({"index": index, "message": message, "finish_reason": c.finish_reason})
            })
            .collect();
        json!({"object": "chat.completion", "model": self.model, "choices": choices})
    }

    fn text_completion(&self) -> Value {
        let choices: Vec<Value> = self
            .choices
            .iter()
            .map(|(index, c)| json!({"index": index, "text": c.text, "finish_reason": c.finish_reason}))
            .collect();
        json!({"object": "text_completion", "model": self.model, "choices": choices})
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(delta: Value, finish: Option<&str>) -> ChatCompletionChunk {
        serde_json::from_value(json!({
            "id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]
        }))
        .unwrap()
    }

    #[test]
    fn chat_deltas_assemble_into_one_message_with_tool_calls() {
        let mut cap = Capture::default();
        cap.chat_chunk(&chunk(json!({"role": "assistant", "content": "Hel"}), None));
        cap.chat_chunk(&chunk(json!({"content": "lo"}), None));
        cap.chat_chunk(&chunk(
            json!({"tool_calls": [{"index": 0, "id": "call_1", "type": "function",
                "function": {"name": "get_weather", "arguments": "{\"ci"}}]}),
            None,
        ));
        cap.chat_chunk(&chunk(
            json!({"tool_calls": [{"index": 0, "function": {"arguments": "ty\":\"Lima\"}"}}]}),
            Some("tool_calls"),
        ));
        let v = cap.response_json().unwrap();
        let choice = &v["choices"][0];
        assert_eq!(choice["message"]["content"], "Hello");
        assert_eq!(choice["finish_reason"], "tool_calls");
        let call = &choice["message"]["tool_calls"][0];
        assert_eq!(call["id"], "call_1");
        assert_eq!(call["function"]["name"], "get_weather");
        assert_eq!(call["function"]["arguments"], "{\"city\":\"Lima\"}");
        assert_eq!(v["model"], "m");
        let shown = format!("{cap:?}");
        assert!(
            !shown.contains("Hello") && !shown.contains("Lima"),
            "{shown}"
        );
    }
}
