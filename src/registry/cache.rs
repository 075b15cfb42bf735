//! The build cache in a registry (`--cache-to`, `--cache-from`): a CI fleet
//! shares cache hits through the registry it already has.
//!
//! The export is an OCI artifact: an image manifest whose config (media
//! type [`INDEX_TYPE`]) lists cache entries — key, image ID, manifest,
//! parent — and whose "layers" are every blob those images need (manifests,
//! configs, layers). Import fetches the index, the manifests and configs
//! (small), records the images and cache entries, and leaves the layers in
//! the registry: the store fetches one when something reads it
//! ([`crate::store::BlobSource`]), so a fully cached build downloads only
//! what its outputs contain.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::push::{Event, upload_missing};
use super::{Client, Error, Result};
use crate::digest::{Digest, canonical_json};
use crate::oci::{ImageConfig, LayerDescriptor, Manifest, descriptor};
use crate::reference::Reference;
use crate::store::{BlobSource, ImageRecord, Store};

/// Media type of the cache index (the artifact's config).
pub const INDEX_TYPE: &str = "application/vnd.imgbuild.cache.index.v1+json";
const MANIFEST_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
const CONFIG_TYPE: &str = "application/vnd.oci.image.config.v1+json";

/// One cache entry of the index.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
struct Entry {
    key: Digest,
    image: Digest,
    manifest: Digest,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    parent: Option<Digest>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Index {
    entries: Vec<Entry>,
}

/// Exports the cache of `images` (each with its chain of parent images:
/// every step that led to it) to `reference`. Returns how many entries.
///
/// # Errors
/// Store or registry failures.
pub fn export(
    store: &Store,
    client: &Client,
    reference: &Reference,
    images: &[Digest],
) -> Result<usize> {
    // The images, walking parent links.
    let mut chain: BTreeMap<Digest, ImageRecord> = BTreeMap::new();
    for id in images {
        let mut cur = Some(*id);
        while let Some(id) = cur {
            if chain.contains_key(&id) {
                break;
            }
            let Some(rec) = store.image(&id)? else {
                break;
            };
            cur = rec.parent;
            chain.insert(id, rec);
        }
    }
    let entries: Vec<Entry> = store
        .cache_entries()?
        .into_iter()
        .filter_map(|(key, image)| {
            let rec = chain.get(&image)?;
            Some(Entry {
                key,
                image,
                manifest: rec.manifest,
                parent: rec.parent,
            })
        })
        .collect();
    // Every blob those images need, once, with its media type.
    let mut blobs: BTreeMap<Digest, (u64, String)> = BTreeMap::new();
    for (id, rec) in &chain {
        let bytes = store.read_blob(&rec.manifest)?;
        let m = Manifest::from_bytes(&bytes)?;
        blobs.insert(rec.manifest, (bytes.len() as u64, MANIFEST_TYPE.into()));
        blobs.insert(*id, (m.config_size, CONFIG_TYPE.into()));
        for l in m.layers {
            blobs.insert(l.digest, (l.size, l.media_type));
        }
    }
    let index = canonical_json(&Index {
        entries: entries.clone(),
    })
    .map_err(|e| Error::Manifest(format!("encoding the cache index: {e}")))?;
    let index_digest = store.put_blob(&index)?;
    let layers = blobs
        .iter()
        .map(|(d, (size, mt))| descriptor(mt, d, *size))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": MANIFEST_TYPE,
        "artifactType": INDEX_TYPE,
        "config": descriptor(INDEX_TYPE, &index_digest, index.len() as u64)?,
        "layers": layers,
    });
    let manifest = canonical_json(&manifest)
        .map_err(|e| Error::Manifest(format!("encoding the cache manifest: {e}")))?;

    let mut all: Vec<(Digest, u64)> = blobs.iter().map(|(d, (s, _))| (*d, *s)).collect();
    all.push((index_digest, index.len() as u64));
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
    client.put_manifest(reference.path(), tag, MANIFEST_TYPE, &manifest)?;
    Ok(entries.len())
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
        let chain = |e: &dyn std::error::Error| {
            let mut s = e.to_string();
            let mut cur = e.source();
            while let Some(c) = cur {
                s.push_str(": ");
                s.push_str(&c.to_string());
                cur = c.source();
            }
            s
        };
        // Decoded and hashed as it arrives; published only if it is what
        // the configs say.
        let view = crate::oci::verify::staging(store).map_err(|e| chain(&e))?;
        self.client
            .fetch_blob(&view, &self.repo, digest, size, &|_| {})
            .map_err(|e| chain(&e))?;
        let claims = self.claims.get(digest).map_or(&[][..], Vec::as_slice);
        crate::oci::verify::check_layers(&view, claims).map_err(|e| chain(&e))?;
        view.publish(&[*digest]).map_err(|e| chain(&e))
    }
}

