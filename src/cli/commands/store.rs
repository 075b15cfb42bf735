//! `imgbuild store check [--repair]`.

use anyhow::anyhow;

use crate::cli::args::{Cli, StoreArgs, StoreCommand};
use crate::cli::env::Env;
use crate::cli::exit::Failure;
use crate::cli::util::{open_store, out};
use crate::store::Store;
use crate::store::gc::Checked;

/// Store maintenance subcommands.
pub fn run(cli: &Cli, env: &Env, a: &StoreArgs) -> Result<(), Failure> {
    let store = open_store(cli, env)?;
    match a.command {
        StoreCommand::Check { repair: false } => {
            let _lock = store.lock_shared()?;
            let checked = check(&store)?;
            if checked.problems.is_empty() {
                return out(&format!("{}: OK\n", store.root().display()));
            }
            let lines: Vec<&str> = checked.problems.iter().map(|p| p.what.as_str()).collect();
            Err(Failure::Failed(anyhow!(
                "{} problem{} in {} (`imgbuild store check --repair` removes what is corrupt):\n  {}",
                lines.len(),
                if lines.len() == 1 { "" } else { "s" },
                store.root().display(),
                lines.join("\n  ")
            )))
        }
        StoreCommand::Check { repair: true } => {
            // Removing things: no reader may be using them.
            let _lock = store.lock_exclusive()?;
            let checked = check(&store)?;
            let removed = store.repair(&checked.problems)?;
            let mut text = String::new();
            for p in &checked.problems {
                text.push_str(&format!("problem: {}\n", p.what));
            }
            for r in &removed {
                text.push_str(&format!("{r}\n"));
            }
            text.push_str(&format!(
                "{}: {}\n",
                store.root().display(),
                if checked.problems.is_empty() {
                    "OK, nothing to repair".to_string()
                } else {
                    format!(
                        "repaired {} problem{}",
                        checked.problems.len(),
                        if checked.problems.len() == 1 { "" } else { "s" }
                    )
                }
            ));
            out(&text)
        }
    }
}

/// Every part of the check: blobs and records, layers against diff_ids,
/// extracted filesystems against their layers.
fn check(store: &Store) -> Result<Checked, Failure> {
    let mut checked = store.check()?;
    crate::oci::verify::check_store(store, &mut checked)?;
    crate::builder::snapshot::check_store(store, &mut checked)?;
    Ok(checked)
}
