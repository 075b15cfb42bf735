//! Frontends: turn what users write into a [`crate::graph::BuildGraph`].
//!
//! They receive a [`crate::diag::SourceFile`] and do no I/O: no reading of the
//! context, no pulls. Problems come back as diagnostics.

pub mod dockerfile;
pub mod spec;
