//! `pasarela prompts …`: the prompt registry from the command line. It works directly on the
//! store the gateway uses (SQLite under `store.data_dir`, or Postgres through
//! `PASARELA_DATABASE_URL`) through [`Registry`], so the same rules hold as over HTTP:
//! protected labels need `--force`, `latest` follows pushes only.
//!
//! This module parses arguments, turns what the user typed (`name@label`, `3`, `staging`)
//! into version numbers with messages that say what exists, and prints. It must not contain
//! SQL (that is `store`) nor registry policy (that is `prompts::Registry`); `pull` owns only
//! how a version is written into a directory of prompt files.

mod pull;
mod view;

use std::io::{IsTerminal, Write};
use std::path::PathBuf;

use anyhow::{Context, bail};

use super::ConfigSource;
use crate::config::Config;
use crate::prompts::{
    Label, PromptFile, PromptName, PromptRef, PromptVersion, Registry, RegistryError, Selector,
    load_dir,
};
use crate::store::{LabelledVersion, Store};

#[derive(Debug, clap::Subcommand)]
pub enum PromptsCommand {
    /// Store each prompt file of a directory (default `prompts.dir`) as a new version where its
    /// content changed; `latest` follows.
    Push(PushArgs),
    /// List the prompts in the registry with their latest version and labels.
    List(ListArgs),
    /// Print one version: who pushed it, when and why, then the prompt as YAML.
    Show(ShowArgs),
    /// Print the line diff between two versions of a prompt.
    Diff(DiffArgs),
    /// Point a label at a version.
    Label(LabelArgs),
    /// Move a label back to the version it pointed at before its last move.
    Rollback(RollbackArgs),
    /// Print every label move of a prompt, pushes included, oldest first.
    History(HistoryArgs),
    /// Write a version into a directory of prompt files (default `prompts.dir`) as YAML.
    Pull(PullArgs),
}

#[derive(Debug, clap::Args)]
pub struct PushArgs {
    /// A directory of prompt files, or one prompt file [default: `prompts.dir` from the config]
    dir: Option<PathBuf>,
    /// Why, recorded with each version this push creates.
    #[arg(long, short)]
    message: Option<String>,
    #[command(flatten)]
    author: Author,
    #[command(flatten)]
    source: ConfigSource,
}

#[derive(Debug, clap::Args)]
pub struct ListArgs {
    #[command(flatten)]
    source: ConfigSource,
}

#[derive(Debug, clap::Args)]
pub struct ShowArgs {
    /// `name` (the version labelled `production`), `name@label` or `name#version`.
    reference: PromptRef,
    /// Print the stored content, canonical JSON whose SHA-256 is the version's hash, instead.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    source: ConfigSource,
}

#[derive(Debug, clap::Args)]
pub struct DiffArgs {
    /// The prompt's name.
    name: PromptName,
    /// The older side: a version number (`3` or `#3`) or a label (`production` or `@production`).
    #[arg(value_parser = parse_selector)]
    from: Selector,
    /// The newer side, written as the older one.
    #[arg(value_parser = parse_selector)]
    to: Selector,
    #[command(flatten)]
    source: ConfigSource,
}

#[derive(Debug, clap::Args)]
pub struct LabelArgs {
    /// The prompt's name.
    name: PromptName,
    /// A version number, or a label whose current version to use (`staging` promotes what
    /// staging points at).
    #[arg(value_parser = parse_selector)]
    version: Selector,
    /// The label to move (or create).
    label: Label,
    /// Move a protected label (`prompts.protected_labels`).
    #[arg(long)]
    force: bool,
    /// Move the label only if this eval suite passes for the version (run in-process, with
    /// every target that calls this prompt pinned to the version; repeatable).
    #[arg(long, value_name = "SUITE")]
    require_eval: Vec<PathBuf>,
    #[command(flatten)]
    author: Author,
    #[command(flatten)]
    source: ConfigSource,
}

#[derive(Debug, clap::Args)]
pub struct RollbackArgs {
    /// The prompt's name.
    name: PromptName,
    /// The label to move back.
    label: Label,
    /// Move a protected label (`prompts.protected_labels`).
    #[arg(long)]
    force: bool,
    #[command(flatten)]
    author: Author,
    #[command(flatten)]
    source: ConfigSource,
}

