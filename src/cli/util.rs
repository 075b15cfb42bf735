//! Helpers shared by subcommands: the store location, the clock, output.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, anyhow};

use super::args::Cli;
use super::env::Env;
use super::exit::Failure;
use crate::store::Store;

/// Opens the store named by `--store`/`IMGBUILD_STORE`, else the default under
/// `$XDG_CACHE_HOME` or `~/.cache`.
pub fn open_store(cli: &Cli, env: &Env) -> Result<Store, Failure> {
    let root = match &cli.store {
        Some(p) => p.clone(),
        None => env.default_store().ok_or_else(|| {
            Failure::Usage(anyhow!(
                "no store location: set --store, IMGBUILD_STORE, XDG_CACHE_HOME or HOME"
            ))
        })?,
    };
    Store::open(&root)
        .with_context(|| format!("opening the store at {}", root.display()))
        .map_err(Failure::Failed)
}

/// The wall clock, in unix seconds.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// An absolute form of `p` without touching the filesystem beyond the cwd.
pub fn absolute(p: &Path) -> Result<PathBuf, Failure> {
    std::path::absolute(p)
        .with_context(|| format!("resolving {}", p.display()))
        .map_err(Failure::Failed)
}

/// Writes text to stdout; a closed pipe is not an error (exit 0).
pub fn out(text: &str) -> Result<(), Failure> {
    let mut o = std::io::stdout().lock();
    o.write_all(text.as_bytes())
        .and_then(|()| o.flush())
        .map_err(|e| Failure::Failed(e.into()))
}

/// Human-readable size, as docker prints it (`12.3MB`).
pub fn human_size(n: u64) -> String {
    const UNITS: &[&str] = &["B", "kB", "MB", "GB", "TB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1000.0 && u < UNITS.len() - 1 {
        v /= 1000.0;
        u += 1;
    }
    if u == 0 {
        format!("{n}B")
    } else {
        format!("{v:.3}")
            .trim_end_matches('0')
            .trim_end_matches('.')
            .to_string()
            + UNITS[u]
    }
}

/// "3 days ago", as docker prints ages.
pub fn ago(then: i64, now: i64) -> String {
    let d = (now - then).max(0);
    let (n, unit) = match d {
        0..=59 => (d, "second"),
        60..=3599 => (d / 60, "minute"),
        3600..=86_399 => (d / 3600, "hour"),
        86_400..=604_799 => (d / 86_400, "day"),
        604_800..=2_591_999 => (d / 604_800, "week"),
        2_592_000..=31_535_999 => (d / 2_592_000, "month"),
        _ => (d / 31_536_000, "year"),
    };
    if n == 1 {
        format!("1 {unit} ago")
    } else {
        format!("{n} {unit}s ago")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(human_size(512), "512B");
        assert_eq!(human_size(1_234_567), "1.235MB");
        assert_eq!(human_size(2_000), "2kB");
    }

    #[test]
    fn ages() {
        assert_eq!(ago(0, 30), "30 seconds ago");
        assert_eq!(ago(0, 3600), "1 hour ago");
    }
}
