//! The prompt registry's repository: prompts, their immutable numbered versions, the labels
//! that point at versions, and the history of every label move.
//!
//! Every write locks its prompt before reading anything it decides on (SQLite: the write
//! transaction's lock; Postgres: the prompt's row), so concurrent pushes get consecutive
//! numbers, never the same one, and a push of unchanged content is recognised even when
//! another push of it is in flight. A write that changes nothing rolls back and records
//! nothing.
//!
//! Strings are sorted here, not in SQL: the two engines collate text differently.
//!
//! Must not contain policy: valid names and labels, protected labels, who may write.

use std::collections::BTreeMap;
use std::collections::btree_map::Entry;

use chrono::{DateTime, Utc};
use sqlx::any::AnyRow;
use sqlx::{Any, AnyPool, Row, Transaction};

use super::{Backend, StoreError, now_ms, time_from_ms};

/// The label every push moves to the version it creates.
pub const LATEST_LABEL: &str = "latest";

/// This aggregate's row in `change_counters`.
const CHANGE_SCOPE: &str = "prompts";

/// What a push stores. `content_hash` is the caller's hash of exactly `content`'s bytes.
#[derive(Debug, Clone, Copy)]
pub struct NewVersion<'a> {
    pub content: &'a str,
    pub content_hash: &'a str,
    pub author: &'a str,
    pub message: Option<&'a str>,
}

/// A version without its content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionMeta {
    pub prompt: String,
    /// From 1, per prompt.
    pub version: i64,
    pub content_hash: String,
    pub author: String,
    pub message: Option<String>,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PromptVersion {
    pub meta: VersionMeta,
    /// JSON text, as pushed.
    pub content: String,
}

