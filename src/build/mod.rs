//! The builder: walks a [`BuildGraph`], looks every step up in the cache,
//! executes what is missing, commits every step's result as an image, and
//! writes the output archives.
//!
//! It is the only module that reads the build context, resolves base images
//! and decides what runs; frontends hand it a finished graph, and it reports
//! through [`progress`](crate::progress) events.

mod add;
pub mod base;
pub mod config;
pub mod copy;
mod error;
mod snapshot;
pub mod sources;

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

pub use error::{CopyError, Error, Result};

use crate::diag::{Diagnostic, SourceRef};
use crate::digest::{Digest, Hasher};
use crate::graph::key::{base_key, step_key};
use crate::graph::{
    Base, BuildGraph, CacheKey, CopyFrom, CopyItem, CopyStep, ImageSource, StageId, StepId,
    StepKind,
};
use crate::layer::Compression;
use crate::layer::index::{self, Merged, Record};
use crate::oci::archive::{ArchiveFormat, write_archive};
use crate::oci::import::{self, Imported};
use crate::oci::{ImageConfig, LayerDescriptor, Manifest, manifest_bytes};
use crate::pattern::PatternSet;
use crate::progress::{Event, Sink};
use crate::reference::Reference;
use crate::store::memo::{FileStat, StatMemo};
use crate::store::{AtomicFile, ImageRecord, Store};
use sources::{Selection, SourceRoot};

/// Everything a build needs besides the graph. The CLI fills it in; nothing in
/// the library reads the environment or the clock.
pub struct BuildOptions {
    /// The content store.
    pub store: Store,
    /// `SOURCE_DATE_EPOCH`: the environment's, else the spec's.
    pub epoch: Option<i64>,
    /// The build's start time, for timestamps when there is no epoch.
    pub now: i64,
    /// Ignore cached results (`--no-cache`).
    pub no_cache: bool,
    /// Build only this stage or image (`--target`).
    pub target: Option<String>,
    /// Extra tags (`-t`), for the one image being written.
    pub tags: Vec<Reference>,
    /// Archive path (`-o`), for the one image being written.
    pub output: Option<PathBuf>,
    /// Archive flavour (`--format`); `None`: the spec's, else OCI.
    pub format: Option<ArchiveFormat>,
    /// Layer compression.
    pub compression: Compression,
    /// Where archives go when nothing names a path (`./<name>.oci.tar`).
    pub output_dir: PathBuf,
    /// Progress events go here.
    pub progress: Arc<dyn Sink>,
    /// Threads for building and compressing (`-j`); at least 1.
    pub jobs: usize,
}

/// One image the build produced.
#[derive(Debug, Clone)]
pub struct BuiltImage {
    /// Stage or image name.
    pub name: String,
    /// Image ID (config digest).
    pub id: Digest,
    /// Digest of the store's manifest.
    pub manifest: Digest,
    /// Digest of the manifest inside the archive.
    pub archive_manifest: Digest,
    /// Tags given.
    pub tags: Vec<Reference>,
    /// Archive written.
    pub archive: PathBuf,
}

/// What a build produced.
#[derive(Debug, Clone, Default)]
pub struct BuildResult {
    /// The output images, in graph order.
    pub images: Vec<BuiltImage>,
}

/// An image under construction: the state after some step.
#[derive(Debug, Clone)]
struct ImageState {
    config: ImageConfig,
    layers: Vec<LayerDescriptor>,
    key: CacheKey,
    id: Option<Digest>,
    manifest: Option<Digest>,
}

/// The outputs a build will write: `(stage, tags, path, format)`.
struct Planned {
    stage: StageId,
    tags: Vec<Reference>,
    path: PathBuf,
    format: ArchiveFormat,
}

/// Checks what can be checked before any work: `--target`, copy sources in the
/// context, local base archives. Returns every problem found.
pub fn check(graph: &BuildGraph, target: Option<&str>) -> Vec<Diagnostic> {
    plan(graph, target).diags
}

/// What the pre-build pass found: its diagnostics, and the context selections
/// it made (keyed by step and copy item), which the build reuses instead of
/// walking the context again.
struct Plan {
    diags: Vec<Diagnostic>,
    selections: HashMap<(StepId, usize), Selection>,
}

