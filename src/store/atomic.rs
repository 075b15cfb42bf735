//! Atomic file creation: write to a temporary file in the destination's
//! directory, fsync, rename over the destination, fsync the directory. Readers
//! see the old file or the whole new one, never a part, whatever kills us.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

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

impl AtomicFile {
    /// Starts writing `dest`, with the temporary file beside it (hidden, so a
    /// crash leaves at most a dotfile, never a partial `dest`).
    ///
    /// # Errors
    /// When the temporary file cannot be created.
    pub fn create(dest: &Path) -> io::Result<Self> {
        let dir = parent_dir(dest);
        let name = dest
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let tmp = dir.join(format!(".{name}.tmp-{}", unique_suffix()));
        Self::create_in(dest, tmp)
    }

    /// Like [`AtomicFile::create`] but with the temporary file at `tmp`, which
    /// must be on the same filesystem as `dest`.
    ///
    /// # Errors
    /// When the temporary file cannot be created.
    pub fn create_in(dest: &Path, tmp: PathBuf) -> io::Result<Self> {
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(&tmp)?;
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
            if let Some(f) = file {
                f.sync_all()?;
            }
            std::fs::rename(&self.tmp, &self.dest)?;
            sync_dir(parent_dir(&self.dest))
        })();
        if res.is_err() {
            let _ = std::fs::remove_file(&self.tmp);
        }
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
            let _ = std::fs::remove_file(&self.tmp);
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
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 0);
    }

    #[test]
    fn commit_replaces_whole() {
        let d = tempfile::tempdir().unwrap();
        let dest = d.path().join("out");
        atomic_write(&dest, b"one").unwrap();
        atomic_write(&dest, b"two").unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), b"two");
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 1);
    }
}
