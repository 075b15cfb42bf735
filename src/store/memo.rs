//! The stat memo: `(path, size, mtime, ctime, inode, device) → content
//! digest`, so a rebuild whose context did not change reads no file contents.
//!
//! One memo per context directory, in the store. A digest is trusted only if
//! every stat field matches and the file's mtime is older than the memo
//! itself (minus a second, for coarse timestamps): a file changed in the same
//! instant the memo was written could otherwise keep its old mtime and size
//! (git's "racy clean" problem). Such entries are simply hashed again.
//!
//! The memo is a cache: a missing, stale or unreadable one costs time, never
//! correctness, and concurrent builds may overwrite each other's.

use std::collections::HashMap;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::{AtomicFile, Store};
use crate::digest::Digest;

/// The stat fields that must all match for a memoized digest to be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileStat {
    /// Size in bytes.
    pub size: u64,
    /// Modification time, nanoseconds since the epoch.
    pub mtime_ns: i64,
    /// Status change time, nanoseconds since the epoch.
    pub ctime_ns: i64,
    /// Inode number.
    pub ino: u64,
    /// Device.
    pub dev: u64,
}

impl FileStat {
    /// The fields of `meta`.
    pub fn of(meta: &std::fs::Metadata) -> Self {
        FileStat {
            size: meta.len(),
            mtime_ns: meta.mtime().saturating_mul(1_000_000_000) + meta.mtime_nsec(),
            ctime_ns: meta.ctime().saturating_mul(1_000_000_000) + meta.ctime_nsec(),
            ino: meta.ino(),
            dev: meta.dev(),
        }
    }

    /// The fields of a `stat` result (the context is walked through
    /// `confine`, which gives those).
    pub fn of_stat(st: &rustix::fs::Stat) -> Self {
        let ns = |s: i64, n: u64| s.saturating_mul(1_000_000_000).saturating_add(n as i64);
        FileStat {
            size: st.st_size as u64,
            mtime_ns: ns(st.st_mtime, st.st_mtime_nsec),
            ctime_ns: ns(st.st_ctime, st.st_ctime_nsec),
            ino: st.st_ino,
            dev: st.st_dev,
        }
    }
}

const HEADER: &str = "imgbuild-statmemo-v1";

/// A loaded memo.
#[derive(Debug)]
pub struct StatMemo {
    path: PathBuf,
    /// Where the new memo is written before it replaces the old one (in the
    /// process's temporary directory, so a killed build leaves nothing here).
    tmp: PathBuf,
    /// mtime of the memo file when loaded; entries at least as new are racy.
    written_ns: i64,
    entries: HashMap<String, (FileStat, Digest)>,
    dirty: bool,
}

impl StatMemo {
    /// The memo for the directory `root` (empty if there is none yet or it
    /// cannot be read).
    pub fn load(store: &Store, root: &Path) -> Self {
        let key = Digest::of(root.as_os_str().as_encoded_bytes()).hex();
        let path = store.root().join("memo").join(key);
        let mut memo = StatMemo {
            path,
            tmp: store.tmp_path("memo"),
            written_ns: 0,
            entries: HashMap::new(),
            dirty: false,
        };
        let Ok(meta) = fs_err::metadata(&memo.path) else {
            return memo;
        };
        let Ok(text) = fs_err::read_to_string(&memo.path) else {
            return memo;
        };
        let mut lines = text.lines();
        if lines.next() != Some(HEADER) {
            return memo;
        }
        memo.written_ns = FileStat::of(&meta).mtime_ns;
        for line in lines {
            if let Some((k, v)) = parse_line(line) {
                memo.entries.insert(k, v);
            }
        }
        memo
    }

    /// The digest of the file at `path` if the memo has it for exactly `stat`
    /// and the entry is not racy.
    pub fn get(&self, path: &str, stat: &FileStat) -> Option<Digest> {
        let (s, d) = self.entries.get(path)?;
        let settled = stat.mtime_ns < self.written_ns.saturating_sub(1_000_000_000);
        (s == stat && settled).then_some(*d)
    }

    /// Records a digest.
    pub fn put(&mut self, path: String, stat: FileStat, digest: Digest) {
        if self.entries.get(&path) != Some(&(stat, digest)) {
            self.entries.insert(path, (stat, digest));
            self.dirty = true;
        }
    }

    /// Whether anything changed since loading (so a save is worth it). Also
    /// true when racy entries should be re-confirmed by a newer memo time.
    pub fn needs_save(&self) -> bool {
        self.dirty
    }

    /// Writes the memo back (atomically), if anything changed.
    ///
    /// # Errors
    /// When the memo cannot be written.
    pub fn save(&self) -> io::Result<()> {
        if !self.dirty {
            return Ok(());
        }
        if let Some(dir) = self.path.parent() {
            fs_err::create_dir_all(dir)?;
        }
        let mut out = String::with_capacity(self.entries.len() * 120 + 32);
        out.push_str(HEADER);
        out.push('\n');
        let mut keys: Vec<&String> = self.entries.keys().collect();
        keys.sort();
        for k in keys {
            let (s, d) = &self.entries[k];
            // Paths with tabs or newlines are not memoized (rare; hashed each time).
            if k.contains(['\t', '\n']) {
                continue;
            }
            out.push_str(&format!(
                "{k}\t{}\t{}\t{}\t{}\t{}\t{}\n",
                s.size,
                s.mtime_ns,
                s.ctime_ns,
                s.ino,
                s.dev,
                d.hex()
            ));
        }
        let mut f = AtomicFile::create_in(&self.path, self.tmp.clone())?;
        io::Write::write_all(&mut f, out.as_bytes())?;
        f.commit()
    }
}

fn parse_line(line: &str) -> Option<(String, (FileStat, Digest))> {
    let mut f = line.split('\t');
    let path = f.next()?.to_string();
    let stat = FileStat {
        size: f.next()?.parse().ok()?,
        mtime_ns: f.next()?.parse().ok()?,
        ctime_ns: f.next()?.parse().ok()?,
        ino: f.next()?.parse().ok()?,
        dev: f.next()?.parse().ok()?,
    };
    let digest = Digest::from_hex(f.next()?).ok()?;
    Some((path, (stat, digest)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_racy_entries() {
        let d = tempfile::tempdir().unwrap();
        let store = Store::open(&d.path().join("s")).unwrap();
        let ctx = d.path().join("ctx");
        let mut m = StatMemo::load(&store, &ctx);
        let old = FileStat {
            size: 3,
            mtime_ns: 1_000,
            ctime_ns: 1_000,
            ino: 7,
            dev: 1,
        };
        let fresh = FileStat {
            mtime_ns: i64::MAX - 1,
            ..old
        };
        m.put("a".into(), old, Digest::of(b"a"));
        m.put("b".into(), fresh, Digest::of(b"b"));
        m.save().unwrap();
        let m = StatMemo::load(&store, &ctx);
        assert_eq!(m.get("a", &old), Some(Digest::of(b"a")));
        assert_eq!(m.get("a", &FileStat { size: 4, ..old }), None);
        assert_eq!(
            m.get("b", &fresh),
            None,
            "a file newer than the memo is racy"
        );
        assert_eq!(m.get("c", &old), None);
    }
}
