//! The `pasarela` binary run as a user runs it: each test gets a directory of its own with a
//! minimal config, a copy of the shipped `prompts/` and an empty SQLite store (or, for the
//! Postgres tests, a database of its own through `PASARELA_DATABASE_URL`).
#![expect(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test fails by panicking"
)]

mod command;
// The gateway's stand-in upstream, for traffic that the log commands then read.
#[path = "../gateway/openai_upstream.rs"]
#[allow(
    dead_code,
    reason = "shared with the gateway tests, which use all of it"
)]
mod openai_upstream;

mod eval;
mod keys;
mod logs;
mod postgres;
mod prompts;
