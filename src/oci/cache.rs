//! The build cache as an OCI artifact, wherever it is kept: a registry
//! (`registry::cache` moves it), a local OCI layout directory
//! (`--cache-to type=local,dest=DIR`, read back with `src=DIR`), or the
//! image itself (`type=inline`: [`inline_config`]).
//!
//! The artifact is an image manifest whose config (media type
//! [`INDEX_TYPE`]) lists cache entries — key, image ID, manifest, parent —
//! and whose "layers" are every blob those images need (manifests,
//! configs, layers). Import reads the index, the manifests and configs
//! (small), records the images and cache entries, and leaves the layers
//! where they are: the store fetches one when something reads it
//! ([`crate::store::BlobSource`]), checked against every diff_id the
//! cached configs claim for it, so a fully cached build copies only what
//! its outputs contain.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{Error, ImageConfig, LayerDescriptor, MEDIA_OCI_CONFIG, MEDIA_OCI_MANIFEST, Manifest};
use super::{Result, descriptor};
use crate::digest::{Digest, canonical_json};
use crate::store::{BlobSource, ImageRecord, Store};

/// Media type of the cache index (the artifact's config).
pub const INDEX_TYPE: &str = "application/vnd.imgbuild.cache.index.v1+json";
/// The image-config key an inline cache lives under.
pub const INLINE_KEY: &str = "imgbuild.cache.v1";
/// Documents of a cache larger than this are not what imgbuild writes.
const SMALL_LIMIT: u64 = 16 << 20;

/// Which steps a cache export carries (buildx's `mode=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// The steps of the exported images (their chains of parent images).
    #[default]
    Min,
    /// Every step of every stage the build ran.
    Max,
}

/// One cache entry of the index.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Entry {
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

/// A cache ready to be written anywhere: its index and manifest (both
/// blobs in the store now) and every blob it names.
#[derive(Debug)]
pub struct Artifact {
    /// The cache manifest's bytes (canonical JSON).
    pub manifest: Vec<u8>,
    /// Its digest.
    pub manifest_digest: Digest,
    /// Every blob the manifest names, the index first: digest, size,
    /// media type.
    pub blobs: Vec<(Digest, u64, String)>,
    /// How many cache entries the index holds.
    pub entries: usize,
}

/// Assembles the cache of `images`, each with its chain of parent images
/// (every step that led to it).
///
/// # Errors
/// Store failures, or a store manifest that does not parse.
pub fn assemble(store: &Store, images: &[Digest]) -> Result<Artifact> {
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
        blobs.insert(
            rec.manifest,
            (bytes.len() as u64, MEDIA_OCI_MANIFEST.into()),
        );
        blobs.insert(*id, (m.config_size, MEDIA_OCI_CONFIG.into()));
        for l in m.layers {
            blobs.insert(l.digest, (l.size, l.media_type));
        }
    }
    let index = canonical_json(&Index {
        entries: entries.clone(),
    })
    .map_err(|e| Error::Malformed(format!("encoding the cache index: {e}")))?;
    let index_digest = store.put_blob(&index)?;
    let layers = blobs
        .iter()
        .map(|(d, (size, mt))| descriptor(mt, d, *size))
        .collect::<Result<Vec<_>>>()?;
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": MEDIA_OCI_MANIFEST,
        "artifactType": INDEX_TYPE,
        "config": descriptor(INDEX_TYPE, &index_digest, index.len() as u64)?,
        "layers": layers,
    });
    let manifest = canonical_json(&manifest)
        .map_err(|e| Error::Malformed(format!("encoding the cache manifest: {e}")))?;
    let manifest_digest = store.put_blob(&manifest)?;
    let mut all = vec![(index_digest, index.len() as u64, INDEX_TYPE.to_string())];
    all.extend(blobs.into_iter().map(|(d, (s, mt))| (d, s, mt)));
    Ok(Artifact {
        manifest,
        manifest_digest,
        blobs: all,
        entries: entries.len(),
    })
}

/// A cache manifest, checked to be one: what it lists besides its index.
#[derive(Debug)]
pub struct CacheManifest {
    manifest: Manifest,
}

