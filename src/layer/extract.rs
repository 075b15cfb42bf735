//! Root-confined extraction of layers.
//!
//! Every name is resolved inside the root (`confine`): `..` entries,
//! absolute symlinks, symlink chains and hard links can never reach outside
//! it, because the kernel treats the root as `/`. Only single components are
//! ever created, relative to a directory opened that way. Whiteouts
//! (`.wh.NAME`, `.wh..wh..opq`) delete what lower layers put there, and only
//! that (OCI image spec, "Whiteouts").
//!
//! Extraction keeps what the image says and nothing more: names are bytes
//! (not UTF-8) end to end; modes are set explicitly, never left to the
//! umask; of the extended attributes only `user.*` and `security.capability`
//! are applied (`trusted.*` would let an image forge overlayfs's own
//! `trusted.overlay.*` bookkeeping in a lower directory); GNU and PAX sparse
//! files get their holes back.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::io::{self, Read, Seek, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Mode, OFlags, Timestamps, openat};
use rustix::io::Errno;

use super::sparse::{self, PaxSparse, SparseReader};
use super::{LayerPath, OPAQUE_WHITEOUT, WHITEOUT_PREFIX};
use crate::confine::{self, Root};

/// An entry that extraction refuses, or a filesystem failure while extracting.
#[derive(Debug, thiserror::Error)]
pub enum ExtractError {
    /// The tar stream itself is unreadable.
    #[error("reading layer entry")]
    Read(#[source] io::Error),
    /// An entry could not be created.
    #[error("extracting `{path}`")]
    Entry {
        /// Path inside the root (shown lossily when not UTF-8).
        path: String,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// A whiteout naming `.`/`..` or an entry whose name is not a path.
    #[error("refusing layer entry `{0}`: invalid name")]
    BadName(String),
    /// The root cannot be opened.
    #[error("opening extraction root {path}")]
    Root {
        /// The root directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
}

type Result<T> = std::result::Result<T, ExtractError>;

/// What an extraction did that the caller may want to report.
#[derive(Debug, Default)]
pub struct ExtractReport {
    /// Entries skipped (device nodes when not root), with the reason.
    pub skipped: Vec<String>,
    /// Entries written.
    pub entries: u64,
}

/// Extracts one layer (an uncompressed tar stream) on top of `root`.
///
/// # Errors
/// An unreadable stream, an entry that cannot be created, or a refused name.
pub fn extract_layer<R: Read>(root_path: &Path, layer: R) -> Result<ExtractReport> {
    extract(root_path, layer, None)
}

/// Extracts one layer into an empty directory in overlayfs's format, to serve
/// as one `lowerdir` of an overlay mount: a whiteout `.wh.NAME` becomes a 0/0
/// character device `NAME`, and `.wh..wh..opq` the xattr `opaque_xattr`
/// (`trusted.overlay.opaque`, or `user.overlay.opaque` for a `userxattr`
/// mount) set to `y` on its directory (kernel docs, "overlayfs: whiteouts and
/// opaque directories").
///
/// # Errors
/// As [`extract_layer`]; also when the whiteout device or xattr cannot be made.
pub fn extract_layer_overlay<R: Read>(
    root_path: &Path,
    layer: R,
    opaque_xattr: &'static str,
) -> Result<ExtractReport> {
    extract(root_path, layer, Some(opaque_xattr))
}

fn extract<R: Read>(
    root_path: &Path,
    layer: R,
    overlay: Option<&'static str>,
) -> Result<ExtractReport> {
    let root = Root::open(root_path).map_err(|e| ExtractError::Root {
        path: root_path.to_path_buf(),
        source: match e {
            confine::Error::Open { source, .. } => source,
            other => io::Error::new(io::ErrorKind::Unsupported, other.to_string()),
        },
    })?;
    let mut x = Extractor {
        root,
        overlay,
        is_root: rustix::process::geteuid().is_root(),
        written: HashSet::new(),
        last_dir: None,
        dir_times: Vec::new(),
        report: ExtractReport::default(),
    };
    let mut archive = ::tar::Archive::new(layer);
    for entry in archive.entries().map_err(ExtractError::Read)? {
        let entry = entry.map_err(ExtractError::Read)?;
        x.entry(entry)?;
    }
    // Directory mtimes last, deepest first: creating children changes them.
    x.dir_times.sort_by(|a, b| b.0.cmp(&a.0));
    for (path, mtime) in std::mem::take(&mut x.dir_times) {
        // Opened inside the root, never by a path the kernel resolves from
        // the root descriptor alone (that would follow an absolute symlink
        // a later entry put on the way out to the host). Best effort: a
        // directory replaced later in the layer may be gone.
        if let Ok(fd) = x.root.open_at(
            path.as_path(),
            OFlags::DIRECTORY | OFlags::RDONLY | OFlags::NOFOLLOW,
        ) {
            let _ = rustix::fs::futimens(&fd, &timestamps(mtime));
        }
    }
    Ok(x.report)
}

struct Extractor {
    root: Root,
    /// Overlay format, with the opaque-directory xattr name.
    overlay: Option<&'static str>,
    is_root: bool,
    /// Paths this layer wrote: whiteouts never remove these.
    written: HashSet<LayerPath>,
    /// The directory the last entry went into (or was), open: entries come
    /// in tree order, so most find their parent here without resolving a
    /// whole path again (and a path past `PATH_MAX` still works).
    last_dir: Option<(LayerPath, OwnedFd)>,
    dir_times: Vec<(LayerPath, u64)>,
    report: ExtractReport,
}

fn timestamps(mtime: u64) -> Timestamps {
    let t = rustix::fs::Timespec {
        tv_sec: mtime.min(i64::MAX as u64) as i64,
        tv_nsec: 0,
    };
    Timestamps {
        last_access: t,
        last_modification: t,
    }
}

/// Extended attributes an image may set (DESIGN.md, "Formats"): `user.*`
/// and file capabilities. `trusted.*` is refused above all, since overlayfs
/// keeps its whiteouts, opaque markers and redirects there.
fn xattr_allowed(name: &[u8]) -> bool {
    name.starts_with(b"user.") || name == b"security.capability"
}

/// The most symlinks followed while creating one entry's parents (the
/// kernel's own limit, `ELOOP`).
const MAX_LINKS: usize = 40;

impl Extractor {
    fn entry<R: Read>(&mut self, mut entry: ::tar::Entry<'_, R>) -> Result<()> {
        let (raw, layout) = sparse::name_and_layout(&mut entry).map_err(ExtractError::Read)?;
        let path = LayerPath::clean(&raw);
        let shown = path.to_string_lossy().into_owned();
        let err = |source: io::Error| ExtractError::Entry {
            path: shown.clone(),
            source,
        };
        let header = entry.header().clone();
        let kind = header.entry_type();
        let mode = header.mode().map_err(err)? & 0o7777;
        let uid = header.uid().map_err(err)?;
        let gid = header.gid().map_err(err)?;
        let mtime = header.mtime().map_err(err)?;

        if path.is_empty() {
            // The root itself ("./"): only its metadata applies.
            if kind.is_dir() {
                self.set_owner_mode(self.root.fd(), uid, gid, mode)
                    .map_err(err)?;
                self.dir_times.push((LayerPath::root(), mtime));
            }
            return Ok(());
        }
        let (parent, base) = path.split();
        let parent = LayerPath::from(parent);
        let base = OsStr::from_bytes(base);
        if let Some(target) = base.as_bytes().strip_prefix(WHITEOUT_PREFIX.as_bytes()) {
            let r = self.whiteout(&parent, base.as_bytes(), target, &shown);
            // What it removed may be on the way to the remembered directory.
            self.forget_below(&parent);
            return r;
        }
        // This entry replaces whatever `path` was: a remembered directory at
        // or below it is gone.
        self.forget_below(&path);
        let parent_fd = self.parent_dir(&parent).map_err(err)?;
        let pfd = parent_fd.as_fd();
        let existing = rustix::fs::statat(pfd, base, AtFlags::SYMLINK_NOFOLLOW).ok();
        let existing_is_dir = existing
            .as_ref()
            .is_some_and(|s| FileType::from_raw_mode(s.st_mode) == FileType::Directory);

        match kind {
            ::tar::EntryType::Directory => {
                if existing.is_some() && !existing_is_dir {
                    rustix::fs::unlinkat(pfd, base, AtFlags::empty())
                        .map_err(io_err)
                        .map_err(err)?;
                }
                if !existing_is_dir {
                    rustix::fs::mkdirat(pfd, base, Mode::from_raw_mode(0o700))
                        .map_err(io_err)
                        .map_err(err)?;
                }
                let fd = openat(
                    pfd,
                    base,
                    OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::RDONLY | OFlags::CLOEXEC,
                    Mode::empty(),
                )
                .map_err(io_err)
                .map_err(err)?;
                self.set_owner_mode(fd.as_fd(), uid, gid, mode)
                    .map_err(err)?;
                self.set_xattrs(&mut entry, fd.as_fd(), &shown);
                self.dir_times.push((path.clone(), mtime));
                self.last_dir = Some((path.clone(), fd));
            }
            ::tar::EntryType::Regular
            | ::tar::EntryType::Continuous
            | ::tar::EntryType::GNUSparse => {
                self.remove_existing(pfd, base, existing_is_dir, existing.is_some())
                    .map_err(err)?;
                let fd = openat(
                    pfd,
                    base,
                    OFlags::CREATE
                        | OFlags::EXCL
                        | OFlags::NOFOLLOW
                        | OFlags::WRONLY
                        | OFlags::CLOEXEC,
                    Mode::from_raw_mode(0o600),
                )
                .map_err(io_err)
                .map_err(err)?;
                let mut file = std::fs::File::from(fd);
                let gnu_sparse = kind.is_gnu_sparse();
                match layout {
                    Some(l) => copy_sparse(&mut entry, l, &mut file),
                    // The tar crate fills the holes of the old GNU format
                    // with zeros as it reads; they become holes again here.
                    None if gnu_sparse => copy_holes(&mut entry, &mut file),
                    None => io::copy(&mut entry, &mut file).map(|_| ()),
                }
                .map_err(err)?;
                self.set_owner_mode(file.as_fd(), uid, gid, mode)
                    .map_err(err)?;
                // Last: writing and chown both clear `security.capability`.
                self.set_xattrs(&mut entry, file.as_fd(), &shown);
                rustix::fs::futimens(&file, &timestamps(mtime))
                    .map_err(io_err)
                    .map_err(err)?;
            }
            ::tar::EntryType::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .map(|b| b.into_owned())
                    .unwrap_or_default();
                self.remove_existing(pfd, base, existing_is_dir, existing.is_some())
                    .map_err(err)?;
                rustix::fs::symlinkat(OsStr::from_bytes(&target), pfd, base)
                    .map_err(io_err)
                    .map_err(err)?;
                self.chown_at(pfd, base, uid, gid).map_err(err)?;
                let _ =
                    rustix::fs::utimensat(pfd, base, &timestamps(mtime), AtFlags::SYMLINK_NOFOLLOW);
            }
            ::tar::EntryType::Link => {
                let target = LayerPath::clean(
                    &entry
                        .link_name_bytes()
                        .map(|b| b.into_owned())
                        .unwrap_or_default(),
                );
                let (tparent, tbase) = target.split();
                if tbase.is_empty() {
                    return Err(ExtractError::BadName(shown));
                }
                let tparent_fd = self
                    .root
                    .open_dir(LayerPath::from(tparent).as_path())
                    .map_err(err)?;
                self.remove_existing(pfd, base, existing_is_dir, existing.is_some())
                    .map_err(err)?;
                // Flags 0: a link to a symlink links the symlink, never what it
                // points at, so the target cannot be outside the root.
                rustix::fs::linkat(
                    tparent_fd.as_fd(),
                    OsStr::from_bytes(tbase),
                    pfd,
                    base,
                    AtFlags::empty(),
                )
                .map_err(io_err)
                .map_err(err)?;
            }
            ::tar::EntryType::Char | ::tar::EntryType::Block | ::tar::EntryType::Fifo => {
                let ft = match kind {
                    ::tar::EntryType::Char => FileType::CharacterDevice,
                    ::tar::EntryType::Block => FileType::BlockDevice,
                    _ => FileType::Fifo,
                };
                if ft != FileType::Fifo && !self.is_root {
                    self.report.skipped.push(format!(
                        "{shown}: device node skipped (not running as root)"
                    ));
                    return Ok(());
                }
                let major = header.device_major().ok().flatten().unwrap_or(0);
                let minor = header.device_minor().ok().flatten().unwrap_or(0);
                self.remove_existing(pfd, base, existing_is_dir, existing.is_some())
                    .map_err(err)?;
                rustix::fs::mknodat(
                    pfd,
                    base,
                    ft,
                    Mode::from_raw_mode(mode),
                    rustix::fs::makedev(major, minor),
                )
                .map_err(io_err)
                .map_err(err)?;
                self.chown_at(pfd, base, uid, gid).map_err(err)?;
                // mknod's mode passed through the umask; the image's is set
                // as it is (after chown, which clears setuid/setgid).
                rustix::fs::chmodat(pfd, base, Mode::from_raw_mode(mode), AtFlags::empty())
                    .map_err(io_err)
                    .map_err(err)?;
            }
            // PAX/GNU metadata entries are consumed by the tar reader; anything
            // else (unknown types) is skipped rather than guessed at.
            other => {
                self.report
                    .skipped
                    .push(format!("{shown}: unsupported entry type {other:?}"));
                return Ok(());
            }
        }
        self.written.insert(path);
        self.report.entries += 1;
        Ok(())
    }

    fn whiteout(
        &mut self,
        parent: &LayerPath,
        base: &[u8],
        target: &[u8],
        shown: &str,
    ) -> Result<()> {
        let bad = || ExtractError::BadName(shown.to_string());
        let err = |source: io::Error| ExtractError::Entry {
            path: shown.to_string(),
            source,
        };
        let opaque = base == OPAQUE_WHITEOUT.as_bytes();
        if !opaque && (target.is_empty() || target == b"." || target == b"..") {
            return Err(bad());
        }
        let victim = parent.join(target);
        if let Some(opaque_xattr) = self.overlay {
            let parent_fd = self.ensure_dir(parent).map_err(err)?;
            if opaque {
                return rustix::fs::fsetxattr(
                    parent_fd.as_fd(),
                    opaque_xattr,
                    b"y",
                    rustix::fs::XattrFlags::empty(),
                )
                .map_err(io_err)
                .map_err(err);
            }
            if self.written.contains(&victim) {
                return Ok(());
            }
            return rustix::fs::mknodat(
                parent_fd.as_fd(),
                OsStr::from_bytes(target),
                FileType::CharacterDevice,
                Mode::empty(),
                rustix::fs::makedev(0, 0),
            )
            .map_err(io_err)
            .map_err(err);
        }
        let parent_fd = match self.root.open_dir(parent.as_path()) {
            Ok(fd) => fd,
            // Nothing below to hide.
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(err(e)),
        };
        if opaque {
            return self.clear_dir(parent_fd.as_fd(), parent).map_err(err);
        }
        if self.written.contains(&victim) {
            return Ok(());
        }
        let name = OsStr::from_bytes(target);
        match rustix::fs::statat(parent_fd.as_fd(), name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => {
                let is_dir = FileType::from_raw_mode(st.st_mode) == FileType::Directory;
                self.remove_existing(parent_fd.as_fd(), name, is_dir, true)
                    .map_err(err)
            }
            Err(Errno::NOENT) => Ok(()),
            Err(e) => Err(err(e.into())),
        }
    }

    /// Removes everything below `dir` (the layer path `at`) that this
    /// layer did not write, descending into the directories it did write
    /// (an explicit stack: a layer can nest them arbitrarily deep).
    fn clear_dir(&self, dir: BorrowedFd<'_>, at: &LayerPath) -> io::Result<()> {
        let mut todo: Vec<(Option<OwnedFd>, LayerPath)> = vec![(None, at.clone())];
        while let Some((fd, at)) = todo.pop() {
            let here = fd.as_ref().map_or(dir, |f| f.as_fd());
            for e in confine::read_dir_fd(here)? {
                let child = at.join(e.name.as_bytes());
                let is_dir = e.kind == FileType::Directory;
                if !self.written.contains(&child) {
                    remove_tree(here, &e.name, is_dir)?;
                } else if is_dir {
                    let fd = openat(
                        here,
                        e.name.as_os_str(),
                        OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::RDONLY | OFlags::CLOEXEC,
                        Mode::empty(),
                    )?;
                    todo.push((Some(fd), child));
                }
            }
        }
        Ok(())
    }

    fn remove_existing(
        &self,
        dir: BorrowedFd<'_>,
        name: &OsStr,
        is_dir: bool,
        exists: bool,
    ) -> io::Result<()> {
        if exists {
            remove_tree(dir, name, is_dir)?;
        }
        Ok(())
    }

    /// Forgets the remembered directory when it is `path` or below it.
    fn forget_below(&mut self, path: &LayerPath) {
        if self
            .last_dir
            .as_ref()
            .is_some_and(|(p, _)| p.is_within(path))
        {
            self.last_dir = None;
        }
    }

    /// The directory `parent`, open: the remembered one, a real child of
    /// it, or resolved from the root ([`Self::ensure_dir`]).
    fn parent_dir(&mut self, parent: &LayerPath) -> io::Result<OwnedFd> {
        if let Some((p, fd)) = &self.last_dir {
            if p == parent {
                return Ok(rustix::io::fcntl_dupfd_cloexec(fd, 0)?);
            }
            if parent.parent().as_ref() == Some(p) {
                // Only a real directory: a symlink takes the general path,
                // which resolves it inside the root.
                if let Ok(child) =
                    confine::open_child_dir(fd.as_fd(), OsStr::from_bytes(parent.file_name()))
                {
                    let keep = rustix::io::fcntl_dupfd_cloexec(&child, 0)?;
                    self.last_dir = Some((parent.clone(), keep));
                    return Ok(child);
                }
            }
        }
        let fd = self.ensure_dir(parent)?;
        self.last_dir = Some((parent.clone(), rustix::io::fcntl_dupfd_cloexec(&fd, 0)?));
        Ok(fd)
    }

    /// Opens (creating as needed, mode 0755) the directory `path` in the root.
    /// A dangling symlink on the way is followed the way the kernel would,
    /// inside the root, and its target created. Any depth of missing
    /// directories works (one component at a time, no recursion); only
    /// symlinks count against [`MAX_LINKS`].
    fn ensure_dir(&self, path: &LayerPath) -> io::Result<OwnedFd> {
        let flags = OFlags::DIRECTORY | OFlags::RDONLY;
        match self.root.open_at(path.as_path(), flags) {
            Ok(fd) => return Ok(fd),
            Err(e)
                if matches!(
                    Errno::from_io_error(&e),
                    Some(Errno::NOENT | Errno::NAMETOOLONG)
                ) => {}
            Err(e) => return Err(e),
        }
        // Walk from the root, component by component.
        let mut todo: Vec<Vec<u8>> = components_rev(path.as_bytes());
        let mut at = LayerPath::root();
        let mut cur = self.root.open_dir(Path::new("."))?;
        let mut links = 0;
        while let Some(c) = todo.pop() {
            if c == b".." {
                at = at.parent().unwrap_or_default();
                cur = self.root.open_dir(at.as_path())?;
                continue;
            }
            let name = OsStr::from_bytes(&c);
            match rustix::fs::statat(&cur, name, AtFlags::SYMLINK_NOFOLLOW) {
                Ok(st) => match FileType::from_raw_mode(st.st_mode) {
                    FileType::Directory => {}
                    FileType::Symlink => {
                        links += 1;
                        if links > MAX_LINKS {
                            return Err(Errno::LOOP.into());
                        }
                        let target = rustix::fs::readlinkat(&cur, name, Vec::new())?;
                        let target = target.into_bytes();
                        if target.starts_with(b"/") {
                            at = LayerPath::root();
                            cur = self.root.open_dir(Path::new("."))?;
                        }
                        todo.extend(components_rev(&target));
                        continue;
                    }
                    _ => return Err(Errno::NOTDIR.into()),
                },
                Err(Errno::NOENT) => {
                    match rustix::fs::mkdirat(&cur, name, Mode::from_raw_mode(0o755)) {
                        Ok(()) | Err(Errno::EXIST) => {}
                        Err(e) => return Err(e.into()),
                    }
                    // mkdir's mode went through the umask.
                    let _ = rustix::fs::chmodat(
                        &cur,
                        name,
                        Mode::from_raw_mode(0o755),
                        AtFlags::empty(),
                    );
                }
                Err(e) => return Err(e.into()),
            }
            cur = openat(
                &cur,
                name,
                OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::RDONLY | OFlags::CLOEXEC,
                Mode::empty(),
            )?;
            at = at.join(&c);
        }
        Ok(cur)
    }

    /// Sets the owner of `name` in `dir` without following a symlink; only
    /// root can, so others keep their own ids (as tar does).
    fn chown_at(&self, dir: BorrowedFd<'_>, name: &OsStr, uid: u64, gid: u64) -> io::Result<()> {
        if self.is_root {
            rustix::fs::chownat(
                dir,
                name,
                Some(rustix::fs::Uid::from_raw(uid as u32)),
                Some(rustix::fs::Gid::from_raw(gid as u32)),
                AtFlags::SYMLINK_NOFOLLOW,
            )?;
        }
        Ok(())
    }

    fn set_owner_mode(&self, fd: BorrowedFd<'_>, uid: u64, gid: u64, mode: u32) -> io::Result<()> {
        if self.is_root {
            rustix::fs::fchown(
                fd,
                Some(rustix::fs::Uid::from_raw(uid as u32)),
                Some(rustix::fs::Gid::from_raw(gid as u32)),
            )?;
        }
        // After chown: chown clears setuid/setgid bits.
        rustix::fs::fchmod(fd, Mode::from_raw_mode(mode))?;
        Ok(())
    }

    /// Applies the entry's `SCHILY.xattr.*` records that images may carry
    /// (see [`xattr_allowed`]); a refused one is reported.
    fn set_xattrs<R: Read>(
        &mut self,
        entry: &mut ::tar::Entry<'_, R>,
        fd: BorrowedFd<'_>,
        shown: &str,
    ) {
        let Ok(Some(exts)) = entry.pax_extensions() else {
            return;
        };
        for ext in exts.flatten() {
            let Some(name) = ext.key_bytes().strip_prefix(b"SCHILY.xattr.") else {
                continue;
            };
            if !xattr_allowed(name) {
                if name.starts_with(b"trusted.") {
                    self.report.skipped.push(format!(
                        "{shown}: extended attribute {} dropped (images may not set trusted.*)",
                        String::from_utf8_lossy(name)
                    ));
                }
                continue;
            }
            // Best effort, as containerd: security.capability needs
            // privileges the caller may not have.
            let _ = rustix::fs::fsetxattr(
                fd,
                OsStr::from_bytes(name),
                ext.value_bytes(),
                rustix::fs::XattrFlags::empty(),
            );
        }
    }
}

/// The components of `path`, last first (a stack to pop), `.` and empty
/// ones dropped (`..` kept: it is resolved against what was walked).
fn components_rev(path: &[u8]) -> Vec<Vec<u8>> {
    path.split(|&b| b == b'/')
        .filter(|c| !c.is_empty() && *c != b".")
        .rev()
        .map(<[u8]>::to_vec)
        .collect()
}

/// Copies a PAX sparse file's logical content, leaving its holes as holes.
fn copy_sparse<R: Read>(
    entry: &mut ::tar::Entry<'_, R>,
    layout: PaxSparse,
    file: &mut std::fs::File,
) -> io::Result<()> {
    let stored = entry.size();
    let mut r = SparseReader::new(entry, layout, stored)?;
    copy_holes(&mut r, file)
}

/// Copies everything `r` gives, seeking over blocks of zeros instead of
/// writing them (a sparse file's holes), then sets the length (a trailing
/// hole).
fn copy_holes(r: &mut impl Read, file: &mut std::fs::File) -> io::Result<()> {
    let mut buf = vec![0u8; 64 * 1024];
    let mut pos = 0u64;
    loop {
        let n = r.read(&mut buf)?;
        if n == 0 {
            break;
        }
        let chunk = &buf[..n];
        if chunk.iter().all(|&b| b == 0) {
            file.seek(io::SeekFrom::Current(n as i64))?;
        } else {
            file.write_all(chunk)?;
        }
        pos += n as u64;
    }
    file.set_len(pos)?;
    Ok(())
}

fn io_err(e: Errno) -> io::Error {
    e.into()
}

/// Removes `name` under `dir`, a whole tree for a directory, never
/// following symlinks and at any depth (`confine::remove_at`).
pub(crate) fn remove_tree(dir: BorrowedFd<'_>, name: &OsStr, _is_dir: bool) -> io::Result<()> {
    confine::remove_at(dir, name)
}

#[cfg(test)]
mod tests {
    use super::*;

    struct TarBuilder(::tar::Builder<Vec<u8>>);

    impl TarBuilder {
        fn new() -> Self {
            TarBuilder(::tar::Builder::new(Vec::new()))
        }
        fn header(name: &str, ty: ::tar::EntryType, size: u64) -> ::tar::Header {
            let mut h = ::tar::Header::new_gnu();
            // Bypass the tar crate's own path checks: these are hostile names.
            h.as_gnu_mut().unwrap().name[..name.len()].copy_from_slice(name.as_bytes());
            h.set_entry_type(ty);
            h.set_mode(0o644);
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(0);
            h.set_size(size);
            h.set_cksum();
            h
        }
        fn file(mut self, name: &str, body: &str) -> Self {
            let h = Self::header(name, ::tar::EntryType::Regular, body.len() as u64);
            self.0.append(&h, body.as_bytes()).unwrap();
            self
        }
        fn dir(mut self, name: &str) -> Self {
            let mut h = Self::header(name, ::tar::EntryType::Directory, 0);
            h.set_mode(0o755);
            h.set_cksum();
            self.0.append(&h, &[][..]).unwrap();
            self
        }
        fn link(mut self, name: &str, target: &str, ty: ::tar::EntryType) -> Self {
            let mut h = Self::header(name, ty, 0);
            h.as_gnu_mut().unwrap().linkname[..target.len()].copy_from_slice(target.as_bytes());
            h.set_cksum();
            self.0.append(&h, &[][..]).unwrap();
            self
        }
        fn bytes(self) -> Vec<u8> {
            self.0.into_inner().unwrap()
        }
    }

    fn sandbox() -> (tempfile::TempDir, PathBuf, PathBuf) {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("root");
        let outside = t.path().join("outside");
        fs_err::create_dir(&root).unwrap();
        fs_err::create_dir(&outside).unwrap();
        (t, root, outside)
    }

    #[test]
    fn dotdot_entries_stay_inside() {
        let (_t, root, _outside) = sandbox();
        let tar = TarBuilder::new().file("../../outside/evil", "x").bytes();
        extract_layer(&root, &tar[..]).unwrap();
        assert!(root.join("outside/evil").exists());
        assert!(!_t.path().join("outside/evil").exists());
    }

    #[test]
    fn absolute_symlink_is_confined() {
        let (t, root, _) = sandbox();
        let outside = t.path().join("outside");
        let target = outside.to_str().unwrap().to_string();
        let tar = TarBuilder::new()
            .link("escape", &target, ::tar::EntryType::Symlink)
            .file("escape/pwned", "x")
            .bytes();
        extract_layer(&root, &tar[..]).unwrap();
        assert!(!outside.join("pwned").exists());
        assert!(
            root.join(target.trim_start_matches('/'))
                .join("pwned")
                .exists()
        );
    }

    #[test]
    fn hardlink_outside_is_refused_or_confined() {
        let (t, root, _) = sandbox();
        fs_err::write(t.path().join("secret"), "s").unwrap();
        let tar = TarBuilder::new()
            .link("h", "../secret", ::tar::EntryType::Link)
            .bytes();
        // `../secret` cleans to `secret` inside the root, which does not exist.
        assert!(extract_layer(&root, &tar[..]).is_err());
        assert!(!root.join("h").exists());
    }

    #[test]
    fn whiteout_of_dotdot_is_refused() {
        let (_t, root, _) = sandbox();
        let tar = TarBuilder::new().dir("d").file("d/.wh...", "").bytes();
        assert!(matches!(
            extract_layer(&root, &tar[..]),
            Err(ExtractError::BadName(_))
        ));
    }

    #[test]
    fn symlink_loop_fails_cleanly() {
        let (_t, root, _) = sandbox();
        let tar = TarBuilder::new()
            .link("a", "b", ::tar::EntryType::Symlink)
            .link("b", "a", ::tar::EntryType::Symlink)
            .file("a/x", "x")
            .bytes();
        assert!(extract_layer(&root, &tar[..]).is_err());
    }

    #[test]
    fn whiteouts_remove_lower_entries_only() {
        let (_t, root, _) = sandbox();
        let lower = TarBuilder::new()
            .dir("d")
            .file("d/a", "a")
            .file("d/b", "b")
            .dir("o")
            .file("o/old", "o")
            .bytes();
        extract_layer(&root, &lower[..]).unwrap();
        let upper = TarBuilder::new()
            .file("d/.wh.a", "")
            .dir("o")
            .file("o/.wh..wh..opq", "")
            .file("o/new", "n")
            .bytes();
        extract_layer(&root, &upper[..]).unwrap();
        assert!(!root.join("d/a").exists());
        assert!(root.join("d/b").exists());
        assert!(!root.join("o/old").exists());
        assert!(root.join("o/new").exists());
    }

    /// A PAX entry carrying `records` (e.g. xattrs, long names) before a
    /// regular file `name` with `body`, through the tar crate's own PAX
    /// writer.
    fn pax_file(records: &[(&str, &[u8])], name: &[u8], body: &[u8]) -> Vec<u8> {
        let mut b = ::tar::Builder::new(Vec::new());
        b.append_pax_extensions(records.iter().map(|(k, v)| (*k, *v)))
            .unwrap();
        let mut h = ::tar::Header::new_gnu();
        h.as_gnu_mut().unwrap().name[..name.len()].copy_from_slice(name);
        h.set_entry_type(::tar::EntryType::Regular);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_size(body.len() as u64);
        h.set_cksum();
        b.append(&h, body).unwrap();
        b.into_inner().unwrap()
    }

    #[test]
    fn names_are_bytes_end_to_end() {
        let (_t, root, _) = sandbox();
        let lower = pax_file(&[], b"caf\xe9", b"x");
        extract_layer(&root, &lower[..]).unwrap();
        assert!(root.join(OsStr::from_bytes(b"caf\xe9")).is_file());
        // A whiteout of that very name removes it (not a lossy twin).
        fs_err::write(root.join("caf\u{fffd}"), "twin").unwrap();
        let upper = pax_file(&[], b".wh.caf\xe9", b"");
        extract_layer(&root, &upper[..]).unwrap();
        assert!(!root.join(OsStr::from_bytes(b"caf\xe9")).exists());
        assert!(root.join("caf\u{fffd}").exists());
    }

    #[test]
    fn more_than_forty_missing_parents() {
        let (_t, root, _) = sandbox();
        let deep: Vec<String> = (0..60).map(|i| format!("d{i}")).collect();
        let name = format!("{}/leaf", deep.join("/"));
        let tar = pax_file(&[("path", name.as_bytes())], b"placeholder", b"deep");
        extract_layer(&root, &tar[..]).unwrap();
        assert_eq!(fs_err::read(root.join(&name)).unwrap(), b"deep");
    }

    #[test]
    fn only_user_and_capability_xattrs_are_applied() {
        let (_t, root, _) = sandbox();
        let tar = pax_file(
            &[
                ("SCHILY.xattr.user.keep", b"1"),
                ("SCHILY.xattr.trusted.overlay.opaque", b"y"),
            ],
            b"f",
            b"x",
        );
        let report = extract_layer(&root, &tar[..]).unwrap();
        let f = root.join("f");
        let mut buf = [0u8; 8];
        // user.* needs a filesystem with user xattrs (tmpfs on new kernels,
        // ext4): when it is there, it must have been applied.
        if let Ok(n) = rustix::fs::getxattr(&f, "user.keep", &mut buf) {
            assert_eq!(&buf[..n], b"1");
        }
        assert!(rustix::fs::getxattr(&f, "trusted.overlay.opaque", &mut buf).is_err());
        assert!(
            report
                .skipped
                .iter()
                .any(|s| s.contains("trusted.overlay.opaque")),
            "{:?}",
            report.skipped
        );
    }

    #[test]
    fn pax_sparse_files_get_their_content_and_holes() {
        let (_t, root, _) = sandbox();
        // Format 1.0: the map leads the data, padded to a block.
        let mut data = b"2\n0\n3\n8192\n2\n".to_vec();
        data.resize(512, 0);
        data.extend_from_slice(b"abcde");
        let tar = pax_file(
            &[
                ("GNU.sparse.major", b"1"),
                ("GNU.sparse.minor", b"0"),
                ("GNU.sparse.name", b"sparse"),
                ("GNU.sparse.realsize", b"10000"),
            ],
            b"GNUSparseFile.0/sparse",
            &data,
        );
        extract_layer(&root, &tar[..]).unwrap();
        assert!(!root.join("GNUSparseFile.0").exists());
        let got = fs_err::read(root.join("sparse")).unwrap();
        let mut want = vec![0u8; 10000];
        want[..3].copy_from_slice(b"abc");
        want[8192..8194].copy_from_slice(b"de");
        assert_eq!(got, want);
    }
}
