//! Layers: the deterministic tar diff writer, compression, reading and
//! root-confined extraction.
//!
//! Owns the byte format of a layer (DESIGN.md "Formats"): PAX tar, entries in byte
//! order of path with parents first, numeric ids, empty user/group names, no
//! atime/ctime, hard links kept, xattrs kept; and the streaming pipeline that
//! computes `diff_id` (uncompressed) and the blob digest (compressed) as the bytes
//! pass, so a layer is never held in memory. It does not know about the store:
//! callers hand it a sink and get digests back.

mod compress;
pub mod extract;
pub mod index;
mod path;
mod pgzip;
mod sparse;
mod tar;

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::path::PathBuf;
use std::sync::Arc;

pub use compress::{Compression, Decompressor, detect_compression};
pub use path::LayerPath;

use crate::confine::Root;

use crate::digest::{Digest, HashingWriter};

/// Errors writing or reading a layer.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A source file could not be opened or read.
    #[error("reading {path}")]
    ReadSource {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// A source file changed size between listing and archiving.
    #[error("{path} changed while it was being archived (expected {expected} bytes, read {got})")]
    SourceChanged {
        /// The file.
        path: PathBuf,
        /// Size when listed.
        expected: u64,
        /// Size when read.
        got: u64,
    },
    /// The sink failed.
    #[error("writing layer")]
    Write(#[source] io::Error),
    /// Two entries of one layer have the same path with different content.
    #[error("layer has two different entries for `{0}`")]
    Duplicate(String),
    /// A layer stream could not be decoded.
    #[error("reading layer {what}")]
    Read {
        /// Which layer or entry.
        what: String,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// Extraction refused an entry.
    #[error(transparent)]
    Extract(#[from] extract::ExtractError),
}

/// Result alias for this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What a layer entry is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryKind {
    /// A directory.
    Dir,
    /// A regular file whose bytes are read from `source` at write time.
    File {
        /// Where the bytes are.
        source: FileSource,
        /// Size when listed; a mismatch at write time is an error.
        size: u64,
    },
    /// A symbolic link to `target` (kept verbatim).
    Symlink(PathBuf),
    /// A hard link to another entry of the same layer.
    Hardlink(LayerPath),
    /// A character device.
    Char {
        /// Major number.
        major: u32,
        /// Minor number.
        minor: u32,
    },
    /// A block device.
    Block {
        /// Major number.
        major: u32,
        /// Minor number.
        minor: u32,
    },
    /// A named pipe.
    Fifo,
}

/// Where the bytes of a file entry come from. Files of an image, a context
/// or an archive are only ever read through the [`Root`] they live in.
#[derive(Debug, Clone)]
pub enum FileSource {
    /// No bytes (whiteouts).
    Empty,
    /// Bytes the builder holds (a heredoc).
    Bytes(Arc<[u8]>),
    /// A file inside a root, opened through it when the layer is written.
    InRoot {
        /// The root the path is resolved in.
        root: Arc<Root>,
        /// The path inside it.
        path: LayerPath,
        /// Follow a symlink in the last component (inside the root): a
        /// COPY source named directly is followed, one found while walking
        /// a directory is read as the file it was or not at all.
        follow: bool,
    },
}

impl FileSource {
    /// A file inside `root`.
    pub fn in_root(root: &Arc<Root>, path: LayerPath, follow: bool) -> FileSource {
        FileSource::InRoot {
            root: Arc::clone(root),
            path,
            follow,
        }
    }

    /// Where the bytes are, for messages.
    pub fn describe(&self) -> PathBuf {
        match self {
            FileSource::Empty => PathBuf::from("(empty)"),
            FileSource::Bytes(_) => PathBuf::from("(inline content)"),
            FileSource::InRoot { root, path, .. } => root.display_path(path.as_path()),
        }
    }

    /// Opens the bytes for reading.
    ///
    /// # Errors
    /// The file cannot be opened inside its root, or is not a regular file.
    pub fn open(&self) -> io::Result<Box<dyn Read + '_>> {
        Ok(match self {
            FileSource::Empty => Box::new(io::empty()),
            FileSource::Bytes(b) => Box::new(&b[..]),
            FileSource::InRoot { root, path, follow } => Box::new(if *follow {
                root.open_file(path.as_path())?
            } else {
                root.open_file_nofollow(path.as_path())?
            }),
        })
    }
}

impl PartialEq for FileSource {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (FileSource::Empty, FileSource::Empty) => true,
            (FileSource::Bytes(a), FileSource::Bytes(b)) => a == b,
            (
                FileSource::InRoot {
                    root: ra,
                    path: pa,
                    follow: fa,
                },
                FileSource::InRoot {
                    root: rb,
                    path: pb,
                    follow: fb,
                },
            ) => Arc::ptr_eq(ra, rb) && pa == pb && fa == fb,
            _ => false,
        }
    }
}

