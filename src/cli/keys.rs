//! `pasarela keys …`

use std::io::Read;

use anyhow::Context;

use crate::limits::{ApiKeyHash, generate_key};

#[derive(Debug, clap::Subcommand)]
pub enum KeysCommand {
    /// Print a new random API key and the hash to put in `auth.api_key_hashes`.
    Generate,
    /// Read a key on standard input and print its hash for `auth.api_key_hashes`.
    Hash,
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
    }
    Ok(())
}
