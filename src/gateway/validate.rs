//! Request checks that OpenAI itself makes, so that a bad request fails here, fast and with
//! the same message, instead of costing an upstream round trip.

use super::GatewayError;
use crate::openai::chat::{ChatCompletionRequest, Role};
use crate::openai::completions::{CompletionRequest, Prompt};
use crate::openai::embeddings::{EmbeddingInput, EmbeddingRequest};

fn range(value: Option<f64>, lo: f64, hi: f64, param: &str) -> Result<(), GatewayError> {
    match value {
        Some(v) if !(lo..=hi).contains(&v) => Err(GatewayError::invalid(
            format!("{v} is not a valid value for '{param}': it must be between {lo} and {hi}."),
            param,
        )),
        _ => Ok(()),
    }
}

fn common(
    model: &str,
    temperature: Option<f64>,
    top_p: Option<f64>,
    n: Option<u32>,
    penalties: [Option<f64>; 2],
    stream: bool,
    has_stream_options: bool,
) -> Result<(), GatewayError> {
    if model.trim().is_empty() {
        return Err(GatewayError::invalid(
            "you must provide a model parameter",
            "model",
        ));
    }
    range(temperature, 0.0, 2.0, "temperature")?;
    range(top_p, 0.0, 1.0, "top_p")?;
    range(penalties[0], -2.0, 2.0, "presence_penalty")?;
    range(penalties[1], -2.0, 2.0, "frequency_penalty")?;
    if let Some(n) = n
        && !(1..=128).contains(&n)
    {
        return Err(GatewayError::invalid(
            format!("{n} is not a valid value for 'n': it must be between 1 and 128."),
            "n",
        ));
    }
    if has_stream_options && !stream {
        return Err(GatewayError::invalid(
            "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
            "stream_options",
        ));
    }
    Ok(())
}

pub fn chat(req: &ChatCompletionRequest) -> Result<(), GatewayError> {
    common(
        &req.model,
        req.temperature,
        req.top_p,
        req.n,
        [req.presence_penalty, req.frequency_penalty],
        req.is_stream(),
        req.stream_options.is_some(),
    )?;
    if req.messages.is_empty() {
        return Err(GatewayError::invalid(
            "'messages' must contain at least one message.",
            "messages",
        ));
    }
    for (i, m) in req.messages.iter().enumerate() {
        if m.role == Role::Tool && m.tool_call_id.is_none() {
            return Err(GatewayError::invalid(
                "a message with role 'tool' must have a 'tool_call_id'.",
                &format!("messages[{i}].tool_call_id"),
            ));
        }
        if m.content.is_none() && m.tool_calls.is_none() && m.role != Role::Assistant {
            return Err(GatewayError::invalid(
                format!("messages[{i}] must have 'content'."),
                &format!("messages[{i}].content"),
            ));
        }
    }
    if let Some(top) = req.top_logprobs {
        if req.logprobs != Some(true) {
            return Err(GatewayError::invalid(
                "'top_logprobs' requires 'logprobs' to be true.",
                "top_logprobs",
            ));
        }
        if top > 20 {
            return Err(GatewayError::invalid(
                "'top_logprobs' must be between 0 and 20.",
                "top_logprobs",
            ));
        }
    }
    if matches!(req.max_output_tokens(), Some(0)) {
        return Err(GatewayError::invalid(
            "'max_tokens' must be at least 1.",
            "max_tokens",
        ));
    }
    Ok(())
}

pub fn completion(req: &CompletionRequest) -> Result<(), GatewayError> {
    common(
        &req.model,
        req.temperature,
        req.top_p,
        req.n,
        [req.presence_penalty, req.frequency_penalty],
        req.is_stream(),
        req.stream_options.is_some(),
    )?;
    let empty = match &req.prompt {
        Prompt::Texts(v) => v.is_empty(),
        Prompt::Tokens(v) => v.is_empty(),
        Prompt::TokenLists(v) => v.is_empty() || v.iter().any(Vec::is_empty),
        Prompt::Text(_) => false,
    };
    if empty {
        return Err(GatewayError::invalid(
            "'prompt' must not be empty.",
            "prompt",
        ));
    }
    Ok(())
}

pub fn embedding(req: &EmbeddingRequest) -> Result<(), GatewayError> {
    if req.model.trim().is_empty() {
        return Err(GatewayError::invalid(
            "you must provide a model parameter",
            "model",
        ));
    }
    let empty = match &req.input {
        EmbeddingInput::Text(s) => s.is_empty(),
        EmbeddingInput::Texts(v) => v.is_empty() || v.iter().any(String::is_empty),
        EmbeddingInput::Tokens(v) => v.is_empty(),
        EmbeddingInput::TokenLists(v) => v.is_empty() || v.iter().any(Vec::is_empty),
    };
    if empty {
        return Err(GatewayError::invalid(
            "'input' must be a non-empty string or a non-empty array of non-empty strings or tokens.",
            "input",
        ));
    }
    if req.dimensions == Some(0) {
        return Err(GatewayError::invalid(
            "'dimensions' must be at least 1.",
            "dimensions",
        ));
    }
    Ok(())
}