#[derive(Debug, clap::Args)]
pub struct HistoryArgs {
    /// The prompt's name.
    name: PromptName,
    #[command(flatten)]
    source: ConfigSource,
}

#[derive(Debug, clap::Args)]
pub struct PullArgs {
    /// `name` (the version labelled `production`), `name@label` or `name#version`.
    reference: PromptRef,
    /// Where to write `NAME.yaml` [default: `prompts.dir` from the config]
    dir: Option<PathBuf>,
    /// Replace a file pull would otherwise keep: the prompt written in the Markdown form, or a
    /// file at `NAME.yaml` that does not define this prompt.
    #[arg(long)]
    force: bool,
    #[command(flatten)]
    source: ConfigSource,
}

/// Who a push or label move is recorded as.
#[derive(Debug, clap::Args)]
pub(super) struct Author {
    /// Who makes the change [default: `git config user.name`, else $USER]
    #[arg(long, env = "PASARELA_AUTHOR")]
    author: Option<String>,
}

impl Author {
    /// The flag or `PASARELA_AUTHOR`, else git's user name, else `$USER`, else `unknown`: a
    /// history entry that names nobody would be useless in an incident review.
    pub(super) fn resolve(&self) -> String {
        let given =
            |value: Option<String>| value.map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());
        given(self.author.clone())
            .or_else(|| given(git_user_name()))
            .or_else(|| given(std::env::var("USER").ok()))
            .unwrap_or_else(|| "unknown".to_owned())
    }
}

/// `git config user.name`, when git is installed and has one.
fn git_user_name() -> Option<String> {
    let output = std::process::Command::new("git")
        .args(["config", "user.name"])
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    if !output.status.success() {
        return None;
    }
    String::from_utf8(output.stdout).ok()
}

/// A version as `diff` and `label` take it: digits (optionally after `#`) are a version
/// number, anything else a label (optionally after `@`). A label made only of digits is
/// written `@3`.
fn parse_selector(text: &str) -> Result<Selector, String> {
    if let Some(version) = text.strip_prefix('#') {
        return PromptVersion::parse(version)
            .map(Selector::Version)
            .map_err(|e| e.to_string());
    }
    if let Some(label) = text.strip_prefix('@') {
        return Label::parse(label)
            .map(Selector::Label)
            .map_err(|e| e.to_string());
    }
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        return PromptVersion::parse(text)
            .map(Selector::Version)
            .map_err(|e| e.to_string());
    }
    Label::parse(text)
        .map(Selector::Label)
        .map_err(|e| e.to_string())
}

impl PromptsCommand {
    fn source(&self) -> &ConfigSource {
        match self {
            PromptsCommand::Push(a) => &a.source,
            PromptsCommand::List(a) => &a.source,
            PromptsCommand::Show(a) => &a.source,
            PromptsCommand::Diff(a) => &a.source,
            PromptsCommand::Label(a) => &a.source,
            PromptsCommand::Rollback(a) => &a.source,
            PromptsCommand::History(a) => &a.source,
            PromptsCommand::Pull(a) => &a.source,
        }
    }
}

pub fn run(cmd: PromptsCommand) -> anyhow::Result<()> {
    // One command, a few queries: a thread of its own would buy nothing.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let stdout = std::io::stdout();
    let color = stdout.is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let mut out = stdout.lock();
    let result = runtime
        .block_on(execute(cmd, &mut out, color))
        .and_then(|()| out.flush().context("writing to standard output"));
    match result {
        // `pasarela prompts list | head`: the reader has what it wanted.
        Err(e) if is_broken_pipe(&e) => Ok(()),
        other => other,
    }
}

