//! Root-confined file access: the one module that opens paths named by an
//! image, a build context or an archive. Everything else gets a [`Root`] and
//! asks it.
//!
//! Every name is resolved by the kernel with `openat2(2)` and
//! `RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS`: `..` stops at the root, an
//! absolute symlink starts again at the root, and `/proc/self/fd/N`-style
//! magic links are refused, so no symlink, hard link, `..` or absolute name
//! can reach outside (as youki's `pathrs::Root` and runc's
//! `securejoin`/`openat2` do). Names are bytes: a name that is not UTF-8 is
//! used as it is, never re-encoded. The kernels we support have `openat2`
//! (Linux 5.6); on one without it [`Root::open`] refuses with
//! [`Error::Unsupported`] rather than fall back to string joins.
//!
//! This is a leaf: it imports nothing from the crate.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, CWD, Dir, FileType, Mode, OFlags, ResolveFlags, Stat};
use rustix::io::Errno;

/// Why a root could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The kernel has no `openat2(2)`: confinement cannot be guaranteed.
    #[error(
        "this kernel has no openat2(2) (Linux 5.6 or later is needed): \
         imgbuild cannot confine paths inside {path} safely"
    )]
    Unsupported {
        /// The root that was being opened.
        path: PathBuf,
    },
    /// The root itself could not be opened as a directory.
    #[error("opening {path}")]
    Open {
        /// The root directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
}

/// A directory that acts as `/` for every name resolved through it.
#[derive(Debug)]
pub struct Root {
    fd: OwnedFd,
    /// For messages only: nothing is ever opened through this path again.
    path: PathBuf,
}

/// One child of a directory, as [`Root::read_dir`] lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntry {
    /// The child's name: bytes, exactly as on disk.
    pub name: OsString,
    /// Its type, without following a symlink.
    pub kind: FileType,
}

fn resolve_flags() -> ResolveFlags {
    ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS
}

/// `rel` as a name relative to the root: leading `/`s dropped, empty as `.`.
fn relative(rel: &Path) -> &Path {
    let bytes = rel.as_os_str().as_bytes();
    let start = bytes.iter().take_while(|&&b| b == b'/').count();
    let rest = &bytes[start..];
    if rest.is_empty() {
        Path::new(".")
    } else {
        Path::new(OsStr::from_bytes(rest))
    }
}

/// Splits a root-relative name into its parent and final component (`None`
/// for the root itself, `.` and `..`: they name no entry of a parent).
pub fn split_parent(rel: &Path) -> Option<(&Path, &OsStr)> {
    let bytes = relative(rel).as_os_str().as_bytes();
    let bytes = trim_trailing_slashes(bytes);
    let (parent, name) = match bytes.iter().rposition(|&b| b == b'/') {
        Some(i) => (&bytes[..i], &bytes[i + 1..]),
        None => (&b"."[..], bytes),
    };
    if name.is_empty() || name == b"." || name == b".." {
        return None;
    }
    let parent = if parent.is_empty() { &b"."[..] } else { parent };
    Some((
        Path::new(OsStr::from_bytes(parent)),
        OsStr::from_bytes(name),
    ))
}

fn trim_trailing_slashes(mut b: &[u8]) -> &[u8] {
    while b.len() > 1 && b.ends_with(b"/") {
        b = &b[..b.len() - 1];
    }
    b
}

impl Root {
    /// Opens the directory `path` as a root. The path itself is the
    /// builder's own (a store directory, the context the user named) and is
    /// resolved normally; only names *inside* it are confined.
    ///
    /// # Errors
    /// [`Error::Unsupported`] on a kernel without `openat2`, [`Error::Open`]
    /// when `path` is not an openable directory.
    pub fn open(path: &Path) -> Result<Root, Error> {
        let how = rustix::fs::openat2(
            CWD,
            path,
            OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC,
            Mode::empty(),
            ResolveFlags::empty(),
        );
        match how {
            Ok(fd) => Ok(Root {
                fd,
                path: path.to_path_buf(),
            }),
            Err(Errno::NOSYS) => Err(Error::Unsupported {
                path: path.to_path_buf(),
            }),
            Err(e) => Err(Error::Open {
                path: path.to_path_buf(),
                source: e.into(),
            }),
        }
    }

