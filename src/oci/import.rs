//! Reading images into the store from OCI archives, OCI layout directories and
//! Docker archives (`docker save`), as `imgbuild load` and base images need.
//!
//! Archives are read in one streaming pass: every blob goes into a staging
//! view of the store (verified against its name where it has one, and
//! decompressed and hashed on the side if it looks like a compressed layer),
//! only the small JSON documents stay in memory. Each image's layers are then
//! checked against its config's diff_ids, and only when every image checks
//! out are its blobs published and its record written: an archive that lies
//! stores nothing. Docker-flavoured manifests are recorded as their OCI
//! equivalent: same config, same layer blobs, so the same image ID.

use std::collections::HashMap;
use std::io::{self, BufReader, Read};
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::Value;

use super::archive::read_small;
use super::{
    ANNOTATION_CONTAINERD_NAME, ANNOTATION_REF_NAME, Error, ImageConfig, LayerDescriptor,
    MEDIA_DOCKER_LIST, MEDIA_OCI_INDEX, Manifest, Result, manifest_bytes,
};
use crate::digest::Digest;
use crate::layer::{Compression, detect_compression};
use crate::platform::Platform;
use crate::reference::Reference;
use crate::store::{ImageRecord, Store};

/// Documents larger than this are not JSON metadata.
const SMALL_LIMIT: u64 = 16 << 20;

/// An image now in the store.
#[derive(Debug, Clone)]
pub struct Imported {
    /// The store's (OCI) manifest digest.
    pub manifest: Digest,
    /// The image ID.
    pub id: Digest,
    /// Names the archive gave it.
    pub names: Vec<Reference>,
}

/// Where an image is read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A tar holding an OCI layout (and possibly a docker manifest.json).
    OciArchive(PathBuf),
    /// A `docker save` tar.
    DockerArchive(PathBuf),
    /// An OCI layout directory.
    OciDir(PathBuf),
}

fn io_err<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> Error + 'a {
    move |source| Error::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

/// Imports the images of `source` into the store; with `select`, only the one
/// whose name (ref.name annotation or RepoTag) matches it, otherwise all of them.
///
/// # Errors
/// Unreadable or malformed archives, missing blobs, no or several matches, and
/// layers that are not what their configs claim ([`Error::DiffIdMismatch`]);
/// the store is then as it was.
pub fn import(
    store: &Store,
    source: &Source,
    select: Option<&str>,
    platform: &Platform,
) -> Result<Vec<Imported>> {
    let view = super::verify::staging(store)?;
    let found = match source {
        Source::OciDir(dir) => import_dir(&view, dir, select, platform)?,
        Source::OciArchive(p) | Source::DockerArchive(p) => {
            let prefer_docker = matches!(source, Source::DockerArchive(_));
            import_tar(&view, p, select, platform, prefer_docker)?
        }
    };
    // Every image checked out: now, and only now, into the store.
    let mut out = Vec::new();
    for f in found {
        let mut blobs = vec![f.config];
        blobs.extend(f.layers.iter().map(|l| l.digest));
        view.publish(&blobs)?;
        let mut imported = finish_import(store, &f.config, f.config_size, &f.layers)?;
        imported.names = f.names;
        out.push(imported);
    }
    Ok(out)
}

/// An image of an archive whose layers match its config, not yet recorded.
struct Found {
    config: Digest,
    config_size: u64,
    layers: Vec<LayerDescriptor>,
    names: Vec<Reference>,
}

/// What a tar archive held, after its blobs went into the store.
#[derive(Default)]
struct TarContents {
    /// Small files by path, in memory.
    small: HashMap<String, Vec<u8>>,
    /// Large files by path, now store blobs.
    blobs: HashMap<String, Digest>,
}

impl TarContents {
    /// The digest of the file at `path`, storing it if it was kept in memory.
    fn blob(&self, store: &Store, path: &str) -> Result<Digest> {
        let path = path.trim_start_matches("./");
        if let Some(d) = self.blobs.get(path) {
            return Ok(*d);
        }
        if let Some(bytes) = self.small.get(path) {
            return Ok(store.put_blob(bytes)?);
        }
        Err(Error::Malformed(format!("archive has no file `{path}`")))
    }
}

