//! Prints the listing the semantics suite compares: IMAGE's flattened
//! filesystem as a delta against BASE, then its config's runtime fields
//! (format: `tests/fixtures/semantics/README.md`).
//!
//!     cargo run --release --example fslist -- BASE.tar IMAGE.tar
//!     cargo run --release --example fslist -- --override OVERRIDE.txt LISTING.txt
//!
//! The second form applies a case's override file to a listing and prints
//! the result (`scripts/semantics-expected.sh` uses both).
// Not the library: std::fs is fine here (clippy.toml holds src/ to fs_err).
#![allow(clippy::disallowed_methods)]
#![allow(clippy::print_stdout, clippy::print_stderr)]

#[path = "../tests/support/fslist.rs"]
mod fslist;

use std::io::Write as _;
use std::path::Path;
use std::process::ExitCode;

fn run(args: &[String]) -> Result<String, String> {
    match args {
        [flag, over, listing] if flag == "--override" => {
            let read = |p: &str| std::fs::read_to_string(p).map_err(|e| format!("{p}: {e}"));
            fslist::apply_override(&read(listing)?, &read(over)?)
                .map_err(|e| format!("{over}: {e}"))
        }
        [base, image] => {
            fslist::listing(Path::new(base), Path::new(image)).map_err(|e| e.to_string())
        }
        _ => Err(
            "usage: fslist BASE.tar IMAGE.tar | fslist --override OVERRIDE.txt LISTING.txt"
                .to_string(),
        ),
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(text) => {
            let mut out = std::io::stdout().lock();
            if out.write_all(text.as_bytes()).is_err() {
                return ExitCode::from(1);
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("fslist: {e}");
            ExitCode::from(1)
        }
    }
}
