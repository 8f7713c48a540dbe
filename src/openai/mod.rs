//! OpenAI wire types: requests, responses, stream chunks and the error envelope, exactly as
//! clients send and expect them. Unknown fields are kept in `extra` maps so that they pass
//! through untouched to OpenAI-compatible upstreams.
//!
//! Must not contain behaviour (validation, routing, translation): only shapes.

pub mod chat;
pub mod completions;
pub mod embeddings;
pub mod error;
pub mod models;

/// Fields a type does not model, kept verbatim for pass-through.
pub type Extra = serde_json::Map<String, serde_json::Value>;

/// Seconds since the Unix epoch, as OpenAI's `created` fields carry it.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