fn is_broken_pipe(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

async fn execute(cmd: PromptsCommand, out: &mut impl Write, color: bool) -> anyhow::Result<()> {
    let config = cmd.source().load()?;
    let store = Store::open(&config.store).await?;
    let registry = Registry::new(store.clone(), &config.prompts).await?;
    let result = match cmd {
        PromptsCommand::Push(args) => push(&registry, &config, args, out).await,
        PromptsCommand::List(_) => list(&registry, out).await,
        PromptsCommand::Show(args) => show(&registry, args, out).await,
        PromptsCommand::Diff(args) => diff(&registry, args, out, color).await,
        PromptsCommand::Label(args) => label(&registry, &config, args, out).await,
        PromptsCommand::Rollback(args) => rollback(&registry, args, out).await,
        PromptsCommand::History(args) => history(&registry, args, out).await,
        PromptsCommand::Pull(args) => pull(&registry, &config, args, out).await,
    };
    // SQLite folds its WAL back into the database file when the last connection closes.
    store.close().await;
    result
}

async fn push(
    registry: &Registry,
    config: &Config,
    args: PushArgs,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let dir = args.dir.unwrap_or_else(|| config.prompts.dir.clone());
    // Every file is read and checked before anything is written, so one bad file leaves the
    // registry as it was.
    let files = if dir.is_file() {
        vec![PromptFile::read(&dir)?]
    } else {
        load_dir(&dir)?
    };
    if files.is_empty() {
        bail!(
            "no prompt files in {}: prompt files end in .yaml, .yml or .md",
            dir.display()
        );
    }
    let author = args.author.resolve();
    for file in &files {
        let outcome = registry
            .push(file, &author, args.message.as_deref())
            .await
            .with_context(|| format!("pushing `{}` from {}", file.name, file.path.display()))?;
        writeln!(out, "{}", view::push_line(&outcome))?;
    }
    Ok(())
}

async fn list(registry: &Registry, out: &mut impl Write) -> anyhow::Result<()> {
    let prompts = registry.list().await?;
    if prompts.is_empty() {
        // On stderr, so that a script reading the table gets an empty one.
        eprintln!("no prompts yet: `pasarela prompts push` stores the files of a directory");
        return Ok(());
    }
    out.write_all(view::prompt_table(&prompts).as_bytes())?;
    Ok(())
}

async fn show(registry: &Registry, args: ShowArgs, out: &mut impl Write) -> anyhow::Result<()> {
    let versions = Versions::load(registry, &args.reference.name).await?;
    let version = versions.pick(&args.reference.selector)?;
    let resolved = registry
        .resolve(&pinned(&versions.name, version.meta.version)?)
        .await?;
    if args.json {
        writeln!(out, "{}", resolved.content.to_stored())?;
        return Ok(());
    }
    let yaml = registry
        .version_yaml(&versions.name, version.meta.version)
        .await?;
    out.write_all(view::version_header(version).as_bytes())?;
    out.write_all(yaml.as_bytes())?;
    Ok(())
}

async fn diff(
    registry: &Registry,
    args: DiffArgs,
    out: &mut impl Write,
    color: bool,
) -> anyhow::Result<()> {
    let versions = Versions::load(registry, &args.name).await?;
    let from = versions.pick(&args.from)?.meta.version;
    let to = versions.pick(&args.to)?.meta.version;
    let lines = registry.diff(&versions.name, from, to).await?;
    let name = versions.name.as_str();
    let side = |selector: &Selector, version: i64| match selector {
        Selector::Label(label) => format!("{name}#{version} ({label})"),
        Selector::Version(_) => format!("{name}#{version}"),
    };
    writeln!(out, "--- {}", side(&args.from, from))?;
    writeln!(out, "+++ {}", side(&args.to, to))?;
    out.write_all(view::diff_text(&lines, color).as_bytes())?;
    Ok(())
}

async fn label(
    registry: &Registry,
    config: &Config,
    args: LabelArgs,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let versions = Versions::load(registry, &args.name).await?;
    let version = versions.pick(&args.version)?.meta.version;
    for suite in &args.require_eval {
        let pinned = u32::try_from(version)
            .ok()
            .and_then(PromptVersion::new)
            .with_context(|| format!("version {version} cannot be pinned"))?;
        // The summary goes out before the verdict, so it reads in order.
        out.flush()?;
        let report = super::eval::run_gate(config, registry, suite, &versions.name, pinned).await?;
        if !report.passed {
            bail!(
                "suite {} failed for {}#{version} (run {}): label `{}` not moved",
                report.suite,
                versions.name,
                report
                    .run_id
                    .map_or_else(|| "not stored".to_owned(), |id| id.to_string()),
                args.label
            );
        }
    }
    let outcome = registry
        .move_label(
            &versions.name,
            &args.label,
            version,
            &args.author.resolve(),
            args.force,
        )
        .await?;
    writeln!(out, "{}", view::move_line(&outcome))?;
    Ok(())
}

async fn rollback(
    registry: &Registry,
    args: RollbackArgs,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    // Loaded first so that an unknown prompt is named as such.
    let versions = Versions::load(registry, &args.name).await?;
    let outcome = registry
        .rollback(
            &versions.name,
            &args.label,
            &args.author.resolve(),
            args.force,
        )
        .await?;
    writeln!(out, "{}", view::move_line(&outcome))?;
    Ok(())
}

async fn history(
    registry: &Registry,
    args: HistoryArgs,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    // Loaded first so that an unknown prompt is named as such.
    let versions = Versions::load(registry, &args.name).await?;
    let moves = registry.history(&versions.name).await?;
    out.write_all(view::history_table(&moves).as_bytes())?;
    Ok(())
}

async fn pull(
    registry: &Registry,
    config: &Config,
    args: PullArgs,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let versions = Versions::load(registry, &args.reference.name).await?;
    let version = versions.pick(&args.reference.selector)?;
    let number = version.meta.version;
    let yaml = registry.version_yaml(&versions.name, number).await?;
    let dir = args.dir.unwrap_or_else(|| config.prompts.dir.clone());
    let outcome = pull::write(
        &dir,
        &pull::Pulled {
            name: &versions.name,
            content_hash: &version.meta.content_hash,
            yaml: &yaml,
        },
        args.force,
    )?;
    out.write_all(outcome.describe(&versions.name, number).as_bytes())?;
    Ok(())
}

/// `name#version`, for resolving a version this command already found.
fn pinned(name: &PromptName, version: i64) -> anyhow::Result<PromptRef> {
    let number = u32::try_from(version)
        .ok()
        .and_then(PromptVersion::new)
        .with_context(|| format!("version {version} of `{name}` is out of range"))?;
    Ok(PromptRef {
        name: name.clone(),
        selector: Selector::Version(number),
    })
}

/// A prompt's versions as the registry holds them now: what a label or number the user typed
/// is checked against, so an error can say what does exist.
struct Versions {
    /// The prompt's name.
    name: PromptName,
    all: Vec<LabelledVersion>,
}

impl Versions {
    async fn load(registry: &Registry, name: &PromptName) -> anyhow::Result<Versions> {
        // The only thing this call can find missing is the prompt itself: say it the way the
        // other messages of this command do.
        let all = registry.versions(name).await.map_err(|e| match e {
            RegistryError::NotFound(_) => anyhow::anyhow!("no prompt named `{name}`"),
            other => other.into(),
        })?;
        Ok(Versions {
            name: name.clone(),
            all,
        })
    }

    fn pick(&self, selector: &Selector) -> anyhow::Result<&LabelledVersion> {
        let name = &self.name;
        match selector {
            Selector::Version(number) => {
                let wanted = i64::from(number.get());
                self.all
                    .iter()
                    .find(|v| v.meta.version == wanted)
                    .with_context(|| {
                        let latest = self.all.last().map_or(0, |v| v.meta.version);
                        format!("prompt `{name}` has no version {wanted}: its latest is {latest}")
                    })
            }
            Selector::Label(label) => self
                .all
                .iter()
                .find(|v| v.labels.iter().any(|l| l == label.as_str()))
                .with_context(|| {
                    let mut labels: Vec<&str> = self
                        .all
                        .iter()
                        .flat_map(|v| v.labels.iter().map(String::as_str))
                        .collect();
                    labels.sort_unstable();
                    let mut message = format!(
                        "prompt `{name}` has no label `{label}`: its labels are {}",
                        labels.join(", ")
                    );
                    if label.as_str() == Label::PRODUCTION {
                        message.push_str(&format!(
                            " (a bare name means `{name}@production`; use `{name}@latest` or \
                             `{name}#N`, or set the label with `pasarela prompts label`)"
                        ));
                    }
                    message
                }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digits_are_a_version_and_other_words_a_label() {
        let version = |n| Selector::Version(PromptVersion::new(n).unwrap());
        let label = |l| Selector::Label(Label::parse(l).unwrap());
        assert_eq!(parse_selector("3"), Ok(version(3)));
        assert_eq!(parse_selector("#3"), Ok(version(3)));
        assert_eq!(parse_selector("staging"), Ok(label("staging")));
        assert_eq!(parse_selector("@staging"), Ok(label("staging")));
        assert_eq!(parse_selector("@3"), Ok(label("3")));
        for bad in ["0", "03", "#x", "@", "", "Staging", "#", "a b"] {
            assert!(parse_selector(bad).is_err(), "{bad}");
        }
    }
}
