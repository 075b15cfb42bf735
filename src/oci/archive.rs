//! Writing image archives: an OCI image layout in a tar (`oci-layout`,
//! `index.json`, `blobs/sha256/*`) with a Docker `manifest.json` beside it, so
//! `skopeo`, `umoci`, `podman load` and `docker load` all take the same file.
//!
//! Archives are deterministic: entries in a fixed order, fixed modes and owners,
//! every timestamp the given epoch, every JSON document canonical. Blobs stream
//! from the store and are verified against their digest on the way.

use std::collections::BTreeSet;
use std::io::{self, Read, Write};

use serde_json::json;

use super::{
    ANNOTATION_CONTAINERD_NAME, ANNOTATION_REF_NAME, Error, MEDIA_DOCKER_CONFIG,
    MEDIA_DOCKER_MANIFEST, MEDIA_OCI_INDEX, MEDIA_OCI_MANIFEST, Manifest, Result,
};
use crate::digest::{Digest, HashingReader, canonical_json};
use crate::reference::Reference;
use crate::store::Store;

/// Which flavour of manifest the archive carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ArchiveFormat {
    /// OCI media types (the default).
    #[default]
    Oci,
    /// Docker v2 schema 2 media types, for old docker clients and registries.
    /// The image ID is the same; zstd layers cannot be expressed.
    Docker,
}

impl ArchiveFormat {
    /// Parses `oci` or `docker`.
    pub fn from_name(s: &str) -> Option<Self> {
        match s {
            "oci" => Some(ArchiveFormat::Oci),
            "docker" => Some(ArchiveFormat::Docker),
            _ => None,
        }
    }
}

/// What was written.
#[derive(Debug, Clone)]
pub struct Written {
    /// Digest of the manifest inside the archive (differs between formats).
    pub manifest: Digest,
    /// The image ID.
    pub config: Digest,
}

/// The manifest bytes an archive of `format` carries for the store manifest
/// `manifest_digest`: the store's own bytes for OCI, a Docker-typed twin
/// otherwise.
///
/// # Errors
/// A missing or corrupt manifest, or a layer docker cannot describe.
pub fn manifest_for_format(
    store: &Store,
    manifest_digest: &Digest,
    format: ArchiveFormat,
) -> Result<(Vec<u8>, Manifest)> {
    let bytes = store.read_blob(manifest_digest)?;
    let m = Manifest::from_bytes(&bytes)?;
    match format {
        ArchiveFormat::Oci => Ok((bytes, m)),
        ArchiveFormat::Docker => {
            let layers = m
                .layers
                .iter()
                .map(|l| {
                    let (d, size, mt) = (&l.digest, l.size, &l.media_type);
                    let docker_mt = crate::layer::Compression::from_media_type(mt)
                        .and_then(|c| c.docker_media_type())
                        .ok_or_else(|| {
                            Error::Malformed(format!(
                                "layer {d} has media type {mt}, which the docker format cannot express; use --format oci"
                            ))
                        })?;
                    Ok(json!({"mediaType": docker_mt, "digest": d.to_string(), "size": size}))
                })
                .collect::<Result<Vec<_>>>()?;
            let v = json!({
                "schemaVersion": 2,
                "mediaType": MEDIA_DOCKER_MANIFEST,
                "config": {"mediaType": MEDIA_DOCKER_CONFIG, "digest": m.config.to_string(), "size": m.config_size},
                "layers": layers,
            });
            let bytes = canonical_json(&v).map_err(|source| Error::Json {
                what: "manifest".into(),
                source,
            })?;
            Ok((bytes, m))
        }
    }
}

