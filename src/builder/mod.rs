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
mod cx;
mod error;
pub mod export;
mod inputs;
mod output;
pub mod run;
mod scheduler;
pub mod snapshot;
pub mod sources;
pub mod ssh;
mod step;
mod why;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use error::{CopyError, Error, Result, RunError, error_chain};
pub use run::{Isolation, RunNetwork, RunSettings, SandboxMode};

use crate::diag::{Diagnostic, SourceRef};
use crate::digest::Digest;
use crate::graph::{Base, BuildGraph, CacheKey, CopyFrom, ImageSource, StageId, StepId, StepKind};
use crate::layer::Compression;
use crate::oci::archive::ArchiveFormat;
use crate::oci::{ImageConfig, LayerDescriptor};
use crate::pattern::PatternSet;
use crate::progress::Sink;
use crate::reference::Reference;
use crate::store::Store;
use crate::store::memo::StatMemo;
use sources::{Selection, SourceRoot};

/// Where an `--annotation` goes, as buildx names the levels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnnotationLevel {
    /// The image manifest (each platform's, or the one named).
    Manifest,
    /// The multi-platform index.
    Index,
}

/// One `--annotation`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Annotation {
    /// Which object it annotates.
    pub level: AnnotationLevel,
    /// Only this platform's manifest (`manifest[linux/arm64]:`).
    pub platform: Option<crate::platform::Platform>,
    /// The key.
    pub key: String,
    /// The value.
    pub value: String,
}

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
    /// Where archives go when nothing names a path (`DIR/<name>.oci.tar`);
    /// `None`: then no archive is written, only the store's image and tags
    /// (a Dockerfile build, as `docker build` does).
    pub output_dir: Option<PathBuf>,
    /// Other files the caller writes after the build (`--iidfile`,
    /// `--depfile`, `--metadata-file`), absolute: like the archives, they
    /// are left out of the context when they lie inside it.
    pub side_outputs: Vec<PathBuf>,
    /// Progress events go here.
    pub progress: Arc<dyn Sink>,
    /// Threads for building and compressing (`-j`); at least 1.
    pub jobs: usize,
    /// Compute keys and report what would rebuild, without building.
    pub dry_run: bool,
    /// `--network`: the default network of RUN steps (`RUN --network=none`
    /// still wins).
    pub network: RunNetwork,
    /// `--pids-limit`, `--memory`, `--cpu-quota`: limits of each RUN step.
    pub limits: crate::exec::cgroup::Limits,
    /// `--secret`: what RUN `--mount=type=secret` may mount, by id.
    pub secrets: HashMap<String, Secret>,
    /// `--ssh`: agent sockets or key files RUN `--mount=type=ssh` may
    /// use, by id (see [`ssh`]).
    pub ssh: HashMap<String, Vec<PathBuf>>,
    /// How RUN gets its root filesystem.
    pub sandbox: SandboxMode,
    /// What RUN sandboxes take from the host (helpers in `PATH`,
    /// subordinate ids, the memory upper's size): the CLI reads it from the
    /// environment.
    pub host: crate::exec::HostOptions,
    /// Pulls named base images missing from the store (None: never).
    pub puller: Option<Arc<base::Puller>>,
    /// `--cache-to type=inline`: output images carry the cache of their
    /// steps in their configs.
    pub inline_cache: bool,
    /// `--add-host`, `--ulimit`, `--shm-size`: what every RUN step gets.
    pub run: RunSettings,
    /// `--label`: labels of the output images' configs.
    pub labels: Vec<(String, String)>,
    /// `--annotation`: annotations of the output images' manifests and
    /// indexes.
    pub annotations: Vec<Annotation>,
    /// `-o …,force-compression=true`: the outputs' layers all in
    /// `compression`, base layers recompressed.
    pub force_compression: bool,
    /// `--no-cache-filter`: stages whose steps ignore the cache.
    pub no_cache_stages: Vec<String>,
    /// How ADD reaches URLs (proxy, timeouts).
    pub fetch: crate::fetch::Options,
}

/// A `--secret`'s source: a file, or bytes the CLI took from its
/// environment (held in memory only: see [`run`]'s secret mounts).
#[derive(Clone, PartialEq, Eq)]
pub enum Secret {
    /// A host file, absolute.
    File(PathBuf),
    /// The value itself.
    Value(Vec<u8>),
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Secret::File(p) => f.debug_tuple("File").field(p).finish(),
            // Never the value, not even in a debug print.
            Secret::Value(v) => write!(f, "Value(<{} bytes>)", v.len()),
        }
    }
}