    /// A root over a directory descriptor already held (for example one
    /// opened inside another root). `path` is for messages only.
    pub fn from_fd(fd: OwnedFd, path: impl Into<PathBuf>) -> Root {
        Root {
            fd,
            path: path.into(),
        }
    }

    /// The directory descriptor, handed over.
    pub fn into_fd(self) -> OwnedFd {
        self.fd
    }

    /// The directory descriptor.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// The host path the root was opened from, for messages.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The host path of `rel` inside the root, for messages only (never open
    /// it: use the root).
    pub fn display_path(&self, rel: &Path) -> PathBuf {
        let r = relative(rel);
        if r == Path::new(".") {
            self.path.clone()
        } else {
            self.path.join(r)
        }
    }

    /// Opens `rel` (taken as relative to the root even if absolute) with
    /// every component, symlinks included, resolved inside the root.
    ///
    /// # Errors
    /// The kernel's: `ENOENT`, `ELOOP` for a symlink loop, `EXDEV` for a
    /// magic link.
    pub fn open_at(&self, rel: &Path, flags: OFlags) -> io::Result<OwnedFd> {
        match rustix::fs::openat2(
            self.fd.as_fd(),
            relative(rel),
            flags | OFlags::CLOEXEC,
            Mode::empty(),
            resolve_flags(),
        ) {
            Err(Errno::NAMETOOLONG) => self.open_long(relative(rel), flags),
            r => Ok(r?),
        }
    }

    /// [`Root::open_at`] for a name longer than the kernel takes at once
    /// (`PATH_MAX`; a tree that deep is legal, and hostile layers make
    /// them): resolved a few thousand bytes at a time, the first piece
    /// inside the root, each next one *beneath* the directory the last one
    /// reached (`RESOLVE_BENEATH`: a `..` or an absolute symlink that would
    /// leave it is refused, never followed out).
    fn open_long(&self, rel: &Path, flags: OFlags) -> io::Result<OwnedFd> {
        const PIECE: usize = 2048;
        let bytes = rel.as_os_str().as_bytes();
        let mut pieces: Vec<&[u8]> = Vec::new();
        let mut start = 0;
        while bytes.len() - start > PIECE {
            // Cut at the last `/` inside the piece.
            let window = &bytes[start..start + PIECE];
            let Some(cut) = window.iter().rposition(|&b| b == b'/').filter(|&c| c > 0) else {
                return Err(Errno::NAMETOOLONG.into());
            };
            pieces.push(&bytes[start..start + cut]);
            start += cut + 1;
        }
        pieces.push(&bytes[start..]);
        let last = pieces.len() - 1;
        let mut cur: Option<OwnedFd> = None;
        for (i, piece) in pieces.into_iter().enumerate() {
            let (how, f) = if i == last {
                (flags | OFlags::CLOEXEC, Mode::empty())
            } else {
                (
                    OFlags::DIRECTORY | OFlags::PATH | OFlags::CLOEXEC,
                    Mode::empty(),
                )
            };
            let resolve = if i == 0 {
                resolve_flags()
            } else {
                ResolveFlags::BENEATH | ResolveFlags::NO_MAGICLINKS
            };
            let at = cur.as_ref().map_or(self.fd.as_fd(), |c| c.as_fd());
            cur = Some(rustix::fs::openat2(
                at,
                OsStr::from_bytes(piece),
                how,
                f,
                resolve,
            )?);
        }
        cur.ok_or_else(invalid_name)
    }

    /// Opens `rel` only if no component of it is a symlink (`ELOOP`
    /// otherwise): for names the builder itself recorded as real paths,
    /// which must not be redirected by a link made since.
    ///
    /// # Errors
    /// The kernel's; `ELOOP` when a component is a symlink.
    pub fn open_strict(&self, rel: &Path, flags: OFlags) -> io::Result<OwnedFd> {
        Ok(rustix::fs::openat2(
            self.fd.as_fd(),
            relative(rel),
            flags | OFlags::CLOEXEC | OFlags::NOFOLLOW,
            Mode::empty(),
            resolve_flags() | ResolveFlags::NO_SYMLINKS,
        )?)
    }

