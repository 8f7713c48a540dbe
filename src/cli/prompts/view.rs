//! How registry values read on a terminal: one-line outcomes, tables, a version's header and
//! a diff. Pure text, so the layout is tested without a database; no I/O here.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use chrono::{DateTime, Utc};

use crate::prompts::DiffLine;
use crate::store::{
    LATEST_LABEL, LabelMove, LabelledVersion, MoveCause, MoveOutcome, PromptSummary, PushOutcome,
};

/// Enough of the hash to tell versions apart at a glance; `show` prints all of it.
const SHORT_HASH: usize = 12;

const RED: &str = "\x1b[31m";
const GREEN: &str = "\x1b[32m";
const RESET: &str = "\x1b[0m";

/// `created greeting v3 (sha256 abcd1234abcd…)` or `unchanged greeting v3`.
pub(super) fn push_line(outcome: &PushOutcome) -> String {
    match outcome {
        PushOutcome::Created(meta) => {
            let short: String = meta.content_hash.chars().take(SHORT_HASH).collect();
            format!(
                "created {} v{} (sha256 {short}…)",
                meta.prompt, meta.version
            )
        }
        PushOutcome::Unchanged(meta) => format!("unchanged {} v{}", meta.prompt, meta.version),
    }
}

/// `production: 2 → 3`, `staging: unset → 1`, or `production already at 3`.
pub(super) fn move_line(outcome: &MoveOutcome) -> String {
    match outcome {
        MoveOutcome::Moved(moved) => format!("{}: {}", moved.label, transition(moved)),
        MoveOutcome::Unchanged { label, version } => format!("{label} already at {version}"),
    }
}

fn transition(moved: &LabelMove) -> String {
    match moved.from {
        Some(from) => format!("{from} → {}", moved.to),
        None => format!("unset → {}", moved.to),
    }
}

/// Labels in a stable order people read well: alphabetical, with `latest`, which only
/// follows pushes, last.
fn ordered_labels<'a>(labels: impl IntoIterator<Item = &'a str>) -> Vec<&'a str> {
    let mut labels: Vec<&str> = labels.into_iter().collect();
    labels.sort_by_key(|l| (*l == LATEST_LABEL, *l));
    labels
}

/// `production=2 staging=3 latest=3`.
fn label_versions(labels: &BTreeMap<String, i64>) -> String {
    ordered_labels(labels.keys().map(String::as_str))
        .into_iter()
        .map(|label| format!("{label}={}", labels.get(label).copied().unwrap_or_default()))
        .collect::<Vec<_>>()
        .join(" ")
}

