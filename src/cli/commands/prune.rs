//! `imgbuild prune [--all] [--keep-storage SIZE]`.

use anyhow::anyhow;

use crate::cli::args::{Cli, PruneArgs};
use crate::cli::env::Env;
use crate::cli::exit::Failure;
use crate::cli::util::{human_size, open_store, out};
use crate::store::gc::PruneOptions;

/// `10GB`, `500MB`, `1.5GiB`, `2048` (bytes).
fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num.parse().ok()?;
    let mult: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" => 1e3,
        "m" | "mb" => 1e6,
        "g" | "gb" => 1e9,
        "t" | "tb" => 1e12,
        "kib" => 1024.0,
        "mib" => 1024.0 * 1024.0,
        "gib" => 1024.0 * 1024.0 * 1024.0,
        "tib" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        _ => return None,
    };
    Some((n * mult) as u64)
}

/// Removes what no image needs; waits (and says so) while other imgbuild
/// processes use the store.
#[allow(clippy::print_stderr)]
pub fn run(cli: &Cli, env: &Env, a: &PruneArgs) -> Result<(), Failure> {
    let keep_storage = match &a.keep_storage {
        Some(s) => Some(parse_size(s).ok_or_else(|| {
            Failure::Usage(anyhow!(
                "--keep-storage: `{s}` is not a size such as 10GB or 500MB"
            ))
        })?),
        None => None,
    };
    let store = open_store(cli, env)?;
    let waiting = || {
        eprintln!(
            "waiting for the other imgbuild processes using {} to finish…",
            store.root().display()
        );
    };
    let r = store.prune(
        PruneOptions {
            all: a.all,
            keep_storage,
        },
        &waiting,
    )?;
    out(&format!(
        "Deleted {} image{}, {} cache entr{}, {} blob{}\nTotal reclaimed space: {}\n",
        r.images,
        if r.images == 1 { "" } else { "s" },
        r.cache_entries,
        if r.cache_entries == 1 { "y" } else { "ies" },
        r.blobs,
        if r.blobs == 1 { "" } else { "s" },
        human_size(r.freed)
    ))
}

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("10GB"), Some(10_000_000_000));
        assert_eq!(parse_size("1.5KiB"), Some(1536));
        assert_eq!(parse_size("512"), Some(512));
        assert_eq!(parse_size("lots"), None);
    }
}