impl CacheManifest {
    /// Parses `bytes` as a cache manifest; `origin` names it in errors.
    ///
    /// # Errors
    /// A manifest that does not parse or is not an imgbuild build cache.
    pub fn parse(bytes: &[u8], origin: &str) -> Result<CacheManifest> {
        let value: serde_json::Value =
            serde_json::from_slice(bytes).map_err(|source| Error::Json {
                what: format!("cache manifest {origin}"),
                source,
            })?;
        if value["config"]["mediaType"].as_str() != Some(INDEX_TYPE) {
            return Err(Error::Malformed(format!(
                "{origin} is not an imgbuild build cache (write one with --cache-to)"
            )));
        }
        Ok(CacheManifest {
            manifest: Manifest::from_bytes(bytes)?,
        })
    }

    /// The index blob: digest and size.
    pub fn index(&self) -> (Digest, u64) {
        (self.manifest.config, self.manifest.config_size)
    }

    /// The small documents (manifests and configs) import needs in the
    /// store: digest and size.
    pub fn documents(&self) -> impl Iterator<Item = (Digest, u64)> + '_ {
        self.manifest
            .layers
            .iter()
            .filter(|l| is_document(&l.media_type))
            .map(|l| (l.digest, l.size))
    }

    /// The layers: digest and size.
    pub fn layers(&self) -> impl Iterator<Item = (Digest, u64)> + '_ {
        self.manifest
            .layers
            .iter()
            .filter(|l| !is_document(&l.media_type))
            .map(|l| (l.digest, l.size))
    }
}

fn is_document(media_type: &str) -> bool {
    media_type == MEDIA_OCI_MANIFEST || media_type == MEDIA_OCI_CONFIG
}

/// What an import recorded, and what it left where it was.
#[derive(Debug, Default)]
pub struct Recorded {
    /// Cache entries in the index.
    pub entries: usize,
    /// Layers not in the store: digest → size.
    pub layers: HashMap<Digest, u64>,
    /// What the cached configs claim each layer blob decompresses to; a
    /// fetched blob must match every claim before it is stored.
    pub claims: HashMap<Digest, Vec<LayerDescriptor>>,
}

/// Records the cache of `m` in the store: its image records and cache
/// entries. The index, manifests and configs must be in the store by now.
///
/// # Errors
/// Store failures, or documents that do not parse.
pub fn record(store: &Store, m: &CacheManifest, origin: &str) -> Result<Recorded> {
    let (index, _) = m.index();
    let index: Index =
        serde_json::from_slice(&store.read_blob(&index)?).map_err(|source| Error::Json {
            what: format!("cache index of {origin}"),
            source,
        })?;
    record_entries(store, &index.entries, m.layers())
}

