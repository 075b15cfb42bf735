//! Writing the output images: tags, then archives written atomically, left
//! alone when their bytes would not change, and remembered in the store so an
//! untouched archive for the same inputs is not even regenerated.

use std::path::Path;

use super::cx::Cx;
use super::{AnnotationLevel, BuiltImage, Error, Planned, Result};
use crate::digest::Digest;
use crate::graph::{Base, StageId};
use crate::oci::archive::{ArchiveFormat, write_archive};
use crate::platform::Platform;
use crate::progress::Event;
use crate::reference::Reference;
use crate::store::AtomicFile;
use crate::store::memo::FileStat;

/// What an archive holds: one image's manifest, or a multi-platform index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Content {
    Manifest(Digest),
    Index(Digest),
}

impl Content {
    fn digest(self) -> Digest {
        match self {
            Content::Manifest(d) | Content::Index(d) => d,
        }
    }
}

/// An output's image for one platform: `(platform, id, manifest)`.
type PlatformImage = (Option<Platform>, Digest, Digest);

impl Cx<'_> {
    /// The output's images, each for its platform: `(platform, id,
    /// manifest)`. A stage rooted in scratch gets the platform it was built
    /// for in its config (its root stage's `FROM --platform`, else the
    /// output's), as BuildKit's empty image does; the store's scratch
    /// config says the host's, so that stages without platform-dependent
    /// inputs are shared between platforms.
    fn images_of(&self, o: &Planned) -> Result<Vec<PlatformImage>> {
        let images = self.platform_images(o)?;
        if !self.opts.inline_cache && self.opts.labels.is_empty() {
            return Ok(images);
        }
        images
            .into_iter()
            .map(|(p, id, m)| {
                let (id, m) = self.finished(id, m)?;
                Ok((p, id, m))
            })
            .collect()
    }

    /// An output image as the flags finish it, a child of `id` in the
    /// store: `--label`s in its config (as BuildKit applies them: no
    /// history entry), then with `--cache-to type=inline` the cache of its
    /// steps ([`crate::oci::cache::inline_config`]).
    fn finished(&self, id: Digest, manifest: Digest) -> Result<(Digest, Digest)> {
        let (mut id, mut manifest) = (id, manifest);
        if !self.opts.labels.is_empty() {
            let mut config: serde_json::Value = serde_json::from_slice(&self.store.read_blob(&id)?)
                .map_err(|e| Error::Internal {
                    what: format!("reading config {id}: {e}"),
                })?;
            if !config["config"].is_object() {
                config["config"] = serde_json::json!({});
            }
            if !config["config"]["Labels"].is_object() {
                config["config"]["Labels"] = serde_json::json!({});
            }
            for (k, v) in &self.opts.labels {
                config["config"]["Labels"][k] = serde_json::Value::String(v.clone());
            }
            (id, manifest) = self.child_image(id, &config)?;
        }
        if self.opts.inline_cache
            && let Some(config) = crate::oci::cache::inline_config(self.store, &id)?
        {
            (id, manifest) = self.child_image(id, &config)?;
        }
        Ok((id, manifest))
    }

    /// Stores an image of `config` over the layers of `parent`.
    fn child_image(&self, parent: Digest, config: &serde_json::Value) -> Result<(Digest, Digest)> {
        let bytes = crate::digest::canonical_json(config).map_err(|e| Error::Internal {
            what: format!("encoding an output config: {e}"),
        })?;
        let layers = crate::oci::Image::load(self.store, &parent)?.layers;
        let new_id = self.store.put_blob(&bytes)?;
        let m = crate::oci::manifest_bytes(&new_id, bytes.len() as u64, &layers)?;
        let new_manifest = self.store.put_blob(&m)?;
        self.store.put_image(
            &new_id,
            &crate::store::ImageRecord {
                manifest: new_manifest,
                parent: Some(parent),
            },
        )?;
        Ok((new_id, new_manifest))
    }

    fn platform_images(&self, o: &Planned) -> Result<Vec<PlatformImage>> {
        let mut out = Vec::new();
        for (platform, stage) in &o.images {
            let state = self.result(*stage)?.ok_or_else(|| Error::Internal {
                what: "output stage was not built".into(),
            })?;
            let (Some(id), Some(manifest)) = (state.id, state.manifest) else {
                return Err(Error::Internal {
                    what: "output image was not committed".into(),
                });
            };
            let Some(want) = platform
                .as_ref()
                .and_then(|p| self.scratch_platform(*stage, p))
            else {
                out.push((platform.clone(), id, manifest));
                continue;
            };
            let mut image = crate::oci::Image::load(self.store, &id)?;
            let cfg = &mut image.config.oci;
            let variant = (!want.variant.is_empty()).then(|| want.variant.clone());
            if cfg.architecture().to_string() == want.arch
                && cfg.os().to_string() == want.os
                && *cfg.variant() == variant
            {
                out.push((platform.clone(), id, manifest));
                continue;
            }
            cfg.set_architecture(oci_spec::image::Arch::from(want.arch.as_str()));
            cfg.set_os(oci_spec::image::Os::from(want.os.as_str()));
            cfg.set_variant(variant);
            let bytes = image.config.to_bytes()?;
            let new_id = self.store.put_blob(&bytes)?;
            let m = crate::oci::manifest_bytes(&new_id, bytes.len() as u64, &image.layers)?;
            let new_manifest = self.store.put_blob(&m)?;
            self.store.put_image(
                &new_id,
                &crate::store::ImageRecord {
                    manifest: new_manifest,
                    parent: Some(id),
                },
            )?;
            out.push((platform.clone(), new_id, new_manifest));
        }
        Ok(out)
    }

    /// The platform a scratch-rooted stage's config must name for an output
    /// for `output`; `None` when the chain starts from an image (whose
    /// config says its platform already).
    fn scratch_platform(&self, stage: StageId, output: &Platform) -> Option<Platform> {
        let mut s = stage;
        // A chain of stages is at most as long as the graph.
        for _ in 0..=self.graph.stages.len() {
            let st = self.graph.stage(s);
            match st.base {
                Base::Stage(b) => s = b,
                Base::Scratch => {
                    return Some(st.platform.clone().unwrap_or_else(|| output.clone()));
                }
                Base::Image(_) => return None,
            }
        }
        None
    }

    /// What an output's archive and tags hold: the image, or an index of
    /// its platforms' images (written to the store).
    fn content_of(&self, o: &Planned) -> Result<(Content, Vec<PlatformImage>)> {
        let mut images = self.images_of(o)?;
        for (p, id, m) in &mut images {
            if self.opts.force_compression {
                *m = self.recompressed_manifest(id, *m)?;
            }
            *m = self.annotated_manifest(p.as_ref(), *m)?;
        }
        let index_annotations: Vec<(&str, &str)> = self
            .opts
            .annotations
            .iter()
            .filter(|a| a.level == AnnotationLevel::Index)
            .map(|a| (a.key.as_str(), a.value.as_str()))
            .collect();
        if let [(_, _, manifest)] = images.as_slice() {
            if !index_annotations.is_empty() {
                return Err(Error::Invalid(vec![super::plain_diag(
                    "--annotation index:… needs a multi-platform image (--platform with several platforms)"
                        .to_string(),
                )]));
            }
            return Ok((Content::Manifest(*manifest), images));
        }
        let entries: Vec<(Platform, Digest)> = images
            .iter()
            .map(|(p, _, m)| (p.clone().unwrap_or_else(crate::platform::host), *m))
            .collect();
        let bytes = crate::oci::archive::index_bytes(self.store, &entries, &index_annotations)?;
        Ok((Content::Index(self.store.put_blob(&bytes)?), images))
    }

    /// The manifest of image `id` with every layer in the build's
    /// compression (`force-compression=true`): layers in another one (a
    /// base's, a cached step's) are recompressed into new blobs, their
    /// uncompressed bytes checked against the config's diff_ids.
    fn recompressed_manifest(&self, id: &Digest, manifest: Digest) -> Result<Digest> {
        let want = self.opts.compression;
        let image = crate::oci::Image::load(self.store, id)?;
        if image
            .layers
            .iter()
            .all(|l| crate::layer::Compression::from_media_type(&l.media_type) == Some(want))
        {
            return Ok(manifest);
        }
        let mut layers = Vec::with_capacity(image.layers.len());
        for l in &image.layers {
            let Some(from) =
                crate::layer::Compression::from_media_type(&l.media_type).filter(|c| *c != want)
            else {
                layers.push(l.clone());
                continue;
            };
            let descriptor = |digest, size| crate::oci::LayerDescriptor {
                diff_id: l.diff_id,
                digest,
                size,
                media_type: want.oci_media_type().to_string(),
            };
            // Made before (the same bytes, the same pinned level): reused.
            if let Some((digest, size)) = self.store.recompressed(&l.digest, want.name()) {
                layers.push(descriptor(digest, size));
                continue;
            }
            let blob = self.store.open_blob(&l.digest)?;
            let writer = self.store.blob_writer()?;
            let (writer, digests) = crate::layer::recompress(
                std::io::BufReader::with_capacity(1 << 20, blob),
                from,
                want,
                writer,
                Some(&self.pool),
            )
            .map_err(|e| Error::Internal {
                what: format!("recompressing layer {}: {e}", l.digest),
            })?;
            if digests.diff_id != l.diff_id {
                return Err(Error::Internal {
                    what: format!(
                        "layer {} is not what the image's config says (diff_id {}, read {})",
                        l.digest, l.diff_id, digests.diff_id
                    ),
                });
            }
            let digest = writer.commit(Some(&digests.digest))?;
            // Only saves work next time: a failure to record costs nothing.
            let _ = self
                .store
                .put_recompressed(&l.digest, want.name(), &digest, digests.size);
            layers.push(descriptor(digest, digests.size));
        }
        let config_size = self.store.read_blob(id)?.len() as u64;
        let bytes = crate::oci::manifest_bytes(id, config_size, &layers)?;
        Ok(self.store.put_blob(&bytes)?)
    }

    /// The manifest `manifest` with the `--annotation`s for `platform`'s
    /// manifest, stored as a blob beside it (the image record keeps the
    /// plain one: annotations belong to this build's outputs, not to the
    /// image, whose ID they do not change).
    fn annotated_manifest(&self, platform: Option<&Platform>, manifest: Digest) -> Result<Digest> {
        let mine: Vec<&super::Annotation> = self
            .opts
            .annotations
            .iter()
            .filter(|a| a.level == AnnotationLevel::Manifest)
            .filter(|a| a.platform.is_none() || a.platform.as_ref() == platform)
            .collect();
        if mine.is_empty() {
            return Ok(manifest);
        }
        let mut doc: serde_json::Value = serde_json::from_slice(&self.store.read_blob(&manifest)?)
            .map_err(|e| Error::Internal {
                what: format!("reading manifest {manifest}: {e}"),
            })?;
        if !doc["annotations"].is_object() {
            doc["annotations"] = serde_json::json!({});
        }
        for a in mine {
            doc["annotations"][&a.key] = serde_json::Value::String(a.value.clone());
        }
        let bytes = crate::digest::canonical_json(&doc).map_err(|e| Error::Internal {
            what: format!("encoding an annotated manifest: {e}"),
        })?;
        Ok(self.store.put_blob(&bytes)?)
    }

    pub(super) fn write_output(&self, o: &Planned) -> Result<BuiltImage> {
        let (content, images) = self.content_of(o)?;
        let (id, manifest) = match (content, images.as_slice()) {
            (Content::Manifest(m), [(_, id, _)]) => (*id, m),
            (c, _) => (c.digest(), c.digest()),
        };
        self.emit(Event::Built { image: id.short() });
        for t in &o.tags {
            match content {
                Content::Manifest(_) => self.store.set_tag(t, &id)?,
                Content::Index(i) => self.store.set_index_tag(t, &i)?,
            }
            self.emit(Event::Tagged { name: t.familiar() });
        }
        let archive_manifest = match &o.path {
            Some(path) => {
                let (archive_manifest, unchanged) =
                    self.write_archive_file(content, &o.tags, o.format, path)?;
                self.emit(Event::Wrote {
                    path: path.display().to_string(),
                    unchanged,
                });
                archive_manifest
            }
            // The image stays in the store (as with `docker build`).
            None => manifest,
        };
        Ok(BuiltImage {
            name: self.graph.stage(o.images[0].1).name.clone(),
            id,
            manifest,
            platforms: images.iter().map(|(p, id, _)| (p.clone(), *id)).collect(),
            archive_manifest,
            tags: o.tags.clone(),
            archive: o.path.clone(),
        })
    }

    /// Whether an output is what this build would write (`--dry-run`).
    pub(super) fn output_up_to_date(&self, o: &Planned) -> Result<bool> {
        for (_, stage) in &o.images {
            if self.result(*stage)?.is_none_or(|s| s.manifest.is_none()) {
                return Ok(false);
            }
        }
        let (content, images) = self.content_of(o)?;
        Ok(match &o.path {
            Some(p) => self.archive_up_to_date(content, &o.tags, o.format, p),
            // Only the store's tags would change.
            None => o.tags.iter().all(|t| match content {
                Content::Manifest(_) => {
                    self.store.tag(t).ok().flatten() == images.first().map(|(_, id, _)| *id)
                }
                Content::Index(i) => matches!(
                    self.store.tag_target(t),
                    Ok(Some(crate::store::TagTarget::Index(d))) if d == i
                ),
            }),
        })
    }

    fn archive_mtime(&self) -> u64 {
        self.opts.epoch.unwrap_or(0).max(0) as u64
    }

    /// Whether the archive at `path` is what this build would write, without
    /// writing anything (for `--dry-run`).
    fn archive_up_to_date(
        &self,
        content: Content,
        tags: &[Reference],
        format: ArchiveFormat,
        path: &Path,
    ) -> bool {
        let inputs = OutputInputs::new(&content.digest(), tags, format, self.archive_mtime());
        let abs = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
        let record: Option<OutputRecord> = self.store.output_record(&abs).ok().flatten();
        let on_disk = fs_err::metadata(path).ok().map(|m| FileStat::of(&m));
        untouched(&record, &on_disk, &inputs).is_some()
    }

    /// Writes the archive atomically; leaves an identical existing file alone
    /// (its mtime too, so `make` and ninja's `restat` see nothing changed).
    fn write_archive_file(
        &self,
        content: Content,
        tags: &[Reference],
        format: ArchiveFormat,
        path: &Path,
    ) -> Result<(Digest, bool)> {
        let out_err = |source| Error::Output {
            path: path.to_path_buf(),
            source,
        };
        if let Some(dir) = path.parent()
            && !dir.as_os_str().is_empty()
        {
            #[allow(clippy::disallowed_methods)] // the error names the path already
            std::fs::create_dir_all(dir).map_err(out_err)?;
        }
        // What a killed build of this output left beside it (a writer that
        // is still alive holds its file's lock and keeps it).
        crate::store::atomic::reclaim(path).map_err(out_err)?;
        let mtime = self.archive_mtime();
        let inputs = OutputInputs::new(&content.digest(), tags, format, mtime);
        let abs = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
        let record: Option<OutputRecord> = self.store.output_record(&abs)?;
        let on_disk = fs_err::metadata(path).ok().map(|m| FileStat::of(&m));
        // The file is what we wrote last time, untouched, for the same inputs:
        // nothing to read, nothing to write.
        if let Some(rec) = untouched(&record, &on_disk, &inputs) {
            return Ok((rec.archive_manifest, true));
        }
        let mut file = AtomicFile::create(path).map_err(out_err)?;
        let hashing = crate::digest::HashingWriter::new(std::io::BufWriter::with_capacity(
            1 << 20,
            file.file(),
        ));
        let (hashing, written) = match content {
            Content::Manifest(m) => write_archive(self.store, &m, tags, format, mtime, hashing)?,
            Content::Index(i) => {
                crate::oci::archive::write_index_archive(self.store, &i, tags, mtime, hashing)?
            }
        };
        let (buf, new_digest, new_len) = hashing.finish();
        buf.into_inner()
            .map_err(|e| e.into_error())
            .map_err(out_err)?;
        // Same bytes as the existing file: leave it (and its mtime) alone, so
        // make and ninja's restat see nothing changed.
        let same = match (&record, &on_disk) {
            (Some(rec), Some(stat)) if rec.file == *stat => rec.digest == new_digest,
            (_, Some(stat)) => {
                stat.size == new_len && Digest::of_file(path).is_ok_and(|d| d == new_digest)
            }
            _ => false,
        };
        if same {
            drop(file);
        } else {
            file.commit().map_err(out_err)?;
        }
        if let Ok(m) = fs_err::metadata(path) {
            let rec = OutputRecord {
                inputs,
                digest: new_digest,
                archive_manifest: written.manifest,
                file: FileStat::of(&m),
            };
            // Only an optimisation for the next build.
            let _ = self.store.put_output_record(&abs, &rec);
        }
        Ok((written.manifest, same))
    }
}

