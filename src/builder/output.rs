//! Writing the output images: tags, then archives written atomically, left
//! alone when their bytes would not change, and remembered in the store so an
//! untouched archive for the same inputs is not even regenerated.

use std::path::Path;

use super::cx::Cx;
use super::{BuiltImage, Error, Planned, Result};
use crate::digest::Digest;
use crate::oci::archive::{ArchiveFormat, write_archive};
use crate::progress::Event;
use crate::reference::Reference;
use crate::store::AtomicFile;
use crate::store::memo::FileStat;

impl Cx<'_> {
    pub(super) fn write_output(&self, o: &Planned) -> Result<BuiltImage> {
        let state = self.result(o.stage)?.ok_or_else(|| Error::Internal {
            what: "output stage was not built".into(),
        })?;
        let (Some(id), Some(manifest)) = (state.id, state.manifest) else {
            return Err(Error::Internal {
                what: "output image was not committed".into(),
            });
        };
        self.emit(Event::Built { image: id.short() });
        for t in &o.tags {
            self.store.set_tag(t, &id)?;
            self.emit(Event::Tagged { name: t.familiar() });
        }
        let archive_manifest = match &o.path {
            Some(path) => {
                let (archive_manifest, unchanged) =
                    self.write_archive_file(&manifest, &o.tags, o.format, path)?;
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
            name: self.graph.stage(o.stage).name.clone(),
            id,
            manifest,
            archive_manifest,
            tags: o.tags.clone(),
            archive: o.path.clone(),
        })
    }

    fn archive_mtime(&self) -> u64 {
        self.opts.epoch.unwrap_or(0).max(0) as u64
    }

    /// Whether the archive at `path` is what this build would write, without
    /// writing anything (for `--dry-run`).
    pub(super) fn archive_up_to_date(
        &self,
        manifest: &Digest,
        tags: &[Reference],
        format: ArchiveFormat,
        path: &Path,
    ) -> bool {
        let inputs = OutputInputs::new(manifest, tags, format, self.archive_mtime());
        let abs = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
        let record: Option<OutputRecord> = self.store.output_record(&abs).ok().flatten();
        let on_disk = fs_err::metadata(path).ok().map(|m| FileStat::of(&m));
        untouched(&record, &on_disk, &inputs).is_some()
    }

    /// Writes the archive atomically; leaves an identical existing file alone
    /// (its mtime too, so `make` and ninja's `restat` see nothing changed).
    fn write_archive_file(
        &self,
        manifest: &Digest,
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
        let inputs = OutputInputs::new(manifest, tags, format, mtime);
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
        let (hashing, written) = write_archive(self.store, manifest, tags, format, mtime, hashing)?;
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
