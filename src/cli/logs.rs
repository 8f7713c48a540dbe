//! `pasarela logs …`: the request log, read directly from the store the gateway writes to
//! (as `pasarela keys` does). `export` turns logged chat traffic into a fine-tuning or eval
//! dataset; `list` shows the latest requests.

use std::io::Write;

use anyhow::Context;
use chrono::{DateTime, NaiveDate, TimeDelta, Utc};

use super::ConfigSource;
use crate::store::{LogEntry, LogFilter, Store};
use crate::telemetry::request_log::{CHAT_ENDPOINT, Skip, chat_example};

/// Rows read from the store at a time.
const PAGE: u32 = 500;

#[derive(Debug, clap::Subcommand)]
pub enum LogsCommand {
    /// Write logged chat requests, with their answers, as a dataset.
    Export(ExportArgs),
    /// Show the latest logged requests.
    List(ListArgs),
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Format {
    /// OpenAI's fine-tuning chat format: `{"messages": [...]}` per line.
    OpenaiChatJsonl,
}

/// Which requests; times are RFC 3339 (`2026-11-25T08:00:00Z`), a UTC date (`2026-11-25`) or
/// an age (`90s`, `30m`, `24h`, `7d`, `2w`).
#[derive(Debug, clap::Args)]
pub struct Selection {
    /// Requests that arrived at or after this time.
    #[arg(long, value_parser = parse_time)]
    since: Option<DateTime<Utc>>,
    /// Requests that arrived before this time.
    #[arg(long, value_parser = parse_time)]
    until: Option<DateTime<Utc>>,
    /// The model the client asked for.
    #[arg(long)]
    model: Option<String>,
    /// The virtual key's name.
    #[arg(long)]
    key: Option<String>,
    /// The registry prompt's name.
    #[arg(long)]
    prompt: Option<String>,
}

impl Selection {
    fn filter(self, endpoint: Option<&str>) -> LogFilter {
        LogFilter {
            since: self.since,
            until: self.until,
            endpoint: endpoint.map(str::to_owned),
            model: self.model,
            key_name: self.key,
            prompt_name: self.prompt,
        }
    }
}

#[derive(Debug, clap::Args)]
pub struct ExportArgs {
    #[command(flatten)]
    selection: Selection,
    #[arg(long, value_enum, default_value = "openai-chat-jsonl")]
    format: Format,
    /// Write here instead of standard output.
    #[arg(long, short)]
    output: Option<std::path::PathBuf>,
    #[command(flatten)]
    source: ConfigSource,
}

#[derive(Debug, clap::Args)]
pub struct ListArgs {
    #[command(flatten)]
    selection: Selection,
    /// How many requests, newest first.
    #[arg(long, default_value_t = 20)]
    limit: u32,
    #[command(flatten)]
    source: ConfigSource,
}

pub fn run(cmd: LogsCommand) -> anyhow::Result<()> {
    let config = match &cmd {
        LogsCommand::Export(a) => a.source.load()?,
        LogsCommand::List(a) => a.source.load()?,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async {
        let store = Store::open(&config.store).await?;
        let result = match cmd {
            LogsCommand::Export(args) => export(&store, args).await,
            LogsCommand::List(args) => list(&store, args).await,
        };
        store.close().await;
        result
    })
}

/// How many rows became examples, and why the others did not.
#[derive(Debug, Default)]
struct Tally {
    exported: u64,
    no_bodies: u64,
    failed: u64,
    unreadable: u64,
}

async fn export(store: &Store, args: ExportArgs) -> anyhow::Result<()> {
    let Format::OpenaiChatJsonl = args.format;
    let mut out: Box<dyn Write> = match &args.output {
        Some(path) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?,
        )),
        None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
    };
    let filter = args.selection.filter(Some(CHAT_ENDPOINT));
    let rows = store.request_log();
    let mut tally = Tally::default();
    let mut after = 0;
    loop {
        let page = rows.page(&filter, after, PAGE).await?;
        let Some(last) = page.last() else { break };
        after = last.id;
        for row in &page {
            match chat_example(&row.entry) {
                Ok(example) => {
                    writeln!(out, "{example}").context("writing the dataset")?;
                    tally.exported += 1;
                }
                Err(Skip::NoBodies) => tally.no_bodies += 1,
                Err(Skip::Failed) => tally.failed += 1,
                Err(Skip::Unreadable) => tally.unreadable += 1,
            }
        }
    }
    out.flush().context("writing the dataset")?;
    let Tally {
        exported,
        no_bodies,
        failed,
        unreadable,
    } = tally;
    eprintln!(
        "exported {exported} chat requests; skipped {no_bodies} without bodies, {failed} failed \
         or incomplete, {unreadable} unreadable"
    );
    Ok(())
}

