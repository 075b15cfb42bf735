//! Selecting what a copy reads: expanding globs, walking directories, applying
//! context-wide and per-copy excludes, and mapping each source to its path in
//! the layer, with docker's COPY rules:
//!
//! - a directory source copies its *contents* into the destination;
//! - a file source lands at `dest` itself, or at `dest/NAME` when `dest` ends in
//!   `/`, when there are several sources, or when a glob is involved;
//! - a symlink named directly as a source is followed (inside the root); links
//!   found while walking a directory are copied as links;
//! - nothing outside the root is ever read: every path is resolved by the
//!   kernel with the root as `/`.

use std::collections::HashMap;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::graph::CopyItem;
use crate::layer::extract::resolve_in_root;
use crate::pattern::{Glob, PatternSet, clean_path, has_wildcards};

/// What a selected source is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceKind {
    /// A directory (found while walking a directory source).
    Dir,
    /// A regular file.
    File {
        /// Size at listing time.
        size: u64,
    },
    /// A symbolic link, kept as a link.
    Symlink(PathBuf),
    /// A hard link to another selected entry (its layer path); from archives.
    Hardlink(String),
}

/// One source entry and where it goes.
#[derive(Debug, Clone)]
pub struct Selected {
    /// Path in the layer (relative, cleaned).
    pub dest: String,
    /// Where it is on the host.
    pub host: PathBuf,
    /// What it is.
    pub kind: SourceKind,
    /// Permission bits of the source.
    pub mode: u32,
    /// Modification time of the source.
    pub mtime: i64,
    /// `(dev, inode)` when the file has several hard links.
    pub link_key: Option<(u64, u64)>,
    /// Named directly by a source (not found inside a copied directory):
    /// only these are candidates for ADD's archive extraction.
    pub direct: bool,
    /// Owner carried by the source itself (archive members); `None` means
    /// the copy's owner (root unless `--chown`).
    pub owner: Option<(u64, u64)>,
    /// For files: the stat fields the stat memo keys on.
    pub stat: Option<crate::store::memo::FileStat>,
}

/// A source of a copy that selected nothing.
#[derive(Debug, thiserror::Error)]
pub enum SelectError {
    /// The path (or glob) matches nothing.
    #[error("`{pattern}` not found")]
    NotFound {
        /// Index of the source in the item's `sources`.
        index: usize,
        /// The source as written.
        pattern: String,
    },
    /// The path exists but every match is excluded.
    #[error("`{pattern}` is excluded by the exclude patterns")]
    Excluded {
        /// Index of the source in the item's `sources`.
        index: usize,
        /// The source as written.
        pattern: String,
    },
    /// A bad pattern (already validated by frontends; kept for library callers).
    #[error(transparent)]
    Pattern(#[from] crate::pattern::PatternError),
    /// A filesystem failure.
    #[error("reading {path}")]
    Io {
        /// The path.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
}

/// Where copies read from: the context (with its excludes) or a root filesystem.
pub struct SourceRoot<'a> {
    /// The directory acting as `/`.
    pub root: &'a Path,
    /// Context-wide excludes (`.dockerignore`); `None` for stage filesystems.
    pub excludes: Option<&'a PatternSet>,
}

impl SourceRoot<'_> {
    fn excluded(&self, rel: &str) -> bool {
        !rel.is_empty() && self.excludes.is_some_and(|e| e.is_excluded(rel))
    }

    fn can_prune(&self) -> bool {
        self.excludes.is_none_or(|e| !e.has_exclusions())
    }
}

/// What one copy selected.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    /// The entries, in walk order.
    pub entries: Vec<Selected>,
    /// The destination as a layer path, when it is a directory the copy fills
    /// (a directory source, several sources, a glob, or a trailing `/`): it is
    /// created even when nothing lands in it.
    pub dest_dir: Option<String>,
    /// Context paths inside the sources that the context-wide excludes
    /// (`.dockerignore`) left out, for `check` to mention.
    pub ignored: Vec<String>,
    /// Host paths of the directories named as sources (their contents are
    /// in `entries`): a depfile lists them so adding a file is noticed.
    pub roots: Vec<PathBuf>,
}

