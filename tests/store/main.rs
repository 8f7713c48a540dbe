//! The store against its real engines: every repository behaviour runs once on SQLite (a file
//! in a temporary directory) and once on Postgres (a database of its own, dropped afterwards),
//! so the two cannot drift apart. Postgres is `PASARELA_TEST_POSTGRES_URL`, else the local
//! server on 127.0.0.1:5432; where none answers, its tests say SKIPPED, unless
//! `PASARELA_REQUIRE_ALL` is set (as `scripts/test` does), where that is a failure. Real
//! gateway processes run here too: killed mid-write, and as replicas sharing limits through
//! Redis (`PASARELA_TEST_REDIS_URL`, else 127.0.0.1:6379, skipped the same way).
#![expect(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test fails by panicking"
)]

mod backends;

mod concurrency;
mod eval_runs;
mod gateway_crash;
mod gateway_process;
mod keys;
mod open;
mod prompts;
mod replicas;
mod request_log;
mod shared_limits;
mod tcp_proxy;