/// What an output archive's bytes are a function of.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct OutputInputs {
    manifest: Digest,
    names: Vec<String>,
    format: String,
    mtime: u64,
    /// How the archive is laid out ([`ARCHIVE_LAYOUT`]); records without it
    /// are of an older layout, so their archives are written again.
    #[serde(default)]
    layout: u32,
}

/// The archive layout version: 2 since the index holds one descriptor per
/// tag.
const ARCHIVE_LAYOUT: u32 = 2;

impl OutputInputs {
    fn new(manifest: &Digest, tags: &[Reference], format: ArchiveFormat, mtime: u64) -> Self {
        OutputInputs {
            manifest: *manifest,
            names: tags.iter().map(ToString::to_string).collect(),
            format: format!("{format:?}"),
            mtime,
            layout: ARCHIVE_LAYOUT,
        }
    }
}

/// The record, when the file on disk is exactly what it describes and was
/// made from `inputs`.
fn untouched<'r>(
    record: &'r Option<OutputRecord>,
    on_disk: &Option<FileStat>,
    inputs: &OutputInputs,
) -> Option<&'r OutputRecord> {
    match (record, on_disk) {
        (Some(rec), Some(stat)) if rec.inputs == *inputs && rec.file == *stat => Some(rec),
        _ => None,
    }
}

/// What the store remembers of an archive it wrote.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct OutputRecord {
    inputs: OutputInputs,
    /// Digest of the archive bytes.
    digest: Digest,
    /// The manifest digest inside the archive.
    archive_manifest: Digest,
    /// The file as written (stat), to notice anyone touching it.
    #[serde(with = "file_stat_serde")]
    file: FileStat,
}

mod file_stat_serde {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use crate::store::memo::FileStat;

    pub fn serialize<S: Serializer>(f: &FileStat, s: S) -> Result<S::Ok, S::Error> {
        (f.size, f.mtime_ns, f.ctime_ns, f.ino, f.dev).serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<FileStat, D::Error> {
        let (size, mtime_ns, ctime_ns, ino, dev) = <(u64, i64, i64, u64, u64)>::deserialize(d)?;
        Ok(FileStat {
            size,
            mtime_ns,
            ctime_ns,
            ino,
            dev,
        })
    }
}