fn time(t: &DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

/// Columns left-aligned, two spaces apart; the last column is not padded.
fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let header: Vec<String> = header.iter().map(|h| (*h).to_owned()).collect();
    for row in std::iter::once(&header).chain(rows) {
        let mut line = String::new();
        for (i, (cell, width)) in row.iter().zip(&widths).enumerate() {
            if i + 1 == row.len() {
                line.push_str(cell);
            } else {
                let pad = width.saturating_sub(cell.chars().count()) + 2;
                line.push_str(cell);
                line.extend(std::iter::repeat_n(' ', pad));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

pub(super) fn prompt_table(prompts: &[PromptSummary]) -> String {
    let rows: Vec<Vec<String>> = prompts
        .iter()
        .map(|p| {
            vec![
                p.name.clone(),
                p.latest_version.to_string(),
                label_versions(&p.labels),
                time(&p.updated_at),
            ]
        })
        .collect();
    table(&["NAME", "LATEST", "LABELS", "LAST CHANGE"], &rows)
}

pub(super) fn history_table(moves: &[LabelMove]) -> String {
    let rows: Vec<Vec<String>> = moves
        .iter()
        .map(|m| {
            vec![
                time(&m.moved_at),
                m.label.clone(),
                transition(m),
                m.actor.clone(),
                match m.cause {
                    MoveCause::Push => "push",
                    MoveCause::Move => "move",
                }
                .to_owned(),
            ]
        })
        .collect();
    table(&["TIME", "LABEL", "MOVE", "BY", "CAUSE"], &rows)
}

/// The version's facts as YAML comments, so `show`'s whole output is still a prompt file.
pub(super) fn version_header(version: &LabelledVersion) -> String {
    let meta = &version.meta;
    let labels = ordered_labels(version.labels.iter().map(String::as_str));
    let mut out = String::new();
    let mut field = |key: &str, value: &str| {
        let mut lines = value.lines();
        let first = lines.next().unwrap_or_default();
        let _ = writeln!(out, "# {key:<8} {first}");
        // A message of several lines stays a comment on each.
        for line in lines {
            let _ = writeln!(out, "# {:<8} {line}", "");
        }
    };
    field("prompt:", &meta.prompt);
    field("version:", &meta.version.to_string());
    field(
        "labels:",
        &if labels.is_empty() {
            "(none)".to_owned()
        } else {
            labels.join(" ")
        },
    );
    field("author:", &meta.author);
    field("created:", &time(&meta.created_at));
    if let Some(message) = &meta.message {
        field("message:", message);
    }
    field("sha256:", &meta.content_hash);
    out
}

/// Every line of both versions, `-` only in the older, `+` only in the newer, ` ` in both;
/// in red and green when `color`.
pub(super) fn diff_text(lines: &[DiffLine], color: bool) -> String {
    let mut out = String::new();
    for line in lines {
        let (sign, paint) = match line.tag {
            "delete" => ('-', RED),
            "insert" => ('+', GREEN),
            _ => (' ', ""),
        };
        if color && !paint.is_empty() {
            let _ = writeln!(out, "{paint}{sign}{}{RESET}", line.text);
        } else {
            let _ = writeln!(out, "{sign}{}", line.text);
        }
    }
    out
}

/// Only the changed lines, for `pull` to say what it overwrote.
pub(super) fn changed_lines(lines: &[DiffLine]) -> String {
    let changed: Vec<DiffLine> = lines.iter().filter(|l| l.tag != "equal").cloned().collect();
    diff_text(&changed, false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prompts::diff_lines;
    use crate::store::VersionMeta;

    fn at(ms: i64) -> DateTime<Utc> {
        DateTime::from_timestamp_millis(ms).unwrap()
    }

    fn meta(version: i64) -> VersionMeta {
        VersionMeta {
            prompt: "greeting".into(),
            version,
            content_hash: "0123456789abcdef".repeat(4),
            author: "ana".into(),
            message: None,
            created_at: at(0),
        }
    }

    #[test]
    fn push_lines_name_the_prompt_version_and_short_hash() {
        assert_eq!(
            push_line(&PushOutcome::Created(meta(3))),
            "created greeting v3 (sha256 0123456789ab…)"
        );
        assert_eq!(
            push_line(&PushOutcome::Unchanged(meta(3))),
            "unchanged greeting v3"
        );
    }

    #[test]
    fn labels_read_alphabetically_with_latest_last() {
        let labels: BTreeMap<String, i64> = [("latest", 3), ("staging", 3), ("production", 2)]
            .into_iter()
            .map(|(l, v)| (l.to_owned(), v))
            .collect();
        assert_eq!(label_versions(&labels), "production=2 staging=3 latest=3");
    }

    #[test]
    fn table_columns_line_up_and_lines_have_no_trailing_spaces() {
        let rows = vec![
            vec!["a".into(), "1".into(), "".into()],
            vec!["longer".into(), "22".into(), "x".into()],
        ];
        assert_eq!(
            table(&["NAME", "N", "END"], &rows),
            "NAME    N   END\na       1\nlonger  22  x\n"
        );
    }

    #[test]
    fn moves_read_from_to_and_a_new_label_reads_unset() {
        let moved = |from| {
            MoveOutcome::Moved(LabelMove {
                label: "production".into(),
                from,
                to: 3,
                actor: "ana".into(),
                cause: MoveCause::Move,
                moved_at: at(0),
            })
        };
        assert_eq!(move_line(&moved(Some(2))), "production: 2 → 3");
        assert_eq!(move_line(&moved(None)), "production: unset → 3");
        let same = MoveOutcome::Unchanged {
            label: "production".into(),
            version: 3,
        };
        assert_eq!(move_line(&same), "production already at 3");
    }

    #[test]
    fn header_is_yaml_comments_with_every_line_of_the_message() {
        let mut m = meta(2);
        m.message = Some("first line\nsecond line".into());
        let header = version_header(&LabelledVersion {
            meta: m,
            labels: vec!["latest".into(), "production".into()],
        });
        assert!(header.lines().all(|l| l.starts_with("# ")), "{header}");
        assert!(
            header.contains("# labels:  production latest\n"),
            "{header}"
        );
        assert!(
            header.contains("first line\n#          second line\n"),
            "{header}"
        );
        assert!(
            header.contains("# created: 1970-01-01 00:00:00 UTC\n"),
            "{header}"
        );
    }

    #[test]
    fn diff_marks_lines_and_colours_only_changes_when_asked() {
        let lines = diff_lines("a\nb\n", "a\nc\n");
        assert_eq!(diff_text(&lines, false), " a\n-b\n+c\n");
        assert_eq!(
            diff_text(&lines, true),
            format!(" a\n{RED}-b{RESET}\n{GREEN}+c{RESET}\n")
        );
        assert_eq!(changed_lines(&lines), "-b\n+c\n");
    }
}
