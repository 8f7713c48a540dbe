//! The Markdown form's layout: YAML front matter between `---` lines, then a body that is either
//! one message (front matter `role:`) or `## <role>` sections, one message each. Only the split
//! lives here; the front matter's keys are read by `file`.

use super::content::{MessageTemplate, Role};

/// A layout problem, at a 1-based line of the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct LayoutError {
    pub line: usize,
    pub message: String,
}

fn layout_error(line: usize, message: impl Into<String>) -> LayoutError {
    LayoutError {
        line,
        message: message.into(),
    }
}

/// A Markdown prompt cut in two.
#[derive(Debug)]
pub(super) struct Split<'a> {
    /// From the start of the file up to the closing `---`, the opening `---` included, so that
    /// the YAML parser's line numbers are the file's.
    pub front_matter: &'a str,
    pub body: &'a str,
    /// The file line the body starts on.
    pub body_line: usize,
}

fn is_fence(line: &str) -> bool {
    line.trim_end() == "---"
}

pub(super) fn split_front_matter(text: &str) -> Result<Split<'_>, LayoutError> {
    let mut lines = text.split_inclusive('\n');
    if !lines.next().is_some_and(is_fence) {
        return Err(layout_error(
            1,
            "a Markdown prompt starts with YAML front matter: a `---` line, the keys, and \
             another `---` line",
        ));
    }
    let mut offset = text.find('\n').map_or(text.len(), |i| i + 1);
    for (index, line) in lines.enumerate() {
        // `index` counts from the file's second line.
        if is_fence(line) {
            return Ok(Split {
                front_matter: &text[..offset],
                body: &text[offset + line.len()..],
                body_line: index + 3,
            });
        }
        offset += line.len();
    }
    Err(layout_error(
        1,
        "the front matter has no closing `---` line",
    ))
}

/// The role a `## <role>` heading names (any case), if the line is one.
fn role_heading(line: &str) -> Option<Role> {
    let rest = line.strip_prefix("##")?;
    if !rest.starts_with([' ', '\t']) {
        return None;
    }
    let word = rest.trim();
    Role::ALL
        .into_iter()
        .find(|role| role.as_str().eq_ignore_ascii_case(word))
}

/// Opens or closes a fenced code block, inside which a heading is text.
fn toggles_code_fence(line: &str) -> bool {
    let trimmed = line.trim_start();
    trimmed.starts_with("```") || trimmed.starts_with("~~~")
}

/// The text of `lines` without the blank lines around it and without a final newline.
fn message_text(lines: &[&str]) -> String {
    let blank = |line: &&str| line.trim().is_empty();
    let start = lines.iter().position(|l| !blank(l)).unwrap_or(lines.len());
    let end = lines
        .iter()
        .rposition(|l| !blank(l))
        .map_or(start, |i| i + 1);
    lines[start..end].join("\n")
}

/// The whole body as one message of `role`.
pub(super) fn single_message(
    role: Role,
    body: &str,
    body_line: usize,
) -> Result<Vec<MessageTemplate>, LayoutError> {
    let lines: Vec<&str> = body.lines().collect();
    let content = message_text(&lines);
    if content.is_empty() {
        return Err(layout_error(
            body_line,
            format!("the body, the `{role}` message, is empty"),
        ));
    }
    Ok(vec![MessageTemplate { role, content }])
}

/// One message per `## <role>` section.
pub(super) fn sections(body: &str, body_line: usize) -> Result<Vec<MessageTemplate>, LayoutError> {
    // (role, heading line, text lines)
    let mut found: Vec<(Role, usize, Vec<&str>)> = Vec::new();
    let mut in_code = false;
    for (index, line) in body.lines().enumerate() {
        let number = body_line + index;
        let heading = if in_code { None } else { role_heading(line) };
        if toggles_code_fence(line) {
            in_code = !in_code;
        }
        match (heading, found.last_mut()) {
            (Some(role), _) => found.push((role, number, Vec::new())),
            (None, Some((_, _, lines))) => lines.push(line),
            (None, None) if line.trim().is_empty() => {}
            (None, None) => {
                return Err(layout_error(
                    number,
                    "text before the first message heading: start each message with a \
                     `## system`, `## developer`, `## user` or `## assistant` line, or set \
                     `role:` in the front matter to make the whole body one message",
                ));
            }
        }
    }
    if found.is_empty() {
        return Err(layout_error(
            body_line,
            "no messages: add `## system` / `## user` sections, or set `role:` in the front \
             matter",
        ));
    }
    found
        .into_iter()
        .map(|(role, heading_line, lines)| {
            let content = message_text(&lines);
            if content.is_empty() {
                Err(layout_error(
                    heading_line,
                    format!("the `## {role}` section is empty"),
                ))
            } else {
                Ok(MessageTemplate { role, content })
            }
        })
        .collect()
}
