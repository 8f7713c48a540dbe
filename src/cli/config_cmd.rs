//! `pasarela config …`

use super::ConfigSource;
use crate::gateway::Gateway;

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
            println!(
                "{}: ok ({} providers, {} routes, {} local models)",
                config.origin,
                config.providers.len(),
                gateway.models().len(),
                config.models.len()
            );
        }
    }
    Ok(())
}
