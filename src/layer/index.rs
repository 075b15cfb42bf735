//! Listing layers without extracting them: the metadata of every entry, merged
//! across a stack of layers with whiteouts applied, and single-file lookups.
//!
//! COPY needs to know what the filesystem below already has (parent directories
//! keep their mode and owner; `--chown=name` reads `/etc/passwd`), and reading
//! headers is far cheaper than materializing a root filesystem.

use std::collections::BTreeMap;
use std::io::Read;

use super::{Error, LayerPath, OPAQUE_WHITEOUT, Result, WHITEOUT_PREFIX, sparse};

/// The type of an indexed entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// Directory.
    Dir,
    /// Regular file.
    File,
    /// Symbolic link with its target (bytes, verbatim).
    Symlink(Vec<u8>),
    /// Hard link to another path.
    Hardlink(LayerPath),
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
    /// Size of a regular file's content (its logical size when sparse).
    pub size: u64,
}

/// One record of a layer listing.
#[derive(Debug, Clone)]
pub enum Record {
    /// An entry at a path.
    Entry(LayerPath, Meta),
    /// `.wh.NAME`: deletes the path from lower layers.
    Whiteout(LayerPath),
    /// `.wh..wh..opq`: hides everything under the directory from lower layers.
    Opaque(LayerPath),
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
        let mut entry = entry.map_err(read_err)?;
        let (name, layout) = sparse::name_and_layout(&mut entry).map_err(read_err)?;
        let path = LayerPath::clean(&name);
        if path.is_empty() {
            continue;
        }
        let (parent, base) = path.split();
        let parent = LayerPath::from(parent);
        if base == OPAQUE_WHITEOUT.as_bytes() {
            out.push(Record::Opaque(parent));
            continue;
        }
        if let Some(name) = base.strip_prefix(WHITEOUT_PREFIX.as_bytes()) {
            out.push(Record::Whiteout(parent.join(name)));
            continue;
        }
        let link = entry
            .link_name_bytes()
            .map(|b| b.into_owned())
            .unwrap_or_default();
        let h = entry.header();
        let kind = match h.entry_type() {
            ::tar::EntryType::Directory => Kind::Dir,
            ::tar::EntryType::Regular
            | ::tar::EntryType::Continuous
            | ::tar::EntryType::GNUSparse => Kind::File,
            ::tar::EntryType::Symlink => Kind::Symlink(link),
            ::tar::EntryType::Link => Kind::Hardlink(LayerPath::clean(&link)),
            _ => Kind::Other,
        };
        let size = match (&kind, &layout) {
            (Kind::File, Some(l)) => l.real_size,
            (Kind::File, None) => logical_size(&entry).map_err(read_err)?,
            _ => 0,
        };
        let meta = Meta {
            kind,
            mode: h.mode().map_err(read_err)? & 0o7777,
            uid: h.uid().map_err(read_err)?,
            gid: h.gid().map_err(read_err)?,
            mtime: h.mtime().map_err(read_err)?,
            size,
        };
        out.push(Record::Entry(path, meta));
    }
    Ok(out)
}

/// A regular file's content size: for the old GNU sparse type the real
/// size from its header, else the stored size.
fn logical_size<R: Read>(entry: &::tar::Entry<'_, R>) -> std::io::Result<u64> {
    let h = entry.header();
    if h.entry_type().is_gnu_sparse()
        && let Some(gnu) = h.as_gnu()
    {
        return gnu.real_size();
    }
    Ok(entry.size())
}

/// The merged view of a stack of layers: what exists, and its metadata.
#[derive(Debug, Default, Clone)]
pub struct Merged {
    entries: BTreeMap<LayerPath, Meta>,
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