fn plan(graph: &BuildGraph, target: Option<&str>) -> Plan {
    let mut diags = Vec::new();
    let mut selections = HashMap::new();
    if let Some(t) = target
        && let Err(d) = target_stage(graph, t)
    {
        diags.push(d);
    }
    let excludes = match PatternSet::new(&graph.settings.context_excludes) {
        Ok(p) => p,
        Err(e) => {
            diags.push(plain_diag(e.to_string()));
            return Plan { diags, selections };
        }
    };
    if !graph.settings.context.is_dir() {
        diags.push(plain_diag(format!(
            "the build context {} is not a directory",
            graph.settings.context.display()
        )));
        return Plan { diags, selections };
    }
    let root = SourceRoot {
        root: &graph.settings.context,
        excludes: Some(&excludes),
    };
    for stage in &graph.stages {
        if let Base::Image(src) = &stage.base {
            check_image_source(src, &stage.source, &mut diags);
        }
    }
    for (step_index, step) in graph.steps.iter().enumerate() {
        let StepKind::Copy(c) = &step.kind else {
            continue;
        };
        let mut arg = 0;
        for (item_index, item) in c.items.iter().enumerate() {
            match &item.from {
                CopyFrom::Context => match sources::select(&root, item, "/") {
                    Err(e) => diags.push(select_diag(step, arg, &e)),
                    Ok(sel) => {
                        if !sel.ignored.is_empty() {
                            let at = step.args.get(arg).unwrap_or(&step.source);
                            let mut shown: Vec<&str> =
                                sel.ignored.iter().take(3).map(String::as_str).collect();
                            if sel.ignored.len() > 3 {
                                shown.push("…");
                            }
                            diags.push(
                            Diagnostic::warning(
                                &at.file,
                                at.span,
                                format!(
                                    "{} path{} under this source {} excluded from the context and will not be copied: {}",
                                    sel.ignored.len(),
                                    if sel.ignored.len() == 1 { "" } else { "s" },
                                    if sel.ignored.len() == 1 { "is" } else { "are" },
                                    shown.join(", ")
                                ),
                            )
                            .with_help("this follows the exclude patterns (.dockerignore, or the spec's [build].exclude)"),
                        );
                        }
                        // With an absolute destination the selection does not
                        // depend on the image's working directory: keep it.
                        if item.dest.starts_with('/') {
                            selections.insert((StepId(step_index), item_index), sel);
                        }
                    }
                },
                CopyFrom::Image { source } => check_image_source(source, &step.source, &mut diags),
                CopyFrom::Stage { .. } | CopyFrom::Inline { .. } => {}
            }
            arg += item.sources.len();
        }
    }
    Plan { diags, selections }
}

fn plain_diag(message: String) -> Diagnostic {
    Diagnostic {
        severity: crate::diag::Severity::Error,
        at: None,
        message,
        label: None,
        help: None,
    }
}

fn select_diag(
    step: &crate::graph::Step,
    first_arg: usize,
    e: &sources::SelectError,
) -> Diagnostic {
    let (index, msg, help) = match e {
        sources::SelectError::NotFound { index, pattern } => (
            *index,
            format!("copy source `{pattern}` not found in the build context"),
            "paths are relative to the build context",
        ),
        sources::SelectError::Excluded { index, pattern } => (
            *index,
            format!("copy source `{pattern}` is excluded from the build context"),
            "remove it from the exclude patterns (or .dockerignore) to copy it",
        ),
        other => (0, other.to_string(), ""),
    };
    let at = step
        .args
        .get(first_arg + index)
        .unwrap_or(&step.source)
        .clone();
    let mut d = Diagnostic::error(&at.file, at.span, msg).with_label("not found");
    if !help.is_empty() {
        d = d.with_help(help);
    }
    d
}

fn check_image_source(src: &ImageSource, at: &SourceRef, diags: &mut Vec<Diagnostic>) {
    let path = match src {
        ImageSource::OciArchive { path, .. } | ImageSource::DockerArchive { path, .. } => {
            (!path.is_file()).then_some(path)
        }
        ImageSource::OciDir { path, .. } => (!path.join("index.json").is_file()).then_some(path),
        _ => None,
    };
    if let Some(p) = path {
        diags.push(
            Diagnostic::error(&at.file, at.span, format!("{} does not exist", p.display()))
                .with_label("no such image archive"),
        );
    }
}

