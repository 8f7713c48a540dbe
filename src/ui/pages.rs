//! The dashboard's pages: the prompt list, one prompt's versions and label history (with the
//! forms that move labels), and the side-by-side diff of two versions. Each handler asks the
//! registry and shapes its answer into a view for a template.
//!
//! Must not contain SQL or provider calls, nor the label actions themselves (`actions`).

use std::collections::BTreeMap;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use minijinja::context;
use minijinja::value::Serde;
use serde::{Deserialize, Serialize};

use super::view::{self, UiError};
use crate::prompts::{DiffLine, Label, PromptName, PromptVersion, RegistryError};
use crate::server::AppState;
use crate::store::{LATEST_LABEL, LabelledVersion, MoveCause, PromptEval};

/// How many hex digits of a content hash the history shows: enough to tell versions apart
/// at a glance, as git's short hashes do; the full hash is in the cell's title.
const SHORT_HASH: usize = 12;

pub fn auth_on(state: &AppState) -> bool {
    !state.keys.is_empty()
}

/// A prompt name from a URL; a malformed one names no prompt, so it is a 404.
pub fn prompt_name(text: &str) -> Result<PromptName, UiError> {
    PromptName::parse(text).map_err(|e| UiError::not_found(e.to_string()))
}

/// A version number from a form or query string.
pub fn version_number(text: &str) -> Result<i64, UiError> {
    PromptVersion::parse(text.trim())
        .map(|v| i64::from(v.get()))
        .map_err(|e| UiError::bad_request(e.to_string()))
}

#[derive(Serialize)]
struct PromptRow {
    name: String,
    latest_version: i64,
    labels: Vec<(String, i64)>,
    updated_at: String,
}

pub async fn prompt_list(State(state): State<AppState>) -> Response {
    let auth = auth_on(&state);
    let prompts = match state.registry.list().await {
        Ok(prompts) => prompts,
        Err(e) => return UiError::from(e).with_auth(auth).into_response(),
    };
    let rows: Vec<PromptRow> = prompts
        .into_iter()
        .map(|p| PromptRow {
            updated_at: view::time(&p.updated_at),
            labels: p.labels.into_iter().collect(),
            latest_version: p.latest_version,
            name: p.name,
        })
        .collect();
    view::page(
        StatusCode::OK,
        "list.html",
        auth,
        context! { prompts => Serde(rows) },
    )
}

/// A message from the action that redirected here, rebuilt from validated parts so that a
/// crafted link cannot put arbitrary text on the page.
#[derive(Debug, Deserialize)]
pub struct FlashQuery {
    done: Option<String>,
    label: Option<String>,
    version: Option<String>,
}

impl FlashQuery {
    fn message(&self) -> Option<String> {
        let label = Label::parse(self.label.as_deref()?).ok()?;
        let version = PromptVersion::parse(self.version.as_deref()?).ok()?.get();
        let label = label.as_str();
        match self.done.as_deref()? {
            "moved" => Some(format!("Label `{label}` now points at version {version}.")),
            "rolled-back" => Some(format!(
                "Label `{label}` rolled back: it points at version {version} again."
            )),
            "unchanged" => Some(format!(
                "Label `{label}` already pointed at version {version}: nothing changed."
            )),
            _ => None,
        }
    }
}

pub async fn prompt(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(flash): Query<FlashQuery>,
) -> Response {
    let auth = auth_on(&state);
    let result = async {
        let name = prompt_name(&name)?;
        prompt_page(&state, &name, flash.message(), None).await
    };
    result
        .await
        .unwrap_or_else(|e| e.with_auth(auth).into_response())
}

/// Eval runs shown on a prompt's page, newest first.
const EVAL_ROWS: u32 = 50;

/// A suite's verdict on a version: its newest run that tested the version.
#[derive(Serialize)]
struct VersionEval {
    suite: String,
    run: i64,
    met: bool,
}

