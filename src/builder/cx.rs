//! What every step of a build shares: the graph and options, the store, the
//! context, and the build-wide caches (stage results, layer listings,
//! resolved images, the stat memo). Steps ([`super::step`]) and the
//! scheduler use it; it knows no step kind.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

use super::inputs::hash_selection;
use super::sources::Selection;
use super::{BuildOptions, CopyError, Error, ImageState, Result, SandboxMode, base, run};
use crate::confine::Root;
use crate::diag::SourceRef;
use crate::digest::Digest;
use crate::graph::key::base_key;
use crate::graph::{BuildGraph, ImageSource, StageId, StepId};
use crate::layer::index::{self, Merged, Record};
use crate::oci::import::{self, Imported};
use crate::oci::{Image, LayerDescriptor};
use crate::pattern::PatternSet;
use crate::platform::Platform;
use crate::progress::Event;
use crate::store::Store;
use crate::store::memo::StatMemo;

/// Digests with the label they go into a key (or a miss reason) under.
pub(super) type Labelled = Vec<(String, Digest)>;

/// Locks `m`; a lock a panicking build thread left poisoned is an error
/// naming what it guarded, never a silently dropped result.
pub(super) fn lock<'m, T>(m: &'m Mutex<T>, what: &str) -> Result<MutexGuard<'m, T>> {
    m.lock().map_err(|_| Error::Internal {
        what: format!("a build thread panicked while holding {what}"),
    })
}

/// The build-wide state every step may read.
pub(super) struct Cx<'a> {
    pub(super) graph: &'a BuildGraph,
    pub(super) opts: &'a BuildOptions,
    pub(super) store: &'a Store,
    pub(super) pool: rayon::ThreadPool,
    /// The build context, the root every context path resolves in.
    pub(super) context: Arc<Root>,
    pub(super) excludes: PatternSet,
    /// Named local contexts (`--build-context NAME=DIR`) by path.
    pub(super) locals: HashMap<PathBuf, Arc<Root>>,
    /// Context selections made by the pre-build pass, taken once each.
    planned: Mutex<HashMap<(StepId, usize), Selection>>,
    /// Content digests of context files by stat, across builds.
    memo: Mutex<StatMemo>,
    /// Final state of every stage built so far.
    results: Mutex<HashMap<StageId, ImageState>>,
    /// Layer listings by blob digest, for the filesystem-below lookups.
    listings: Mutex<HashMap<Digest, Arc<Vec<Record>>>>,
    /// Images resolved during this build, by source text.
    imported: Mutex<HashMap<String, Imported>>,
    /// Context files and directories the build selected, for --depfile.
    read: Mutex<Vec<PathBuf>>,
    /// How RUN steps get their filesystem: the option, moved down for the
    /// rest of the build when the kernel refuses it (or a step fills memory).
    pub(super) sandbox: Mutex<SandboxMode>,
    /// What RUN sandboxes share: seccomp filter, network, cgroups.
    pub(super) isolation: run::Isolation,
    /// The SSH agents RUN steps may use (`--ssh`), started by the build.
    pub(super) ssh: super::ssh::Agents,
}

impl<'a> Cx<'a> {
    pub(super) fn new(
        graph: &'a BuildGraph,
        opts: &'a BuildOptions,
        pool: rayon::ThreadPool,
        planned: HashMap<(StepId, usize), Selection>,
        memo: StatMemo,
        (context, excludes): (Arc<Root>, PatternSet),
    ) -> Self {
        Cx {
            graph,
            opts,
            store: &opts.store,
            pool,
            context,
            excludes,
            locals: HashMap::new(),
            planned: Mutex::new(planned),
            memo: Mutex::new(memo),
            results: Mutex::new(HashMap::new()),
            listings: Mutex::new(HashMap::new()),
            imported: Mutex::new(HashMap::new()),
            read: Mutex::new(Vec::new()),
            sandbox: Mutex::new(opts.sandbox),
            isolation: run::Isolation::new(
                &opts.store,
                opts.network,
                opts.limits,
                opts.host.clone(),
            ),
            ssh: super::ssh::Agents::default(),
        }
    }

