//! `pasarela keys …`: random keys and their hashes for the config, and virtual keys, which
//! `create|list|revoke` manage directly in the store the gateway uses (as `pasarela prompts`
//! does). A running gateway sees the change within `limits::REFRESH_INTERVAL`.

use std::io::{Read, Write};

use anyhow::Context;
use secrecy::ExposeSecret;

use super::ConfigSource;
use crate::config::Config;
use crate::limits::{
    ApiKeyHash, KeySpec, create_key, generate_key, list_keys, micro_usd, revoke_key,
};
use crate::store::{Budget, BudgetPeriod, Store, VirtualKey};

#[derive(Debug, clap::Subcommand)]
pub enum KeysCommand {
    /// Print a new random API key and the hash to put in `auth.api_key_hashes`.
    Generate,
    /// Read a key on standard input and print its hash for `auth.api_key_hashes`.
    Hash,
    /// Make a virtual key and print it, this once: only its hash is stored.
    Create(CreateArgs),
    /// List the virtual keys (prefixes only, never the keys), revoked ones included.
    List(StoreArgs),
    /// Revoke the active virtual key of this name.
    Revoke(RevokeArgs),
}

#[derive(Debug, clap::Args)]
pub struct CreateArgs {
    /// 1 to 64 letters, digits, `-`, `_` or `.`.
    name: String,
    /// The models the key may use, comma-separated [default: every model].
    #[arg(long, value_delimiter = ',')]
    models: Vec<String>,
    /// Requests per minute.
    #[arg(long)]
    rpm: Option<u32>,
    /// Tokens per minute: an estimate is reserved before each call, settled on its usage.
    #[arg(long)]
    tpm: Option<u32>,
    /// Requests in flight at once.
    #[arg(long)]
    max_concurrent: Option<u32>,
    /// Spend limit in US dollars per budget period, priced from `[prices]`.
    #[arg(long, requires = "budget_period")]
    budget: Option<f64>,
    /// `day`, `week` or `month`.
    #[arg(long, requires = "budget", value_parser = ["day", "week", "month"])]
    budget_period: Option<String>,
    /// Record the prompt and completion text of this key's requests on trace spans (when
    /// OTLP export is on).
    #[arg(long)]
    record_content: bool,
    #[command(flatten)]
    source: ConfigSource,
}

#[derive(Debug, clap::Args)]
pub struct StoreArgs {
    #[command(flatten)]
    source: ConfigSource,
}

#[derive(Debug, clap::Args)]
pub struct RevokeArgs {
    name: String,
    #[command(flatten)]
    source: ConfigSource,
}

#[expect(clippy::print_stdout, reason = "printing keys is this command's job")]
pub fn run(cmd: KeysCommand) -> anyhow::Result<()> {
    match cmd {
        KeysCommand::Generate => {
            let key = generate_key();
            println!("key:  {key}");
            println!("hash: {}", ApiKeyHash::of(&key));
        }
        KeysCommand::Hash => {
            let mut key = String::new();
            std::io::stdin()
                .read_to_string(&mut key)
                .context("reading the key from standard input")?;
            let key = key.trim();
            anyhow::ensure!(!key.is_empty(), "no key on standard input");
            println!("{}", ApiKeyHash::of(key));
        }
        KeysCommand::Create(args) => {
            let config = args.source.load()?;
            with_store(&config, |store, out| Box::pin(create(store, args, out)))?;
        }
        KeysCommand::List(args) => {
            let config = args.source.load()?;
            with_store(&config, |store, out| Box::pin(list(store, out)))?;
        }
        KeysCommand::Revoke(args) => {
            let config = args.source.load()?;
            with_store(&config, |store, out| {
                Box::pin(revoke(store, args.name, out))
            })?;
        }
    }
    Ok(())
}

type Work<'a> = std::pin::Pin<Box<dyn Future<Output = anyhow::Result<()>> + 'a>>;

