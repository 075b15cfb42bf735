//! An image in the store, read the one way: record → manifest → config →
//! layers, with every layer's diff_id paired with its blob.

use super::{Error, ImageConfig, LayerDescriptor, Manifest, Result};
use crate::digest::Digest;
use crate::store::Store;

/// An image the store holds: its config and its layers, bottom first.
#[derive(Debug, Clone)]
pub struct Image {
    /// The image ID (the config's digest).
    pub id: Digest,
    /// The digest of its manifest in the store.
    pub manifest: Digest,
    /// Its config.
    pub config: ImageConfig,
    /// Its layers, bottom first, each with the diff_id the config lists.
    pub layers: Vec<LayerDescriptor>,
}

impl Image {
    /// The image whose ID is `id`.
    ///
    /// # Errors
    /// No such image, missing or malformed blobs, or a manifest and config
    /// that disagree on the number of layers.
    pub fn load(store: &Store, id: &Digest) -> Result<Image> {
        let rec = store
            .image(id)?
            .ok_or_else(|| crate::store::Error::NoSuchImage(id.to_string()))?;
        Self::from_manifest(store, &rec.manifest)
    }

    /// The image whose manifest is the blob `manifest`.
    ///
    /// # Errors
    /// As [`Image::load`].
    pub fn from_manifest(store: &Store, manifest: &Digest) -> Result<Image> {
        let m = Manifest::from_bytes(&store.read_blob(manifest)?)?;
        let config = ImageConfig::from_bytes(&store.read_blob(&m.config)?)?;
        let diff_ids = config.diff_ids()?;
        if diff_ids.len() != m.layers.len() {
            return Err(Error::Malformed(format!(
                "manifest {manifest} has {} layers but its config lists {} diff_ids",
                m.layers.len(),
                diff_ids.len()
            )));
        }
        let layers = m
            .layers
            .into_iter()
            .zip(diff_ids)
            .map(|(blob, diff_id)| LayerDescriptor {
                diff_id,
                digest: blob.digest,
                size: blob.size,
                media_type: blob.media_type,
            })
            .collect();
        Ok(Image {
            id: m.config,
            manifest: *manifest,
            config,
            layers,
        })
    }
}