impl Eq for FileSource {}

/// One entry of a layer to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Path inside the image, cleaned. A whiteout is a regular empty file
    /// named `.wh.NAME`.
    pub path: LayerPath,
    /// What it is.
    pub kind: EntryKind,
    /// Permission bits including setuid/setgid/sticky (`0o7777`).
    pub mode: u32,
    /// Numeric owner.
    pub uid: u64,
    /// Numeric group.
    pub gid: u64,
    /// Modification time, seconds since the epoch (already clamped by the caller).
    pub mtime: u64,
    /// Extended attributes.
    pub xattrs: Vec<(String, Vec<u8>)>,
    /// `(device, inode)` of the source when it has more than one link: entries
    /// sharing it become hard links to the first of them in path order.
    pub link_key: Option<(u64, u64)>,
}

impl Entry {
    /// A directory entry with the given metadata.
    pub fn dir(path: impl Into<LayerPath>, mode: u32, uid: u64, gid: u64, mtime: u64) -> Self {
        Entry {
            path: path.into(),
            kind: EntryKind::Dir,
            mode,
            uid,
            gid,
            mtime,
            xattrs: Vec::new(),
            link_key: None,
        }
    }
}

/// Digests of a written layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LayerDigests {
    /// sha256 of the uncompressed tar.
    pub diff_id: Digest,
    /// sha256 of the blob as stored (compressed).
    pub digest: Digest,
    /// Size of the blob in bytes.
    pub size: u64,
    /// Size of the uncompressed tar.
    pub uncompressed_size: u64,
}

/// Puts entries in layer order: by the bytes of their path (so parents come before
/// children), later duplicates replacing earlier ones (a later COPY source wins, as
/// in docker), and turns repeated `link_key`s into hard links.
///
/// # Errors
/// Never at present; reserved for conflicting duplicates.
pub fn normalize(mut entries: Vec<Entry>) -> Result<Vec<Entry>> {
    // Stable sort keeps insertion order among equal paths; keep the last one.
    entries.sort_by(|a, b| a.path.cmp(&b.path));
    // In place (a second vector would double the peak for 50,000 files):
    // `dedup_by` drops `later` and keeps `kept`, so move `later` into it first.
    entries.dedup_by(|later, kept| {
        let same = later.path == kept.path;
        if same {
            std::mem::swap(later, kept);
        }
        same
    });
    let mut out = entries;
    let mut first_with_key: HashMap<(u64, u64), LayerPath> = HashMap::new();
    for e in &mut out {
        let Some(key) = e.link_key else { continue };
        if !matches!(e.kind, EntryKind::File { .. }) {
            continue;
        }
        match first_with_key.get(&key) {
            Some(target) => e.kind = EntryKind::Hardlink(target.clone()),
            None => {
                first_with_key.insert(key, e.path.clone());
            }
        }
    }
    links_to_first(&mut out);
    Ok(out)
}

