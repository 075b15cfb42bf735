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

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use crate::layer::{Entry, EntryKind, OPAQUE_WHITEOUT, WHITEOUT_PREFIX};

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
    fn mtime(&self, m: &std::fs::Metadata) -> u64 {
        let t = m.mtime().max(0) as u64;
        self.epoch.map_or(t, |e| t.min(e))
    }

    fn owner(&self, m: &std::fs::Metadata) -> (u64, u64) {
        match self.rootless {
            Some((u, g)) => (
                if m.uid() == u { 0 } else { u64::from(m.uid()) },
                if m.gid() == g { 0 } else { u64::from(m.gid()) },
            ),
            None => (u64::from(m.uid()), u64::from(m.gid())),
        }
    }
}

fn err(path: &Path) -> impl FnOnce(io::Error) -> Error + '_ {
    move |source| Error {
        path: path.to_path_buf(),
        source,
    }
}

/// Removes from `upper` what the sandbox created only to mount on (`created`,
/// in creation order), and the directories overlay copied up only to hold
/// them: empty, not opaque, and with the same mode and owner in `lowers`.
pub fn remove_mountpoints(upper: &Path, created: &[String], lowers: &[PathBuf]) {
    let mut parents: Vec<&str> = Vec::new();
    for rel in created.iter().rev() {
        let p = upper.join(rel);
        let Ok(m) = std::fs::symlink_metadata(&p) else {
            continue;
        };
        let removed = if m.is_dir() {
            std::fs::remove_dir(&p).is_ok()
        } else {
            m.len() == 0 && std::fs::remove_file(&p).is_ok()
        };
        if removed {
            let mut cur = rel.as_str();
            while let Some((parent, _)) = cur.rsplit_once('/') {
                parents.push(parent);
                cur = parent;
            }
        }
    }
    parents.sort_by_key(|p| std::cmp::Reverse(p.len()));
    parents.dedup();
    for rel in parents {
        let p = upper.join(rel);
        let Ok(m) = std::fs::symlink_metadata(&p) else {
            continue;
        };
        let empty = std::fs::read_dir(&p).is_ok_and(|mut d| d.next().is_none());
        if !m.is_dir() || !empty || is_opaque(&p) {
            continue;
        }
        let same_below = lowers
            .iter()
            .find_map(|l| std::fs::symlink_metadata(l.join(rel)).ok())
            .is_some_and(|l| {
                l.is_dir() && l.mode() == m.mode() && l.uid() == m.uid() && l.gid() == m.gid()
            });
        if same_below {
            let _ = std::fs::remove_dir(&p);
        }
    }
}

fn is_opaque(p: &Path) -> bool {
    ["trusted.overlay.opaque", "user.overlay.opaque"]
        .iter()
        .any(|name| {
            let mut buf = [0u8; 4];
            matches!(rustix::fs::lgetxattr(p, *name, &mut buf), Ok(1) if buf[0] == b'y')
        })
}

/// The xattrs of `p` worth keeping in a layer: overlay's own are the
/// sandbox's bookkeeping, not the image's.
fn xattrs(p: &Path) -> Vec<(String, Vec<u8>)> {
    let mut names = vec![0u8; 4096];
    let Ok(n) = rustix::fs::llistxattr(p, &mut names[..]) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for name in names[..n].split(|&b| b == 0).filter(|n| !n.is_empty()) {
        let name = String::from_utf8_lossy(name).into_owned();
        if name.starts_with("trusted.overlay.") || name.starts_with("user.overlay.") {
            continue;
        }
        let mut value = vec![0u8; 65536];
        if let Ok(len) = rustix::fs::lgetxattr(p, name.as_str(), &mut value[..]) {
            value.truncate(len);
            out.push((name, value));
        }
    }
    out.sort();
    out
}

fn join(parent: &str, name: &str) -> String {
    if parent.is_empty() {
        name.to_string()
    } else {
        format!("{parent}/{name}")
    }
}

/// The whiteout hiding `name` in `parent`.
fn whiteout(parent: &str, name: &str, mtime: u64) -> Entry {
    marker(parent, &format!("{WHITEOUT_PREFIX}{name}"), mtime)
}

