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
pub mod vars;

use std::path::Path;
use std::sync::Arc;

use crate::diag::{Diagnostic, SourceFile};
use crate::graph::BuildGraph;
use crate::platform::Platform;

/// Parses and lowers a spec. `spec_dir` is the absolute directory of the spec
/// file, against which `[build].context` is resolved.
///
/// # Errors
/// Every diagnostic found, in file order.
pub fn load(file: &Arc<SourceFile>, spec_dir: &Path) -> Result<BuildGraph, Vec<Diagnostic>> {
    match load_all(file, spec_dir, &[]) {
        (Some(g), d) if !d.iter().any(Diagnostic::is_error) => Ok(g),
        (_, d) => Err(d),
    }
}

/// Like [`load`], but keeps going: returns whatever graph could be built (for
/// further checks such as missing context files) with every diagnostic so far.
/// The graph is `None` only when the TOML does not parse.
///
/// `platforms` (`--platform`) wins over the spec's `platforms`; with
/// neither, the build is for the host and its outputs name no platform.
/// Otherwise the spec is lowered once per platform (its variables differ)
/// and the graphs merged ([`crate::graph::merge`]).
pub fn load_all(
    file: &Arc<SourceFile>,
    spec_dir: &Path,
    platforms: &[Platform],
) -> (Option<BuildGraph>, Vec<Diagnostic>) {
    let (spec, mut diags) = match model::parse(file) {
        Ok(x) => x,
        Err(d) => return (None, d),
    };
    let host = crate::platform::host();
    let mut wanted: Vec<Platform> = platforms.to_vec();
    if wanted.is_empty() {
        let named = spec
            .build
            .platforms
            .iter()
            .chain(spec.targets.iter().flat_map(|t| &t.platforms));
        for p in named.filter_map(|p| Platform::parse(&p.value).ok()) {
            if !wanted.contains(&p) {
                wanted.push(p);
            }
        }
    }
    if wanted.is_empty() {
        let target = lower::Target {
            vars: vars::Vars::platforms(&host, &host),
            platform: host,
            named: false,
        };
        let (graph, more) = lower::lower(file, &spec, spec_dir, &target);
        diags.extend(more);
        return (Some(graph), diags);
    }
    // With the CLI's list, it is every image's; else an image's own list
    // (or the build's) says where it goes.
    let cli = !platforms.is_empty();
    let mut graphs = Vec::new();
    for p in wanted {
        let mut spec_for = spec.clone();
        if cli {
            for t in &mut spec_for.targets {
                t.platforms.clear();
            }
        } else if !spec.build.platforms.is_empty() {
            for t in &mut spec_for.targets {
                if t.platforms.is_empty() {
                    t.platforms = spec.build.platforms.clone();
                }
            }
        }
        let target = lower::Target {
            vars: vars::Vars::platforms(&host, &p),
            platform: p.clone(),
            named: true,
        };
        let (graph, more) = lower::lower(file, &spec_for, spec_dir, &target);
        for d in more {
            let seen = diags.iter().any(|e: &Diagnostic| {
                e.message == d.message
                    && e.at.as_ref().map(|a| a.span) == d.at.as_ref().map(|a| a.span)
            });
            if !seen {
                diags.push(d);
            }
        }
        graphs.push((p, graph));
    }
    (Some(crate::graph::merge(graphs)), diags)
}
