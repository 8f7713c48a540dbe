//! Tests of the prompt format, identity and rendering, one file per concern.

use std::path::Path;

use super::{PromptFile, PromptFileError};

mod content;
mod file;
mod ident;
mod markdown;
mod render;

fn yaml(text: &str) -> PromptFile {
    PromptFile::parse(Path::new("prompts/p.yaml"), text).unwrap()
}

fn yaml_error(text: &str) -> PromptFileError {
    PromptFile::parse(Path::new("prompts/p.yaml"), text).unwrap_err()
}

fn markdown(text: &str) -> PromptFile {
    PromptFile::parse(Path::new("prompts/p.md"), text).unwrap()
}

fn markdown_error(text: &str) -> PromptFileError {
    PromptFile::parse(Path::new("prompts/p.md"), text).unwrap_err()
}

/// A one-message YAML prompt around `template`, declaring `variables` (a YAML mapping body).
fn prompt_with(template: &str, variables: &str) -> PromptFile {
    yaml(&format!(
        "name: t\nvariables: {variables}\nmessages:\n  - role: user\n    content: {}\n",
        serde_json::Value::String(template.to_owned())
    ))
}
