//! Per-process temporary directories under the store's `tmp/`.
//!
//! Each process that needs temporary space gets `tmp/<id>/` and holds
//! `tmp/<id>.lock` with `flock(LOCK_EX)` for as long as it lives (the lock
//! file is made already locked, see [`super::atomic::create_locked`], and
//! before the directory). The kernel drops the lock when the process dies,
//! however it dies, so whoever opens the store next can tell a killed
//! process's leftovers (lock free) from a live process's work (lock held) and
//! remove only the former ([`reclaim`]). A process that ends normally removes
//! its own directory.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// This process's directory under `tmp/`, made on first use.
#[derive(Debug)]
pub(crate) struct Scratch {
    tmp: PathBuf,
    held: OnceLock<Option<Held>>,
}

#[derive(Debug)]
struct Held {
    dir: PathBuf,
    lock_path: PathBuf,
    _lock: File,
}

impl Scratch {
    pub(crate) fn new(tmp: PathBuf) -> Self {
        Scratch {
            tmp,
            held: OnceLock::new(),
        }
    }

    /// The directory, made (with its lock) the first time it is asked for.
    /// `None` when it cannot be made; callers then use `tmp/` itself, whose
    /// leftovers only `prune` removes.
    pub(crate) fn dir(&self) -> Option<&Path> {
        self.held
            .get_or_init(|| Held::create(&self.tmp).ok())
            .as_ref()
            .map(|h| h.dir.as_path())
    }
}

impl Held {
    fn create(tmp: &Path) -> io::Result<Held> {
        let id = super::atomic::unique_suffix();
        let lock_path = tmp.join(format!("{id}.lock"));
        let lock = super::atomic::create_locked(&lock_path, 0o600)?;
        let dir = tmp.join(&id);
        if let Err(e) = super::private_dir(&dir) {
            let _ = fs_err::remove_file(&lock_path);
            return Err(e);
        }
        Ok(Held {
            dir,
            lock_path,
            _lock: lock,
        })
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        // The directory first, then the lock: a directory never outlives its
        // lock file unless we die in between (reclaim handles that too).
        remove_tree(&self.dir);
        let _ = fs_err::remove_file(&self.lock_path);
    }
}

/// Removes what killed processes left in `tmp`: every `<id>/` whose
/// `<id>.lock` no one holds (or which has no lock file at all), and those
/// lock files. With `everything`, also entries of no known shape (temporary
/// files of older imgbuild versions): only for a caller that holds the store
/// lock exclusively. Returns the paths removed.
///
/// # Errors
/// When `tmp` cannot be listed.
pub(crate) fn reclaim(tmp: &Path, everything: bool) -> io::Result<Vec<PathBuf>> {
    let mut removed = Vec::new();
    let rd = match fs_err::read_dir(tmp) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(removed),
        Err(e) => return Err(e),
    };
    let mut names: Vec<String> = Vec::new();
    for e in rd {
        names.push(e?.file_name().to_string_lossy().into_owned());
    }
    for name in &names {
        let path = tmp.join(name);
        if let Some(id) = name.strip_suffix(".lock")
            && !name.starts_with('.')
        {
            // Take the lock: if we get it, its process is gone.
            let dir = tmp.join(id);
            match fs_err::OpenOptions::new().read(true).open(&path) {
                Ok(f) => {
                    let f = f.into_file();
                    use std::os::fd::AsFd;
                    let free = rustix::fs::flock(
                        f.as_fd(),
                        rustix::fs::FlockOperation::NonBlockingLockExclusive,
                    )
                    .is_ok();
                    if free {
                        if dir.exists() {
                            remove_tree(&dir);
                            removed.push(dir);
                        }
                        let _ = fs_err::remove_file(&path);
                        removed.push(path);
                    }
                }
                Err(_) => continue,
            }
        } else if !name.starts_with('.') && names.iter().any(|n| *n == format!("{name}.lock")) {
            // A live (or just reclaimed) process's directory.
        } else if is_process_dir(name) && path.is_dir() {
            // Its lock file is gone: its owner or a reclaimer died midway.
            remove_tree(&path);
            removed.push(path);
        } else if everything {
            remove_tree(&path);
            removed.push(path);
        }
    }
    Ok(removed)
}

/// Whether `name` has the shape of a process directory (`PID-N-NANOS`).
fn is_process_dir(name: &str) -> bool {
    let parts: Vec<&str> = name.split('-').collect();
    parts.len() == 3
        && parts[..2]
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
        && parts[2].len() == 8
        && parts[2].bytes().all(|b| b.is_ascii_hexdigit())
}

/// Removes a file or a directory tree, including directories a sandbox left
/// without write or search permission (overlay's `work/` is mode 000).
pub(crate) fn remove_tree(p: &Path) {
    let Ok(meta) = fs_err::symlink_metadata(p) else {
        return;
    };
    if !meta.is_dir() {
        let _ = fs_err::remove_file(p);
        return;
    }
    if fs_err::remove_dir_all(p).is_ok() {
        return;
    }
    fn open_up(p: &Path) {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(m) = fs_err::symlink_metadata(p)
            && m.is_dir()
        {
            let _ = fs_err::set_permissions(p, std::fs::Permissions::from_mode(0o700));
            if let Ok(rd) = fs_err::read_dir(p) {
                for e in rd.flatten() {
                    open_up(&e.path());
                }
            }
        }
    }
    open_up(p);
    let _ = fs_err::remove_dir_all(p);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn live_directories_stay_dead_ones_go() {
        let d = tempfile::tempdir().unwrap();
        let tmp = d.path().join("tmp");
        fs_err::create_dir(&tmp).unwrap();
        let live = Scratch::new(tmp.clone());
        let live_dir = live.dir().unwrap().to_path_buf();
        fs_err::write(live_dir.join("blob-1"), b"x").unwrap();
        // A dead process: its lock file exists, nobody holds it.
        fs_err::create_dir(tmp.join("1-2-0000abcd")).unwrap();
        fs_err::write(tmp.join("1-2-0000abcd/blob-9"), b"y").unwrap();
        fs_err::write(tmp.join("1-2-0000abcd.lock"), b"").unwrap();
        // A directory that lost its lock file.
        fs_err::create_dir(tmp.join("3-4-0000abcd")).unwrap();
        // An older version's file: only with `everything`.
        fs_err::write(tmp.join("blob-77-1-2"), b"z").unwrap();
        let removed = reclaim(&tmp, false).unwrap();
        assert_eq!(removed.len(), 3, "{removed:?}");
        assert!(live_dir.join("blob-1").exists());
        assert!(tmp.join("blob-77-1-2").exists());
        reclaim(&tmp, true).unwrap();
        assert!(!tmp.join("blob-77-1-2").exists());
        assert!(live_dir.join("blob-1").exists());
        let lock = live.held.get().unwrap().as_ref().unwrap().lock_path.clone();
        drop(live);
        assert!(!live_dir.exists() && !lock.exists());
    }
}
