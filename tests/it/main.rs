//! End-to-end tests: the real `imgbuild` binary on real files, validated with
//! real tools (skopeo, umoci, podman). One binary, one module per area.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod util;

mod archive;
mod build;
mod cache;
mod concurrent;
mod dockerfile;
mod golden;
mod hostile;
mod kill;
mod load;
mod make;
mod parse;
mod registry;
mod repro;
mod sandbox;
mod security;
mod semantics;
mod spec;
