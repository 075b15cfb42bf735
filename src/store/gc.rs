//! Keeping the store in shape: `prune` (remove what nothing needs) and
//! `check` (verify every blob against its digest and every record against
//! the blobs it names), whose problems carry the removals that repair them.
//!
//! What needs layers decoded (diff_ids, extracted snapshots) is checked by
//! the modules that understand layers (`oci::verify`, `build::snapshot`);
//! they add their [`Problem`]s to the same [`Checked`].

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use super::{Error, ImageRecord, Result, Store, list_names};
use crate::digest::{Digest, HashingReader};
use crate::reference::Reference;

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
    /// Bytes the store takes on disk less than before: blobs, extracted
    /// layers, snapshots, step records and temporary files together.
    pub freed: u64,
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
            total += fs_err::metadata(dir.join(name))
                .map(|m| m.len())
                .unwrap_or(0);
        }
        Ok(total)
    }

    /// Removes what no kept image needs. Takes the store lock exclusively, so
    /// it waits for every running reader (builds, `run`, `export`…), and they
    /// wait for it; `waiting` is called once first if it has to wait.
    ///
    /// # Errors
    /// I/O failures.
    pub fn prune(&self, opts: PruneOptions, waiting: &dyn Fn()) -> Result<PruneReport> {
        let _lock = match self.try_lock_exclusive()? {
            Some(l) => l,
            None => {
                waiting();
                self.lock_exclusive()?
            }
        };
        let mut report = PruneReport::default();
        let before = disk_usage(&self.root);
        let mut tagged: HashSet<Digest> = HashSet::new();
        for (_, t) in self.tag_targets()? {
            match t {
                super::TagTarget::Image(id) => {
                    tagged.insert(id);
                }
                // Every platform of a multi-platform tag is tagged.
                super::TagTarget::Index(i) => tagged.extend(
                    self.index_images(&i)
                        .unwrap_or_default()
                        .into_iter()
                        .filter_map(|(_, id)| id),
                ),
            }
        }
        let drop_untagged = opts.all || opts.keep_storage.is_some();
        let mut untagged: Vec<(std::time::SystemTime, Digest)> = Vec::new();
        for id in self.image_ids()? {
            if !tagged.contains(&id) {
                let p = self.root.join("images").join(id.hex());
                let t = fs_err::metadata(&p)
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
                #[allow(clippy::disallowed_methods)] // the error names the path already
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
                #[allow(clippy::disallowed_methods)] // the error names the path already
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
        // and the compiled seccomp filters are pure caches; so are the
        // validators of downloads, whose blobs no image names (the sweep
        // below removes them).
        for dir in ["snapshots", "layers", "seccomp", "validators"] {
            clear_dir(&self.root.join(dir))?;
        }
        // Temporary files: every process's but our own (no one else holds
        // the lock, so the others are all dead), and older versions' too.
        let tmp = self.root.join("tmp");
        super::scratch::reclaim(&tmp, true).map_err(io_err("cleaning", &tmp))?;
        report.add(self.sweep_blobs()?);
        report.freed = before.saturating_sub(disk_usage(&self.root));
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
        for (_, t) in self.tag_targets()? {
            if let super::TagTarget::Index(i) = t {
                // A corrupt index keeps only itself (`store check` reports it).
                keep.extend(self.index_blobs(&i).unwrap_or_else(|_| vec![i]));
            }
        }
        let dir = self.root.join("blobs/sha256");
        let mut r = PruneReport::default();
        for name in list_names(&dir)? {
            let keep_it = Digest::from_hex(&name).is_ok_and(|d| keep.contains(&d));
            if !keep_it {
                let p = dir.join(&name);
                r.bytes += fs_err::metadata(&p).map(|m| m.len()).unwrap_or(0);
                #[allow(clippy::disallowed_methods)] // the error names the path already
                std::fs::remove_file(&p).map_err(io_err("removing", &p))?;
                r.blobs += 1;
            }
        }
        // What removed blobs decompressed to goes with them.
        for records in ["diffids", "sizes", "recompressed"] {
            let records = self.root.join(records);
            for name in list_names(&records)? {
                if !dir.join(&name).exists() {
                    let p = records.join(&name);
                    #[allow(clippy::disallowed_methods)] // the error names the path already
                    std::fs::remove_file(&p).map_err(io_err("removing", &p))?;
                }
            }
        }
        Ok(r)
    }

    /// Verifies the store's blobs and records: every blob against its name,
    /// every image record, tag and cache entry against what it points at.
    /// Takes no lock: the caller holds it (shared to check, exclusive to
    /// repair).
    ///
    /// # Errors
    /// I/O failures while listing.
    pub fn check(&self) -> Result<Checked> {
        let mut c = Checked::default();
        let dir = self.root.join("blobs/sha256");
        for name in list_names(&dir)? {
            let p = dir.join(&name);
            let Ok(expected) = Digest::from_hex(&name) else {
                c.problems.push(Problem {
                    what: format!("{}: not a blob name", p.display()),
                    fixes: vec![Fix::File(p)],
                });
                continue;
            };
            #[allow(clippy::disallowed_methods)] // the error names the path already
            let mut r = HashingReader::new(std::fs::File::open(&p).map_err(io_err("opening", &p))?);
            std::io::copy(&mut r, &mut std::io::sink()).map_err(io_err("reading", &p))?;
            let (actual, _) = r.finish();
            if actual == expected {
                c.blobs.insert(expected);
            } else {
                c.problems.push(Problem {
                    what: format!("blob {expected} is corrupt: its content hashes to {actual}"),
                    fixes: vec![Fix::Blob(expected), Fix::DiffIds(expected)],
                });
            }
        }
        for id in self.image_ids()? {
            match self.image(&id) {
                Ok(Some(rec)) => {
                    let mut missing = Vec::new();
                    for b in self.image_blobs(&rec) {
                        if !c.blobs.contains(&b) {
                            missing.push(b);
                        }
                    }
                    if !c.blobs.contains(&id) {
                        missing.push(id);
                    }
                    if let Some(b) = missing.first() {
                        let what = if *b == id {
                            format!(
                                "image {}: its config blob is missing or corrupt",
                                id.short()
                            )
                        } else {
                            format!(
                                "image {} needs blob {b}, which is missing or corrupt",
                                id.short()
                            )
                        };
                        c.bad_image(self, id, what)?;
                    }
                }
                Ok(None) => {}
                Err(e) => {
                    let p = self.root.join("images").join(id.hex());
                    c.problems.push(Problem {
                        what: e.to_string(),
                        fixes: vec![Fix::File(p)],
                    });
                }
            }
        }
        for (r, target) in self.tag_targets()? {
            let what = match target {
                super::TagTarget::Image(id) => {
                    self.image(&id).ok().flatten().is_none().then(|| {
                        format!(
                            "tag {} points at missing image {}",
                            r.familiar(),
                            id.short()
                        )
                    })
                }
                // A multi-platform tag needs its index, and at least one
                // of the index's platforms here (a pull brings one; the
                // others may stay in the registry).
                super::TagTarget::Index(i) if !c.blobs.contains(&i) => Some(format!(
                    "tag {} points at index {i}, which is missing or corrupt",
                    r.familiar()
                )),
                super::TagTarget::Index(i) => match self.target_images(&target) {
                    Err(e) => Some(format!(
                        "tag {} points at index {i}, which cannot be read: {e}",
                        r.familiar()
                    )),
                    Ok(images) if images.is_empty() => Some(format!(
                        "tag {} points at index {i}, none of whose platforms is in the store",
                        r.familiar()
                    )),
                    Ok(_) => None,
                },
            };
            if let Some(what) = what {
                c.problems.push(Problem {
                    what,
                    fixes: vec![Fix::Tag(r)],
                });
            }
        }
        for (key, id) in self.cache_entries()? {
            if self.image(&id).ok().flatten().is_none() {
                c.problems.push(Problem {
                    what: format!(
                        "cache entry {} points at missing image {}",
                        key.short(),
                        id.short()
                    ),
                    fixes: vec![Fix::CacheEntry(key)],
                });
            }
        }
        Ok(c)
    }

    /// Carries out the fixes of `problems`: removes what is corrupt and what
    /// names it. Returns one line per removal. The caller holds the store
    /// lock exclusively.
    ///
    /// # Errors
    /// When something cannot be removed.
    pub fn repair(&self, problems: &[Problem]) -> Result<Vec<String>> {
        let mut done = Vec::new();
        let mut seen = HashSet::new();
        for fix in problems.iter().flat_map(|p| &p.fixes) {
            if !seen.insert(fix.clone()) {
                continue;
            }
            let line = match fix {
                Fix::Blob(d) => {
                    let p = self.blob_path_in_store(d);
                    remove_path(&p)?.then(|| format!("removed corrupt blob {d}"))
                }
                Fix::DiffIds(d) => {
                    let had = self.diff_id_path(d).exists();
                    self.remove_diff_ids(d)?;
                    had.then(|| format!("removed the layer record of blob {}", d.short()))
                }
                Fix::Image(id) => self
                    .remove_image(id)?
                    .then(|| format!("removed image {}", id.short())),
                Fix::Tag(r) => self
                    .remove_tag(r)?
                    .then(|| format!("removed tag {}", r.familiar())),
                Fix::CacheEntry(k) => {
                    let p = self.root.join("cache").join(k.hex());
                    remove_path(&p)?.then(|| format!("removed cache entry {}", k.short()))
                }
                Fix::Tree(p) => {
                    let existed = p.exists();
                    super::scratch::remove_tree(p);
                    if p.exists() {
                        return Err(Error::Io {
                            action: "removing",
                            path: p.clone(),
                            source: std::io::Error::other("directory still present"),
                        });
                    }
                    existed.then(|| format!("removed {}", p.display()))
                }
                Fix::File(p) => remove_path(p)?.then(|| format!("removed {}", p.display())),
            };
            done.extend(line);
        }
        Ok(done)
    }
}

/// The findings of a store check, built up by every module that checks a
/// part of the store.
#[derive(Debug, Default)]
pub struct Checked {
    /// What is wrong, with how to repair it.
    pub problems: Vec<Problem>,
    /// Blobs present and matching their digest.
    pub blobs: HashSet<Digest>,
    /// Images already found bad (each is reported once).
    pub bad_images: HashSet<Digest>,
    /// Layer blobs decoded during the check: (blob, compression) → the
    /// digest of the decompressed stream, or why it could not be decoded.
    pub unpacked: HashMap<(Digest, String), std::result::Result<Digest, String>>,
}

impl Checked {
    /// Reports image `id` as bad: its record goes on repair, with every tag
    /// and cache entry that names it.
    ///
    /// # Errors
    /// When the tags or cache entries cannot be listed.
    pub fn bad_image(&mut self, store: &Store, id: Digest, what: String) -> Result<()> {
        if !self.bad_images.insert(id) {
            return Ok(());
        }
        let mut fixes = vec![Fix::Image(id)];
        for (r, t) in store.tag_targets()? {
            let only_this = match t {
                super::TagTarget::Image(d) => d == id,
                // A multi-platform tag goes with its last good platform
                // here; until then it serves the others.
                super::TagTarget::Index(_) => store.target_images(&t).is_ok_and(|images| {
                    images.iter().any(|(_, d)| *d == id)
                        && images.iter().all(|(_, d)| self.bad_images.contains(d))
                }),
            };
            if only_this {
                fixes.push(Fix::Tag(r));
            }
        }
        for (k, img) in store.cache_entries()? {
            if img == id {
                fixes.push(Fix::CacheEntry(k));
            }
        }
        self.problems.push(Problem { what, fixes });
        Ok(())
    }
}

/// One thing wrong with the store.
#[derive(Debug, Clone)]
pub struct Problem {
    /// What is wrong, for people.
    pub what: String,
    /// What `store check --repair` removes for it.
    pub fixes: Vec<Fix>,
}

/// A removal that repairs a problem.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Fix {
    /// A corrupt blob.
    Blob(Digest),
    /// The record of what a blob decompresses to.
    DiffIds(Digest),
    /// An image record.
    Image(Digest),
    /// A tag.
    Tag(Reference),
    /// A cache entry, by key.
    CacheEntry(Digest),
    /// An extracted filesystem (snapshot or layer directory).
    Tree(PathBuf),
    /// A stray or corrupt file.
    File(PathBuf),
}

