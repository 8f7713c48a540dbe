//! Prompt files: reading one (`.yaml`, `.yml`, or `.md` with front matter), loading a
//! directory of them, and writing one back as YAML (`pull`). Errors name the file, and where the
//! YAML parser knows it, the line, column and key.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::content::{ContentError, ContentParts, MessageTemplate, PromptContent, Role};
use super::ident::PromptName;
use super::markdown::{self, LayoutError};
use super::params::{Params, ResponseFormat};
use super::variables::{VariableName, VariableSpec};

/// A prompt read from a file: its name and checked content, and where it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct PromptFile {
    pub path: PathBuf,
    pub name: PromptName,
    pub content: PromptContent,
}

#[derive(Debug, thiserror::Error)]
pub enum PromptFileError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The YAML (or front matter) does not parse, or has a key or value the format does not
    /// allow. `message` says where, and names the key when one is unknown.
    #[error("{}: {message}", path.display())]
    Yaml {
        path: PathBuf,
        line: Option<u64>,
        column: Option<u64>,
        /// The unknown key, when that is the problem.
        key: Option<String>,
        message: String,
    },
    #[error("{}:{line}: {message}", path.display())]
    Markdown {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error("{}: {source}", path.display())]
    Content { path: PathBuf, source: ContentError },
    #[error("{}: not a prompt file: prompt files end in .yaml, .yml or .md", path.display())]
    NotAPromptFile { path: PathBuf },
    #[error("prompt `{name}` is defined twice: in {} and in {}", first.display(), second.display())]
    DuplicateName {
        name: PromptName,
        first: PathBuf,
        second: PathBuf,
    },
    #[error("cannot write prompt `{name}` as YAML: {message}")]
    WriteYaml { name: PromptName, message: String },
}

/// The YAML form: the name, then the content's parts.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct YamlPrompt {
    name: PromptName,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    model: Option<String>,
    #[serde(default, skip_serializing_if = "Params::is_empty")]
    params: Params,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    variables: BTreeMap<VariableName, VariableSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    response_format: Option<ResponseFormat>,
    messages: Vec<MessageTemplate>,
}

/// The Markdown form's front matter: the YAML form without `messages` (the body holds them),
/// with `role` to make the whole body one message.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FrontMatter {
    name: PromptName,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    params: Params,
    #[serde(default)]
    variables: BTreeMap<VariableName, VariableSpec>,
    #[serde(default)]
    response_format: Option<ResponseFormat>,
    #[serde(default)]
    role: Option<Role>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Form {
    Yaml,
    Markdown,
}

fn form_of(path: &Path) -> Option<Form> {
    let extension = path.extension()?.to_str()?;
    if extension.eq_ignore_ascii_case("yaml") || extension.eq_ignore_ascii_case("yml") {
        Some(Form::Yaml)
    } else if extension.eq_ignore_ascii_case("md") {
        Some(Form::Markdown)
    } else {
        None
    }
}

/// Files in a prompts directory that document it rather than define a prompt.
fn is_documentation(path: &Path) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.eq_ignore_ascii_case("README.md"))
}

