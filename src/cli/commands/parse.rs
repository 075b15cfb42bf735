//! `imgbuild parse --dump FILE`: the parse tree in BuildKit's dump format.

use std::io::Read;

use anyhow::{Context, anyhow};

use crate::cli::args::ParseArgs;
use crate::cli::exit::Failure;
use crate::cli::util::out;
use crate::diag::SourceFile;
use crate::frontend::dockerfile;

/// Parses a Dockerfile and prints its dump; errors go to stderr, exit 2.
pub fn run(a: &ParseArgs) -> Result<(), Failure> {
    if !a.dump {
        return Err(Failure::Usage(anyhow!(
            "say what to print: --dump prints the parse tree"
        )));
    }
    let text = if a.file.as_os_str() == "-" {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .context("reading standard input")
            .map_err(Failure::Usage)?;
        s
    } else {
        read_lossy(&a.file)?
    };
    let file = SourceFile::new(&a.file, text);
    // Node by node: a 200,000-line file never sits in memory as a tree.
    let dump = dockerfile::dump_file(&file).map_err(|d| Failure::Diagnostics(vec![d]))?;
    out(&dump)
}

/// Reads a file as text; bytes that are not UTF-8 become U+FFFD rather than
/// failing the whole parse.
fn read_lossy(path: &std::path::Path) -> Result<String, Failure> {
    #[allow(clippy::disallowed_methods)] // the error names the path already
    let bytes = std::fs::read(path)
        .with_context(|| format!("reading {}", path.display()))
        .map_err(Failure::Usage)?;
    Ok(match String::from_utf8(bytes) {
        Ok(s) => s,
        Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
    })
}
