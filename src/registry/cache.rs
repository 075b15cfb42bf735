//! The build cache in a registry (`--cache-to type=registry`,
//! `--cache-from`): a CI fleet shares cache hits through the registry it
//! already has. The artifact's format is [`crate::oci::cache`]'s; here it
//! is moved. `--cache-from` of an ordinary image reads the inline cache
//! in its config (`--cache-to type=inline`).

use std::collections::HashMap;
use std::sync::Arc;

use super::push::{Event, upload_missing};
use super::{Client, Error, Result};
use crate::digest::Digest;
use crate::oci::cache::{self as format, CacheManifest, Recorded};
use crate::oci::{LayerDescriptor, Manifest};
use crate::platform::Platform;
use crate::reference::Reference;
use crate::store::{BlobSource, Store};

/// Exports `images` (each with its chain of parent images) to `reference`
/// as a cache artifact. Returns how many entries.
///
/// # Errors
/// Store or registry failures.
pub fn export(
    store: &Store,
    client: &Client,
    reference: &Reference,
    images: &[Digest],
) -> Result<usize> {
    let a = format::assemble(store, images)?;
    let all: Vec<(Digest, u64)> = a.blobs.iter().map(|(d, s, _)| (*d, *s)).collect();
    let everything: Vec<Digest> = all.iter().map(|(d, _)| *d).collect();
    let mounts = super::push::mount_sources(store, reference);
    upload_missing(
        store,
        client,
        reference.path(),
        &all,
        &everything,
        &mounts,
        &|_: Event<'_>| {},
    )?;
    let tag = reference.tag().unwrap_or("latest");
    client.put_manifest(
        reference.path(),
        tag,
        crate::oci::MEDIA_OCI_MANIFEST,
        &a.manifest,
    )?;
    Ok(a.entries)
}

/// Layers of an imported registry cache, fetched on first read.
pub struct RemoteLayers {
    client: Client,
    repo: String,
    blobs: HashMap<Digest, u64>,
    /// What the cached images' configs claim each layer blob decompresses
    /// to; a fetched blob must match every claim before it is stored.
    claims: HashMap<Digest, Vec<LayerDescriptor>>,
}

impl BlobSource for RemoteLayers {
    fn has(&self, digest: &Digest) -> bool {
        self.blobs.contains_key(digest)
    }

    fn fetch(&self, store: &Store, digest: &Digest) -> std::result::Result<(), String> {
        let size = self.blobs.get(digest).copied().unwrap_or(0);
        // Decoded and hashed as it arrives; published only if it is what
        // the configs say.
        format::fetch_checked(store, digest, &self.claims, |view| {
            self.client
                .fetch_blob(view, &self.repo, digest, size, &|_| {})
                .map_err(|e| format::chain(&e))
        })
    }
}

/// Several imported caches as one source.
pub struct Sources(pub Vec<Arc<dyn BlobSource>>);

impl BlobSource for Sources {
    fn has(&self, digest: &Digest) -> bool {
        self.0.iter().any(|s| s.has(digest))
    }

    fn fetch(&self, store: &Store, digest: &Digest) -> std::result::Result<(), String> {
        match self.0.iter().find(|s| s.has(digest)) {
            Some(s) => s.fetch(store, digest),
            None => Err(format!("{digest} is in no imported cache")),
        }
    }
}

/// Imports the cache at `reference` into the store: a cache artifact's
/// entries, or the inline cache of an image (for a multi-platform image,
/// of its `platform` entry), with their image records, manifests and
/// configs. Returns the number of entries and the layers left in the
/// registry.
///
/// # Errors
/// Registry failures, or something that is neither a cache nor an image
/// with an inline cache.
pub fn import(
    store: &Store,
    client: Client,
    reference: &Reference,
    platform: &Platform,
) -> Result<(usize, RemoteLayers)> {
    let repo = reference.path().to_string();
    let what = reference.digest().map_or_else(
        || reference.tag().unwrap_or("latest").to_string(),
        ToString::to_string,
    );
    let (mut bytes, media_type, _) = client.manifest(&repo, &what)?;
    if is_index(&media_type, &bytes) {
        let index: serde_json::Value = serde_json::from_slice(&bytes)
            .map_err(|e| Error::Manifest(format!("{reference}: {e}")))?;
        let (digest, _) = crate::platform::index::select(&index, platform).map_err(|have| {
            Error::Manifest(format!(
                "{reference} has no image for {platform} (it has {})",
                crate::platform::index::list(&have)
            ))
        })?;
        bytes = client.manifest(&repo, &digest.to_string())?.0;
    }
    let fetch = |d: &Digest, size: u64| -> Result<()> {
        if !store.has_blob(d) {
            client.fetch_blob(store, &repo, d, size, &|_| {})?;
        }
        Ok(())
    };
    let origin = reference.familiar();
    let recorded: Recorded = match CacheManifest::parse(&bytes, &origin) {
        Ok(m) => {
            let (index, size) = m.index();
            fetch(&index, size)?;
            for (d, size) in m.documents() {
                fetch(&d, size)?;
            }
            format::record(store, &m, &origin)?
        }
        Err(not_a_cache) => {
            // An image: its inline cache, if it has one.
            let Ok(m) = Manifest::from_bytes(&bytes) else {
                return Err(not_a_cache.into());
            };
            fetch(&m.config, m.config_size)?;
            let config = store.read_blob(&m.config)?;
            if !format::has_inline(&config) {
                return Err(not_a_cache.into());
            }
            format::record_inline(store, &config, &m)?
        }
    };
    Ok((
        recorded.entries,
        RemoteLayers {
            client,
            repo,
            blobs: recorded.layers,
            claims: recorded.claims,
        },
    ))
}

fn is_index(media_type: &str, bytes: &[u8]) -> bool {
    if media_type == crate::oci::MEDIA_OCI_INDEX || media_type == crate::oci::MEDIA_DOCKER_LIST {
        return true;
    }
    serde_json::from_slice::<serde_json::Value>(bytes)
        .ok()
        .is_some_and(|v| v.get("manifests").is_some_and(serde_json::Value::is_array))
}
