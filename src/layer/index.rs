//! Listing layers without extracting them: the metadata of every entry, merged
//! across a stack of layers with whiteouts applied, and single-file lookups.
//!
//! COPY needs to know what the filesystem below already has (parent directories
//! keep their mode and owner; `--chown=name` reads `/etc/passwd`), and reading
//! headers is far cheaper than materializing a root filesystem.

use std::collections::BTreeMap;
use std::io::Read;

use super::extract::clean_entry_path;
use super::{Error, OPAQUE_WHITEOUT, Result, WHITEOUT_PREFIX};

/// The type of an indexed entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// Directory.
    Dir,
    /// Regular file.
    File,
    /// Symbolic link with its target.
    Symlink(String),
    /// Hard link to another path.
    Hardlink(String),
    /// Device, fifo or anything else.
    Other,
}

/// Metadata of one entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Meta {
    /// What it is.
    pub kind: Kind,
    /// Permission bits.
    pub mode: u32,
    /// Owner.
    pub uid: u64,
    /// Group.
    pub gid: u64,
    /// Modification time.
    pub mtime: u64,
}

/// One record of a layer listing.
#[derive(Debug, Clone)]
pub enum Record {
    /// An entry at a path.
    Entry(String, Meta),
    /// `.wh.NAME`: deletes the path from lower layers.
    Whiteout(String),
    /// `.wh..wh..opq`: hides everything under the directory from lower layers.
    Opaque(String),
}

/// Lists an uncompressed layer stream.
///
/// # Errors
/// An unreadable stream.
pub fn list<R: Read>(layer: R, what: &str) -> Result<Vec<Record>> {
    let read_err = |source| Error::Read {
        what: what.to_string(),
        source,
    };
    let mut out = Vec::new();
    let mut archive = ::tar::Archive::new(layer);
    for entry in archive.entries().map_err(read_err)? {
        let entry = entry.map_err(read_err)?;
        let path = clean_entry_path(&entry.path_bytes());
        if path.is_empty() {
            continue;
        }
        let (parent, base) = match path.rfind('/') {
            Some(i) => (&path[..i], &path[i + 1..]),
            None => ("", path.as_str()),
        };
        if base == OPAQUE_WHITEOUT {
            out.push(Record::Opaque(parent.to_string()));
            continue;
        }
        if let Some(name) = base.strip_prefix(WHITEOUT_PREFIX) {
            let victim = if parent.is_empty() {
                name.to_string()
            } else {
                format!("{parent}/{name}")
            };
            out.push(Record::Whiteout(victim));
            continue;
        }
        let h = entry.header();
        let link = || {
            entry
                .link_name_bytes()
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .unwrap_or_default()
        };
        let kind = match h.entry_type() {
            ::tar::EntryType::Directory => Kind::Dir,
            ::tar::EntryType::Regular | ::tar::EntryType::Continuous => Kind::File,
            ::tar::EntryType::Symlink => Kind::Symlink(link()),
            ::tar::EntryType::Link => Kind::Hardlink(clean_entry_path(link().as_bytes())),
            _ => Kind::Other,
        };
        let meta = Meta {
            kind,
            mode: h.mode().map_err(read_err)? & 0o7777,
            uid: h.uid().map_err(read_err)?,
            gid: h.gid().map_err(read_err)?,
            mtime: h.mtime().map_err(read_err)?,
        };
        out.push(Record::Entry(path, meta));
    }
    Ok(out)
}

/// The merged view of a stack of layers: what exists, and its metadata.
#[derive(Debug, Default, Clone)]
pub struct Merged {
    entries: BTreeMap<String, Meta>,
}

impl Merged {
    /// An empty filesystem.
    pub fn new() -> Self {
        Merged::default()
    }

    /// Applies one layer's listing on top: its whiteouts first (they only hide
    /// lower entries), then its entries.
    pub fn apply(&mut self, records: &[Record]) {
        for r in records {
            match r {
                Record::Whiteout(p) => self.remove_tree(p, true),
                Record::Opaque(dir) => self.remove_tree(dir, false),
                Record::Entry(..) => {}
            }
        }
        for r in records {
            if let Record::Entry(path, meta) = r {
                if meta.kind != Kind::Dir {
                    // A non-directory replaces a whole subtree.
                    self.remove_tree(path, false);
                }
                self.entries.insert(path.clone(), meta.clone());
            }
        }
    }

    fn remove_tree(&mut self, path: &str, including_self: bool) {
        if including_self {
            self.entries.remove(path);
        }
        let prefix = if path.is_empty() {
            String::new()
        } else {
            format!("{path}/")
        };
        let doomed: Vec<String> = self
            .entries
            .range(prefix.clone()..)
            .take_while(|(k, _)| k.starts_with(&prefix))
            .map(|(k, _)| k.clone())
            .collect();
        for k in doomed {
            self.entries.remove(&k);
        }
    }