/// Writes the archive of one image, named by `names` (may be empty), into `out`.
///
/// # Errors
/// Missing or corrupt blobs, or a failing sink.
pub fn write_archive<W: Write>(
    store: &Store,
    manifest_digest: &Digest,
    names: &[Reference],
    format: ArchiveFormat,
    mtime: u64,
    out: W,
) -> Result<(W, Written)> {
    let (manifest_bytes, m) = manifest_for_format(store, manifest_digest, format)?;
    let manifest_digest = Digest::of(&manifest_bytes);
    let manifest_media = match format {
        ArchiveFormat::Oci => MEDIA_OCI_MANIFEST,
        ArchiveFormat::Docker => MEDIA_DOCKER_MANIFEST,
    };
    let descriptor = json!({
        "mediaType": manifest_media,
        "digest": manifest_digest.to_string(),
        "size": manifest_bytes.len(),
    });
    // One descriptor per name, all of the same manifest: `oci-archive:FILE:NAME`
    // (skopeo, umoci) finds each name. Podman 4's `load` refuses an OCI index
    // of several descriptors and then reads the docker `manifest.json`,
    // whose RepoTags carry every name too; with one name (or none) it reads
    // the OCI index. Either way every tag reaches every tool.
    let names = unique(names);
    let index = top_index(&descriptor, &names)?;
    let docker_manifest = json!([{
        "Config": format!("blobs/sha256/{}", m.config.hex()),
        "RepoTags": names.iter().map(|n| n.familiar()).collect::<Vec<_>>(),
        "Layers": m.layers.iter().map(|l| format!("blobs/sha256/{}", l.digest.hex())).collect::<Vec<_>>(),
    }]);
    let json_err = |source| Error::Json {
        what: "archive index".into(),
        source,
    };
    let docker_manifest = canonical_json(&docker_manifest).map_err(json_err)?;

    let mut tar = ::tar::Builder::new(out);
    layout_head(&mut tar, &index, Some(&docker_manifest), mtime)?;
    // Blobs in digest order; the manifest is written from memory because the
    // docker flavour is not in the store.
    let mut blobs: BTreeSet<Digest> = m.layers.iter().map(|l| l.digest).collect();
    blobs.insert(m.config);
    blobs.insert(manifest_digest);
    put_blobs(
        &mut tar,
        store,
        blobs,
        Some((manifest_digest, &manifest_bytes)),
        mtime,
    )?;
    let out = tar.into_inner().map_err(write_err)?;
    Ok((
        out,
        Written {
            manifest: manifest_digest,
            config: m.config,
        },
    ))
}

/// `names` without repeats, in order.
fn unique(names: &[Reference]) -> Vec<&Reference> {
    let mut seen = BTreeSet::new();
    names
        .iter()
        .filter(|n| seen.insert(n.to_string()))
        .collect()
}

/// The archive's `index.json`: `descriptor` once per name, annotated with
/// it (as containerd and `oci-archive:FILE:NAME` look names up), or once
/// bare without names; canonical JSON.
fn top_index(descriptor: &serde_json::Value, names: &[&Reference]) -> Result<Vec<u8>> {
    let manifests: Vec<serde_json::Value> = if names.is_empty() {
        vec![descriptor.clone()]
    } else {
        names
            .iter()
            .map(|n| {
                let mut d = descriptor.clone();
                d["annotations"] = json!({
                    ANNOTATION_REF_NAME: n.to_string(),
                    ANNOTATION_CONTAINERD_NAME: n.to_string(),
                });
                d
            })
            .collect()
    };
    canonical_json(&json!({
        "schemaVersion": 2,
        "mediaType": MEDIA_OCI_INDEX,
        "manifests": manifests,
    }))
    .map_err(|source| Error::Json {
        what: "archive index".into(),
        source,
    })
}

