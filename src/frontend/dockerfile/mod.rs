//! The Dockerfile frontend: text → nodes (BuildKit-compatible parser) →
//! typed instructions → BuildGraph.
//!
//! Parsing does no I/O and expands nothing; expansion happens in lowering,
//! against each stage's ARG and ENV values, as BuildKit's dispatcher does.

pub mod ast;
pub mod dockerignore;
pub mod dump;
pub mod expand;
pub mod lower;
pub mod parser;

pub use dump::{dump, dump_file};
pub use parser::{Ast, Node, parse};
