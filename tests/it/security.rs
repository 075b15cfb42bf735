//! Issue 10: imgbuild against hostile Dockerfiles, base images, contexts,
//! archives and registries. One module per class of attack; each test uses
//! its own crafted inputs and fails on a builder without the defence.

mod confine;
mod content;
mod fidelity;
mod parsers;
mod raw;
mod registry;
mod sandbox;
mod store;