    /// Creates (exclusively) and opens the regular file `rel` for writing;
    /// its parent is resolved inside the root, the final name is never
    /// followed.
    ///
    /// # Errors
    /// The kernel's, `EEXIST` when something is already there.
    pub fn create_file(&self, rel: &Path, mode: u32) -> io::Result<File> {
        let (parent, name) = split_parent(rel).ok_or_else(invalid_name)?;
        let dir = self.open_at(parent, OFlags::DIRECTORY | OFlags::RDONLY)?;
        let fd = rustix::fs::openat(
            dir.as_fd(),
            name,
            OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::WRONLY | OFlags::CLOEXEC,
            Mode::from_raw_mode(mode),
        )?;
        Ok(File::from(fd))
    }

    /// Opens `rel` for reading; it must be a regular file. A symlink on the
    /// way (the last component included) is followed inside the root.
    ///
    /// # Errors
    /// The kernel's, or `EINVAL` when it is not a regular file.
    pub fn open_file(&self, rel: &Path) -> io::Result<File> {
        self.open_regular(rel, OFlags::empty())
    }

    /// Opens `rel` for reading without following a symlink in its last
    /// component: what a directory walk found as a file is read as that
    /// file, or not at all.
    ///
    /// # Errors
    /// As [`Root::open_file`]; `ELOOP` when the name is now a symlink.
    pub fn open_file_nofollow(&self, rel: &Path) -> io::Result<File> {
        self.open_regular(rel, OFlags::NOFOLLOW)
    }

