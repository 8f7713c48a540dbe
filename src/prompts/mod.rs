//! Prompts as versioned, named templates: the prompt file format, versioning (content hash,
//! immutable versions, movable labels) and rendering (minijinja, strict).
//!
//! Must not contain storage details (tables, queries, how versions are numbered in a store) or
//! transport (HTTP, OpenAI request types): a store keeps [`PromptContent::to_stored`]'s text and
//! [`ContentHash`]; a handler turns a [`RenderError`] into a 400 with [`RenderError::param`].
//!
//! # File format
//!
//! One prompt per file in `prompts/`, in either form (`prompts/README.md` says the same for
//! prompt authors). Unknown keys are errors naming the file, line and key.
//!
//! **YAML** (`.yaml`, `.yml`):
//!
//! ```yaml
//! name: greeting                  # see NAME_RULE
//! description: Greets someone.    # optional
//! model: smollm2-135m-instruct    # optional: the caller's request may name another
//! params:                         # optional, each key optional
//!   temperature: 0.2              # also top_p, max_tokens, stop, presence_penalty,
//!   max_tokens: 40                #   frequency_penalty, seed
//!   extra: { logit_bias: {} }     # any other OpenAI field, passed through as written
//! variables:                      # optional
//!   name: { type: string, description: Who to greet. }
//!   tone: { type: string, default: warm }   # a default makes a variable optional
//! response_format:                # optional, OpenAI's shape (text, json_object, json_schema)
//!   type: json_schema
//!   json_schema: { name: greeting, schema: { type: object } }
//! messages:
//!   - role: system                # system, developer, user or assistant
//!     content: You are a {{ tone }} assistant.
//!   - role: user
//!     content: Say hello to {{ name }}.
//! ```
//!
//! Variable types: `string`, `number`, `integer` (whole numbers only), `boolean`, `array`,
//! `object`, `any` (`null` included).
//!
//! **Markdown** (`.md`): the same keys except `messages` as YAML front matter between `---`
//! lines, and the messages in the body, either
//!
//! - with `role: user` (or another role) in the front matter: the whole body is that one
//!   message; or
//! - as sections: each line `## system`, `## developer`, `## user` or `## assistant` (any case)
//!   starts a message, which runs to the next such line. Other headings (`## Notes`), and these
//!   inside fenced code blocks, are text. Only blank lines may come before the first section.
//!
//! Each message is its text without the blank lines around it and without a final newline; a
//! YAML `content: |-` block is the same text, so the same prompt in either form has the same
//! hash. A template that must contain a `## user` line is written in the YAML form.
//!
//! # Templates
//!
//! minijinja, configured as Hugging Face chat templates are (`trim_blocks`, `lstrip_blocks`,
//! Python string methods, values printed as Python prints them), with no autoescaping and
//! strict undefined variables. `tojson` writes JSON as is (no HTML escaping). When a prompt is
//! loaded, each template must compile and may name only declared variables (and minijinja's
//! globals such as `range`); declared variables no template uses are allowed, so a new version
//! can stop using one that old callers still send. Each template is also rendered once with
//! sample values (defaults, else an empty value of the type), so an unknown filter or test, or
//! an `{% include %}`, on that path fails the load; one on another path fails at render as
//! [`RenderError::BrokenTemplate`], the prompt's fault rather than the caller's.
//!
//! # Identity
//!
//! A prompt's [`PromptContent`] is everything but its name and file: messages, variables,
//! model, params, response format, description. Its canonical JSON (sorted keys, no
//! whitespace, absent optional parts left out; Python's `json.dumps(c, sort_keys=True,
//! separators=(",", ":"), ensure_ascii=False)`) is what a store keeps, and its SHA-256 is the
//! [`ContentHash`]: pushing unchanged content yields the same hash whatever the form or key
//! order, and any change, whitespace in a template included, yields another. References are
//! `name` (the version labelled `production`), `name@label` or `name#3` ([`PromptRef`]).

mod content;
mod file;
mod ident;
mod markdown;
mod params;
mod registry;
mod render;
mod variables;

pub use content::{
    ContentError, ContentHash, ContentHashError, ContentParts, MessageTemplate, PromptContent, Role,
};
pub use file::{PromptFile, PromptFileError, load_dir, to_yaml};
pub use ident::{
    LABEL_RULE, Label, NAME_RULE, PromptName, PromptRef, PromptVersion, RefError, Selector,
};
pub use params::{JsonSchemaSpec, Params, ResponseFormat};
pub use registry::{DiffLine, Registry, RegistryError, ResolvedPrompt, diff_lines};
pub use render::{RenderError, RenderedMessage, RenderedPrompt, render};
pub use variables::{VARIABLE_RULE, VariableName, VariableNameError, VariableSpec, VariableType};

#[cfg(test)]
mod tests;