fn record_entries(
    store: &Store,
    entries: &[Entry],
    layers: impl Iterator<Item = (Digest, u64)>,
) -> Result<Recorded> {
    let layers = layers.filter(|(d, _)| !store.has_blob(d)).collect();
    // What each cached image claims of its layers, to check them when they
    // are fetched.
    let mut claims: HashMap<Digest, Vec<LayerDescriptor>> = HashMap::new();
    let mut seen = BTreeSet::new();
    for e in entries {
        if !seen.insert(e.image) {
            continue;
        }
        let (Ok(mbytes), Ok(cbytes)) = (store.read_blob(&e.manifest), store.read_blob(&e.image))
        else {
            continue;
        };
        let m = Manifest::from_bytes(&mbytes)?;
        if m.config != e.image {
            return Err(Error::Malformed(format!(
                "cache entry {}: manifest {} is not of image {}",
                e.key, e.manifest, e.image
            )));
        }
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
    for e in entries {
        if !store.has_blob(&e.manifest) || !store.has_blob(&e.image) {
            continue;
        }
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
    Ok(Recorded {
        entries: entries.len(),
        layers,
        claims,
    })
}

/// Fetches a layer into the store from wherever a cache keeps it:
/// `fetch` writes the blob into the staging view it is given; the blob is
/// published only if it decodes to what every cached config claims.
///
/// # Errors
/// The fetch's own, or a layer that is not what the cache says.
pub fn fetch_checked(
    store: &Store,
    digest: &Digest,
    claims: &HashMap<Digest, Vec<LayerDescriptor>>,
    fetch: impl FnOnce(&Store) -> std::result::Result<(), String>,
) -> std::result::Result<(), String> {
    let view = super::verify::staging(store).map_err(|e| chain(&e))?;
    fetch(&view)?;
    let claims = claims.get(digest).map_or(&[][..], Vec::as_slice);
    super::verify::check_layers(&view, claims).map_err(|e| chain(&e))?;
    view.publish(&[*digest]).map_err(|e| chain(&e))
}

/// An error with its causes, on one line (a [`BlobSource`] reports text).
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

// ---- a local OCI layout -------------------------------------------------------

/// `type=local`: a cache kept in an OCI image layout directory (as buildx
/// keeps it), its manifest named `tag` in `index.json`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// The directory.
    pub dir: PathBuf,
    /// The name of the cache manifest in `index.json` (buildx's `tag=`,
    /// default `latest`).
    pub tag: String,
    /// With `--cache-from … digest=`: that manifest, whatever its name.
    pub digest: Option<Digest>,
}

fn io_err<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> Error + 'a {
    move |source| Error::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

#[derive(Serialize, Deserialize, Default)]
struct LayoutIndex {
    #[serde(rename = "schemaVersion", default = "two")]
    schema_version: u32,
    #[serde(
        rename = "mediaType",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    media_type: String,
    #[serde(default)]
    manifests: Vec<serde_json::Value>,
}

fn two() -> u32 {
    2
}

impl Layout {
    /// Writes `a` into the layout: the blobs it lacks (each through a
    /// temporary file, synced, then renamed), then `index.json`, with the
    /// cache under [`Layout::tag`] (replacing what had that name, keeping
    /// every other entry). A reader sees the old cache or the new one.
    ///
    /// # Errors
    /// I/O failures, or an `index.json` that is not one.
    pub fn write(&self, store: &Store, a: &Artifact) -> Result<()> {
        let blobs = self.dir.join("blobs/sha256");
        fs_err::create_dir_all(&blobs).map_err(|e| Error::Io {
            action: "creating",
            path: blobs.clone(),
            source: e,
        })?;
        let manifest = (a.manifest_digest, a.manifest.len() as u64, String::new());
        for (d, size, _) in a.blobs.iter().chain([&manifest]) {
            let dest = blobs.join(d.hex());
            // Blobs are written whole (renamed into place), so one of the
            // right size is the one an earlier export wrote; an import
            // checks every byte it reads anyway.
            if fs_err::metadata(&dest).is_ok_and(|m| m.is_file() && m.len() == *size) {
                continue;
            }
            let mut from = store.open_blob(d)?;
            let mut f =
                crate::store::AtomicFile::create(&dest).map_err(io_err("creating", &dest))?;
            std::io::copy(&mut from, &mut f).map_err(io_err("writing", &dest))?;
            f.commit().map_err(io_err("writing", &dest))?;
        }
        let layout = self.dir.join("oci-layout");
        if !layout.is_file() {
            crate::store::atomic_write(&layout, br#"{"imageLayoutVersion":"1.0.0"}"#)
                .map_err(io_err("writing", &layout))?;
        }
        let index_path = self.dir.join("index.json");
        let mut index: LayoutIndex = match fs_err::File::open(&index_path) {
            Ok(f) => {
                let bytes =
                    super::archive::read_small(f, SMALL_LIMIT, &index_path.display().to_string())?;
                serde_json::from_slice(&bytes).map_err(|source| Error::Json {
                    what: index_path.display().to_string(),
                    source,
                })?
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => LayoutIndex::default(),
            Err(e) => return Err(io_err("reading", &index_path)(e)),
        };
        index.schema_version = 2;
        index.media_type = super::MEDIA_OCI_INDEX.into();
        index.manifests.retain(|m| {
            m["annotations"][super::ANNOTATION_REF_NAME].as_str() != Some(self.tag.as_str())
        });
        let mut d = serde_json::to_value(descriptor(
            MEDIA_OCI_MANIFEST,
            &a.manifest_digest,
            a.manifest.len() as u64,
        )?)
        .map_err(|source| Error::Json {
            what: "a descriptor".into(),
            source,
        })?;
        d["artifactType"] = INDEX_TYPE.into();
        d["annotations"] = serde_json::json!({ super::ANNOTATION_REF_NAME: self.tag });
        index.manifests.push(d);
        let bytes = canonical_json(&index)
            .map_err(|e| Error::Malformed(format!("encoding {}: {e}", index_path.display())))?;
        crate::store::atomic_write(&index_path, &bytes).map_err(io_err("writing", &index_path))
    }

    /// Reads the cache of the layout into the store: its documents are
    /// copied (each checked against its digest), its layers are left in
    /// the directory for [`LayoutLayers`] to copy when one is read.
    /// Every name is opened inside the directory (`confine::Root`).
    ///
    /// # Errors
    /// An unreadable layout, no cache under the tag, or documents that do
    /// not match their digests.
    pub fn import(&self, store: &Store) -> Result<(Recorded, LayoutLayers)> {
        let root = crate::confine::Root::open(&self.dir)?;
        let index_path = self.dir.join("index.json");
        let f = root
            .open_file(Path::new("index.json"))
            .map_err(io_err("opening", &index_path))?;
        let bytes = super::archive::read_small(f, SMALL_LIMIT, &index_path.display().to_string())?;
        let index: LayoutIndex = serde_json::from_slice(&bytes).map_err(|source| Error::Json {
            what: index_path.display().to_string(),
            source,
        })?;
        let origin = self.dir.display().to_string();
        let found = index.manifests.iter().find(|m| match &self.digest {
            Some(d) => m["digest"].as_str() == Some(d.to_string().as_str()),
            None => {
                m["annotations"][super::ANNOTATION_REF_NAME].as_str() == Some(self.tag.as_str())
            }
        });
        let Some(found) = found else {
            return Err(Error::Malformed(match &self.digest {
                Some(d) => format!("{origin}: no cache manifest {d} in index.json"),
                None => format!("{origin}: no cache named `{}` in index.json", self.tag),
            }));
        };
        let digest: Digest = found["digest"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| Error::BadDigest(found["digest"].to_string(), "index.json"))?;
        let copy = |d: &Digest| -> Result<()> {
            if store.has_blob(d) {
                return Ok(());
            }
            let rel = Path::new("blobs/sha256").join(d.hex());
            let f = root
                .open_file(&rel)
                .map_err(io_err("opening", &self.dir.join(&rel)))?;
            store.put_stream(f.take(SMALL_LIMIT), Some(d))?;
            Ok(())
        };
        copy(&digest)?;
        let m = CacheManifest::parse(&store.read_blob(&digest)?, &origin)?;
        copy(&m.index().0)?;
        for (d, _) in m.documents() {
            copy(&d)?;
        }
        let recorded = record(store, &m, &origin)?;
        let layers = LayoutLayers {
            root,
            dir: self.dir.clone(),
            blobs: recorded.layers.clone(),
            claims: recorded.claims.clone(),
        };
        Ok((recorded, layers))
    }
}

use std::io::Read as _;

/// The layers of a cache in a local layout, copied into the store on
/// first read.
pub struct LayoutLayers {
    root: crate::confine::Root,
    dir: PathBuf,
    blobs: HashMap<Digest, u64>,
    claims: HashMap<Digest, Vec<LayerDescriptor>>,
}

impl BlobSource for LayoutLayers {
    fn has(&self, digest: &Digest) -> bool {
        self.blobs.contains_key(digest)
    }

    fn fetch(&self, store: &Store, digest: &Digest) -> std::result::Result<(), String> {
        fetch_checked(store, digest, &self.claims, |view| {
            let rel = Path::new("blobs/sha256").join(digest.hex());
            let f = self
                .root
                .open_file(&rel)
                .map_err(|e| format!("opening {}: {e}", self.dir.join(&rel).display()))?;
            view.put_stream(f, Some(digest))
                .map(|_| ())
                .map_err(|e| chain(&e))
        })
    }
}

// ---- inline: in the image's own config ------------------------------------------

/// What an inline cache keeps for one step of the image's chain: its keys,
/// how many of the image's layers it has, and its config.
#[derive(Debug, Serialize, Deserialize)]
struct InlineStep {
    keys: Vec<Digest>,
    layers: usize,
    config: serde_json::Value,
}

/// `--cache-to type=inline`: the config of `image` with the cache of its
/// chain inside (under [`INLINE_KEY`]): each step's keys, its layer count
/// and its config. The layers are the image's own, so the cache costs the
/// image only its configs. `None` when no step of the chain is cached.
///
/// # Errors
/// Store failures, or documents that do not parse.
pub fn inline_config(store: &Store, image: &Digest) -> Result<Option<serde_json::Value>> {
    let mut keys: HashMap<Digest, Vec<Digest>> = HashMap::new();
    for (key, id) in store.cache_entries()? {
        keys.entry(id).or_default().push(key);
    }
    let mut steps = Vec::new();
    let mut cur = Some(*image);
    while let Some(id) = cur {
        let Some(rec) = store.image(&id)? else {
            break;
        };
        if let Some(k) = keys.get_mut(&id) {
            k.sort();
            let config: serde_json::Value = serde_json::from_slice(&store.read_blob(&id)?)
                .map_err(|source| Error::Json {
                    what: format!("config {id}"),
                    source,
                })?;
            let layers = Manifest::from_bytes(&store.read_blob(&rec.manifest)?)?
                .layers
                .len();
            steps.push(InlineStep {
                keys: std::mem::take(k),
                layers,
                config,
            });
        }
        cur = rec.parent;
    }
    if steps.is_empty() {
        return Ok(None);
    }
    steps.reverse();
    let mut config: serde_json::Value =
        serde_json::from_slice(&store.read_blob(image)?).map_err(|source| Error::Json {
            what: format!("config {image}"),
            source,
        })?;
    config[INLINE_KEY] = serde_json::to_value(&steps).map_err(|source| Error::Json {
        what: "the inline cache".into(),
        source,
    })?;
    Ok(Some(config))
}

/// Whether an image config (its bytes) carries an inline cache.
pub fn has_inline(config: &[u8]) -> bool {
    serde_json::from_slice::<serde_json::Value>(config)
        .ok()
        .is_some_and(|v| v.get(INLINE_KEY).is_some())
}

/// Reads the inline cache of an image (its config `config` and manifest
/// `manifest`, both in the store): every step becomes an image of the
/// first layers of it, with its own config, recorded with its keys. A
/// step's manifest is made as the builder makes one, so its image is the
/// one the cache's writer had.
///
/// # Errors
/// Store failures, or a cache that does not fit the image.
pub fn record_inline(store: &Store, config: &[u8], manifest: &Manifest) -> Result<Recorded> {
    let value: serde_json::Value =
        serde_json::from_slice(config).map_err(|source| Error::Json {
            what: "image config".into(),
            source,
        })?;
    let Some(inline) = value.get(INLINE_KEY) else {
        return Err(Error::Malformed(
            "the image has no inline build cache (write one with --cache-to type=inline)".into(),
        ));
    };
    let steps: Vec<InlineStep> =
        serde_json::from_value(inline.clone()).map_err(|source| Error::Json {
            what: "the inline cache".into(),
            source,
        })?;
    let mut entries = Vec::new();
    let mut parent: Option<Digest> = None;
    for s in steps {
        let Some(layers) = manifest.layers.get(..s.layers) else {
            return Err(Error::Malformed(format!(
                "the inline cache names {} layers of an image of {}",
                s.layers,
                manifest.layers.len()
            )));
        };
        let bytes = canonical_json(&s.config)
            .map_err(|e| Error::Malformed(format!("encoding a cached config: {e}")))?;
        let id = store.put_blob(&bytes)?;
        let descs: Vec<LayerDescriptor> = {
            let diff_ids = ImageConfig::from_bytes(&bytes)?.diff_ids()?;
            if diff_ids.len() != layers.len() {
                return Err(Error::Malformed(format!(
                    "a cached config has {} diff_ids for {} layers",
                    diff_ids.len(),
                    layers.len()
                )));
            }
            layers
                .iter()
                .zip(diff_ids)
                .map(|(l, diff_id)| LayerDescriptor {
                    diff_id,
                    digest: l.digest,
                    size: l.size,
                    media_type: l.media_type.clone(),
                })
                .collect()
        };
        let m = super::manifest_bytes(&id, bytes.len() as u64, &descs)?;
        let manifest_digest = store.put_blob(&m)?;
        for key in s.keys {
            entries.push(Entry {
                key,
                image: id,
                manifest: manifest_digest,
                parent,
            });
        }
        parent = Some(id);
    }
    record_entries(
        store,
        &entries,
        manifest.layers.iter().map(|l| (l.digest, l.size)),
    )
}
