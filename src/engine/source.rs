//! Where model files come from: a local path, or a Hugging Face repository through hf-hub,
//! downloaded into (or, offline, read from) the standard Hugging Face cache
//! (`HF_HUB_CACHE`, else `$HF_HOME/hub`, else `~/.cache/huggingface/hub`).

use std::path::{Path, PathBuf};

use super::EngineError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelSource {
    /// A file (GGUF) or a directory (safetensors model), relative paths against the models dir.
    Path(PathBuf),
    /// `repo` as `owner/name`; `revision` a branch, tag or commit (default `main`).
    Hub {
        repo: String,
        revision: Option<String>,
    },
}

/// Whether hub access is disabled (`HF_HUB_OFFLINE=1`, the variable Hugging Face's tools read).
pub fn hub_offline() -> bool {
    std::env::var("HF_HUB_OFFLINE").is_ok_and(|v| matches!(v.trim(), "1" | "true" | "TRUE" | "yes"))
}

impl ModelSource {
    /// The local path of `file` (a path relative to the source: ignored for `Path` sources that
    /// name a file). Hub files are downloaded when the hub is reachable and taken from the
    /// cache when it is not, or when `HF_HUB_OFFLINE` is set.
    pub async fn fetch(&self, dirs: &ModelDirs, file: &str) -> Result<PathBuf, EngineError> {
        match self {
            ModelSource::Path(p) => {
                let base = if p.is_absolute() {
                    p.clone()
                } else {
                    dirs.models.join(p)
                };
                let path = if file.is_empty() || base.is_file() {
                    base
                } else {
                    base.join(file)
                };
                if path.exists() {
                    Ok(path)
                } else {
                    Err(EngineError::load(
                        &path,
                        "no such file (run scripts/fetch-models for the default models)",
                    ))
                }
            }
            ModelSource::Hub { repo, revision } => {
                fetch_from_hub(dirs.hf_cache.as_deref(), repo, revision.as_deref(), file).await
            }
        }
    }

    /// Like `fetch`, but `None` when an optional file is absent.
    pub async fn fetch_optional(&self, dirs: &ModelDirs, file: &str) -> Option<PathBuf> {
        self.fetch(dirs, file).await.ok()
    }
}

/// Where relative model paths and the hub cache are.
#[derive(Debug, Clone, Default)]
pub struct ModelDirs {
    pub models: PathBuf,
    /// `None`: Hugging Face's own environment variables decide.
    pub hf_cache: Option<PathBuf>,
}

async fn fetch_from_hub(
    cache: Option<&Path>,
    repo: &str,
    revision: Option<&str>,
    file: &str,
) -> Result<PathBuf, EngineError> {
    let label = format!("hf://{repo}/{file}");
    let Some((owner, name)) = repo.split_once('/') else {
        return Err(EngineError::load(
            &label,
            "a hub repository is `owner/name`",
        ));
    };
    let mut builder = hf_hub::HFClient::builder();
    if let Some(cache) = cache {
        builder = builder.cache_dir(cache);
    }
    let client = builder
        .build()
        .map_err(|e| EngineError::load(&label, format!("cannot set up the hub client: {e}")))?;
    let repo_handle = client.model(owner, name);
    let request = |local_only: bool| {
        repo_handle
            .download_file()
            .filename(file)
            .maybe_revision(revision.map(str::to_owned))
            .local_files_only(local_only)
            .send()
    };
    if hub_offline() {
        return request(true).await.map_err(|e| {
            EngineError::load(
                &label,
                format!("not in the Hugging Face cache ({e}) and HF_HUB_OFFLINE is set"),
            )
        });
    }
    match request(false).await {
        Ok(path) => Ok(path),
        Err(online) => {
            tracing::warn!(file = %label, error = %online, "hub unreachable or refused; trying the local cache");
            request(true).await.map_err(|cached| {
                EngineError::load(
                    &label,
                    format!("download failed ({online}) and not in the cache ({cached})"),
                )
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Lays out `file` in a Hugging Face cache the way hub downloads leave it:
    /// `models--owner--name/{refs/main, snapshots/<commit>/<file>}`.
    pub(crate) fn seed_cache(cache: &Path, repo: &str, file: &str, content: &[u8]) -> PathBuf {
        let commit = "0123456789abcdef0123456789abcdef01234567";
        let folder = cache.join(format!("models--{}", repo.replace('/', "--")));
        std::fs::create_dir_all(folder.join("refs")).unwrap();
        std::fs::write(folder.join("refs/main"), commit).unwrap();
        let path = folder.join("snapshots").join(commit).join(file);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, content).unwrap();
        path
    }

    #[tokio::test]
    async fn hub_files_come_from_the_cache_when_the_hub_is_unreachable() {
        let cache = std::env::temp_dir().join(format!("pasarela-hf-{}", std::process::id()));
        let expected = seed_cache(&cache, "acme/tiny", "config.json", b"{}");
        let dirs = ModelDirs {
            models: PathBuf::new(),
            hf_cache: Some(cache.clone()),
        };
        // No network here: the download fails and the cached snapshot answers.
        let source = ModelSource::Hub {
            repo: "acme/tiny".into(),
            revision: None,
        };
        let got = source.fetch(&dirs, "config.json").await.unwrap();
        assert_eq!(
            std::fs::read(&got).unwrap(),
            std::fs::read(&expected).unwrap()
        );
        let err = source
            .fetch(&dirs, "missing.json")
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("hf://acme/tiny/missing.json"), "{err}");
        std::fs::remove_dir_all(&cache).unwrap();
    }

    #[tokio::test]
    async fn relative_paths_resolve_against_the_models_dir_and_missing_files_are_named() {
        let dir = std::env::temp_dir().join(format!("pasarela-source-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("m")).unwrap();
        std::fs::write(dir.join("m/config.json"), "{}").unwrap();
        let source = ModelSource::Path("m".into());
        let dirs = ModelDirs {
            models: dir.clone(),
            hf_cache: None,
        };
        assert_eq!(
            source.fetch(&dirs, "config.json").await.unwrap(),
            dir.join("m/config.json")
        );
        let err = source
            .fetch(&dirs, "tokenizer.json")
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("m/tokenizer.json"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
