//! Root-confined extraction of layers, and path resolution inside a root.
//!
//! Every path is resolved by the kernel with `openat2(RESOLVE_IN_ROOT)`, never by
//! joining strings, so `..` entries, absolute symlinks, symlink chains and hard
//! links can never reach outside the root: the kernel treats the root as `/`.
//! Whiteouts (`.wh.NAME`, `.wh..wh..opq`) delete what lower layers put there, and
//! only that (OCI image spec, "Whiteouts").

use std::collections::HashSet;
use std::ffi::OsStr;
use std::io::{self, Read};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, Dir, FileType, Mode, OFlags, Timestamps, openat};
use rustix::io::Errno;

use super::{OPAQUE_WHITEOUT, WHITEOUT_PREFIX};

/// An entry that extraction refuses, or a filesystem failure while extracting.
#[derive(Debug, thiserror::Error)]
pub enum ExtractError {
    /// The tar stream itself is unreadable.
    #[error("reading layer entry")]
    Read(#[source] io::Error),
    /// An entry could not be created.
    #[error("extracting `{path}`")]
    Entry {
        /// Path inside the root.
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

/// Opens `root` as a directory for confined resolution.
///
/// # Errors
/// When `root` is not an openable directory, or the kernel cannot confine.
fn open_root(root: &Path) -> io::Result<OwnedFd> {
    crate::confine::Root::open(root)
        .map(|r| r.into_fd())
        .map_err(io::Error::other)
}

fn open_in_root(root: BorrowedFd<'_>, path: &Path, flags: OFlags) -> io::Result<OwnedFd> {
    crate::confine::open_in(root, path, flags)
}

/// Resolves `path` inside `root_path` (symlinks followed, confined) and returns
/// the host path of what it names. The result is always under `root_path`.
///
/// # Errors
/// When the path does not exist or resolution fails.
pub fn resolve_in_root(root_path: &Path, path: &Path) -> io::Result<PathBuf> {
    let root = open_root(root_path)?;
    let fd = open_in_root(root.as_fd(), path, OFlags::PATH)?;
    let real = std::fs::read_link(format!(
        "/proc/self/fd/{}",
        std::os::fd::AsRawFd::as_raw_fd(&fd)
    ))?;
    let real_root = std::fs::canonicalize(root_path)?;
    // The kernel guarantees containment; check anyway so a future caller bug
    // cannot turn into a read outside the root.
    if !real.starts_with(&real_root) {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "{} resolves outside {}",
                path.display(),
                root_path.display()
            ),
        ));
    }
    Ok(real)
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
    let root = open_root(root_path).map_err(|source| ExtractError::Root {
        path: root_path.to_path_buf(),
        source,
    })?;
    let mut x = Extractor {
        root,
        overlay,
        is_root: rustix::process::geteuid().is_root(),
        written: HashSet::new(),
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
        let ts = timestamps(mtime);
        // Best effort: a directory replaced later in the layer may be gone.
        let _ = rustix::fs::utimensat(
            x.root.as_fd(),
            if path.is_empty() { "." } else { path.as_str() },
            &ts,
            AtFlags::SYMLINK_NOFOLLOW,
        );
    }
    Ok(x.report)
}

struct Extractor {
    root: OwnedFd,
    /// Overlay format, with the opaque-directory xattr name.
    overlay: Option<&'static str>,
    is_root: bool,
    /// Paths this layer wrote: whiteouts never remove these.
    written: HashSet<String>,
    dir_times: Vec<(String, u64)>,
    report: ExtractReport,
}

