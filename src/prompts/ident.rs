//! How prompts are named and referred to: [`PromptName`], [`Label`], [`PromptVersion`] and
//! [`PromptRef`] (`name`, `name@label`, `name#3`). Each is built only by parsing, so holding one
//! means it is well formed.

use std::fmt;
use std::num::NonZeroU32;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The rule for [`PromptName`], quoted in errors. Names go into URLs, file names and metric
/// labels, so they are lower-case and free of `/`, `@` and `#` (the last two separate a
/// reference's label or version).
pub const NAME_RULE: &str = "a prompt name is 1 to 64 characters of a-z, 0-9, `_`, `.` and `-`, \
starting with a letter or digit";

/// The rule for [`Label`], quoted in errors: Langfuse's rule, so labels move between the two.
pub const LABEL_RULE: &str = "a label is 1 to 36 characters of a-z, 0-9, `_`, `.` and `-`";

const NAME_MAX: usize = 64;
const LABEL_MAX: usize = 36;

/// Why a name, label, version or reference did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RefError {
    #[error("invalid prompt name `{0}`: {NAME_RULE}")]
    Name(String),
    #[error("invalid label `{0}`: {LABEL_RULE}")]
    Label(String),
    #[error("invalid version `{0}`: a version is a whole number from 1")]
    Version(String),
    #[error("invalid prompt reference `{0}`: use `name`, `name@label` or `name#version`, not both")]
    Reference(String),
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '.' | '-')
}

/// A prompt's name: `^[a-z0-9][a-z0-9_.-]{0,63}$` (see [`NAME_RULE`]).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PromptName(String);

impl PromptName {
    pub fn parse(text: &str) -> Result<Self, RefError> {
        let starts_well = text
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
        if starts_well && text.len() <= NAME_MAX && text.chars().all(is_name_char) {
            Ok(PromptName(text.to_owned()))
        } else {
            Err(RefError::Name(text.to_owned()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A movable pointer to one version of a prompt: `^[a-z0-9_.-]{1,36}$` (see [`LABEL_RULE`]).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Label(String);

impl Label {
    /// What a bare `name` reference resolves through.
    pub const PRODUCTION: &str = "production";

    pub fn parse(text: &str) -> Result<Self, RefError> {
        if !text.is_empty() && text.len() <= LABEL_MAX && text.chars().all(is_name_char) {
            Ok(Label(text.to_owned()))
        } else {
            Err(RefError::Label(text.to_owned()))
        }
    }

    pub fn production() -> Self {
        Label(Self::PRODUCTION.to_owned())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A prompt's version number: 1 for the first content pushed under a name, then 2, 3, …
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PromptVersion(NonZeroU32);

impl PromptVersion {
    pub const FIRST: PromptVersion = PromptVersion(NonZeroU32::MIN);

    /// Digits only: `+3`, `03` and ` 3` are refused so that a version has one spelling.
    pub fn parse(text: &str) -> Result<Self, RefError> {
        let canonical = !text.is_empty()
            && text.bytes().all(|b| b.is_ascii_digit())
            && !(text.len() > 1 && text.starts_with('0'));
        text.parse::<NonZeroU32>()
            .ok()
            .filter(|_| canonical)
            .map(PromptVersion)
            .ok_or_else(|| RefError::Version(text.to_owned()))
    }

    pub fn new(number: u32) -> Option<Self> {
        NonZeroU32::new(number).map(PromptVersion)
    }

    pub fn get(self) -> u32 {
        self.0.get()
    }

    /// The version after this one; `None` past `u32::MAX`.
    pub fn next(self) -> Option<Self> {
        self.0.checked_add(1).map(PromptVersion)
    }
}

/// Which version of a prompt a reference picks.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Selector {
    /// Whatever version the label points at now.
    Label(Label),
    /// That version, forever: versions are immutable.
    Version(PromptVersion),
}

/// A reference to one version of a prompt: `name` (the version labelled `production`),
/// `name@label`, or `name#3`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PromptRef {
    pub name: PromptName,
    pub selector: Selector,
}

impl PromptRef {
    pub fn parse(text: &str) -> Result<Self, RefError> {
        // Neither separator can occur in a name, label or version, so the first one found is
        // the only one allowed.
        match (text.find('@'), text.find('#')) {
            (Some(_), Some(_)) => Err(RefError::Reference(text.to_owned())),
            (Some(at), None) => Ok(PromptRef {
                name: PromptName::parse(&text[..at])?,
                selector: Selector::Label(Label::parse(&text[at + 1..])?),
            }),
            (None, Some(hash)) => Ok(PromptRef {
                name: PromptName::parse(&text[..hash])?,
                selector: Selector::Version(PromptVersion::parse(&text[hash + 1..])?),
            }),
            (None, None) => Ok(PromptRef {
                name: PromptName::parse(text)?,
                selector: Selector::Label(Label::production()),
            }),
        }
    }
}

macro_rules! text_conversions {
    ($($ty:ident),*) => {$(
        impl FromStr for $ty {
            type Err = RefError;
            fn from_str(text: &str) -> Result<Self, RefError> {
                $ty::parse(text)
            }
        }

        impl TryFrom<String> for $ty {
            type Error = RefError;
            fn try_from(text: String) -> Result<Self, RefError> {
                $ty::parse(&text)
            }
        }
    )*};
}

text_conversions!(PromptName, Label, PromptVersion, PromptRef);

impl From<PromptName> for String {
    fn from(name: PromptName) -> String {
        name.0
    }
}

impl From<Label> for String {
    fn from(label: Label) -> String {
        label.0
    }
}

impl fmt::Display for PromptName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Display for Label {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Display for PromptVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// The shortest spelling that parses back to the same reference: a bare name for `production`.
impl fmt::Display for PromptRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.selector {
            Selector::Label(label) if label.as_str() == Label::PRODUCTION => {
                write!(f, "{}", self.name)
            }
            Selector::Label(label) => write!(f, "{}@{label}", self.name),
            Selector::Version(version) => write!(f, "{}#{version}", self.name),
        }
    }
}
