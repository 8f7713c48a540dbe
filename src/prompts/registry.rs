//! The prompt registry as the rest of pasarela uses it: pushing prompt files as immutable
//! versions, resolving `name@label` / `name#version` to checked content through a cache,
//! moving labels under the protection policy, rollbacks, diffs between versions, and how many
//! requests each version served in this process.
//!
//! The cache keeps the request path free of database reads. Versions never change, so
//! `name#N` entries live forever; label entries are dropped whenever the store's change
//! counter moves, which every replica checks every `prompts.refresh_interval_ms` (and this
//! replica at once after its own writes).
//!
//! Must not contain SQL (that is `store`) nor HTTP (that is `server`).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::{ContentError, Label, PromptContent, PromptFile, PromptName, PromptRef, Selector};
use crate::config::PromptsConfig;
use crate::store::{
    LATEST_LABEL, LabelMove, LabelledVersion, MoveOutcome, NewVersion, PromptSummary, PushOutcome,
    Store, StoreError,
};

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("{0}")]
    NotFound(String),
    #[error(
        "label `{label}` is protected: moving it needs --force on the command line or \"force\": true with an admin key"
    )]
    Protected { label: String },
    #[error("{0}")]
    Invalid(String),
    #[error("version {version} of prompt `{name}` holds content this build cannot read: {source}")]
    Unreadable {
        name: String,
        version: i64,
        source: ContentError,
    },
    #[error(transparent)]
    Store(StoreError),
}

impl From<StoreError> for RegistryError {
    fn from(e: StoreError) -> Self {
        match e {
            e @ StoreError::NotFound(_) => RegistryError::NotFound(e.to_string()),
            other => RegistryError::Store(other),
        }
    }
}

/// A version's content, checked and ready to render.
#[derive(Debug)]
pub struct ResolvedPrompt {
    pub name: PromptName,
    pub version: i64,
    pub content: PromptContent,
}

/// One line of a diff between two versions, as the dashboard and the CLI show it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct DiffLine {
    /// `equal`, `delete` (only in the older version) or `insert` (only in the newer).
    pub tag: &'static str,
    pub old_line: Option<usize>,
    pub new_line: Option<usize>,
    pub text: String,
}

pub struct Registry {
    store: Store,
    protected: Vec<String>,
    refresh_interval: Duration,
    cache: RwLock<HashMap<String, Arc<ResolvedPrompt>>>,
    /// The store's change counter when the label entries of the cache were last known good.
    seen_changes: AtomicI64,
    /// Requests served per (prompt, version) since this process started.
    served: Mutex<HashMap<(String, i64), u64>>,
}

