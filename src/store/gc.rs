//! Keeping the store in shape: `prune` (remove what nothing needs) and
//! `check` (verify every blob against its digest and every record against
//! the blobs it names).

use std::collections::HashSet;
use std::path::Path;

use super::{Error, ImageRecord, Result, Store, list_names};
use crate::digest::{Digest, HashingReader};

/// What `prune` should remove.
#[derive(Debug, Clone, Copy, Default)]
pub struct PruneOptions {
    /// Also untagged images (intermediate steps) and the whole build cache.
    pub all: bool,
    /// With `all`-like removal, stop once the store holds at most this many
    /// bytes of blobs (oldest untagged images go first).
    pub keep_storage: Option<u64>,
}

/// What `prune` removed.
#[derive(Debug, Default, Clone)]
pub struct PruneReport {
    /// Image records removed.
    pub images: usize,
    /// Blobs removed.
    pub blobs: usize,
    /// Bytes of blobs removed.
    pub bytes: u64,
    /// Cache entries removed.
    pub cache_entries: usize,
}

fn io_err<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> Error + 'a {
    move |source| Error::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

impl Store {
    /// Blobs an image needs: its manifest, config and layers.
    fn image_blobs(&self, rec: &ImageRecord) -> Vec<Digest> {
        let mut out = vec![rec.manifest];
        if let Ok(bytes) = self.read_blob(&rec.manifest)
            && let Ok(v) = serde_json::from_slice::<serde_json::Value>(&bytes)
        {
            let d = |x: &serde_json::Value| {
                x.get("digest")
                    .and_then(|d| d.as_str())
                    .and_then(|s| s.parse().ok())
            };
            if let Some(c) = v.get("config").and_then(d) {
                out.push(c);
            }
            if let Some(ls) = v.get("layers").and_then(|l| l.as_array()) {
                out.extend(ls.iter().filter_map(d));
            }
        }
        out
    }

    fn blob_bytes(&self) -> Result<u64> {
        let dir = self.root.join("blobs/sha256");
        let mut total = 0;
        for name in list_names(&dir)? {
            total += std::fs::metadata(dir.join(name))
                .map(|m| m.len())
                .unwrap_or(0);
        }
        Ok(total)
    }

    /// Removes what no kept image needs. Takes the store lock exclusively, so
    /// it waits for running builds and they wait for it.
    ///
    /// # Errors
    /// I/O failures.
    pub fn prune(&self, opts: PruneOptions) -> Result<PruneReport> {
        let _lock = self.lock_exclusive()?;
        let mut report = PruneReport::default();
        let tagged: HashSet<Digest> = self.tags()?.into_iter().map(|(_, id)| id).collect();
        let drop_untagged = opts.all || opts.keep_storage.is_some();
        let mut untagged: Vec<(std::time::SystemTime, Digest)> = Vec::new();
        for id in self.image_ids()? {
            if !tagged.contains(&id) {
                let p = self.root.join("images").join(id.hex());
                let t = std::fs::metadata(&p)
                    .and_then(|m| m.modified())
                    .unwrap_or(std::time::UNIX_EPOCH);
                untagged.push((t, id));
            }
        }
        untagged.sort();
        let mut removed_images: HashSet<Digest> = HashSet::new();
        if drop_untagged {
            for (_, id) in &untagged {
                if let Some(limit) = opts.keep_storage
                    && self.blob_bytes()? <= limit
                {
                    break;
                }
                let p = self.root.join("images").join(id.hex());
                std::fs::remove_file(&p).map_err(io_err("removing", &p))?;
                removed_images.insert(*id);
                report.images += 1;
                if opts.keep_storage.is_some() {
                    report.add(self.sweep_blobs()?);
                }
            }
        }
        // Cache entries: all of them with --all, else those whose image is gone.
        let cache = self.root.join("cache");
        for name in list_names(&cache)? {
            let p = cache.join(&name);
            let stale = match Digest::from_hex(&name) {
                Ok(key) => match self.cache_get(&key) {
                    Ok(Some(img)) => {
                        opts.all || removed_images.contains(&img) || self.image(&img)?.is_none()
                    }
                    _ => true,
                },
                Err(_) => true,
            };
            if stale {
                std::fs::remove_file(&p).map_err(io_err("removing", &p))?;
                report.cache_entries += 1;
            }
        }
        if opts.all {
            // RUN --mount=type=cache directories go too, as with
            // `docker builder prune --all`.
            for dir in ["steps", "memo", "outputs", "cache-mounts"] {
                clear_dir(&self.root.join(dir))?;
            }
        }
        // Snapshots (COPY --from filesystems, RUN's per-layer overlay lowers)
        // and temporary files are pure caches.
        for dir in ["snapshots", "layers", "seccomp", "tmp"] {
            clear_dir(&self.root.join(dir))?;
        }
        report.add(self.sweep_blobs()?);
        Ok(report)
    }