/// Makes every hard link of the layer point at the first path of its group
/// in layer order, that path carrying the file: a tar reader creates a hard
/// link from a path it has already written, so a link before its target
/// (`ADD x.tar` whose `lib-hard` links to `lib`, sorted before it) cannot be
/// extracted. The first path in order holds the content, as BuildKit's
/// differ writes it. A link whose target is not in the layer is left alone.
fn links_to_first(entries: &mut [Entry]) {
    let index_of =
        |entries: &[Entry], p: &LayerPath| entries.binary_search_by(|e| e.path.cmp(p)).ok();
    // Group by the file each link finally reaches (a chain of links is
    // followed at most `len` steps, so a cycle ends).
    let mut groups: HashMap<usize, Vec<usize>> = HashMap::new();
    for i in 0..entries.len() {
        let EntryKind::Hardlink(t) = &entries[i].kind else {
            continue;
        };
        let mut at = index_of(entries, t);
        for _ in 0..entries.len() {
            match at.map(|j| &entries[j].kind) {
                Some(EntryKind::Hardlink(next)) => at = index_of(entries, next),
                _ => break,
            }
        }
        if let Some(j) = at.filter(|&j| matches!(entries[j].kind, EntryKind::File { .. })) {
            groups.entry(j).or_default().push(i);
        }
    }
    for (file, links) in groups {
        let first = links.iter().copied().fold(file, usize::min);
        let target = entries[first].path.clone();
        // Hard links share one inode: every path of the group gets the
        // file's metadata, as a differ of a real filesystem would see it,
        // and the content moves to the first path in layer order.
        let (mode, uid, gid, mtime, xattrs) = {
            let f = &entries[file];
            (f.mode, f.uid, f.gid, f.mtime, f.xattrs.clone())
        };
        if first != file {
            let kind =
                std::mem::replace(&mut entries[file].kind, EntryKind::Hardlink(target.clone()));
            entries[first].kind = kind;
        }
        for &i in links.iter().chain([&file]) {
            let e = &mut entries[i];
            e.mode = mode;
            e.uid = uid;
            e.gid = gid;
            e.mtime = mtime;
            e.xattrs.clone_from(&xattrs);
        }
        for i in links.into_iter().chain([file]).filter(|&i| i != first) {
            entries[i].kind = EntryKind::Hardlink(target.clone());
        }
    }
}

/// Streams a layer blob compressed as `from` into `sink` compressed as
/// `to` (`-o …,force-compression=true`), returning the sink and the
/// digests; the uncompressed stream, whose digest is the diff_id, is the
/// same bytes.
///
/// # Errors
/// A blob that does not decompress, or a failing sink.
pub fn recompress<R: Read, W: Write>(
    blob: R,
    from: Compression,
    to: Compression,
    sink: W,
    pool: Option<&rayon::ThreadPool>,
) -> Result<(W, LayerDigests)> {
    let mut plain = Decompressor::new(blob, from).map_err(Error::Write)?;
    let encoder = to
        .encoder(HashingWriter::new(sink), pool)
        .map_err(Error::Write)?;
    let mut tar = HashingWriter::new(encoder);
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = plain.read(&mut buf).map_err(|source| Error::Read {
            what: "blob".into(),
            source,
        })?;
        if n == 0 {
            break;
        }
        tar.write_all(&buf[..n]).map_err(Error::Write)?;
    }
    finish_layer(tar)
}

/// Ends a layer stream: the uncompressed hasher over the encoder over the
/// compressed hasher over the sink.
fn finish_layer<W: Write>(
    tar: HashingWriter<compress::Encoder<'_, HashingWriter<W>>>,
) -> Result<(W, LayerDigests)> {
    let (encoder, diff_id, uncompressed_size) = tar.finish();
    let blob_hasher = encoder.finish().map_err(Error::Write)?;
    let (sink, digest, size) = blob_hasher.finish();
    Ok((
        sink,
        LayerDigests {
            diff_id,
            digest,
            size,
            uncompressed_size,
        },
    ))
}

/// Writes `entries` (already [`normalize`]d) as a layer into `sink`, compressed
/// with `compression` (gzip blocks on `pool` when given; the bytes are the same
/// either way), and returns the sink and the digests. `on_bytes` is told how
/// many content bytes have been archived so far, for progress.
///
/// # Errors
/// A source that cannot be read or changed size, or a failing sink.
pub fn write<W: Write>(
    entries: &[Entry],
    compression: Compression,
    sink: W,
    pool: Option<&rayon::ThreadPool>,
    on_bytes: &mut dyn FnMut(u64),
) -> Result<(W, LayerDigests)> {
    let encoder = compression
        .encoder(HashingWriter::new(sink), pool)
        .map_err(Error::Write)?;
    let mut tar = tar::TarWriter::new(HashingWriter::new(encoder));
    let mut buf = vec![0u8; 256 * 1024];
    let mut done = 0u64;
    for e in entries {
        write_entry(&mut tar, e, &mut buf, &mut done, on_bytes)?;
    }
    let tar_hasher = tar.finish().map_err(Error::Write)?;
    finish_layer(tar_hasher)
}

