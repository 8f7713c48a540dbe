//! `pasarela config …`

use super::ConfigSource;
use crate::gateway::Gateway;
use crate::telemetry::OtlpSettings;

#[derive(Debug, clap::Subcommand)]
pub enum ConfigCommand {
    /// Parse and validate the configuration, including the environment variables it names.
    Check(ConfigSource),
}

#[expect(
    clippy::print_stdout,
    reason = "reporting the check is this command's job"
)]
pub fn run(cmd: ConfigCommand) -> anyhow::Result<()> {
    match cmd {
        ConfigCommand::Check(source) => {
            let config = source.load()?;
            config.auth_env_keys()?;
            let gateway = Gateway::from_config(&config)?;
            // The OTEL_* variables are checked too: a bad one would stop `serve`.
            let otlp =
                OtlpSettings::resolve(&config.telemetry.otlp, &|name| std::env::var(name).ok())?;
            println!(
                "{}: ok ({} providers, {} routes, {} local models; span export {})",
                config.origin,
                config.providers.len(),
                gateway.models().len(),
                config.models.len(),
                otlp.map_or_else(|| "off".to_owned(), |s| format!("to {}", s.endpoint)),
            );
        }
    }
    Ok(())
}