    /// One open, then a type check on the descriptor. `O_NONBLOCK` keeps a
    /// FIFO put in a file's place from blocking the open, `O_NOCTTY` a
    /// terminal from becoming ours; the check refuses anything but a
    /// regular file before a byte is read. (An `O_PATH` probe first would
    /// also spare a device's open, at three system calls more per file; a
    /// walk only ever names what it saw as a regular file, so a device
    /// there takes a concurrent writer of the tree, who could as well
    /// change the file.)
    fn open_regular(&self, rel: &Path, extra: OFlags) -> io::Result<File> {
        let fd = self.open_at(
            rel,
            OFlags::RDONLY | OFlags::NONBLOCK | OFlags::NOCTTY | extra,
        )?;
        let st = rustix::fs::fstat(&fd)?;
        if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
            return Err(not_a_file());
        }
        Ok(File::from(fd))
    }

    /// Opens the directory `rel` (symlinks followed inside the root).
    ///
    /// # Errors
    /// The kernel's; `ENOTDIR` when it is not a directory.
    pub fn open_dir(&self, rel: &Path) -> io::Result<OwnedFd> {
        self.open_at(rel, OFlags::DIRECTORY | OFlags::RDONLY)
    }

    /// `stat` of `rel`, following symlinks inside the root.
    ///
    /// # Errors
    /// The kernel's.
    pub fn stat(&self, rel: &Path) -> io::Result<Stat> {
        let fd = self.open_at(rel, OFlags::PATH)?;
        Ok(rustix::fs::fstat(&fd)?)
    }

    /// `lstat` of `rel`: its parents resolved inside the root, the last
    /// component not followed.
    ///
    /// # Errors
    /// The kernel's.
    pub fn lstat(&self, rel: &Path) -> io::Result<Stat> {
        let fd = self.open_at(rel, OFlags::PATH | OFlags::NOFOLLOW)?;
        Ok(rustix::fs::fstat(&fd)?)
    }

    /// The target of the symlink `rel`, as bytes (not resolved).
    ///
    /// # Errors
    /// The kernel's; `EINVAL` when `rel` is not a symlink.
    pub fn read_link(&self, rel: &Path) -> io::Result<PathBuf> {
        let fd = self.open_at(rel, OFlags::PATH | OFlags::NOFOLLOW)?;
        let target = rustix::fs::readlinkat(&fd, "", Vec::new())?;
        Ok(PathBuf::from(OsString::from_vec(target.into_bytes())))
    }

    /// The children of the directory `rel`, sorted by the bytes of their
    /// names, without `.` and `..`.
    ///
    /// # Errors
    /// The kernel's.
    pub fn read_dir(&self, rel: &Path) -> io::Result<Vec<DirEntry>> {
        let fd = self.open_dir(rel)?;
        read_dir_fd(fd.as_fd())
    }

    /// The children of the directory `rel` with their `lstat`, sorted by
    /// name bytes: one `fstatat` per child on the open directory (no new
    /// resolution per child, which a directory walk would pay for every
    /// file).
    ///
    /// # Errors
    /// The kernel's.
    pub fn read_dir_stat(&self, rel: &Path) -> io::Result<Vec<(DirEntry, Stat)>> {
        let fd = self.open_dir(rel)?;
        read_dir_stat_fd(fd.as_fd())
    }

    /// Creates every missing directory of `rel` (mode `mode`), each one
    /// inside the root, and opens the last.
    ///
    /// # Errors
    /// The kernel's; `ENOTDIR` when a component is not a directory.
    pub fn create_dir_all(&self, rel: &Path, mode: u32) -> io::Result<OwnedFd> {
        match self.open_dir(rel) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            r => return r,
        }
        // Down from the root, one component at a time from the open
        // directory: linear in the depth, and no recursion.
        let mut dir = self.open_dir(Path::new("."))?;
        let mut so_far = PathBuf::new();
        for name in relative(rel).as_os_str().as_bytes().split(|&b| b == b'/') {
            let name = OsStr::from_bytes(name);
            if name.is_empty() || name == "." {
                continue;
            }
            so_far.push(name);
            if name == ".." {
                dir = self.open_dir(&so_far)?;
                continue;
            }
            match rustix::fs::mkdirat(&dir, name, Mode::from_raw_mode(mode)) {
                Ok(()) | Err(Errno::EXIST) => {}
                Err(e) => return Err(e.into()),
            }
            dir = match open_child_dir(dir.as_fd(), name) {
                Ok(fd) => fd,
                // Not a real directory (a symlink is there): resolve it
                // the kernel's way, inside the root.
                Err(_) => self.open_dir(&so_far)?,
            };
        }
        Ok(dir)
    }
}

/// The children of an open directory with their `lstat` (see
/// [`Root::read_dir_stat`]).
///
/// # Errors
/// The kernel's.
pub fn read_dir_stat_fd(dir: BorrowedFd<'_>) -> io::Result<Vec<(DirEntry, Stat)>> {
    read_dir_fd(dir)?
        .into_iter()
        .map(|e| {
            let st = rustix::fs::statat(dir, e.name.as_os_str(), AtFlags::SYMLINK_NOFOLLOW)?;
            Ok((
                DirEntry {
                    kind: FileType::from_raw_mode(st.st_mode),
                    name: e.name,
                },
                st,
            ))
        })
        .collect()
}

