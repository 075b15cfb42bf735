//! imgbuild: a daemonless container image builder.
//!
//! A TOML spec or a Dockerfile is lowered into one [`graph::BuildGraph`]; the
//! [`builder`] module walks it, caching every step by content in the [`store`],
//! and [`oci`] writes standard, reproducible OCI image archives.
//!
//! Module dependencies point one way (see `docs/architecture.md`):
//! `cli → frontend → graph`, `cli → {runner →} builder → {oci, store, layer, progress}`,
//! `oci → {store, layer}`; the leaves `diag`, `digest`, `pattern` and
//! `reference` import nothing else from the crate.
#![warn(missing_docs)]

pub mod builder;
pub mod cli;
pub mod confine;
pub mod diag;
pub mod digest;
pub mod exec;
pub mod fetch;
pub mod frontend;
pub mod graph;
pub mod layer;
pub mod oci;
pub mod pattern;
pub mod platform;
pub mod progress;
pub mod reference;
pub mod registry;
pub mod runner;
pub mod store;