fn import_tar(
    store: &Store,
    path: &Path,
    select: Option<&str>,
    platform: &Platform,
    prefer_docker: bool,
) -> Result<Vec<Found>> {
    #[allow(clippy::disallowed_methods)] // the error names the path already
    let file = std::fs::File::open(path).map_err(io_err("opening", path))?;
    let mut buffered = BufReader::with_capacity(1 << 20, file);
    // `docker save | gzip` is common; accept compressed archives.
    let compression = detect_compression(&mut buffered).map_err(io_err("reading", path))?;
    let stream =
        crate::layer::Decompressor::new(buffered, compression).map_err(io_err("reading", path))?;
    let mut archive = ::tar::Archive::new(stream);
    let mut contents = TarContents::default();
    for entry in archive.entries().map_err(io_err("reading", path))? {
        let mut entry = entry.map_err(io_err("reading", path))?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let name = String::from_utf8_lossy(&entry.path_bytes())
            .trim_start_matches("./")
            .to_string();
        let size = entry.size();
        if let Some(hex) = name.strip_prefix("blobs/sha256/") {
            let expected = Digest::from_hex(hex).map_err(|_| {
                Error::Malformed(format!("{}: bad blob name `{name}`", path.display()))
            })?;
            if !store.has_blob(&expected) {
                store.put_stream(&mut entry, Some(&expected))?;
            }
            contents.blobs.insert(name, expected);
        } else if size <= SMALL_LIMIT && (name.ends_with(".json") || !name.contains('/')) {
            let bytes = read_small(&mut entry, SMALL_LIMIT, &name)?;
            contents.small.insert(name, bytes);
        } else {
            let (d, _) = store.put_stream(&mut entry, None)?;
            contents.blobs.insert(name, d);
        }
    }
    let has_index = contents.small.contains_key("index.json");
    let has_docker = contents.small.contains_key("manifest.json");
    if has_docker && (prefer_docker || !has_index) {
        import_docker(store, &contents, select, path)
    } else if has_index {
        let index = contents
            .small
            .get("index.json")
            .cloned()
            .unwrap_or_default();
        let mut fetch = |d: &Digest| -> Result<()> {
            if store.has_blob(d) {
                Ok(())
            } else {
                Err(Error::Malformed(format!(
                    "{}: blob {d} is referenced but not in the archive",
                    path.display()
                )))
            }
        };
        import_index(store, &index, select, platform, &mut fetch, path)
    } else {
        Err(Error::Malformed(format!(
            "{} is neither an OCI archive (no index.json) nor a docker archive (no manifest.json)",
            path.display()
        )))
    }
}

/// An OCI layout directory is someone else's files: `index.json` and the
/// blobs are opened inside it (a symlinked `blobs/sha256/…` cannot name a
/// host file), and each blob is stored only if its bytes match its digest.
fn import_dir(
    store: &Store,
    dir: &Path,
    select: Option<&str>,
    platform: &Platform,
) -> Result<Vec<Found>> {
    let root = crate::confine::Root::open(dir)?;
    let index_path = dir.join("index.json");
    let f = root
        .open_file(Path::new("index.json"))
        .map_err(io_err("opening", &index_path))?;
    let index = read_small(f, SMALL_LIMIT, &index_path.display().to_string())?;
    let mut fetch = |d: &Digest| -> Result<()> {
        if store.has_blob(d) {
            return Ok(());
        }
        let rel = Path::new("blobs/sha256").join(d.hex());
        let f = root
            .open_file(&rel)
            .map_err(io_err("opening", &dir.join(&rel)))?;
        store.put_stream(f, Some(d))?;
        Ok(())
    };
    import_index(store, &index, select, platform, &mut fetch, dir)
}

#[derive(Deserialize)]
struct IndexDoc {
    #[serde(default)]
    manifests: Vec<DescriptorDoc>,
}