fn remove_path(p: &Path) -> Result<bool> {
    match fs_err::remove_file(p) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(Error::Io {
            action: "removing",
            path: p.to_path_buf(),
            source: e,
        }),
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

/// The disk space the files under `root` take (allocated blocks, each
/// hard-linked file once), as `du` counts it; unreadable parts count as
/// nothing. Iterative, so a deep tree cannot overflow the stack.
fn disk_usage(root: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut seen: HashSet<(u64, u64)> = HashSet::new();
    let mut total = 0u64;
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = fs_err::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let Ok(m) = e.metadata() else { continue };
            if m.nlink() > 1 && !m.is_dir() && !seen.insert((m.dev(), m.ino())) {
                continue;
            }
            total += m.blocks() * 512;
            if m.is_dir() {
                stack.push(e.path());
            }
        }
    }
    total
}

fn clear_dir(dir: &Path) -> Result<()> {
    // Directories made on first use (layers/, cache-mounts/) may not exist.
    if !dir.exists() {
        return Ok(());
    }
    for name in list_names(dir)? {
        let p = dir.join(name);
        #[allow(clippy::disallowed_methods)] // the error names the path already
        let r = if p.is_dir() {
            std::fs::remove_dir_all(&p)
        } else {
            std::fs::remove_file(&p)
        };
        r.map_err(io_err("removing", &p))?;
    }
    // Hidden temporaries too (atomic writes in progress are under a lock).
    if let Ok(rd) = fs_err::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if e.file_name().to_string_lossy().starts_with('.') {
                let _ = fs_err::remove_file(&p);
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
        let r = s.prune(PruneOptions::default(), &|| {}).unwrap();
        assert_eq!(r.blobs, 1);
        assert!(!s.has_blob(&orphan));
        assert!(s.has_blob(&layer) && s.has_blob(&config) && s.has_blob(&manifest));
        assert!(s.check().unwrap().problems.is_empty());
        fs_err::write(s.blob_path(&layer), b"tampered").unwrap();
        let problems = s.check().unwrap().problems;
        assert!(
            problems.iter().any(|p| p.what.contains("corrupt")),
            "{problems:?}"
        );
        // Repair removes the blob and the image that needed it, and then the
        // store checks clean.
        let removed = s.repair(&problems).unwrap();
        assert_eq!(removed.len(), 2, "{removed:?}");
        assert!(s.check().unwrap().problems.is_empty());
        // --all drops the untagged image and everything only it needed.
        let r = s
            .prune(
                PruneOptions {
                    all: true,
                    keep_storage: None,
                },
                &|| {},
            )
            .unwrap();
        assert_eq!(r.images, 0);
        assert!(!s.has_blob(&manifest));
    }

    #[test]
    fn check_reports_index_tags_that_name_nothing() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(d.path()).unwrap();
        let config = s
            .put_blob(br#"{"architecture":"arm64","os":"linux"}"#)
            .unwrap();
        let manifest = s
            .put_blob(format!(r#"{{"config":{{"digest":"{config}"}},"layers":[]}}"#).as_bytes())
            .unwrap();
        s.put_image(
            &config,
            &ImageRecord {
                manifest,
                parent: None,
            },
        )
        .unwrap();
        let entry = |m: &Digest| {
            format!(r#"{{"digest":"{m}","platform":{{"os":"linux","architecture":"arm64"}}}}"#)
        };
        let index = s
            .put_blob(format!(r#"{{"manifests":[{}]}}"#, entry(&manifest)).as_bytes())
            .unwrap();
        let remote_only = s
            .put_blob(format!(r#"{{"manifests":[{}]}}"#, entry(&Digest::of(b"remote"))).as_bytes())
            .unwrap();
        let tag = |n: &str| Reference::parse(n).unwrap();
        s.set_index_tag(&tag("good:1"), &index).unwrap();
        s.set_index_tag(&tag("remote:1"), &remote_only).unwrap();
        s.set_index_tag(&tag("gone:1"), &Digest::of(b"never stored"))
            .unwrap();
        // Prune keeps the index, and the image it names though no plain tag does.
        s.prune(
            PruneOptions {
                all: true,
                keep_storage: None,
            },
            &|| {},
        )
        .unwrap();
        assert!(s.has_blob(&index) && s.has_blob(&manifest) && s.has_blob(&config));
        assert!(s.image(&config).unwrap().is_some());
        let problems = s.check().unwrap().problems;
        let whats: Vec<&str> = problems.iter().map(|p| p.what.as_str()).collect();
        assert_eq!(whats.len(), 2, "{whats:?}");
        assert!(
            whats[0].starts_with("tag gone:1 points at index sha256:")
                && whats[0].ends_with("which is missing or corrupt"),
            "{whats:?}"
        );
        assert!(
            whats[1].ends_with("none of whose platforms is in the store"),
            "{whats:?}"
        );
        let removed = s.repair(&problems).unwrap();
        assert_eq!(removed, ["removed tag gone:1", "removed tag remote:1"]);
        assert!(s.check().unwrap().problems.is_empty());
        // A corrupt platform image takes the tag with it when it was the
        // tag's only image here.
        fs_err::write(s.blob_path(&config), b"tampered").unwrap();
        let problems = s.check().unwrap().problems;
        assert!(
            problems
                .iter()
                .any(|p| p.fixes.contains(&Fix::Tag(tag("good:1")))),
            "{problems:?}"
        );
    }
}
