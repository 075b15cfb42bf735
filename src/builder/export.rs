//! An image's root filesystem, flattened: `-o type=tar` (one tarball) and
//! `-o type=local` (a directory), as buildx's exporters write them.
//!
//! The filesystem is the image's snapshot (its layers extracted once into
//! the store, each verified against its diff_id), selected as a
//! `COPY --from=IMAGE / /` would select it — owners from the layers'
//! listing, not from the snapshot's files — and written by the layer tar
//! writer, uncompressed: the tarball is as deterministic as a layer. The
//! directory is that stream extracted by the root-confined extractor, so
//! nothing in the image can write outside the destination.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use super::copy::{Apply, ItemSelection};
use super::error::CopyError;
use super::sources::{self, SourceRoot};
use crate::confine::Root;
use crate::digest::Digest;
use crate::graph::{CopyFrom, CopyItem};
use crate::layer::index::{self, Merged};
use crate::layer::{Compression, LayerPath};
use crate::oci::import::open_layer;
use crate::progress::Sink;
use crate::store::Store;

/// Writes the root filesystem of image `id` as an uncompressed tar into
/// `out`, and returns `out`.
///
/// # Errors
/// A layer that cannot be read or is not what the image claims, or a
/// failing `out`.
pub fn rootfs_tar<W: Write>(
    store: &Store,
    id: &Digest,
    out: W,
    events: &dyn Sink,
) -> Result<W, CopyError> {
    let image = crate::oci::Image::load(store, id)?;
    let mut listing = Merged::new();
    for l in &image.layers {
        let stream = open_layer(store, &l.digest, &l.media_type)?;
        listing.apply(&index::list(stream, &l.digest.to_string())?);
    }
    let dir = super::snapshot::rootfs(store, &image.layers, events)?;
    let root = Arc::new(Root::open(&dir).map_err(|e| CopyError::Snapshot {
        what: e.to_string(),
    })?);
    let src = SourceRoot {
        root: &root,
        excludes: None,
        owners: Some(&listing),
    };
    let item = CopyItem {
        from: CopyFrom::Context,
        ..CopyItem::from_context(&["/"], "/")
    };
    let sel = sources::select(&src, &item, "/")?;
    let entries = super::copy::entries(
        vec![ItemSelection {
            selected: sel.entries,
            apply: Apply {
                mode: None,
                chown: false,
                uid: 0,
                gid: 0,
                epoch: None,
                now: 0,
            },
            dest_root: Some(LayerPath::default()),
            into_dir: None,
        }],
        &Merged::new(),
    )?;
    let entries = crate::layer::normalize(entries)?;
    let (out, _) = crate::layer::write(&entries, Compression::None, out, None, &mut |_| {})?;
    Ok(out)
}

/// Writes the root filesystem of image `id` into the directory `dest`
/// (created if missing; what it holds already is overwritten where the
/// image has the same path, as buildx's local exporter does).
///
/// # Errors
/// As [`rootfs_tar`], or a destination that cannot be written.
pub fn rootfs_dir(
    store: &Store,
    id: &Digest,
    dest: &Path,
    events: &dyn Sink,
) -> Result<(), CopyError> {
    fs_err::create_dir_all(dest).map_err(|source| CopyError::Read {
        path: dest.to_path_buf(),
        source,
    })?;
    // The tar streams through a pipe into the extractor: nothing is held
    // whole, on disk or in memory.
    let (reader, writer) =
        rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).map_err(|e| CopyError::Read {
            path: dest.to_path_buf(),
            source: e.into(),
        })?;
    let (reader, writer) = (std::fs::File::from(reader), std::fs::File::from(writer));
    std::thread::scope(|s| {
        let extracting = s.spawn(move || crate::layer::extract::extract_layer(dest, reader));
        let written =
            rootfs_tar(store, id, std::io::BufWriter::new(writer), events).and_then(|w| {
                w.into_inner().map(drop).map_err(|e| CopyError::Read {
                    path: dest.to_path_buf(),
                    source: e.into_error(),
                })
            });
        let extracted = extracting.join().map_err(|_| CopyError::Snapshot {
            what: format!("extracting into {} panicked", dest.display()),
        })?;
        // The extractor's failure first: the writer's is then only the
        // broken pipe it left.
        extracted.map_err(|e| CopyError::Snapshot {
            what: format!("writing into {}: {e}", dest.display()),
        })?;
        written
    })
}