async fn list(store: &Store, args: ListArgs) -> anyhow::Result<()> {
    let rows = store
        .request_log()
        .latest(&args.selection.filter(None), args.limit)
        .await?;
    let mut out = std::io::stdout().lock();
    if rows.is_empty() {
        writeln!(out, "no logged requests")?;
    }
    for row in &rows {
        writeln!(out, "{}", describe(&row.entry))?;
    }
    out.flush().context("writing to standard output")
}

/// One line per request: time, id, key, endpoint, model → deployment, status, how it ended,
/// duration, tokens, and whether its bodies were kept.
fn describe(e: &LogEntry) -> String {
    let dash = || "-".to_owned();
    let tokens = match (e.input_tokens, e.output_tokens) {
        (Some(i), Some(o)) => format!("{i}+{o} tok"),
        _ => "- tok".to_owned(),
    };
    [
        e.created_at.format("%Y-%m-%d %H:%M:%S%.3f").to_string(),
        e.request_id.clone(),
        e.key_name.clone().unwrap_or_else(dash),
        e.endpoint.clone(),
        format!(
            "{}→{}",
            e.model.clone().unwrap_or_else(dash),
            e.deployment.clone().unwrap_or_else(dash)
        ),
        e.status.to_string(),
        e.ending.as_str().to_owned(),
        format!("{}ms", e.duration_ms),
        tokens,
        if e.request_body.is_some() {
            "bodies"
        } else {
            "-"
        }
        .to_owned(),
    ]
    .join("  ")
}

/// An RFC 3339 time, a UTC date, or an age before now.
fn parse_time(text: &str) -> Result<DateTime<Utc>, String> {
    parse_time_at(text, Utc::now())
}

fn parse_time_at(text: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>, String> {
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Ok(t.with_timezone(&Utc));
    }
    if let Ok(d) = NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        return Ok(d.and_time(chrono::NaiveTime::MIN).and_utc());
    }
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let n: i64 = number.parse().map_err(|_| bad_time(text))?;
    let age = match unit {
        "s" => TimeDelta::try_seconds(n),
        "m" => TimeDelta::try_minutes(n),
        "h" => TimeDelta::try_hours(n),
        "d" => TimeDelta::try_days(n),
        "w" => TimeDelta::try_weeks(n),
        _ => None,
    }
    .ok_or_else(|| bad_time(text))?;
    now.checked_sub_signed(age).ok_or_else(|| bad_time(text))
}

fn bad_time(text: &str) -> String {
    format!(
        "`{text}` is not a time: expected RFC 3339 (2026-11-25T08:00:00Z), a date (2026-11-25) \
         or an age (90s, 30m, 24h, 7d, 2w)"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_rfc3339_dates_or_ages() {
        let now = DateTime::parse_from_rfc3339("2026-11-25T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let at = |t| parse_time_at(t, now).unwrap().to_rfc3339();
        assert_eq!(at("2026-11-20T08:30:00+01:00"), "2026-11-20T07:30:00+00:00");
        assert_eq!(at("2026-11-01"), "2026-11-01T00:00:00+00:00");
        assert_eq!(at("24h"), "2026-11-24T12:00:00+00:00");
        assert_eq!(at("7d"), "2026-11-18T12:00:00+00:00");
        assert_eq!(at("30m"), "2026-11-25T11:30:00+00:00");
        for bad in ["yesterday", "5y", "h", "", "2026-13-01"] {
            let err = parse_time_at(bad, now).unwrap_err();
            assert!(err.contains("not a time"), "{err}");
        }
    }
}
