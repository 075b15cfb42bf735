//! Pushing an image: every blob the registry lacks (asked with `HEAD`),
//! streamed from the store, then the manifest, which makes it visible. A
//! multi-platform image is every platform's image pushed so, each manifest
//! by its digest, then the index under the tag.

use std::collections::HashMap;

use super::{Client, Error, Result};
use crate::digest::Digest;
use crate::oci::Manifest;
use crate::platform::Platform;
use crate::reference::Reference;
use crate::store::Store;

/// Blobs uploaded at once (docker's default `max-concurrent-uploads` is 5;
/// fewer keeps a 2-core machine's disk and CPU from thrashing).
const PARALLEL: usize = 3;

/// The store's manifests are OCI image manifests.
const MANIFEST_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";

/// The store's indexes are OCI image indexes (a pulled one says its type).
const INDEX_TYPE: &str = "application/vnd.oci.image.index.v1+json";

/// What a push reports while it works.
#[derive(Debug, Clone, Copy)]
pub enum Event<'a> {
    /// The registry has this blob already.
    Exists(&'a Digest),
    /// The blob is uploaded.
    Pushed(&'a Digest),
    /// The registry mounted the blob from another of its repositories.
    Mounted(&'a Digest, &'a str),
}

impl Event<'_> {
    /// Docker's line for the event.
    pub fn line(&self) -> String {
        match self {
            Event::Exists(d) => format!("{}: Layer already exists", d.short()),
            Event::Pushed(d) => format!("{}: Pushed", d.short()),
            Event::Mounted(d, from) => format!("{}: Mounted from {from}", d.short()),
        }
    }
}

/// A finished push.
#[derive(Debug, Clone, Copy)]
pub struct Pushed {
    /// The manifest's digest, as the registry reports it.
    pub digest: Digest,
    /// The manifest's size in bytes.
    pub size: usize,
}

/// Repositories of the same registry that hold blobs, by blob, from the
/// store's tags (every local platform of a multi-platform one): where a
/// cross-repository mount can take them from.
pub fn mount_sources(store: &Store, dest: &Reference) -> HashMap<Digest, String> {
    let mut out = HashMap::new();
    for (r, target) in store.tag_targets().unwrap_or_default() {
        if r.domain() != dest.domain() || r.path() == dest.path() {
            continue;
        }
        for (_, id) in store.target_images(&target).unwrap_or_default() {
            let Ok(Some(rec)) = store.image(&id) else {
                continue;
            };
            let Ok(m) = store
                .read_blob(&rec.manifest)
                .map_err(Error::from)
                .and_then(|b| Manifest::from_bytes(&b).map_err(Error::from))
            else {
                continue;
            };
            for d in m.layers.iter().map(|l| l.digest).chain([m.config]) {
                out.entry(d).or_insert_with(|| r.path().to_string());
            }
        }
    }
    out
}

/// The tag (or digest) a reference names in its repository.
fn tag_of(reference: &Reference) -> String {
    match (reference.tag(), reference.digest()) {
        (Some(t), _) => t.to_string(),
        (None, Some(d)) => d.to_string(),
        (None, None) => "latest".to_string(),
    }
}

