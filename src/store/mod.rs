//! The content store: blobs by digest, image records, tags, the build cache
//! index, and the lock that lets several imgbuild processes share one store.
//!
//! Layout under the store root:
//!
//! ```text
//! blobs/sha256/<hex>   layers, configs, manifests (immutable, verified on write)
//! images/<hex>         image ID (config digest) → its manifest and parent
//! tags/<name>          a tag (`docker.io/library/app:1.0`, `/` escaped) → image ID,
//!                      or `index <digest>`: a multi-platform image's index blob
//! cache/<hex>          a cache key → the image the step produced
//! snapshots/<hex>      extracted root filesystems, by chain ID (with
//!                      `<hex>.json`: the verified layers they came from)
//! layers/…             per-layer extractions for overlay (build::snapshot)
//! diffids/<hex>        what a layer blob decompresses to (verified digests)
//! memo/<hex>           stat memo per context directory (see [`memo`])
//! outputs/<hex>        what was last written to an output archive path
//! steps/<hex>          what each step of a build definition was last built
//!                      from, to say why a cache lookup missed
//! validators/<hex>     per URL ADD downloaded: its ETag, Last-Modified and
//!                      content blob (see [`validators`])
//! tmp/<id>/, <id>.lock one temporary directory per live process, held by
//!                      flock on its lock file (see [`scratch`])
//! lock                 flock: every command shares it, prune and repair
//!                      take it exclusively
//! ```
//!
//! The root and every directory in it are mode 0700 (tightened when an older
//! store is opened): extracted layers hold setuid files and device nodes
//! that no other user may reach.
//!
//! Every file is created through [`atomic`]: a reader sees all of it or none.
//! Blobs with the same digest have the same bytes, so concurrent writers of
//! one blob race harmlessly to the same rename. A [`Staging`] view holds new
//! blobs back until the caller has checked them (a layer against its
//! config's diff_id) and publishes them.

pub mod atomic;
pub mod gc;
pub mod memo;
mod scratch;
pub mod validators;

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use crate::digest::{Digest, HashingWriter};
use crate::platform::Platform;
use crate::reference::Reference;
pub use atomic::{AtomicFile, atomic_write};

/// Store failures; every variant names the file involved.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A filesystem operation failed.
    #[error("{action} {path}")]
    Io {
        /// What we were doing.
        action: &'static str,
        /// On which path.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// Bytes did not hash to the digest they were stored or announced under.
    #[error("blob {expected} is corrupt: its content hashes to {actual}")]
    DigestMismatch {
        /// The digest it should have.
        expected: Digest,
        /// The digest of the bytes.
        actual: Digest,
    },
    /// A blob the caller needs is not in the store.
    #[error("blob {0} is not in the store")]
    MissingBlob(Digest),
    /// A record file is not valid JSON of the expected shape.
    #[error("corrupt store record {path}")]
    BadRecord {
        /// The record file.
        path: PathBuf,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
    /// No image matches a name or ID.
    #[error("no such image: {0}")]
    NoSuchImage(String),
    /// An ID prefix matches several images.
    #[error("image ID prefix `{0}` is ambiguous")]
    Ambiguous(String),
    /// An image the store has, but not for the platform asked for.
    #[error("{image} has no image for {platform} in the store (it has: {available})")]
    NoSuchPlatform {
        /// The image as the user named it.
        image: String,
        /// The platform asked for.
        platform: String,
        /// The platforms the store has of it, for the message.
        available: String,
    },
    /// A layer of a media type imgbuild cannot decompress.
    #[error("unknown layer media type {0}")]
    UnknownMediaType(String),
}

/// Result alias for this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

fn io_err<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> Error + 'a {
    move |source| Error::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

/// What a tag names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TagTarget {
    /// One image, by ID.
    Image(Digest),
    /// A multi-platform image: an index blob.
    Index(Digest),
}

/// What the store knows of an image besides its blobs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRecord {
    /// Digest of the OCI manifest (in this store, always OCI media types).
    pub manifest: Digest,
    /// The image of the previous build step, for intermediate images.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<Digest>,
}

/// Where blobs the store lacks may come from: the layers of a registry
/// build cache (`--cache-from`), fetched only when something reads them.
pub trait BlobSource: Send + Sync {
    /// Whether `digest` can be fetched.
    fn has(&self, digest: &Digest) -> bool;
    /// Fetches `digest` into `store` (verified like any blob write).
    ///
    /// # Errors
    /// Why it could not, as text.
    fn fetch(&self, store: &Store, digest: &Digest) -> std::result::Result<(), String>;
}

/// Sees every byte of a blob as a [`Staging`] view writes it, to learn what
/// the blob's digest alone does not tell: what a layer decompresses to.
pub trait BlobTap: Send {
    /// The next bytes of the blob.
    fn write(&mut self, bytes: &[u8]);
    /// The end of the blob: the compression the bytes were in and the digest
    /// of what they decompress to, if they looked compressed and decompressed
    /// cleanly.
    fn finish(self: Box<Self>) -> Option<(String, Digest)>;
}

/// Makes a [`BlobTap`] for each blob written through a [`Staging`] view.
pub type TapMaker = dyn Fn() -> Box<dyn BlobTap> + Send + Sync;

/// A content store rooted at a directory.
#[derive(Clone)]
pub struct Store {
    root: PathBuf,
    source: Option<Arc<dyn BlobSource>>,
    scratch: Arc<scratch::Scratch>,
    staging: Option<Arc<Staging>>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("root", &self.root)
            .field("source", &self.source.is_some())
            .field("staging", &self.staging.is_some())
            .finish()
    }
}

/// A shared or exclusive hold on the store lock, released on drop.
#[derive(Debug)]
pub struct StoreLock {
    _file: File,
}

/// New blobs of a [`Store::staging`] view: in a directory of their own until
/// [`Store::publish`] moves them into `blobs/`; dropped (and removed) with
/// the view otherwise.
pub struct Staging {
    dir: PathBuf,
    blobs: Mutex<HashMap<Digest, Staged>>,
    tap: Arc<TapMaker>,
}

impl std::fmt::Debug for Staging {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Staging").field("dir", &self.dir).finish()
    }
}

#[derive(Debug, Clone)]
struct Staged {
    path: PathBuf,
    unpacked: Option<(String, Digest)>,
}

impl Drop for Staging {
    fn drop(&mut self) {
        scratch::remove_tree(&self.dir);
    }
}

