//! Atomic file creation: write to a temporary file in the destination's
//! directory, fsync, rename over the destination, fsync the directory. Readers
//! see the old file or the whole new one, never a part, whatever kills us.
//!
//! A temporary file is held with `flock(LOCK_EX)` by its writer from the
//! moment it has its name (it is created under a `.new-…` name, locked, then
//! renamed to its `.NAME.tmp-…` name, so no one ever sees it unlocked under
//! that name; a writer killed in the microseconds between leaves an empty
//! `.new-…` file, which nothing reclaims). The lock dies with the process, so a `.NAME.tmp-…` whose lock can be
//! taken belongs to a killed writer: [`reclaim`] removes those, and only
//! those, before the next write of `NAME`.

use fs_err::OpenOptions;
use fs_err::os::unix::fs::OpenOptionsExt;
use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use rustix::fs::FlockOperation;

/// A temporary file that becomes `dest` on [`AtomicFile::commit`] and is removed
/// if dropped uncommitted.
#[derive(Debug)]
pub struct AtomicFile {
    file: Option<File>,
    tmp: PathBuf,
    dest: PathBuf,
}

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// A name no other process or thread is using right now.
pub(crate) fn unique_suffix() -> String {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!("{}-{n}-{nanos:08x}", std::process::id())
}

/// The hidden prefix of `dest`'s temporary siblings: `.NAME.tmp-`.
fn tmp_prefix(dest: &Path) -> Vec<u8> {
    let name = dest.file_name().map(OsStr::as_bytes).unwrap_or_default();
    let mut p = Vec::with_capacity(name.len() + 6);
    p.push(b'.');
    p.extend_from_slice(name);
    p.extend_from_slice(b".tmp-");
    p
}

/// Creates `path` (which must not exist) and returns it open for writing and
/// locked: it is made under a `.new-` twin name, locked, and renamed, so no
/// other process can find it under `path` without its lock held.
///
/// # Errors
/// When the file cannot be created, locked or renamed.
pub(crate) fn create_locked(path: &Path, mode: u32) -> io::Result<File> {
    // `.new-…NAME`, not `NAME.new-…`: a reclaimer looking for `NAME`'s
    // pattern must never see the file before it is locked.
    let mut staging = format!(".new-{}-", unique_suffix()).into_bytes();
    staging.extend_from_slice(path.file_name().map(OsStr::as_bytes).unwrap_or_default());
    let staging = parent_dir(path).join(OsStr::from_bytes(&staging));
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&staging)?
        .into_file();
    let res = rustix::fs::flock(file.as_fd(), FlockOperation::NonBlockingLockExclusive)
        .map_err(io::Error::from)
        .and_then(|()| fs_err::rename(&staging, path));
    if let Err(e) = res {
        let _ = fs_err::remove_file(&staging);
        return Err(e);
    }
    Ok(file)
}

