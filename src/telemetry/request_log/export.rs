//! Logged chat requests as training or eval examples, in OpenAI's fine-tuning chat format:
//! one JSON object per line, `{"messages": [...], "tools": [...]}`, the request's messages
//! followed by the assistant message that answered them (with its `tool_calls`, if any).

use serde_json::{Map, Value, json};

use crate::store::{LogEnding, LogEntry};

/// The endpoint whose requests make chat examples.
pub const CHAT_ENDPOINT: &str = "/v1/chat/completions";

/// Why a logged request makes no example.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skip {
    /// Its bodies were not sampled.
    NoBodies,
    /// It failed, was refused, or its stream did not end.
    Failed,
    /// Its bodies are not a chat request and a chat answer.
    Unreadable,
}

/// The example a logged chat request makes.
pub fn chat_example(entry: &LogEntry) -> Result<Value, Skip> {
    if entry.status != 200 || entry.ending != LogEnding::Complete {
        return Err(Skip::Failed);
    }
    let (Some(request), Some(response)) = (&entry.request_body, &entry.response_body) else {
        return Err(Skip::NoBodies);
    };
    let request: Value = serde_json::from_str(request).map_err(|_| Skip::Unreadable)?;
    let response: Value = serde_json::from_str(response).map_err(|_| Skip::Unreadable)?;
    let mut messages = request
        .get("messages")
        .and_then(Value::as_array)
        .filter(|m| !m.is_empty())
        .cloned()
        .ok_or(Skip::Unreadable)?;
    let answer = response
        .pointer("/choices/0/message")
        .and_then(Value::as_object)
        .ok_or(Skip::Unreadable)?;
    messages.push(assistant(answer));
    let mut example = Map::new();
    example.insert("messages".into(), Value::Array(messages));
    for field in ["tools", "parallel_tool_calls"] {
        if let Some(v) = request.get(field).filter(|v| !v.is_null()) {
            example.insert(field.into(), v.clone());
        }
    }
    Ok(Value::Object(example))
}

/// The assistant message as the fine-tuning format has it: role, content, tool calls.
fn assistant(message: &Map<String, Value>) -> Value {
    let mut out = json!({
        "role": "assistant",
        "content": message.get("content").cloned().unwrap_or(Value::Null),
    });
    if let Some(calls) = message
        .get("tool_calls")
        .and_then(Value::as_array)
        .filter(|c| !c.is_empty())
    {
        out["tool_calls"] = Value::Array(calls.clone());
    }
    out
}

#[cfg(test)]
mod tests {
    use chrono::Utc;

    use super::*;

    fn entry(request: Option<Value>, response: Option<Value>) -> LogEntry {
        LogEntry {
            request_id: "r".into(),
            created_at: Utc::now(),
            key_id: None,
            key_name: None,
            endpoint: CHAT_ENDPOINT.into(),
            model: Some("m".into()),
            deployment: None,
            response_model: None,
            status: 200,
            stream: false,
            duration_ms: 1,
            first_token_ms: None,
            input_tokens: None,
            output_tokens: None,
            finish_reasons: vec![],
            prompt: None,
            ending: LogEnding::Complete,
            error: None,
            request_body: request.map(|v| v.to_string()),
            response_body: response.map(|v| v.to_string()),
        }
    }

    #[test]
    fn an_answer_with_tool_calls_follows_the_request_messages_and_tools_are_kept() {
        let tools = json!([{"type": "function", "function": {"name": "f", "parameters": {}}}]);
        let call =
            json!({"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}});
        let e = entry(
            Some(json!({"model": "m", "temperature": 0.2, "tools": tools,
                "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]})),
            Some(
                json!({"choices": [{"index": 0, "message": {"role": "assistant", "content": null,
                "refusal": null, "tool_calls": [call]}, "finish_reason": "tool_calls"}]}),
            ),
        );
        let example = chat_example(&e).unwrap();
        assert_eq!(
            example,
            json!({"messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": null, "tool_calls": [call]},
            ], "tools": tools})
        );
    }

    #[test]
    fn failed_unsampled_and_unreadable_requests_are_skipped_with_their_reason() {
        let ok_req = json!({"messages": [{"role": "user", "content": "Hi"}]});
        let ok_resp = json!({"choices": [{"message": {"role": "assistant", "content": "Hello"}}]});
        assert!(chat_example(&entry(Some(ok_req.clone()), Some(ok_resp.clone()))).is_ok());
        assert_eq!(chat_example(&entry(None, None)), Err(Skip::NoBodies));
        let mut failed = entry(Some(ok_req.clone()), Some(ok_resp.clone()));
        failed.ending = LogEnding::Abandoned;
        assert_eq!(chat_example(&failed), Err(Skip::Failed));
        failed.ending = LogEnding::Complete;
        failed.status = 502;
        assert_eq!(chat_example(&failed), Err(Skip::Failed));
        let no_messages = entry(Some(json!({"prompt": "x"})), Some(ok_resp));
        assert_eq!(chat_example(&no_messages), Err(Skip::Unreadable));
    }
}
