//! What request spans say, in the OpenTelemetry GenAI semantic conventions: span names
//! (`{operation} {model}`), `gen_ai.*` attributes from a request's [`Record`], and the few
//! `pasarela.*` attributes the conventions have no name for.
//!
//! Must not contain span plumbing (contexts, exporters).

use opentelemetry::{Array, KeyValue, StringValue, Value};

use super::exchange::{Ending, Record};

/// Attribute names.
pub mod attr {
    pub const OPERATION_NAME: &str = "gen_ai.operation.name";
    pub const PROVIDER_NAME: &str = "gen_ai.provider.name";
    pub const REQUEST_MODEL: &str = "gen_ai.request.model";
    pub const REQUEST_TEMPERATURE: &str = "gen_ai.request.temperature";
    pub const REQUEST_MAX_TOKENS: &str = "gen_ai.request.max_tokens";
    pub const REQUEST_TOP_P: &str = "gen_ai.request.top_p";
    pub const RESPONSE_MODEL: &str = "gen_ai.response.model";
    pub const RESPONSE_FINISH_REASONS: &str = "gen_ai.response.finish_reasons";
    pub const USAGE_INPUT_TOKENS: &str = "gen_ai.usage.input_tokens";
    pub const USAGE_OUTPUT_TOKENS: &str = "gen_ai.usage.output_tokens";
    pub const INPUT_MESSAGES: &str = "gen_ai.input.messages";
    pub const OUTPUT_MESSAGES: &str = "gen_ai.output.messages";
    pub const ERROR_TYPE: &str = "error.type";
    pub const HTTP_METHOD: &str = "http.request.method";
    pub const HTTP_ROUTE: &str = "http.route";
    pub const HTTP_STATUS: &str = "http.response.status_code";
    /// `provider/model` of the deployment that answered (or that an attempt went to).
    pub const DEPLOYMENT: &str = "pasarela.deployment";
    /// 0 for the first attempt on a route, 1 for its first retry, …
    pub const ATTEMPT: &str = "pasarela.attempt";
    pub const STREAM: &str = "pasarela.stream";
    /// `abandoned` when the client went away before the end, `failed` for a broken stream.
    pub const ENDING: &str = "pasarela.ending";
    pub const KEY_NAME: &str = "pasarela.key.name";
    pub const PROMPT_NAME: &str = "pasarela.prompt.name";
    pub const PROMPT_VERSION: &str = "pasarela.prompt.version";
    pub const ENGINE_PROMPT_TOKENS: &str = "pasarela.engine.prompt_tokens";
    pub const ENGINE_OUTPUT_TOKENS: &str = "pasarela.engine.output_tokens";
}

/// `gen_ai.provider.name` of pasarela's own engine (the conventions' list has no value for a
/// gateway serving models in-process).
pub const LOCAL_PROVIDER: &str = "pasarela.local";

/// `gen_ai.operation.name` of an API endpoint; `None` for endpoints that are not model calls.
pub fn operation(endpoint: &str) -> Option<&'static str> {
    match endpoint {
        "/v1/chat/completions" => Some("chat"),
        "/v1/completions" => Some("text_completion"),
        "/v1/embeddings" => Some("embeddings"),
        _ => None,
    }
}

/// `{operation} {model}`, or the operation alone when the model is unknown.
pub fn span_name(operation: &str, model: Option<&str>) -> String {
    match model {
        Some(m) if !m.is_empty() => format!("{operation} {m}"),
        _ => operation.to_owned(),
    }
}

fn strings(items: &[String]) -> Value {
    Value::Array(Array::String(
        items.iter().cloned().map(StringValue::from).collect(),
    ))
}