#[derive(Deserialize, Clone)]
struct DescriptorDoc {
    #[serde(rename = "mediaType", default)]
    media_type: String,
    digest: String,
    #[serde(default)]
    annotations: HashMap<String, String>,
}

fn names_of(annotations: &HashMap<String, String>, origin: &Path) -> Vec<Reference> {
    // containerd's full name first, then a ref.name that is a name.
    let named = [ANNOTATION_CONTAINERD_NAME, ANNOTATION_REF_NAME]
        .iter()
        .filter_map(|k| annotations.get(*k))
        .find_map(|v| {
            let looks_named = v.contains('/') || v.contains(':');
            looks_named.then(|| Reference::parse(v).ok()).flatten()
        });
    // A ref.name that is only a tag (`latest`, as BuildKit writes it) names
    // the image after the archive, as podman does: localhost/STEM:TAG.
    let tag_only = || {
        let tag = annotations.get(ANNOTATION_REF_NAME)?;
        let stem = archive_stem(origin)?;
        Reference::parse(&format!("localhost/{stem}:{tag}")).ok()
    };
    named.or_else(tag_only).into_iter().collect()
}

/// The archive's file name without its archive extensions (`app.oci.tar`:
/// `app`), lowercased, as a repository name; `None` when nothing is left.
fn archive_stem(origin: &Path) -> Option<String> {
    let mut name = origin.file_name()?.to_str()?.to_ascii_lowercase();
    while let Some((stem, ext)) = name.rsplit_once('.') {
        if !matches!(ext, "tar" | "gz" | "tgz" | "zst" | "oci" | "docker") {
            break;
        }
        name = stem.to_string();
    }
    let clean: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '-'
            }
        })
        .collect();
    let clean = clean.trim_matches(|c: char| !c.is_ascii_alphanumeric());
    (!clean.is_empty()).then(|| clean.to_string())
}

fn matches_select(select: &str, annotations: &HashMap<String, String>) -> bool {
    let norm = Reference::parse(select).ok();
    annotations
        .iter()
        .filter(|(k, _)| *k == ANNOTATION_REF_NAME || *k == ANNOTATION_CONTAINERD_NAME)
        .any(|(_, v)| {
            v == select
                || norm
                    .as_ref()
                    .is_some_and(|n| Reference::parse(v).is_ok_and(|r| r == *n))
        })
}

fn import_index(
    store: &Store,
    index: &[u8],
    select: Option<&str>,
    platform: &Platform,
    fetch: &mut dyn FnMut(&Digest) -> Result<()>,
    origin: &Path,
) -> Result<Vec<Found>> {
    let doc: IndexDoc = serde_json::from_slice(index).map_err(|source| Error::Json {
        what: format!("{}: index.json", origin.display()),
        source,
    })?;
    // A manifest digest selects that manifest (or index) of the layout,
    // listed in index.json or not (`oci-layout://PATH@DIGEST`).
    let by_digest = select.filter(|s| s.starts_with("sha256:") && s.parse::<Digest>().is_ok());
    let chosen: Vec<DescriptorDoc> = match select {
        Some(sel) if by_digest.is_some() => {
            let listed = doc.manifests.iter().find(|d| d.digest == sel);
            vec![DescriptorDoc {
                media_type: listed.map(|d| d.media_type.clone()).unwrap_or_default(),
                digest: sel.to_string(),
                annotations: listed.map(|d| d.annotations.clone()).unwrap_or_default(),
            }]
        }
        Some(sel) => doc
            .manifests
            .iter()
            .filter(|d| matches_select(sel, &d.annotations))
            .cloned()
            .collect(),
        None => doc.manifests.clone(),
    };
    if chosen.is_empty() {
        return Err(Error::Malformed(match select {
            Some(sel) => format!("{}: no image named `{sel}`", origin.display()),
            None => format!("{}: the index lists no images", origin.display()),
        }));
    }
    // An archive names one image once per tag (one descriptor each, as
    // imgbuild and `podman save` write them): one image, every name.
    let mut images: Vec<(Digest, &DescriptorDoc, Vec<Reference>)> = Vec::new();
    for desc in &chosen {
        let digest: Digest = desc
            .digest
            .parse()
            .map_err(|_| Error::BadDigest(desc.digest.clone(), "index.json"))?;
        let names = names_of(&desc.annotations, origin);
        match images.iter_mut().find(|(d, _, _)| *d == digest) {
            Some((_, _, known)) => {
                for n in names {
                    if !known.contains(&n) {
                        known.push(n);
                    }
                }
            }
            None => images.push((digest, desc, names)),
        }
    }
    let mut out = Vec::new();
    for (digest, desc, names) in images {
        let manifest = resolve_platform(store, &desc.media_type, digest, platform, fetch, origin)?;
        let mut found = check_manifest(store, &manifest, fetch)?;
        found.names = names;
        out.push(found);
    }
    Ok(out)
}

