//! The scheduler: runs stages as soon as the stages they need are done (so
//! independent stages build at the same time), and within a stage writes
//! layers concurrently. It knows no step kind: every step is a
//! [`step::Step`] that says what it reads and how it executes.
//!
//! A stage is processed in two passes. The first walks its steps in order:
//! it derives every cache key (keys chain on keys, never on results), takes
//! cache hits, and executes what missed; a step whose output is a list of
//! layer entries (COPY) only needs the *listing* of the layers below, known
//! before those layers are written, and the writing (read, tar, sha256,
//! gzip) goes to the pool. The second pass commits the steps in order as
//! their layers arrive: config, history, image, cache entry. A step that
//! needs the filesystem below itself (RUN, `--chown` by name) asks
//! [`Below::commit_pending`], which waits for everything pending.
//!
//! All threads are the one pool's (`-j`); waiting helps the pool rather than
//! blocking it.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::sync::mpsc::{Receiver, TryRecvError, sync_channel};
use std::time::Instant;

use super::cx::{Cx, lock};
use super::step::{self, Output, Step};
use super::why::{self, StepRecord};
use super::{CopyError, Error, ImageState, Result, StepReport, config};
use crate::digest::Digest;
use crate::graph::key::{base_key, content_key, step_key};
use crate::graph::{Base, CacheKey, StageId, StepId};
use crate::layer::index::{Merged, Record};
use crate::oci::{ImageConfig, LayerDescriptor, manifest_bytes};
use crate::progress::Event;
use crate::store::ImageRecord;

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

/// Walks the graph's stages and steps.
pub(super) struct Scheduler<'a> {
    pub(super) cx: Cx<'a>,
    /// "Step i/n" numbers: each stage's FROM and each step, in build order.
    numbers: HashMap<(StageId, Option<StepId>), usize>,
    /// What happened to each step, for --metadata-file.
    reports: Mutex<Vec<StepReport>>,
    total: usize,
}

/// A missed step waiting for its turn to commit.
struct Pending<'g> {
    id: StepId,
    step: Box<dyn Step + 'g>,
    /// Its definition key, and its content key if it has one.
    keys: (CacheKey, Option<CacheKey>),
    started: Instant,
    /// Why it missed, and what to remember of its inputs once committed.
    reason: String,
    record: (Digest, StepRecord),
    /// The layer being written by the pool; `None` for a config change.
    layer: Option<Receiver<Result<LayerDescriptor>>>,
}

/// One stage being built: the committed state, the steps not yet
/// committed, and the listing of the filesystem below the next step.
struct StageRun<'g> {
    state: ImageState,
    pending: Vec<Pending<'g>>,
    flags: config::StageFlags,
    /// Layer listings of the committed state plus the pending layers, for
    /// filesystem-below lookups; built on first need.
    lower: Option<Merged>,
}

/// The listing of nothing.
static EMPTY: std::sync::LazyLock<Merged> = std::sync::LazyLock::new(Merged::new);

/// What an executing step sees of the stage below it.
pub(super) struct Below<'p, 'a> {
    sched: &'p Scheduler<'a>,
    run: &'p mut StageRun<'a>,
    /// The step's `file:line`, for errors.
    location: String,
    stage: &'p str,
    index: usize,
}

