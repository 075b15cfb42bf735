//! Selecting what a copy reads: expanding globs, walking directories, applying
//! context-wide and per-copy excludes, and mapping each source to its path in
//! the layer, with docker's COPY rules:
//!
//! - a directory source copies its *contents* into the destination;
//! - a file source lands at `dest` itself, or at `dest/NAME` when `dest` ends in
//!   `/` (or, decided later over the filesystem below, is an existing
//!   directory); several sources into a `dest` without the `/` are an error,
//!   as the Dockerfile reference and the classic builder have it;
//! - a glob that matches nothing copies nothing (BuildKit), while a plain
//!   name that does not exist is an error;
//! - files from the context are root's; files from a stage or an image keep
//!   their owners (BuildKit), unless `--chown` says otherwise;
//! - a symlink named directly as a source is followed (inside the root); links
//!   found while walking a directory are copied as links;
//! - nothing outside the root is ever read: every name is resolved through
//!   the root's [`Root`] (the kernel, with the root as `/`), and a selected
//!   file is later read through it again, never by a host path.
//!
//! Names are bytes: a context file whose name is not UTF-8 lands in the
//! layer under the same bytes. Patterns (globs, excludes) are text, matched
//! against the names shown lossily.

use std::collections::HashMap;
use std::io;
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::sync::Arc;

use rustix::fs::FileType;

use crate::confine::Root;
use crate::graph::CopyItem;
use crate::layer::index::Merged;
use crate::layer::{FileSource, LayerPath};
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
        /// Where its bytes are read from.
        source: FileSource,
    },
    /// A symbolic link, kept as a link.
    Symlink(PathBuf),
    /// A hard link to another selected entry (its layer path); from archives.
    Hardlink(LayerPath),
}

/// One source entry and where it goes.
#[derive(Debug, Clone)]
pub struct Selected {
    /// Path in the layer.
    pub dest: LayerPath,
    /// Where it is on the host, for messages and depfiles only: never
    /// opened (a file is read through its [`FileSource`]).
    pub shown: PathBuf,
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
    /// Several sources (after glob expansion) into a destination that does
    /// not end in `/`.
    #[error(
        "{count} sources copied to `{dest}`: with more than one source the destination \
         must be a directory and end with a / (write `{dest}/`)"
    )]
    ManyIntoFile {
        /// How many sources matched.
        count: usize,
        /// The destination as written.
        dest: String,
    },
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
    pub root: &'a Arc<Root>,
    /// Context-wide excludes (`.dockerignore`); `None` for stage filesystems.
    pub excludes: Option<&'a PatternSet>,
    /// For a stage's or an image's filesystem, the listing of its layers:
    /// the files keep the owners it gives them (the snapshot's own owners
    /// are the user's when it was extracted rootless). `None` for the
    /// context, whose files become root's.
    pub owners: Option<&'a Merged>,
}

impl SourceRoot<'_> {
    fn excluded(&self, rel: &LayerPath) -> bool {
        !rel.is_empty()
            && self
                .excludes
                .is_some_and(|e| e.is_excluded(&rel.to_string_lossy()))
    }

    fn can_prune(&self) -> bool {
        self.excludes.is_none_or(|e| !e.has_exclusions())
    }

    fn io_err(&self, rel: &LayerPath) -> impl FnOnce(io::Error) -> SelectError + '_ {
        let path = self.root.display_path(rel.as_path());
        move |source| SelectError::Io { path, source }
    }
}

/// What one copy selected.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    /// The entries, in walk order.
    pub entries: Vec<Selected>,
    /// The destination, when it is a directory the copy fills (a directory
    /// source, several sources, a glob, or a trailing `/`): it is created
    /// even when nothing lands in it.
    pub dest_dir: Option<LayerPath>,
    /// Context paths inside the sources that the context-wide excludes
    /// (`.dockerignore`) left out, for `check` to mention.
    pub ignored: Vec<String>,
    /// Host paths of the directories named as sources (their contents are
    /// in `entries`): a depfile lists them so adding a file is noticed.
    pub roots: Vec<PathBuf>,
    /// Where the one file goes instead of `dest` when `dest` (no trailing
    /// `/`) turns out to be a directory in the filesystem below:
    /// `dest/NAME`, as docker's COPY puts it.
    pub into_dir: Option<LayerPath>,
    /// Globs among the sources that matched nothing (copied nothing), for
    /// a warning.
    pub unmatched: Vec<String>,
}