/// Directories that exist in every store; `layers/` and `cache-mounts/` are
/// made on first use.
const DIRS: &[&str] = &[
    "blobs",
    "blobs/sha256",
    "images",
    "tags",
    "cache",
    "snapshots",
    "diffids",
    "sizes",
    "recompressed",
    "memo",
    "outputs",
    "steps",
    "validators",
    "tmp",
];

/// Directories tightened to 0700 when found more open (stores made by older
/// versions, with the umask's 0755).
const PRIVATE: &[&str] = &["layers", "layers/trusted", "layers/user", "cache-mounts"];

/// Creates `dir` (not its parents) with mode 0700, or makes an existing one
/// 0700.
pub(crate) fn private_dir(dir: &Path) -> io::Result<()> {
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => tighten(dir),
        Err(e) => Err(e),
    }
}

/// Makes `dir` 0700 if group or others have any access to it.
#[allow(clippy::disallowed_methods)] // its callers name the path already
fn tighten(dir: &Path) -> io::Result<()> {
    let meta = std::fs::symlink_metadata(dir)?;
    if !meta.is_dir() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "not a directory",
        ));
    }
    if meta.permissions().mode() & 0o077 != 0 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

impl Store {
    /// Opens (creating if needed) the store at `root`: every directory mode
    /// 0700 (an older, more open store is tightened), and what killed
    /// processes left in `tmp/` removed.
    ///
    /// # Errors
    /// When the directories cannot be created or made private.
    pub fn open(root: &Path) -> Result<Self> {
        // Absolute, because the sandbox names store paths after changing
        // directory (overlay options) and hands them to other processes.
        let root = std::path::absolute(root).map_err(io_err("resolving", root))?;
        let root = root.as_path();
        if !root.is_dir() {
            std::fs::DirBuilder::new()
                .mode(0o700)
                .recursive(true)
                .create(root)
                .map_err(io_err("creating", root))?;
        }
        tighten(root).map_err(io_err("making private", root))?;
        for d in DIRS {
            let p = root.join(d);
            private_dir(&p).map_err(io_err("creating", &p))?;
        }
        for d in PRIVATE {
            let p = root.join(d);
            if p.exists() {
                tighten(&p).map_err(io_err("making private", &p))?;
            }
        }
        let tmp = root.join("tmp");
        // Best effort: leftovers cost space, never correctness.
        let _ = scratch::reclaim(&tmp, false);
        Ok(Store {
            root: root.to_path_buf(),
            source: None,
            scratch: Arc::new(scratch::Scratch::new(tmp)),
            staging: None,
        })
    }

    /// This store, fetching blobs it lacks from `source` when read.
    pub fn with_source(mut self, source: Arc<dyn BlobSource>) -> Self {
        self.source = Some(source);
        self
    }

    /// A view of this store whose new blobs are held back (in this process's
    /// temporary directory) until [`Store::publish`]; each passes through a
    /// tap from `tap` as it is written. Reads see the store and the held
    /// blobs. Records (images, tags) are written to the store itself: write
    /// them only after publishing what they need.
    ///
    /// # Errors
    /// When the staging directory cannot be made.
    pub fn staging(&self, tap: Arc<TapMaker>) -> Result<Store> {
        let dir = self.tmp_path("staging");
        private_dir(&dir).map_err(io_err("creating", &dir))?;
        Ok(Store {
            staging: Some(Arc::new(Staging {
                dir,
                blobs: Mutex::new(HashMap::new()),
                tap,
            })),
            ..self.clone()
        })
    }

    /// Whether the blob is held back in this staging view (not yet published).
    pub fn is_staged(&self, digest: &Digest) -> bool {
        self.staged(digest).is_some()
    }

    fn staged(&self, digest: &Digest) -> Option<Staged> {
        let st = self.staging.as_ref()?;
        st.blobs.lock().ok()?.get(digest).cloned()
    }

    /// What a blob held back by this staging view decompressed to while it
    /// was written: its compression's name and the digest, if it looked
    /// compressed.
    pub fn staged_unpacked(&self, digest: &Digest) -> Option<(String, Digest)> {
        self.staged(digest)?.unpacked
    }

    /// Moves the held-back blobs among `digests` into the store (the others
    /// are already there, or are dropped with the view), with what they were
    /// seen to decompress to.
    ///
    /// # Errors
    /// When a blob cannot be moved.
    pub fn publish(&self, digests: &[Digest]) -> Result<()> {
        let dir = self.root.join("blobs/sha256");
        let mut moved = false;
        for d in digests {
            let Some(staged) = self.staged(d) else {
                continue;
            };
            let dest = self.blob_path_in_store(d);
            #[allow(clippy::disallowed_methods)] // the error names the path already
            File::open(&staged.path)
                .and_then(|f| f.sync_all())
                .map_err(io_err("syncing", &staged.path))?;
            #[allow(clippy::disallowed_methods)] // the error names the path already
            std::fs::rename(&staged.path, &dest).map_err(io_err("renaming", &dest))?;
            moved = true;
            if let Some(st) = &self.staging
                && let Ok(mut m) = st.blobs.lock()
            {
                m.remove(d);
            }
            if let Some((compression, diff_id)) = &staged.unpacked {
                self.put_diff_id(d, compression, diff_id)?;
            }
        }
        if moved {
            atomic::sync_dir(&dir).map_err(io_err("syncing", &dir))?;
        }
        Ok(())
    }

    /// Whether the blob is here, or can be fetched when read.
    pub fn can_read_blob(&self, digest: &Digest) -> bool {
        self.has_blob(digest) || self.source.as_ref().is_some_and(|s| s.has(digest))
    }