impl Below<'_, '_> {
    /// The build-wide services.
    pub(super) fn cx(&self) -> &Cx<'_> {
        &self.sched.cx
    }

    /// The image as committed so far; the steps still pending are not in
    /// it (see [`Below::commit_pending`]).
    pub(super) fn state(&self) -> &ImageState {
        &self.run.state
    }

    /// Commits every pending step, so that [`Below::state`] is the whole
    /// image below: for steps that read the filesystem or the config below
    /// themselves.
    ///
    /// # Errors
    /// A pending step's layer failed, or committing failed.
    pub(super) fn commit_pending(&mut self) -> Result<()> {
        self.sched.commit_pending(self.run)
    }

    /// A COPY-class failure of this step, located.
    pub(super) fn copy_error(&self, source: CopyError) -> Error {
        Error::Copy {
            location: self.location.clone(),
            source,
        }
    }

    /// The step's `file:line`.
    pub(super) fn location(&self) -> &str {
        &self.location
    }

    /// The listing of the filesystem below, pending layers included.
    ///
    /// # Errors
    /// A layer that cannot be read, or a pending step that failed.
    pub(super) fn listing(&mut self) -> Result<&mut Merged> {
        if self.run.lower.is_none() {
            self.sched.commit_pending(self.run)?;
            let merged = self
                .sched
                .cx
                .listing(&self.run.state.layers)
                .map_err(|e| self.copy_error(e))?;
            self.run.lower = Some(merged);
        }
        Ok(self.run.lower.get_or_insert_with(Merged::new))
    }

    /// The committed state with the listing of the filesystem below
    /// (see [`Below::listing`]).
    ///
    /// # Errors
    /// As [`Below::listing`].
    pub(super) fn view(&mut self) -> Result<(&ImageState, &Merged)> {
        self.listing()?;
        let run = &*self.run;
        Ok((&run.state, run.lower.as_ref().unwrap_or(&EMPTY)))
    }

    /// The stage's name and the step's number, for progress.
    pub(super) fn position(&self) -> (&str, usize) {
        (self.stage, self.index)
    }
}

impl<'a> Scheduler<'a> {
    pub(super) fn new(cx: Cx<'a>, order: &[StageId]) -> Self {
        let mut numbers = HashMap::new();
        let mut n = 0;
        for s in order {
            n += 1;
            numbers.insert((*s, None), n);
            for step in &cx.graph.stage(*s).steps {
                n += 1;
                numbers.insert((*s, Some(*step)), n);
            }
        }
        Scheduler {
            cx,
            numbers,
            reports: Mutex::new(Vec::new()),
            total: n,
        }
    }

    fn number(&self, stage: StageId, step: Option<StepId>) -> usize {
        self.numbers.get(&(stage, step)).copied().unwrap_or(0)
    }