/// Follows nested indexes / manifest lists down to the manifest for this host.
fn resolve_platform(
    store: &Store,
    media_type: &str,
    digest: Digest,
    platform: &Platform,
    fetch: &mut dyn FnMut(&Digest) -> Result<()>,
    origin: &Path,
) -> Result<Digest> {
    let (mut digest, mut media_type) = (digest, media_type.to_string());
    // A loop, bounded: a hostile archive may nest indexes without end.
    for _ in 0..MAX_INDEX_DEPTH {
        fetch(&digest)?;
        let bytes = store.read_blob(&digest)?;
        let v: Value = serde_json::from_slice(&bytes).map_err(|source| Error::Json {
            what: format!("manifest {digest}"),
            source,
        })?;
        let mt = v
            .get("mediaType")
            .and_then(Value::as_str)
            .unwrap_or(&media_type);
        let is_index =
            mt == MEDIA_OCI_INDEX || mt == MEDIA_DOCKER_LIST || v.get("manifests").is_some();
        if !is_index {
            return Ok(digest);
        }
        let (d, next) = crate::platform::index::select(&v, platform).map_err(|has| {
            Error::Malformed(format!(
                "{}: no image for {platform} in index {digest} (it has: {})",
                origin.display(),
                crate::platform::index::list(&has)
            ))
        })?;
        (digest, media_type) = (d, next);
    }
    Err(Error::Malformed(format!(
        "{}: indexes nested more than {MAX_INDEX_DEPTH} deep",
        origin.display()
    )))
}

/// How deep image indexes may nest in an archive or layout (real ones
/// nest one level: `index.json` names an image index).
const MAX_INDEX_DEPTH: usize = 8;

/// Makes sure config and layers are present and the layers are what the
/// config claims.
fn check_manifest(
    store: &Store,
    manifest_digest: &Digest,
    fetch: &mut dyn FnMut(&Digest) -> Result<()>,
) -> Result<Found> {
    let m = Manifest::from_bytes(&store.read_blob(manifest_digest)?)?;
    fetch(&m.config)?;
    let config = ImageConfig::from_bytes(&store.read_blob(&m.config)?)?;
    let diff_ids = config.diff_ids()?;
    if diff_ids.len() != m.layers.len() {
        return Err(Error::Malformed(format!(
            "manifest {manifest_digest} has {} layers but its config lists {} diff_ids",
            m.layers.len(),
            diff_ids.len()
        )));
    }
    let mut layers = Vec::new();
    for (blob, diff_id) in m.layers.iter().zip(diff_ids) {
        fetch(&blob.digest)?;
        let media_type = Compression::from_media_type(&blob.media_type).map_or_else(
            || blob.media_type.clone(),
            |c| c.oci_media_type().to_string(),
        );
        layers.push(LayerDescriptor {
            diff_id,
            digest: blob.digest,
            size: blob.size,
            media_type,
        });
    }
    super::verify::check_layers(store, &layers)?;
    Ok(Found {
        config: m.config,
        config_size: m.config_size,
        layers,
        names: Vec::new(),
    })
}