fn target_stage(graph: &BuildGraph, t: &str) -> Result<StageId, Diagnostic> {
    graph.stage_by_name(t).ok_or_else(|| {
        let names: Vec<&str> = graph.stages.iter().map(|s| s.name.as_str()).collect();
        let mut d = plain_diag(format!("--target: no stage or image named `{t}`"));
        d.help = Some(match crate::diag::did_you_mean(t, names.iter().copied()) {
            Some(s) => format!("did you mean `{s}`?"),
            None => format!("the build defines: {}", names.join(", ")),
        });
        d
    })
}

fn plan_outputs(graph: &BuildGraph, opts: &BuildOptions) -> Result<Vec<Planned>, Diagnostic> {
    let mut outputs: Vec<(StageId, Vec<Reference>, Option<PathBuf>)> = graph
        .outputs
        .iter()
        .map(|o| (o.stage, o.tags.clone(), o.path.clone()))
        .collect();
    if let Some(t) = &opts.target {
        let id = target_stage(graph, t)?;
        outputs.retain(|(s, _, _)| *s == id);
        if outputs.is_empty() {
            outputs.push((id, Vec::new(), None));
        }
    }
    if outputs.len() > 1 && (opts.output.is_some() || !opts.tags.is_empty()) {
        let mut d = plain_diag(format!(
            "-o/--output and -t/--tag name one image, but this build writes {}",
            outputs.len()
        ));
        d.help = Some("pick one with --target NAME".into());
        return Err(d);
    }
    Ok(outputs
        .into_iter()
        .map(|(stage, mut tags, path)| {
            tags.extend(opts.tags.iter().cloned());
            let name = &graph.stage(stage).name;
            let path = opts
                .output
                .clone()
                .or(path)
                .unwrap_or_else(|| opts.output_dir.join(format!("{name}.oci.tar")));
            Planned {
                stage,
                tags,
                path,
                format: opts.format.unwrap_or_default(),
            }
        })
        .collect())
}

/// Builds the graph's outputs.
///
/// # Errors
/// Definition problems found before work starts ([`Error::Invalid`]), or the
/// first step that fails.
pub fn build(graph: &BuildGraph, opts: &BuildOptions) -> Result<BuildResult> {
    let Plan { diags, selections } = plan(graph, opts.target.as_deref());
    if diags.iter().any(Diagnostic::is_error) {
        return Err(Error::Invalid(diags));
    }
    let outputs = plan_outputs(graph, opts).map_err(|d| Error::Invalid(vec![d]))?;
    let _lock = opts.store.lock_shared()?;
    let excludes = PatternSet::new(&graph.settings.context_excludes)
        .map_err(|e| Error::Invalid(vec![plain_diag(e.to_string())]))?;
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(opts.jobs.max(1))
        .thread_name(|i| format!("imgbuild-{i}"))
        .build()
        .map_err(|e| Error::Internal {
            what: format!("starting {} worker threads: {e}", opts.jobs),
        })?;
    let memo = Mutex::new(StatMemo::load(
        &opts.store,
        &std::fs::canonicalize(&graph.settings.context)
            .unwrap_or_else(|_| graph.settings.context.clone()),
    ));
    let mut b = Builder {
        graph,
        opts,
        pool,
        planned: selections,
        memo,
        store: &opts.store,
        excludes,
        results: HashMap::new(),
        listings: HashMap::new(),
        imported: HashMap::new(),
        index: 0,
        total: 0,
    };
    let targets: Vec<StageId> = outputs.iter().map(|o| o.stage).collect();
    let order = graph.build_order(&targets);
    b.total = order.iter().map(|s| 1 + graph.stage(*s).steps.len()).sum();
    for s in &order {
        b.build_stage(*s)?;
    }
    // A memo that cannot be saved costs the next build time, not correctness.
    if let Ok(memo) = b.memo.lock() {
        let _ = memo.save();
    }
    let mut result = BuildResult::default();
    for o in outputs {
        result.images.push(b.write_output(&o)?);
    }
    Ok(result)
}