/// One target of an eval run that called a version of the prompt.
#[derive(Serialize)]
struct EvalRow {
    run: i64,
    suite: String,
    version: i64,
    target: String,
    model: String,
    pass_rate: String,
    attempts: String,
    met: bool,
    run_passed: bool,
    baseline: bool,
    started_at: String,
}

impl From<&PromptEval> for EvalRow {
    fn from(e: &PromptEval) -> Self {
        let t = &e.target;
        let rate = if t.attempts == 0 {
            0.0
        } else {
            100.0 * t.passed_attempts as f64 / t.attempts as f64
        };
        EvalRow {
            run: e.run.id,
            suite: e.run.suite.clone(),
            version: t.prompt.as_ref().map_or(0, |(_, v)| *v),
            target: t.label.clone(),
            model: t.model.clone(),
            pass_rate: format!("{rate:.1}%"),
            attempts: format!("{}/{}", t.passed_attempts, t.attempts),
            met: t.met_threshold,
            run_passed: e.run.passed,
            baseline: e.run.blessed,
            started_at: view::time(&e.run.started_at),
        }
    }
}

#[derive(Serialize)]
struct VersionRow {
    version: i64,
    /// Each suite's newest verdict on this version.
    evals: Vec<VersionEval>,
    labels: Vec<String>,
    author: String,
    message: Option<String>,
    created_at: String,
    hash: String,
    hash_short: String,
    served: u64,
    previous: Option<i64>,
}

#[derive(Serialize)]
struct LabelRow {
    name: String,
    version: i64,
    protected: bool,
    /// `latest` follows pushes and cannot be moved by hand.
    movable: bool,
    /// Where a rollback would point the label: where it pointed before its last move.
    rollback_to: Option<i64>,
}

#[derive(Serialize)]
struct MoveRow {
    label: String,
    from: Option<i64>,
    to: i64,
    actor: String,
    cause: &'static str,
    moved_at: String,
}

/// The prompt page, with a notice after a successful action or, with a 4xx `error.0`, the
/// reason an action failed.
pub async fn prompt_page(
    state: &AppState,
    name: &PromptName,
    notice: Option<String>,
    error: Option<(StatusCode, String)>,
) -> Result<Response, UiError> {
    let registry = &state.registry;
    let versions = registry.versions(name).await?;
    let history = registry.history(name).await?;
    let served = registry.served(name.as_str());

    let labels = label_rows(state, &versions, &history);
    let evals = registry
        .store()
        .eval_runs()
        .for_prompt(name.as_str(), EVAL_ROWS)
        .await
        .map_err(RegistryError::from)?;
    let version_evals = |version: i64| {
        let mut newest: Vec<VersionEval> = Vec::new();
        for e in evals
            .iter()
            .filter(|e| e.target.prompt.as_ref().is_some_and(|(_, v)| *v == version))
        {
            match newest.iter_mut().find(|n| n.suite == e.run.suite) {
                // Several targets of the newest run: the version met it only if all did.
                Some(n) if n.run == e.run.id => n.met &= e.target.met_threshold,
                Some(_) => {}
                None => newest.push(VersionEval {
                    suite: e.run.suite.clone(),
                    run: e.run.id,
                    met: e.target.met_threshold,
                }),
            }
        }
        newest
    };
    let version_rows: Vec<VersionRow> = versions
        .iter()
        .rev()
        .map(|v| VersionRow {
            version: v.meta.version,
            evals: version_evals(v.meta.version),
            labels: v.labels.clone(),
            author: v.meta.author.clone(),
            message: v.meta.message.clone(),
            created_at: view::time(&v.meta.created_at),
            hash_short: v.meta.content_hash.chars().take(SHORT_HASH).collect(),
            hash: v.meta.content_hash.clone(),
            served: served.get(&v.meta.version).copied().unwrap_or(0),
            previous: (v.meta.version > 1).then_some(v.meta.version - 1),
        })
        .collect();
    let moves: Vec<MoveRow> = history
        .iter()
        .rev()
        .map(|m| MoveRow {
            label: m.label.clone(),
            from: m.from,
            to: m.to,
            actor: m.actor.clone(),
            cause: match m.cause {
                MoveCause::Push => "push",
                MoveCause::Move => "move",
            },
            moved_at: view::time(&m.moved_at),
        })
        .collect();
    let latest = versions.last().map_or(1, |v| v.meta.version);
    // The content is shown, not required: an unreadable version still has a history.
    let (latest_yaml, latest_yaml_error) = match registry.version_yaml(name, latest).await {
        Ok(yaml) => (Some(yaml), None),
        Err(e) => (None, Some(e.to_string())),
    };
    let mut known_protected: Vec<String> = labels
        .iter()
        .filter(|l| l.protected)
        .map(|l| l.name.clone())
        .collect();
    if registry.is_protected(Label::PRODUCTION)
        && !known_protected.iter().any(|l| l == Label::PRODUCTION)
    {
        known_protected.push(Label::PRODUCTION.to_owned());
    }
    let status = error.as_ref().map_or(StatusCode::OK, |(status, _)| *status);
    let ctx = context! {
        name => name.as_str(),
        versions => Serde(version_rows),
        labels => Serde(labels),
        moves => Serde(moves),
        evals => Serde(evals.iter().map(EvalRow::from).collect::<Vec<_>>()),
        latest,
        latest_yaml,
        latest_yaml_error,
        known_protected,
        diff_from => (latest > 1).then_some(latest - 1),
        notice,
        error => error.map(|(_, message)| message),
    };
    Ok(view::page(status, "prompt.html", auth_on(state), ctx))
}

