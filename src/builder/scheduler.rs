//! The scheduler: runs stages as soon as the stages they need are done (so
//! independent stages build at the same time), and within a stage writes
//! COPY layers concurrently.
//!
//! A stage is processed in two passes. The first walks its steps in order:
//! it derives every cache key (keys chain on keys, never on results), takes
//! cache hits, and for a missing COPY computes the layer's entries — which
//! only need the *listing* of the layers below, known before those layers are
//! written — and hands the writing (read, tar, sha256, gzip) to the pool. The
//! second pass commits the steps in order as their layers arrive: config,
//! history, image, cache entry. A step that needs the filesystem below itself
//! (RUN, `--chown` by name) first waits for everything pending.
//!
//! All threads are the one pool's (`-j`); waiting helps the pool rather than
//! blocking it.

use std::collections::{HashMap, HashSet};
use std::sync::mpsc::{Receiver, TryRecvError, sync_channel};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use super::inputs::hash_selection;
use super::sources::{self, Selection, SourceRoot};
use super::why::{self, StepRecord};
use super::{BuildOptions, CopyError, Error, Result, RunError, SandboxMode};
use super::{ImageState, StepReport, add, base, config, copy, run, snapshot};
use crate::confine::Root;
use crate::diag::SourceRef;
use crate::digest::Digest;
use crate::exec::Phase;
use crate::graph::key::{base_key, step_key};
use crate::graph::{
    Base, BuildGraph, CacheKey, ConfigChange, CopyFrom, CopyItem, CopyStep, ImageSource, RunStep,
    StageId, StepId, StepKind,
};
use crate::layer::index::{self, Merged, Record};
use crate::oci::import::{self, Imported};
use crate::oci::{ImageConfig, LayerDescriptor, Manifest, manifest_bytes};
use crate::pattern::PatternSet;
use crate::progress::Event;
use crate::store::memo::StatMemo;
use crate::store::{ImageRecord, Store};

/// Waits for a value, running other pool work meanwhile when called on a pool
/// thread (a blocked pool thread could otherwise starve the work it waits for).
fn wait<T>(rx: &Receiver<T>) -> Option<T> {
    loop {
        match rx.try_recv() {
            Ok(v) => return Some(v),
            Err(TryRecvError::Disconnected) => return None,
            Err(TryRecvError::Empty) => match rayon::yield_now() {
                Some(rayon::Yield::Executed) => {}
                _ => match rx.recv_timeout(std::time::Duration::from_millis(2)) {
                    Ok(v) => return Some(v),
                    Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                    Err(_) => return None,
                },
            },
        }
    }
}

/// The builder shared by every stage task.
pub(super) struct Builder<'a> {
    pub(super) graph: &'a BuildGraph,
    pub(super) opts: &'a BuildOptions,
    pub(super) store: &'a Store,
    pool: rayon::ThreadPool,
    /// The build context, the root every context path resolves in.
    context: Arc<Root>,
    excludes: PatternSet,
    /// Context selections made by the pre-build pass, taken once each.
    planned: Mutex<HashMap<(StepId, usize), Selection>>,
    /// Content digests of context files by stat, across builds.
    memo: Mutex<StatMemo>,
    /// Final state of every stage built so far.
    pub(super) results: Mutex<HashMap<StageId, ImageState>>,
    /// Layer listings by blob digest, for the filesystem-below lookups.
    listings: Mutex<HashMap<Digest, Arc<Vec<Record>>>>,
    /// Images resolved during this build, by source text.
    imported: Mutex<HashMap<String, Imported>>,
    /// "Step i/n" numbers: each stage's FROM and each step, in build order.
    numbers: HashMap<(StageId, Option<StepId>), usize>,
    /// What happened to each step, for --metadata-file.
    pub(super) reports: Mutex<Vec<StepReport>>,
    /// Context files and directories the build selected, for --depfile.
    pub(super) read: Mutex<Vec<std::path::PathBuf>>,
    total: usize,
    /// How RUN steps get their filesystem: the option, moved down for the
    /// rest of the build when the kernel refuses it (or a step fills memory).
    sandbox: Mutex<SandboxMode>,
    /// What RUN sandboxes share: seccomp filter, network, cgroups.
    isolation: run::Isolation,
}

/// Digests with the label they go into a key (or a miss reason) under.
type Labelled = Vec<(String, Digest)>;

/// A missing step waiting for its turn to commit.
struct Pending {
    id: StepId,
    key: CacheKey,
    started: Instant,
    /// Why it missed, and what to remember of its inputs once committed.
    reason: String,
    record: (Digest, StepRecord),
    /// The layer being written by the pool; `None` for a config change.
    layer: Option<Receiver<Result<LayerDescriptor>>>,
}

