//! Writing a stored version into a directory of prompt files, so that editing and pushing it
//! again goes through git like any other change.
//!
//! The choice made here: the file that defines the prompt is overwritten without asking, and
//! the lines that changed are printed. The directory is meant to be under version control, so
//! `git diff` shows the change and `git checkout` undoes it, and asking for `--force` on every
//! pull would only train people to type it. `--force` is needed only where more would be lost
//! than an edit of that prompt's own file: the prompt is written in the Markdown form (pull
//! writes YAML, so the `.md` file would be replaced by a `.yaml` one), or `NAME.yaml` exists but
//! defines another prompt or does not parse. A file whose content already equals the version
//! is left as it is, whatever its form, so pulling then pushing creates nothing new.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

use super::view;
use crate::prompts::{PromptFile, PromptName, diff_lines};

/// A version to write.
pub(super) struct Pulled<'a> {
    pub name: &'a PromptName,
    pub content_hash: &'a str,
    pub yaml: &'a str,
}

pub(super) enum PullOutcome {
    /// A file already held this content.
    Unchanged { path: PathBuf },
    /// No file defined the prompt.
    Created { path: PathBuf },
    /// The prompt's file was overwritten; `changes` lists the changed lines.
    Updated { path: PathBuf, changes: String },
    /// The prompt's Markdown file, or an unrelated file at the target, was replaced.
    Replaced { old: PathBuf, new: PathBuf },
}

impl PullOutcome {
    pub(super) fn describe(&self, name: &PromptName, version: i64) -> String {
        match self {
            PullOutcome::Unchanged { path } => {
                format!("unchanged {} ({name} v{version})\n", path.display())
            }
            PullOutcome::Created { path } => {
                format!("wrote {} ({name} v{version})\n", path.display())
            }
            PullOutcome::Updated { path, changes } => {
                format!(
                    "updated {} to {name} v{version}:\n{changes}",
                    path.display()
                )
            }
            PullOutcome::Replaced { old, new } if old == new => {
                format!("overwrote {} with {name} v{version}\n", new.display())
            }
            PullOutcome::Replaced { old, new } => format!(
                "replaced {} with {} ({name} v{version})\n",
                old.display(),
                new.display()
            ),
        }
    }
}

/// What the directory holds for the prompt now.
struct Existing {
    /// Files that parse and define the prompt.
    defining: Vec<PromptFile>,
}

fn is_yaml(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("yaml") || e.eq_ignore_ascii_case("yml"))
}

/// Reads every file of `dir` that is a prompt file defining `name`. Files that do not parse
/// are skipped here: they are not this prompt's as far as anyone can tell, and `push` reports
/// them.
fn scan(dir: &Path, name: &PromptName) -> anyhow::Result<Existing> {
    let mut defining = Vec::new();
    let entries = std::fs::read_dir(dir)
        .with_context(|| format!("reading the directory {}", dir.display()))?;
    for entry in entries {
        let path = entry
            .with_context(|| format!("reading the directory {}", dir.display()))?
            .path();
        let hidden = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_none_or(|n| n.starts_with('.'));
        if hidden || !path.is_file() {
            continue;
        }
        if let Ok(file) = PromptFile::read(&path)
            && &file.name == name
        {
            defining.push(file);
        }
    }
    defining.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(Existing { defining })
}

pub(super) fn write(dir: &Path, pulled: &Pulled<'_>, force: bool) -> anyhow::Result<PullOutcome> {
    let name = pulled.name;
    std::fs::create_dir_all(dir)
        .with_context(|| format!("creating the directory {}", dir.display()))?;
    let existing = scan(dir, name)?;
    let target = dir.join(format!("{name}.yaml"));
    match existing.defining.as_slice() {
        [] => {}
        [file] if file.content.content_hash().as_str() == pulled.content_hash => {
            return Ok(PullOutcome::Unchanged {
                path: file.path.clone(),
            });
        }
        [file] if is_yaml(&file.path) => {
            let old = std::fs::read_to_string(&file.path)
                .with_context(|| format!("reading {}", file.path.display()))?;
            write_file(&file.path, pulled.yaml)?;
            return Ok(PullOutcome::Updated {
                path: file.path.clone(),
                changes: view::changed_lines(&diff_lines(&old, pulled.yaml)),
            });
        }
        [file] => {
            if !force {
                bail!(
                    "{} defines `{name}` in the Markdown form and pull writes YAML: pass --force \
                     to replace it with {}",
                    file.path.display(),
                    target.display()
                );
            }
            if target.exists() && target != file.path {
                bail!(
                    "{} defines `{name}`, but {} exists too: move one of them away first",
                    file.path.display(),
                    target.display()
                );
            }
            write_file(&target, pulled.yaml)?;
            std::fs::remove_file(&file.path)
                .with_context(|| format!("removing {}", file.path.display()))?;
            return Ok(PullOutcome::Replaced {
                old: file.path.clone(),
                new: target,
            });
        }
        [first, second, ..] => bail!(
            "prompt `{name}` is defined twice: in {} and in {}; keep one before pulling",
            first.path.display(),
            second.path.display()
        ),
    }
    if target.exists() {
        if !force {
            let why = match PromptFile::read(&target) {
                Ok(other) => format!("it defines `{}`", other.name),
                Err(e) => format!("it is not a valid prompt file: {e}"),
            };
            bail!(
                "{} exists and does not define `{name}` ({why}): pass --force to overwrite it",
                target.display()
            );
        }
        write_file(&target, pulled.yaml)?;
        return Ok(PullOutcome::Replaced {
            old: target.clone(),
            new: target,
        });
    }
    write_file(&target, pulled.yaml)?;
    Ok(PullOutcome::Created { path: target })
}

/// Writes through a hidden file beside the target and renames it over, so a reader (or a
/// push started meanwhile) sees the old file or the new one, never half of one.
fn write_file(path: &Path, text: &str) -> anyhow::Result<()> {
    let file_name = path
        .file_name()
        .and_then(|n| n.to_str())
        .with_context(|| format!("{} is not a file path", path.display()))?;
    let temporary = path.with_file_name(format!(".{file_name}.pull"));
    std::fs::write(&temporary, text).with_context(|| format!("writing {}", temporary.display()))?;
    std::fs::rename(&temporary, path).with_context(|| format!("writing {}", path.display()))
}
