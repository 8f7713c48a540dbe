//! How many tokens a request may use, guessed before the call from its JSON body: what a
//! token rate reserves, settled afterwards on the real usage. The guess must be cheap (it runs
//! on every request of a token-limited key, before any tokenizer is known) and rather high
//! than low: four bytes of text per token, as for English with GPT-style tokenizers, plus a
//! few tokens per chat message for its role and delimiters.

use serde_json::Value;

/// Bytes of text per token assumed by the estimate.
const BYTES_PER_TOKEN: u64 = 4;
/// Tokens a chat template adds around each message.
const TOKENS_PER_MESSAGE: u64 = 4;

/// A request's expected tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Estimate {
    pub input: u64,
    pub output: u64,
}

impl Estimate {
    pub fn total(self) -> u64 {
        self.input.saturating_add(self.output)
    }
}

/// The estimate for an OpenAI chat, completion or embeddings body. `default_output` stands
/// for the output of a generating request that sets no `max_tokens`.
pub fn estimate(body: &Value, default_output: u32) -> Estimate {
    let mut input = 0;
    if let Some(messages) = body.get("messages").and_then(Value::as_array) {
        for m in messages {
            input += TOKENS_PER_MESSAGE + text_tokens(m.get("content"));
        }
    }
    // A registry prompt's text is not known yet; its variables are a floor.
    input += text_tokens(body.get("prompt"));
    let embeddings = body.get("input").is_some() && body.get("messages").is_none();
    input += text_tokens(body.get("input"));
    let output = if embeddings {
        0
    } else {
        ["max_completion_tokens", "max_tokens"]
            .iter()
            .find_map(|k| body.get(*k).and_then(Value::as_u64))
            .unwrap_or(u64::from(default_output))
            .saturating_mul(body.get("n").and_then(Value::as_u64).unwrap_or(1).max(1))
    };
    Estimate {
        input: input.max(1),
        output,
    }
}

/// Tokens in a JSON value: text by its length, token-id arrays by their count, and the
/// strings inside arrays and objects (content parts, prompt variables) added up.
fn text_tokens(value: Option<&Value>) -> u64 {
    match value {
        None | Some(Value::Null | Value::Bool(_)) => 0,
        Some(Value::String(s)) => (s.len() as u64).div_ceil(BYTES_PER_TOKEN),
        Some(Value::Number(_)) => 1,
        Some(Value::Array(items)) => items.iter().map(|v| text_tokens(Some(v))).sum(),
        Some(Value::Object(map)) => map.values().map(|v| text_tokens(Some(v))).sum(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn chat_counts_message_text_and_the_output_cap() {
        let body = json!({"model": "m", "max_tokens": 50, "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": [{"type": "text", "text": "Hello there, how are you?"}]},
        ]});
        let e = estimate(&body, 256);
        // 4 + ceil(9/4)=3, 4 + ceil(4/4)=1 ("text") + ceil(25/4)=7.
        assert_eq!(e.input, 4 + 3 + 4 + 1 + 7);
        assert_eq!(e.output, 50);
    }

    #[test]
    fn no_cap_reserves_the_default_and_n_multiplies_it() {
        let body = json!({"model": "m", "n": 2, "messages": [{"role": "user", "content": "hi"}]});
        assert_eq!(estimate(&body, 100).output, 200);
        let newer =
            json!({"model": "m", "max_completion_tokens": 7, "max_tokens": 99, "messages": []});
        assert_eq!(estimate(&newer, 100).output, 7);
    }

    #[test]
    fn embeddings_have_no_output_and_token_ids_count_one_each() {
        let body = json!({"model": "e", "input": [[1, 2, 3], "abcdefgh"]});
        let e = estimate(&body, 256);
        assert_eq!(
            e,
            Estimate {
                input: 5,
                output: 0
            }
        );
    }
}
