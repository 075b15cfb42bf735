//! Extracted filesystems of images, kept in the store so later steps and
//! builds reuse them: `snapshots/<chain id>/` (a merged root filesystem, for
//! `COPY --from` and `RUN --mount=from`) and `layers/{trusted,user}/<diff
//! id>/` (one layer each in overlay format: RUN's lowers).
//!
//! Both are keyed by digests the image *claims* (diff_ids, chain IDs), so
//! they hold only what was checked against those claims: every layer is read
//! through [`verify::VerifiedLayer`] while it is extracted, into this
//! process's temporary directory; the directory appears by rename, and then
//! `<dir>.json` records what it was made from (the layers' diff_ids, blobs,
//! media types, the umask), written last by the build whose rename won. A
//! directory without a matching record (made by an older imgbuild, or a
//! build killed between the two renames) is never used: the layers are
//! extracted again into a private directory for this process. `store check` re-extracts from the record and
//! compares ([`check_store`]); a crash leaves at most a directory in `tmp/`.

use crate::progress::{self, Sink};
use std::io;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::error::{CopyError, error_chain};
use crate::confine::Root;
use crate::digest::{Digest, Hasher, HashingReader};
use crate::layer::extract::{ExtractReport, extract_layer, extract_layer_overlay};
use crate::oci::LayerDescriptor;
use crate::oci::verify;
use crate::store::gc::{Checked, Fix, Problem};
use crate::store::{AtomicFile, Store};

/// The opaque-directory xattrs an overlay-format extraction may use.
const OVERLAY_XATTRS: &[&str] = &["trusted.overlay.opaque", "user.overlay.opaque"];

/// Why an extracted filesystem could not be made.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// A layer could not be read, or is not what its image claims.
    #[error("layer {layer}")]
    Layer {
        /// The layer blob.
        layer: Digest,
        /// Why.
        #[source]
        source: crate::oci::Error,
    },
    /// Extracting a layer failed.
    #[error("extracting layer {layer}")]
    Extract {
        /// The layer blob.
        layer: Digest,
        /// Why.
        #[source]
        source: crate::layer::extract::ExtractError,
    },
    /// A directory could not be made or moved into place.
    #[error("{action} {path}")]
    Io {
        /// What we were doing.
        action: &'static str,
        /// Where.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The record could not be written.
    #[error(transparent)]
    Store(#[from] crate::store::Error),
}

impl From<SnapshotError> for CopyError {
    fn from(e: SnapshotError) -> Self {
        CopyError::Snapshot {
            what: error_chain(&e),
        }
    }
}

/// What an extracted directory was made from; written, after every layer
/// was verified, before the directory is renamed into place.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Made {
    /// The layers, bottom first.
    layers: Vec<Source>,
    /// For `layers/`: the opaque-directory xattr of the overlay format.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    overlay: Option<String>,
    /// The umask it was extracted under (directories the layers do not
    /// list get their mode from it), so `store check` can extract it again
    /// the same way.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    umask: Option<u32>,
}