fn int(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// What the response told: the model that answered, usage and finish reasons. Shared by the
/// request span and the span of the upstream call that produced the answer.
pub fn response_attributes(r: &Record, out: &mut Vec<KeyValue>) {
    if let Some(m) = &r.response_model {
        out.push(KeyValue::new(attr::RESPONSE_MODEL, m.clone()));
    }
    if let Some(u) = r.usage {
        out.push(KeyValue::new(attr::USAGE_INPUT_TOKENS, int(u.input)));
        out.push(KeyValue::new(attr::USAGE_OUTPUT_TOKENS, int(u.output)));
    }
    if !r.finish_reasons.is_empty() {
        out.push(KeyValue::new(
            attr::RESPONSE_FINISH_REASONS,
            strings(&r.finish_reasons),
        ));
    }
    if let Some(c) = &r.content {
        out.push(KeyValue::new(attr::INPUT_MESSAGES, c.input.clone()));
        out.push(KeyValue::new(
            attr::OUTPUT_MESSAGES,
            output_messages(&c.output, r.finish_reasons.first()),
        ));
    }
}

/// Everything the finished request's span carries, and its `error.type` if it failed.
pub fn request_attributes(r: &Record) -> (Vec<KeyValue>, Option<String>) {
    let mut out = Vec::with_capacity(16);
    if let Some(op) = operation(&r.endpoint) {
        out.push(KeyValue::new(attr::OPERATION_NAME, op));
    }
    if let Some(p) = r.provider {
        out.push(KeyValue::new(attr::PROVIDER_NAME, p));
    }
    if let Some(m) = &r.model {
        out.push(KeyValue::new(attr::REQUEST_MODEL, m.clone()));
    }
    if let Some(t) = r.params.temperature {
        out.push(KeyValue::new(attr::REQUEST_TEMPERATURE, t));
    }
    if let Some(t) = r.params.max_tokens {
        out.push(KeyValue::new(attr::REQUEST_MAX_TOKENS, int(t)));
    }
    if let Some(p) = r.params.top_p {
        out.push(KeyValue::new(attr::REQUEST_TOP_P, p));
    }
    response_attributes(r, &mut out);
    out.push(KeyValue::new(attr::HTTP_STATUS, i64::from(r.status)));
    if let Some(d) = &r.deployment {
        out.push(KeyValue::new(attr::DEPLOYMENT, d.clone()));
    }
    if operation(&r.endpoint).is_some() {
        out.push(KeyValue::new(attr::STREAM, r.stream));
    }
    if let Some(k) = &r.key {
        out.push(KeyValue::new(attr::KEY_NAME, k.name.clone()));
    }
    if let Some((name, version)) = &r.prompt {
        out.push(KeyValue::new(attr::PROMPT_NAME, name.clone()));
        out.push(KeyValue::new(attr::PROMPT_VERSION, *version));
    }
    let error = match &r.ending {
        Ending::Failed(_) => {
            out.push(KeyValue::new(attr::ENDING, "failed"));
            Some("stream_broken".to_owned())
        }
        Ending::Abandoned => {
            out.push(KeyValue::new(attr::ENDING, "abandoned"));
            None
        }
        Ending::Open | Ending::Complete => None,
    };
    // The conventions' `error.type` for HTTP failures is the status code.
    let error = error.or_else(|| (r.status >= 400).then(|| r.status.to_string()));
    if let Some(e) = &error {
        out.push(KeyValue::new(attr::ERROR_TYPE, e.clone()));
    }
    (out, error)
}

/// `gen_ai.input.messages` for chat messages given as (role, text) pairs: the conventions'
/// JSON shape, one text part per message.
pub fn input_messages<'a>(messages: impl Iterator<Item = (&'a str, String)>) -> String {
    let list: Vec<serde_json::Value> = messages
        .map(|(role, text)| {
            serde_json::json!({"role": role, "parts": [{"type": "text", "content": text}]})
        })
        .collect();
    serde_json::Value::Array(list).to_string()
}

fn output_messages(text: &str, finish: Option<&String>) -> String {
    serde_json::json!([{
        "role": "assistant",
        "parts": [{"type": "text", "content": text}],
        "finish_reason": finish.map_or("", String::as_str),
    }])
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::TokenCounts;

    fn find<'a>(kvs: &'a [KeyValue], key: &str) -> Option<&'a Value> {
        kvs.iter()
            .find(|kv| kv.key.as_str() == key)
            .map(|kv| &kv.value)
    }

    #[test]
    fn a_streamed_chat_carries_usage_finish_reasons_and_no_content() {
        let r = Record {
            endpoint: "/v1/chat/completions".into(),
            status: 200,
            model: Some("gpt-test".into()),
            provider: Some("openai"),
            response_model: Some("upstream-model".into()),
            stream: true,
            usage: Some(TokenCounts {
                input: 9,
                output: 3,
            }),
            finish_reasons: vec!["stop".into()],
            ..Record::default()
        };
        let (kvs, error) = request_attributes(&r);
        assert_eq!(error, None);
        assert_eq!(find(&kvs, attr::OPERATION_NAME), Some(&Value::from("chat")));
        assert_eq!(
            find(&kvs, attr::PROVIDER_NAME),
            Some(&Value::from("openai"))
        );
        assert_eq!(find(&kvs, attr::USAGE_INPUT_TOKENS), Some(&Value::I64(9)));
        assert_eq!(find(&kvs, attr::USAGE_OUTPUT_TOKENS), Some(&Value::I64(3)));
        assert_eq!(
            find(&kvs, attr::RESPONSE_FINISH_REASONS),
            Some(&strings(&["stop".to_owned()]))
        );
        assert_eq!(find(&kvs, attr::INPUT_MESSAGES), None);
        assert_eq!(find(&kvs, attr::OUTPUT_MESSAGES), None);
        assert_eq!(span_name("chat", r.model.as_deref()), "chat gpt-test");
    }

    #[test]
    fn failures_get_an_error_type() {
        let r = Record {
            endpoint: "/v1/chat/completions".into(),
            status: 502,
            ..Record::default()
        };
        assert_eq!(request_attributes(&r).1.as_deref(), Some("502"));
        let r = Record {
            endpoint: "/v1/chat/completions".into(),
            status: 200,
            ending: Ending::Failed("reset".into()),
            ..Record::default()
        };
        assert_eq!(request_attributes(&r).1.as_deref(), Some("stream_broken"));
    }
}
