//! Diff capture: what a command changed, as layer entries.
//!
//! With overlay, the upper directory *is* the change: new and modified
//! entries as they are, deletions as 0/0 character devices and replaced
//! directories marked opaque by an xattr. Those become OCI whiteouts
//! (`.wh.NAME`, `.wh..wh..opq`; OCI image spec, "Whiteouts").
//!
//! Without overlay, [`compare`] finds the same changes by comparing the tree
//! after the command with the tree before it, and reports them the way
//! overlay would have, so both paths give the same layer bytes.
//!
//! Everything the command left is hostile: the upper (or the copy) is read
//! through a [`Root`], never by joined host paths (a symlink the command
//! made must not turn the builder's reads or removals towards the host),
//! names are kept as bytes, and the walks are iterative, so no depth of
//! directories the command made can exhaust the builder's stack.

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsStr;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustix::fs::{AtFlags, FileType, OFlags, Stat, StatxFlags};

use crate::confine::{self, Root};
use crate::layer::{Entry, EntryKind, FileSource, LayerPath, OPAQUE_WHITEOUT, WHITEOUT_PREFIX};

/// A tree that cannot be read.
#[derive(Debug, thiserror::Error)]
#[error("reading {path}")]
pub struct Error {
    /// The path.
    pub path: PathBuf,
    /// Why.
    #[source]
    pub source: io::Error,
}

/// How file metadata becomes layer metadata.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// Clamp mtimes to this (SOURCE_DATE_EPOCH).
    pub epoch: Option<u64>,
    /// In a rootless sandbox, files the invoking user owns on the host are
    /// owned by root in the container: `(host uid, host gid)`.
    pub rootless: Option<(u32, u32)>,
}

impl Options {
    fn mtime(&self, m: &Stat) -> u64 {
        let t = m.st_mtime.max(0) as u64;
        self.epoch.map_or(t, |e| t.min(e))
    }

    fn owner(&self, m: &Stat) -> (u64, u64) {
        match self.rootless {
            Some((u, g)) => (
                if m.st_uid == u {
                    0
                } else {
                    u64::from(m.st_uid)
                },
                if m.st_gid == g {
                    0
                } else {
                    u64::from(m.st_gid)
                },
            ),
            None => (u64::from(m.st_uid), u64::from(m.st_gid)),
        }
    }
}

fn open_root(p: &Path) -> Result<Arc<Root>, Error> {
    Root::open(p).map(Arc::new).map_err(|e| Error {
        path: p.to_path_buf(),
        source: match e {
            confine::Error::Open { source, .. } => source,
            other => io::Error::new(io::ErrorKind::Unsupported, other.to_string()),
        },
    })
}

fn kind(m: &Stat) -> FileType {
    FileType::from_raw_mode(m.st_mode)
}

/// Removes from `upper` what the sandbox created only to mount on (`created`,
/// in creation order), and the directories overlay copied up only to hold
/// them: empty, not opaque, and with the same mode and owner in `lowers`.
///
/// `created` names real paths (no symlinks) as the sandbox made them; one the
/// command has since turned into a path through a symlink is left alone
/// (nothing is ever removed through a link), and so is anything that is not
/// what the sandbox made (a non-empty file, a directory with children).
pub fn remove_mountpoints(upper: &Path, created: &[String], lowers: &[PathBuf]) {
    let Ok(root) = Root::open(upper) else {
        return;
    };
    let lowers: Vec<Root> = lowers.iter().filter_map(|l| Root::open(l).ok()).collect();
    let mut parents: Vec<LayerPath> = Vec::new();
    for rel in created.iter().rev() {
        let rel = LayerPath::clean(rel.as_bytes());
        if remove_strict(&root, &rel, |_, st| {
            kind(st) == FileType::Directory || st.st_size == 0
        }) {
            parents.extend(rel.ancestors().map(LayerPath::from));
        }
    }
    parents.sort_by_key(|p| std::cmp::Reverse(p.as_bytes().len()));
    parents.dedup();
    for rel in parents {
        remove_strict(&root, &rel, |fd, m| {
            let empty = confine::read_dir_fd(fd).is_ok_and(|d| d.is_empty());
            if kind(m) != FileType::Directory || !empty || is_opaque(fd) {
                return false;
            }
            lowers
                .iter()
                .find_map(|l| {
                    let fd = l.open_strict(rel.as_path(), OFlags::PATH).ok()?;
                    rustix::fs::fstat(&fd).ok()
                })
                .is_some_and(|l| {
                    kind(&l) == FileType::Directory
                        && l.st_mode == m.st_mode
                        && l.st_uid == m.st_uid
                        && l.st_gid == m.st_gid
                })
        });
    }
}

