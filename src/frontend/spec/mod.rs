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
    let spec = model::parse(file)?;
    lower::lower(file, &spec, spec_dir)
}