/// Pushes the manifest blob `manifest` (an image's, or one a build
/// annotated) and what it names to `reference` (its tag, or its digest).
/// A blob the registry lacks in the repository is mounted from the one
/// `mounts` names when the registry allows, else uploaded.
///
/// # Errors
/// Registry, store or file failures.
pub fn push_manifest_blob(
    store: &Store,
    client: &Client,
    manifest: &Digest,
    reference: &Reference,
    mounts: &HashMap<Digest, String>,
    on: &(dyn Fn(Event<'_>) + Sync),
) -> Result<Pushed> {
    let bytes = store.read_blob(manifest)?;
    let target = tag_of(reference);
    push_manifest(
        store,
        client,
        reference.path(),
        (&bytes, MANIFEST_TYPE),
        &target,
        mounts,
        on,
    )
}

/// Pushes one manifest (its bytes as the store has them, and its media
/// type) to `repo` under `target` (a tag or the manifest's digest): the
/// blobs it names that the registry lacks, then the manifest.
fn push_manifest(
    store: &Store,
    client: &Client,
    repo: &str,
    (bytes, media_type): (&[u8], &str),
    target: &str,
    mounts: &HashMap<Digest, String>,
    on: &(dyn Fn(Event<'_>) + Sync),
) -> Result<Pushed> {
    let m = Manifest::from_bytes(bytes)?;
    let mut blobs: Vec<(Digest, u64)> = m.layers.iter().map(|l| (l.digest, l.size)).collect();
    blobs.push((m.config, m.config_size));
    blobs.dedup();
    // Docker lists layers, not the config.
    let quiet: &[Digest] = &[m.config];
    upload_missing(store, client, repo, &blobs, quiet, mounts, on)?;
    let digest = client.put_manifest(repo, target, media_type, bytes)?;
    Ok(Pushed {
        digest,
        size: bytes.len(),
    })
}

/// A finished push of a multi-platform image.
#[derive(Debug, Clone)]
pub struct PushedIndex {
    /// Each platform's manifest, in the index's order.
    pub platforms: Vec<(String, Pushed)>,
    /// The index, under the tag.
    pub index: Pushed,
}

/// A manifest an index lists.
struct Entry {
    /// Its platform, for messages (the digest's short form when the entry
    /// names none).
    platform: String,
    digest: Digest,
    media_type: String,
}

/// An index blob's bytes, and each manifest it lists.
fn index_entries(store: &Store, index: &Digest) -> Result<(Vec<u8>, Vec<Entry>)> {
    let bytes = store.read_blob(index)?;
    let v: serde_json::Value = serde_json::from_slice(&bytes)
        .map_err(|e| Error::Manifest(format!("index {index}: not JSON: {e}")))?;
    let mut out = Vec::new();
    for e in v["manifests"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
    {
        let digest: Digest = e["digest"]
            .as_str()
            .and_then(|d| d.parse().ok())
            .ok_or_else(|| Error::Manifest(format!("index {index}: an entry has no digest")))?;
        let media_type = e["mediaType"].as_str().unwrap_or(MANIFEST_TYPE).to_string();
        let p = &e["platform"];
        let field = |k: &str| p.get(k).and_then(serde_json::Value::as_str).unwrap_or("");
        let platform = if field("architecture").is_empty() {
            digest.short()
        } else {
            Platform::new(field("os"), field("architecture"), field("variant")).to_string()
        };
        out.push(Entry {
            platform,
            digest,
            media_type,
        });
    }
    Ok((bytes, out))
}

/// Pushes the multi-platform image whose index is `index` to `reference`:
/// every manifest the index lists, each with its blobs and by its digest
/// (as [`push`] pushes one image), then the index itself under the tag.
/// `done` hears of each manifest once it is in. Nothing is uploaded
/// unless the store has every platform (a pull fetches only the ones
/// asked for).
///
/// # Errors
/// Platforms the store lacks, a nested index, registry, store or file
/// failures.
pub fn push_index(
    store: &Store,
    client: &Client,
    index: &Digest,
    reference: &Reference,
    mounts: &HashMap<Digest, String>,
    on: &(dyn Fn(Event<'_>) + Sync),
    done: &dyn Fn(&str, &Pushed),
) -> Result<PushedIndex> {
    let repo = reference.path();
    let (index_bytes, entries) = index_entries(store, index)?;
    let mut missing = Vec::new();
    let mut manifests = Vec::new();
    for Entry {
        platform,
        digest,
        media_type,
    } in &entries
    {
        if media_type.contains("index") || media_type.contains("manifest.list") {
            return Err(Error::Manifest(format!(
                "{}: the index lists another index ({digest}); imgbuild pushes one level",
                reference.familiar()
            )));
        }
        let bytes = match store.read_blob(digest) {
            Ok(b) => b,
            Err(crate::store::Error::MissingBlob(_)) => {
                missing.push(platform.clone());
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        let m = Manifest::from_bytes(&bytes)?;
        if !std::iter::once(&m.config)
            .chain(m.layers.iter().map(|l| &l.digest))
            .all(|d| store.can_read_blob(d))
        {
            missing.push(platform.clone());
            continue;
        }
        manifests.push((platform, digest, media_type, bytes));
    }
    if !missing.is_empty() {
        return Err(Error::Manifest(format!(
            "{}: the store lacks {} of this multi-platform image (pull each with \
             `imgbuild pull --platform P`, or push one platform with --platform)",
            reference.familiar(),
            missing.join(", ")
        )));
    }
    let mut platforms = Vec::new();
    for (platform, digest, media_type, bytes) in manifests {
        let pushed = push_manifest(
            store,
            client,
            repo,
            (&bytes, media_type),
            &digest.to_string(),
            mounts,
            on,
        )?;
        done(platform, &pushed);
        platforms.push((platform.clone(), pushed));
    }
    let v: serde_json::Value = serde_json::from_slice(&index_bytes)
        .map_err(|e| Error::Manifest(format!("index {index}: not JSON: {e}")))?;
    let media_type = v["mediaType"].as_str().unwrap_or(INDEX_TYPE);
    let digest = client.put_manifest(repo, &tag_of(reference), media_type, &index_bytes)?;
    Ok(PushedIndex {
        platforms,
        index: Pushed {
            digest,
            size: index_bytes.len(),
        },
    })
}

/// Uploads the blobs `repo` lacks, [`PARALLEL`] at a time: each is asked
/// for with `HEAD`, mounted from the repository `mounts` names when the
/// registry allows, else streamed (the registry checks the digest). Blobs in
/// `quiet` are not reported.
///
/// # Errors
/// Registry, store or file failures; the first one wins.
pub(super) fn upload_missing(
    store: &Store,
    client: &Client,
    repo: &str,
    blobs: &[(Digest, u64)],
    quiet: &[Digest],
    mounts: &HashMap<Digest, String>,
    on: &(dyn Fn(Event<'_>) + Sync),
) -> Result<()> {
    super::in_parallel(blobs, PARALLEL, |(digest, _)| {
        let report = !quiet.contains(digest);
        if client.has_blob(repo, digest, true)? {
            if report {
                on(Event::Exists(digest));
            }
            return Ok(());
        }
        // Opened once so that a registry cache's layer still remote is
        // fetched. No digest check here: the upload names the digest and the
        // registry refuses bytes that do not match it.
        drop(store.open_blob(digest)?);
        let path = store.blob_path(digest);
        let from = mounts.get(digest).map(String::as_str);
        let mounted = client.upload_blob(repo, digest, &path, from)?;
        match (report, mounted, from) {
            (true, true, Some(f)) => on(Event::Mounted(digest, f)),
            (true, _, _) => on(Event::Pushed(digest)),
            _ => {}
        }
        Ok(())
    })
}