/// Opens the store, runs `work` on it with standard output, and closes the store.
fn with_store(
    config: &Config,
    work: impl for<'a> FnOnce(&'a Store, &'a mut std::io::StdoutLock<'static>) -> Work<'a>,
) -> anyhow::Result<()> {
    // One command, a few queries: a thread of its own would buy nothing.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let mut out = std::io::stdout().lock();
    runtime.block_on(async {
        let store = Store::open(&config.store).await?;
        let result = work(&store, &mut out).await;
        // SQLite folds its WAL back into the database file when the last connection closes.
        store.close().await;
        result
    })?;
    out.flush().context("writing to standard output")
}

async fn create(store: &Store, args: CreateArgs, out: &mut impl Write) -> anyhow::Result<()> {
    let budget = match (args.budget, args.budget_period.as_deref()) {
        (Some(usd), Some(period)) => Some(Budget {
            micro_usd: micro_usd(usd)?,
            period: BudgetPeriod::parse(period)
                .with_context(|| format!("budget period `{period}`"))?,
        }),
        _ => None,
    };
    let created = create_key(
        store,
        KeySpec {
            name: args.name,
            models: args.models,
            rpm: args.rpm,
            tpm: args.tpm,
            max_concurrent: args.max_concurrent,
            budget,
            record_content: args.record_content,
        },
    )
    .await?;
    writeln!(out, "key:  {}", created.key.expose_secret())?;
    writeln!(out, "{}", describe(&created.record))?;
    writeln!(
        out,
        "Keep the key now: it is stored only as a hash and cannot be shown again."
    )?;
    Ok(())
}

async fn list(store: &Store, out: &mut impl Write) -> anyhow::Result<()> {
    let keys = list_keys(store).await?;
    if keys.is_empty() {
        writeln!(out, "no virtual keys")?;
    }
    for key in &keys {
        let period = key.budget.map_or(BudgetPeriod::Month, |b| b.period);
        let start = crate::limits::period_start(period, chrono::Utc::now());
        let spent = store
            .spend()
            .of(key.id, start.timestamp_millis())
            .await?
            .micro_usd;
        writeln!(
            out,
            "{}  spent={}USD/{}",
            describe(key),
            usd(spent),
            period.as_str()
        )?;
    }
    Ok(())
}

fn usd(micro: i64) -> f64 {
    #[expect(
        clippy::cast_precision_loss,
        reason = "amounts are far below 2^53 millionths"
    )]
    let usd = micro as f64 / 1e6;
    usd
}

async fn revoke(store: &Store, name: String, out: &mut impl Write) -> anyhow::Result<()> {
    let key = revoke_key(store, &name).await?;
    writeln!(out, "revoked {} ({}…)", key.name, key.key_prefix)?;
    Ok(())
}

/// One line: name, prefix, limits, and state. Never the key or its hash.
fn describe(key: &VirtualKey) -> String {
    let mut parts = vec![format!("{} {}…", key.name, key.key_prefix)];
    parts.push(if key.allowed_models.is_empty() {
        "models=all".to_owned()
    } else {
        format!("models={}", key.allowed_models.join(","))
    });
    for (what, value) in [
        ("rpm", key.rpm),
        ("tpm", key.tpm),
        ("max_concurrent", key.max_concurrent),
    ] {
        if let Some(v) = value {
            parts.push(format!("{what}={v}"));
        }
    }
    if let Some(b) = key.budget {
        parts.push(format!(
            "budget={}USD/{}",
            usd(b.micro_usd),
            b.period.as_str()
        ));
    }
    if key.record_content {
        parts.push("record_content".to_owned());
    }
    parts.push(match key.revoked_at {
        Some(at) => format!("revoked {}", at.format("%Y-%m-%d %H:%M UTC")),
        None => format!("created {}", key.created_at.format("%Y-%m-%d %H:%M UTC")),
    });
    parts.join("  ")
}