/// Opens the child directory `name` of an open directory, never following
/// a symlink: how walks descend one level without resolving a whole path
/// again (and without the kernel's `PATH_MAX` on it).
///
/// # Errors
/// The kernel's; `ELOOP`/`ENOTDIR` when `name` is not a directory.
pub fn open_child_dir(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<OwnedFd> {
    Ok(rustix::fs::openat(
        dir,
        name,
        OFlags::DIRECTORY | OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?)
}

/// The target of the symlink `name` in an open directory.
///
/// # Errors
/// The kernel's.
pub fn read_link_at(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<PathBuf> {
    let target = rustix::fs::readlinkat(dir, name, Vec::new())?;
    Ok(PathBuf::from(OsString::from_vec(target.into_bytes())))
}

/// Removes `name` in `dir`, a whole tree if it is a directory, never
/// following a symlink, one descriptor per level and no recursion (a tree a
/// hostile layer or command made may be deeper than any stack). Directories
/// that deny us (mode 000, as overlay's work directory, or read-only ones a
/// command left) are opened up first.
///
/// # Errors
/// The first removal the kernel refuses.
pub fn remove_at(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<()> {
    let st = rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW)?;
    if FileType::from_raw_mode(st.st_mode) != FileType::Directory {
        return Ok(rustix::fs::unlinkat(dir, name, AtFlags::empty())?);
    }
    struct Frame {
        fd: OwnedFd,
        todo: Vec<DirEntry>,
        /// Our name in the parent frame (`None`: the top, in `dir`).
        name: OsString,
    }
    let open = |parent: BorrowedFd<'_>, name: &OsStr| -> io::Result<Frame> {
        let flags = OFlags::DIRECTORY | OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let fd = match rustix::fs::openat(parent, name, flags, Mode::empty()) {
            Err(Errno::ACCESS) => {
                rustix::fs::chmodat(parent, name, Mode::from_raw_mode(0o700), AtFlags::empty())?;
                rustix::fs::openat(parent, name, flags, Mode::empty())?
            }
            r => r?,
        };
        // Write and search permission, to remove what is inside.
        let _ = rustix::fs::fchmod(&fd, Mode::from_raw_mode(0o700));
        let todo = read_dir_fd(fd.as_fd())?;
        Ok(Frame {
            fd,
            todo,
            name: name.to_os_string(),
        })
    };
    let mut stack = vec![open(dir, name)?];
    while let Some(top) = stack.last_mut() {
        match top.todo.pop() {
            Some(e) if e.kind == FileType::Directory => {
                let f = open(top.fd.as_fd(), &e.name)?;
                stack.push(f);
            }
            Some(e) => rustix::fs::unlinkat(&top.fd, e.name.as_os_str(), AtFlags::empty())?,
            None => {
                let done = stack.pop().map(|f| f.name).unwrap_or_default();
                let parent = stack.last().map_or(dir, |f| f.fd.as_fd());
                rustix::fs::unlinkat(parent, done.as_os_str(), AtFlags::REMOVEDIR)?;
            }
        }
    }
    Ok(())
}

/// Removes the directory tree at `path` (the builder's own path: a sandbox
/// or snapshot directory) as [`remove_at`] does; a missing `path` is fine.
///
/// # Errors
/// The first removal the kernel refuses.
pub fn remove_all(path: &Path) -> io::Result<()> {
    let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
        return Err(invalid_name());
    };
    let parent = if parent.as_os_str().is_empty() {
        Path::new(".")
    } else {
        parent
    };
    let dir = rustix::fs::openat(
        CWD,
        parent,
        OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    match remove_at(dir.as_fd(), name) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        r => r,
    }
}

/// The value of the extended attribute `name` of the object an `O_PATH`
/// (or any) descriptor names; `None` when it has none (or the filesystem
/// has no xattrs). Goes through `/proc/self/fd`, the kernel's way to reach
/// the inode of an `O_PATH` descriptor, which `fgetxattr` refuses.
pub fn get_xattr(fd: BorrowedFd<'_>, name: &OsStr) -> Option<Vec<u8>> {
    let p = format!("/proc/self/fd/{}", fd.as_raw_fd());
    let mut buf = vec![0u8; 256];
    loop {
        match rustix::fs::getxattr(p.as_str(), name, &mut buf[..]) {
            Ok(n) => {
                buf.truncate(n);
                return Some(buf);
            }
            Err(Errno::RANGE) if buf.len() < (1 << 16) => buf.resize(1 << 16, 0),
            Err(_) => return None,
        }
    }
}

/// The names of the extended attributes of the object `fd` names (see
/// [`get_xattr`]).
pub fn list_xattrs(fd: BorrowedFd<'_>) -> Vec<OsString> {
    let p = format!("/proc/self/fd/{}", fd.as_raw_fd());
    let mut buf = vec![0u8; 1024];
    let n = loop {
        match rustix::fs::listxattr(p.as_str(), &mut buf[..]) {
            Ok(n) => break n,
            Err(Errno::RANGE) if buf.len() < (1 << 16) => buf.resize(1 << 16, 0),
            Err(_) => return Vec::new(),
        }
    };
    buf[..n]
        .split(|&b| b == 0)
        .filter(|n| !n.is_empty())
        .map(|n| OsStr::from_bytes(n).to_os_string())
        .collect()
}

/// The children of an open directory, sorted by name bytes, without `.`
/// and `..`; a type the directory entry does not give is read with
/// `fstatat(AT_SYMLINK_NOFOLLOW)`.
///
/// # Errors
/// The kernel's.
pub fn read_dir_fd(dir: BorrowedFd<'_>) -> io::Result<Vec<DirEntry>> {
    // A fresh descriptor: `Dir` reads from the descriptor's offset.
    let fd = rustix::fs::openat(
        dir,
        ".",
        OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let mut out = Vec::new();
    for e in Dir::read_from(&fd)? {
        let e = e?;
        let name = e.file_name().to_bytes();
        if name == b"." || name == b".." {
            continue;
        }
        let name = OsStr::from_bytes(name).to_os_string();
        let kind = match e.file_type() {
            FileType::Unknown => {
                let st = rustix::fs::statat(dir, name.as_os_str(), AtFlags::SYMLINK_NOFOLLOW)?;
                FileType::from_raw_mode(st.st_mode)
            }
            k => k,
        };
        out.push(DirEntry { name, kind });
    }
    out.sort_by(|a, b| a.name.as_bytes().cmp(b.name.as_bytes()));
    Ok(out)
}

fn invalid_name() -> io::Error {
    io::Error::from(io::ErrorKind::InvalidInput)
}

fn not_a_file() -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, "not a regular file")
}