/// Selects every source of `item` under `root`, mapped to layer paths with
/// relative destinations taken against `workdir`.
///
/// # Errors
/// A source that matches nothing (or only excluded paths), or an I/O failure.
pub fn select(
    root: &SourceRoot<'_>,
    item: &CopyItem,
    workdir: &str,
) -> Result<Selection, SelectError> {
    let item_excludes = PatternSet::new(&item.excludes)?;
    let dest_abs = absolute(workdir, &item.dest);
    let mut matches: Vec<(usize, String)> = Vec::new();
    for (index, pattern) in item.sources.iter().enumerate() {
        let found = expand(root, pattern)?;
        if found.is_empty() {
            let exists_unfiltered = !has_wildcards(pattern)
                && resolve_in_root(root.root, Path::new(&clean_rel(pattern))).is_ok();
            return Err(if exists_unfiltered {
                SelectError::Excluded {
                    index,
                    pattern: pattern.clone(),
                }
            } else {
                SelectError::NotFound {
                    index,
                    pattern: pattern.clone(),
                }
            });
        }
        matches.extend(found.into_iter().map(|p| (index, p)));
    }
    let many = matches.len() > 1 || item.sources.iter().any(|s| has_wildcards(s));
    let mut dest_is_dir = item.dest.ends_with('/') || many;
    let mut out = Vec::new();
    let mut ignored = Vec::new();
    let mut roots = Vec::new();
    for (index, rel) in matches {
        let host = resolve_in_root(
            root.root,
            Path::new(if rel.is_empty() { "." } else { &rel }),
        )
        .map_err(|e| {
            if e.kind() == io::ErrorKind::NotFound {
                SelectError::NotFound {
                    index,
                    pattern: item.sources[index].clone(),
                }
            } else {
                SelectError::Io {
                    path: root.root.join(&rel),
                    source: e,
                }
            }
        })?;
        let meta = std::fs::metadata(&host).map_err(|e| SelectError::Io {
            path: host.clone(),
            source: e,
        })?;
        let base_name = rel.rsplit('/').next().unwrap_or("").to_string();
        if meta.is_dir() {
            dest_is_dir = true;
            roots.push(host.clone());
            let target = if item.parents {
                join(&dest_abs, &rel)
            } else {
                dest_abs.clone()
            };
            walk(
                root,
                &host,
                &rel,
                "",
                &target,
                &item_excludes,
                &mut out,
                &mut ignored,
            )?;
        } else {
            if !item_excludes.is_empty() && item_excludes.is_excluded(&base_name) {
                continue;
            }
            let target = if item.parents {
                join(&dest_abs, &rel)
            } else if dest_is_dir {
                join(&dest_abs, &base_name)
            } else {
                dest_abs.clone()
            };
            let mut s = selected(target, host, &meta, None);
            s.direct = true;
            out.push(s);
        }
    }
    Ok(Selection {
        entries: out,
        dest_dir: dest_is_dir.then_some(dest_abs),
        ignored,
        roots,
    })
}

/// `workdir/dest` cleaned, as a layer path (no leading `/`).
pub fn absolute(workdir: &str, dest: &str) -> String {
    let joined = if dest.starts_with('/') {
        dest.to_string()
    } else {
        format!("{}/{dest}", workdir.trim_end_matches('/'))
    };
    clean_path(&format!("/{joined}"))
        .trim_start_matches('/')
        .to_string()
}

fn join(a: &str, b: &str) -> String {
    match (a.is_empty(), b.is_empty()) {
        (true, _) => b.to_string(),
        (_, true) => a.to_string(),
        _ => format!("{a}/{b}"),
    }
}

fn clean_rel(p: &str) -> String {
    let c = clean_path(&format!("/{p}"));
    c.trim_start_matches('/').to_string()
}

/// Root-relative paths matching `pattern`, sorted; context excludes applied.
fn expand(root: &SourceRoot<'_>, pattern: &str) -> Result<Vec<String>, SelectError> {
    let cleaned = clean_rel(pattern);
    if !has_wildcards(&cleaned) {
        if root.excluded(&cleaned) {
            return Ok(Vec::new());
        }
        return match resolve_in_root(
            root.root,
            Path::new(if cleaned.is_empty() { "." } else { &cleaned }),
        ) {
            Ok(_) => Ok(vec![cleaned]),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
                ) =>
            {
                Ok(Vec::new())
            }
            Err(e) => Err(SelectError::Io {
                path: root.root.join(&cleaned),
                source: e,
            }),
        };
    }
    let mut prefixes = vec![String::new()];
    for comp in cleaned.split('/') {
        let mut next = Vec::new();
        for prefix in &prefixes {
            if !has_wildcards(comp) {
                next.push(join(prefix, &unescape(comp)));
                continue;
            }
            let glob = Glob::new(comp)?;
            let dir = match resolve_in_root(
                root.root,
                Path::new(if prefix.is_empty() { "." } else { prefix }),
            ) {
                Ok(d) => d,
                Err(_) => continue,
            };
            let Ok(rd) = std::fs::read_dir(&dir) else {
                continue;
            };
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if glob.matches(&name) {
                    next.push(join(prefix, &name));
                }
            }
        }
        prefixes = next;
    }
    let mut out: Vec<String> = prefixes
        .into_iter()
        .filter(|p| !root.excluded(p))
        .filter(|p| resolve_in_root(root.root, Path::new(p)).is_ok())
        .collect();
    out.sort();
    out.dedup();
    Ok(out)
}