impl<'a> Builder<'a> {
    pub(super) fn new(
        graph: &'a BuildGraph,
        opts: &'a BuildOptions,
        pool: rayon::ThreadPool,
        planned: HashMap<(StepId, usize), Selection>,
        memo: StatMemo,
        (context, excludes): (Arc<Root>, PatternSet),
        order: &[StageId],
    ) -> Self {
        let mut numbers = HashMap::new();
        let mut n = 0;
        for s in order {
            n += 1;
            numbers.insert((*s, None), n);
            for step in &graph.stage(*s).steps {
                n += 1;
                numbers.insert((*s, Some(*step)), n);
            }
        }
        Builder {
            graph,
            opts,
            store: &opts.store,
            pool,
            context,
            excludes,
            planned: Mutex::new(planned),
            memo: Mutex::new(memo),
            results: Mutex::new(HashMap::new()),
            listings: Mutex::new(HashMap::new()),
            imported: Mutex::new(HashMap::new()),
            numbers,
            reports: Mutex::new(Vec::new()),
            read: Mutex::new(Vec::new()),
            total: n,
            sandbox: Mutex::new(opts.sandbox),
            isolation: run::Isolation::new(
                &opts.store,
                opts.network,
                opts.limits,
                opts.host.clone(),
            ),
        }
    }

    /// A warning for the user (plain progress prints `WARNING: …`).
    fn warn(&self, message: String) {
        self.emit(Event::Warning { message });
    }

    pub(super) fn emit(&self, e: Event) {
        self.opts.progress.event(e);
    }

    fn time(&self) -> i64 {
        self.opts.epoch.unwrap_or(self.opts.now)
    }

    fn number(&self, stage: StageId, step: Option<StepId>) -> usize {
        self.numbers.get(&(stage, step)).copied().unwrap_or(0)
    }

    /// Saves the stat memo (a failure only costs the next build time).
    pub(super) fn save_memo(&self) {
        if let Ok(m) = self.memo.lock() {
            let _ = m.save();
        }
    }

    pub(super) fn result(&self, stage: StageId) -> Option<ImageState> {
        self.results.lock().ok()?.get(&stage).cloned()
    }

    // ---- stage scheduling ----------------------------------------------------