/// Removes `rel` (a file or an empty directory) from `root` when no
/// component of it is a symlink and `ok` approves of what is there;
/// returns whether it was removed.
fn remove_strict(
    root: &Root,
    rel: &LayerPath,
    ok: impl FnOnce(std::os::fd::BorrowedFd<'_>, &Stat) -> bool,
) -> bool {
    let Some(parent) = rel.parent() else {
        return false;
    };
    let name = OsStr::from_bytes(rel.file_name());
    let Ok(dir) = root.open_strict(parent.as_path(), OFlags::DIRECTORY | OFlags::RDONLY) else {
        return false;
    };
    let Ok(st) = rustix::fs::statat(&dir, name, AtFlags::SYMLINK_NOFOLLOW) else {
        return false;
    };
    let is_dir = kind(&st) == FileType::Directory;
    let fd = if is_dir {
        rustix::fs::openat(
            &dir,
            name,
            OFlags::DIRECTORY | OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
        )
    } else {
        rustix::fs::openat(
            &dir,
            name,
            OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
        )
    };
    let Ok(fd) = fd else {
        return false;
    };
    if !ok(fd.as_fd(), &st) {
        return false;
    }
    let flags = if is_dir {
        AtFlags::REMOVEDIR
    } else {
        AtFlags::empty()
    };
    rustix::fs::unlinkat(&dir, name, flags).is_ok()
}

fn is_opaque(fd: std::os::fd::BorrowedFd<'_>) -> bool {
    ["trusted.overlay.opaque", "user.overlay.opaque"]
        .iter()
        .any(|name| confine::get_xattr(fd, OsStr::new(name)).is_some_and(|v| v == b"y"))
}

/// The xattrs of an object worth keeping in a layer (DESIGN.md, "Formats":
/// `user.*` and `security.capability`); overlay's own are the sandbox's
/// bookkeeping, not the image's.
fn xattrs(fd: std::os::fd::BorrowedFd<'_>) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for name in confine::list_xattrs(fd) {
        let Some(text) = name.to_str() else { continue };
        let keep = (text.starts_with("user.") && !text.starts_with("user.overlay."))
            || text == "security.capability";
        if !keep {
            continue;
        }
        if let Some(value) = confine::get_xattr(fd, &name) {
            out.push((text.to_string(), value));
        }
    }
    out.sort();
    out
}

/// The whiteout hiding `name` in `parent`.
fn whiteout(parent: &LayerPath, name: &[u8], mtime: u64) -> Entry {
    let mut n = WHITEOUT_PREFIX.as_bytes().to_vec();
    n.extend_from_slice(name);
    marker(parent, &n, mtime)
}

/// The opaque marker of directory `dir`.
fn opaque(dir: &LayerPath, mtime: u64) -> Entry {
    marker(dir, OPAQUE_WHITEOUT.as_bytes(), mtime)
}

fn marker(parent: &LayerPath, file_name: &[u8], mtime: u64) -> Entry {
    Entry {
        path: parent.join(file_name),
        kind: EntryKind::File {
            source: FileSource::Empty,
            size: 0,
        },
        mode: 0,
        uid: 0,
        gid: 0,
        mtime,
        xattrs: Vec::new(),
        link_key: None,
    }
}

/// Where a walk found an object: its directory, open, and its name there.
#[derive(Clone, Copy)]
struct At<'a> {
    dir: std::os::fd::BorrowedFd<'a>,
    name: &'a OsStr,
}

/// One filesystem object of `root` as a layer entry (`None` for sockets,
/// which a layer cannot hold).
fn entry(
    root: &Arc<Root>,
    rel: &LayerPath,
    at: At<'_>,
    m: &Stat,
    o: &Options,
) -> Result<Option<Entry>, Error> {
    let err = |source| Error {
        path: root.display_path(rel.as_path()),
        source,
    };
    let ft = kind(m);
    let (uid, gid) = o.owner(m);
    let kind = match ft {
        FileType::Directory => EntryKind::Dir,
        FileType::RegularFile => EntryKind::File {
            source: FileSource::in_root(root, rel.clone(), false),
            size: m.st_size as u64,
        },
        FileType::Symlink => {
            EntryKind::Symlink(confine::read_link_at(at.dir, at.name).map_err(err)?)
        }
        FileType::CharacterDevice => EntryKind::Char {
            major: rustix::fs::major(m.st_rdev),
            minor: rustix::fs::minor(m.st_rdev),
        },
        FileType::BlockDevice => EntryKind::Block {
            major: rustix::fs::major(m.st_rdev),
            minor: rustix::fs::minor(m.st_rdev),
        },
        FileType::Fifo => EntryKind::Fifo,
        _ => return Ok(None),
    };
    let link_key = (ft == FileType::RegularFile && m.st_nlink > 1).then_some((m.st_dev, m.st_ino));
    let xattrs = if ft == FileType::Symlink {
        Vec::new()
    } else {
        let fd = rustix::fs::openat(
            at.dir,
            at.name,
            OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
        )
        .map_err(|e| err(e.into()))?;
        xattrs(fd.as_fd())
    };
    Ok(Some(Entry {
        path: rel.clone(),
        kind,
        mode: m.st_mode & 0o7777,
        uid,
        gid,
        mtime: o.mtime(m),
        xattrs,
        link_key,
    }))
}

