//! `/v1/models` shapes.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::Extra;

/// One model as `/v1/models` lists it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Model {
    pub id: String,
    pub object: String,
    pub created: u64,
    pub owned_by: String,
    /// pasarela adds `kind` (`chat`/`embedding`) and, where known, `context_length`.
    #[serde(flatten)]
    #[schema(ignore)]
    pub extra: Extra,
}

/// `{"object": "list", "data": [...]}`
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ModelList {
    pub object: String,
    pub data: Vec<Model>,
}