fn write_entry<W: Write>(
    tar: &mut tar::TarWriter<W>,
    e: &Entry,
    buf: &mut [u8],
    done: &mut u64,
    on_bytes: &mut dyn FnMut(u64),
) -> Result<()> {
    let mut name = e.path.as_bytes().to_vec();
    let (flag, link, size, dev) = match &e.kind {
        EntryKind::Dir => {
            name.push(b'/');
            (tar::TypeFlag::Dir, Vec::new(), 0, (0, 0))
        }
        EntryKind::File { size, .. } => (tar::TypeFlag::File, Vec::new(), *size, (0, 0)),
        EntryKind::Symlink(t) => (
            tar::TypeFlag::Symlink,
            t.as_os_str().as_encoded_bytes().to_vec(),
            0,
            (0, 0),
        ),
        EntryKind::Hardlink(t) => (tar::TypeFlag::Hardlink, t.as_bytes().to_vec(), 0, (0, 0)),
        EntryKind::Char { major, minor } => (tar::TypeFlag::Char, Vec::new(), 0, (*major, *minor)),
        EntryKind::Block { major, minor } => {
            (tar::TypeFlag::Block, Vec::new(), 0, (*major, *minor))
        }
        EntryKind::Fifo => (tar::TypeFlag::Fifo, Vec::new(), 0, (0, 0)),
    };
    let mut xattrs = e.xattrs.clone();
    xattrs.sort();
    tar.header(&tar::Header {
        name: &name,
        link: &link,
        flag,
        mode: e.mode,
        uid: e.uid,
        gid: e.gid,
        size,
        mtime: e.mtime,
        dev_major: dev.0,
        dev_minor: dev.1,
        xattrs: &xattrs,
    })
    .map_err(Error::Write)?;
    if let EntryKind::File { source, size } = &e.kind {
        let read_err = |source_err| Error::ReadSource {
            path: source.describe(),
            source: source_err,
        };
        let mut f = source.open().map_err(read_err)?;
        let mut copied = 0u64;
        while copied < *size {
            let want = buf.len().min((*size - copied) as usize);
            let n = f.read(&mut buf[..want]).map_err(read_err)?;
            if n == 0 {
                break;
            }
            tar.data(&buf[..n]).map_err(Error::Write)?;
            copied += n as u64;
            *done += n as u64;
            on_bytes(*done);
        }
        // A file that grew is caught by reading one more byte.
        let grew = copied == *size && f.read(&mut buf[..1]).map_err(read_err)? > 0;
        if copied != *size || grew {
            return Err(Error::SourceChanged {
                path: source.describe(),
                expected: *size,
                got: copied + u64::from(grew),
            });
        }
        tar.pad(*size).map_err(Error::Write)?;
    }
    Ok(())
}