    /// Deletes blobs no image record needs.
    fn sweep_blobs(&self) -> Result<PruneReport> {
        let mut keep: HashSet<Digest> = HashSet::new();
        for id in self.image_ids()? {
            if let Some(rec) = self.image(&id)? {
                keep.extend(self.image_blobs(&rec));
            }
        }
        let dir = self.root.join("blobs/sha256");
        let mut r = PruneReport::default();
        for name in list_names(&dir)? {
            let keep_it = Digest::from_hex(&name).is_ok_and(|d| keep.contains(&d));
            if !keep_it {
                let p = dir.join(&name);
                r.bytes += std::fs::metadata(&p).map(|m| m.len()).unwrap_or(0);
                std::fs::remove_file(&p).map_err(io_err("removing", &p))?;
                r.blobs += 1;
            }
        }
        Ok(r)
    }

    /// Verifies the store: every blob against its name, every image record,
    /// tag and cache entry against what it points at. Returns the problems
    /// (empty when all is well).
    ///
    /// # Errors
    /// I/O failures while listing.
    pub fn check(&self) -> Result<Vec<String>> {
        let _lock = self.lock_shared()?;
        let mut problems = Vec::new();
        let dir = self.root.join("blobs/sha256");
        let mut present = HashSet::new();
        for name in list_names(&dir)? {
            let p = dir.join(&name);
            let Ok(expected) = Digest::from_hex(&name) else {
                problems.push(format!("{}: not a blob name", p.display()));
                continue;
            };
            let mut r = HashingReader::new(std::fs::File::open(&p).map_err(io_err("opening", &p))?);
            std::io::copy(&mut r, &mut std::io::sink()).map_err(io_err("reading", &p))?;
            let (actual, _) = r.finish();
            if actual == expected {
                present.insert(expected);
            } else {
                problems.push(format!(
                    "blob {expected} is corrupt: its content hashes to {actual}"
                ));
            }
        }
        for id in self.image_ids()? {
            match self.image(&id) {
                Ok(Some(rec)) => {
                    for b in self.image_blobs(&rec) {
                        if !present.contains(&b) {
                            problems.push(format!(
                                "image {} needs blob {b}, which is missing or corrupt",
                                id.short()
                            ));
                        }
                    }
                    if !present.contains(&id) {
                        problems.push(format!("image {}: its config blob is missing", id.short()));
                    }
                }
                Ok(None) => {}
                Err(e) => problems.push(e.to_string()),
            }
        }
        for (r, id) in self.tags()? {
            if self.image(&id)?.is_none() {
                problems.push(format!(
                    "tag {} points at missing image {}",
                    r.familiar(),
                    id.short()
                ));
            }
        }
        Ok(problems)
    }
}

impl PruneReport {
    fn add(&mut self, o: PruneReport) {
        self.images += o.images;
        self.blobs += o.blobs;
        self.bytes += o.bytes;
        self.cache_entries += o.cache_entries;
    }
}

fn clear_dir(dir: &Path) -> Result<()> {
    // Directories made on first use (layers/, cache-mounts/) may not exist.
    if !dir.exists() {
        return Ok(());
    }
    for name in list_names(dir)? {
        let p = dir.join(name);
        let r = if p.is_dir() {
            std::fs::remove_dir_all(&p)
        } else {
            std::fs::remove_file(&p)
        };
        r.map_err(io_err("removing", &p))?;
    }
    // Hidden temporaries too (atomic writes in progress are under a lock).
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if e.file_name().to_string_lossy().starts_with('.') {
                let _ = std::fs::remove_file(&p);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prune_keeps_what_images_need_and_check_finds_corruption() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(d.path()).unwrap();
        let layer = s.put_blob(b"layer").unwrap();
        let config = s.put_blob(b"{}").unwrap();
        let manifest = s
            .put_blob(
                format!(
                    r#"{{"config":{{"digest":"{config}"}},"layers":[{{"digest":"{layer}"}}]}}"#
                )
                .as_bytes(),
            )
            .unwrap();
        s.put_image(
            &config,
            &ImageRecord {
                manifest,
                parent: None,
            },
        )
        .unwrap();
        let orphan = s.put_blob(b"orphan").unwrap();
        let r = s.prune(PruneOptions::default()).unwrap();
        assert_eq!(r.blobs, 1);
        assert!(!s.has_blob(&orphan));
        assert!(s.has_blob(&layer) && s.has_blob(&config) && s.has_blob(&manifest));
        assert!(s.check().unwrap().is_empty());
        std::fs::write(s.blob_path(&layer), b"tampered").unwrap();
        let problems = s.check().unwrap();
        assert!(
            problems.iter().any(|p| p.contains("corrupt")),
            "{problems:?}"
        );
        // --all drops the untagged image and everything only it needed.
        let r = s
            .prune(PruneOptions {
                all: true,
                keep_storage: None,
            })
            .unwrap();
        assert_eq!(r.images, 1);
        assert!(!s.has_blob(&manifest));
    }
}