    /// The build with these named local contexts opened.
    pub(super) fn with_locals(mut self, locals: HashMap<PathBuf, Arc<Root>>) -> Self {
        self.locals = locals;
        self
    }

    /// A warning for the user (plain progress prints `WARNING: …`).
    pub(super) fn warn(&self, message: String) {
        self.emit(Event::Warning { message });
    }

    pub(super) fn emit(&self, e: Event) {
        self.opts.progress.event(e);
    }

    /// The time stamped on what the build makes: the epoch, else now.
    pub(super) fn time(&self) -> i64 {
        self.opts.epoch.unwrap_or(self.opts.now)
    }

    /// Saves the stat memo (a failure only costs the next build time).
    pub(super) fn save_memo(&self) {
        if let Ok(m) = self.memo.lock() {
            let _ = m.save();
        }
    }

    /// The final state of `stage`, once built.
    pub(super) fn result(&self, stage: StageId) -> Result<Option<ImageState>> {
        let name = &self.graph.stage(stage).name;
        Ok(
            lock(&self.results, &format!("the result of stage `{name}`"))?
                .get(&stage)
                .cloned(),
        )
    }

    /// The final state of `stage`, which must be built by now (the
    /// scheduler starts a stage after the stages it needs).
    pub(super) fn built(&self, stage: StageId, by: &str) -> Result<ImageState> {
        self.result(stage)?.ok_or_else(|| Error::Internal {
            what: format!(
                "stage `{}` was not built before {by}",
                self.graph.stage(stage).name
            ),
        })
    }

    pub(super) fn set_result(&self, stage: StageId, state: ImageState) -> Result<()> {
        let name = &self.graph.stage(stage).name;
        lock(&self.results, &format!("the result of stage `{name}`"))?.insert(stage, state);
        Ok(())
    }

    /// The context selection the pre-build pass made for item `item` of
    /// `step`, taken (each is used once).
    pub(super) fn planned(&self, step: StepId, item: usize) -> Result<Option<Selection>> {
        Ok(lock(&self.planned, "the planned context selections")?.remove(&(step, item)))
    }

    /// Every context path the build selected so far, for depfiles.
    pub(super) fn take_read(&self) -> Result<Vec<PathBuf>> {
        Ok(std::mem::take(&mut *lock(
            &self.read,
            "the context paths read",
        )?))
    }

    /// The digest of context files selected for a step (through the stat
    /// memo), adding each file's digest to `files` (for miss reasons) and
    /// its path to what the build read (for depfiles).
    pub(super) fn hash_context(
        &self,
        sel: &Selection,
        location: &str,
        files: &mut Labelled,
    ) -> Result<Digest> {
        let (d, item_files) = hash_selection(sel, &self.memo).map_err(|e| Error::Copy {
            location: location.to_string(),
            source: e,
        })?;
        files.extend(item_files);
        let mut read = lock(&self.read, "the context paths read")?;
        read.extend(sel.entries.iter().map(|e| e.shown.clone()));
        read.extend(sel.roots.iter().cloned());
        Ok(d)
    }

    /// Writes a layer's entries into the store (on a pool thread).
    pub(super) fn write_layer(
        &self,
        entries: &[crate::layer::Entry],
        stage: &str,
        index: usize,
    ) -> Result<LayerDescriptor, CopyError> {
        let writer = self.store.blob_writer()?;
        let progress = Arc::clone(&self.opts.progress);
        let mut last = 0u64;
        let mut on_bytes = |n: u64| {
            // Throttle: one event per 8 MiB.
            if n - last >= 8 << 20 {
                last = n;
                progress.event(Event::StepBytes {
                    stage: stage.to_string(),
                    index,
                    bytes: n,
                });
            }
        };
        let (writer, digests) = crate::layer::write(
            entries,
            self.opts.compression,
            writer,
            Some(&self.pool),
            &mut on_bytes,
        )?;
        let digest = writer.commit(Some(&digests.digest))?;
        Ok(LayerDescriptor {
            diff_id: digests.diff_id,
            digest,
            size: digests.size,
            media_type: self.opts.compression.oci_media_type().to_string(),
        })
    }