/// The whiteout name for deleting `name` (OCI image spec, "Whiteouts").
pub const WHITEOUT_PREFIX: &str = ".wh.";
/// The marker entry that makes a directory opaque.
pub const OPAQUE_WHITEOUT: &str = ".wh..wh..opq";

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &str, src: &std::path::Path) -> Entry {
        let root = Arc::new(Root::open(src.parent().unwrap()).unwrap());
        let name = src.file_name().unwrap().to_str().unwrap();
        Entry {
            path: path.into(),
            kind: EntryKind::File {
                source: FileSource::in_root(&root, name.into(), false),
                size: fs_err::metadata(src).unwrap().len(),
            },
            mode: 0o644,
            uid: 0,
            gid: 0,
            mtime: 0,
            xattrs: vec![],
            link_key: None,
        }
    }

    #[test]
    fn order_is_bytewise_with_parents_first() {
        let entries = vec![
            Entry::dir("a/b", 0o755, 0, 0, 0),
            Entry::dir("a-b", 0o755, 0, 0, 0),
            Entry::dir("a", 0o755, 0, 0, 0),
        ];
        let got: Vec<_> = normalize(entries)
            .unwrap()
            .into_iter()
            .map(|e| e.path)
            .collect();
        assert_eq!(got, ["a", "a-b", "a/b"]);
    }

    #[test]
    fn later_duplicate_wins_and_links_become_hardlinks() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        fs_err::write(&p, "x").unwrap();
        let mut a = file("x", &p);
        a.link_key = Some((1, 2));
        let mut b = file("y", &p);
        b.link_key = Some((1, 2));
        let mut dup = Entry::dir("z", 0o700, 0, 0, 0);
        dup.mode = 0o700;
        let got = normalize(vec![b, Entry::dir("z", 0o755, 0, 0, 0), dup, a]).unwrap();
        assert_eq!(got[0].kind, got[0].kind.clone());
        assert!(matches!(got[0].kind, EntryKind::File { .. }));
        assert_eq!(got[1].kind, EntryKind::Hardlink("x".into()));
        assert_eq!(got[2].mode, 0o700);
    }

    #[test]
    fn a_link_sorted_before_its_target_takes_the_content() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        fs_err::write(&p, "x").unwrap();
        let mut lib = file("v/lib.txt", &p);
        lib.uid = 1000;
        let link = |name: &str, to: &str| Entry {
            kind: EntryKind::Hardlink(to.into()),
            mode: 0o644,
            ..Entry::dir(name, 0o644, 0, 0, 0)
        };
        let got = normalize(vec![
            lib,
            link("v/lib-hard.txt", "v/lib.txt"),
            // A chain: a link to a link.
            link("v/a-chain", "v/lib-hard.txt"),
            link("v/zz", "v/lib.txt"),
            // Outside the layer: left alone.
            link("v/lower", "usr/lib/x"),
        ])
        .unwrap();
        let by = |n: &str| got.iter().find(|e| e.path == n).unwrap();
        assert!(matches!(by("v/a-chain").kind, EntryKind::File { .. }));
        assert_eq!(by("v/a-chain").uid, 1000);
        for n in ["v/lib-hard.txt", "v/lib.txt", "v/zz"] {
            assert_eq!(by(n).kind, EntryKind::Hardlink("v/a-chain".into()), "{n}");
            // One inode, one owner: the links carry the file's metadata.
            assert_eq!((by(n).uid, by(n).mode), (1000, by("v/a-chain").mode), "{n}");
        }
        assert_eq!(by("v/lower").kind, EntryKind::Hardlink("usr/lib/x".into()));
    }

    #[test]
    fn digests_match_the_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        fs_err::write(&p, "hello").unwrap();
        let entries = normalize(vec![Entry::dir("d", 0o755, 0, 0, 0), file("d/f", &p)]).unwrap();
        for c in [Compression::Gzip, Compression::Zstd, Compression::None] {
            let (blob, d) = write(&entries, c, Vec::new(), None, &mut |_| {}).unwrap();
            assert_eq!(d.digest, Digest::of(&blob));
            assert_eq!(d.size, blob.len() as u64);
            let mut tar_bytes = Vec::new();
            Decompressor::new(&blob[..], c)
                .unwrap()
                .read_to_end(&mut tar_bytes)
                .unwrap();
            assert_eq!(d.diff_id, Digest::of(&tar_bytes));
            let names: Vec<_> = ::tar::Archive::new(&tar_bytes[..])
                .entries()
                .unwrap()
                .map(|e| e.unwrap().path().unwrap().display().to_string())
                .collect();
            assert_eq!(names, ["d/", "d/f"]);
        }
    }

    #[test]
    fn a_file_that_changed_size_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        fs_err::write(&p, "hello").unwrap();
        let e = file("f", &p);
        fs_err::write(&p, "hello world").unwrap();
        let err = write(&[e], Compression::None, Vec::new(), None, &mut |_| {}).unwrap_err();
        assert!(matches!(err, Error::SourceChanged { .. }));
    }
}