fn unescape(s: &str) -> String {
    let mut out = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(n) = chars.next() {
                out.push(n);
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn selected(
    dest: String,
    host: PathBuf,
    meta: &std::fs::Metadata,
    link: Option<PathBuf>,
) -> Selected {
    let kind = match link {
        Some(target) => SourceKind::Symlink(target),
        None if meta.is_dir() => SourceKind::Dir,
        None => SourceKind::File { size: meta.len() },
    };
    let link_key = (meta.is_file() && meta.nlink() > 1).then(|| (meta.dev(), meta.ino()));
    Selected {
        dest,
        host,
        kind,
        mode: meta.mode() & 0o7777,
        mtime: meta.mtime(),
        link_key,
        direct: false,
        owner: None,
        stat: meta
            .is_file()
            .then(|| crate::store::memo::FileStat::of(meta)),
    }
}

/// Walks a directory source in sorted order without following links.
/// `ctx_rel` is the directory's path relative to the root (for context
/// excludes), `src_rel` relative to the copy source (for `--exclude`).
#[allow(clippy::too_many_arguments)]
fn walk(
    root: &SourceRoot<'_>,
    dir: &Path,
    ctx_rel: &str,
    src_rel: &str,
    dest: &str,
    item_excludes: &PatternSet,
    out: &mut Vec<Selected>,
    ignored: &mut Vec<String>,
) -> Result<(), SelectError> {
    let io_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| SelectError::Io { path, source }
    };
    let mut names: Vec<std::ffi::OsString> = std::fs::read_dir(dir)
        .map_err(io_err(dir))?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<Result<_, _>>()
        .map_err(io_err(dir))?;
    names.sort_by(|a, b| a.as_encoded_bytes().cmp(b.as_encoded_bytes()));
    for name in names {
        let name_str = name.to_string_lossy();
        let child_ctx = join(ctx_rel, &name_str);
        let child_src = join(src_rel, &name_str);
        let child_dest = join(dest, &name_str);
        let host = dir.join(&name);
        let meta = std::fs::symlink_metadata(&host).map_err(io_err(&host))?;
        let ctx_excluded = root.excluded(&child_ctx);
        if ctx_excluded {
            ignored.push(child_ctx.clone());
        }
        let excluded =
            ctx_excluded || (!item_excludes.is_empty() && item_excludes.is_excluded(&child_src));
        if meta.is_dir() {
            let prune = excluded && root.can_prune() && !item_excludes.has_exclusions();
            if prune {
                continue;
            }
            if !excluded {
                out.push(selected(child_dest.clone(), host.clone(), &meta, None));
            }
            walk(
                root,
                &host,
                &child_ctx,
                &child_src,
                &child_dest,
                item_excludes,
                out,
                ignored,
            )?;
            continue;
        }
        if excluded {
            continue;
        }
        if meta.file_type().is_symlink() {
            let target = std::fs::read_link(&host).map_err(io_err(&host))?;
            out.push(selected(child_dest, host, &meta, Some(target)));
        } else if meta.is_file() {
            out.push(selected(child_dest, host, &meta, None));
        }
        // Sockets, fifos and devices in a context are skipped, as docker does.
    }
    Ok(())
}

/// Groups of selected files that are hard links of one another, by the path of
/// the first of each group: for cache keys, where the grouping changes the layer.
pub fn link_groups(sel: &[Selected]) -> HashMap<String, String> {
    let mut first: HashMap<(u64, u64), String> = HashMap::new();
    let mut out = HashMap::new();
    let mut sorted: Vec<&Selected> = sel.iter().collect();
    sorted.sort_by(|a, b| a.dest.as_bytes().cmp(b.dest.as_bytes()));
    for s in sorted {
        if let Some(k) = s.link_key {
            let f = first.entry(k).or_insert_with(|| s.dest.clone());
            out.insert(s.dest.clone(), f.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(sources: &[&str], dest: &str) -> CopyItem {
        CopyItem::from_context(sources, dest)
    }

    fn ctx() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        let p = d.path();
        std::fs::create_dir_all(p.join("src/sub")).unwrap();
        std::fs::write(p.join("src/a.rs"), "a").unwrap();
        std::fs::write(p.join("src/sub/b.rs"), "b").unwrap();
        std::fs::write(p.join("src/notes.md"), "n").unwrap();
        std::fs::write(p.join("foo.txt"), "foo").unwrap();
        std::os::unix::fs::symlink("/etc/passwd", p.join("evil")).unwrap();
        d
    }

    fn dests(v: &Selection) -> Vec<&str> {
        v.entries.iter().map(|s| s.dest.as_str()).collect()
    }

    #[test]
    fn file_to_file_and_into_dir() {
        let d = ctx();
        let root = SourceRoot {
            root: d.path(),
            excludes: None,
        };
        let got = select(&root, &item(&["foo.txt"], "/foo.txt"), "/").unwrap();
        assert_eq!(dests(&got), ["foo.txt"]);
        let got = select(&root, &item(&["foo.txt"], "/etc/"), "/").unwrap();
        assert_eq!(dests(&got), ["etc/foo.txt"]);
        let got = select(&root, &item(&["foo.txt"], "rel/x"), "/work").unwrap();
        assert_eq!(dests(&got), ["work/rel/x"]);
    }

    #[test]
    fn directories_copy_contents_and_globs_expand() {
        let d = ctx();
        let root = SourceRoot {
            root: d.path(),
            excludes: None,
        };
        let got = select(&root, &item(&["src"], "/app"), "/").unwrap();
        assert_eq!(
            dests(&got),
            ["app/a.rs", "app/notes.md", "app/sub", "app/sub/b.rs"]
        );
        let got = select(&root, &item(&["src/*.rs"], "/app/"), "/").unwrap();
        assert_eq!(dests(&got), ["app/a.rs"]);
        let mut it = item(&["src"], "/app");
        it.excludes = vec!["*.md".into()];
        let got = select(&root, &it, "/").unwrap();
        assert_eq!(dests(&got), ["app/a.rs", "app/sub", "app/sub/b.rs"]);
        let mut it = item(&["src/sub/b.rs"], "/x/");
        it.parents = true;
        assert_eq!(dests(&select(&root, &it, "/").unwrap()), ["x/src/sub/b.rs"]);
    }

    #[test]
    fn context_excludes_hide_files() {
        let d = ctx();
        let ex = PatternSet::new(&["**/*.md", "foo.txt"]).unwrap();
        let root = SourceRoot {
            root: d.path(),
            excludes: Some(&ex),
        };
        let got = select(&root, &item(&["."], "/app/"), "/").unwrap();
        assert!(
            !dests(&got)
                .iter()
                .any(|p| p.ends_with(".md") || p.ends_with("foo.txt"))
        );
        assert!(matches!(
            select(&root, &item(&["foo.txt"], "/"), "/"),
            Err(SelectError::Excluded { .. })
        ));
    }

    #[test]
    fn missing_and_escaping_sources() {
        let d = ctx();
        let root = SourceRoot {
            root: d.path(),
            excludes: None,
        };
        assert!(matches!(
            select(&root, &item(&["nope.txt"], "/"), "/"),
            Err(SelectError::NotFound { index: 0, .. })
        ));
        assert!(matches!(
            select(&root, &item(&["*.nope"], "/"), "/"),
            Err(SelectError::NotFound { .. })
        ));
        // A symlink to /etc/passwd resolves inside the context, where there is none.
        assert!(select(&root, &item(&["evil"], "/x"), "/").is_err());
        assert!(select(&root, &item(&["../../../../etc/passwd"], "/x"), "/").is_err());
    }

    #[test]
    fn absolute_dest() {
        assert_eq!(absolute("/", "/a/b/"), "a/b");
        assert_eq!(absolute("/w", "x"), "w/x");
        assert_eq!(absolute("/w", "../../x"), "x");
        assert_eq!(absolute("/", "."), "");
    }
}