    /// Reads a small file from the top-most layer that has it.
    pub(super) fn read_file(
        &self,
        layers: &[LayerDescriptor],
        path: &str,
    ) -> Result<Option<Vec<u8>>, CopyError> {
        for l in layers.iter().rev() {
            let stream = import::open_layer(self.store, &l.digest, &l.media_type)?;
            match index::find_file(stream, &path.into(), 1 << 20, &l.digest.to_string())? {
                index::Lookup::Found(b) => return Ok(Some(b)),
                index::Lookup::Deleted => return Ok(None),
                index::Lookup::Absent => {}
            }
        }
        Ok(None)
    }

    /// The merged listing of `layers`.
    pub(super) fn listing(&self, layers: &[LayerDescriptor]) -> Result<Merged, CopyError> {
        let mut merged = Merged::new();
        for l in layers {
            let known = self
                .listings
                .lock()
                .ok()
                .and_then(|m| m.get(&l.digest).cloned());
            let listing = match known {
                Some(x) => x,
                None => {
                    let stream = import::open_layer(self.store, &l.digest, &l.media_type)?;
                    let listing = Arc::new(index::list(stream, &l.digest.to_string())?);
                    // A poisoned cache only costs a re-read.
                    if let Ok(mut m) = self.listings.lock() {
                        m.insert(l.digest, Arc::clone(&listing));
                    }
                    listing
                }
            };
            merged.apply(&listing);
        }
        Ok(merged)
    }

    /// The image `src` names for `platform` (a stage's: `None` is the
    /// host's), imported into the store once per build. A single-platform
    /// image for another platform is an error when the build names its
    /// platforms, else a warning (docker's classic builder uses it too).
    pub(super) fn resolve_image(
        &self,
        src: &ImageSource,
        platform: Option<&Platform>,
        at: &SourceRef,
    ) -> Result<Imported> {
        let want = platform.cloned().unwrap_or_else(crate::platform::host);
        let key = format!("{src} {want}");
        if let Some(i) = lock(&self.imported, "the resolved images")?.get(&key) {
            return Ok(i.clone());
        }
        let err = |source| Error::Base {
            location: at.location(),
            source: Box::new(source),
        };
        let resolved =
            base::resolve(self.store, src, &want, self.opts.puller.as_deref()).map_err(err)?;
        if !want.accepts(&resolved.platform) {
            let named = self.graph.outputs.iter().any(|o| o.platform.is_some());
            if named {
                return Err(err(base::BaseError::Platform {
                    image: src.to_string(),
                    want: Box::new(want),
                    has: vec![resolved.platform],
                }));
            }
            self.warn(format!(
                "{}: base image {src} is for {}, not {want}; using it",
                at.location(),
                resolved.platform
            ));
        }
        lock(&self.imported, "the resolved images")?.insert(key, resolved.image.clone());
        Ok(resolved.image)
    }

    /// An image this build resolved before for `platform` (a `COPY --from`
    /// image's).
    pub(super) fn imported(
        &self,
        src: &ImageSource,
        platform: Option<&Platform>,
    ) -> Result<Option<Imported>> {
        let want = platform.cloned().unwrap_or_else(crate::platform::host);
        Ok(lock(&self.imported, "the resolved images")?
            .get(&format!("{src} {want}"))
            .cloned())
    }

    /// Loads an image from the store as a build state.
    pub(super) fn load_state(&self, id: &Digest) -> Result<ImageState> {
        let image = Image::load(self.store, id)?;
        Ok(ImageState {
            key: base_key(Some(&image.manifest), self.opts.epoch),
            content_key: None,
            id: Some(*id),
            manifest: Some(image.manifest),
            config: image.config,
            layers: image.layers,
        })
    }
}
