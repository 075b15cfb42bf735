//! End-to-end tests: the real `imgbuild` binary on real files, validated with
//! real tools (skopeo, umoci, podman). One binary, one module per area, run
//! by [`harness`]: libtest's interface, and skips that are reported.
// disallowed_methods: std::fs is fine in tests (clippy.toml holds src/ to fs_err).
#![allow(
    clippy::disallowed_methods,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::print_stderr
)]

mod harness;
mod util;

mod archive;
mod build;
mod buildx;
mod cache;
mod cli;
mod cli_output;
mod concurrent;
mod dockerfile;
mod emulation;
mod git;
mod golden;
mod hostile;
mod kill;
mod load;
mod lowered;
mod make;
mod parse;
mod platforms;
mod registry;
mod remote;
mod repro;
mod sandbox;
mod security;
mod semantics;
mod spec;
mod ssh;

fn main() {
    harness::main();
}