impl PromptFile {
    /// Read and parse the prompt file at `path`.
    pub fn read(path: &Path) -> Result<Self, PromptFileError> {
        let text = std::fs::read_to_string(path).map_err(|source| PromptFileError::Io {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(path, &text)
    }

    /// Parse `text` as the prompt file at `path`, whose extension picks the form. Line endings
    /// are normalised first, so a checkout with CRLF gets the same content hash.
    pub fn parse(path: &Path, text: &str) -> Result<Self, PromptFileError> {
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let text = text.replace("\r\n", "\n");
        match form_of(path) {
            Some(Form::Yaml) => Self::parse_yaml(path, &text),
            Some(Form::Markdown) => Self::parse_markdown(path, &text),
            None => Err(PromptFileError::NotAPromptFile {
                path: path.to_owned(),
            }),
        }
    }

    fn parse_yaml(path: &Path, text: &str) -> Result<Self, PromptFileError> {
        let file: YamlPrompt = serde_saphyr::from_str(text).map_err(|e| yaml_error(path, &e))?;
        let parts = ContentParts {
            description: file.description,
            model: file.model,
            params: file.params,
            variables: file.variables,
            response_format: file.response_format,
            messages: file.messages,
        };
        Self::checked(path, file.name, parts)
    }

    fn parse_markdown(path: &Path, text: &str) -> Result<Self, PromptFileError> {
        let layout = |e: LayoutError| PromptFileError::Markdown {
            path: path.to_owned(),
            line: e.line,
            message: e.message,
        };
        let split = markdown::split_front_matter(text).map_err(layout)?;
        let front: FrontMatter =
            serde_saphyr::from_str(split.front_matter).map_err(|e| yaml_error(path, &e))?;
        let messages = match front.role {
            Some(role) => markdown::single_message(role, split.body, split.body_line),
            None => markdown::sections(split.body, split.body_line),
        }
        .map_err(layout)?;
        let parts = ContentParts {
            description: front.description,
            model: front.model,
            params: front.params,
            variables: front.variables,
            response_format: front.response_format,
            messages,
        };
        Self::checked(path, front.name, parts)
    }

    fn checked(
        path: &Path,
        name: PromptName,
        parts: ContentParts,
    ) -> Result<Self, PromptFileError> {
        let content = PromptContent::new(parts).map_err(|source| PromptFileError::Content {
            path: path.to_owned(),
            source,
        })?;
        Ok(PromptFile {
            path: path.to_owned(),
            name,
            content,
        })
    }

    /// The prompt in the YAML form, which parses back to the same content hash. Templates with
    /// several lines are written as literal blocks (`|`), so the file stays editable.
    pub fn to_yaml(&self) -> Result<String, PromptFileError> {
        to_yaml(&self.name, &self.content)
    }
}

/// `name` and `content` in the YAML form: what `pull` writes for a stored version.
pub fn to_yaml(name: &PromptName, content: &PromptContent) -> Result<String, PromptFileError> {
    let parts = content.parts().clone();
    let file = YamlPrompt {
        name: name.clone(),
        description: parts.description,
        model: parts.model,
        params: parts.params,
        variables: parts.variables,
        response_format: parts.response_format,
        messages: parts.messages,
    };
    // Never fold a long line (`>`): a template reads best as written, and folding relies on
    // the reader to unfold the same way.
    let options = serde_saphyr::ser_options! {
        folded_wrap_chars: usize::MAX,
    };
    serde_saphyr::to_string_with_options(&file, options).map_err(|e| PromptFileError::WriteYaml {
        name: name.clone(),
        message: e.to_string(),
    })
}

fn yaml_error(path: &Path, e: &serde_saphyr::Error) -> PromptFileError {
    // The plain error, not the snippet rendering: the message already says where, and
    // callers print it on one line.
    let plain = e.without_snippet();
    let key = match plain {
        serde_saphyr::Error::SerdeUnknownField { field, .. } => Some(field.clone()),
        _ => None,
    };
    let location = e.location();
    PromptFileError::Yaml {
        path: path.to_owned(),
        line: location.map(|l| l.line()),
        column: location.map(|l| l.column()),
        key,
        message: plain.to_string(),
    }
}

/// Every prompt file in `dir` (not its subdirectories; `README.md` and hidden files are skipped),
/// sorted by path. Two files defining the same name is an error naming both.
pub fn load_dir(dir: &Path) -> Result<Vec<PromptFile>, PromptFileError> {
    let io = |source| PromptFileError::Io {
        path: dir.to_owned(),
        source,
    };
    let mut paths = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let path = entry.map_err(io)?.path();
        let hidden = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with('.'));
        if !hidden && path.is_file() && form_of(&path).is_some() && !is_documentation(&path) {
            paths.push(path);
        }
    }
    paths.sort();

    let mut seen: BTreeMap<PromptName, PathBuf> = BTreeMap::new();
    let mut files = Vec::with_capacity(paths.len());
    for path in paths {
        let file = PromptFile::read(&path)?;
        if let Some(first) = seen.get(&file.name) {
            return Err(PromptFileError::DuplicateName {
                name: file.name,
                first: first.clone(),
                second: path,
            });
        }
        seen.insert(file.name.clone(), path);
        files.push(file);
    }
    Ok(files)
}