/// One image the build produced.
#[derive(Debug, Clone)]
pub struct BuiltImage {
    /// Stage or image name.
    pub name: String,
    /// Image ID (config digest); for a multi-platform image, the digest of
    /// its index.
    pub id: Digest,
    /// Digest of the store's manifest (a multi-platform image's: its index).
    pub manifest: Digest,
    /// The image of each platform, in the output's order: its platform
    /// (`None`: a build that names none) and image ID. One entry, with
    /// [`BuiltImage::id`], unless the output is an index.
    pub platforms: Vec<(Option<crate::platform::Platform>, Digest)>,
    /// Digest of the manifest inside the archive.
    pub archive_manifest: Digest,
    /// Tags given.
    pub tags: Vec<Reference>,
    /// Archive written, if any.
    pub archive: Option<PathBuf>,
}

impl BuiltImage {
    /// Whether this is a multi-platform image ([`BuiltImage::id`] is its
    /// index's digest).
    pub fn is_index(&self) -> bool {
        !matches!(self.platforms.as_slice(), [(_, id)] if *id == self.id)
    }
}

/// What happened to one step.
#[derive(Debug, Clone, serde::Serialize)]
pub struct StepReport {
    /// Stage name.
    pub stage: String,
    /// Its "Step i/n" number.
    pub index: usize,
    /// Dockerfile-syntax text.
    pub text: String,
    /// Taken from the cache.
    pub cached: bool,
    /// Why it missed the cache.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Seconds it took.
    pub seconds: f64,
}

/// What a build produced.
#[derive(Debug, Clone, Default)]
pub struct BuildResult {
    /// The output images, in graph order (none for a dry run).
    pub images: Vec<BuiltImage>,
    /// Every step, by step number.
    pub steps: Vec<StepReport>,
    /// Files the build read to decide what to build (definition, ignore file,
    /// context files and directories, base archives), for depfiles.
    pub inputs: Vec<PathBuf>,
    /// The archives it wrote (or would write).
    pub outputs: Vec<PathBuf>,
    /// For a dry run: every step is cached and every archive current.
    pub up_to_date: bool,
    /// The final image of every stage the build ran, in build order (for
    /// `--cache-to mode=max`).
    pub stage_images: Vec<Digest>,
}

/// An image under construction: the state after some step.
#[derive(Debug, Clone)]
struct ImageState {
    config: ImageConfig,
    layers: Vec<LayerDescriptor>,
    /// The definition key of the last step (or of the base).
    key: CacheKey,
    /// Its content key, when a step up the chain had one
    /// ([`graph::key::content_key`](crate::graph::key::content_key)).
    content_key: Option<CacheKey>,
    id: Option<Digest>,
    manifest: Option<Digest>,
}

/// An output a build will write: one image, or one per platform (an
/// index), with its tags, path and format.
struct Planned {
    /// The stage of each platform's image (`None`: a build that names no
    /// platform).
    images: Vec<(Option<crate::platform::Platform>, StageId)>,
    tags: Vec<Reference>,
    /// `None`: no archive, the image stays in the store.
    path: Option<PathBuf>,
    format: ArchiveFormat,
}

/// Checks what can be checked before any work: `--target`, copy sources in the
/// context, local base archives. Returns every problem found.
pub fn check(graph: &BuildGraph, target: Option<&str>) -> Vec<Diagnostic> {
    plan(graph, target, &[]).diags
}

/// What the pre-build pass found: its diagnostics, and the context selections
/// it made (keyed by step and copy item), which the build reuses instead of
/// walking the context again.
struct Plan {
    diags: Vec<Diagnostic>,
    selections: HashMap<(StepId, usize), Selection>,
    /// The context, opened as the root its paths resolve in (`None` only
    /// with a diagnostic saying why).
    context: Option<std::sync::Arc<crate::confine::Root>>,
    /// Named local contexts by path, opened.
    locals: HashMap<PathBuf, std::sync::Arc<crate::confine::Root>>,
}