/// This process's umask, from `/proc/self/status` (reading it with
/// `umask(2)` would change it for a moment, under other threads).
fn current_umask() -> Option<u32> {
    let status = fs_err::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find_map(|l| l.strip_prefix("Umask:"))?;
    u32::from_str_radix(line.trim(), 8).ok()
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Source {
    diff_id: Digest,
    blob: Digest,
    media_type: String,
}

impl Made {
    fn of(layers: &[LayerDescriptor], overlay: Option<&str>) -> Made {
        Made {
            layers: layers
                .iter()
                .map(|l| Source {
                    diff_id: l.diff_id,
                    blob: l.digest,
                    media_type: l.media_type.clone(),
                })
                .collect(),
            overlay: overlay.map(str::to_string),
            umask: current_umask(),
        }
    }

    fn descriptors(&self) -> Vec<LayerDescriptor> {
        self.layers
            .iter()
            .map(|s| LayerDescriptor {
                diff_id: s.diff_id,
                digest: s.blob,
                size: 0,
                media_type: s.media_type.clone(),
            })
            .collect()
    }

    /// Whether this record vouches for a directory of `layers` (by diff_id:
    /// any blob that decompresses to them gives the same files).
    fn covers(&self, layers: &[LayerDescriptor], overlay: Option<&str>) -> bool {
        self.overlay.as_deref() == overlay
            && self.layers.len() == layers.len()
            && self
                .layers
                .iter()
                .zip(layers)
                .all(|(s, l)| s.diff_id == l.diff_id)
    }
}

fn record_path(dir: &Path) -> PathBuf {
    let mut p = dir.as_os_str().to_os_string();
    p.push(".json");
    PathBuf::from(p)
}

fn read_record(dir: &Path) -> Option<Made> {
    let bytes = fs_err::read(record_path(dir)).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// The OCI chain ID of a stack of layers.
pub fn chain_id(layers: &[LayerDescriptor]) -> Option<Digest> {
    let mut it = layers.iter();
    let mut id = it.next()?.diff_id;
    for l in it {
        let mut h = Hasher::new();
        h.update(format!("{id} {}", l.diff_id).as_bytes());
        id = h.finish();
    }
    Some(id)
}

/// The directory holding the merged filesystem of `layers`, extracting it if
/// the store does not have it yet. `warn` hears of entries skipped (device
/// nodes when not root).
///
/// # Errors
/// A layer that cannot be read, is not what its image claims, or cannot be
/// extracted.
pub fn rootfs(
    store: &Store,
    layers: &[LayerDescriptor],
    events: &dyn Sink,
) -> Result<PathBuf, CopyError> {
    let name = chain_id(layers).map_or_else(|| "empty".to_string(), |d| d.hex());
    let dir = store.root().join("snapshots").join(&name);
    Ok(materialize(store, &dir, layers, None, events)?)
}

/// The per-layer directory of `layer` in overlay format (`xattr` marks
/// opaque directories), extracting it once into the store
/// (`layers/<flavour>/<diff id>`); later steps and builds share it.
///
/// # Errors
/// A layer that cannot be read, is not what its image claims, or cannot be
/// extracted.
pub fn layer_dir(
    store: &Store,
    layer: &LayerDescriptor,
    xattr: &'static str,
    events: &dyn Sink,
) -> Result<PathBuf, SnapshotError> {
    let flavour = if xattr.starts_with("user.") {
        "user"
    } else {
        "trusted"
    };
    let base = store.root().join("layers");
    for d in [base.clone(), base.join(flavour)] {
        crate::store::private_dir(&d).map_err(|source| SnapshotError::Io {
            action: "creating",
            path: d.clone(),
            source,
        })?;
    }
    // Short names keep the overlay mount options under a page.
    let dir = base.join(flavour).join(&layer.diff_id.hex()[..32]);
    materialize(
        store,
        &dir,
        std::slice::from_ref(layer),
        Some(xattr),
        events,
    )
}

/// Extracts one layer on top of `root`, verifying it against its diff_id
/// as it streams. Nothing made from a layer that fails may be used.
///
/// # Errors
/// See [`SnapshotError`].
pub fn extract_verified(
    store: &Store,
    layer: &LayerDescriptor,
    root: &Path,
    overlay: Option<&'static str>,
) -> Result<ExtractReport, SnapshotError> {
    let layer_err = |source| SnapshotError::Layer {
        layer: layer.digest,
        source,
    };
    let mut stream = verify::open_verified(store, layer).map_err(layer_err)?;
    let report = match overlay {
        Some(x) => extract_layer_overlay(root, &mut stream, x),
        None => extract_layer(root, &mut stream),
    };
    // A stream that lies can also break the extraction halfway: its digest
    // is the better explanation.
    match (report, stream.finish()) {
        (_, Err(e @ crate::oci::Error::DiffIdMismatch(_))) => Err(layer_err(e)),
        (Err(source), _) => Err(SnapshotError::Extract {
            layer: layer.digest,
            source,
        }),
        (Ok(_), Err(e)) => Err(layer_err(e)),
        (Ok(r), Ok(())) => Ok(r),
    }
}

/// Extracts `layers` (verified) into a fresh directory of this process.
fn extract_fresh(
    store: &Store,
    layers: &[LayerDescriptor],
    overlay: Option<&'static str>,
    events: &dyn Sink,
) -> Result<PathBuf, SnapshotError> {
    let tmp = store.tmp_path(if overlay.is_some() {
        "layer"
    } else {
        "snapshot"
    });
    #[allow(clippy::disallowed_methods)] // the error names the path already
    std::fs::create_dir_all(&tmp).map_err(|source| SnapshotError::Io {
        action: "creating",
        path: tmp.clone(),
        source,
    })?;
    for l in layers {
        match extract_verified(store, l, &tmp, overlay) {
            Ok(report) => {
                for skipped in report.skipped {
                    progress::warn(events, format!("layer {}: {skipped}", l.digest.short()));
                }
            }
            Err(e) => {
                super::run::remove_tree(&tmp);
                return Err(e);
            }
        }
    }
    Ok(tmp)
}

fn materialize(
    store: &Store,
    dir: &Path,
    layers: &[LayerDescriptor],
    overlay: Option<&'static str>,
    events: &dyn Sink,
) -> Result<PathBuf, SnapshotError> {
    let verified =
        |dir: &Path| dir.is_dir() && read_record(dir).is_some_and(|m| m.covers(layers, overlay));
    if verified(dir) {
        return Ok(dir.to_path_buf());
    }
    let stale = dir.exists();
    let tmp = extract_fresh(store, layers, overlay, events)?;
    if stale {
        // Not vouched for by a record: made by an older imgbuild, tampered
        // with, or just renamed by another build that has not written its
        // record yet. Never trusted, never removed (someone may be using
        // it; `store check --repair` and `prune` remove it): this process
        // uses its own verified copy.
        progress::warn(
            events,
            format!(
                "{} has no record of verified layers; using a private copy \
             (`imgbuild store check` tells whether it is sound)",
                dir.display()
            ),
        );
        return Ok(tmp);
    }
    // The directory first, its record last, and only by the build whose
    // directory it is: a record always describes the directory beside it,
    // and a directory without one is never used.
    let made = Made::of(layers, overlay);
    let record = record_path(dir);
    let io_err = |action, path: &Path| {
        let path = path.to_path_buf();
        move |source| SnapshotError::Io {
            action,
            path,
            source,
        }
    };
    let mut rec = AtomicFile::create_in(&record, store.tmp_path("record"))
        .map_err(io_err("creating", &record))?;
    serde_json::to_writer(&mut rec, &made)
        .map_err(io::Error::other)
        .map_err(io_err("writing", &record))?;
    if fs_err::rename(&tmp, dir).is_ok() {
        rec.commit().map_err(io_err("writing", &record))?;
        return Ok(dir.to_path_buf());
    }
    // Another build made the same one first; use theirs once it is
    // recorded, else our own copy.
    drop(rec);
    if verified(dir) {
        super::run::remove_tree(&tmp);
        Ok(dir.to_path_buf())
    } else {
        Ok(tmp)
    }
}

// ---- store check -------------------------------------------------------------

/// `store check`'s part for extracted filesystems: every directory in
/// `snapshots/` and `layers/` has a record, its layers are present and
/// verify, and its files are exactly what extracting them again gives.
///
/// # Errors
/// When the directories cannot be listed.
pub fn check_store(store: &Store, checked: &mut Checked) -> crate::store::Result<()> {
    let mut dirs = Vec::new();
    let snaps = store.root().join("snapshots");
    dirs.push((snaps, None));
    for x in OVERLAY_XATTRS {
        let flavour = if x.starts_with("user.") {
            "user"
        } else {
            "trusted"
        };
        dirs.push((store.root().join("layers").join(flavour), Some(*x)));
    }
    for (parent, overlay) in dirs {
        let Ok(rd) = fs_err::read_dir(&parent) else {
            continue;
        };
        let mut names: Vec<String> = rd
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        for name in &names {
            let path = parent.join(name);
            if name.ends_with(".json") {
                // A record whose directory is still being made (or never
                // appeared, after a crash) is harmless; prune removes it.
                continue;
            }
            if !path.is_dir() {
                checked.problems.push(Problem {
                    what: format!("{}: not a directory", path.display()),
                    fixes: vec![Fix::File(path)],
                });
                continue;
            }
            if let Some(why) = check_dir(store, checked, &path, overlay) {
                checked.problems.push(Problem {
                    what: format!("{}: {why}", path.display()),
                    fixes: vec![Fix::Tree(path.clone()), Fix::File(record_path(&path))],
                });
            }
        }
    }
    Ok(())
}

/// What is wrong with one extracted directory, if anything.
fn check_dir(
    store: &Store,
    checked: &Checked,
    dir: &Path,
    overlay: Option<&'static str>,
) -> Option<String> {
    let Some(made) = read_record(dir) else {
        return Some("no record of the layers it was extracted from (made by an older imgbuild, or tampered with): it is not verified".into());
    };
    if made.overlay.as_deref() != overlay {
        return Some("its record is for another overlay format".into());
    }
    let name = dir.file_name()?.to_string_lossy().into_owned();
    let layers = made.descriptors();
    let expected_name = match overlay {
        Some(_) => layers.first().map(|l| l.diff_id.hex()[..32].to_string()),
        None => Some(chain_id(&layers).map_or_else(|| "empty".to_string(), |d| d.hex())),
    };
    if overlay.is_some() && layers.len() != 1 || expected_name.as_deref() != Some(name.as_str()) {
        return Some("its record names other layers than its name".into());
    }
    for l in &layers {
        if !checked.blobs.contains(&l.digest) {
            return Some(format!(
                "layer blob {} is missing or corrupt, so it cannot be verified",
                l.digest
            ));
        }
    }
    // Extract again (verifying each layer), under the umask of the first
    // time (`store check` runs no other thread meanwhile), and compare.
    let saved = made
        .umask
        .map(|u| rustix::process::umask(rustix::fs::Mode::from_raw_mode(u & 0o777)));
    let fresh = extract_fresh(store, &layers, overlay, &progress::Null);
    if let Some(old) = saved {
        rustix::process::umask(old);
    }
    let fresh = match fresh {
        Ok(p) => p,
        Err(e) => return Some(error_chain(&e)),
    };
    let diff = compare_trees(dir, &fresh);
    super::run::remove_tree(&fresh);
    match diff {
        Ok(None) => None,
        Ok(Some(d)) => Some(format!("differs from its layers: {d}")),
        Err(e) => Some(format!("cannot be compared with its layers: {e}")),
    }
}

/// The first difference between two trees (names, types, modes, owners,
/// sizes, times of non-directories, device numbers, link targets, contents,
/// xattrs), or `None`. Both are read through [`Root`]: nothing in them is
/// followed.
fn compare_trees(a: &Path, b: &Path) -> io::Result<Option<String>> {
    let ra = Root::open(a).map_err(io::Error::other)?;
    let rb = Root::open(b).map_err(io::Error::other)?;
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let shown = |name: &std::ffi::OsStr| {
            let p = rel.join(name);
            format!("`/{}`", p.display())
        };
        if let Some(d) = compare_entry(&ra, &rb, &rel)? {
            let what = if rel.as_os_str().is_empty() {
                "`/`".to_string()
            } else {
                format!("`/{}`", rel.display())
            };
            return Ok(Some(format!("{what}: {d}")));
        }
        if !rustix::fs::FileType::from_raw_mode(ra.lstat(&rel)?.st_mode).is_dir() {
            continue;
        }
        let ea = ra.read_dir(&rel)?;
        let eb = rb.read_dir(&rel)?;
        let names_a: Vec<_> = ea.iter().map(|e| &e.name).collect();
        let names_b: Vec<_> = eb.iter().map(|e| &e.name).collect();
        if let Some(n) = names_a.iter().find(|n| !names_b.contains(n)) {
            return Ok(Some(format!("{} is not in its layers", shown(n))));
        }
        if let Some(n) = names_b.iter().find(|n| !names_a.contains(n)) {
            return Ok(Some(format!("{} is missing", shown(n))));
        }
        for e in ea.iter().rev() {
            stack.push(rel.join(&e.name));
        }
    }
    Ok(None)
}

fn compare_entry(ra: &Root, rb: &Root, rel: &Path) -> io::Result<Option<String>> {
    use rustix::fs::FileType;
    let (sa, sb) = (ra.lstat(rel)?, rb.lstat(rel)?);
    let kind = FileType::from_raw_mode(sa.st_mode);
    if sa.st_mode != sb.st_mode {
        return Ok(Some(format!(
            "mode {:o} instead of {:o}",
            sa.st_mode, sb.st_mode
        )));
    }
    if (sa.st_uid, sa.st_gid) != (sb.st_uid, sb.st_gid) {
        return Ok(Some(format!(
            "owner {}:{} instead of {}:{}",
            sa.st_uid, sa.st_gid, sb.st_uid, sb.st_gid
        )));
    }
    if kind.is_dir() {
        return compare_xattrs(&ra.open_dir(rel)?, &rb.open_dir(rel)?);
    }
    if (sa.st_mtime, sa.st_mtime_nsec) != (sb.st_mtime, sb.st_mtime_nsec) {
        return Ok(Some("modification time changed".into()));
    }
    match kind {
        FileType::RegularFile => {
            if sa.st_size != sb.st_size {
                return Ok(Some(format!(
                    "{} bytes instead of {}",
                    sa.st_size, sb.st_size
                )));
            }
            let fa = ra.open_file_nofollow(rel)?;
            let fb = rb.open_file_nofollow(rel)?;
            if content_digest(&fa)? != content_digest(&fb)? {
                return Ok(Some("its content differs".into()));
            }
            compare_xattrs(&fa, &fb)
        }
        FileType::Symlink => Ok((ra.read_link(rel)? != rb.read_link(rel)?)
            .then(|| "its link target differs".to_string())),
        FileType::CharacterDevice | FileType::BlockDevice => {
            Ok((sa.st_rdev != sb.st_rdev).then(|| "its device number differs".to_string()))
        }
        _ => Ok(None),
    }
}

fn content_digest(f: &std::fs::File) -> io::Result<Digest> {
    let mut r = HashingReader::new(io::BufReader::with_capacity(1 << 20, f));
    io::copy(&mut r, &mut io::sink())?;
    Ok(r.finish().0)
}

/// Every extended attribute of an open file, sorted.
fn xattrs(fd: impl AsFd) -> io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let fd = fd.as_fd();
    let mut names = vec![0u8; 4096];
    let n = match rustix::fs::flistxattr(fd, &mut names) {
        Ok(n) => n,
        Err(rustix::io::Errno::NOTSUP) => return Ok(Vec::new()),
        Err(e) => return Err(e.into()),
    };
    let mut out = Vec::new();
    for name in names[..n].split(|b| *b == 0).filter(|n| !n.is_empty()) {
        let cname = std::ffi::CString::new(name).map_err(io::Error::other)?;
        let mut value = vec![0u8; 64 * 1024];
        let len = rustix::fs::fgetxattr(fd, cname.as_c_str(), &mut value)?;
        value.truncate(len);
        out.push((name.to_vec(), value));
    }
    out.sort();
    Ok(out)
}