impl Registry {
    pub async fn new(store: Store, config: &PromptsConfig) -> Result<Registry, RegistryError> {
        let seen = store.prompts().change_counter().await?;
        Ok(Registry {
            store,
            protected: config.protected_labels.clone(),
            refresh_interval: Duration::from_millis(config.refresh_interval_ms),
            cache: RwLock::new(HashMap::new()),
            seen_changes: AtomicI64::new(seen),
            served: Mutex::new(HashMap::new()),
        })
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn is_protected(&self, label: &str) -> bool {
        self.protected.iter().any(|p| p == label)
    }

    /// Stores a prompt file's content as a new version, unless it equals the latest version.
    pub async fn push(
        &self,
        file: &PromptFile,
        author: &str,
        message: Option<&str>,
    ) -> Result<PushOutcome, RegistryError> {
        self.push_content(&file.name, &file.content, author, message)
            .await
    }

    pub async fn push_content(
        &self,
        name: &PromptName,
        content: &PromptContent,
        author: &str,
        message: Option<&str>,
    ) -> Result<PushOutcome, RegistryError> {
        let stored = content.to_stored();
        let hash = content.content_hash();
        let outcome = self
            .store
            .prompts()
            .push_version(
                name.as_str(),
                NewVersion {
                    content: &stored,
                    content_hash: hash.as_str(),
                    author,
                    message,
                },
            )
            .await?;
        if matches!(outcome, PushOutcome::Created(_)) {
            self.forget_labels();
        }
        Ok(outcome)
    }

    /// The content a reference names now, from the cache when it is there.
    pub async fn resolve(
        &self,
        reference: &PromptRef,
    ) -> Result<Arc<ResolvedPrompt>, RegistryError> {
        let key = reference.to_string();
        if let Some(hit) = self.cache_get(&key) {
            return Ok(hit);
        }
        let prompts = self.store.prompts();
        let name = reference.name.as_str();
        let stored = match &reference.selector {
            Selector::Label(label) => prompts.get_by_label(name, label.as_str()).await?,
            Selector::Version(v) => prompts.get_version(name, i64::from(v.get())).await?,
        };
        let version = stored.meta.version;
        let content = PromptContent::from_stored(&stored.content).map_err(|source| {
            RegistryError::Unreadable {
                name: name.to_owned(),
                version,
                source,
            }
        })?;
        let resolved = Arc::new(ResolvedPrompt {
            name: reference.name.clone(),
            version,
            content,
        });
        if let Ok(mut cache) = self.cache.write() {
            cache.insert(key, resolved.clone());
        }
        Ok(resolved)
    }

    fn cache_get(&self, key: &str) -> Option<Arc<ResolvedPrompt>> {
        self.cache.read().ok()?.get(key).cloned()
    }

    /// Drops the cache entries that follow labels; pinned versions stay.
    fn forget_labels(&self) {
        if let Ok(mut cache) = self.cache.write() {
            cache.retain(|key, _| key.contains('#'));
        }
    }

    /// Checks the store's change counter and forgets label entries when another writer (this
    /// replica or another) changed the registry. True when something changed.
    pub async fn refresh(&self) -> Result<bool, RegistryError> {
        let now = self.store.prompts().change_counter().await?;
        let before = self.seen_changes.swap(now, Ordering::SeqCst);
        if now != before {
            self.forget_labels();
            tracing::debug!(
                changes = now,
                "prompt registry changed; label cache dropped"
            );
        }
        Ok(now != before)
    }

    /// Runs `refresh` every `prompts.refresh_interval_ms` until `stop` is cancelled.
    pub fn spawn_refresher(
        self: &Arc<Self>,
        stop: CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        let registry = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(registry.refresh_interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tick.tick() => {
                        if let Err(e) = registry.refresh().await {
                            tracing::warn!(error = %crate::error_chain(&e), "cannot check the prompt registry for changes");
                        }
                    }
                }
            }
        })
    }

    /// Points `label` at `version`. `latest` only follows pushes; protected labels need
    /// `force`.
    pub async fn move_label(
        &self,
        name: &PromptName,
        label: &Label,
        version: i64,
        actor: &str,
        force: bool,
    ) -> Result<MoveOutcome, RegistryError> {
        if label.as_str() == LATEST_LABEL {
            return Err(RegistryError::Invalid(
                "label `latest` follows the newest version by itself and cannot be moved".into(),
            ));
        }
        if self.is_protected(label.as_str()) && !force {
            return Err(RegistryError::Protected {
                label: label.as_str().to_owned(),
            });
        }
        let outcome = self
            .store
            .prompts()
            .move_label(name.as_str(), label.as_str(), version, actor)
            .await?;
        if matches!(outcome, MoveOutcome::Moved(_)) {
            self.forget_labels();
        }
        Ok(outcome)
    }

    /// Moves `label` back to where it pointed before its last move.
    pub async fn rollback(
        &self,
        name: &PromptName,
        label: &Label,
        actor: &str,
        force: bool,
    ) -> Result<MoveOutcome, RegistryError> {
        let history = self.history(name).await?;
        let last = history
            .iter()
            .rev()
            .find(|m| m.label == label.as_str())
            .ok_or_else(|| {
                RegistryError::NotFound(format!(
                    "label `{label}` of prompt `{name}` has never been set",
                    label = label.as_str(),
                    name = name.as_str()
                ))
            })?;
        let previous = last.from.ok_or_else(|| {
            RegistryError::Invalid(format!(
                "label `{}` has pointed only at version {}: there is nothing to roll back to",
                label.as_str(),
                last.to
            ))
        })?;
        self.move_label(name, label, previous, actor, force).await
    }

    pub async fn list(&self) -> Result<Vec<PromptSummary>, RegistryError> {
        Ok(self.store.prompts().list_prompts().await?)
    }

    pub async fn versions(&self, name: &PromptName) -> Result<Vec<LabelledVersion>, RegistryError> {
        let versions = self.store.prompts().list_versions(name.as_str()).await?;
        if versions.is_empty() {
            return Err(RegistryError::NotFound(format!(
                "no prompt named `{}`",
                name.as_str()
            )));
        }
        Ok(versions)
    }

    pub async fn history(&self, name: &PromptName) -> Result<Vec<LabelMove>, RegistryError> {
        // An unknown prompt has no history, but saying so beats an empty list.
        self.versions(name).await?;
        Ok(self.store.prompts().label_history(name.as_str()).await?)
    }

    /// A version as the YAML a prompt file would hold: what diffs compare and `pull` writes.
    pub async fn version_yaml(
        &self,
        name: &PromptName,
        version: i64,
    ) -> Result<String, RegistryError> {
        let reference = PromptRef {
            name: name.clone(),
            selector: Selector::Version(
                super::PromptVersion::new(u32::try_from(version).unwrap_or(0)).ok_or_else(
                    || {
                        RegistryError::NotFound(format!(
                            "no version {version} of `{}`",
                            name.as_str()
                        ))
                    },
                )?,
            ),
        };
        let resolved = self.resolve(&reference).await?;
        super::to_yaml(name, &resolved.content)
            .map_err(|e| RegistryError::Invalid(format!("cannot write the prompt as YAML: {e}")))
    }

    /// The line diff between two versions' YAML forms (template and parameters).
    pub async fn diff(
        &self,
        name: &PromptName,
        from: i64,
        to: i64,
    ) -> Result<Vec<DiffLine>, RegistryError> {
        let old = self.version_yaml(name, from).await?;
        let new = self.version_yaml(name, to).await?;
        Ok(diff_lines(&old, &new))
    }

    /// Counts one request served by `version` of `name`.
    pub fn record_served(&self, name: &str, version: i64) {
        if let Ok(mut served) = self.served.lock() {
            *served.entry((name.to_owned(), version)).or_insert(0) += 1;
        }
    }

    /// Requests served by each version of `name` since this process started.
    pub fn served(&self, name: &str) -> BTreeMap<i64, u64> {
        let Ok(served) = self.served.lock() else {
            return BTreeMap::new();
        };
        served
            .iter()
            .filter(|((n, _), _)| n == name)
            .map(|((_, v), count)| (*v, *count))
            .collect()
    }
}

/// A line diff of two texts (Myers, through `similar`).
pub fn diff_lines(old: &str, new: &str) -> Vec<DiffLine> {
    let diff = similar::TextDiff::from_lines(old, new);
    diff.iter_all_changes()
        .map(|change| DiffLine {
            tag: match change.tag() {
                similar::ChangeTag::Equal => "equal",
                similar::ChangeTag::Delete => "delete",
                similar::ChangeTag::Insert => "insert",
            },
            old_line: change.old_index().map(|i| i + 1),
            new_line: change.new_index().map(|i| i + 1),
            text: change.value().trim_end_matches(['\n', '\r']).to_owned(),
        })
        .collect()
}
