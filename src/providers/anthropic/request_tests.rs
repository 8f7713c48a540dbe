//! Unit tests of `request`.

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
    let sent = wire(json!({"model": "claude", "messages": [{"role": "user", "content": "Hi"}]}));
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