    /// The entry at `path` (relative, cleaned), without following symlinks.
    pub fn get(&self, path: &str) -> Option<&Meta> {
        self.entries.get(path)
    }

    /// Resolves symlinks in the parent components of `path` the way the kernel
    /// would inside a root (absolute targets are relative to the root, `..` stops
    /// at the root), returning the resolved path. Gives up after 40 links.
    pub fn resolve(&self, path: &str) -> String {
        let mut todo: Vec<String> = path
            .split('/')
            .filter(|c| !c.is_empty())
            .rev()
            .map(str::to_string)
            .collect();
        let mut done: Vec<String> = Vec::new();
        let mut links = 0;
        while let Some(c) = todo.pop() {
            match c.as_str() {
                "." => continue,
                ".." => {
                    done.pop();
                    continue;
                }
                _ => {}
            }
            done.push(c);
            let cur = done.join("/");
            if let Some(Meta {
                kind: Kind::Symlink(target),
                ..
            }) = self.entries.get(&cur)
            {
                links += 1;
                if links > 40 {
                    break;
                }
                done.pop();
                if target.starts_with('/') {
                    done.clear();
                }
                todo.extend(
                    target
                        .split('/')
                        .filter(|c| !c.is_empty())
                        .rev()
                        .map(str::to_string),
                );
            }
        }
        done.join("/")
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True for an empty filesystem.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// What a lookup of one file in one layer found.
#[derive(Debug)]
pub enum Lookup {
    /// The file's bytes (only regular files are read).
    Found(Vec<u8>),
    /// The layer deletes the path (whiteout or opaque parent): stop looking lower.
    Deleted,
    /// The layer does not mention the path.
    Absent,
}

/// Looks for the regular file `path` in one uncompressed layer, reading at most
/// `limit` bytes of it (for small files such as `/etc/passwd`).
///
/// # Errors
/// An unreadable stream.
pub fn find_file<R: Read>(layer: R, path: &str, limit: u64, what: &str) -> Result<Lookup> {
    let read_err = |source| Error::Read {
        what: what.to_string(),
        source,
    };
    let (parent, base) = match path.rfind('/') {
        Some(i) => (&path[..i], &path[i + 1..]),
        None => ("", path),
    };
    let whiteout = if parent.is_empty() {
        format!("{WHITEOUT_PREFIX}{base}")
    } else {
        format!("{parent}/{WHITEOUT_PREFIX}{base}")
    };
    let mut result = Lookup::Absent;
    let mut archive = ::tar::Archive::new(layer);
    for entry in archive.entries().map_err(read_err)? {
        let mut entry = entry.map_err(read_err)?;
        let p = clean_entry_path(&entry.path_bytes());
        if p == path {
            if entry.header().entry_type().is_file() {
                let mut buf = Vec::new();
                (&mut entry)
                    .take(limit)
                    .read_to_end(&mut buf)
                    .map_err(read_err)?;
                return Ok(Lookup::Found(buf));
            }
            return Ok(Lookup::Deleted);
        }
        if p == whiteout || is_opaque_parent(&p, path) {
            result = Lookup::Deleted;
        }
    }
    Ok(result)
}

fn is_opaque_parent(entry: &str, path: &str) -> bool {
    entry
        .strip_suffix(OPAQUE_WHITEOUT)
        .is_some_and(|dir| path.starts_with(dir) && (dir.is_empty() || dir.ends_with('/')))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(kind: Kind) -> Meta {
        Meta {
            kind,
            mode: 0o755,
            uid: 0,
            gid: 0,
            mtime: 0,
        }
    }

    #[test]
    fn merge_applies_whiteouts_to_lower_only() {
        let mut m = Merged::new();
        m.apply(&[
            Record::Entry("a".into(), meta(Kind::Dir)),
            Record::Entry("a/x".into(), meta(Kind::File)),
            Record::Entry("b".into(), meta(Kind::Dir)),
            Record::Entry("b/y".into(), meta(Kind::File)),
        ]);
        m.apply(&[
            Record::Entry("a/z".into(), meta(Kind::File)),
            Record::Opaque("a".into()),
            Record::Whiteout("b".into()),
        ]);
        assert!(m.get("a").is_some());
        assert!(m.get("a/x").is_none());
        assert!(m.get("a/z").is_some());
        assert!(m.get("b").is_none());
        assert!(m.get("b/y").is_none());
    }

    #[test]
    fn resolve_follows_symlinks_confined() {
        let mut m = Merged::new();
        m.apply(&[
            Record::Entry("usr".into(), meta(Kind::Dir)),
            Record::Entry("usr/lib".into(), meta(Kind::Dir)),
            Record::Entry("lib".into(), meta(Kind::Symlink("usr/lib".into()))),
            Record::Entry("up".into(), meta(Kind::Symlink("../../..".into()))),
        ]);
        assert_eq!(m.resolve("lib/x"), "usr/lib/x");
        assert_eq!(m.resolve("up/usr"), "usr");
    }
}