    /// The store root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    #[allow(clippy::disallowed_methods)] // the error names the path already
    fn lock_file(&self) -> Result<File> {
        let path = self.root.join("lock");
        std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&path)
            .map_err(io_err("opening", &path))
    }

    fn lock(&self, op: rustix::fs::FlockOperation) -> Result<StoreLock> {
        let path = self.root.join("lock");
        let file = self.lock_file()?;
        rustix::fs::flock(file.as_fd(), op)
            .map_err(io::Error::from)
            .map_err(io_err("locking", &path))?;
        Ok(StoreLock { _file: file })
    }

    /// Takes the lock shared: any number of readers and builds may hold it at
    /// once; a `prune` waits for all of them.
    ///
    /// # Errors
    /// When the lock file cannot be opened or locked.
    pub fn lock_shared(&self) -> Result<StoreLock> {
        self.lock(rustix::fs::FlockOperation::LockShared)
    }

    /// Takes the lock exclusively (prune, repair): waits for every reader.
    ///
    /// # Errors
    /// When the lock file cannot be opened or locked.
    pub fn lock_exclusive(&self) -> Result<StoreLock> {
        self.lock(rustix::fs::FlockOperation::LockExclusive)
    }

    /// Takes the lock exclusively if no one holds it; `None` when someone
    /// does (the caller may say so, then wait with [`Store::lock_exclusive`]).
    ///
    /// # Errors
    /// When the lock file cannot be opened or locked.
    pub fn try_lock_exclusive(&self) -> Result<Option<StoreLock>> {
        let path = self.root.join("lock");
        let file = self.lock_file()?;
        match rustix::fs::flock(
            file.as_fd(),
            rustix::fs::FlockOperation::NonBlockingLockExclusive,
        ) {
            Ok(()) => Ok(Some(StoreLock { _file: file })),
            Err(rustix::io::Errno::WOULDBLOCK) => Ok(None),
            Err(e) => Err(Error::Io {
                action: "locking",
                path,
                source: e.into(),
            }),
        }
    }

    // ---- blobs -----------------------------------------------------------

    /// Where the blob with `digest` lives (whether or not it exists): in a
    /// staging view, where it is held back if it is.
    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        match self.staged(digest) {
            Some(s) => s.path,
            None => self.blob_path_in_store(digest),
        }
    }

    fn blob_path_in_store(&self, digest: &Digest) -> PathBuf {
        self.root.join("blobs/sha256").join(digest.hex())
    }

    /// Whether the store (or this staging view) has the blob.
    pub fn has_blob(&self, digest: &Digest) -> bool {
        self.blob_path(digest).is_file()
    }

    /// Opens a blob for reading.
    ///
    /// # Errors
    /// [`Error::MissingBlob`] when absent.
    #[allow(clippy::disallowed_methods)] // the error names the path already
    pub fn open_blob(&self, digest: &Digest) -> Result<File> {
        let p = self.blob_path(digest);
        if let Some(src) = &self.source
            && !p.exists()
            && src.has(digest)
        {
            src.fetch(self, digest).map_err(|why| Error::Io {
                action: "fetching",
                path: p.clone(),
                source: io::Error::other(why),
            })?;
        }
        File::open(&p).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => Error::MissingBlob(*digest),
            _ => Error::Io {
                action: "opening",
                path: p.clone(),
                source: e,
            },
        })
    }

    /// Reads a small blob (config, manifest) whole and checks its digest.
    ///
    /// # Errors
    /// Missing, unreadable or corrupt blob.
    pub fn read_blob(&self, digest: &Digest) -> Result<Vec<u8>> {
        let mut bytes = Vec::new();
        let p = self.blob_path(digest);
        self.open_blob(digest)?
            .read_to_end(&mut bytes)
            .map_err(io_err("reading", &p))?;
        let actual = Digest::of(&bytes);
        if actual != *digest {
            return Err(Error::DigestMismatch {
                expected: *digest,
                actual,
            });
        }
        Ok(bytes)
    }

    /// Starts writing a blob of yet unknown digest (in a staging view: one
    /// that is held back, and seen by the view's tap).
    ///
    /// # Errors
    /// When the temporary file cannot be created.
    pub fn blob_writer(&self) -> Result<BlobWriter> {
        let tmp = self.tmp_path("blob");
        #[allow(clippy::disallowed_methods)] // the error names the path already
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io_err("creating", &tmp))?;
        Ok(BlobWriter {
            store: self.clone(),
            inner: Some(HashingWriter::new(io::BufWriter::with_capacity(
                1 << 20,
                file,
            ))),
            tap: self.staging.as_ref().map(|s| (s.tap)()),
            tmp,
        })
    }

    /// Stores `bytes` as a blob and returns its digest.
    ///
    /// # Errors
    /// Any I/O failure.
    pub fn put_blob(&self, bytes: &[u8]) -> Result<Digest> {
        let digest = Digest::of(bytes);
        if self.has_blob(&digest) {
            return Ok(digest);
        }
        let mut w = self.blob_writer()?;
        w.write_all(bytes)
            .map_err(io_err("writing", &self.root.join("tmp")))?;
        w.commit(Some(&digest))
    }

    /// Moves a finished file (on the store's filesystem, written by another
    /// process: a rootless sandbox that alone could read the layer's files)
    /// into the store as the blob `expected`, after checking its bytes.
    ///
    /// # Errors
    /// I/O failures, or [`Error::DigestMismatch`] (the file is removed then).
    pub fn adopt_blob(&self, path: &Path, expected: &Digest) -> Result<Digest> {
        let result = (|| {
            let actual = Digest::of_file(path).map_err(io_err("reading", path))?;
            if actual != *expected {
                return Err(Error::DigestMismatch {
                    expected: *expected,
                    actual,
                });
            }
            #[allow(clippy::disallowed_methods)] // the error names the path already
            File::open(path)
                .and_then(|f| f.sync_all())
                .map_err(io_err("syncing", path))?;
            let dest = self.blob_path_in_store(expected);
            #[allow(clippy::disallowed_methods)] // the error names the path already
            std::fs::rename(path, &dest).map_err(io_err("renaming", &dest))?;
            let dir = self.root.join("blobs/sha256");
            atomic::sync_dir(&dir).map_err(io_err("syncing", &dir))?;
            Ok(actual)
        })();
        if result.is_err() {
            let _ = fs_err::remove_file(path);
        }
        result
    }

    /// Copies a stream into the store, verifying it against `expected` when given.
    ///
    /// # Errors
    /// I/O failures, or [`Error::DigestMismatch`] (nothing is stored then).
    pub fn put_stream<R: Read>(
        &self,
        mut r: R,
        expected: Option<&Digest>,
    ) -> Result<(Digest, u64)> {
        let mut w = self.blob_writer()?;
        let tmp = w.tmp.clone();
        io::copy(&mut r, &mut w).map_err(io_err("writing", &tmp))?;
        let size = w.written();
        Ok((w.commit(expected)?, size))
    }

    /// A fresh path in this process's temporary directory (`tmp/<id>/`,
    /// removed when the process ends, or by the next process to open the
    /// store if this one is killed).
    pub fn tmp_path(&self, what: &str) -> PathBuf {
        let name = format!("{what}-{}", atomic::unique_suffix());
        match self.scratch.dir() {
            Some(d) => d.join(name),
            None => self.root.join("tmp").join(name),
        }
    }

    // ---- verified layer digests -------------------------------------------

    /// The size to show for a layer: its content size ([`Store::content_size`])
    /// when the blob is here, else (a layer left remote by `--cache-from`, a
    /// blob that cannot be read) `compressed`, its size as stored: listing
    /// images never fetches or fails over one layer.
    pub fn shown_size(&self, blob: &Digest, compressed: u64, media_type: &str) -> u64 {
        if !self.blob_path(blob).is_file() {
            return compressed;
        }
        self.content_size(blob, media_type).unwrap_or(compressed)
    }

    /// The size of what the layer blob `blob` (of `media_type`)
    /// decompresses to: the content size `docker history` and `docker
    /// images` show. Counted by decompressing it the first time, then
    /// remembered in `sizes/`.
    ///
    /// # Errors
    /// A missing or unreadable blob, or an unknown media type.
    pub fn content_size(&self, blob: &Digest, media_type: &str) -> Result<u64> {
        let path = self.root.join("sizes").join(blob.hex());
        if let Ok(Some(n)) = self.read_record::<u64>(&path) {
            return Ok(n);
        }
        let compression = crate::layer::Compression::from_media_type(media_type)
            .ok_or_else(|| Error::UnknownMediaType(media_type.to_string()))?;
        let file = self.open_blob(blob)?;
        let io = |source| Error::Io {
            action: "decompressing",
            path: self.blob_path(blob),
            source,
        };
        let mut r = crate::layer::Decompressor::new(file, compression).map_err(io)?;
        let n = std::io::copy(&mut r, &mut std::io::sink()).map_err(io)?;
        // Only a cache: a failure to remember costs a recount.
        let _ = self.write_record(&path, &n);
        Ok(n)
    }

    fn diff_id_path(&self, blob: &Digest) -> PathBuf {
        self.root.join("diffids").join(blob.hex())
    }

    /// What the layer blob `blob` was seen to decompress to, by compression
    /// name (`gzip`, `zstd`): digests computed from its bytes, never taken
    /// from a config.
    pub fn diff_ids(&self, blob: &Digest) -> BTreeMap<String, Digest> {
        // A missing or unreadable record only costs a recomputation.
        self.read_record(&self.diff_id_path(blob))
            .ok()
            .flatten()
            .unwrap_or_default()
    }

    /// Records that `blob`, decompressed as `compression`, hashes to
    /// `diff_id`. Only for digests computed from the blob's bytes.
    ///
    /// # Errors
    /// When the record cannot be written.
    pub fn put_diff_id(&self, blob: &Digest, compression: &str, diff_id: &Digest) -> Result<()> {
        let mut known = self.diff_ids(blob);
        if known.get(compression) == Some(diff_id) {
            return Ok(());
        }
        known.insert(compression.to_string(), *diff_id);
        self.write_record(&self.diff_id_path(blob), &known)
    }

    fn recompressed_path(&self, blob: &Digest) -> PathBuf {
        self.root.join("recompressed").join(blob.hex())
    }

    /// The blob (digest, size) that layer `blob` became when recompressed
    /// as `compression` (`-o …,force-compression=true`), if it was and that
    /// blob is still here. Recompression is a function of the bytes and
    /// the pinned level, so the answer never goes stale.
    pub fn recompressed(&self, blob: &Digest, compression: &str) -> Option<(Digest, u64)> {
        let known: BTreeMap<String, (Digest, u64)> = self
            .read_record(&self.recompressed_path(blob))
            .ok()
            .flatten()?;
        known
            .get(compression)
            .copied()
            .filter(|(d, _)| self.has_blob(d))
    }

    /// Records that `blob` recompressed as `compression` is `into`
    /// (`size` bytes).
    ///
    /// # Errors
    /// When the record cannot be written.
    pub fn put_recompressed(
        &self,
        blob: &Digest,
        compression: &str,
        into: &Digest,
        size: u64,
    ) -> Result<()> {
        let p = self.recompressed_path(blob);
        let mut known: BTreeMap<String, (Digest, u64)> =
            self.read_record(&p).ok().flatten().unwrap_or_default();
        known.insert(compression.to_string(), (*into, size));
        self.write_record(&p, &known)
    }

    /// Forgets what `blob` decompresses to (`store check --repair`).
    ///
    /// # Errors
    /// When the record cannot be removed.
    pub fn remove_diff_ids(&self, blob: &Digest) -> Result<()> {
        let p = self.diff_id_path(blob);
        match fs_err::remove_file(&p) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::Io {
                action: "removing",
                path: p,
                source: e,
            }),
        }
    }

    // ---- images ------------------------------------------------------------

    /// Records an image: its ID (config digest) and manifest.
    ///
    /// # Errors
    /// When the record cannot be written.
    pub fn put_image(&self, id: &Digest, record: &ImageRecord) -> Result<()> {
        let p = self.root.join("images").join(id.hex());
        self.write_record(&p, record)
    }

    /// The record of an image ID, if the store has it.
    ///
    /// # Errors
    /// An unreadable or corrupt record.
    pub fn image(&self, id: &Digest) -> Result<Option<ImageRecord>> {
        self.read_record(&self.root.join("images").join(id.hex()))
    }

    /// Every image ID in the store, sorted.
    ///
    /// # Errors
    /// When the directory cannot be listed.
    pub fn image_ids(&self) -> Result<Vec<Digest>> {
        let dir = self.root.join("images");
        let mut ids: Vec<Digest> = list_names(&dir)?
            .iter()
            .filter_map(|n| Digest::from_hex(n).ok())
            .collect();
        ids.sort();
        Ok(ids)
    }

    /// Resolves what a user typed (a tag, `sha256:<id>`, a full ID or a unique
    /// prefix of at least 4 hex digits) to an image ID.
    ///
    /// # Errors
    /// [`Error::NoSuchImage`], [`Error::Ambiguous`], or I/O failures.
    pub fn resolve(&self, what: &str) -> Result<Digest> {
        if let Ok(d) = what.parse::<Digest>() {
            return match self.image(&d)? {
                Some(_) => Ok(d),
                None => Err(Error::NoSuchImage(what.to_string())),
            };
        }
        if let Ok(r) = Reference::parse(what)
            && let Some(id) = self.tag(&r)?
        {
            return Ok(id);
        }
        let is_hex = what.len() >= 4
            && what.len() <= 64
            && what
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if is_hex {
            let matches: Vec<Digest> = self
                .image_ids()?
                .into_iter()
                .filter(|d| d.hex().starts_with(what))
                .collect();
            return match matches.as_slice() {
                [one] => Ok(*one),
                [] => Err(Error::NoSuchImage(what.to_string())),
                _ => Err(Error::Ambiguous(what.to_string())),
            };
        }
        Err(Error::NoSuchImage(what.to_string()))
    }

    // ---- tags --------------------------------------------------------------

    fn tag_path(&self, r: &Reference) -> PathBuf {
        let name = r.to_string().replace('%', "%25").replace('/', "%2F");
        self.root.join("tags").join(name)
    }

    /// Points a tag at an image.
    ///
    /// # Errors
    /// When the tag file cannot be written.
    pub fn set_tag(&self, r: &Reference, id: &Digest) -> Result<()> {
        let p = self.tag_path(r);
        self.write_file(&p, id.to_string().as_bytes())
    }

    /// Points a tag at a multi-platform image: an index blob in the store,
    /// whose entries name per-platform manifests (some may be absent
    /// locally: a pull fetches only the platforms asked for).
    ///
    /// # Errors
    /// When the tag file cannot be written.
    pub fn set_index_tag(&self, r: &Reference, index: &Digest) -> Result<()> {
        let p = self.tag_path(r);
        self.write_file(&p, format!("index {index}").as_bytes())
    }

    /// What a tag points at: an image, or an index of images.
    ///
    /// # Errors
    /// An unreadable or corrupt tag file.
    #[allow(clippy::disallowed_methods)] // the error names the path already
    pub fn tag_target(&self, r: &Reference) -> Result<Option<TagTarget>> {
        let p = self.tag_path(r);
        let corrupt = |p: &PathBuf, e: String| Error::Io {
            action: "parsing",
            path: p.clone(),
            source: io::Error::new(io::ErrorKind::InvalidData, e),
        };
        match std::fs::read_to_string(&p) {
            Ok(s) => {
                let s = s.trim();
                let (index, digest) = match s.strip_prefix("index ") {
                    Some(d) => (true, d),
                    None => (false, s),
                };
                let d: Digest = digest.parse().map_err(|e| corrupt(&p, format!("{e}")))?;
                Ok(Some(if index {
                    TagTarget::Index(d)
                } else {
                    TagTarget::Image(d)
                }))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::Io {
                action: "reading",
                path: p,
                source: e,
            }),
        }
    }

    /// The image a tag points at; for a multi-platform tag, the host's image
    /// when the store has it, else the first platform it has.
    ///
    /// # Errors
    /// An unreadable or corrupt tag file or index.
    pub fn tag(&self, r: &Reference) -> Result<Option<Digest>> {
        match self.tag_target(r)? {
            None => Ok(None),
            Some(TagTarget::Image(d)) => Ok(Some(d)),
            Some(TagTarget::Index(i)) => {
                let images = self.index_images(&i)?;
                let host = crate::platform::host();
                Ok(images
                    .iter()
                    .find(|(p, id)| id.is_some() && host.accepts(p))
                    .or_else(|| images.iter().find(|(_, id)| id.is_some()))
                    .and_then(|(_, id)| *id))
            }
        }
    }

    /// The image a tag points at for `platform`: a single-platform tag's
    /// image whatever its platform (the caller checks), a multi-platform
    /// tag's entry for `platform` when the store has that image.
    ///
    /// # Errors
    /// An unreadable or corrupt tag file or index.
    pub fn tag_for(&self, r: &Reference, platform: &Platform) -> Result<Option<Digest>> {
        match self.tag_target(r)? {
            None => Ok(None),
            Some(TagTarget::Image(d)) => Ok(Some(d)),
            Some(TagTarget::Index(i)) => Ok(self
                .index_images(&i)?
                .into_iter()
                .find(|(p, id)| id.is_some() && platform.accepts(p))
                .and_then(|(_, id)| id)),
        }
    }

    /// The entries of an index blob: each platform with its image ID when
    /// the store holds that manifest and image (a manifest's image ID is
    /// its config's digest).
    ///
    /// # Errors
    /// A missing or unreadable index blob, or one that is not an index.
    pub fn index_images(&self, index: &Digest) -> Result<Vec<(Platform, Option<Digest>)>> {
        let bytes = self.read_blob(index)?;
        let bad = |e: String| Error::Io {
            action: "parsing",
            path: self.blob_path(index),
            source: io::Error::new(io::ErrorKind::InvalidData, e),
        };
        let v: serde_json::Value =
            serde_json::from_slice(&bytes).map_err(|e| bad(e.to_string()))?;
        let mut out = Vec::new();
        for (platform, manifest, _) in crate::platform::index::entries(&v) {
            let id = match manifest {
                Some(m) if self.has_blob(&m) => {
                    let mv: serde_json::Value = serde_json::from_slice(&self.read_blob(&m)?)
                        .map_err(|e| bad(format!("manifest {m}: {e}")))?;
                    mv["config"]["digest"]
                        .as_str()
                        .and_then(|d| d.parse::<Digest>().ok())
                        .filter(|id| self.image(id).ok().flatten().is_some())
                }
                _ => None,
            };
            out.push((platform, id));
        }
        Ok(out)
    }

    /// Removes an image record (its blobs go at the next prune).
    ///
    /// # Errors
    /// When the record cannot be removed.
    pub fn remove_image(&self, id: &Digest) -> Result<bool> {
        let p = self.root.join("images").join(id.hex());
        match fs_err::remove_file(&p) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(Error::Io {
                action: "removing",
                path: p,
                source: e,
            }),
        }
    }

    /// Removes a tag; returns whether it existed.
    ///
    /// # Errors
    /// When the tag file cannot be removed.
    pub fn remove_tag(&self, r: &Reference) -> Result<bool> {
        let p = self.tag_path(r);
        match fs_err::remove_file(&p) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(Error::Io {
                action: "removing",
                path: p,
                source: e,
            }),
        }
    }

    /// Every tag with the image it points at (a multi-platform tag's: as
    /// [`Store::tag`] chooses), sorted by name. A multi-platform tag whose
    /// index cannot be read is left out (`store check` reports it), so one
    /// broken tag does not hide the others.
    ///
    /// # Errors
    /// When the tags cannot be listed or read.
    pub fn tags(&self) -> Result<Vec<(Reference, Digest)>> {
        let mut out = Vec::new();
        for (r, t) in self.tag_targets()? {
            let id = match t {
                TagTarget::Image(id) => Some(id),
                TagTarget::Index(_) => self.tag(&r).ok().flatten(),
            };
            if let Some(id) = id {
                out.push((r, id));
            }
        }
        out.sort();
        Ok(out)
    }

    /// The images of what a tag names that the store has: the image, or
    /// each platform of an index whose image is here (in the index's
    /// order), with its platform.
    ///
    /// # Errors
    /// An unreadable or malformed index.
    pub fn target_images(&self, target: &TagTarget) -> Result<Vec<(Option<Platform>, Digest)>> {
        Ok(match target {
            TagTarget::Image(id) => vec![(None, *id)],
            TagTarget::Index(i) => self
                .index_images(i)?
                .into_iter()
                .filter_map(|(p, id)| Some((Some(p), id?)))
                .collect(),
        })
    }

    /// Every tag that names image `id`: it points at the image, or at an
    /// index of which the image is a platform; sorted by name.
    ///
    /// # Errors
    /// When the tags cannot be listed or read.
    pub fn tags_of(&self, id: &Digest) -> Result<Vec<Reference>> {
        let mut out = Vec::new();
        for (r, t) in self.tag_targets()? {
            let names = match t {
                TagTarget::Image(d) => d == *id,
                // An index that cannot be read names nothing here.
                TagTarget::Index(_) => self
                    .target_images(&t)
                    .is_ok_and(|images| images.iter().any(|(_, d)| d == id)),
            };
            if names {
                out.push(r);
            }
        }
        Ok(out)
    }

    /// The platform image `id`'s config names (an image ID is its config's
    /// digest); `None` when it names no architecture.
    ///
    /// # Errors
    /// A missing, unreadable or malformed config blob.
    pub fn image_platform(&self, id: &Digest) -> Result<Option<Platform>> {
        let bytes = self.read_blob(id)?;
        let v: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| Error::Io {
            action: "parsing",
            path: self.blob_path(id),
            source: io::Error::new(io::ErrorKind::InvalidData, e),
        })?;
        let field = |k: &str| v.get(k).and_then(serde_json::Value::as_str).unwrap_or("");
        if field("architecture").is_empty() {
            return Ok(None);
        }
        Ok(Some(Platform::new(
            field("os"),
            field("architecture"),
            field("variant"),
        )))
    }

    /// Resolves what a user typed to an image ID, as [`Store::resolve`]
    /// does, for `platform` when given: a multi-platform tag gives that
    /// platform's image, and any other image must be for that platform.
    /// Without a platform, a multi-platform tag gives the host's image
    /// (else the first the store has).
    ///
    /// # Errors
    /// As [`Store::resolve`], and [`Error::NoSuchPlatform`] when the store
    /// has the image but not for `platform`.
    pub fn resolve_for(&self, what: &str, platform: Option<&Platform>) -> Result<Digest> {
        let Some(want) = platform else {
            return self.resolve(what);
        };
        let missing = |available: Vec<Platform>| Error::NoSuchPlatform {
            image: what.to_string(),
            platform: want.to_string(),
            available: crate::platform::index::list(&available),
        };
        if let Ok(r) = Reference::parse(what)
            && let Some(t @ TagTarget::Index(_)) = self.tag_target(&r)?
        {
            let images = self.target_images(&t)?;
            return match images
                .iter()
                .find(|(p, _)| p.as_ref().is_some_and(|p| want.accepts(p)))
            {
                Some((_, id)) => Ok(*id),
                None => Err(missing(images.into_iter().filter_map(|(p, _)| p).collect())),
            };
        }
        let id = self.resolve(what)?;
        match self.image_platform(&id)? {
            Some(p) if !want.accepts(&p) => Err(missing(vec![p])),
            _ => Ok(id),
        }
    }

    /// Every tag with what it names, sorted by name.
    ///
    /// # Errors
    /// When the tags cannot be listed or read.
    pub fn tag_targets(&self) -> Result<Vec<(Reference, TagTarget)>> {
        let mut out = Vec::new();
        for name in list_names(&self.root.join("tags"))? {
            let decoded = name.replace("%2F", "/").replace("%25", "%");
            let Ok(r) = Reference::parse(&decoded) else {
                continue;
            };
            if let Some(t) = self.tag_target(&r)? {
                out.push((r, t));
            }
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    /// The blobs a multi-platform tag's index keeps alive besides its
    /// images' own: the index and the registry's manifests it lists.
    ///
    /// # Errors
    /// An unreadable or malformed index.
    pub fn index_blobs(&self, index: &Digest) -> Result<Vec<Digest>> {
        let bytes = self.read_blob(index)?;
        let v: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| Error::Io {
            action: "parsing",
            path: self.blob_path(index),
            source: io::Error::new(io::ErrorKind::InvalidData, e),
        })?;
        let mut out = vec![*index];
        out.extend(crate::platform::index::entries(&v).filter_map(|(_, d, _)| d));
        Ok(out)
    }

    // ---- build cache -------------------------------------------------------

    /// Every cache entry: key → image ID.
    ///
    /// # Errors
    /// When the cache cannot be listed or read.
    pub fn cache_entries(&self) -> Result<Vec<(Digest, Digest)>> {
        let mut out = Vec::new();
        for name in list_names(&self.root.join("cache"))? {
            let Ok(key) = Digest::from_hex(&name) else {
                continue;
            };
            if let Some(id) = self.cache_get(&key)? {
                out.push((key, id));
            }
        }
        out.sort();
        Ok(out)
    }

    /// The image a cache key produced, if recorded and still complete.
    ///
    /// # Errors
    /// An unreadable or corrupt cache record.
    pub fn cache_get(&self, key: &Digest) -> Result<Option<Digest>> {
        let p = self.root.join("cache").join(key.hex());
        let rec: Option<CacheRecord> = self.read_record(&p)?;
        Ok(rec.map(|r| r.image))
    }

    /// Records that a cache key produced an image.
    ///
    /// # Errors
    /// When the record cannot be written.
    pub fn cache_put(&self, key: &Digest, image: &Digest) -> Result<()> {
        let p = self.root.join("cache").join(key.hex());
        self.write_record(&p, &CacheRecord { image: *image })
    }

    // ---- output records ----------------------------------------------------

    /// What was last written to the archive at `path` (absolute), if known.
    ///
    /// # Errors
    /// An unreadable record (a corrupt one reads as absent).
    pub fn output_record<T: for<'de> Deserialize<'de>>(&self, path: &Path) -> Result<Option<T>> {
        let p = self.output_path(path);
        match self.read_record(&p) {
            Err(Error::BadRecord { .. }) => Ok(None),
            other => other,
        }
    }

    /// Remembers what was written to the archive at `path` (absolute).
    ///
    /// # Errors
    /// When the record cannot be written.
    pub fn put_output_record<T: Serialize>(&self, path: &Path, value: &T) -> Result<()> {
        let p = self.output_path(path);
        self.write_record(&p, value)
    }

    fn output_path(&self, path: &Path) -> PathBuf {
        self.root
            .join("outputs")
            .join(Digest::of(path.as_os_str().as_encoded_bytes()).hex())
    }

    // ---- step records --------------------------------------------------------

    /// The last inputs of the step with this identity, if recorded.
    ///
    /// # Errors
    /// An unreadable record (a corrupt one reads as absent).
    pub fn step_record<T: for<'de> Deserialize<'de>>(
        &self,
        identity: &Digest,
    ) -> Result<Option<T>> {
        let p = self.root.join("steps").join(identity.hex());
        match self.read_record(&p) {
            Err(Error::BadRecord { .. }) => Ok(None),
            other => other,
        }
    }

    /// Records the inputs a step was built from.
    ///
    /// # Errors
    /// When the record cannot be written.
    pub fn put_step_record<T: Serialize>(&self, identity: &Digest, value: &T) -> Result<()> {
        let p = self.root.join("steps").join(identity.hex());
        self.write_record(&p, value)
    }

    // ---- records -----------------------------------------------------------

    fn write_record<T: Serialize>(&self, path: &Path, value: &T) -> Result<()> {
        let bytes = serde_json::to_vec(value).map_err(|source| Error::BadRecord {
            path: path.to_path_buf(),
            source,
        })?;
        self.write_file(path, &bytes)
    }

    /// Writes a file inside the store atomically, its temporary file in this
    /// process's temporary directory (so a killed writer's leftover goes with
    /// that directory, never stays beside the records).
    ///
    /// # Errors
    /// When the file cannot be written.
    pub fn write_file(&self, path: &Path, bytes: &[u8]) -> Result<()> {
        let res = match self.scratch.dir() {
            Some(d) => {
                let tmp = d.join(format!("record-{}", atomic::unique_suffix()));
                AtomicFile::create_in(path, tmp).and_then(|mut f| {
                    f.write_all(bytes)?;
                    f.commit()
                })
            }
            None => atomic_write(path, bytes),
        };
        res.map_err(io_err("writing", path))
    }

    fn read_record<T: for<'de> Deserialize<'de>>(&self, path: &Path) -> Result<Option<T>> {
        match fs_err::read(path) {
            Ok(bytes) => {
                serde_json::from_slice(&bytes)
                    .map(Some)
                    .map_err(|source| Error::BadRecord {
                        path: path.to_path_buf(),
                        source,
                    })
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::Io {
                action: "reading",
                path: path.to_path_buf(),
                source: e,
            }),
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct CacheRecord {
    image: Digest,
}

fn list_names(dir: &Path) -> Result<Vec<String>> {
    #[allow(clippy::disallowed_methods)] // the error names the path already
    let rd = std::fs::read_dir(dir).map_err(io_err("listing", dir))?;
    let mut names = Vec::new();
    for e in rd {
        let e = e.map_err(io_err("listing", dir))?;
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.starts_with('.') {
            names.push(name);
        }
    }
    Ok(names)
}

/// A blob being written: digests as it goes, lands under its digest on commit.
pub struct BlobWriter {
    store: Store,
    inner: Option<HashingWriter<io::BufWriter<File>>>,
    tap: Option<Box<dyn BlobTap>>,
    tmp: PathBuf,
}

impl BlobWriter {
    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.inner.as_ref().map_or(0, HashingWriter::count)
    }

    /// Finishes the blob: fsync, verify against `expected` if given, rename
    /// into place (in a staging view: into the held-back blobs). Returns the
    /// digest.
    ///
    /// # Errors
    /// I/O failures or a digest mismatch; the temporary file is removed.
    pub fn commit(mut self, expected: Option<&Digest>) -> Result<Digest> {
        let Some(inner) = self.inner.take() else {
            return Err(Error::Io {
                action: "committing",
                path: self.tmp.clone(),
                source: io::Error::other("blob already committed"),
            });
        };
        let (buf, digest, _) = inner.finish();
        let file = buf
            .into_inner()
            .map_err(|e| e.into_error())
            .map_err(io_err("writing", &self.tmp))?;
        if let Some(exp) = expected
            && *exp != digest
        {
            return Err(Error::DigestMismatch {
                expected: *exp,
                actual: digest,
            });
        }
        let unpacked = self.tap.take().and_then(|t| t.finish());
        if let Some(staging) = self.store.staging.clone() {
            // Held back: no fsync yet (publishing is a rename; an import that
            // fails never needed the bytes on disk).
            drop(file);
            let dest = staging.dir.join(digest.hex());
            #[allow(clippy::disallowed_methods)] // the error names the path already
            std::fs::rename(&self.tmp, &dest).map_err(io_err("renaming", &dest))?;
            self.tmp = PathBuf::new();
            if let Ok(mut m) = staging.blobs.lock() {
                m.insert(
                    digest,
                    Staged {
                        path: dest,
                        unpacked,
                    },
                );
            }
            return Ok(digest);
        }
        file.sync_all().map_err(io_err("syncing", &self.tmp))?;
        drop(file);
        let dest = self.store.blob_path_in_store(&digest);
        #[allow(clippy::disallowed_methods)] // the error names the path already
        std::fs::rename(&self.tmp, &dest).map_err(io_err("renaming", &dest))?;
        self.tmp = PathBuf::new();
        let dir = self.store.root.join("blobs/sha256");
        atomic::sync_dir(&dir).map_err(io_err("syncing", &dir))?;
        Ok(digest)
    }
}

impl Write for BlobWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self.inner.as_mut() {
            Some(w) => {
                let n = w.write(buf)?;
                if let Some(t) = self.tap.as_mut() {
                    t.write(&buf[..n]);
                }
                Ok(n)
            }
            None => Err(io::Error::other("blob already committed")),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self.inner.as_mut() {
            Some(w) => w.flush(),
            None => Ok(()),
        }
    }
}

impl Drop for BlobWriter {
    fn drop(&mut self) {
        if !self.tmp.as_os_str().is_empty() {
            let _ = fs_err::remove_file(&self.tmp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blobs_round_trip_and_verify() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(d.path()).unwrap();
        let dg = s.put_blob(b"hello").unwrap();
        assert_eq!(dg, Digest::of(b"hello"));
        assert_eq!(s.read_blob(&dg).unwrap(), b"hello");
        let wrong = Digest::of(b"other");
        let err = s.put_stream(&b"hello"[..], Some(&wrong)).unwrap_err();
        assert!(matches!(err, Error::DigestMismatch { .. }));
        assert!(!s.has_blob(&wrong));
        // Nothing left in the process's temporary directory.
        let scratch = s.tmp_path("x");
        assert_eq!(
            fs_err::read_dir(scratch.parent().unwrap()).unwrap().count(),
            0
        );
        // Corruption on disk is caught on read.
        fs_err::write(s.blob_path(&dg), b"jello").unwrap();
        assert!(matches!(
            s.read_blob(&dg),
            Err(Error::DigestMismatch { .. })
        ));
    }

    #[test]
    fn stores_are_private_and_older_ones_are_tightened() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("s");
        let mode = |p: &Path| fs_err::metadata(p).unwrap().permissions().mode() & 0o777;
        Store::open(&root).unwrap();
        assert_eq!(mode(&root), 0o700);
        for dir in DIRS {
            assert_eq!(mode(&root.join(dir)), 0o700, "{dir}");
        }
        // A store made with the umask's 0755, as older versions did.
        for p in [
            root.clone(),
            root.join("blobs/sha256"),
            root.join("snapshots"),
        ] {
            fs_err::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        fs_err::create_dir_all(root.join("layers/trusted")).unwrap();
        fs_err::set_permissions(root.join("layers"), std::fs::Permissions::from_mode(0o755))
            .unwrap();
        Store::open(&root).unwrap();
        for p in ["", "blobs/sha256", "snapshots", "layers"] {
            assert_eq!(mode(&root.join(p)), 0o700, "{p}");
        }
    }

    #[test]
    fn staged_blobs_are_invisible_until_published() {
        struct NoTap;
        impl BlobTap for NoTap {
            fn write(&mut self, _: &[u8]) {}
            fn finish(self: Box<Self>) -> Option<(String, Digest)> {
                Some(("gzip".into(), Digest::of(b"unpacked")))
            }
        }
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(d.path()).unwrap();
        let view = s
            .staging(Arc::new(|| Box::new(NoTap) as Box<dyn BlobTap>))
            .unwrap();
        let dg = view.put_blob(b"held back").unwrap();
        assert!(view.has_blob(&dg) && !s.has_blob(&dg));
        assert_eq!(view.read_blob(&dg).unwrap(), b"held back");
        view.publish(&[dg]).unwrap();
        assert!(s.has_blob(&dg));
        assert_eq!(s.diff_ids(&dg).get("gzip"), Some(&Digest::of(b"unpacked")));
        let other = view.put_blob(b"dropped").unwrap();
        drop(view);
        assert!(!s.has_blob(&other));
    }

    #[test]
    fn tags_and_prefix_resolution() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(d.path()).unwrap();
        let id = Digest::of(b"config");
        let rec = ImageRecord {
            manifest: Digest::of(b"m"),
            parent: None,
        };
        s.put_image(&id, &rec).unwrap();
        let r = Reference::parse("app:1.0").unwrap();
        s.set_tag(&r, &id).unwrap();
        assert_eq!(s.resolve("app:1.0").unwrap(), id);
        assert_eq!(s.resolve("docker.io/library/app:1.0").unwrap(), id);
        assert_eq!(s.resolve(&id.short()).unwrap(), id);
        assert_eq!(s.resolve(&id.to_string()).unwrap(), id);
        assert!(matches!(s.resolve("nope"), Err(Error::NoSuchImage(_))));
        assert_eq!(s.tags().unwrap(), vec![(r, id)]);
    }

    /// An image whose config names `arch`, recorded in `s`: (ID, manifest).
    fn image_for(s: &Store, arch: &str) -> (Digest, Digest) {
        let config = s
            .put_blob(format!(r#"{{"architecture":"{arch}","os":"linux"}}"#).as_bytes())
            .unwrap();
        let manifest = s
            .put_blob(format!(r#"{{"config":{{"digest":"{config}"}},"layers":[]}}"#).as_bytes())
            .unwrap();
        let rec = ImageRecord {
            manifest,
            parent: None,
        };
        s.put_image(&config, &rec).unwrap();
        (config, manifest)
    }

    #[test]
    fn multi_platform_tags_resolve_per_platform() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(d.path()).unwrap();
        let (amd, amd_m) = image_for(&s, "amd64");
        let (arm, arm_m) = image_for(&s, "arm64");
        // A platform the store does not have (a pull fetches one).
        let remote = Digest::of(b"elsewhere");
        let index = s
            .put_blob(
                format!(
                    r#"{{"manifests":[
                    {{"digest":"{amd_m}","platform":{{"os":"linux","architecture":"amd64"}}}},
                    {{"digest":"{arm_m}","platform":{{"os":"linux","architecture":"arm64","variant":"v8"}}}},
                    {{"digest":"{remote}","platform":{{"os":"linux","architecture":"s390x"}}}}]}}"#
                )
                .as_bytes(),
            )
            .unwrap();
        let mp = Reference::parse("mp:1").unwrap();
        s.set_index_tag(&mp, &index).unwrap();
        let plain = Reference::parse("arm:1").unwrap();
        s.set_tag(&plain, &arm).unwrap();
        let p = |s: &str| Platform::parse(s).unwrap();
        assert_eq!(s.resolve_for("mp:1", Some(&p("linux/arm64"))).unwrap(), arm);
        assert_eq!(s.resolve_for("mp:1", Some(&p("linux/amd64"))).unwrap(), amd);
        let err = s
            .resolve_for("mp:1", Some(&p("linux/s390x")))
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "mp:1 has no image for linux/s390x in the store (it has: linux/amd64, linux/arm64)"
        );
        // A single-platform image serves only its own platform.
        assert_eq!(
            s.resolve_for("arm:1", Some(&p("linux/arm64/v8"))).unwrap(),
            arm
        );
        assert!(matches!(
            s.resolve_for("arm:1", Some(&p("linux/amd64"))),
            Err(Error::NoSuchPlatform { .. })
        ));
        assert_eq!(
            s.target_images(&TagTarget::Index(index)).unwrap(),
            vec![(Some(p("linux/amd64")), amd), (Some(p("linux/arm64")), arm)]
        );
        assert_eq!(s.tags_of(&arm).unwrap(), vec![plain.clone(), mp.clone()]);
        assert_eq!(s.tags_of(&amd).unwrap(), vec![mp.clone()]);
        // An index whose blob is gone hides only its own tag.
        let gone = Reference::parse("gone:1").unwrap();
        s.set_index_tag(&gone, &Digest::of(b"no such index"))
            .unwrap();
        let names: Vec<String> = s
            .tags()
            .unwrap()
            .iter()
            .map(|(r, _)| r.familiar())
            .collect();
        assert_eq!(names, ["arm:1", "mp:1"]);
        assert_eq!(s.tags_of(&arm).unwrap(), vec![plain, mp]);
    }
}