fn label_rows(
    state: &AppState,
    versions: &[LabelledVersion],
    history: &[crate::store::LabelMove],
) -> Vec<LabelRow> {
    let current: BTreeMap<&str, i64> = versions
        .iter()
        .flat_map(|v| v.labels.iter().map(|l| (l.as_str(), v.meta.version)))
        .collect();
    current
        .into_iter()
        .map(|(label, version)| LabelRow {
            name: label.to_owned(),
            version,
            protected: state.registry.is_protected(label),
            movable: label != LATEST_LABEL,
            rollback_to: history
                .iter()
                .rev()
                .find(|m| m.label == label)
                .and_then(|m| m.from),
        })
        .collect()
}

#[derive(Debug, Deserialize)]
pub struct DiffQuery {
    from: Option<String>,
    to: Option<String>,
}

pub async fn diff(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(query): Query<DiffQuery>,
) -> Response {
    let auth = auth_on(&state);
    let result = async {
        let name = prompt_name(&name)?;
        let (Some(from), Some(to)) = (query.from.as_deref(), query.to.as_deref()) else {
            return Err(UiError::bad_request(
                "Choose two versions to compare: /ui/prompts/NAME/diff?from=1&to=2",
            ));
        };
        let (from, to) = (version_number(from)?, version_number(to)?);
        let versions = state.registry.versions(&name).await?;
        for v in [from, to] {
            if !versions.iter().any(|known| known.meta.version == v) {
                return Err(UiError::not_found(format!(
                    "prompt `{}` has no version {v}",
                    name.as_str()
                )));
            }
        }
        let lines = state.registry.diff(&name, from, to).await?;
        let inserted = lines.iter().filter(|l| l.tag == "insert").count();
        let deleted = lines.iter().filter(|l| l.tag == "delete").count();
        let ctx = context! {
            name => name.as_str(),
            from,
            to,
            rows => Serde(side_by_side(&lines)),
            inserted,
            deleted,
            versions => versions.iter().rev().map(|v| v.meta.version).collect::<Vec<_>>(),
        };
        Ok(view::page(StatusCode::OK, "diff.html", auth, ctx))
    };
    result
        .await
        .unwrap_or_else(|e| e.with_auth(auth).into_response())
}

