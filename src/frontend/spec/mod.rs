//! The TOML spec frontend: text → [`model::Spec`] → [`crate::graph::BuildGraph`].
//!
//! Parsing and validation do no I/O: the spec file's text comes in, and every
//! problem (TOML syntax, unknown keys, wrong types, bad values, unknown stages,
//! cycles) comes out as a [`Diagnostic`] pointing at the value. Whether copy
//! sources exist is checked by the build's planning pass, which reads the
//! context.

pub mod decode;
mod lower;
pub mod model;

use std::path::Path;
use std::sync::Arc;

use crate::diag::{Diagnostic, SourceFile};
use crate::graph::BuildGraph;

/// Parses and lowers a spec. `spec_dir` is the absolute directory of the spec
/// file, against which `[build].context` is resolved.
///
/// # Errors
/// Every diagnostic found, in file order.
pub fn load(file: &Arc<SourceFile>, spec_dir: &Path) -> Result<BuildGraph, Vec<Diagnostic>> {
    match load_all(file, spec_dir) {
        (Some(g), d) if !d.iter().any(Diagnostic::is_error) => Ok(g),
        (_, d) => Err(d),
    }
}

/// Like [`load`], but keeps going: returns whatever graph could be built (for
/// further checks such as missing context files) with every diagnostic so far.
/// The graph is `None` only when the TOML does not parse.
pub fn load_all(file: &Arc<SourceFile>, spec_dir: &Path) -> (Option<BuildGraph>, Vec<Diagnostic>) {
    let (spec, mut diags) = match model::parse(file) {
        Ok(x) => x,
        Err(d) => return (None, d),
    };
    let (graph, more) = lower::lower(file, &spec, spec_dir);
    diags.extend(more);
    (Some(graph), diags)
}
