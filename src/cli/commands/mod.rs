//! One file per subcommand.

pub mod build;
pub mod check;
pub mod export;
pub mod history;
pub mod images;
pub mod inspect;
pub mod load;
pub mod tag;

use std::path::Path;

use anyhow::{Context, anyhow};

use super::exit::Failure;
use super::util::absolute;
use crate::diag::SourceFile;
use crate::graph::BuildGraph;

/// Reads and lowers the build definition named on the command line.
pub fn load_definition(input: &Path, dockerfile: Option<&Path>) -> Result<BuildGraph, Failure> {
    let is_spec = input.extension().is_some_and(|e| e == "toml") && dockerfile.is_none();
    if !is_spec {
        return Err(Failure::Usage(anyhow!(
            "{}: Dockerfile builds are not supported yet; pass a *.toml spec",
            input.display()
        )));
    }
    let text = std::fs::read_to_string(input)
        .with_context(|| format!("reading {}", input.display()))
        .map_err(Failure::Usage)?;
    let file = SourceFile::new(input, text);
    let abs = absolute(input)?;
    let dir = abs.parent().unwrap_or(Path::new("/"));
    crate::frontend::spec::load(&file, dir).map_err(Failure::Diagnostics)
}

/// Resolves what the user typed to an image ID, as a usage error when unknown.
pub fn resolve_image(
    store: &crate::store::Store,
    what: &str,
) -> Result<crate::digest::Digest, Failure> {
    store.resolve(what).map_err(|e| match e {
        crate::store::Error::NoSuchImage(_) | crate::store::Error::Ambiguous(_) => {
            Failure::Usage(e.into())
        }
        other => Failure::Failed(other.into()),
    })
}
