//! One file per subcommand.

pub mod build;
pub mod check;
pub mod export;
pub mod history;
pub mod images;
pub mod inspect;
pub mod load;
pub mod parse;
pub mod tag;

use std::path::Path;

use anyhow::{Context, anyhow};

use super::exit::Failure;
use super::util::absolute;
use crate::diag::SourceFile;
use crate::graph::BuildGraph;

/// Reads and lowers the build definition named on the command line and runs
/// the pre-build checks; every problem found is reported together.
pub fn load_definition(
    input: &Path,
    dockerfile: Option<&Path>,
    target: Option<&str>,
    run_checks: bool,
) -> Result<BuildGraph, Failure> {
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
    let (graph, mut diags) = crate::frontend::spec::load_all(&file, dir);
    let has_errors = diags.iter().any(crate::diag::Diagnostic::is_error);
    if let Some(g) = &graph
        && (has_errors || run_checks)
    {
        // `check` promises every problem at once, missing files included; a
        // build runs these checks itself before any work.
        diags.extend(crate::build::check(g, target));
    }
    diags.sort_by_key(|d| {
        d.at.as_ref()
            .map(|a| (a.file.path().to_path_buf(), a.span.start))
    });
    match graph {
        Some(g) if !diags.iter().any(crate::diag::Diagnostic::is_error) => {
            if !diags.is_empty() {
                // Warnings only: show them, then carry on.
                let _ = super::exit::report(Err(Failure::Diagnostics(diags)));
            }
            Ok(g)
        }
        _ => Err(Failure::Diagnostics(diags)),
    }
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