/// Whether no live process holds the lock on the file at `path`; when so, the
/// file is removed. A file that is not a regular file, or whose lock is held,
/// is left alone.
///
/// # Errors
/// When the file exists, its lock is free, and it cannot be removed.
pub(crate) fn remove_if_abandoned(path: &Path) -> io::Result<bool> {
    let file = match OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
    {
        Ok(f) => f.into_file(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        // A symlink (ELOOP), a fifo, something not ours: leave it.
        Err(_) => return Ok(false),
    };
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Ok(false);
    }
    if rustix::fs::flock(file.as_fd(), FlockOperation::NonBlockingLockExclusive).is_err() {
        return Ok(false);
    }
    // Still the same file under that name (not replaced since we opened it)?
    match fs_err::symlink_metadata(path) {
        Ok(m) if m.ino() == meta.ino() && m.dev() == meta.dev() => {}
        _ => return Ok(false),
    }
    match fs_err::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// Removes the temporary siblings of `dest` (`.NAME.tmp-…`) that a killed
/// writer left behind; a sibling whose writer is alive (it holds its lock) is
/// kept. Returns how many were removed.
///
/// # Errors
/// When the directory cannot be listed or an abandoned file removed.
pub fn reclaim(dest: &Path) -> io::Result<usize> {
    let dir = parent_dir(dest);
    let prefix = tmp_prefix(dest);
    let rd = match fs_err::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    let mut removed = 0;
    for e in rd {
        let e = e?;
        if e.file_name().as_bytes().starts_with(&prefix) && remove_if_abandoned(&e.path())? {
            removed += 1;
        }
    }
    Ok(removed)
}

impl AtomicFile {
    /// Starts writing `dest`, with the temporary file beside it (hidden, so a
    /// crash leaves at most a dotfile, never a partial `dest`; [`reclaim`]
    /// finds it by its name and its free lock).
    ///
    /// # Errors
    /// When the temporary file cannot be created.
    pub fn create(dest: &Path) -> io::Result<Self> {
        let mut name = tmp_prefix(dest);
        name.extend_from_slice(unique_suffix().as_bytes());
        let tmp = parent_dir(dest).join(OsStr::from_bytes(&name));
        Self::create_in(dest, tmp)
    }

    /// Like [`AtomicFile::create`] but with the temporary file at `tmp`, which
    /// must be on the same filesystem as `dest`.
    ///
    /// # Errors
    /// When the temporary file cannot be created.
    pub fn create_in(dest: &Path, tmp: PathBuf) -> io::Result<Self> {
        let file = create_locked(&tmp, 0o644)?;
        Ok(AtomicFile {
            file: Some(file),
            tmp,
            dest: dest.to_path_buf(),
        })
    }

    /// Where the bytes go until commit.
    pub fn tmp_path(&self) -> &Path {
        &self.tmp
    }

    /// The file being written.
    pub fn file(&mut self) -> &mut File {
        // Only `commit` takes the file, and it consumes self.
        match self.file.as_mut() {
            Some(f) => f,
            None => unreachable!("AtomicFile used after commit"),
        }
    }

    /// fsyncs, renames over the destination and fsyncs the directory.
    ///
    /// # Errors
    /// When any of those steps fails; the temporary file is removed.
    pub fn commit(mut self) -> io::Result<()> {
        let file = self.file.take();
        let res = (|| {
            if let Some(f) = &file {
                f.sync_all()?;
            }
            // Renamed while still locked: the name never shows unlocked.
            fs_err::rename(&self.tmp, &self.dest)?;
            sync_dir(parent_dir(&self.dest))
        })();
        if res.is_err() {
            let _ = fs_err::remove_file(&self.tmp);
        }
        drop(file);
        // Disarm Drop: the temporary name is gone either way.
        self.tmp = PathBuf::new();
        res
    }
}

impl Write for AtomicFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.file().write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.file().flush()
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        if !self.tmp.as_os_str().is_empty() {
            let _ = fs_err::remove_file(&self.tmp);
        }
    }
}

fn parent_dir(p: &Path) -> &Path {
    match p.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    }
}

/// fsyncs a directory so a rename in it is durable.
///
/// # Errors
/// When the directory cannot be opened or synced.
#[allow(clippy::disallowed_methods)] // its callers name the path already
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Writes `bytes` to `dest` atomically.
///
/// # Errors
/// Any I/O failure; `dest` is then untouched.
pub fn atomic_write(dest: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut f = AtomicFile::create(dest)?;
    f.write_all(bytes)?;
    f.commit()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dropped_file_leaves_nothing() {
        let d = tempfile::tempdir().unwrap();
        let dest = d.path().join("out");
        {
            let mut f = AtomicFile::create(&dest).unwrap();
            f.write_all(b"partial").unwrap();
        }
        assert_eq!(fs_err::read_dir(d.path()).unwrap().count(), 0);
    }

    #[test]
    fn commit_replaces_whole() {
        let d = tempfile::tempdir().unwrap();
        let dest = d.path().join("out");
        atomic_write(&dest, b"one").unwrap();
        atomic_write(&dest, b"two").unwrap();
        assert_eq!(fs_err::read(&dest).unwrap(), b"two");
        assert_eq!(fs_err::read_dir(d.path()).unwrap().count(), 1);
    }

    #[test]
    fn reclaim_takes_only_abandoned_siblings() {
        let d = tempfile::tempdir().unwrap();
        let dest = d.path().join("out.tar");
        // A live writer: its temporary file is locked and stays.
        let mut live = AtomicFile::create(&dest).unwrap();
        live.write_all(b"in progress").unwrap();
        // A dead writer's leftover: same name pattern, nobody holds its lock.
        let dead = d.path().join(".out.tar.tmp-1-2-3");
        fs_err::write(&dead, b"left behind").unwrap();
        // Someone else's file with a similar name is not ours to remove.
        let other = d.path().join(".out.tarball.tmp-1");
        fs_err::write(&other, b"x").unwrap();
        assert_eq!(reclaim(&dest).unwrap(), 1);
        assert!(!dead.exists());
        assert!(live.tmp_path().exists());
        assert!(other.exists());
        live.commit().unwrap();
        assert_eq!(fs_err::read(&dest).unwrap(), b"in progress");
    }
}
