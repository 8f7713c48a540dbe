//! The command line: one file per subcommand. Parsing and printing only; the work is done by
//! the library modules they call.

mod config_cmd;
mod eval;
mod keys;
mod logs;
mod prompts;
mod serve;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "pasarela",
    version,
    about = "An OpenAI-compatible gateway for production LLM applications"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start the gateway.
    Serve(serve::ServeArgs),
    /// Create and hash API keys.
    #[command(subcommand)]
    Keys(keys::KeysCommand),
    /// Check a configuration file.
    #[command(subcommand)]
    Config(config_cmd::ConfigCommand),
    /// Manage the prompt registry: push prompt files, move labels, show, diff and pull versions.
    #[command(subcommand)]
    Prompts(prompts::PromptsCommand),
    /// Read the request log: export logged chat traffic as a dataset, list recent requests.
    #[command(subcommand)]
    Logs(logs::LogsCommand),
    /// Run eval suites: exit 0 when their thresholds are met, 100 when not, 1 on failure.
    #[command(subcommand)]
    Eval(eval::EvalCommand),
}

/// Where the configuration comes from: `--config`/`PASARELA_CONFIG`, else `./pasarela.toml`,
/// else the defaults compiled into the binary.
#[derive(Debug, clap::Args)]
struct ConfigSource {
    /// Configuration file (TOML).
    #[arg(long, short, env = "PASARELA_CONFIG")]
    config: Option<PathBuf>,
    /// Directory of the embedded SQLite store, overriding `store.data_dir`
    /// (`PASARELA_DATABASE_URL` selects Postgres instead).
    #[arg(long, env = "PASARELA_DATA_DIR")]
    data_dir: Option<PathBuf>,
}

impl ConfigSource {
    fn load(&self) -> Result<crate::config::Config, crate::config::ConfigError> {
        let local = PathBuf::from("pasarela.toml");
        let mut config = match &self.config {
            Some(path) => crate::config::Config::from_file(path),
            None if local.is_file() => crate::config::Config::from_file(&local),
            None => crate::config::Config::embedded(),
        }?;
        config.apply_store_env()?;
        config.apply_limits_env()?;
        if let Some(dir) = &self.data_dir {
            config.store.data_dir = dir.clone();
        }
        Ok(config)
    }
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => serve::run(args),
        Command::Keys(cmd) => keys::run(cmd),
        Command::Config(cmd) => config_cmd::run(cmd),
        Command::Prompts(cmd) => prompts::run(cmd),
        Command::Logs(cmd) => logs::run(cmd),
        // Eval has exit codes of its own.
        Command::Eval(cmd) => return eval::run(cmd),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