/// The layout's head: `oci-layout`, `index.json`, the Docker
/// `manifest.json` when there is one, and the blob directories.
fn layout_head<W: Write>(
    tar: &mut ::tar::Builder<W>,
    index: &[u8],
    docker_manifest: Option<&[u8]>,
    mtime: u64,
) -> Result<()> {
    let mut put = |name: &str, bytes: &[u8]| {
        tar.append(&header(name, bytes.len() as u64, mtime, false), bytes)
            .map_err(write_err)
    };
    put("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    put("index.json", index)?;
    if let Some(m) = docker_manifest {
        put("manifest.json", m)?;
    }
    for dir in ["blobs/", "blobs/sha256/"] {
        tar.append(&header(dir, 0, mtime, true), io::empty())
            .map_err(write_err)?;
    }
    Ok(())
}

/// Appends `blobs` from the store under `blobs/sha256/`, each verified
/// against its digest as it streams; `in_memory` is one written from
/// memory instead.
fn put_blobs<W: Write>(
    tar: &mut ::tar::Builder<W>,
    store: &Store,
    blobs: BTreeSet<Digest>,
    in_memory: Option<(Digest, &[u8])>,
    mtime: u64,
) -> Result<()> {
    for d in blobs {
        let name = format!("blobs/sha256/{}", d.hex());
        if let Some((md, bytes)) = in_memory
            && md == d
        {
            tar.append(&header(&name, bytes.len() as u64, mtime, false), bytes)
                .map_err(write_err)?;
            continue;
        }
        let file = store.open_blob(&d)?;
        let len = file
            .metadata()
            .map_err(|source| Error::Io {
                action: "reading",
                path: store.blob_path(&d),
                source,
            })?
            .len();
        let mut reader = HashingReader::new(io::BufReader::with_capacity(1 << 20, file));
        tar.append(&header(&name, len, mtime, false), &mut reader)
            .map_err(write_err)?;
        let (actual, _) = reader.finish();
        if actual != d {
            return Err(crate::store::Error::DigestMismatch {
                expected: d,
                actual,
            }
            .into());
        }
    }
    Ok(())
}

/// Writes the archive of a multi-platform image: `index.json` names the
/// image index blob (once per name, as [`write_archive`] does), which lists
/// a manifest per platform. OCI only: a Docker `manifest.json` holds one
/// platform, so there is none (load one platform with `skopeo copy
/// --override-arch`).
///
/// # Errors
/// Missing or corrupt blobs, or a failing sink.
pub fn write_index_archive<W: Write>(
    store: &Store,
    index_digest: &Digest,
    names: &[Reference],
    mtime: u64,
    out: W,
) -> Result<(W, Written)> {
    let index_bytes = store.read_blob(index_digest)?;
    let json_err = |source| Error::Json {
        what: "archive index".into(),
        source,
    };
    let index_doc: serde_json::Value = serde_json::from_slice(&index_bytes).map_err(json_err)?;
    let mut blobs = BTreeSet::new();
    blobs.insert(*index_digest);
    for e in index_doc["manifests"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
    {
        let d: Digest = e["digest"]
            .as_str()
            .and_then(|d| d.parse().ok())
            .ok_or_else(|| {
                Error::Malformed(format!("index {index_digest}: bad manifest digest"))
            })?;
        let m = Manifest::from_bytes(&store.read_blob(&d)?)?;
        blobs.insert(d);
        blobs.insert(m.config);
        blobs.extend(m.layers.iter().map(|l| l.digest));
    }
    let descriptor = json!({
        "mediaType": MEDIA_OCI_INDEX,
        "digest": index_digest.to_string(),
        "size": index_bytes.len(),
    });
    let top = top_index(&descriptor, &unique(names))?;
    let mut tar = ::tar::Builder::new(out);
    layout_head(&mut tar, &top, None, mtime)?;
    put_blobs(&mut tar, store, blobs, None, mtime)?;
    let out = tar.into_inner().map_err(write_err)?;
    Ok((
        out,
        Written {
            manifest: *index_digest,
            config: *index_digest,
        },
    ))
}

/// An image index of one manifest per platform (canonical JSON), in the
/// order given.
///
/// # Errors
/// Missing manifest blobs.
pub fn index_bytes(
    store: &Store,
    images: &[(crate::platform::Platform, Digest)],
    annotations: &[(&str, &str)],
) -> Result<Vec<u8>> {
    let mut manifests = Vec::new();
    for (p, m) in images {
        let size = store.read_blob(m)?.len();
        let mut platform = json!({"architecture": p.arch, "os": p.os});
        if !p.variant.is_empty() {
            platform["variant"] = json!(p.variant);
        }
        manifests.push(json!({
            "mediaType": MEDIA_OCI_MANIFEST,
            "digest": m.to_string(),
            "size": size,
            "platform": platform,
        }));
    }
    let mut index = json!({
        "schemaVersion": 2,
        "mediaType": MEDIA_OCI_INDEX,
        "manifests": manifests,
    });
    if !annotations.is_empty() {
        index["annotations"] = annotations
            .iter()
            .map(|(k, v)| (k.to_string(), json!(v)))
            .collect::<serde_json::Map<_, _>>()
            .into();
    }
    canonical_json(&index).map_err(|source| Error::Json {
        what: "image index".into(),
        source,
    })
}

/// A failed write to the archive's sink (the caller names the file).
fn write_err(source: io::Error) -> Error {
    Error::Io {
        action: "writing archive",
        path: std::path::PathBuf::new(),
        source,
    }
}

fn header(name: &str, size: u64, mtime: u64, dir: bool) -> ::tar::Header {
    let mut h = ::tar::Header::new_ustar();
    // Names here are short ASCII (at most `blobs/sha256/` + 64 hex digits).
    let _ = h.set_path(name);
    if dir {
        h.set_entry_type(::tar::EntryType::Directory);
        h.set_mode(0o755);
    } else {
        h.set_entry_type(::tar::EntryType::Regular);
        h.set_mode(0o644);
    }
    h.set_size(size);
    h.set_mtime(mtime);
    h.set_uid(0);
    h.set_gid(0);
    h.set_cksum();
    h
}

/// Reads all of `r`, for small documents inside archives.
pub(crate) fn read_small<R: Read>(mut r: R, limit: u64, what: &str) -> Result<Vec<u8>> {
    let mut buf = Vec::new();
    (&mut r)
        .take(limit + 1)
        .read_to_end(&mut buf)
        .map_err(|source| Error::Io {
            action: "reading",
            path: what.into(),
            source,
        })?;
    if buf.len() as u64 > limit {
        return Err(Error::Malformed(format!(
            "{what} is larger than {limit} bytes"
        )));
    }
    Ok(buf)
}
