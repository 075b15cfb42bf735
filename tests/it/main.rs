//! End-to-end tests: the real `imgbuild` binary on real files, validated with
#![allow(clippy::unwrap_used, clippy::expect_used)]
//! real tools (skopeo, umoci, podman). One binary, one module per area.

mod util;

mod archive;
mod build;
mod golden;
mod kill;
mod load;
mod repro;
mod spec;