fn kind_of(st: &rustix::fs::Stat) -> FileType {
    FileType::from_raw_mode(st.st_mode)
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
    let mut matches: Vec<(usize, LayerPath)> = Vec::new();
    let mut unmatched = Vec::new();
    for (index, pattern) in item.sources.iter().enumerate() {
        let found = expand(root, pattern)?;
        if found.is_empty() && has_wildcards(pattern) {
            unmatched.push(pattern.clone());
            continue;
        }
        if found.is_empty() {
            let exists_unfiltered =
                !has_wildcards(pattern) && root.root.stat(clean_rel(pattern).as_path()).is_ok();
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
    if matches.len() > 1 && !item.dest.ends_with('/') {
        return Err(SelectError::ManyIntoFile {
            count: matches.len(),
            dest: item.dest.clone(),
        });
    }
    let nothing = matches.is_empty();
    let mut dest_is_dir = item.dest.ends_with('/') && !nothing;
    let mut into_dir = None;
    let mut out = Vec::new();
    let mut ignored = Vec::new();
    let mut roots = Vec::new();
    for (index, rel) in matches {
        // Named directly: a symlink is followed, inside the root.
        let meta = root.root.stat(rel.as_path()).map_err(|e| {
            if e.kind() == io::ErrorKind::NotFound {
                SelectError::NotFound {
                    index,
                    pattern: item.sources[index].clone(),
                }
            } else {
                (root.io_err(&rel))(e)
            }
        })?;
        let base_name = rel.file_name().to_vec();
        if kind_of(&meta) == FileType::Directory {
            dest_is_dir = true;
            roots.push(root.root.display_path(rel.as_path()));
            let target = if item.parents {
                dest_abs.join(rel.as_bytes())
            } else {
                dest_abs.clone()
            };
            walk(
                root,
                &rel,
                &LayerPath::root(),
                &target,
                &item_excludes,
                &mut out,
                &mut ignored,
            )?;
        } else {
            if !item_excludes.is_empty()
                && item_excludes.is_excluded(&String::from_utf8_lossy(&base_name))
            {
                continue;
            }
            let target = if item.parents {
                dest_abs.join(rel.as_bytes())
            } else if dest_is_dir {
                dest_abs.join(&base_name)
            } else {
                into_dir = Some(dest_abs.join(&base_name));
                dest_abs.clone()
            };
            if kind_of(&meta) != FileType::RegularFile {
                // A device, fifo or socket named directly: nothing a layer
                // copy can read (docker refuses them too).
                return Err((root.io_err(&rel))(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "not a regular file or directory",
                )));
            }
            let mut s = selected(root, target, &rel, &meta, None, true);
            s.direct = true;
            out.push(s);
        }
    }
    Ok(Selection {
        entries: out,
        dest_dir: dest_is_dir.then_some(dest_abs),
        ignored,
        roots,
        into_dir,
        unmatched,
    })
}

/// `workdir/dest` cleaned, as a layer path.
pub fn absolute(workdir: &str, dest: &str) -> LayerPath {
    let joined = if dest.starts_with('/') {
        dest.to_string()
    } else {
        format!("{}/{dest}", workdir.trim_end_matches('/'))
    };
    LayerPath::from(
        clean_path(&format!("/{joined}"))
            .trim_start_matches('/')
            .to_string(),
    )
}

fn clean_rel(p: &str) -> LayerPath {
    LayerPath::from(
        clean_path(&format!("/{p}"))
            .trim_start_matches('/')
            .to_string(),
    )
}

/// Root-relative paths matching `pattern`, sorted; context excludes applied.
fn expand(root: &SourceRoot<'_>, pattern: &str) -> Result<Vec<LayerPath>, SelectError> {
    let cleaned = clean_rel(pattern);
    let text = cleaned.to_string();
    if !has_wildcards(&text) {
        if root.excluded(&cleaned) {
            return Ok(Vec::new());
        }
        return match root.root.stat(cleaned.as_path()) {
            Ok(_) => Ok(vec![cleaned]),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
                ) =>
            {
                Ok(Vec::new())
            }
            Err(e) => Err((root.io_err(&cleaned))(e)),
        };
    }
    let mut prefixes = vec![LayerPath::root()];
    for comp in text.split('/') {
        let mut next = Vec::new();
        for prefix in &prefixes {
            if !has_wildcards(comp) {
                next.push(prefix.join(unescape(comp).as_bytes()));
                continue;
            }
            let glob = Glob::new(comp)?;
            let Ok(children) = root.root.read_dir(prefix.as_path()) else {
                continue;
            };
            for e in children {
                if glob.matches(&e.name.to_string_lossy()) {
                    next.push(prefix.join(e.name.as_bytes()));
                }
            }
        }
        prefixes = next;
    }
    let mut out: Vec<LayerPath> = prefixes
        .into_iter()
        .filter(|p| !root.excluded(p))
        .filter(|p| root.root.stat(p.as_path()).is_ok())
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

/// The selected entry for `rel` (inside the root) going to `dest`; a file
/// is read later through the root, following a final symlink only when
/// `follow` (it was named directly).
fn selected(
    root: &SourceRoot<'_>,
    dest: LayerPath,
    rel: &LayerPath,
    meta: &rustix::fs::Stat,
    link: Option<PathBuf>,
    follow: bool,
) -> Selected {
    let ft = kind_of(meta);
    let is_file = ft == FileType::RegularFile && link.is_none();
    let kind = match link {
        Some(target) => SourceKind::Symlink(target),
        None if ft == FileType::Directory => SourceKind::Dir,
        None => SourceKind::File {
            size: meta.st_size as u64,
            source: FileSource::in_root(root.root, rel.clone(), follow),
        },
    };
    let link_key = (is_file && meta.st_nlink > 1).then_some((meta.st_dev, meta.st_ino));
    Selected {
        dest,
        shown: root.root.display_path(rel.as_path()),
        kind,
        mode: meta.st_mode & 0o7777,
        mtime: meta.st_mtime,
        link_key,
        direct: false,
        owner: root.owners.map(|listing| {
            listing
                .get(&listing.resolve(rel))
                .map_or((u64::from(meta.st_uid), u64::from(meta.st_gid)), |m| {
                    (m.uid, m.gid)
                })
        }),
        stat: is_file.then(|| crate::store::memo::FileStat::of_stat(meta)),
    }
}

/// Walks a directory source in sorted order without following links,
/// depth first (a directory's contents right after it). `ctx_rel` is the
/// directory's path relative to the root (for context excludes), `src_rel`
/// relative to the copy source (for `--exclude`).
///
/// Iterative (an explicit stack of open listings), so a context nested
/// deeper than the thread's stack could hold is walked all the same.
fn walk(
    root: &SourceRoot<'_>,
    ctx_rel: &LayerPath,
    src_rel: &LayerPath,
    dest: &LayerPath,
    item_excludes: &PatternSet,
    out: &mut Vec<Selected>,
    ignored: &mut Vec<String>,
) -> Result<(), SelectError> {
    struct Frame {
        /// The directory, open: children are reached from it, one
        /// component at a time.
        fd: std::os::fd::OwnedFd,
        /// Children not visited yet, last first, with their `lstat`.
        todo: Vec<(crate::confine::DirEntry, rustix::fs::Stat)>,
        ctx: LayerPath,
        src: LayerPath,
        dest: LayerPath,
    }
    let frame = |fd: std::os::fd::OwnedFd, ctx: LayerPath, src, dest| {
        let mut todo = crate::confine::read_dir_stat_fd(fd.as_fd()).map_err(root.io_err(&ctx))?;
        todo.reverse();
        Ok::<_, SelectError>(Frame {
            fd,
            todo,
            ctx,
            src,
            dest,
        })
    };
    let top = root
        .root
        .open_dir(ctx_rel.as_path())
        .map_err(root.io_err(ctx_rel))?;
    let mut stack = vec![frame(top, ctx_rel.clone(), src_rel.clone(), dest.clone())?];
    while let Some(f) = stack.last_mut() {
        let Some((e, meta)) = f.todo.pop() else {
            stack.pop();
            continue;
        };
        let name = e.name.as_bytes();
        let child_ctx = f.ctx.join(name);
        let child_src = f.src.join(name);
        let child_dest = f.dest.join(name);
        let ctx_excluded = root.excluded(&child_ctx);
        if ctx_excluded {
            ignored.push(child_ctx.to_string());
        }
        let excluded = ctx_excluded
            || (!item_excludes.is_empty()
                && item_excludes.is_excluded(&child_src.to_string_lossy()));
        if e.kind == FileType::Directory {
            let prune = excluded && root.can_prune() && !item_excludes.has_exclusions();
            if prune {
                continue;
            }
            if !excluded {
                out.push(selected(
                    root,
                    child_dest.clone(),
                    &child_ctx,
                    &meta,
                    None,
                    false,
                ));
            }
            let fd = crate::confine::open_child_dir(f.fd.as_fd(), &e.name)
                .map_err(root.io_err(&child_ctx))?;
            let next = frame(fd, child_ctx, child_src, child_dest)?;
            stack.push(next);
            continue;
        }
        if excluded {
            continue;
        }
        match e.kind {
            FileType::Symlink => {
                let target = crate::confine::read_link_at(f.fd.as_fd(), &e.name)
                    .map_err(root.io_err(&child_ctx))?;
                out.push(selected(
                    root,
                    child_dest,
                    &child_ctx,
                    &meta,
                    Some(target),
                    false,
                ));
            }
            FileType::RegularFile => {
                out.push(selected(root, child_dest, &child_ctx, &meta, None, false));
            }
            // Sockets, fifos and devices in a context are skipped, as docker does.
            _ => {}
        }
    }
    Ok(())
}

/// Groups of selected files that are hard links of one another, by the path of
/// the first of each group: for cache keys, where the grouping changes the layer.
pub fn link_groups(sel: &[Selected]) -> HashMap<LayerPath, LayerPath> {
    let mut first: HashMap<(u64, u64), LayerPath> = HashMap::new();
    let mut out = HashMap::new();
    let mut sorted: Vec<&Selected> = sel.iter().collect();
    sorted.sort_by(|a, b| a.dest.cmp(&b.dest));
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
        fs_err::create_dir_all(p.join("src/sub")).unwrap();
        fs_err::write(p.join("src/a.rs"), "a").unwrap();
        fs_err::write(p.join("src/sub/b.rs"), "b").unwrap();
        fs_err::write(p.join("src/notes.md"), "n").unwrap();
        fs_err::write(p.join("foo.txt"), "foo").unwrap();
        fs_err::os::unix::fs::symlink("/etc/passwd", p.join("evil")).unwrap();
        d
    }

    fn dests(v: &Selection) -> Vec<String> {
        v.entries.iter().map(|s| s.dest.to_string()).collect()
    }

    #[test]
    fn file_to_file_and_into_dir() {
        let d = ctx();
        let r = Arc::new(Root::open(d.path()).unwrap());
        let root = SourceRoot {
            root: &r,
            excludes: None,
            owners: None,
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
        let r = Arc::new(Root::open(d.path()).unwrap());
        let root = SourceRoot {
            root: &r,
            excludes: None,
            owners: None,
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
        let r = Arc::new(Root::open(d.path()).unwrap());
        let root = SourceRoot {
            root: &r,
            excludes: Some(&ex),
            owners: None,
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
        let r = Arc::new(Root::open(d.path()).unwrap());
        let root = SourceRoot {
            root: &r,
            excludes: None,
            owners: None,
        };
        assert!(matches!(
            select(&root, &item(&["nope.txt"], "/"), "/"),
            Err(SelectError::NotFound { index: 0, .. })
        ));
        // A glob that matches nothing copies nothing (BuildKit) and says so.
        let none = select(&root, &item(&["*.nope", "foo.txt"], "/d/"), "/").unwrap();
        assert_eq!(none.unmatched, ["*.nope"]);
        assert_eq!(dests(&none), ["d/foo.txt"]);
        let none = select(&root, &item(&["*.nope"], "/d/"), "/").unwrap();
        assert!(none.entries.is_empty() && none.dest_dir.is_none());
        // Several sources need a directory destination written with a `/`.
        assert!(matches!(
            select(&root, &item(&["foo.txt", "src"], "/d"), "/"),
            Err(SelectError::ManyIntoFile { count: 2, .. })
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
