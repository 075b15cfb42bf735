//! `imgbuild load [-t NAME] FILE`: import an OCI archive, docker archive or
//! OCI layout, and print every name it applied.

use anyhow::Context;

use crate::cli::args::{Cli, LoadArgs};
use crate::cli::env::Env;
use crate::cli::exit::Failure;
use crate::cli::util::{open_store, out};
use crate::oci::import::{Source, import};
use crate::reference::Reference;

/// Imports every image of the archive and tags it with the names it carries.
pub fn run(cli: &Cli, env: &Env, a: &LoadArgs) -> Result<(), Failure> {
    let store = open_store(cli, env)?;
    let _lock = store.lock_shared()?;
    let source = if a.file.is_dir() {
        Source::OciDir(a.file.clone())
    } else {
        Source::OciArchive(a.file.clone())
    };
    let extra = a
        .tags
        .iter()
        .map(|t| Reference::parse(t).map_err(|e| Failure::Usage(e.into())))
        .collect::<Result<Vec<_>, _>>()?;
    let images = import(&store, &source, None, &crate::platform::host())
        .with_context(|| format!("loading {}", a.file.display()))?;
    if !extra.is_empty() && images.len() != 1 {
        return Err(Failure::Usage(anyhow::anyhow!(
            "-t names one image, but {} holds {}",
            a.file.display(),
            images.len()
        )));
    }
    let mut text = String::new();
    for img in images {
        let mut names = img.names.clone();
        for t in &extra {
            if !names.contains(t) {
                names.push(t.clone());
            }
        }
        if names.is_empty() {
            text.push_str(&format!("Loaded image ID: {}\n", img.id));
        }
        for n in &names {
            store.set_tag(n, &img.id)?;
            text.push_str(&format!("Loaded image: {}\n", n.familiar()));
        }
    }
    out(&text)
}
