//! pasarela: an OpenAI-compatible gateway for production LLM applications. Everything lives
//! in this library; `main.rs` only parses the command line and calls in.

pub mod cli;
pub mod config;
pub mod engine;
pub mod evals;
pub mod gateway;
pub mod limits;
pub mod openai;
pub mod prompts;
pub mod providers;
pub mod server;
pub mod store;
pub mod telemetry;
pub mod ui;

/// `err: cause: cause …`, since a top-level message alone rarely says what happened.
pub fn error_chain(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !out.ends_with(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = cause.source();
    }
    out
}