/// A depth-first walk of `root` without following links: calls
/// `visit(rel, stat)` for each entry, parents before children, names in
/// byte order; its answer says whether to enter a directory. Iterative,
/// with one open listing per level.
fn walk(
    root: &Root,
    mut visit: impl FnMut(&LayerPath, &Stat, At<'_>) -> Result<bool, Error>,
) -> Result<(), Error> {
    let err = |rel: &LayerPath| {
        let path = root.display_path(rel.as_path());
        move |source| Error { path, source }
    };
    struct Frame {
        at: LayerPath,
        dir: OwnedFd,
        todo: Vec<confine::DirEntry>,
    }
    let top = LayerPath::root();
    let dir = root.open_dir(Path::new(".")).map_err(err(&top))?;
    let mut todo = confine::read_dir_fd(dir.as_fd()).map_err(err(&top))?;
    todo.reverse();
    let mut stack = vec![Frame { at: top, dir, todo }];
    while let Some(f) = stack.last_mut() {
        let Some(e) = f.todo.pop() else {
            stack.pop();
            continue;
        };
        let rel = f.at.join(e.name.as_bytes());
        let m = rustix::fs::statat(&f.dir, e.name.as_os_str(), AtFlags::SYMLINK_NOFOLLOW)
            .map_err(|e| err(&rel)(e.into()))?;
        let descend = visit(
            &rel,
            &m,
            At {
                dir: f.dir.as_fd(),
                name: &e.name,
            },
        )?;
        if descend && kind(&m) == FileType::Directory {
            let dir = rustix::fs::openat(
                &f.dir,
                e.name.as_os_str(),
                OFlags::DIRECTORY | OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                rustix::fs::Mode::empty(),
            )
            .map_err(|e| err(&rel)(e.into()))?;
            let mut todo = confine::read_dir_fd(dir.as_fd()).map_err(err(&rel))?;
            todo.reverse();
            stack.push(Frame { at: rel, dir, todo });
        }
    }
    Ok(())
}

/// The entries of an overlay upper directory.
///
/// # Errors
/// A part of the tree that cannot be read.
pub fn capture(upper: &Path, o: &Options) -> Result<Vec<Entry>, Error> {
    let root = open_root(upper)?;
    let mut out = Vec::new();
    // A whiteout or an opaque marker takes its directory's mtime.
    let dir_mtime = |rel: &LayerPath| -> Result<u64, Error> {
        let st = root.lstat(rel.as_path()).map_err(|source| Error {
            path: root.display_path(rel.as_path()),
            source,
        })?;
        Ok(o.mtime(&st))
    };
    let mut mtimes: HashMap<LayerPath, u64> = HashMap::new();
    mtimes.insert(LayerPath::root(), dir_mtime(&LayerPath::root())?);
    walk(&root, |rel, m, at| {
        let parent = rel.parent().unwrap_or_default();
        let pm = match mtimes.get(&parent) {
            Some(t) => *t,
            None => dir_mtime(&parent)?,
        };
        if kind(m) == FileType::CharacterDevice && m.st_rdev == 0 {
            out.push(whiteout(&parent, rel.file_name(), pm));
            return Ok(false);
        }
        if kind(m) == FileType::Directory {
            let t = o.mtime(m);
            mtimes.insert(rel.clone(), t);
            let fd = rustix::fs::openat(
                at.dir,
                at.name,
                OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                rustix::fs::Mode::empty(),
            )
            .map_err(|e| Error {
                path: root.display_path(rel.as_path()),
                source: e.into(),
            })?;
            if is_opaque(fd.as_fd()) {
                out.push(opaque(rel, t));
            }
        }
        if let Some(en) = entry(&root, rel, at, m, o)? {
            out.push(en);
        }
        Ok(true)
    })?;
    Ok(out)
}

/// What [`compare`] needs to know of the tree before the command ran.
#[derive(Debug, Clone)]
pub struct Before {
    ino: u64,
    /// Birth time where the filesystem records it: inode numbers are reused
    /// at once (`rm -rf d && mkdir d` may give `d` its old number).
    born: Option<(i64, u32)>,
    mode: u32,
    uid: u32,
    gid: u32,
    size: u64,
    mtime: (i64, u64),
    ctime: (i64, u64),
}

/// The state of one tree, as [`record`] and [`compare`] see it.
pub type Recorded = BTreeMap<LayerPath, Before>;

fn before_of(m: &Stat, born: Option<(i64, u32)>) -> Before {
    Before {
        ino: m.st_ino,
        born,
        mode: m.st_mode,
        uid: m.st_uid,
        gid: m.st_gid,
        size: m.st_size as u64,
        mtime: (m.st_mtime, m.st_mtime_nsec),
        ctime: (m.st_ctime, m.st_ctime_nsec),
    }
}

/// Records the state of `root` (a private copy the command will run on).
///
/// # Errors
/// A part of the tree that cannot be read.
pub fn record(root: &Path) -> Result<Recorded, Error> {
    let r = open_root(root)?;
    let mut out = BTreeMap::new();
    walk(&r, |rel, m, at| {
        out.insert(rel.clone(), before_of(m, birth(at)));
        Ok(true)
    })?;
    Ok(out)
}

/// The changes between `before` (recorded by [`record`]) and `root` now, as
/// overlay would have recorded them: a changed entry (its inode data or
/// metadata touched: ctime moved, or a new inode) with every directory above
/// it (overlay copies parents up), a deleted one as a whiteout, and a
/// directory that was removed and made again as opaque.
///
/// # Errors
/// A part of the tree that cannot be read.
pub fn compare(root: &Path, before: &Recorded, o: &Options) -> Result<Vec<Entry>, Error> {
    let r = open_root(root)?;
    let mut now: HashMap<LayerPath, (Stat, Option<(i64, u32)>)> = HashMap::new();
    let mut order = Vec::new();
    walk(&r, |rel, m, at| {
        now.insert(rel.clone(), (*m, birth(at)));
        order.push(rel.clone());
        Ok(true)
    })?;
    let mut changed: BTreeMap<LayerPath, bool> = BTreeMap::new(); // path -> opaque
    for rel in &order {
        let (m, born) = &now[rel];
        let reborn = |b: &Before| b.ino != m.st_ino || b.born != *born;
        let differs = match before.get(rel) {
            None => true,
            Some(b) => {
                reborn(b)
                    || b.mode != m.st_mode
                    || b.uid != m.st_uid
                    || b.gid != m.st_gid
                    || b.size != m.st_size as u64
                    || b.mtime != (m.st_mtime, m.st_mtime_nsec)
                    || b.ctime != (m.st_ctime, m.st_ctime_nsec)
            }
        };
        if differs {
            // A directory made where something was (rm -rf + mkdir): overlay
            // creates it over a whiteout, opaque.
            let opaque = kind(m) == FileType::Directory && before.get(rel).is_some_and(reborn);
            changed.insert(rel.clone(), opaque);
            for a in rel.ancestors() {
                changed.entry(LayerPath::from(a)).or_insert(false);
            }
        }
    }
    let mut out = Vec::new();
    // Deletions: the topmost deleted path, under a surviving directory
    // (inside an opaque directory nothing below needs a whiteout).
    for rel in before.keys() {
        if now.contains_key(rel) {
            continue;
        }
        let parent = rel.parent().unwrap_or_default();
        if !parent.is_empty() && !now.contains_key(&parent) {
            continue;
        }
        if changed.get(&parent) == Some(&true) {
            continue;
        }
        let pm = if parent.is_empty() {
            r.lstat(Path::new(".")).map_err(|source| Error {
                path: root.to_path_buf(),
                source,
            })?
        } else {
            now[&parent].0
        };
        if !parent.is_empty() {
            changed.entry(parent.clone()).or_insert(false);
            for a in parent.ancestors() {
                changed.entry(LayerPath::from(a)).or_insert(false);
            }
        }
        out.push(whiteout(&parent, rel.file_name(), o.mtime(&pm)));
    }
    for (rel, is_opaque) in &changed {
        let (m, _) = &now[rel];
        if *is_opaque {
            out.push(opaque(rel, o.mtime(m)));
        }
        let parent = rel.parent().unwrap_or_default();
        let dir = r
            .open_strict(parent.as_path(), OFlags::DIRECTORY | OFlags::RDONLY)
            .map_err(|source| Error {
                path: r.display_path(parent.as_path()),
                source,
            })?;
        let at = At {
            dir: dir.as_fd(),
            name: OsStr::from_bytes(rel.file_name()),
        };
        if let Some(e) = entry(&r, rel, at, m, o)? {
            out.push(e);
        }
    }
    Ok(out)
}

fn birth(at: At<'_>) -> Option<(i64, u32)> {
    let st = rustix::fs::statx(
        at.dir,
        at.name,
        AtFlags::SYMLINK_NOFOLLOW,
        StatxFlags::BTIME,
    )
    .ok()?;
    (st.stx_mask & StatxFlags::BTIME.bits() != 0)
        .then_some((st.stx_btime.tv_sec, st.stx_btime.tv_nsec))
}