    fn remove_tree(&mut self, path: &LayerPath, including_self: bool) {
        if including_self {
            self.entries.remove(path);
        }
        // Descendants sort together right after `path/` (not after `path`:
        // `a-b` sorts between `a` and `a/x`).
        let prefix = if path.is_empty() {
            Vec::new()
        } else {
            let mut p = path.as_bytes().to_vec();
            p.push(b'/');
            p
        };
        let doomed: Vec<LayerPath> = self
            .entries
            .range(LayerPath::from(&prefix[..])..)
            .take_while(|(k, _)| k.as_bytes().starts_with(&prefix))
            .map(|(k, _)| k.clone())
            .collect();
        for k in doomed {
            self.entries.remove(&k);
        }
    }

    /// Removes the entry at `path` and returns it.
    pub fn take(&mut self, path: &LayerPath) -> Option<Meta> {
        self.entries.remove(path)
    }

    /// The entry at `path`, without following symlinks.
    pub fn get(&self, path: &LayerPath) -> Option<&Meta> {
        self.entries.get(path)
    }

    /// Resolves symlinks in `path` the way the kernel would inside a root
    /// (absolute targets are relative to the root, `..` stops at the root),
    /// returning the resolved path. Gives up after 40 links, as the kernel
    /// does (ELOOP), returning what it resolved so far.
    pub fn resolve(&self, path: &LayerPath) -> LayerPath {
        let mut todo: Vec<Vec<u8>> = path
            .as_bytes()
            .split(|&b| b == b'/')
            .filter(|c| !c.is_empty())
            .rev()
            .map(<[u8]>::to_vec)
            .collect();
        let mut done = LayerPath::root();
        let mut links = 0;
        while let Some(c) = todo.pop() {
            match c.as_slice() {
                b"." => continue,
                b".." => {
                    done = done.parent().unwrap_or_default();
                    continue;
                }
                _ => {}
            }
            let next = done.join(&c);
            if let Some(Meta {
                kind: Kind::Symlink(target),
                ..
            }) = self.entries.get(&next)
            {
                links += 1;
                if links > 40 {
                    return next;
                }
                if target.starts_with(b"/") {
                    done = LayerPath::root();
                }
                todo.extend(
                    target
                        .split(|&b| b == b'/')
                        .filter(|c| !c.is_empty())
                        .rev()
                        .map(<[u8]>::to_vec),
                );
            } else {
                done = next;
            }
        }
        done
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
pub fn find_file<R: Read>(layer: R, path: &LayerPath, limit: u64, what: &str) -> Result<Lookup> {
    let read_err = |source| Error::Read {
        what: what.to_string(),
        source,
    };
    let (parent, base) = path.split();
    let mut wh = WHITEOUT_PREFIX.as_bytes().to_vec();
    wh.extend_from_slice(base);
    let whiteout = LayerPath::from(parent).join(&wh);
    let mut result = Lookup::Absent;
    let mut archive = ::tar::Archive::new(layer);
    for entry in archive.entries().map_err(read_err)? {
        let mut entry = entry.map_err(read_err)?;
        let (name, layout) = sparse::name_and_layout(&mut entry).map_err(read_err)?;
        let p = LayerPath::clean(&name);
        if p == *path {
            let ty = entry.header().entry_type();
            if ty.is_file() || ty.is_gnu_sparse() {
                let stored = entry.size();
                let mut buf = Vec::new();
                match layout {
                    Some(l) => sparse::SparseReader::new(&mut entry, l, stored)
                        .and_then(|r| r.take(limit).read_to_end(&mut buf)),
                    None => (&mut entry).take(limit).read_to_end(&mut buf),
                }
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

fn is_opaque_parent(entry: &LayerPath, path: &LayerPath) -> bool {
    let (dir, base) = entry.split();
    base == OPAQUE_WHITEOUT.as_bytes() && path.is_within(&LayerPath::from(dir))
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
            size: 0,
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
        let get = |p: &str| m.get(&LayerPath::from(p));
        assert!(get("a").is_some());
        assert!(get("a/x").is_none());
        assert!(get("a/z").is_some());
        assert!(get("b").is_none());
        assert!(get("b/y").is_none());
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
        assert_eq!(m.resolve(&"lib/x".into()), "usr/lib/x");
        assert_eq!(m.resolve(&"up/usr".into()), "usr");
    }
}
