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

mod keys;
mod postgres;
mod prompts;