/// One side of a row of the side-by-side diff.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DiffCell {
    pub line: usize,
    pub text: String,
}

/// A row of the side-by-side diff: the old line on the left, the new on the right. A change
/// pairs deleted lines with the inserted lines that replace them, in order; the longer side
/// of a change has rows with nothing opposite.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DiffRow {
    /// `equal` or `change`.
    pub kind: &'static str,
    pub left: Option<DiffCell>,
    pub right: Option<DiffCell>,
}

pub fn side_by_side(lines: &[DiffLine]) -> Vec<DiffRow> {
    let mut rows = Vec::new();
    let mut deleted: Vec<DiffCell> = Vec::new();
    let mut inserted: Vec<DiffCell> = Vec::new();
    let flush =
        |rows: &mut Vec<DiffRow>, deleted: &mut Vec<DiffCell>, inserted: &mut Vec<DiffCell>| {
            let n = deleted.len().max(inserted.len());
            let mut left = deleted.drain(..);
            let mut right = inserted.drain(..);
            for _ in 0..n {
                rows.push(DiffRow {
                    kind: "change",
                    left: left.next(),
                    right: right.next(),
                });
            }
        };
    for line in lines {
        match (line.tag, line.old_line, line.new_line) {
            ("delete", Some(old), _) => deleted.push(DiffCell {
                line: old,
                text: line.text.clone(),
            }),
            ("insert", _, Some(new)) => inserted.push(DiffCell {
                line: new,
                text: line.text.clone(),
            }),
            (_, old, new) => {
                flush(&mut rows, &mut deleted, &mut inserted);
                rows.push(DiffRow {
                    kind: "equal",
                    left: old.map(|n| DiffCell {
                        line: n,
                        text: line.text.clone(),
                    }),
                    right: new.map(|n| DiffCell {
                        line: n,
                        text: line.text.clone(),
                    }),
                });
            }
        }
    }
    flush(&mut rows, &mut deleted, &mut inserted);
    rows
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prompts::diff_lines;

    fn cell(line: usize, text: &str) -> Option<DiffCell> {
        Some(DiffCell {
            line,
            text: text.to_owned(),
        })
    }

    #[test]
    fn a_replaced_line_sits_beside_its_replacement() {
        let rows = side_by_side(&diff_lines("a\nb\nc\n", "a\nB\nc\nd\n"));
        assert_eq!(
            rows,
            vec![
                DiffRow {
                    kind: "equal",
                    left: cell(1, "a"),
                    right: cell(1, "a")
                },
                DiffRow {
                    kind: "change",
                    left: cell(2, "b"),
                    right: cell(2, "B")
                },
                DiffRow {
                    kind: "equal",
                    left: cell(3, "c"),
                    right: cell(3, "c")
                },
                DiffRow {
                    kind: "change",
                    left: None,
                    right: cell(4, "d")
                },
            ]
        );
    }

    #[test]
    fn more_deletions_than_insertions_leave_the_right_side_empty() {
        let rows = side_by_side(&diff_lines("x\ny\nz\n", "q\n"));
        assert_eq!(rows.len(), 3);
        assert_eq!(rows[0].right, cell(1, "q"));
        assert!(rows[1].right.is_none() && rows[2].right.is_none());
        assert_eq!(rows[2].left, cell(3, "z"));
    }

    #[test]
    fn flash_messages_are_built_only_from_valid_parts() {
        let flash = |done: &str, label: &str, version: &str| {
            FlashQuery {
                done: Some(done.into()),
                label: Some(label.into()),
                version: Some(version.into()),
            }
            .message()
        };
        assert_eq!(
            flash("moved", "staging", "2").as_deref(),
            Some("Label `staging` now points at version 2.")
        );
        assert_eq!(flash("moved", "<b>", "2"), None);
        assert_eq!(flash("moved", "staging", "2x"), None);
        assert_eq!(flash("hacked", "staging", "2"), None);
    }
}