    /// Builds `order` (dependencies first), each stage as soon as the stages it
    /// needs are built. Returns the first error; no stage starts after one.
    pub(super) fn run(&self, order: &[StageId]) -> Result<()> {
        struct Sched {
            started: HashSet<StageId>,
            done: HashSet<StageId>,
            error: Option<Error>,
        }
        let sched = Mutex::new(Sched {
            started: HashSet::new(),
            done: HashSet::new(),
            error: None,
        });
        fn launch<'s>(
            b: &'s Builder<'_>,
            s: &rayon::Scope<'s>,
            order: &'s [StageId],
            sched: &'s Mutex<Sched>,
        ) {
            let ready: Vec<StageId> = {
                let Ok(mut st) = sched.lock() else { return };
                if st.error.is_some() {
                    return;
                }
                let ready: Vec<StageId> = order
                    .iter()
                    .copied()
                    .filter(|id| !st.started.contains(id))
                    .filter(|id| {
                        b.graph
                            .dependencies(*id)
                            .iter()
                            .all(|d| st.done.contains(d))
                    })
                    .collect();
                st.started.extend(ready.iter().copied());
                ready
            };
            // Spawned last-first: a pool thread runs its own spawns newest first,
            // so with -j1 stages run in build order.
            for id in ready.into_iter().rev() {
                s.spawn(move |s| {
                    let r = b.build_stage(id);
                    if let Ok(mut st) = sched.lock() {
                        match r {
                            Ok(()) => {
                                st.done.insert(id);
                            }
                            Err(e) => {
                                if st.error.is_none() {
                                    st.error = Some(e);
                                }
                            }
                        }
                    }
                    launch(b, s, order, sched);
                });
            }
        }
        self.emit(Event::Plan {
            steps: self.total,
            parallel: self.pool.current_num_threads() > 1 && self.has_independent_stages(order),
        });
        self.pool.scope(|s| launch(self, s, order, &sched));
        let st = sched.into_inner().map_err(|_| Error::Internal {
            what: "a build thread panicked".into(),
        })?;
        if let Some(e) = st.error {
            return Err(e);
        }
        if let Some(missing) = order.iter().find(|s| !st.done.contains(s)) {
            return Err(Error::Internal {
                what: format!(
                    "stage `{}` could not be scheduled",
                    self.graph.stage(*missing).name
                ),
            });
        }
        Ok(())
    }

    /// Whether two of the stages need neither one another.
    fn has_independent_stages(&self, order: &[StageId]) -> bool {
        let needs = |a: StageId, b: StageId| self.graph.build_order(&[a]).contains(&b);
        order.iter().enumerate().any(|(i, a)| {
            order[i + 1..]
                .iter()
                .any(|b| !needs(*a, *b) && !needs(*b, *a))
        })
    }

    // ---- one stage -----------------------------------------------------------

    fn build_stage(&self, id: StageId) -> Result<()> {
        let stage = self.graph.stage(id);
        let from_number = self.number(id, None);
        self.emit(Event::StepStarted {
            stage: stage.name.clone(),
            index: from_number,
            total: self.total,
            text: format!("FROM {}", stage.base_text),
        });
        let mut state = match &stage.base {
            Base::Scratch => ImageState {
                config: ImageConfig::scratch(),
                layers: Vec::new(),
                key: base_key(None, self.opts.epoch),
                id: None,
                manifest: None,
            },
            Base::Stage(s) => self.result(*s).ok_or_else(|| Error::Internal {
                what: format!(
                    "stage `{}` was not built before `{}`",
                    self.graph.stage(*s).name,
                    stage.name
                ),
            })?,
            Base::Image(src) => {
                let imported = self.resolve_image(src, &stage.source)?;
                let mut st = self.load_state(&imported.id)?;
                st.key = base_key(Some(&imported.manifest), self.opts.epoch);
                st
            }
        };
        self.emit(Event::StepDone {
            stage: stage.name.clone(),
            index: from_number,
            // Empty for scratch: there is no image to name yet.
            image: state.id.map(|d| d.short()).unwrap_or_default(),
            seconds: 0.0,
        });
        if !matches!(stage.base, Base::Scratch) {
            // Docker: a base's ONBUILD triggers are consumed by the stage built
            // on it (frontends lower them as steps), never inherited further.
            state.config.docker_ext.remove("OnBuild");
        }
        let mut flags = config::StageFlags::default();
        let mut pending: Vec<Pending> = Vec::new();
        // Layer listings of the committed state plus the pending layers, for
        // COPY's filesystem-below lookups; built on first need.
        let mut lower: Option<Merged> = None;
        // The key and working directory as of the last step seen (pending or not).
        let mut key = state.key;
        let mut previous_missed = false;
        let mut dry_missed = false;
        let mut workdir = workdir_of(&state.config);
        let mut temp_dirs = add::TempDirs::default();
        let result = rayon::in_place_scope(|scope| -> Result<()> {
            for &step_id in &stage.steps {
                let step = self.graph.step(step_id);
                let started = Instant::now();
                let index = self.number(id, Some(step_id));
                self.emit(Event::StepStarted {
                    stage: stage.name.clone(),
                    index,
                    total: self.total,
                    text: self.graph.created_by(step_id),
                });
                let (inputs, selections, files) = self.inputs(step_id, &workdir)?;
                let parent_key = key;
                let step_key =
                    step_key(&key, &step.kind, &inputs, self.opts.epoch).map_err(|e| {
                        Error::Internal {
                            what: format!("cache key: {e}"),
                        }
                    })?;
                key = step_key;
                if !self.opts.no_cache
                    && let Some(mut hit) = self.cache_lookup(&step_key)?
                {
                    // Everything before a hit is in it: finish (and drop) the pending work.
                    self.commit_pending(&mut state, &mut pending, &mut flags)?;
                    if let StepKind::Config(ConfigChange::Cmd(_)) = &step.kind {
                        flags.cmd_set = true;
                    }
                    hit.key = step_key;
                    workdir = workdir_of(&hit.config);
                    state = hit;
                    lower = None;
                    previous_missed = false;
                    self.report(id, step_id, true, None, started);
                    self.emit(Event::StepCached {
                        stage: stage.name.clone(),
                        index,
                    });
                    self.emit(Event::StepDone {
                        stage: stage.name.clone(),
                        index,
                        image: state.id.map(|d| d.short()).unwrap_or_default(),
                        seconds: started.elapsed().as_secs_f64(),
                    });
                    continue;
                }
                let record = StepRecord {
                    key: step_key,
                    parent: parent_key,
                    step: crate::digest::canonical_json(&step.kind)
                        .map(|b| Digest::of(&b))
                        .unwrap_or_else(|_| Digest::of(b"")),
                    epoch: self.opts.epoch,
                    inputs,
                    files,
                };
                let identity = why::identity(self.graph, step_id);
                let reason = if self.opts.no_cache {
                    "--no-cache".to_string()
                } else {
                    let old: Option<StepRecord> = self.store.step_record(&identity).ok().flatten();
                    why::explain(old.as_ref(), &record, previous_missed)
                };
                previous_missed = true;
                self.emit(Event::StepMiss {
                    stage: stage.name.clone(),
                    index,
                    reason: reason.clone(),
                });
                if self.opts.dry_run {
                    // Keys chain on keys: the rest of the stage can still be
                    // looked up without building this step.
                    dry_missed = true;
                    if let StepKind::Config(
                        ConfigChange::Workdir(w) | ConfigChange::WorkdirCreate(w),
                    ) = &step.kind
                    {
                        workdir = w.clone();
                    }
                    self.report(id, step_id, false, Some(reason), started);
                    continue;
                }
                let record = (identity, record);
                match &step.kind {
                    StepKind::Config(change) => {
                        let mut layer = None;
                        if let ConfigChange::Workdir(w) = change {
                            workdir = w.clone();
                        }
                        if let ConfigChange::WorkdirCreate(w) = change {
                            workdir = w.clone();
                            // WORKDIR creates its directory, owned by the
                            // current USER, even when no later step writes
                            // there (the Dockerfile reference; BuildKit's
                            // mkdir). What exists is in the listing below
                            // (pending copies included); who USER is, and
                            // its /etc/passwd, in the committed state: the
                            // pending steps are committed first only when
                            // there is a directory to make.
                            let location = step.source.location();
                            let copy_err = |source| Error::Copy {
                                location: location.clone(),
                                source,
                            };
                            if lower.is_none() {
                                self.commit_pending(&mut state, &mut pending, &mut flags)?;
                                lower = Some(self.lower(&state.layers).map_err(copy_err)?);
                            }
                            let below = lower.get_or_insert_with(Merged::new);
                            let missing = missing_dirs(w, below);
                            if !missing.is_empty() {
                                self.commit_pending(&mut state, &mut pending, &mut flags)?;
                                let entries =
                                    self.workdir_entries(missing, &state).map_err(copy_err)?;
                                below.apply(&records_of(&entries));
                                let written = self
                                    .write_layer(&entries, &stage.name, index)
                                    .map_err(copy_err)?;
                                let (tx, rx) = sync_channel(1);
                                let _ = tx.send(Ok(written));
                                layer = Some(rx);
                            }
                        }
                        pending.push(Pending {
                            id: step_id,
                            key: step_key,
                            started,
                            reason,
                            record,
                            layer,
                        });
                    }
                    StepKind::Copy(c) => {
                        let location = step.source.location();
                        let copy_err = |source| Error::Copy {
                            location: location.clone(),
                            source,
                        };
                        // `--chown=name` reads /etc/passwd from the layers below:
                        // they must be written first.
                        let names_owner = c
                            .items
                            .iter()
                            .any(|i| i.owner.as_ref().is_some_and(|o| o.numeric().is_none()));
                        // The listing below is built from committed layers
                        // only: a RUN's layer waiting in `pending` must be
                        // in it (its directories, links and modes are what
                        // this copy lands on).
                        if names_owner || lower.is_none() {
                            self.commit_pending(&mut state, &mut pending, &mut flags)?;
                            lower = Some(self.lower(&state.layers).map_err(copy_err)?);
                        }
                        let below = lower.get_or_insert_with(Merged::new);
                        // `--link`: made over nothing, the same over any base.
                        let nothing = Merged::new();
                        let over = if c.link { &nothing } else { &*below };
                        let entries = self
                            .copy_entries(c, selections, &state, &workdir, over, &mut temp_dirs)
                            .map_err(copy_err)?;
                        below.apply(&records_of(&entries));
                        let (tx, rx) = sync_channel(1);
                        let stage_name = stage.name.clone();
                        scope.spawn(move |_| {
                            let r = self
                                .write_layer(&entries, &stage_name, index)
                                .map_err(|source| Error::Copy { location, source });
                            let _ = tx.send(r);
                        });
                        pending.push(Pending {
                            id: step_id,
                            key: step_key,
                            started,
                            reason,
                            record,
                            layer: Some(rx),
                        });
                    }
                    StepKind::Run(r) => {
                        // RUN reads the filesystem below: everything pending first.
                        self.commit_pending(&mut state, &mut pending, &mut flags)?;
                        lower = None;
                        let layer =
                            self.run_layer(r, &state, &stage.name, index)
                                .map_err(|source| Error::Run {
                                    location: step.source.location(),
                                    step: self.graph.created_by(step_id),
                                    source: Box::new(source),
                                })?;
                        let (tx, rx) = sync_channel(1);
                        let _ = tx.send(Ok(layer));
                        pending.push(Pending {
                            id: step_id,
                            key: step_key,
                            started,
                            reason,
                            record,
                            layer: Some(rx),
                        });
                    }
                }
            }
            self.commit_pending(&mut state, &mut pending, &mut flags)
        });
        // An error leaves spawned layer writes to finish inside the scope; their
        // results are dropped, their blobs are complete and harmless.
        result?;
        drop(temp_dirs);
        if self.opts.dry_run {
            // Nothing is committed: later stages only need the key, outputs
            // only the image when every step was cached.
            state.key = key;
            if dry_missed {
                state.id = None;
                state.manifest = None;
            }
        } else if state.id.is_none() {
            self.commit(&mut state, None)?;
        }
        if let Ok(mut r) = self.results.lock() {
            r.insert(id, state);
        }
        Ok(())
    }

    /// Commits the pending steps in order, waiting for their layers.
    fn commit_pending(
        &self,
        state: &mut ImageState,
        pending: &mut Vec<Pending>,
        flags: &mut config::StageFlags,
    ) -> Result<()> {
        for p in pending.drain(..) {
            let Pending {
                id,
                key,
                started,
                reason,
                record,
                layer,
            } = p;
            let layer = match layer {
                None => None,
                Some(rx) => Some(wait(&rx).ok_or_else(|| Error::Internal {
                    what: "a layer writer stopped without a result".into(),
                })??),
            };
            let step = self.graph.step(id);
            let created_by = self.graph.created_by(id);
            let parent = state.id;
            state.id = None;
            state.manifest = None;
            let push_layer = |state: &mut ImageState, layer: LayerDescriptor| {
                let mut rootfs = state.config.oci.rootfs().clone();
                let mut diff_ids = rootfs.diff_ids().clone();
                diff_ids.push(layer.diff_id.to_string());
                rootfs.set_diff_ids(diff_ids);
                state.config.oci.set_rootfs(rootfs);
                state.layers.push(layer);
            };
            match (&step.kind, layer) {
                (StepKind::Config(change), layer) => {
                    config::apply(&mut state.config, change, flags);
                    // A WORKDIR that created its directory has a layer.
                    let empty = layer.is_none();
                    if let Some(layer) = layer {
                        push_layer(state, layer);
                    }
                    config::stamp(
                        &mut state.config,
                        &created_by,
                        empty,
                        self.time(),
                        self.opts.epoch,
                    );
                }
                (_, Some(layer)) => {
                    push_layer(state, layer);
                    config::stamp(
                        &mut state.config,
                        &created_by,
                        false,
                        self.time(),
                        self.opts.epoch,
                    );
                }
                (_, None) => {
                    return Err(Error::Internal {
                        what: "a layer step committed without its layer".into(),
                    });
                }
            }
            state.key = key;
            self.commit(state, parent)?;
            if let Some(img) = state.id {
                self.store.cache_put(&key.0, &img)?;
            }
            // Only for explaining the next miss.
            let _ = self.store.put_step_record(&record.0, &record.1);
            self.report(step.stage, id, false, Some(reason), started);
            self.emit(Event::StepDone {
                stage: self.graph.stage(step.stage).name.clone(),
                index: self.number(step.stage, Some(id)),
                image: state.id.map(|d| d.short()).unwrap_or_default(),
                seconds: started.elapsed().as_secs_f64(),
            });
        }
        Ok(())
    }

    // ---- inputs and keys -------------------------------------------------------

    /// What a step reads besides its parent, as labelled digests for its key,
    /// plus the context selections a COPY will use.
    #[allow(clippy::type_complexity)]
    fn inputs(
        &self,
        id: StepId,
        workdir: &str,
    ) -> Result<(Labelled, Vec<Option<Selection>>, Labelled)> {
        let step = self.graph.step(id);
        let mut selections = Vec::new();
        let mut inputs = Vec::new();
        let mut files = Vec::new();
        let location = step.source.location();
        let c = match &step.kind {
            StepKind::Copy(c) => c,
            StepKind::Run(r) => {
                let (i, f) = self.run_mount_inputs(r, &location)?;
                return Ok((i, selections, f));
            }
            _ => return Ok((inputs, selections, files)),
        };
        for (i, item) in c.items.iter().enumerate() {
            match &item.from {
                CopyFrom::Context => {
                    let planned = self
                        .planned
                        .lock()
                        .ok()
                        .and_then(|mut p| p.remove(&(id, i)));
                    let sel = match planned {
                        Some(sel) => sel,
                        None => {
                            let root = SourceRoot {
                                root: &self.context,
                                excludes: Some(&self.excludes),
                                owners: None,
                            };
                            sources::select(&root, item, workdir).map_err(|e| Error::Copy {
                                location: location.clone(),
                                source: CopyError::Select(e),
                            })?
                        }
                    };
                    let d = self.hash_context(&sel, &location, &mut files)?;
                    inputs.push((format!("item{i}:context"), d));
                    selections.push(Some(sel));
                }
                CopyFrom::Stage { stage, name } => {
                    let key =
                        self.result(*stage)
                            .map(|s| s.key)
                            .ok_or_else(|| Error::Internal {
                                what: format!(
                                    "stage `{name}` was not built before it was copied from"
                                ),
                            })?;
                    inputs.push((format!("item{i}:stage"), key.0));
                    selections.push(None);
                }
                CopyFrom::Image { source } => {
                    let imported = self.resolve_image(source, &step.source)?;
                    inputs.push((format!("item{i}:image"), imported.manifest));
                    selections.push(None);
                }
                // The content is part of the step, so of its key.
                CopyFrom::Inline { .. } => selections.push(None),
            }
        }
        Ok((inputs, selections, files))
    }

    /// The digest of context files selected for a step (through the stat
    /// memo), adding each file's digest to `files` (for miss reasons) and
    /// its path to what the build read (for depfiles).
    fn hash_context(
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
        if let Ok(mut read) = self.read.lock() {
            read.extend(sel.entries.iter().map(|e| e.shown.clone()));
            read.extend(sel.roots.iter().cloned());
        }
        Ok(d)
    }

    /// What a RUN's bind mounts show the command, for its key: the content
    /// of a context source (after .dockerignore, through the stat memo), or
    /// the key of the stage it binds from. Cache, tmpfs and secret mounts are
    /// not inputs (docker: a secret's content never reaches the key).
    fn run_mount_inputs(&self, r: &RunStep, location: &str) -> Result<(Labelled, Labelled)> {
        let mut inputs = Vec::new();
        let mut files = Vec::new();
        for (j, m) in r.mounts.iter().enumerate() {
            let crate::graph::Mount::Bind { source, from, .. } = m else {
                continue;
            };
            match from {
                None => {
                    let root = SourceRoot {
                        root: &self.context,
                        excludes: Some(&self.excludes),
                        owners: None,
                    };
                    let src = match source.trim_start_matches('/') {
                        "" => ".",
                        s => s,
                    };
                    let item = crate::graph::CopyItem::from_context(&[src], "/mnt/");
                    let sel = sources::select(&root, &item, "/").map_err(|e| Error::Copy {
                        location: location.to_string(),
                        source: CopyError::Select(e),
                    })?;
                    let d = self.hash_context(&sel, location, &mut files)?;
                    inputs.push((format!("mount{j}:context"), d));
                }
                Some(name) => {
                    // A stage not built (or not a stage) is reported when
                    // the mount is made; its name alone keys it until then.
                    if let Some(key) = self
                        .graph
                        .stage_by_name(name)
                        .and_then(|id| self.result(id))
                        .map(|s| s.key)
                    {
                        inputs.push((format!("mount{j}:stage"), key.0));
                    }
                }
            }
        }
        Ok((inputs, files))
    }

    fn report(
        &self,
        stage: StageId,
        step: StepId,
        cached: bool,
        reason: Option<String>,
        started: Instant,
    ) {
        if let Ok(mut r) = self.reports.lock() {
            r.push(StepReport {
                stage: self.graph.stage(stage).name.clone(),
                index: self.number(stage, Some(step)),
                text: self.graph.created_by(step),
                cached,
                reason,
                seconds: started.elapsed().as_secs_f64(),
            });
        }
    }

    // ---- COPY ------------------------------------------------------------------

    /// The entries of a COPY layer over the filesystem `lower`.
    #[allow(clippy::too_many_arguments)]
    fn copy_entries(
        &self,
        c: &CopyStep,
        selections: Vec<Option<Selection>>,
        state: &ImageState,
        workdir: &str,
        lower: &Merged,
        temp_dirs: &mut add::TempDirs,
    ) -> Result<Vec<crate::layer::Entry>, CopyError> {
        let mut items = Vec::new();
        for (item, sel) in c.items.iter().zip(selections) {
            let mut sel = match (sel, &item.from) {
                (Some(s), _) => s,
                (None, CopyFrom::Inline { content }) => {
                    self.select_inline(item, content, workdir)?
                }
                (None, _) => self.select_from_image(item, workdir)?,
            };
            if c.add {
                sel = add::unpack_archives(self.store, sel, temp_dirs, &|m| self.warn(m))?;
            }
            let (uid, gid) = self.owner(item, state)?;
            items.push(copy::ItemSelection {
                selected: sel.entries,
                apply: copy::Apply {
                    mode: item.mode.clone(),
                    chown: item.owner.is_some(),
                    uid,
                    gid,
                    epoch: self.opts.epoch.map(|e| e.max(0) as u64),
                    now: self.opts.now.max(0) as u64,
                },
                dest_root: sel.dest_dir,
                into_dir: sel.into_dir,
            });
            for pattern in sel.unmatched {
                self.warn(format!(
                    "{}: `{pattern}` matches no file: nothing copied for it",
                    if c.add { "ADD" } else { "COPY" }
                ));
            }
        }
        Ok(crate::layer::normalize(copy::entries(items, lower)?)?)
    }

    /// Runs a RUN step in the sandbox and writes its layer. Moves down the
    /// [`SandboxMode`]s, for this and later steps, when the kernel refuses a
    /// mount, and runs a step that filled the memory upper again on disk.
    fn run_layer(
        &self,
        r: &RunStep,
        state: &ImageState,
        stage: &str,
        index: usize,
    ) -> Result<LayerDescriptor, RunError> {
        let stage_roots = |name: &str| -> Option<Result<std::path::PathBuf, RunError>> {
            let id = self.graph.stage_by_name(name)?;
            let layers = self.result(id)?.layers;
            Some(
                snapshot::rootfs(self.store, &layers, &|m| self.warn(m)).map_err(|e| {
                    RunError::Snapshot {
                        what: format!("stage `{name}`: {e}"),
                    }
                }),
            )
        };
        let progress = Arc::clone(&self.opts.progress);
        let mut on_line = |line: &str| {
            progress.event(Event::StepOutput {
                stage: stage.to_string(),
                index,
                line: line.to_string(),
            });
        };
        loop {
            let mode = *self.sandbox.lock().unwrap_or_else(|p| p.into_inner());
            let inp = run::RunInputs {
                store: self.store,
                config: &state.config,
                layers: &state.layers,
                epoch: self.opts.epoch.map(|e| e.max(0) as u64),
                context: &self.graph.settings.context,
                secrets: &self.opts.secrets,
                stage_roots: &stage_roots,
                mode,
                compression: self.opts.compression,
                warn: &|m| self.warn(m),
                isolation: &self.isolation,
            };
            let dir = self.store.tmp_path("run");
            std::fs::create_dir_all(&dir).map_err(|source| RunError::Io {
                path: dir.clone(),
                source,
            })?;
            let result =
                run::run_step(r, &inp, &dir, &mut on_line).and_then(|captured| match captured {
                    run::Captured::Entries {
                        entries,
                        held,
                        cgroup,
                    } => {
                        let r = crate::layer::normalize(entries)
                            .map_err(|e| RunError::Layer(CopyError::from(e)))
                            .and_then(|entries| {
                                self.write_layer(&entries, stage, index)
                                    .map_err(RunError::Layer)
                            });
                        // The sandbox ends, then its cgroups can go.
                        drop(held);
                        drop(cgroup);
                        r
                    }
                    run::Captured::Layer { path, digests } => {
                        let digest = self
                            .store
                            .adopt_blob(&path, &digests.digest)
                            .map_err(|e| RunError::Layer(CopyError::from(e)))?;
                        Ok(LayerDescriptor {
                            diff_id: digests.diff_id,
                            digest,
                            size: digests.size,
                            media_type: self.opts.compression.oci_media_type().to_string(),
                        })
                    }
                });
            run::remove_tree(&dir);
            let (next, why) = match &result {
                // The kernel refused the overlay or the tmpfs under it.
                Err(RunError::Sandbox(crate::exec::Error::Setup(e)))
                    if matches!(e.phase, Phase::Overlay | Phase::UpperTmpfs) =>
                {
                    (mode.fallback(), e.to_string())
                }
                Err(e @ RunError::MemoryFull { .. }) => (Some(SandboxMode::Disk), e.to_string()),
                _ => (None, String::new()),
            };
            let Some(next) = next else {
                return result;
            };
            let how = match next {
                SandboxMode::Disk => "keeping the changes of RUN steps on disk",
                _ => "running RUN steps on a copy of the filesystem",
            };
            self.emit(Event::Warning {
                message: format!("{why}; {how} instead"),
            });
            let mut m = self.sandbox.lock().unwrap_or_else(|p| p.into_inner());
            *m = (*m).max(next);
        }
    }

    /// Writes a layer's entries into the store (on a pool thread).
    fn write_layer(
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

    /// A heredoc copy: the content selected as a 0664 file named by the
    /// heredoc (BuildKit's `COPY <<EOF /dest`, made with `llb.Mkfile` 0664).
    fn select_inline(
        &self,
        item: &CopyItem,
        content: &str,
        workdir: &str,
    ) -> Result<Selection, CopyError> {
        let name = item.sources.first().cloned().unwrap_or_default();
        let dest_abs = sources::absolute(workdir, &item.dest);
        let (dest, dest_dir, into_dir) = if item.dest.ends_with('/') {
            (dest_abs.join(name.as_bytes()), Some(dest_abs), None)
        } else {
            let into = dest_abs.join(name.as_bytes());
            (dest_abs, None, Some(into))
        };
        Ok(Selection {
            entries: vec![sources::Selected {
                dest,
                shown: std::path::PathBuf::new(),
                kind: sources::SourceKind::File {
                    size: content.len() as u64,
                    source: crate::layer::FileSource::Bytes(content.as_bytes().into()),
                },
                mode: 0o664,
                mtime: self.time(),
                link_key: None,
                direct: true,
                owner: None,
                stat: None,
            }],
            dest_dir,
            into_dir,
            ..Selection::default()
        })
    }

    /// Selects a copy's sources from another stage's or an image's filesystem.
    fn select_from_image(&self, item: &CopyItem, workdir: &str) -> Result<Selection, CopyError> {
        let layers = match &item.from {
            CopyFrom::Stage { stage, .. } => {
                self.result(*stage).map(|s| s.layers).unwrap_or_default()
            }
            CopyFrom::Image { source } => {
                let key = source.to_string();
                let id = self
                    .imported
                    .lock()
                    .ok()
                    .and_then(|m| m.get(&key).map(|i| i.id))
                    .ok_or_else(|| CopyError::Snapshot {
                        what: format!("image {key} was not resolved"),
                    })?;
                self.load_state(&id)
                    .map_err(|e| CopyError::Snapshot {
                        what: e.to_string(),
                    })?
                    .layers
            }
            CopyFrom::Context | CopyFrom::Inline { .. } => Vec::new(),
        };
        let listing = self.lower(&layers)?;
        let rootfs = snapshot::rootfs(self.store, &layers, &|m| self.warn(m))?;
        let rootfs = Arc::new(Root::open(&rootfs).map_err(|e| CopyError::Snapshot {
            what: e.to_string(),
        })?);
        let root = SourceRoot {
            root: &rootfs,
            excludes: None,
            owners: Some(&listing),
        };
        Ok(sources::select(&root, item, workdir)?)
    }

    /// The directories WORKDIR creates (from [`missing_dirs`]), 0755, owned
    /// by the image's USER.
    fn workdir_entries(
        &self,
        missing: Vec<crate::layer::LayerPath>,
        state: &ImageState,
    ) -> Result<Vec<crate::layer::Entry>, CopyError> {
        // The USER a RUN would run as (one resolution for both).
        let user = state.config.config().user().clone().unwrap_or_default();
        let (uid, gid) = if user.is_empty() {
            (0, 0)
        } else {
            let text =
                |f: Option<Vec<u8>>| String::from_utf8_lossy(&f.unwrap_or_default()).into_owned();
            let passwd = text(self.read_file(&state.layers, "etc/passwd")?);
            let group = text(self.read_file(&state.layers, "etc/group")?);
            let id = crate::exec::user::resolve(&user, &passwd, &group).map_err(|e| {
                CopyError::Owner {
                    owner: user.clone(),
                    reason: e.to_string(),
                }
            })?;
            (u64::from(id.uid), u64::from(id.gid))
        };
        let mtime = u64::try_from(self.opts.epoch.unwrap_or(self.opts.now)).unwrap_or(0);
        Ok(missing
            .into_iter()
            .rev()
            .map(|p| crate::layer::Entry::dir(p, 0o755, uid, gid, mtime))
            .collect())
    }

    fn owner(&self, item: &CopyItem, state: &ImageState) -> Result<(u64, u64), CopyError> {
        let Some(o) = &item.owner else {
            return Ok((0, 0));
        };
        self.resolve_owner(o, state)
    }

    /// `user[:group]` as ids, names looked up in the image's files.
    fn resolve_owner(
        &self,
        o: &crate::graph::Owner,
        state: &ImageState,
    ) -> Result<(u64, u64), CopyError> {
        if let Some((uid, gid)) = o.numeric() {
            return Ok((uid, gid.unwrap_or(uid)));
        }
        let passwd = self.read_file(&state.layers, "etc/passwd")?;
        let group = match &o.group {
            Some(g) if g.parse::<u64>().is_err() => self.read_file(&state.layers, "etc/group")?,
            _ => None,
        };
        copy::resolve_owner(
            &o.user,
            o.group.as_deref(),
            passwd.as_deref(),
            group.as_deref(),
        )
        .map_err(|reason| CopyError::Owner {
            owner: o.to_string(),
            reason,
        })
    }

    /// Reads a small file from the top-most layer that has it.
    fn read_file(
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
    fn lower(&self, layers: &[LayerDescriptor]) -> Result<Merged, CopyError> {
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

    // ---- images ------------------------------------------------------------------

    fn resolve_image(&self, src: &ImageSource, at: &SourceRef) -> Result<Imported> {
        let key = src.to_string();
        if let Some(i) = self.imported.lock().ok().and_then(|m| m.get(&key).cloned()) {
            return Ok(i);
        }
        let imported =
            base::resolve(self.store, src, self.opts.puller.as_deref()).map_err(|source| {
                Error::Base {
                    location: at.location(),
                    source,
                }
            })?;
        if let Ok(mut m) = self.imported.lock() {
            m.insert(key, imported.clone());
        }
        Ok(imported)
    }

    /// Loads an image from the store as a build state.
    fn load_state(&self, id: &Digest) -> Result<ImageState> {
        let rec = self
            .store
            .image(id)?
            .ok_or_else(|| crate::store::Error::NoSuchImage(id.to_string()))?;
        let m = Manifest::from_bytes(&self.store.read_blob(&rec.manifest)?)?;
        let config = ImageConfig::from_bytes(&self.store.read_blob(&m.config)?)?;
        let diff_ids = config.diff_ids()?;
        let layers = m
            .layers
            .iter()
            .zip(diff_ids)
            .map(|((digest, size, mt), diff_id)| LayerDescriptor {
                diff_id,
                digest: *digest,
                size: *size,
                media_type: mt.clone(),
            })
            .collect();
        Ok(ImageState {
            config,
            layers,
            key: base_key(Some(&rec.manifest), self.opts.epoch),
            id: Some(*id),
            manifest: Some(rec.manifest),
        })
    }

    /// A cached step result whose blobs are all still present.
    fn cache_lookup(&self, key: &CacheKey) -> Result<Option<ImageState>> {
        let Some(id) = self.store.cache_get(&key.0)? else {
            return Ok(None);
        };
        let state = match self.load_state(&id) {
            Ok(s) => s,
            // A pruned or damaged entry is a miss, not a failure.
            Err(_) => return Ok(None),
        };
        // Layers of a registry cache count: they are fetched when read.
        if state
            .layers
            .iter()
            .all(|l| self.store.can_read_blob(&l.digest))
        {
            Ok(Some(state))
        } else {
            Ok(None)
        }
    }

    fn commit(&self, state: &mut ImageState, parent: Option<Digest>) -> Result<()> {
        let cfg = state.config.to_bytes()?;
        let id = self.store.put_blob(&cfg)?;
        let m = manifest_bytes(&id, cfg.len() as u64, &state.layers)?;
        let manifest = self.store.put_blob(&m)?;
        self.store
            .put_image(&id, &ImageRecord { manifest, parent })?;
        state.id = Some(id);
        state.manifest = Some(manifest);
        Ok(())
    }
}

/// The directories of `dir` (after links) that `lower` lacks, innermost
/// first.
fn missing_dirs(dir: &str, lower: &Merged) -> Vec<crate::layer::LayerPath> {
    let path = sources::absolute("/", dir);
    let resolved = if lower.is_empty() {
        path
    } else {
        lower.resolve(&path)
    };
    let mut missing = Vec::new();
    let mut cur = Some(resolved);
    while let Some(p) = cur {
        if p.is_empty() || lower.get(&p).is_some() {
            break;
        }
        cur = p.parent();
        missing.push(p);
    }
    missing
}

fn workdir_of(cfg: &ImageConfig) -> String {
    cfg.config()
        .working_dir()
        .clone()
        .unwrap_or_else(|| "/".to_string())
}

/// The listing records of a layer about to be written, for later COPYs'
/// filesystem-below lookups.
fn records_of(entries: &[crate::layer::Entry]) -> Vec<Record> {
    use crate::layer::EntryKind;
    use crate::layer::index::{Kind, Meta};
    entries
        .iter()
        .map(|e| {
            let (dir, name) = e.path.split();
            if name == crate::layer::OPAQUE_WHITEOUT.as_bytes() {
                return Record::Opaque(dir.into());
            }
            if let Some(victim) = name.strip_prefix(crate::layer::WHITEOUT_PREFIX.as_bytes()) {
                return Record::Whiteout(crate::layer::LayerPath::from(dir).join(victim));
            }
            let kind = match &e.kind {
                EntryKind::Dir => Kind::Dir,
                EntryKind::File { .. } => Kind::File,
                EntryKind::Symlink(t) => Kind::Symlink(t.as_os_str().as_encoded_bytes().to_vec()),
                EntryKind::Hardlink(t) => Kind::Hardlink(t.clone()),
                _ => Kind::Other,
            };
            Record::Entry(
                e.path.clone(),
                Meta {
                    kind,
                    mode: e.mode,
                    uid: e.uid,
                    gid: e.gid,
                    mtime: e.mtime,
                    size: match &e.kind {
                        EntryKind::File { size, .. } => *size,
                        _ => 0,
                    },
                },
            )
        })
        .collect()
}