fn compare_xattrs(a: impl AsFd, b: impl AsFd) -> io::Result<Option<String>> {
    Ok((xattrs(a)? != xattrs(b)?).then(|| "its extended attributes differ".to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trees_compare_by_content_metadata_and_names() {
        let d = tempfile::tempdir().unwrap();
        let (a, b) = (d.path().join("a"), d.path().join("b"));
        for r in [&a, &b] {
            fs_err::create_dir_all(r.join("etc")).unwrap();
            fs_err::write(r.join("etc/motd"), "hello\n").unwrap();
            fs_err::os::unix::fs::symlink("/etc/motd", r.join("link")).unwrap();
        }
        // Same times, so only what we change below differs.
        let t = std::fs::FileTimes::new().set_modified(std::time::UNIX_EPOCH);
        for r in [&a, &b] {
            let f = fs_err::File::options()
                .write(true)
                .open(r.join("etc/motd"))
                .unwrap();
            f.set_times(t).unwrap();
            // The links too: made a moment apart, their times differ.
            let zero = rustix::fs::Timespec {
                tv_sec: 0,
                tv_nsec: 0,
            };
            rustix::fs::utimensat(
                rustix::fs::CWD,
                r.join("link"),
                &rustix::fs::Timestamps {
                    last_access: zero,
                    last_modification: zero,
                },
                rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
            )
            .unwrap();
        }
        assert_eq!(compare_trees(&a, &b).unwrap(), None);
        fs_err::write(b.join("etc/motd"), "HELLO\n").unwrap();
        let f = fs_err::File::options()
            .write(true)
            .open(b.join("etc/motd"))
            .unwrap();
        f.set_times(t).unwrap();
        let diff = compare_trees(&a, &b).unwrap().unwrap();
        assert!(
            diff.contains("etc/motd") && diff.contains("content"),
            "{diff}"
        );
        fs_err::write(b.join("etc/motd"), "hello\n").unwrap();
        let f = fs_err::File::options()
            .write(true)
            .open(b.join("etc/motd"))
            .unwrap();
        f.set_times(t).unwrap();
        fs_err::write(a.join("extra"), "").unwrap();
        let diff = compare_trees(&a, &b).unwrap().unwrap();
        assert!(
            diff.contains("extra") && diff.contains("not in its layers"),
            "{diff}"
        );
    }

    #[test]
    fn records_vouch_only_for_their_own_layers() {
        let l = |d: &[u8]| LayerDescriptor {
            diff_id: Digest::of(d),
            digest: Digest::of(b"blob"),
            size: 1,
            media_type: "application/vnd.oci.image.layer.v1.tar".into(),
        };
        let made = Made::of(&[l(b"a"), l(b"b")], None);
        assert!(made.covers(&[l(b"a"), l(b"b")], None));
        assert!(!made.covers(&[l(b"a"), l(b"c")], None));
        assert!(!made.covers(&[l(b"a")], None));
        assert!(!made.covers(&[l(b"a"), l(b"b")], Some("trusted.overlay.opaque")));
    }
}
