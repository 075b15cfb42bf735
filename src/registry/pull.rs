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

/// A platform string (`linux/amd64`, `linux/arm64/v8`) as os, arch, variant.
///
/// # Errors
/// Fewer than two parts.
pub fn parse_platform(s: &str) -> std::result::Result<(String, String, String), String> {
    let parts: Vec<&str> = s.split('/').collect();
    match parts.as_slice() {
        [os, arch] => Ok((os.to_string(), arch.to_string(), String::new())),
        [os, arch, variant] => Ok((os.to_string(), arch.to_string(), variant.to_string())),
        _ => Err(format!("platform `{s}`: expected os/arch[/variant]")),
    }
}

/// Pulls `reference` for `platform` (`os/arch[/variant]`; default: the
/// host's) into the store and tags it (tag references only).
///
/// # Errors
/// Registry, digest or store failures; no manifest for the platform.
pub fn pull(
    store: &Store,
    client: &Client,
    reference: &Reference,
    platform: Option<&str>,
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
    let bytes = if is_index || (value.get("manifests").is_some() && value.get("layers").is_none()) {
        let want = match platform {
            Some(p) => parse_platform(p).map_err(Error::Manifest)?,
            None => {
                let h: Platform = crate::platform::host();
                (h.os.to_string(), h.arch.to_string(), h.variant.to_string())
            }
        };
        let digest = select_platform(&value, &want).map_err(|available| {
            Error::Manifest(format!(
                "{reference} has no image for {}{}{} (it has: {})",
                want.0,
                format_args!("/{}", want.1),
                if want.2.is_empty() {
                    String::new()
                } else {
                    format!("/{}", want.2)
                },
                available.join(", ")
            ))
        })?;
        client.manifest(repo, &digest.to_string())?.0
    } else {
        bytes
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
    if reference.digest().is_none() {
        store.set_tag(reference, &imported.id)?;
    }
    Ok(Pulled {
        id: imported.id,
        digest: top,
        fetched: missing.len(),
    })
}

/// The manifest of an index for `(os, arch, variant)`; an empty variant
/// matches any, and an entry without one matches any asked. Err: the
/// platforms the index has.
fn select_platform(
    index: &serde_json::Value,
    (os, arch, variant): &(String, String, String),
) -> std::result::Result<Digest, Vec<String>> {
    let entries = index["manifests"].as_array().cloned().unwrap_or_default();
    let mut available = Vec::new();
    for e in &entries {
        let p = &e["platform"];
        let (eos, earch, evar) = (
            p["os"].as_str().unwrap_or(""),
            p["architecture"].as_str().unwrap_or(""),
            p["variant"].as_str().unwrap_or(""),
        );
        if eos == os
            && earch == arch
            && (variant.is_empty() || evar.is_empty() || evar == variant)
            && let Some(d) = e["digest"].as_str().and_then(|d| d.parse().ok())
        {
            return Ok(d);
        }
        if !eos.is_empty() {
            available.push(if evar.is_empty() {
                format!("{eos}/{earch}")
            } else {
                format!("{eos}/{earch}/{evar}")
            });
        }
    }
    Err(available)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn platforms_are_chosen_as_docker_chooses() {
        let d = |c: char| format!("sha256:{}", c.to_string().repeat(64));
        let index = serde_json::json!({"manifests": [
            {"digest": d('a'), "platform": {"os": "linux", "architecture": "arm", "variant": "v7"}},
            {"digest": d('b'), "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"}},
            {"digest": d('c'), "platform": {"os": "linux", "architecture": "amd64"}},
            {"digest": d('d'), "platform": {"os": "unknown", "architecture": "unknown"}},
        ]});
        let want = |s: &str| parse_platform(s).unwrap();
        assert_eq!(
            select_platform(&index, &want("linux/amd64"))
                .unwrap()
                .to_string(),
            d('c')
        );
        assert_eq!(
            select_platform(&index, &want("linux/arm64"))
                .unwrap()
                .to_string(),
            d('b')
        );
        let err = select_platform(&index, &want("linux/s390x")).unwrap_err();
        assert_eq!(
            err,
            [
                "linux/arm/v7",
                "linux/arm64/v8",
                "linux/amd64",
                "unknown/unknown"
            ]
        );
        assert!(parse_platform("linux").is_err());
    }
}