/// Several imported caches as one source.
pub struct Sources(pub Vec<Arc<RemoteLayers>>);

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

/// Imports the cache at `reference` into the store: its entries and image
/// records, with their manifests and configs. Returns the number of entries
/// and the layers left in the registry.
///
/// # Errors
/// Registry failures, or an artifact that is not an imgbuild cache.
pub fn import(
    store: &Store,
    client: Client,
    reference: &Reference,
) -> Result<(usize, RemoteLayers)> {
    let repo = reference.path().to_string();
    let tag = reference.tag().unwrap_or("latest").to_string();
    let (bytes, _, _) = client.manifest(&repo, &tag)?;
    let m = Manifest::from_bytes(&bytes)?;
    let value: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|e| Error::Manifest(format!("{reference}: {e}")))?;
    if value["config"]["mediaType"].as_str() != Some(INDEX_TYPE) {
        return Err(Error::Manifest(format!(
            "{reference} is not an imgbuild build cache (write one with --cache-to)"
        )));
    }
    if !store.has_blob(&m.config) {
        client.fetch_blob(store, &repo, &m.config, m.config_size, &|_| {})?;
    }
    let index: Index = serde_json::from_slice(&store.read_blob(&m.config)?)
        .map_err(|e| Error::Manifest(format!("{reference}: cache index: {e}")))?;
    let mut layers = HashMap::new();
    for l in &m.layers {
        if l.media_type == MANIFEST_TYPE || l.media_type == CONFIG_TYPE {
            if !store.has_blob(&l.digest) {
                client.fetch_blob(store, &repo, &l.digest, l.size, &|_| {})?;
            }
        } else if !store.has_blob(&l.digest) {
            layers.insert(l.digest, l.size);
        }
    }
    // What each cached image claims of its layers, to check them when they
    // are fetched.
    let mut claims: HashMap<Digest, Vec<LayerDescriptor>> = HashMap::new();
    for e in &index.entries {
        let (Ok(mbytes), Ok(cbytes)) = (store.read_blob(&e.manifest), store.read_blob(&e.image))
        else {
            continue;
        };
        let m = Manifest::from_bytes(&mbytes)?;
        let diff_ids = ImageConfig::from_bytes(&cbytes)?.diff_ids()?;
        for (blob, diff_id) in m.layers.into_iter().zip(diff_ids) {
            let digest = blob.digest;
            let l = LayerDescriptor {
                diff_id,
                digest,
                size: blob.size,
                media_type: blob.media_type,
            };
            let v = claims.entry(digest).or_default();
            if !v.contains(&l) {
                v.push(l);
            }
        }
    }
    for e in &index.entries {
        if store.image(&e.image)?.is_none() {
            store.put_image(
                &e.image,
                &ImageRecord {
                    manifest: e.manifest,
                    parent: e.parent,
                },
            )?;
        }
        if store.cache_get(&e.key)?.is_none() {
            store.cache_put(&e.key, &e.image)?;
        }
    }
    Ok((
        index.entries.len(),
        RemoteLayers {
            client,
            repo,
            blobs: layers,
            claims,
        },
    ))
}
