//! The set of models this process serves, loaded from `[models.*]` at startup.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::EngineError;
use super::chat::ChatModel;
use super::embedder::Embedder;
use super::source::{ModelDirs, ModelSource};
use crate::config::{Config, LocalModelConfig, ModelKind};

#[derive(Clone)]
pub enum LocalModel {
    Chat(Arc<ChatModel>),
    Embedding(Arc<Embedder>),
}

impl std::fmt::Debug for LocalModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LocalModel::Chat(m) => write!(f, "Chat({})", m.name()),
            LocalModel::Embedding(e) => write!(f, "Embedding({} dimensions)", e.dimensions()),
        }
    }
}

/// Loaded local models by the name clients use.
#[derive(Debug, Clone, Default)]
pub struct LocalModels {
    pub models: BTreeMap<String, LocalModel>,
}

impl LocalModels {
    /// Resolves every configured model's files (hub downloads included) and loads them, one
    /// after another: loading is CPU- and memory-heavy, and the machine may be small.
    pub async fn load(config: &Config, dirs: &ModelDirs) -> Result<LocalModels, EngineError> {
        let mut models = BTreeMap::new();
        for (name, mc) in &config.models {
            let started = std::time::Instant::now();
            let model = load_one(name, mc, dirs).await?;
            tracing::info!(model = %name, seconds = started.elapsed().as_secs_f64(), "local model ready");
            models.insert(name.clone(), model);
        }
        Ok(LocalModels { models })
    }
}

fn source_of(mc: &LocalModelConfig) -> ModelSource {
    match (&mc.path, &mc.hf_repo) {
        (Some(path), _) => ModelSource::Path(path.clone()),
        (None, Some(repo)) => ModelSource::Hub {
            repo: repo.clone(),
            revision: mc.hf_revision.clone(),
        },
        // Config validation requires one of the two.
        (None, None) => ModelSource::Path(std::path::PathBuf::new()),
    }
}

async fn load_one(
    name: &str,
    mc: &LocalModelConfig,
    dirs: &ModelDirs,
) -> Result<LocalModel, EngineError> {
    let source = source_of(mc);
    match mc.kind {
        ModelKind::Chat => {
            let gguf = source
                .fetch(dirs, mc.hf_file.as_deref().unwrap_or(""))
                .await?;
            let tokenizer = match &mc.tokenizer {
                Some(p) => Some(ModelSource::Path(p.clone()).fetch(dirs, "").await?),
                None => None,
            };
            let (name, mc) = (name.to_owned(), mc.clone());
            let model =
                blocking(move || ChatModel::load(&name, &gguf, tokenizer.as_deref(), &mc)).await?;
            Ok(LocalModel::Chat(Arc::new(model)))
        }
        ModelKind::Embedding => {
            // The files land side by side (a directory, or one hub snapshot).
            let config_json = source.fetch(dirs, "config.json").await?;
            source.fetch(dirs, "model.safetensors").await?;
            source.fetch(dirs, "tokenizer.json").await?;
            for optional in [
                "1_Pooling/config.json",
                "modules.json",
                "sentence_bert_config.json",
            ] {
                source.fetch_optional(dirs, optional).await;
            }
            let dir = config_json
                .parent()
                .map(std::path::Path::to_path_buf)
                .unwrap_or_default();
            let device = super::device()?;
            let label = super::device_label(&device);
            let embedder = blocking(move || Embedder::load(&dir, &device)).await?;
            tracing::info!(model = name, device = %label, "embedding model loaded");
            Ok(LocalModel::Embedding(Arc::new(embedder)))
        }
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, EngineError> + Send + 'static,
) -> Result<T, EngineError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| EngineError::Inference(format!("model loading task failed: {e}")))?
}
