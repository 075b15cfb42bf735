//! `imgbuild load FILE`: import an OCI archive, docker archive or OCI layout.

use anyhow::Context;

use crate::cli::args::{Cli, LoadArgs};
use crate::cli::exit::Failure;
use crate::cli::util::{open_store, out};
use crate::oci::import::{Source, import};

/// Imports every image of the archive and tags it with the names it carries.
pub fn run(cli: &Cli, a: &LoadArgs) -> Result<(), Failure> {
    let store = open_store(cli)?;
    let _lock = store.lock_shared()?;
    let source = if a.file.is_dir() {
        Source::OciDir(a.file.clone())
    } else {
        Source::OciArchive(a.file.clone())
    };
    let images =
        import(&store, &source, None).with_context(|| format!("loading {}", a.file.display()))?;
    let mut text = String::new();
    for img in images {
        if img.names.is_empty() {
            text.push_str(&format!("Loaded image ID: {}\n", img.id));
        }
        for n in &img.names {
            store.set_tag(n, &img.id)?;
            text.push_str(&format!("Loaded image: {}\n", n.familiar()));
        }
    }
    out(&text)
}