/// The opaque marker of directory `dir`.
fn opaque(dir: &str, mtime: u64) -> Entry {
    marker(dir, OPAQUE_WHITEOUT, mtime)
}

fn marker(parent: &str, file_name: &str, mtime: u64) -> Entry {
    Entry {
        path: join(parent, file_name),
        kind: EntryKind::File {
            source: PathBuf::new(),
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

/// One filesystem object as a layer entry (`None` for sockets, which a
/// layer cannot hold).
fn entry(
    path: &Path,
    rel: String,
    m: &std::fs::Metadata,
    o: &Options,
) -> Result<Option<Entry>, Error> {
    let ft = m.file_type();
    let (uid, gid) = o.owner(m);
    let kind = if ft.is_dir() {
        EntryKind::Dir
    } else if ft.is_file() {
        EntryKind::File {
            source: path.to_path_buf(),
            size: m.len(),
        }
    } else if ft.is_symlink() {
        EntryKind::Symlink(std::fs::read_link(path).map_err(err(path))?)
    } else if ft.is_char_device() {
        let dev = m.rdev();
        EntryKind::Char {
            major: rustix::fs::major(dev),
            minor: rustix::fs::minor(dev),
        }
    } else if ft.is_block_device() {
        let dev = m.rdev();
        EntryKind::Block {
            major: rustix::fs::major(dev),
            minor: rustix::fs::minor(dev),
        }
    } else if ft.is_fifo() {
        EntryKind::Fifo
    } else {
        return Ok(None);
    };
    let link_key = (ft.is_file() && m.nlink() > 1).then(|| (m.dev(), m.ino()));
    Ok(Some(Entry {
        path: rel,
        kind,
        mode: m.mode() & 0o7777,
        uid,
        gid,
        mtime: o.mtime(m),
        xattrs: if ft.is_symlink() {
            Vec::new()
        } else {
            xattrs(path)
        },
        link_key,
    }))
}

/// The entries of an overlay upper directory.
///
/// # Errors
/// A part of the tree that cannot be read.
pub fn capture(upper: &Path, o: &Options) -> Result<Vec<Entry>, Error> {
    let mut out = Vec::new();
    walk_upper(upper, "", o, &mut out)?;
    Ok(out)
}

fn walk_upper(dir: &Path, rel: &str, o: &Options, out: &mut Vec<Entry>) -> Result<(), Error> {
    let dir_mtime = std::fs::symlink_metadata(dir)
        .map(|m| o.mtime(&m))
        .map_err(err(dir))?;
    if !rel.is_empty() && is_opaque(dir) {
        out.push(opaque(rel, dir_mtime));
    }
    for e in std::fs::read_dir(dir).map_err(err(dir))? {
        let e = e.map_err(err(dir))?;
        let path = e.path();
        let name = e.file_name().to_string_lossy().into_owned();
        let m = std::fs::symlink_metadata(&path).map_err(err(&path))?;
        let child = join(rel, &name);
        if m.file_type().is_char_device() && m.rdev() == 0 {
            out.push(whiteout(rel, &name, dir_mtime));
            continue;
        }
        if let Some(en) = entry(&path, child.clone(), &m, o)? {
            out.push(en);
        }
        if m.is_dir() {
            walk_upper(&path, &child, o, out)?;
        }
    }
    Ok(())
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
    mtime: (i64, i64),
    ctime: (i64, i64),
}

/// Records the state of `root` (a private copy the command will run on).
///
/// # Errors
/// A part of the tree that cannot be read.
pub fn record(root: &Path) -> Result<BTreeMap<String, Before>, Error> {
    let mut out = BTreeMap::new();
    record_walk(root, "", &mut out)?;
    Ok(out)
}

fn record_walk(dir: &Path, rel: &str, out: &mut BTreeMap<String, Before>) -> Result<(), Error> {
    for e in std::fs::read_dir(dir).map_err(err(dir))? {
        let e = e.map_err(err(dir))?;
        let path = e.path();
        let child = join(rel, &e.file_name().to_string_lossy());
        let m = std::fs::symlink_metadata(&path).map_err(err(&path))?;
        out.insert(
            child.clone(),
            Before {
                ino: m.ino(),
                born: birth(&path),
                mode: m.mode(),
                uid: m.uid(),
                gid: m.gid(),
                size: m.len(),
                mtime: (m.mtime(), m.mtime_nsec()),
                ctime: (m.ctime(), m.ctime_nsec()),
            },
        );
        if m.is_dir() {
            record_walk(&path, &child, out)?;
        }
    }
    Ok(())
}

/// The changes between `before` (recorded by [`record`]) and `root` now, as
/// overlay would have recorded them: a changed entry (its inode data or
/// metadata touched: ctime moved, or a new inode) with every directory above
/// it (overlay copies parents up), a deleted one as a whiteout, and a
/// directory that was removed and made again as opaque.
///
/// # Errors
/// A part of the tree that cannot be read.
pub fn compare(
    root: &Path,
    before: &BTreeMap<String, Before>,
    o: &Options,
) -> Result<Vec<Entry>, Error> {
    let mut now: HashMap<String, std::fs::Metadata> = HashMap::new();
    let mut order = Vec::new();
    now_walk(root, "", &mut now, &mut order)?;
    let mut changed: BTreeMap<String, bool> = BTreeMap::new(); // path -> opaque
    for rel in &order {
        let m = &now[rel];
        let reborn = |b: &Before| b.ino != m.ino() || b.born != birth(&root.join(rel));
        let differs = match before.get(rel) {
            None => true,
            Some(b) => {
                reborn(b)
                    || b.mode != m.mode()
                    || b.uid != m.uid()
                    || b.gid != m.gid()
                    || b.size != m.len()
                    || b.mtime != (m.mtime(), m.mtime_nsec())
                    || b.ctime != (m.ctime(), m.ctime_nsec())
            }
        };
        if differs {
            // A directory made where something was (rm -rf + mkdir): overlay
            // creates it over a whiteout, opaque.
            let opaque = m.is_dir() && before.get(rel).is_some_and(reborn);
            changed.insert(rel.clone(), opaque);
            let mut cur = rel.as_str();
            while let Some((parent, _)) = cur.rsplit_once('/') {
                changed.entry(parent.to_string()).or_insert(false);
                cur = parent;
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
        let (parent, name) = rel.rsplit_once('/').unwrap_or(("", rel.as_str()));
        if !parent.is_empty() && !now.contains_key(parent) {
            continue;
        }
        if changed.get(parent) == Some(&true) {
            continue;
        }
        let pm = if parent.is_empty() {
            std::fs::symlink_metadata(root).map_err(err(root))?
        } else {
            now[parent].clone()
        };
        if !parent.is_empty() {
            changed.entry(parent.to_string()).or_insert(false);
            let mut cur = parent;
            while let Some((pp, _)) = cur.rsplit_once('/') {
                changed.entry(pp.to_string()).or_insert(false);
                cur = pp;
            }
        }
        out.push(whiteout(parent, name, o.mtime(&pm)));
    }
    for (rel, is_opaque) in &changed {
        let m = &now[rel];
        if *is_opaque {
            out.push(opaque(rel, o.mtime(m)));
        }
        if let Some(e) = entry(&root.join(rel), rel.clone(), m, o)? {
            out.push(e);
        }
    }
    Ok(out)
}

fn birth(p: &Path) -> Option<(i64, u32)> {
    let st = rustix::fs::statx(
        rustix::fs::CWD,
        p,
        rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
        rustix::fs::StatxFlags::BTIME,
    )
    .ok()?;
    (st.stx_mask & rustix::fs::StatxFlags::BTIME.bits() != 0)
        .then_some((st.stx_btime.tv_sec, st.stx_btime.tv_nsec))
}

fn now_walk(
    dir: &Path,
    rel: &str,
    out: &mut HashMap<String, std::fs::Metadata>,
    order: &mut Vec<String>,
) -> Result<(), Error> {
    for e in std::fs::read_dir(dir).map_err(err(dir))? {
        let e = e.map_err(err(dir))?;
        let path = e.path();
        let child = join(rel, &e.file_name().to_string_lossy());
        let m = std::fs::symlink_metadata(&path).map_err(err(&path))?;
        let is_dir = m.is_dir();
        out.insert(child.clone(), m);
        order.push(child.clone());
        if is_dir {
            now_walk(&path, &child, out, order)?;
        }
    }
    Ok(())
}