/// `outputs`: paths inside the context the build writes, excluded from it.
fn plan(graph: &BuildGraph, target: Option<&str>, outputs: &[String]) -> Plan {
    let mut diags = Vec::new();
    let mut selections = HashMap::new();
    if let Some(t) = target
        && let Err(d) = graph.target(t)
    {
        diags.push(d);
    }
    let excludes = match PatternSet::new(&graph.settings.context_excludes) {
        Ok(p) => p.with_excluded_paths(outputs.iter().cloned()),
        Err(e) => {
            diags.push(plain_diag(e.to_string()));
            return Plan {
                diags,
                selections,
                locals: HashMap::new(),
                context: None,
            };
        }
    };
    if !graph.settings.context.is_dir() {
        diags.push(plain_diag(format!(
            "the build context {} is not a directory",
            graph.settings.context.display()
        )));
        return Plan {
            diags,
            selections,
            locals: HashMap::new(),
            context: None,
        };
    }
    let context = match crate::confine::Root::open(&graph.settings.context) {
        Ok(r) => std::sync::Arc::new(r),
        Err(e) => {
            diags.push(plain_diag(format!("the build context: {e}")));
            return Plan {
                diags,
                selections,
                locals: HashMap::new(),
                context: None,
            };
        }
    };
    let root = SourceRoot {
        root: &context,
        excludes: Some(&excludes),
        owners: None,
    };
    // Named local contexts (`--build-context NAME=DIR`), opened once each.
    let mut locals = HashMap::new();
    for step in &graph.steps {
        let StepKind::Copy(c) = &step.kind else {
            continue;
        };
        for item in &c.items {
            let CopyFrom::Local { name, path } = &item.from else {
                continue;
            };
            if locals.contains_key(path) {
                continue;
            }
            match crate::confine::Root::open(path) {
                Ok(r) => {
                    locals.insert(path.clone(), std::sync::Arc::new(r));
                }
                Err(e) => {
                    let at = &step.source;
                    diags.push(
                        Diagnostic::error(
                            &at.file,
                            at.span,
                            format!("the context `{name}` ({}): {e}", path.display()),
                        )
                        .with_help("--build-context NAME=DIR names a directory"),
                    );
                }
            }
        }
    }
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
                CopyFrom::Local { path, .. } => {
                    let Some(local) = locals.get(path) else {
                        continue;
                    };
                    let local = SourceRoot {
                        root: local,
                        excludes: None,
                        owners: None,
                    };
                    match sources::select(&local, item, "/") {
                        Err(e) => diags.push(select_diag(step, arg, &e)),
                        Ok(sel) => {
                            if item.dest.starts_with('/') {
                                selections.insert((StepId(step_index), item_index), sel);
                            }
                        }
                    }
                }
                CopyFrom::Context => match sources::select(&root, item, "/") {
                    Err(e) => diags.push(select_diag(step, arg, &e)),
                    Ok(sel) => {
                        for pattern in &sel.unmatched {
                            let index = item.sources.iter().position(|s| s == pattern).unwrap_or(0);
                            let at = step.args.get(arg + index).unwrap_or(&step.source);
                            diags.push(
                                Diagnostic::warning(
                                    &at.file,
                                    at.span,
                                    format!("`{pattern}` matches no file in the build context: nothing is copied for it"),
                                )
                                .with_label("matches nothing")
                                .with_help("BuildKit copies nothing for a pattern that matches nothing; a plain name that does not exist is an error"),
                            );
                        }
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
    Plan {
        diags,
        selections,
        locals,
        context: Some(context),
    }
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
    let mut label = "not found";
    let (index, msg, help) = match e {
        sources::SelectError::ManyIntoFile { count, dest } => {
            label = "several sources";
            (
                0,
                format!("{count} sources are copied to `{dest}`, which does not end in /"),
                "with more than one source the destination must be a directory ending in / \
                 (the Dockerfile reference; docker's classic builder refuses it too)",
            )
        }
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
    let mut d = Diagnostic::error(&at.file, at.span, msg).with_label(label);
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

fn plan_outputs(graph: &BuildGraph, opts: &BuildOptions) -> Result<Vec<Planned>, Diagnostic> {
    type Group = (Vec<Reference>, Option<PathBuf>, bool);
    let mut all: Vec<(Option<crate::platform::Platform>, StageId, Group)> = graph
        .outputs
        .iter()
        .map(|o| {
            (
                o.platform.clone(),
                o.stage,
                (o.tags.clone(), o.path.clone(), o.docker_archive),
            )
        })
        .collect();
    if let Some(t) = &opts.target {
        let id = graph.target(t)?;
        let name = &graph.stage(id).name;
        all.retain(|(_, s, _)| graph.stage(*s).name == *name);
        if all.is_empty() {
            all.push((None, id, (Vec::new(), None, false)));
        }
    }
    // The same image on several platforms is one output.
    type Images = Vec<(Option<crate::platform::Platform>, StageId)>;
    let mut outputs: Vec<(Images, Vec<Reference>, Option<PathBuf>, ArchiveFormat)> = Vec::new();
    for (platform, stage, (tags, path, docker)) in all {
        // --format wins over the spec's.
        let format = opts.format.unwrap_or(if docker {
            ArchiveFormat::Docker
        } else {
            ArchiveFormat::Oci
        });
        match outputs
            .iter_mut()
            .find(|(_, t, p, _)| *t == tags && *p == path)
        {
            Some((images, _, _, _)) => images.push((platform, stage)),
            None => outputs.push((vec![(platform, stage)], tags, path, format)),
        }
    }
    if outputs
        .iter()
        .any(|(i, _, _, f)| i.len() > 1 && *f == ArchiveFormat::Docker)
    {
        let mut d = plain_diag(
            "a docker archive (--format docker, or the spec's format = \"docker\") holds one \
             platform, but this build writes several"
                .to_string(),
        );
        d.help = Some(
            "write the OCI archive (the default) and take one platform from it with \
             `skopeo copy --override-arch ARCH oci-archive:FILE docker-archive:OUT`, or build \
             with one --platform"
                .into(),
        );
        return Err(d);
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
        .map(|(images, mut tags, path, format)| {
            tags.extend(opts.tags.iter().cloned());
            let name = &graph.stage(images[0].1).name;
            let path = opts.output.clone().or(path).or_else(|| {
                let dir = opts.output_dir.as_ref()?;
                Some(crate::graph::default_archive_path(dir, name))
            });
            Planned {
                images,
                tags,
                path,
                format,
            }
        })
        .collect())
}

/// The paths among `paths` (absolute; the files need not exist yet) that lie
/// inside `context`, relative to it and slash-separated, as context excludes
/// see them. Both sides are resolved through symlinks, so a context or an
/// output reached through a link is still recognised.
fn inside_context<'a>(context: &Path, paths: impl Iterator<Item = &'a Path>) -> Vec<String> {
    let Ok(ctx) = fs_err::canonicalize(context) else {
        return Vec::new();
    };
    paths
        .filter_map(|p| {
            let (dir, name) = (p.parent()?, p.file_name()?);
            let dir = fs_err::canonicalize(dir).ok()?;
            let rel = dir.join(name);
            let rel = rel.strip_prefix(&ctx).ok()?;
            let parts: Vec<&str> = rel.iter().map(|c| c.to_str()).collect::<Option<_>>()?;
            Some(parts.join("/"))
        })
        .collect()
}

/// Every stage in `order` whose RUN steps this machine cannot execute (a
/// foreign platform without a registered emulator), at its first RUN: no
/// wrong-architecture layer is built, and the message says what to install.
fn emulation_problems(
    graph: &BuildGraph,
    order: &[StageId],
    binfmt_misc: &Path,
) -> Vec<Diagnostic> {
    let host = crate::platform::host();
    let mut out = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for s in order {
        let stage = graph.stage(*s);
        let Some(platform) = &stage.platform else {
            continue;
        };
        let Some(run) = stage
            .steps
            .iter()
            .map(|id| graph.step(*id))
            .find(|st| matches!(st.kind, StepKind::Run(_)))
        else {
            continue;
        };
        if !seen.insert(platform.clone()) {
            continue;
        }
        if let Err(e) = crate::exec::binfmt::check(platform, &host, binfmt_misc) {
            out.push(Diagnostic::error(
                &run.source.file,
                run.source.span,
                format!("RUN for {platform} cannot run on this machine ({host}): {e}"),
            ));
        }
    }
    out
}

/// The agent ids the RUN steps of `order` mount, and a located error for
/// each `required` one no `--ssh` names (BuildKit fails such a step; here
/// the build stops before any work).
fn ssh_mounts(
    graph: &BuildGraph,
    order: &[StageId],
    opts: &BuildOptions,
) -> (std::collections::HashSet<String>, Vec<Diagnostic>) {
    let mut used = std::collections::HashSet::new();
    let mut problems = Vec::new();
    for s in order {
        for step in graph.stage(*s).steps.iter().map(|id| graph.step(*id)) {
            let StepKind::Run(r) = &step.kind else {
                continue;
            };
            for m in &r.mounts {
                let crate::graph::Mount::Ssh { id, required, .. } = m else {
                    continue;
                };
                used.insert(id.clone());
                if *required && !opts.ssh.contains_key(id) {
                    problems.push(
                        Diagnostic::error(
                            &step.source.file,
                            step.source.span,
                            format!("RUN --mount=type=ssh,id={id},required: no agent `{id}` was given"),
                        )
                        .with_help(format!(
                            "forward one: --ssh {id} (for $SSH_AUTH_SOCK), --ssh {id}=SOCKET or --ssh {id}=KEYFILE"
                        )),
                    );
                }
            }
        }
    }
    (used, problems)
}

/// Builds the graph's outputs.
///
/// # Errors
/// Definition problems found before work starts ([`Error::Invalid`]), or the
/// first step that fails.
pub fn build(graph: &BuildGraph, opts: &BuildOptions) -> Result<BuildResult> {
    let outputs = plan_outputs(graph, opts);
    let written: Vec<String> = match &outputs {
        Ok(o) => inside_context(
            &graph.settings.context,
            o.iter()
                .filter_map(|o| o.path.as_deref())
                .chain(opts.side_outputs.iter().map(PathBuf::as_path)),
        ),
        Err(_) => Vec::new(),
    };
    let Plan {
        diags,
        selections,
        context,
        locals,
    } = plan(graph, opts.target.as_deref(), &written);
    let Some(context) = context.filter(|_| !diags.iter().any(Diagnostic::is_error)) else {
        return Err(Error::Invalid(diags));
    };
    let outputs = outputs.map_err(|d| Error::Invalid(vec![d]))?;
    let targets: Vec<StageId> = outputs
        .iter()
        .flat_map(|o| o.images.iter().map(|(_, s)| *s))
        .collect();
    let order = graph.build_order(&targets);
    if !opts.dry_run {
        let problems = emulation_problems(graph, &order, &opts.host.binfmt_misc);
        if !problems.is_empty() {
            return Err(Error::Invalid(problems));
        }
    }
    let (ssh_used, problems) = ssh_mounts(graph, &order, opts);
    if !problems.is_empty() {
        return Err(Error::Invalid(problems));
    }
    let _lock = opts.store.lock_shared()?;
    let excludes = PatternSet::new(&graph.settings.context_excludes)
        .map_err(|e| Error::Invalid(vec![plain_diag(e.to_string())]))?
        .with_excluded_paths(written);
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(opts.jobs.max(1))
        .thread_name(|i| format!("imgbuild-{i}"))
        .build()
        .map_err(|e| Error::Internal {
            what: format!("starting {} worker threads: {e}", opts.jobs),
        })?;
    let memo = StatMemo::load(
        &opts.store,
        &fs_err::canonicalize(&graph.settings.context)
            .unwrap_or_else(|_| graph.settings.context.clone()),
    );
    let mut cx =
        cx::Cx::new(graph, opts, pool, selections, memo, (context, excludes)).with_locals(locals);
    // Started here, on the caller's thread: a private agent dies with the
    // thread that spawned it (PR_SET_PDEATHSIG), and this one outlives the
    // build.
    cx.ssh = ssh::Agents::start(
        &opts.ssh,
        &|id| !opts.dry_run && ssh_used.contains(id),
        &opts.host,
        &|what| opts.store.tmp_path(what),
    )?;
    let b = scheduler::Scheduler::new(cx, &order);
    b.run(&order)?;
    let reports = b.take_reports()?;
    let b = b.cx;
    b.save_memo();
    let mut stage_images = Vec::new();
    for s in &order {
        if let Some(id) = b.result(*s)?.and_then(|r| r.id) {
            stage_images.push(id);
        }
    }
    let mut result = BuildResult {
        up_to_date: true,
        stage_images,
        ..BuildResult::default()
    };
    for o in &outputs {
        result.outputs.extend(o.path.clone());
        if opts.dry_run {
            result.up_to_date &= b.output_up_to_date(o)?;
        } else {
            result.images.push(b.write_output(o)?);
        }
    }
    result.up_to_date &= reports.iter().all(|s| s.cached);
    result.steps = reports;
    let mut inputs: Vec<PathBuf> = graph.settings.inputs.clone();
    inputs.append(&mut b.take_read()?);
    for s in &order {
        if let Base::Image(
            ImageSource::OciArchive { path, .. } | ImageSource::DockerArchive { path, .. },
        ) = &graph.stage(*s).base
        {
            inputs.push(path.clone());
        }
    }
    inputs.sort();
    inputs.dedup();
    result.inputs = inputs;
    Ok(result)
}
