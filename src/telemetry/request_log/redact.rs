//! What the request log removes from bodies before storing them. Headers are never stored
//! at all (the `Authorization` or `api-key` a request came with included). In bodies:
//!
//! - the value of any JSON member whose name is, case-insensitively, one of [`SECRET_KEYS`]
//!   or of `request_log.redact_keys`, whatever its type, becomes `"[REDACTED]"`;
//! - inside every string (message contents, tool arguments, error messages), matches of
//!   [`SECRET_PATTERNS`] (API keys such as `sk-…`, `sk-pasarela-…`, `sk-ant-…`, `Bearer …`
//!   tokens, AWS access key ids) and of `request_log.redact_patterns` become `[REDACTED]`.
//!
//! A body that is not JSON is stored as one JSON string, scrubbed the same way.

use std::borrow::Cow;
use std::collections::HashSet;

use regex::Regex;
use serde_json::Value;

/// What a redacted value becomes.
pub const REDACTED: &str = "[REDACTED]";

/// JSON member names whose values are always removed.
pub const SECRET_KEYS: &[&str] = &[
    "api_key",
    "apikey",
    "api-key",
    "x-api-key",
    "authorization",
    "password",
    "secret",
    "client_secret",
    "access_token",
    "refresh_token",
];

/// Secrets recognised inside any text. `sk-` keys need 16 key characters after the prefix,
/// so that prose such as "sk-learn" stays; bearer tokens 16 (a real token is longer, and
/// "bearer securities" is not one).
pub const SECRET_PATTERNS: &[&str] = &[
    r"\bsk-[A-Za-z0-9_\-]{16,}",
    r"(?i)\bbearer\s+[A-Za-z0-9._~+/=\-]{16,}",
    r"\bAKIA[0-9A-Z]{16}\b",
];

#[derive(Debug)]
pub struct Redactor {
    keys: HashSet<String>,
    patterns: Vec<Regex>,
}

impl Redactor {
    /// The built-in rules and the configured ones.
    pub fn new(extra_keys: &[String], extra_patterns: &[String]) -> Result<Redactor, regex::Error> {
        let keys = SECRET_KEYS
            .iter()
            .map(|k| (*k).to_owned())
            .chain(extra_keys.iter().map(|k| k.to_lowercase()))
            .collect();
        let patterns = SECRET_PATTERNS
            .iter()
            .copied()
            .chain(extra_patterns.iter().map(String::as_str))
            .map(Regex::new)
            .collect::<Result<_, _>>()?;
        Ok(Redactor { keys, patterns })
    }

    /// `text` with every secret pattern replaced.
    pub fn text<'a>(&self, text: &'a str) -> Cow<'a, str> {
        let mut out = Cow::Borrowed(text);
        for p in &self.patterns {
            if let Cow::Owned(replaced) = p.replace_all(&out, REDACTED) {
                out = Cow::Owned(replaced);
            }
        }
        out
    }

    /// Redacts a JSON value in place.
    pub fn json(&self, value: &mut Value) {
        match value {
            Value::String(s) => {
                if let Cow::Owned(clean) = self.text(s) {
                    *s = clean;
                }
            }
            Value::Array(items) => items.iter_mut().for_each(|v| self.json(v)),
            Value::Object(members) => {
                for (name, v) in members.iter_mut() {
                    if self.keys.contains(&name.to_lowercase()) {
                        *v = Value::String(REDACTED.to_owned());
                    } else {
                        self.json(v);
                    }
                }
            }
            Value::Null | Value::Bool(_) | Value::Number(_) => {}
        }
    }

    /// A request body as redacted JSON text.
    pub fn body(&self, bytes: &[u8]) -> String {
        let mut value = serde_json::from_slice::<Value>(bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(bytes).into_owned()));
        self.json(&mut value);
        value.to_string()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn keys_and_key_like_strings_are_removed_and_the_rest_kept() {
        let r = Redactor::new(&["X-Session".into()], &[r"\bcard-\d{4}\b".into()]).unwrap();
        let mut v = json!({
            "model": "gpt-test",
            "api_key": "anything at all",
            "metadata": {"Password": 1234, "x-session": "s", "max_tokens": 5},
            "messages": [
                {"role": "user", "content": "my key is sk-pasarela-AbCdEf0123456789xyz, ok?"},
                {"role": "user", "content": "Authorization: Bearer eyJhbGciOi.payload.sig and sk-learn"},
                {"role": "user", "content": "aws AKIAIOSFODNN7EXAMPLE, card-1234"},
            ]
        });
        r.json(&mut v);
        assert_eq!(v["api_key"], REDACTED);
        assert_eq!(v["metadata"]["Password"], REDACTED);
        assert_eq!(v["metadata"]["x-session"], REDACTED);
        assert_eq!(v["metadata"]["max_tokens"], 5);
        assert_eq!(v["model"], "gpt-test");
        assert_eq!(v["messages"][0]["content"], "my key is [REDACTED], ok?");
        assert_eq!(
            v["messages"][1]["content"],
            "Authorization: [REDACTED] and sk-learn"
        );
        assert_eq!(v["messages"][2]["content"], "aws [REDACTED], [REDACTED]");
    }

    #[test]
    fn a_body_that_is_not_json_is_stored_as_a_scrubbed_string() {
        let r = Redactor::new(&[], &[]).unwrap();
        let stored = r.body(b"not json sk-proj-0123456789abcdefABCD");
        assert_eq!(stored, "\"not json [REDACTED]\"");
    }
}
