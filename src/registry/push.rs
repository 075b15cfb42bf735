//! Pushing an image: every blob the registry lacks (asked with `HEAD`),
//! streamed from the store, then the manifest, which makes it visible.

use std::collections::HashMap;

use super::{Client, Error, Result};
use crate::digest::Digest;
use crate::oci::Manifest;
use crate::reference::Reference;
use crate::store::Store;

/// Blobs uploaded at once (docker's default `max-concurrent-uploads` is 5;
/// fewer keeps a 2-core machine's disk and CPU from thrashing).
const PARALLEL: usize = 3;

/// The store's manifests are OCI image manifests.
const MANIFEST_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";

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
/// store's tags: where a cross-repository mount can take them from.
pub fn mount_sources(store: &Store, dest: &Reference) -> HashMap<Digest, String> {
    let mut out = HashMap::new();
    for (r, id) in store.tags().unwrap_or_default() {
        if r.domain() != dest.domain() || r.path() == dest.path() {
            continue;
        }
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
    out
}

/// Pushes image `id` from the store to `reference` (its tag, or its digest).
/// A blob the registry lacks in the repository is mounted from the one
/// `mounts` names when the registry allows, else uploaded.
///
/// # Errors
/// Registry, store or file failures.
pub fn push(
    store: &Store,
    client: &Client,
    id: &Digest,
    reference: &Reference,
    mounts: &HashMap<Digest, String>,
    on: &(dyn Fn(Event<'_>) + Sync),
) -> Result<Pushed> {
    let repo = reference.path();
    let rec = store
        .image(id)?
        .ok_or_else(|| Error::NotFound(format!("image {id}")))?;
    let bytes = store.read_blob(&rec.manifest)?;
    let m = Manifest::from_bytes(&bytes)?;
    let mut blobs: Vec<(Digest, u64)> = m.layers.iter().map(|l| (l.digest, l.size)).collect();
    blobs.push((m.config, m.config_size));
    blobs.dedup();
    // Docker lists layers, not the config.
    let quiet: &[Digest] = &[m.config];
    upload_missing(store, client, repo, &blobs, quiet, mounts, on)?;
    let tag = match (reference.tag(), reference.digest()) {
        (Some(t), _) => t.to_string(),
        (None, Some(d)) => d.to_string(),
        (None, None) => "latest".to_string(),
    };
    let digest = client.put_manifest(repo, &tag, MANIFEST_TYPE, &bytes)?;
    Ok(Pushed {
        digest,
        size: bytes.len(),
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
