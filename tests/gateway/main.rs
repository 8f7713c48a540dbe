//! Black-box tests of the gateway: the real server on port 0, real HTTP, and stand-in
//! upstreams that speak OpenAI's and Anthropic's wire formats.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod anthropic_upstream;
mod helpers;
mod openai_upstream;
mod otlp_receiver;

mod anthropic;
mod chat;
mod errors;
mod keys;
mod metrics;
mod otel;
mod prompts;
mod request_log;
mod routing;
mod sdk;
mod server;
mod usage_limits;
