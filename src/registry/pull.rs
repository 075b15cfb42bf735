//! Pulling an image: reference → manifest (the platform's, from an index or
//! a docker manifest list) → config and layers, only the missing ones, in
//! parallel → an image in the store, tagged.
//!
//! Blobs arrive in a staging view of the store: each is verified against
//! its digest, and each layer decompressed and hashed as it streams in, so
//! that before anything is published every layer is known to be what the
//! config's diff_id says (layers already in the store are checked from what
//! the store remembers of them). A registry that lies gets a clear error and
//! leaves the store as it was: no blob, no image, no tag.

use super::{Client, Error, Result};
use crate::digest::Digest;
use crate::layer::Compression;
use crate::oci::{ImageConfig, LayerDescriptor, Manifest};
use crate::platform::Platform;
use crate::reference::Reference;
use crate::store::Store;

/// Blobs downloaded at once (docker's default `max-concurrent-downloads`).
const PARALLEL: usize = 3;

/// What a pull reports while it works.
#[derive(Debug, Clone, Copy)]
pub enum Event<'a> {
    /// The manifest is known: `tag` (or digest) of `repository`.
    Resolved {
        /// Tag or digest as asked.
        reference: &'a str,
        /// Repository path.
        repository: &'a str,
    },
    /// A layer the store already has.
    Exists(&'a Digest),
    /// A layer is being fetched: bytes so far of its size.
    Progress(&'a Digest, u64, u64),
    /// A layer is in the store.
    Complete(&'a Digest),
}

impl Event<'_> {
    /// Docker's line for the event (none for progress).
    pub fn line(&self) -> Option<String> {
        match self {
            Event::Resolved {
                reference,
                repository,
            } => Some(format!("{reference}: Pulling from {repository}")),
            Event::Exists(d) => Some(format!("{}: Already exists", d.short())),
            Event::Complete(d) => Some(format!("{}: Pull complete", d.short())),
            Event::Progress(..) => None,
        }
    }
}

/// A finished pull.
#[derive(Debug, Clone)]
pub struct Pulled {
    /// The image ID.
    pub id: Digest,
    /// The digest the registry knows the reference by (an index's, for a
    /// multi-platform image).
    pub digest: Digest,
    /// Layers fetched (0: everything was here already).
    pub fetched: usize,
}

/// Pulls `reference` for `platform` (default: the host's) into the store and tags it (tag references only).
///
/// # Errors
/// Registry, digest or store failures; no manifest for the platform.
pub fn pull(
    store: &Store,
    client: &Client,
    reference: &Reference,
    platform: Option<&Platform>,
    on: &(dyn Fn(Event<'_>) + Sync),
) -> Result<Pulled> {
    let repo = reference.path();
    let asked = match (reference.digest(), reference.tag()) {
        (Some(d), _) => d.to_string(),
        (None, Some(t)) => t.to_string(),
        (None, None) => "latest".to_string(),
    };
    let (bytes, media_type, top) = client.manifest(repo, &asked)?;
    on(Event::Resolved {
        reference: &asked,
        repository: repo,
    });
    let value: serde_json::Value = serde_json::from_slice(&bytes)
        .map_err(|e| Error::Manifest(format!("{}: manifest is not JSON: {e}", reference)))?;
    let is_index = media_type.contains("index") || media_type.contains("manifest.list");
    // A multi-platform image: the index is kept (the tag names it, and
    // other platforms pulled later join it), and so is the platform's
    // manifest, as the registry wrote it, checked against the index.
    let (bytes, index) = if is_index
        || (value.get("manifests").is_some() && value.get("layers").is_none())
    {
        let want = platform.cloned().unwrap_or_else(crate::platform::host);
        let (digest, _) = crate::platform::index::select(&value, &want).map_err(|available| {
            Error::Manifest(format!(
                "{reference} has no image for {want} (it has: {})",
                crate::platform::index::list(&available)
            ))
        })?;
        let manifest = client.manifest(repo, &digest.to_string())?.0;
        if Digest::of(&manifest) != digest {
            return Err(Error::Manifest(format!(
                "{reference}: the manifest for {want} does not match its digest {digest}"
            )));
        }
        (manifest, Some(bytes))
    } else {
        (bytes, None)
    };
    let m = Manifest::from_bytes(&bytes)?;
    let view = crate::oci::verify::staging(store)?;
    if !view.has_blob(&m.config) {
        client.fetch_blob(&view, repo, &m.config, m.config_size, &|_| {})?;
    }
    let config = ImageConfig::from_bytes(&view.read_blob(&m.config)?)?;
    let diff_ids = config.diff_ids()?;
    if diff_ids.len() != m.layers.len() {
        return Err(Error::Manifest(format!(
            "{reference}: the manifest has {} layers but the config lists {} diff_ids",
            m.layers.len(),
            diff_ids.len()
        )));
    }
    let mut missing = Vec::new();
    for l in &m.layers {
        if store.has_blob(&l.digest) {
            on(Event::Exists(&l.digest));
        } else if !missing.iter().any(|(d, _)| *d == l.digest) {
            missing.push((l.digest, l.size));
        }
    }
    fetch_all(&view, client, repo, &missing, on)?;
    let layers: Vec<LayerDescriptor> = m
        .layers
        .iter()
        .zip(diff_ids)
        .map(|(blob, diff_id)| LayerDescriptor {
            diff_id,
            digest: blob.digest,
            size: blob.size,
            media_type: Compression::from_media_type(&blob.media_type).map_or_else(
                || blob.media_type.clone(),
                |c| c.oci_media_type().to_string(),
            ),
        })
        .collect();
    crate::oci::verify::check_layers(&view, &layers)?;
    let mut blobs = vec![m.config];
    blobs.extend(layers.iter().map(|l| l.digest));
    view.publish(&blobs)?;
    let imported = crate::oci::import::finish_import(store, &m.config, m.config_size, &layers)?;
    if let Some(index) = &index {
        store.put_blob(&bytes)?;
        let index = store.put_blob(index)?;
        if reference.digest().is_none() {
            store.set_index_tag(reference, &index)?;
        }
    } else if reference.digest().is_none() {
        store.set_tag(reference, &imported.id)?;
    }
    Ok(Pulled {
        id: imported.id,
        digest: top,
        fetched: missing.len(),
    })
}

/// Fetches `blobs` on up to [`PARALLEL`] threads; the first failure wins.
fn fetch_all(
    store: &Store,
    client: &Client,
    repo: &str,
    blobs: &[(Digest, u64)],
    on: &(dyn Fn(Event<'_>) + Sync),
) -> Result<()> {
    super::in_parallel(blobs, PARALLEL, |(digest, size)| {
        let progress = |n: u64| on(Event::Progress(digest, n, *size));
        client.fetch_blob(store, repo, digest, *size, &progress)?;
        on(Event::Complete(digest));
        Ok(())
    })
}