struct Builder<'a> {
    graph: &'a BuildGraph,
    opts: &'a BuildOptions,
    /// The only thread pool: build work and gzip blocks run here.
    pool: rayon::ThreadPool,
    /// Context selections made by the pre-build pass.
    planned: HashMap<(StepId, usize), Selection>,
    /// Content digests of context files by stat, across builds.
    memo: Mutex<StatMemo>,
    store: &'a Store,
    excludes: PatternSet,
    results: HashMap<StageId, ImageState>,
    /// Layer listings by blob digest, for the filesystem-below lookups of COPY.
    listings: HashMap<Digest, Arc<Vec<Record>>>,
    /// Images imported from archives during this build, by source text.
    imported: HashMap<String, Imported>,
    index: usize,
    total: usize,
}

impl Builder<'_> {
    fn emit(&self, e: Event) {
        self.opts.progress.event(e);
    }

    fn time(&self) -> i64 {
        self.opts.epoch.unwrap_or(self.opts.now)
    }

    fn build_stage(&mut self, id: StageId) -> Result<()> {
        let stage = self.graph.stage(id);
        self.index += 1;
        self.emit(Event::StepStarted {
            stage: stage.name.clone(),
            index: self.index,
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
            Base::Stage(s) => self
                .results
                .get(s)
                .cloned()
                .ok_or_else(|| Error::Internal {
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
        if let Some(img) = state.id {
            self.emit(Event::StepDone {
                stage: stage.name.clone(),
                index: self.index,
                image: img.short(),
                seconds: 0.0,
            });
        }
        if !matches!(stage.base, Base::Scratch) {
            // Docker: a base's ONBUILD triggers are consumed by the stage built
            // on it (frontends lower them as steps), never inherited further.
            state.config.docker_ext.remove("OnBuild");
        }
        let mut flags = config::StageFlags::default();
        for step in stage.steps.clone() {
            state = self.build_step(step, state, &mut flags)?;
        }
        if state.id.is_none() {
            self.commit(&mut state, None)?;
        }
        self.results.insert(id, state);
        Ok(())
    }

    fn build_step(
        &mut self,
        id: StepId,
        parent: ImageState,
        flags: &mut config::StageFlags,
    ) -> Result<ImageState> {
        let started = std::time::Instant::now();
        let step = self.graph.step(id);
        let stage_name = self.graph.stage(step.stage).name.clone();
        let created_by = self.graph.created_by(id);
        self.index += 1;
        let index = self.index;
        self.emit(Event::StepStarted {
            stage: stage_name.clone(),
            index,
            total: self.total,
            text: created_by.clone(),
        });
        let location = step.source.location();
        let workdir = parent
            .config
            .config()
            .working_dir()
            .clone()
            .unwrap_or_else(|| "/".to_string());
        // Inputs: what the step reads besides its parent.
        let mut selections: Vec<Option<Selection>> = Vec::new();
        let mut inputs: Vec<(String, Digest)> = Vec::new();
        if let StepKind::Copy(c) = &step.kind {
            for (i, item) in c.items.iter().enumerate() {
                match &item.from {
                    CopyFrom::Context => {
                        let sel = match self.planned.remove(&(id, i)) {
                            Some(sel) => sel,
                            None => {
                                let root = SourceRoot {
                                    root: &self.graph.settings.context,
                                    excludes: Some(&self.excludes),
                                };
                                sources::select(&root, item, &workdir).map_err(|e| Error::Copy {
                                    location: location.clone(),
                                    source: CopyError::Select(e),
                                })?
                            }
                        };
                        let d = hash_selection(&sel, &self.memo).map_err(|e| Error::Copy {
                            location: location.clone(),
                            source: e,
                        })?;
                        inputs.push((format!("item{i}:context"), d));
                        selections.push(Some(sel));
                    }
                    CopyFrom::Stage { stage, name } => {
                        let key = self.results.get(stage).map(|s| s.key).ok_or_else(|| {
                            Error::Internal {
                                what: format!(
                                    "stage `{name}` was not built before it was copied from"
                                ),
                            }
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
        }
        let key = step_key(&parent.key, &step.kind, &inputs, self.opts.epoch).map_err(|e| {
            Error::Internal {
                what: format!("cache key: {e}"),
            }
        })?;
        if !self.opts.no_cache
            && let Some(mut hit) = self.cache_lookup(&key)?
        {
            if let StepKind::Config(crate::graph::ConfigChange::Cmd(_)) = &step.kind {
                flags.cmd_set = true;
            }
            hit.key = key;
            self.emit(Event::StepCached {
                stage: stage_name.clone(),
                index,
            });
            self.emit(Event::StepDone {
                stage: stage_name,
                index,
                image: hit.id.map(|d| d.short()).unwrap_or_default(),
                seconds: started.elapsed().as_secs_f64(),
            });
            return Ok(hit);
        }
        self.emit(Event::StepMiss {
            stage: stage_name.clone(),
            index,
            reason: if self.opts.no_cache {
                "--no-cache".into()
            } else {
                "no cached result for these inputs".into()
            },
        });
        let parent_id = parent.id;
        let mut state = parent;
        state.id = None;
        state.manifest = None;
        match &step.kind {
            StepKind::Config(change) => {
                config::apply(&mut state.config, change, flags);
                config::stamp(
                    &mut state.config,
                    &created_by,
                    true,
                    self.time(),
                    self.opts.epoch,
                );
            }
            StepKind::Copy(c) => {
                let layer = self
                    .copy_layer(c, selections, &state, &workdir, &stage_name, index)
                    .map_err(|source| Error::Copy {
                        location: location.clone(),
                        source,
                    })?;
                let mut diff_ids = state.config.oci.rootfs().diff_ids().clone();
                diff_ids.push(layer.diff_id.to_string());
                let mut rootfs = state.config.oci.rootfs().clone();
                rootfs.set_diff_ids(diff_ids);
                state.config.oci.set_rootfs(rootfs);
                state.layers.push(layer);
                config::stamp(
                    &mut state.config,
                    &created_by,
                    false,
                    self.time(),
                    self.opts.epoch,
                );
            }
            StepKind::Run(_) => {
                return Err(Error::RunUnsupported {
                    location,
                    step: created_by,
                });
            }
        }
        state.key = key;
        self.commit(&mut state, parent_id)?;
        if let Some(id) = state.id {
            self.store.cache_put(&key.0, &id)?;
        }
        self.emit(Event::StepDone {
            stage: stage_name,
            index,
            image: state.id.map(|d| d.short()).unwrap_or_default(),
            seconds: started.elapsed().as_secs_f64(),
        });
        Ok(state)
    }

    fn copy_layer(
        &mut self,
        c: &CopyStep,
        selections: Vec<Option<Selection>>,
        state: &ImageState,
        workdir: &str,
        stage: &str,
        index: usize,
    ) -> Result<LayerDescriptor, CopyError> {
        let mut items = Vec::new();
        let mut temps = TempFiles::default();
        let mut temp_dirs = add::TempDirs::default();
        for (item, sel) in c.items.iter().zip(selections) {
            let mut sel = match (sel, &item.from) {
                (Some(s), _) => s,
                (None, CopyFrom::Inline { content }) => {
                    self.select_inline(item, content, workdir, &mut temps)?
                }
                (None, _) => self.select_from_image(item, workdir)?,
            };
            if c.add {
                sel = add::unpack_archives(self.store, sel, &mut temp_dirs)?;
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
            });
        }
        let lower = self.lower(&state.layers)?;
        let entries = crate::layer::normalize(copy::entries(items, &lower))?;
        let writer = self.store.blob_writer()?;
        let progress = Arc::clone(&self.opts.progress);
        let stage = stage.to_string();
        let mut last = 0u64;
        let mut on_bytes = |n: u64| {
            // Throttle: one event per 8 MiB.
            if n - last >= 8 << 20 {
                last = n;
                progress.event(Event::StepBytes {
                    stage: stage.clone(),
                    index,
                    bytes: n,
                });
            }
        };
        let (writer, digests) = crate::layer::write(
            &entries,
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

    /// A heredoc copy: the content written to a temporary file, selected as a
    /// 0644 file named by the heredoc (docker's `COPY <<EOF /dest`).
    fn select_inline(
        &self,
        item: &CopyItem,
        content: &str,
        workdir: &str,
        temps: &mut TempFiles,
    ) -> Result<Selection, CopyError> {
        let path = self.store.tmp_path("heredoc");
        std::fs::write(&path, content).map_err(|source| CopyError::Read {
            path: path.clone(),
            source,
        })?;
        temps.0.push(path.clone());
        let name = item.sources.first().cloned().unwrap_or_default();
        let dest_abs = sources::absolute(workdir, &item.dest);
        let (dest, dest_dir) = if item.dest.ends_with('/') {
            (
                format!("{dest_abs}/{name}")
                    .trim_start_matches('/')
                    .to_string(),
                Some(dest_abs),
            )
        } else {
            (dest_abs, None)
        };
        Ok(Selection {
            entries: vec![sources::Selected {
                dest,
                host: path,
                kind: sources::SourceKind::File {
                    size: content.len() as u64,
                },
                mode: 0o644,
                mtime: self.time(),
                link_key: None,
                direct: true,
                owner: None,
                stat: None,
            }],
            dest_dir,
            ignored: Vec::new(),
        })
    }

    /// Selects a copy's sources from another stage's or an image's filesystem.
    fn select_from_image(
        &mut self,
        item: &CopyItem,
        workdir: &str,
    ) -> Result<Selection, CopyError> {
        let layers =
            match &item.from {
                CopyFrom::Stage { stage, .. } => self
                    .results
                    .get(stage)
                    .map(|s| s.layers.clone())
                    .unwrap_or_default(),
                CopyFrom::Image { source } => {
                    let key = source.to_string();
                    let id = self.imported.get(&key).map(|i| i.id).ok_or_else(|| {
                        CopyError::Snapshot {
                            what: format!("image {key} was not resolved"),
                        }
                    })?;
                    self.load_state(&id)
                        .map_err(|e| CopyError::Snapshot {
                            what: e.to_string(),
                        })?
                        .layers
                }
                CopyFrom::Context | CopyFrom::Inline { .. } => Vec::new(),
            };
        let rootfs = snapshot::rootfs(self.store, &layers)?;
        let root = SourceRoot {
            root: &rootfs,
            excludes: None,
        };
        Ok(sources::select(&root, item, workdir)?)
    }

    fn owner(&mut self, item: &CopyItem, state: &ImageState) -> Result<(u64, u64), CopyError> {
        let Some(o) = &item.owner else {
            return Ok((0, 0));
        };
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
            match index::find_file(stream, path, 1 << 20, &l.digest.to_string())? {
                index::Lookup::Found(b) => return Ok(Some(b)),
                index::Lookup::Deleted => return Ok(None),
                index::Lookup::Absent => {}
            }
        }
        Ok(None)
    }

    /// The merged listing of `layers`.
    fn lower(&mut self, layers: &[LayerDescriptor]) -> Result<Merged, CopyError> {
        let mut merged = Merged::new();
        for l in layers {
            let listing = match self.listings.get(&l.digest) {
                Some(x) => Arc::clone(x),
                None => {
                    let stream = import::open_layer(self.store, &l.digest, &l.media_type)?;
                    let listing = Arc::new(index::list(stream, &l.digest.to_string())?);
                    self.listings.insert(l.digest, Arc::clone(&listing));
                    listing
                }
            };
            merged.apply(&listing);
        }
        Ok(merged)
    }

    fn resolve_image(&mut self, src: &ImageSource, at: &SourceRef) -> Result<Imported> {
        let key = src.to_string();
        if let Some(i) = self.imported.get(&key) {
            return Ok(i.clone());
        }
        let imported = base::resolve(self.store, src).map_err(|source| Error::Base {
            location: at.location(),
            source,
        })?;
        self.imported.insert(key, imported.clone());
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
        if state.layers.iter().all(|l| self.store.has_blob(&l.digest)) {
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

    fn write_output(&self, o: &Planned) -> Result<BuiltImage> {
        let state = self.results.get(&o.stage).ok_or_else(|| Error::Internal {
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
        let (archive_manifest, unchanged) =
            self.write_archive_file(&manifest, &o.tags, o.format, &o.path)?;
        self.emit(Event::Wrote {
            path: o.path.display().to_string(),
            unchanged,
        });
        Ok(BuiltImage {
            name: self.graph.stage(o.stage).name.clone(),
            id,
            manifest,
            archive_manifest,
            tags: o.tags.clone(),
            archive: o.path.clone(),
        })
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
            std::fs::create_dir_all(dir).map_err(out_err)?;
        }
        let mtime = self.opts.epoch.unwrap_or(0).max(0) as u64;
        let inputs = OutputInputs {
            manifest: *manifest,
            names: tags.iter().map(ToString::to_string).collect(),
            format: format!("{format:?}"),
            mtime,
        };
        let abs = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
        let record: Option<OutputRecord> = self.store.output_record(&abs)?;
        let on_disk = std::fs::metadata(path).ok().map(|m| FileStat::of(&m));
        // The file is what we wrote last time, untouched, for the same inputs:
        // nothing to read, nothing to write.
        if let (Some(rec), Some(stat)) = (&record, &on_disk)
            && rec.inputs == inputs
            && rec.file == *stat
        {
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
                stat.size == new_len && file_digest(path).is_ok_and(|d| d == new_digest)
            }
            _ => false,
        };
        if same {
            drop(file);
        } else {
            file.commit().map_err(out_err)?;
        }
        if let Ok(m) = std::fs::metadata(path) {
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

/// A file's content digest: from the stat memo when its stat fields match,
/// else read and hashed (and memoized).
fn file_content_digest(s: &sources::Selected, memo: &Mutex<StatMemo>) -> Result<Digest, CopyError> {
    let key = s.host.to_string_lossy();
    if let Some(stat) = &s.stat
        && let Ok(m) = memo.lock()
        && let Some(d) = m.get(&key, stat)
    {
        return Ok(d);
    }
    let read_err = |source| CopyError::Read {
        path: s.host.clone(),
        source,
    };
    let mut f = std::fs::File::open(&s.host).map_err(read_err)?;
    let mut fh = Hasher::new();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = f.read(&mut buf).map_err(read_err)?;
        if n == 0 {
            break;
        }
        fh.update(&buf[..n]);
    }
    let d = fh.finish();
    if let Some(stat) = s.stat
        && let Ok(mut m) = memo.lock()
    {
        m.put(key.into_owned(), stat, d);
    }
    Ok(d)
}

/// Temporary files that go away with the step, however it ends.
#[derive(Default)]
struct TempFiles(Vec<PathBuf>);

impl Drop for TempFiles {
    fn drop(&mut self) {
        for p in &self.0 {
            let _ = std::fs::remove_file(p);
        }
    }
}

fn file_digest(path: &Path) -> std::io::Result<Digest> {
    let mut r = crate::digest::HashingReader::new(std::fs::File::open(path)?);
    std::io::copy(&mut r, &mut std::io::sink())?;
    Ok(r.finish().0)
}

/// The input digest of a context selection: every entry's layer path, type,
/// mode, content digest or link target, and hard-link grouping. Never mtimes.
fn hash_selection(sel: &Selection, memo: &Mutex<StatMemo>) -> Result<Digest, CopyError> {
    let mut h = Hasher::new();
    let groups = sources::link_groups(&sel.entries);
    h.field(sel.dest_dir.as_deref().unwrap_or("\0").as_bytes());
    for s in &sel.entries {
        h.field(s.dest.as_bytes());
        h.field(&s.mode.to_be_bytes());
        match &s.kind {
            sources::SourceKind::Dir => h.field(b"dir"),
            sources::SourceKind::Hardlink(t) => {
                h.field(b"hardlink");
                h.field(t.as_bytes());
            }
            sources::SourceKind::Symlink(t) => {
                h.field(b"symlink");
                h.field(t.as_os_str().as_encoded_bytes());
            }
            sources::SourceKind::File { size } => {
                h.field(b"file");
                h.field(&size.to_be_bytes());
                h.field(file_content_digest(s, memo)?.as_bytes());
                if let Some(first) = groups.get(&s.dest)
                    && first != &s.dest
                {
                    h.field(b"hardlink");
                    h.field(first.as_bytes());
                }
            }
        }
    }
    Ok(h.finish())
}
