//! Extracted root filesystems of images, kept in the store by chain ID so
//! `COPY --from` reads a stage's files from disk, and later builds reuse them.
//! A snapshot appears by rename of a complete extraction, so a crash leaves at
//! most a directory in `tmp/`.

use std::path::PathBuf;

use super::error::CopyError;
use crate::digest::{Digest, Hasher};
use crate::layer::extract::extract_layer;
use crate::oci::LayerDescriptor;
use crate::oci::import::open_layer;
use crate::store::Store;

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
/// A layer that cannot be read or extracted.
pub fn rootfs(
    store: &Store,
    layers: &[LayerDescriptor],
    warn: &dyn Fn(String),
) -> Result<PathBuf, CopyError> {
    let name = chain_id(layers).map_or_else(|| "empty".to_string(), |d| d.hex());
    let dir = store.root().join("snapshots").join(&name);
    if dir.is_dir() {
        return Ok(dir);
    }
    let snap_err = |what: String| CopyError::Snapshot { what };
    let tmp = store.tmp_path("snapshot");
    std::fs::create_dir_all(&tmp)
        .map_err(|e| snap_err(format!("creating {}: {e}", tmp.display())))?;
    let result = (|| {
        for l in layers {
            let stream = open_layer(store, &l.digest, &l.media_type)?;
            let report = extract_layer(&tmp, stream).map_err(crate::layer::Error::from)?;
            for skipped in report.skipped {
                warn(format!("layer {}: {skipped}", l.digest.short()));
            }
        }
        Ok::<(), CopyError>(())
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e);
    }
    if std::fs::rename(&tmp, &dir).is_err() {
        // Another build made the same snapshot first; use theirs.
        let _ = std::fs::remove_dir_all(&tmp);
        if !dir.is_dir() {
            return Err(snap_err(format!(
                "cannot create snapshot {}",
                dir.display()
            )));
        }
    }
    Ok(dir)
}
