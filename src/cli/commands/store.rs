//! `imgbuild store check`.

use anyhow::anyhow;

use crate::cli::args::{Cli, StoreArgs, StoreCommand};
use crate::cli::exit::Failure;
use crate::cli::util::{open_store, out};

/// Store maintenance subcommands.
pub fn run(cli: &Cli, a: &StoreArgs) -> Result<(), Failure> {
    let store = open_store(cli)?;
    match a.command {
        StoreCommand::Check => {
            let problems = store.check()?;
            if problems.is_empty() {
                return out(&format!("{}: OK\n", store.root().display()));
            }
            Err(Failure::Failed(anyhow!(
                "{} problem{} in {}:\n  {}",
                problems.len(),
                if problems.len() == 1 { "" } else { "s" },
                store.root().display(),
                problems.join("\n  ")
            )))
        }
    }
}