pub(crate) fn finish_import(
    store: &Store,
    config: &Digest,
    config_size: u64,
    layers: &[LayerDescriptor],
) -> Result<Imported> {
    let bytes = manifest_bytes(config, config_size, layers)?;
    let manifest = store.put_blob(&bytes)?;
    // An image already known (e.g. built here) keeps its parent link.
    let parent = store.image(config)?.and_then(|r| r.parent);
    store.put_image(config, &ImageRecord { manifest, parent })?;
    Ok(Imported {
        manifest,
        id: *config,
        names: Vec::new(),
    })
}

#[derive(Deserialize)]
struct DockerManifestEntry {
    #[serde(rename = "Config")]
    config: String,
    #[serde(rename = "RepoTags", default)]
    repo_tags: Option<Vec<String>>,
    #[serde(rename = "Layers", default)]
    layers: Vec<String>,
}

fn import_docker(
    store: &Store,
    contents: &TarContents,
    select: Option<&str>,
    origin: &Path,
) -> Result<Vec<Found>> {
    let raw = contents
        .small
        .get("manifest.json")
        .cloned()
        .unwrap_or_default();
    let entries: Vec<DockerManifestEntry> =
        serde_json::from_slice(&raw).map_err(|source| Error::Json {
            what: format!("{}: manifest.json", origin.display()),
            source,
        })?;
    let norm = select.and_then(|s| Reference::parse(s).ok());
    let mut out = Vec::new();
    for e in entries {
        let names: Vec<Reference> = e
            .repo_tags
            .unwrap_or_default()
            .iter()
            .filter_map(|t| Reference::parse(t).ok())
            .collect();
        if let Some(sel) = select
            && !names
                .iter()
                .any(|n| Some(n) == norm.as_ref() || n.familiar() == sel)
        {
            continue;
        }
        let config = contents.blob(store, &e.config)?;
        let config_bytes = store.read_blob(&config)?;
        let config_size = config_bytes.len() as u64;
        let cfg = ImageConfig::from_bytes(&config_bytes)?;
        let diff_ids = cfg.diff_ids()?;
        if diff_ids.len() != e.layers.len() {
            return Err(Error::Malformed(format!(
                "{}: image {} has {} layers but its config lists {} diff_ids",
                origin.display(),
                e.config,
                e.layers.len(),
                diff_ids.len()
            )));
        }
        let mut layers = Vec::new();
        for (lp, diff_id) in e.layers.iter().zip(diff_ids) {
            let digest = contents.blob(store, lp)?;
            // Docker archives give no media types: the bytes tell.
            let blob_path = store.blob_path(&digest);
            let f = store.open_blob(&digest)?;
            let size = f.metadata().map_err(io_err("reading", &blob_path))?.len();
            let mut br = BufReader::new(f);
            let c = detect_compression(&mut br).map_err(io_err("reading", &blob_path))?;
            layers.push(LayerDescriptor {
                diff_id,
                digest,
                size,
                media_type: c.oci_media_type().to_string(),
            });
        }
        super::verify::check_layers(store, &layers)?;
        out.push(Found {
            config,
            config_size,
            layers,
            names,
        });
    }
    if out.is_empty() {
        return Err(Error::Malformed(match select {
            Some(sel) => format!("{}: no image named `{sel}`", origin.display()),
            None => format!("{}: manifest.json lists no images", origin.display()),
        }));
    }
    Ok(out)
}

/// Reads a layer blob from the store as an uncompressed tar stream.
///
/// # Errors
/// A missing blob or an unknown compression.
pub fn open_layer(
    store: &Store,
    digest: &Digest,
    media_type: &str,
) -> Result<Box<dyn Read + Send>> {
    let f = store.open_blob(digest)?;
    let compression = Compression::from_media_type(media_type).ok_or_else(|| {
        Error::Malformed(format!(
            "layer {digest} has unsupported media type {media_type}"
        ))
    })?;
    let d = crate::layer::Decompressor::new(BufReader::with_capacity(1 << 20, f), compression)
        .map_err(io_err("reading", &store.blob_path(digest)))?;
    Ok(Box::new(d))
}