/// A version and the labels that point at it now, sorted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabelledVersion {
    pub meta: VersionMeta,
    pub labels: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PromptSummary {
    pub name: String,
    pub latest_version: i64,
    /// Label → version.
    pub labels: BTreeMap<String, i64>,
    pub created_at: DateTime<Utc>,
    /// The last push or label move.
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PushOutcome {
    Created(VersionMeta),
    /// The content's hash equals the latest version's: nothing was written. Holds that version.
    Unchanged(VersionMeta),
}

impl PushOutcome {
    pub fn meta(&self) -> &VersionMeta {
        match self {
            PushOutcome::Created(meta) | PushOutcome::Unchanged(meta) => meta,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MoveCause {
    /// `latest` followed a push.
    Push,
    /// Someone moved the label.
    Move,
}

impl MoveCause {
    fn as_str(self) -> &'static str {
        match self {
            MoveCause::Push => "push",
            MoveCause::Move => "move",
        }
    }

    fn parse(text: &str) -> Result<MoveCause, StoreError> {
        match text {
            "push" => Ok(MoveCause::Push),
            "move" => Ok(MoveCause::Move),
            other => Err(StoreError::Corrupt(format!(
                "an unknown label move cause `{other}`"
            ))),
        }
    }
}

/// One entry of a prompt's label history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabelMove {
    pub label: String,
    /// None when the move created the label.
    pub from: Option<i64>,
    pub to: i64,
    pub actor: String,
    pub cause: MoveCause,
    pub moved_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MoveOutcome {
    Moved(LabelMove),
    /// The label already pointed at the version: nothing was recorded.
    Unchanged {
        label: String,
        version: i64,
    },
}

/// The prompt registry. Cheap to clone; get one from [`super::Store::prompts`].
#[derive(Debug, Clone)]
pub struct Prompts {
    pool: AnyPool,
    backend: Backend,
}

impl Prompts {
    pub(super) fn new(pool: AnyPool, backend: Backend) -> Prompts {
        Prompts { pool, backend }
    }

    /// Stores `new` as the next version of `name` (creating the prompt at version 1) and moves
    /// `latest` to it, both in one transaction; unless `new.content_hash` equals the latest
    /// version's, when nothing is written.
    pub async fn push_version(
        &self,
        name: &str,
        new: NewVersion<'_>,
    ) -> Result<PushOutcome, StoreError> {
        let mut tx = self.begin_write().await?;
        // Creates the prompt if it is new; a concurrent creator of the same name makes this
        // wait for its commit and then do nothing. Undone with the rest if nothing changes.
        sqlx::query(
            "INSERT INTO prompts (name, created_at, updated_at) VALUES ($1, $2, $2)
             ON CONFLICT (name) DO NOTHING",
        )
        .bind(name)
        .bind(now_ms())
        .execute(&mut *tx)
        .await?;
        let prompt_id = lock_prompt(&mut tx, name).await?.ok_or_else(|| {
            StoreError::Corrupt(format!("no row for prompt `{name}` after insert"))
        })?;
        // After the lock, so that versions' times follow their numbers.
        let now = now_ms();
        let latest = sqlx::query(
            "SELECT version, content_hash, author, message, created_at FROM prompt_versions
             WHERE prompt_id = $1 ORDER BY version DESC LIMIT 1",
        )
        .bind(prompt_id)
        .fetch_optional(&mut *tx)
        .await?
        .map(|row| version_meta(&row, name))
        .transpose()?;
        let version = latest.as_ref().map_or(1, |l| l.version + 1);
        if let Some(latest) = latest.filter(|l| l.content_hash == new.content_hash) {
            tx.rollback().await?;
            return Ok(PushOutcome::Unchanged(latest));
        }
        let meta = VersionMeta {
            prompt: name.to_owned(),
            version,
            content_hash: new.content_hash.to_owned(),
            author: new.author.to_owned(),
            message: new.message.map(str::to_owned),
            created_at: time_from_ms(now)?,
        };
        sqlx::query(
            "INSERT INTO prompt_versions
             (prompt_id, version, content, content_hash, author, message, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(prompt_id)
        .bind(meta.version)
        .bind(new.content)
        .bind(new.content_hash)
        .bind(new.author)
        .bind(new.message)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        let from = label_version(&mut tx, prompt_id, LATEST_LABEL).await?;
        let moved = LabelMove {
            label: LATEST_LABEL.to_owned(),
            from,
            to: meta.version,
            actor: new.author.to_owned(),
            cause: MoveCause::Push,
            moved_at: meta.created_at,
        };
        record_move(&mut tx, prompt_id, &moved, now).await?;
        tx.commit().await?;
        Ok(PushOutcome::Created(meta))
    }

    /// Points `label` of `name` at `version`, creating the label if needed, and records the
    /// move. Moving a label to where it already points records nothing.
    pub async fn move_label(
        &self,
        name: &str,
        label: &str,
        version: i64,
        actor: &str,
    ) -> Result<MoveOutcome, StoreError> {
        let mut tx = self.begin_write().await?;
        let prompt_id = lock_prompt(&mut tx, name)
            .await?
            .ok_or_else(|| not_found_prompt(name))?;
        let exists: Option<i64> = sqlx::query_scalar(
            "SELECT version FROM prompt_versions WHERE prompt_id = $1 AND version = $2",
        )
        .bind(prompt_id)
        .bind(version)
        .fetch_optional(&mut *tx)
        .await?;
        if exists.is_none() {
            return Err(not_found_version(name, version));
        }
        let from = label_version(&mut tx, prompt_id, label).await?;
        if from == Some(version) {
            tx.rollback().await?;
            return Ok(MoveOutcome::Unchanged {
                label: label.to_owned(),
                version,
            });
        }
        let now = now_ms();
        let moved = LabelMove {
            label: label.to_owned(),
            from,
            to: version,
            actor: actor.to_owned(),
            cause: MoveCause::Move,
            moved_at: time_from_ms(now)?,
        };
        record_move(&mut tx, prompt_id, &moved, now).await?;
        tx.commit().await?;
        Ok(MoveOutcome::Moved(moved))
    }

    pub async fn get_version(&self, name: &str, version: i64) -> Result<PromptVersion, StoreError> {
        let row = sqlx::query(
            "SELECT v.version, v.content, v.content_hash, v.author, v.message, v.created_at
             FROM prompt_versions v JOIN prompts p ON p.id = v.prompt_id
             WHERE p.name = $1 AND v.version = $2",
        )
        .bind(name)
        .bind(version)
        .fetch_optional(&self.pool)
        .await?;
        match row {
            Some(row) => prompt_version(&row, name),
            None if self.exists(name).await? => Err(not_found_version(name, version)),
            None => Err(not_found_prompt(name)),
        }
    }

    /// The version `label` points at.
    pub async fn get_by_label(&self, name: &str, label: &str) -> Result<PromptVersion, StoreError> {
        let row = sqlx::query(
            "SELECT v.version, v.content, v.content_hash, v.author, v.message, v.created_at
             FROM prompt_labels l
             JOIN prompts p ON p.id = l.prompt_id
             JOIN prompt_versions v ON v.prompt_id = l.prompt_id AND v.version = l.version
             WHERE p.name = $1 AND l.label = $2",
        )
        .bind(name)
        .bind(label)
        .fetch_optional(&self.pool)
        .await?;
        match row {
            Some(row) => prompt_version(&row, name),
            None if self.exists(name).await? => Err(StoreError::NotFound(format!(
                "label `{label}` of prompt `{name}`"
            ))),
            None => Err(not_found_prompt(name)),
        }
    }

    /// Every version of `name`, oldest first, each with its labels.
    pub async fn list_versions(&self, name: &str) -> Result<Vec<LabelledVersion>, StoreError> {
        // One statement, so versions and labels come from one snapshot on both engines.
        let rows = sqlx::query(
            "SELECT v.version, v.content_hash, v.author, v.message, v.created_at, l.label
             FROM prompts p
             JOIN prompt_versions v ON v.prompt_id = p.id
             LEFT JOIN prompt_labels l ON l.prompt_id = v.prompt_id AND l.version = v.version
             WHERE p.name = $1
             ORDER BY v.version",
        )
        .bind(name)
        .fetch_all(&self.pool)
        .await?;
        let mut versions: Vec<LabelledVersion> = Vec::new();
        for row in &rows {
            let version: i64 = row.try_get("version")?;
            if versions.last().is_none_or(|v| v.meta.version != version) {
                versions.push(LabelledVersion {
                    meta: version_meta(row, name)?,
                    labels: Vec::new(),
                });
            }
            if let (Some(label), Some(last)) = (
                row.try_get::<Option<String>, _>("label")?,
                versions.last_mut(),
            ) {
                last.labels.push(label);
            }
        }
        if versions.is_empty() {
            // Every prompt has a version from the push that created it.
            return Err(not_found_prompt(name));
        }
        for v in &mut versions {
            v.labels.sort();
        }
        Ok(versions)
    }

    /// Every prompt, by name.
    pub async fn list_prompts(&self) -> Result<Vec<PromptSummary>, StoreError> {
        let rows = sqlx::query(
            "SELECT p.name, p.created_at, p.updated_at,
                    (SELECT max(v.version) FROM prompt_versions v WHERE v.prompt_id = p.id)
                        AS latest_version,
                    l.label, l.version AS label_version
             FROM prompts p LEFT JOIN prompt_labels l ON l.prompt_id = p.id",
        )
        .fetch_all(&self.pool)
        .await?;
        let mut prompts: BTreeMap<String, PromptSummary> = BTreeMap::new();
        for row in &rows {
            let name: String = row.try_get("name")?;
            let summary = match prompts.entry(name) {
                Entry::Occupied(e) => e.into_mut(),
                Entry::Vacant(e) => {
                    let latest: Option<i64> = row.try_get("latest_version")?;
                    let latest_version = latest.ok_or_else(|| {
                        StoreError::Corrupt(format!("prompt `{}` without a version", e.key()))
                    })?;
                    let summary = PromptSummary {
                        name: e.key().clone(),
                        latest_version,
                        labels: BTreeMap::new(),
                        created_at: time_from_ms(row.try_get("created_at")?)?,
                        updated_at: time_from_ms(row.try_get("updated_at")?)?,
                    };
                    e.insert(summary)
                }
            };
            if let Some(label) = row.try_get::<Option<String>, _>("label")? {
                summary.labels.insert(label, row.try_get("label_version")?);
            }
        }
        Ok(prompts.into_values().collect())
    }

    /// Every label move of `name`, oldest first.
    pub async fn label_history(&self, name: &str) -> Result<Vec<LabelMove>, StoreError> {
        let rows = sqlx::query(
            "SELECT m.label, m.from_version, m.to_version, m.actor, m.cause, m.moved_at
             FROM label_moves m JOIN prompts p ON p.id = m.prompt_id
             WHERE p.name = $1
             ORDER BY m.id",
        )
        .bind(name)
        .fetch_all(&self.pool)
        .await?;
        if rows.is_empty() {
            // Every prompt's history starts with the push that created it.
            return Err(not_found_prompt(name));
        }
        rows.iter()
            .map(|row| {
                Ok(LabelMove {
                    label: row.try_get("label")?,
                    from: row.try_get("from_version")?,
                    to: row.try_get("to_version")?,
                    actor: row.try_get("actor")?,
                    cause: MoveCause::parse(row.try_get("cause")?)?,
                    moved_at: time_from_ms(row.try_get("moved_at")?)?,
                })
            })
            .collect()
    }

    /// Rises with every write to the registry, in that write's transaction. A replica that
    /// sees a value other than the one it last saw reloads what it caches.
    pub async fn change_counter(&self) -> Result<i64, StoreError> {
        super::change_counter::read(&self.pool, CHANGE_SCOPE).await
    }

    async fn begin_write(&self) -> Result<Transaction<'static, Any>, StoreError> {
        Ok(self.pool.begin_with(self.backend.begin_write()).await?)
    }

    async fn exists(&self, name: &str) -> Result<bool, StoreError> {
        let id: Option<i64> = sqlx::query_scalar("SELECT id FROM prompts WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        Ok(id.is_some())
    }
}

/// The prompt's id, its row now locked until the transaction ends (on Postgres; SQLite's write
/// transaction already excludes every other writer). An UPDATE rather than `SELECT … FOR
/// UPDATE`, which SQLite does not have; it changes nothing.
async fn lock_prompt(
    tx: &mut Transaction<'static, Any>,
    name: &str,
) -> Result<Option<i64>, StoreError> {
    Ok(sqlx::query_scalar(
        "UPDATE prompts SET updated_at = updated_at WHERE name = $1 RETURNING id",
    )
    .bind(name)
    .fetch_optional(&mut **tx)
    .await?)
}

async fn label_version(
    tx: &mut Transaction<'static, Any>,
    prompt_id: i64,
    label: &str,
) -> Result<Option<i64>, StoreError> {
    Ok(
        sqlx::query_scalar("SELECT version FROM prompt_labels WHERE prompt_id = $1 AND label = $2")
            .bind(prompt_id)
            .bind(label)
            .fetch_optional(&mut **tx)
            .await?,
    )
}

/// Points the label, appends the move to the history, marks the prompt changed and raises the
/// change counter: every write ends here.
async fn record_move(
    tx: &mut Transaction<'static, Any>,
    prompt_id: i64,
    moved: &LabelMove,
    now: i64,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO prompt_labels (prompt_id, label, version, updated_at, updated_by)
         VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (prompt_id, label) DO UPDATE SET
            version = excluded.version,
            updated_at = excluded.updated_at,
            updated_by = excluded.updated_by",
    )
    .bind(prompt_id)
    .bind(&moved.label)
    .bind(moved.to)
    .bind(now)
    .bind(&moved.actor)
    .execute(&mut **tx)
    .await?;
    sqlx::query(
        "INSERT INTO label_moves
         (prompt_id, label, from_version, to_version, actor, cause, moved_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(prompt_id)
    .bind(&moved.label)
    .bind(moved.from)
    .bind(moved.to)
    .bind(&moved.actor)
    .bind(moved.cause.as_str())
    .bind(now)
    .execute(&mut **tx)
    .await?;
    sqlx::query("UPDATE prompts SET updated_at = $2 WHERE id = $1")
        .bind(prompt_id)
        .bind(now)
        .execute(&mut **tx)
        .await?;
    super::change_counter::bump(tx, CHANGE_SCOPE).await
}

fn version_meta(row: &AnyRow, prompt: &str) -> Result<VersionMeta, StoreError> {
    Ok(VersionMeta {
        prompt: prompt.to_owned(),
        version: row.try_get("version")?,
        content_hash: row.try_get("content_hash")?,
        author: row.try_get("author")?,
        message: row.try_get("message")?,
        created_at: time_from_ms(row.try_get("created_at")?)?,
    })
}

fn prompt_version(row: &AnyRow, prompt: &str) -> Result<PromptVersion, StoreError> {
    Ok(PromptVersion {
        meta: version_meta(row, prompt)?,
        content: row.try_get("content")?,
    })
}

fn not_found_prompt(name: &str) -> StoreError {
    StoreError::NotFound(format!("prompt `{name}`"))
}

fn not_found_version(name: &str, version: i64) -> StoreError {
    StoreError::NotFound(format!("version {version} of prompt `{name}`"))
}
