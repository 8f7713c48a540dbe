//! `[server]` and `[auth]`: where the gateway listens and which keys it accepts.

use std::net::SocketAddr;

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    /// Largest request body accepted; larger ones get 413.
    pub max_body_bytes: usize,
    /// How long a shutdown waits for in-flight requests and streams.
    pub shutdown_grace_secs: u64,
    /// Without API keys the gateway binds to loopback only, unless this is set.
    pub allow_unauthenticated_remote: bool,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            // OpenAI accepts bodies of tens of MB (images inline as base64).
            max_body_bytes: 32 * 1024 * 1024,
            shutdown_grace_secs: 30,
            allow_unauthenticated_remote: false,
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// SHA-256 hashes of accepted keys, as `sha256:<hex>` (`pasarela keys hash` prints them).
    pub api_key_hashes: Vec<String>,
    /// Environment variables that each hold one accepted key in clear; hashed at startup.
    pub api_key_envs: Vec<String>,
    /// Keys that may also manage the gateway: the prompt registry's API and the dashboard's
    /// actions. Admin keys are accepted wherever API keys are.
    pub admin_key_hashes: Vec<String>,
    /// Environment variables that each hold one admin key in clear.
    pub admin_key_envs: Vec<String>,
}