/// Opens `path` inside the directory `root` (see [`Root::open_at`]), for
/// callers that hold a bare descriptor.
///
/// # Errors
/// The kernel's.
pub fn open_in(root: BorrowedFd<'_>, path: &Path, flags: OFlags) -> io::Result<OwnedFd> {
    Ok(rustix::fs::openat2(
        root,
        relative(path),
        flags | OFlags::CLOEXEC,
        Mode::empty(),
        resolve_flags(),
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn fixture() -> (tempfile::TempDir, Root) {
        let t = tempfile::tempdir().unwrap();
        let r = t.path().join("root");
        fs_err::create_dir_all(r.join("etc")).unwrap();
        fs_err::write(r.join("etc/passwd"), "inside").unwrap();
        fs_err::write(t.path().join("secret"), "outside").unwrap();
        fs_err::os::unix::fs::symlink("/etc", r.join("abs")).unwrap();
        fs_err::os::unix::fs::symlink("../../../secret", r.join("up")).unwrap();
        fs_err::os::unix::fs::symlink("/proc/self/root/etc/passwd", r.join("magic")).unwrap();
        let root = Root::open(&r).unwrap();
        (t, root)
    }

    fn read(root: &Root, rel: &str) -> io::Result<String> {
        let mut s = String::new();
        root.open_file(Path::new(rel))?.read_to_string(&mut s)?;
        Ok(s)
    }

    #[test]
    fn symlinks_and_dotdot_stay_inside() {
        let (_t, root) = fixture();
        assert_eq!(read(&root, "/abs/passwd").unwrap(), "inside");
        assert_eq!(read(&root, "../../../etc/passwd").unwrap(), "inside");
        // `up` climbs to the root and finds no `secret` there.
        assert_eq!(
            read(&root, "up").unwrap_err().kind(),
            io::ErrorKind::NotFound
        );
        // /proc/self/root is a magic link: refused, not followed to the host.
        assert!(read(&root, "magic").is_err());
    }

    #[test]
    fn lstat_and_read_link_do_not_follow() {
        let (_t, root) = fixture();
        let st = root.lstat(Path::new("abs")).unwrap();
        assert_eq!(FileType::from_raw_mode(st.st_mode), FileType::Symlink);
        assert_eq!(root.read_link(Path::new("abs")).unwrap(), Path::new("/etc"));
        let st = root.stat(Path::new("abs")).unwrap();
        assert_eq!(FileType::from_raw_mode(st.st_mode), FileType::Directory);
        assert!(root.open_file_nofollow(Path::new("abs")).is_err());
    }

    #[test]
    fn non_utf8_names_are_kept() {
        let (_t, root) = fixture();
        let name = OsStr::from_bytes(b"caf\xe9");
        root.create_file(&Path::new("etc").join(name), 0o644)
            .unwrap();
        let names: Vec<OsString> = root
            .read_dir(Path::new("etc"))
            .unwrap()
            .into_iter()
            .map(|e| e.name)
            .collect();
        assert_eq!(names, [name.to_os_string(), OsString::from("passwd")]);
    }

    #[test]
    fn create_dir_all_goes_through_links_inside() {
        let (t, root) = fixture();
        root.create_dir_all(Path::new("abs/new/deeper"), 0o755)
            .unwrap();
        assert!(t.path().join("root/etc/new/deeper").is_dir());
        assert!(!Path::new("/etc/new").exists());
    }

    #[test]
    fn fifos_are_not_opened() {
        let (t, root) = fixture();
        rustix::fs::mknodat(
            CWD,
            t.path().join("root/fifo"),
            FileType::Fifo,
            Mode::from_raw_mode(0o644),
            0,
        )
        .unwrap();
        assert!(root.open_file(Path::new("fifo")).is_err());
    }

    #[test]
    fn remove_all_handles_deep_and_locked_trees() {
        use std::os::unix::fs::PermissionsExt;
        let t = tempfile::tempdir().unwrap();
        let top = t.path().join("top");
        // Deeper than a recursive removal's stack could go on a small
        // thread, built with relative steps (a path this long is refused).
        fs_err::create_dir(&top).unwrap();
        let mut cur = fs_err::File::open(&top).unwrap().into_file();
        for _ in 0..1000 {
            rustix::fs::mkdirat(&cur, "d", Mode::from_raw_mode(0o755)).unwrap();
            let fd = rustix::fs::openat(&cur, "d", OFlags::DIRECTORY, Mode::empty()).unwrap();
            cur = File::from(fd);
        }
        fs_err::create_dir_all(top.join("locked/inner")).unwrap();
        fs_err::set_permissions(top.join("locked"), std::fs::Permissions::from_mode(0o000))
            .unwrap();
        fs_err::os::unix::fs::symlink(t.path(), top.join("link")).unwrap();
        fs_err::write(t.path().join("keep"), "k").unwrap();
        let h = std::thread::Builder::new()
            .stack_size(64 * 1024)
            .spawn(move || remove_all(&top))
            .unwrap();
        h.join().unwrap().unwrap();
        assert!(!t.path().join("top").exists());
        assert!(t.path().join("keep").exists());
    }

    #[test]
    fn names_longer_than_path_max_resolve_in_pieces() {
        let t = tempfile::tempdir().unwrap();
        let root = Root::open(t.path()).unwrap();
        let deep = vec!["dddddddddd"; 500].join("/");
        root.create_dir_all(Path::new(&deep), 0o755).unwrap();
        let leaf = format!("{deep}/leaf");
        let mut f = root.create_file(Path::new(&leaf), 0o644).unwrap();
        std::io::Write::write_all(&mut f, b"deep").unwrap();
        assert_eq!(read(&root, &leaf).unwrap(), "deep");
        // A `..` that climbs out of a later piece is refused, not followed.
        let up = format!("{deep}/{}/etc", vec![".."; 505].join("/"));
        assert!(root.open_at(Path::new(&up), OFlags::PATH).is_err());
    }

    #[test]
    fn split_parent_names() {
        assert_eq!(
            split_parent(Path::new("/a/b/")),
            Some((Path::new("a"), OsStr::new("b")))
        );
        assert_eq!(
            split_parent(Path::new("x")),
            Some((Path::new("."), OsStr::new("x")))
        );
        assert_eq!(split_parent(Path::new("/")), None);
        assert_eq!(split_parent(Path::new("a/..")), None);
    }
}