    /// Every step's report, by step number.
    pub(super) fn take_reports(&self) -> Result<Vec<StepReport>> {
        let mut r = std::mem::take(&mut *lock(&self.reports, "the step reports")?);
        r.sort_by_key(|s| s.index);
        Ok(r)
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
            b: &'s Scheduler<'_>,
            s: &rayon::Scope<'s>,
            order: &'s [StageId],
            sched: &'s Mutex<Sched>,
        ) {
            let ready: Vec<StageId> = {
                // Poisoned: a stage task panicked; `run` reports it.
                let Ok(mut st) = sched.lock() else { return };
                if st.error.is_some() {
                    return;
                }
                let ready: Vec<StageId> = order
                    .iter()
                    .copied()
                    .filter(|id| !st.started.contains(id))
                    .filter(|id| {
                        b.cx.graph
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
                    let Ok(mut st) = sched.lock() else { return };
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
                    drop(st);
                    launch(b, s, order, sched);
                });
            }
        }
        self.cx.emit(Event::Plan {
            steps: self.total,
            parallel: self.cx.pool.current_num_threads() > 1 && self.has_independent_stages(order),
        });
        self.cx.pool.scope(|s| launch(self, s, order, &sched));
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
                    self.cx.graph.stage(*missing).name
                ),
            });
        }
        Ok(())
    }

    /// Whether two of the stages need neither one another.
    fn has_independent_stages(&self, order: &[StageId]) -> bool {
        let needs = |a: StageId, b: StageId| self.cx.graph.build_order(&[a]).contains(&b);
        order.iter().enumerate().any(|(i, a)| {
            order[i + 1..]
                .iter()
                .any(|b| !needs(*a, *b) && !needs(*b, *a))
        })
    }

    // ---- one stage -----------------------------------------------------------

    /// The state a stage starts from.
    fn base_state(&self, id: StageId) -> Result<ImageState> {
        let stage = self.cx.graph.stage(id);
        let mut state = match &stage.base {
            Base::Scratch => {
                return Ok(ImageState {
                    config: ImageConfig::scratch(),
                    layers: Vec::new(),
                    key: base_key(None, self.cx.opts.epoch),
                    content_key: None,
                    id: None,
                    manifest: None,
                });
            }
            Base::Stage(s) => self.cx.built(*s, &format!("`{}`", stage.name))?,
            Base::Image(src) => {
                let imported =
                    self.cx
                        .resolve_image(src, stage.platform.as_ref(), &stage.source)?;
                let mut st = self.cx.load_state(&imported.id)?;
                st.key = base_key(Some(&imported.manifest), self.cx.opts.epoch);
                st
            }
        };
        // Docker: a base's ONBUILD triggers are consumed by the stage built
        // on it (frontends lower them as steps), never inherited further.
        state.config.docker_ext.remove("OnBuild");
        Ok(state)
    }

    fn build_stage(&self, id: StageId) -> Result<()> {
        let cx = &self.cx;
        let (graph, opts) = (cx.graph, cx.opts);
        let stage = graph.stage(id);
        let from_number = self.number(id, None);
        cx.emit(Event::StepStarted {
            stage: stage.shown().to_string(),
            index: from_number,
            total: self.total,
            text: format!("FROM {}", stage.base_text),
        });
        let state = self.base_state(id)?;
        cx.emit(Event::StepDone {
            stage: stage.shown().to_string(),
            index: from_number,
            // Empty for scratch: there is no image to name yet.
            image: state.id.map(|d| d.short()).unwrap_or_default(),
            seconds: 0.0,
        });
        // The keys and working directory as of the last step seen (pending
        // or not).
        let mut key = state.key;
        let mut alt = state.content_key;
        let mut workdir = workdir_of(&state.config);
        let mut run = StageRun {
            state,
            pending: Vec::new(),
            flags: config::StageFlags::default(),
            lower: None,
        };
        let mut previous_missed = false;
        let mut dry_missed = false;
        // `--no-cache`, or `--no-cache-filter` naming this stage.
        let no_cache = opts.no_cache || opts.no_cache_stages.contains(&stage.name);
        rayon::in_place_scope(|scope| -> Result<()> {
            for &step_id in &stage.steps {
                let step = graph.step(step_id);
                let imp = step::of(cx, step_id);
                let started = Instant::now();
                let index = self.number(id, Some(step_id));
                cx.emit(Event::StepStarted {
                    stage: stage.shown().to_string(),
                    index,
                    total: self.total,
                    text: graph.created_by(step_id),
                });
                let step::CacheMap {
                    inputs,
                    files,
                    content,
                    exec,
                } = imp.cache_map(cx, &workdir)?;
                let key_err = |e: serde_json::Error| Error::Internal {
                    what: format!("the cache key of `{}`: {e}", graph.created_by(step_id)),
                };
                let parent = key;
                key = step_key(&parent, &step.kind, &inputs, opts.epoch).map_err(key_err)?;
                // The content chain: from this step's content key, or on
                // from the parent's.
                alt = match (&content, alt) {
                    (Some(c), parent_alt) => Some(
                        content_key(&parent_alt.unwrap_or(parent), &step.kind, c, opts.epoch)
                            .map_err(key_err)?,
                    ),
                    (None, Some(parent_alt)) => Some(
                        step_key(&parent_alt, &step.kind, &inputs, opts.epoch).map_err(key_err)?,
                    ),
                    (None, None) => None,
                };
                if !no_cache && let Some(mut hit) = self.cache_lookup(&key, alt.as_ref())? {
                    // Everything before a hit is in it: finish (and drop) the
                    // pending work.
                    self.commit_pending(&mut run)?;
                    imp.configure(None, &mut run.flags);
                    hit.key = key;
                    hit.content_key = alt;
                    workdir = workdir_of(&hit.config);
                    run.state = hit;
                    run.lower = None;
                    previous_missed = false;
                    self.report(id, step_id, true, None, started)?;
                    cx.emit(Event::StepCached {
                        stage: stage.shown().to_string(),
                        index,
                    });
                    cx.emit(Event::StepDone {
                        stage: stage.shown().to_string(),
                        index,
                        image: run.state.id.map(|d| d.short()).unwrap_or_default(),
                        seconds: started.elapsed().as_secs_f64(),
                    });
                    continue;
                }
                let definition = crate::digest::canonical_json(&step.kind).map_err(key_err)?;
                let record = StepRecord {
                    key,
                    parent,
                    step: Digest::of(&definition),
                    epoch: opts.epoch,
                    inputs,
                    files,
                };
                let identity = why::identity(graph, step_id);
                let reason = if opts.no_cache {
                    "--no-cache".to_string()
                } else if no_cache {
                    format!("--no-cache-filter {}", stage.name)
                } else {
                    // A missing or unreadable record only loses the detail.
                    let old: Option<StepRecord> = cx.store.step_record(&identity).ok().flatten();
                    why::explain(old.as_ref(), &record, previous_missed)
                };
                previous_missed = true;
                cx.emit(Event::StepMiss {
                    stage: stage.shown().to_string(),
                    index,
                    reason: reason.clone(),
                });
                if let Some(w) = imp.workdir() {
                    workdir = w.to_string();
                }
                if opts.dry_run {
                    // Keys chain on keys: the rest of the stage can still be
                    // looked up without building this step.
                    dry_missed = true;
                    self.report(id, step_id, false, Some(reason), started)?;
                    continue;
                }
                let mut below = Below {
                    sched: self,
                    run: &mut run,
                    location: step.source.location(),
                    stage: stage.shown(),
                    index,
                };
                let layer = match exec(&mut below)? {
                    Output::Config => None,
                    Output::Entries { entries, guard } => {
                        if let Some(lower) = run.lower.as_mut() {
                            lower.apply(&records_of(&entries));
                        }
                        let (tx, rx) = sync_channel(1);
                        let (stage_name, location) =
                            (stage.shown().to_string(), step.source.location());
                        scope.spawn(move |_| {
                            let r = cx
                                .write_layer(&entries, &stage_name, index)
                                .map_err(|source| Error::Copy { location, source });
                            drop(guard);
                            let _ = tx.send(r);
                        });
                        Some(rx)
                    }
                    Output::Layer(layer) => {
                        // Its entries are not known: the next listing is
                        // read from the committed layers.
                        run.lower = None;
                        let (tx, rx) = sync_channel(1);
                        let _ = tx.send(Ok(layer));
                        Some(rx)
                    }
                };
                run.pending.push(Pending {
                    id: step_id,
                    step: imp,
                    keys: (key, alt),
                    started,
                    reason,
                    record: (identity, record),
                    layer,
                });
            }
            self.commit_pending(&mut run)
        })?;
        // An error above leaves spawned layer writes to finish inside the
        // scope; their results are dropped, their blobs are complete and
        // harmless.
        let mut state = run.state;
        if opts.dry_run {
            // Nothing is committed: later stages only need the key, outputs
            // only the image when every step was cached.
            state.key = key;
            state.content_key = alt;
            if dry_missed {
                state.id = None;
                state.manifest = None;
            }
        } else if state.id.is_none() {
            self.commit(&mut state, None)?;
        }
        cx.set_result(id, state)
    }

    /// Commits the pending steps in order, waiting for their layers.
    fn commit_pending(&self, run: &mut StageRun<'_>) -> Result<()> {
        let cx = &self.cx;
        let state = &mut run.state;
        for p in run.pending.drain(..) {
            let Pending {
                id,
                step,
                keys,
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
            let stage = cx.graph.step(id).stage;
            let parent = state.id;
            state.id = None;
            state.manifest = None;
            step.configure(Some(&mut state.config), &mut run.flags);
            let empty = layer.is_none();
            if let Some(layer) = layer {
                let mut rootfs = state.config.oci.rootfs().clone();
                let mut diff_ids = rootfs.diff_ids().clone();
                diff_ids.push(layer.diff_id.to_string());
                rootfs.set_diff_ids(diff_ids);
                state.config.oci.set_rootfs(rootfs);
                state.layers.push(layer);
            }
            config::stamp(
                &mut state.config,
                &cx.graph.created_by(id),
                empty,
                cx.time(),
                cx.opts.epoch,
            );
            (state.key, state.content_key) = keys;
            self.commit(state, parent)?;
            if let Some(img) = state.id {
                cx.store.cache_put(&keys.0.0, &img)?;
                if let Some(alt) = keys.1 {
                    cx.store.cache_put(&alt.0, &img)?;
                }
            }
            // Only for explaining the next miss.
            let _ = cx.store.put_step_record(&record.0, &record.1);
            self.report(stage, id, false, Some(reason), started)?;
            cx.emit(Event::StepDone {
                stage: cx.graph.stage(stage).shown().to_string(),
                index: self.number(stage, Some(id)),
                image: state.id.map(|d| d.short()).unwrap_or_default(),
                seconds: started.elapsed().as_secs_f64(),
            });
        }
        Ok(())
    }

    fn report(
        &self,
        stage: StageId,
        step: StepId,
        cached: bool,
        reason: Option<String>,
        started: Instant,
    ) -> Result<()> {
        lock(&self.reports, "the step reports")?.push(StepReport {
            stage: self.cx.graph.stage(stage).shown().to_string(),
            index: self.number(stage, Some(step)),
            text: self.cx.graph.created_by(step),
            cached,
            reason,
            seconds: started.elapsed().as_secs_f64(),
        });
        Ok(())
    }

    // ---- the cache -------------------------------------------------------------

    /// A cached step result whose blobs are all still present, by the
    /// definition key, else by the content key. A hit by content is
    /// remembered under the definition key too.
    fn cache_lookup(&self, key: &CacheKey, alt: Option<&CacheKey>) -> Result<Option<ImageState>> {
        if let Some(hit) = self.cached(key)? {
            return Ok(Some(hit));
        }
        let Some(alt) = alt else { return Ok(None) };
        let hit = self.cached(alt)?;
        if let Some(id) = hit.as_ref().and_then(|h| h.id) {
            self.cx.store.cache_put(&key.0, &id)?;
        }
        Ok(hit)
    }

    fn cached(&self, key: &CacheKey) -> Result<Option<ImageState>> {
        let store = self.cx.store;
        let Some(id) = store.cache_get(&key.0)? else {
            return Ok(None);
        };
        let state = match self.cx.load_state(&id) {
            Ok(s) => s,
            // A pruned or damaged entry is a miss, not a failure.
            Err(_) => return Ok(None),
        };
        // Layers of a registry cache count: they are fetched when read.
        if state.layers.iter().all(|l| store.can_read_blob(&l.digest)) {
            Ok(Some(state))
        } else {
            Ok(None)
        }
    }

    fn commit(&self, state: &mut ImageState, parent: Option<Digest>) -> Result<()> {
        let store = self.cx.store;
        let cfg = state.config.to_bytes()?;
        let id = store.put_blob(&cfg)?;
        let m = manifest_bytes(&id, cfg.len() as u64, &state.layers)?;
        let manifest = store.put_blob(&m)?;
        store.put_image(&id, &ImageRecord { manifest, parent })?;
        state.id = Some(id);
        state.manifest = Some(manifest);
        Ok(())
    }
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
