//! What can go wrong loading or running a local model.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// A model file is missing, unreadable, corrupt or of an unsupported kind. The message
    /// names the file.
    #[error("cannot load model file {path}: {reason}")]
    Load { path: PathBuf, reason: String },
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    #[error("chat template: {0}")]
    Template(String),
    /// The request cannot be served by this model (too long a prompt, bad parameters).
    #[error("{0}")]
    InvalidRequest(String),
    /// The model's queue is full: come back later.
    #[error("the model `{model}` is busy: {queued} requests are already waiting")]
    Busy { model: String, queued: usize },
    #[error("inference failed: {0}")]
    Inference(String),
}

impl EngineError {
    pub fn load(path: impl Into<PathBuf>, reason: impl std::fmt::Display) -> Self {
        EngineError::Load {
            path: path.into(),
            reason: reason.to_string(),
        }
    }
}

impl From<candle_core::Error> for EngineError {
    fn from(e: candle_core::Error) -> Self {
        EngineError::Inference(e.to_string())
    }
}