/// Cleans a tar entry name into a relative path inside the root: `..` cannot
/// climb above the root (it is resolved lexically against `/`), `.` and empty
/// components vanish.
pub fn clean_entry_path(name: &[u8]) -> String {
    let mut parts: Vec<&[u8]> = Vec::new();
    for part in name.split(|&b| b == b'/') {
        match part {
            b"" | b"." => {}
            b".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    let joined = parts.join(&b'/');
    String::from_utf8_lossy(&joined).into_owned()
}

fn split_parent(path: &str) -> (&str, &str) {
    match path.rfind('/') {
        Some(i) => (&path[..i], &path[i + 1..]),
        None => ("", path),
    }
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

impl Extractor {
    fn entry<R: Read>(&mut self, mut entry: ::tar::Entry<'_, R>) -> Result<()> {
        let raw = entry.path_bytes().into_owned();
        let path = clean_entry_path(&raw);
        let err = |source: io::Error| ExtractError::Entry {
            path: path.clone(),
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
                self.set_owner_mode(self.root.as_fd(), uid, gid, mode)
                    .map_err(err)?;
                self.dir_times.push((String::new(), mtime));
            }
            return Ok(());
        }
        let (parent, base) = split_parent(&path);
        if let Some(target) = base.strip_prefix(WHITEOUT_PREFIX) {
            return self.whiteout(parent, base, target, &path);
        }
        let parent_fd = self.ensure_dir(parent).map_err(err)?;
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
                    rustix::fs::mkdirat(pfd, base, Mode::from_raw_mode(0o755))
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
                self.set_xattrs(&mut entry, fd.as_fd());
                self.dir_times.push((path.clone(), mtime));
            }
            ::tar::EntryType::Regular | ::tar::EntryType::Continuous => {
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
                io::copy(&mut entry, &mut file).map_err(err)?;
                self.set_owner_mode(file.as_fd(), uid, gid, mode)
                    .map_err(err)?;
                self.set_xattrs(&mut entry, file.as_fd());
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
                let target = clean_entry_path(
                    &entry
                        .link_name_bytes()
                        .map(|b| b.into_owned())
                        .unwrap_or_default(),
                );
                let (tparent, tbase) = split_parent(&target);
                if tbase.is_empty() {
                    return Err(ExtractError::BadName(path));
                }
                let tparent_fd = open_in_root(
                    self.root.as_fd(),
                    Path::new(tparent),
                    OFlags::DIRECTORY | OFlags::RDONLY,
                )
                .map_err(err)?;
                self.remove_existing(pfd, base, existing_is_dir, existing.is_some())
                    .map_err(err)?;
                // Flags 0: a link to a symlink links the symlink, never what it
                // points at, so the target cannot be outside the root.
                rustix::fs::linkat(tparent_fd.as_fd(), tbase, pfd, base, AtFlags::empty())
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
                    self.report
                        .skipped
                        .push(format!("{path}: device node skipped (not running as root)"));
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
            }
            // PAX/GNU metadata entries are consumed by the tar reader; anything
            // else (sparse, unknown) is skipped rather than guessed at.
            other => {
                self.report
                    .skipped
                    .push(format!("{path}: unsupported entry type {other:?}"));
                return Ok(());
            }
        }
        self.written.insert(path);
        self.report.entries += 1;
        Ok(())
    }

    fn whiteout(&mut self, parent: &str, base: &str, target: &str, path: &str) -> Result<()> {
        let bad = || ExtractError::BadName(path.to_string());
        let err = |source: io::Error| ExtractError::Entry {
            path: path.to_string(),
            source,
        };
        if let Some(opaque_xattr) = self.overlay {
            let parent_fd = self.ensure_dir(parent).map_err(err)?;
            if base == OPAQUE_WHITEOUT {
                return rustix::fs::fsetxattr(
                    parent_fd.as_fd(),
                    opaque_xattr,
                    b"y",
                    rustix::fs::XattrFlags::empty(),
                )
                .map_err(io_err)
                .map_err(err);
            }
            if target.is_empty() || target == "." || target == ".." || target.contains('/') {
                return Err(bad());
            }
            let victim = if parent.is_empty() {
                target.to_string()
            } else {
                format!("{parent}/{target}")
            };
            if self.written.contains(&victim) {
                return Ok(());
            }
            return rustix::fs::mknodat(
                parent_fd.as_fd(),
                target,
                FileType::CharacterDevice,
                Mode::empty(),
                rustix::fs::makedev(0, 0),
            )
            .map_err(io_err)
            .map_err(err);
        }
        let parent_fd = match open_in_root(
            self.root.as_fd(),
            Path::new(parent),
            OFlags::DIRECTORY | OFlags::RDONLY,
        ) {
            Ok(fd) => fd,
            // Nothing below to hide.
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(err(e)),
        };
        if base == OPAQUE_WHITEOUT {
            let keep_prefix = if parent.is_empty() {
                String::new()
            } else {
                format!("{parent}/")
            };
            return self.clear_dir(parent_fd.as_fd(), &keep_prefix).map_err(err);
        }
        if target.is_empty() || target == "." || target == ".." || target.contains('/') {
            return Err(bad());
        }
        let victim = if parent.is_empty() {
            target.to_string()
        } else {
            format!("{parent}/{target}")
        };
        if self.written.contains(&victim) {
            return Ok(());
        }
        match rustix::fs::statat(parent_fd.as_fd(), target, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => {
                let is_dir = FileType::from_raw_mode(st.st_mode) == FileType::Directory;
                self.remove_existing(parent_fd.as_fd(), target, is_dir, true)
                    .map_err(err)
            }
            Err(Errno::NOENT) => Ok(()),
            Err(e) => Err(err(e.into())),
        }
    }

    /// Removes every child of `dir` that this layer did not write (`prefix` is
    /// the layer path of `dir` with a trailing `/`).
    fn clear_dir(&self, dir: BorrowedFd<'_>, prefix: &str) -> io::Result<()> {
        for (name, is_dir) in list_dir(dir)? {
            let child = format!("{prefix}{name}");
            if self.written.contains(&child) {
                if is_dir {
                    let fd = openat(
                        dir,
                        name.as_str(),
                        OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::RDONLY | OFlags::CLOEXEC,
                        Mode::empty(),
                    )?;
                    self.clear_dir(fd.as_fd(), &format!("{child}/"))?;
                }
                continue;
            }
            remove_tree(dir, &name, is_dir)?;
        }
        Ok(())
    }

    fn remove_existing(
        &self,
        dir: BorrowedFd<'_>,
        name: &str,
        is_dir: bool,
        exists: bool,
    ) -> io::Result<()> {
        if exists {
            remove_tree(dir, name, is_dir)?;
        }
        Ok(())
    }

    /// Opens (creating as needed, mode 0755) the directory `path` in the root.
    /// A dangling symlink on the way is followed the way the kernel would,
    /// inside the root, and its target created.
    fn ensure_dir(&self, path: &str) -> io::Result<OwnedFd> {
        self.ensure_dir_depth(path, 0)
    }

    fn ensure_dir_depth(&self, path: &str, depth: usize) -> io::Result<OwnedFd> {
        if depth > 40 {
            return Err(Errno::LOOP.into());
        }
        let flags = OFlags::DIRECTORY | OFlags::RDONLY;
        match open_in_root(self.root.as_fd(), Path::new(path), flags) {
            Ok(fd) => return Ok(fd),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let (parent, base) = split_parent(path);
        let parent_fd = self.ensure_dir_depth(parent, depth + 1)?;
        match rustix::fs::statat(parent_fd.as_fd(), base, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::Symlink => {
                let target = rustix::fs::readlinkat(parent_fd.as_fd(), base, Vec::new())?;
                let target = target.to_string_lossy();
                let joined = if target.starts_with('/') {
                    target.to_string()
                } else {
                    format!("{parent}/{target}")
                };
                return self.ensure_dir_depth(&clean_entry_path(joined.as_bytes()), depth + 1);
            }
            _ => {}
        }
        match rustix::fs::mkdirat(parent_fd.as_fd(), base, Mode::from_raw_mode(0o755)) {
            Ok(()) | Err(Errno::EXIST) => {}
            Err(e) => return Err(e.into()),
        }
        open_in_root(self.root.as_fd(), Path::new(path), flags)
    }

    /// Sets the owner of `name` in `dir` without following a symlink; only
    /// root can, so others keep their own ids (as tar does).
    fn chown_at(&self, dir: BorrowedFd<'_>, name: &str, uid: u64, gid: u64) -> io::Result<()> {
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

    fn set_xattrs<R: Read>(&self, entry: &mut ::tar::Entry<'_, R>, fd: BorrowedFd<'_>) {
        let Ok(Some(exts)) = entry.pax_extensions() else {
            return;
        };
        for ext in exts.flatten() {
            let Ok(key) = ext.key() else { continue };
            if let Some(name) = key.strip_prefix("SCHILY.xattr.") {
                // Best effort, as containerd: trusted.* and security.* need
                // privileges the caller may not have.
                let _ = rustix::fs::fsetxattr(
                    fd,
                    name,
                    ext.value_bytes(),
                    rustix::fs::XattrFlags::empty(),
                );
            }
        }
    }
}

fn io_err(e: Errno) -> io::Error {
    e.into()
}

/// Lists a directory's children as `(name, is_dir)`, without `.` and `..`.
fn list_dir(dir: BorrowedFd<'_>) -> io::Result<Vec<(String, bool)>> {
    let fd = openat(
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
        let name = String::from_utf8_lossy(name).into_owned();
        let is_dir = match e.file_type() {
            FileType::Directory => true,
            FileType::Unknown => rustix::fs::statat(dir, name.as_str(), AtFlags::SYMLINK_NOFOLLOW)
                .is_ok_and(|s| FileType::from_raw_mode(s.st_mode) == FileType::Directory),
            _ => false,
        };
        out.push((name, is_dir));
    }
    Ok(out)
}

/// Removes `name` under `dir`, recursively for directories, never following
/// symlinks.
pub(crate) fn remove_tree(dir: BorrowedFd<'_>, name: &str, is_dir: bool) -> io::Result<()> {
    if !is_dir {
        return Ok(rustix::fs::unlinkat(dir, name, AtFlags::empty())?);
    }
    let fd = openat(
        dir,
        name,
        OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::RDONLY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    for (child, child_is_dir) in list_dir(fd.as_fd())? {
        remove_tree(fd.as_fd(), &child, child_is_dir)?;
    }
    Ok(rustix::fs::unlinkat(dir, name, AtFlags::REMOVEDIR)?)
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
        std::fs::create_dir(&root).unwrap();
        std::fs::create_dir(&outside).unwrap();
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
        std::fs::write(t.path().join("secret"), "s").unwrap();
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

    #[test]
    fn resolve_in_root_follows_links_inside() {
        let (_t, root, _) = sandbox();
        std::fs::create_dir(root.join("etc")).unwrap();
        std::fs::write(root.join("etc/passwd"), "x").unwrap();
        std::os::unix::fs::symlink("/etc", root.join("link")).unwrap();
        let p = resolve_in_root(&root, Path::new("/link/passwd")).unwrap();
        assert_eq!(p, std::fs::canonicalize(root.join("etc/passwd")).unwrap());
        assert!(
            resolve_in_root(&root, Path::new("../../.."))
                .unwrap()
                .starts_with(std::fs::canonicalize(&root).unwrap())
        );
    }
}
