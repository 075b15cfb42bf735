//! The BuildGraph: what both frontends lower into and the scheduler walks.
//!
//! An arena of stages and steps with typed payloads. Every value in it is
//! concrete (variables already expanded, destinations absolute), so a step's
//! cache key is a function of the step and its inputs alone. Spans are kept
//! beside the payload ([`Step::source`]) and never enter a key.

pub mod builder;
mod chmod;
mod fetch;
pub mod key;
pub mod merge;
mod render;

use std::collections::HashSet;
use std::path::PathBuf;

use serde::Serialize;

use crate::diag::SourceRef;
use crate::platform::Platform;
use crate::reference::Reference;

pub use builder::GraphBuilder;
pub use chmod::Chmod;
pub use fetch::{
    FetchItem, FetchStep, GitSource, HttpSource, Remote, UrlError, is_git_context, is_git_url,
    is_http_url,
};
pub use key::CacheKey;
pub use merge::merge;

/// Index of a stage in [`BuildGraph::stages`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StageId(pub usize);

/// Index of a step in [`BuildGraph::steps`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StepId(pub usize);

/// Where an image comes from when it is not built by this graph.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "transport", rename_all = "kebab-case")]
pub enum ImageSource {
    /// `oci-archive:PATH[:NAME]`.
    OciArchive {
        /// The archive (absolute).
        path: PathBuf,
        /// Which image in it, when it holds several.
        name: Option<String>,
    },
    /// `oci:DIR[:TAG]`.
    OciDir {
        /// The layout directory (absolute).
        path: PathBuf,
        /// Which image in it.
        name: Option<String>,
    },
    /// `docker-archive:PATH[:NAME]`.
    DockerArchive {
        /// The archive (absolute).
        path: PathBuf,
        /// Which image in it.
        name: Option<String>,
    },
    /// An image ID (full or a prefix) in the local store.
    Id(String),
    /// A name: the local store first, then its registry.
    Named(Reference),
}

impl std::fmt::Display for ImageSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let with_name =
            |f: &mut std::fmt::Formatter<'_>, t: &str, p: &PathBuf, n: &Option<String>| {
                write!(f, "{t}:{}", p.display())?;
                if let Some(n) = n {
                    write!(f, ":{n}")?;
                }
                Ok(())
            };
        match self {
            ImageSource::OciArchive { path, name } => with_name(f, "oci-archive", path, name),
            ImageSource::OciDir { path, name } => with_name(f, "oci", path, name),
            ImageSource::DockerArchive { path, name } => with_name(f, "docker-archive", path, name),
            ImageSource::Id(id) => f.write_str(id),
            ImageSource::Named(r) => f.write_str(&r.familiar()),
        }
    }
}

/// What `--build-context NAME=…` puts in place of NAME, wherever a
/// Dockerfile names it (`FROM NAME`, `COPY --from=NAME`, a stage `AS
/// NAME`), as BuildKit's named contexts do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NamedContext {
    /// `docker-image://REF`, `oci-layout://PATH[:TAG][@DIGEST]`: an image.
    Image(ImageSource),
    /// A directory: copied from as a second context; as a base, the
    /// filesystem it holds (one layer, owned by root, as a context copy).
    Local(PathBuf),
}

/// Named contexts by [`context_name`].
pub type NamedContexts = std::collections::BTreeMap<String, NamedContext>;

/// The name a named context is found by: an image name in its familiar
/// form without `:latest` (`FROM docker.io/library/alpine:latest` finds
/// `alpine`, as BuildKit's `contextByName` normalizes it), else the name
/// in lowercase (a stage name).
pub fn context_name(name: &str) -> String {
    match Reference::parse(name) {
        Ok(r) => {
            let f = r.familiar();
            f.strip_suffix(":latest").unwrap_or(&f).to_string()
        }
        _ => name.to_ascii_lowercase(),
    }
}

/// Why an image reference could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ImageSourceError {
    /// `oci-archive:` and the like without a path.
    #[error("`{0}` names no path")]
    NoPath(String),
    /// Not a valid image name.
    #[error(transparent)]
    Reference(#[from] crate::reference::ReferenceError),
}

impl ImageSource {
    /// Reads an image reference as both frontends write it: a transport
    /// (`oci-archive:PATH[:NAME]`, `oci:DIR[:NAME]`,
    /// `docker-archive:PATH[:NAME]`; the path ends at the first `:`, as in
    /// containers/image, and a relative one is taken from `base`, the
    /// context), an image ID or unique ID prefix (12 to 64 lowercase hex
    /// digits, `sha256:` optional, as docker's image lookup takes them),
    /// else an image name.
    ///
    /// # Errors
    /// A transport without a path, or an invalid name.
    pub fn parse(text: &str, base: &std::path::Path) -> Result<ImageSource, ImageSourceError> {
        if let Some((transport, rest)) = text.split_once(':')
            && matches!(transport, "oci-archive" | "oci" | "docker-archive")
        {
            let (path, name) = match rest.split_once(':') {
                Some((p, n)) => (p, Some(n.to_string())),
                None => (rest, None),
            };
            if path.is_empty() {
                return Err(ImageSourceError::NoPath(text.to_string()));
            }
            let joined = if path.starts_with('/') {
                PathBuf::from(path)
            } else {
                base.join(path)
            };
            let path = PathBuf::from(crate::pattern::clean_path(&joined.to_string_lossy()));
            return Ok(match transport {
                "oci-archive" => ImageSource::OciArchive { path, name },
                "oci" => ImageSource::OciDir { path, name },
                _ => ImageSource::DockerArchive { path, name },
            });
        }
        if Self::is_id(text) {
            return Ok(ImageSource::Id(text.to_string()));
        }
        Ok(ImageSource::Named(Reference::parse(text)?))
    }

    /// Whether `text` is an image ID or ID prefix (see [`ImageSource::parse`]).
    pub fn is_id(text: &str) -> bool {
        let hex = text.strip_prefix("sha256:").unwrap_or(text);
        (12..=64).contains(&hex.len())
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    }
}

/// `--target NAME`: the index of the stage among `names` (in definition
/// order) that NAME names: the same name, else the same in lowercase
/// (Dockerfile stage names are case-insensitive and kept lowercased). The
/// one rule for both frontends and the builder.
///
/// # Errors
/// No such stage: a diagnostic with a did-you-mean, else the stages there
/// are.
pub fn select_target(names: &[&str], target: &str) -> Result<usize, crate::diag::Diagnostic> {
    let lower = target.to_ascii_lowercase();
    if let Some(i) = names
        .iter()
        .position(|n| *n == target)
        .or_else(|| names.iter().position(|n| *n == lower))
    {
        return Ok(i);
    }
    let mut d = crate::diag::Diagnostic {
        severity: crate::diag::Severity::Error,
        at: None,
        message: format!("--target: no stage named `{target}`"),
        label: None,
        help: None,
    };
    d.help = Some(
        match crate::diag::did_you_mean(target, names.iter().copied()) {
            Some(s) => format!("did you mean `{s}`?"),
            None => format!("the stages: {}", names.join(", ")),
        },
    );
    Err(d)
}

/// The archive an output writes when nothing names a path: `NAME.oci.tar`
/// in `dir` (the spec's directory for a spec's image without `output`).
/// The one rule for every frontend and the builder.
pub fn default_archive_path(dir: &std::path::Path, stage_name: &str) -> std::path::PathBuf {
    dir.join(format!("{stage_name}.oci.tar"))
}

/// What a stage starts from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Base {
    /// An empty filesystem and config.
    Scratch,
    /// An image from outside the graph.
    Image(ImageSource),
    /// The result of another stage.
    Stage(StageId),
}

/// A named sequence of steps over a base.
#[derive(Debug, Clone)]
pub struct Stage {
    /// Name: the spec's table key, or the Dockerfile's `AS` name (else its index).
    pub name: String,
    /// What it starts from.
    pub base: Base,
    /// The base as written, for progress (`FROM …`).
    pub base_text: String,
    /// Its steps, in order.
    pub steps: Vec<StepId>,
    /// Where it is defined.
    pub source: SourceRef,
    /// The platform it is built for, when its result depends on it (a base
    /// image chosen per platform, RUN, `COPY --from` an image, `FROM
    /// --platform`); `None` for a stage that is the same on every platform
    /// (scratch and copies), which a multi-platform build makes once
    /// ([`merge`]).
    pub platform: Option<Platform>,
    /// How progress shows it when the name alone is ambiguous: in a
    /// multi-platform build, a stage built for one target is `linux/arm64
    /// NAME`, as BuildKit shows it.
    pub label: Option<String>,
}

impl Stage {
    /// The stage as progress shows it ([`Stage::label`], else its name).
    pub fn shown(&self) -> &str {
        self.label.as_deref().unwrap_or(&self.name)
    }
}

/// One step: a layer or a config change.
#[derive(Debug, Clone)]
pub struct Step {
    /// The stage it belongs to.
    pub stage: StageId,
    /// What it does.
    pub kind: StepKind,
    /// Where it is defined (for diagnostics; never in a key).
    pub source: SourceRef,
    /// Where each copy source was written, flattened across items (empty for
    /// other steps), so a missing file is reported at its own string.
    pub args: Vec<SourceRef>,
}

/// What a step does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum StepKind {
    /// Copy files into one new layer.
    Copy(CopyStep),
    /// Run a command; its filesystem changes become one layer.
    /// Boxed: a RUN is the largest step by far, and a graph of 200,000
    /// config steps should not pay its size for each.
    Run(Box<RunStep>),
    /// Change the image config; no layer.
    Config(ConfigChange),
    /// Fetch files from outside the build (ADD of a URL) into one new layer.
    Fetch(FetchStep),
}

/// One layer made of one or more copies.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CopyStep {
    /// The copies, applied in order (a later one wins on a conflict).
    pub items: Vec<CopyItem>,
    /// A display name (spec `name = …`); not part of the cache key.
    #[serde(skip)]
    pub name: Option<String>,
    /// Written as ADD (history shows `ADD`; archives extracted, URLs refused).
    pub add: bool,
    /// `--link`: the layer is made without looking at the filesystem below
    /// (no parent metadata, no links followed, no "is it a directory"), so
    /// it is the same over any base. Absent from the key when false, so
    /// keys of other copies are unchanged.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub link: bool,
}

/// Where a copy reads from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum CopyFrom {
    /// The build context.
    Context,
    /// The filesystem of another stage; its result enters the key as an input.
    Stage {
        /// Which stage.
        #[serde(skip)]
        stage: StageId,
        /// Its name, for `created_by`.
        #[serde(skip)]
        name: String,
    },
    /// The filesystem of an image; its manifest digest (not where it was read
    /// from) enters the key as an input.
    Image {
        /// Which image.
        #[serde(skip)]
        source: ImageSource,
    },
    /// A named local context (`--build-context NAME=DIR`): read like the
    /// build context (its files' digests enter the key, not its path), but
    /// without the context's exclude patterns.
    Local {
        /// The name, for `created_by`.
        #[serde(skip)]
        name: String,
        /// The directory (absolute).
        #[serde(skip)]
        path: PathBuf,
    },
    /// Inline content (a Dockerfile heredoc): `sources` holds one name, the
    /// file created is `content` with mode 0664 (BuildKit).
    Inline {
        /// The file's bytes.
        content: String,
    },
}

/// An owner as written: numeric, or names resolved in the image's
/// `/etc/passwd` and `/etc/group`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Owner {
    /// User name or numeric uid.
    pub user: String,
    /// Group name or numeric gid; `None` means the user's primary group.
    pub group: Option<String>,
}

impl Owner {
    /// Parses `user[:group]`.
    pub fn parse(s: &str) -> Option<Owner> {
        let (user, group) = match s.split_once(':') {
            Some((u, g)) => (u, Some(g)),
            None => (s, None),
        };
        if user.is_empty() || group.is_some_and(str::is_empty) {
            return None;
        }
        Some(Owner {
            user: user.to_string(),
            group: group.map(str::to_string),
        })
    }

    /// The numeric ids when both parts are numbers (or the group is absent,
    /// meaning gid = uid as docker does for numeric users without a passwd
    /// lookup).
    pub fn numeric(&self) -> Option<(u64, Option<u64>)> {
        let uid = self.user.parse().ok()?;
        match &self.group {
            None => Some((uid, None)),
            Some(g) => Some((uid, Some(g.parse().ok()?))),
        }
    }
}

impl std::fmt::Display for Owner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.user)?;
        if let Some(g) = &self.group {
            write!(f, ":{g}")?;
        }
        Ok(())
    }
}

/// One source-set-to-destination copy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CopyItem {
    /// Where the sources are.
    pub from: CopyFrom,
    /// Source paths or `filepath.Match` globs, relative to the context root (or
    /// absolute in a stage/image).
    pub sources: Vec<String>,
    /// Destination, absolute or relative to the image's working directory; a
    /// trailing `/` means "into this directory".
    pub dest: String,
    /// Permissions for every copied file and directory (`--chmod`).
    pub mode: Option<Chmod>,
    /// Owner for every copied file and created directory (`--chown`).
    pub owner: Option<Owner>,
    /// Patterns (dockerignore syntax) excluded from the sources (`--exclude`).
    pub excludes: Vec<String>,
    /// Keep the source's parent directories under `dest` (`--parents`).
    pub parents: bool,
    /// Follow a symlink named directly as a source (docker does).
    pub follow_links: bool,
}

impl CopyItem {
    /// A plain copy from the context: no mode, owner, excludes or parents.
    pub fn from_context(sources: &[&str], dest: &str) -> Self {
        CopyItem {
            from: CopyFrom::Context,
            sources: sources.iter().map(|s| s.to_string()).collect(),
            dest: dest.to_string(),
            mode: None,
            owner: None,
            excludes: Vec::new(),
            parents: false,
            follow_links: true,
        }
    }
}

/// A command as written: shell form (run by the stage's shell) or exec form.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Command {
    /// `RUN make` → `[shell..., "make"]`.
    Shell(String),
    /// `RUN ["make", "all"]`.
    Exec(Vec<String>),
}

/// Network mode for RUN.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Network {
    /// Share the host's network (docker's default).
    #[default]
    Host,
    /// Only a loopback interface.
    None,
}

/// A mount for the duration of one RUN.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum Mount {
    /// A persistent cache directory kept in the store.
    Cache {
        /// Where it appears.
        target: String,
        /// Cache identity (defaults to the target).
        id: String,
    },
    /// A fresh tmpfs.
    Tmpfs {
        /// Where it appears.
        target: String,
    },
    /// A read-only (unless `rw`) view of the context or a stage.
    Bind {
        /// Where it appears.
        target: String,
        /// Path in the source.
        source: String,
        /// Stage or image to bind from; the context when `None`.
        from: Option<String>,
        /// The earlier stage `from` names, resolved with the graph (not in
        /// the key: the stage's result is).
        #[serde(skip)]
        stage: Option<StageId>,
        /// Writable (changes are discarded).
        rw: bool,
    },
    /// A secret file; never in a layer, the history or a key's plain text.
    Secret {
        /// Secret id (from `--secret id=…`).
        id: String,
        /// Where it appears; empty with `env` and no `target=`: no file.
        target: String,
        /// Fail when absent.
        required: bool,
        /// Also (or only) the command's environment variable of this name
        /// (`env=`, dockerfile 1.10).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        env: Option<String>,
    },
    /// The SSH agent forwarded under `id` (`--ssh ID=…`), as a socket at
    /// `target`: in the key by id and target, never by the host's socket or
    /// keys.
    Ssh {
        /// Agent id (`default` unless `id=`).
        id: String,
        /// The socket's path (`/run/buildkit/ssh_agent.N` unless `target=`).
        target: String,
        /// Fail when `--ssh` does not name `id` (else the mount is left out).
        required: bool,
        /// The socket's owner.
        uid: u32,
        /// Its group.
        gid: u32,
        /// Its permission bits (0600 unless `mode=`).
        mode: u32,
    },
}

/// A heredoc attached to a RUN.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RunHeredoc {
    /// Its name (`EOF`).
    pub name: String,
    /// The body, expanded when the name was unquoted, tabs stripped for `<<-`.
    pub content: String,
    /// The file descriptor it feeds (0: stdin or the script itself).
    pub fd: u32,
    /// Whether `$VAR`s in the body expand (the name was not quoted).
    pub expand: bool,
}

/// A command to run in the sandbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RunStep {
    /// What to run.
    pub command: Command,
    /// Heredoc bodies the command uses.
    pub heredocs: Vec<RunHeredoc>,
    /// Build-time environment on top of the image's (not persisted).
    pub env: Vec<(String, String)>,
    /// Names in `env` whose value wins over the image's ENV (an ARG declared
    /// after the ENV: BuildKit's order); the image's ENV wins otherwise.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env_wins: Vec<String>,
    /// Working directory for this step only (the image's otherwise).
    pub workdir: Option<String>,
    /// User for this step only (the image's otherwise).
    pub user: Option<String>,
    /// Network mode.
    pub network: Network,
    /// Extra mounts.
    pub mounts: Vec<Mount>,
}

/// A change to the image config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ConfigChange {
    /// Set environment variables (later ones win).
    Env(Vec<(String, String)>),
    /// Set labels.
    Label(Vec<(String, String)>),
    /// Set the entrypoint; `Exec(vec![])` clears it.
    Entrypoint(Command),
    /// Set the default command; `Exec(vec![])` clears it.
    Cmd(Command),
    /// Set the working directory (absolute): the spec's `workdir`, config only.
    Workdir(String),
    /// Dockerfile `WORKDIR`: set the working directory (absolute) and create
    /// it, with its missing parents, owned by the current USER, when the
    /// filesystem below lacks it (even if no later step writes there).
    WorkdirCreate(String),
    /// Set the user.
    User(String),
    /// Add exposed ports (`8080/tcp`).
    Expose(Vec<String>),
    /// Add volumes.
    Volume(Vec<String>),
    /// Set the stop signal.
    StopSignal(String),
    /// Set the shell used for shell-form commands.
    Shell(Vec<String>),
    /// Set the author (MAINTAINER).
    Maintainer(String),
    /// Set (or with `None`, disable) the health check.
    Healthcheck(Option<Healthcheck>),
    /// Add an ONBUILD trigger (the instruction text, run when the image is
    /// used as a base).
    OnBuild(String),
}

/// A container health check (docker's `Healthcheck` config).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Healthcheck {
    /// `["CMD", …]` or `["CMD-SHELL", "…"]`.
    pub test: Vec<String>,
    /// Nanoseconds between checks (0: default).
    pub interval: u64,
    /// Nanoseconds before a check times out (0: default).
    pub timeout: u64,
    /// Nanoseconds of start-up grace (0: default).
    pub start_period: u64,
    /// Nanoseconds between checks during start-up (0: default).
    pub start_interval: u64,
    /// Failures before unhealthy (0: default).
    pub retries: u64,
}

/// An image this build writes out.
#[derive(Debug, Clone)]
pub struct Output {
    /// The stage whose result it is.
    pub stage: StageId,
    /// Tags to give it in the store and the archive.
    pub tags: Vec<Reference>,
    /// Archive path, if the frontend names one (absolute).
    pub path: Option<PathBuf>,
    /// The platform it is for: `None` in a build that names none (the
    /// host's). Outputs with the same tags and path and different platforms
    /// are one multi-platform image (an index).
    pub platform: Option<Platform>,
    /// The spec's `format = "docker"`: Docker media types in the archive
    /// (`--format` on the command line wins).
    pub docker_archive: bool,
}

/// What a frontend needs to know about a base image to lower the
/// instructions after `FROM` (BuildKit resolves base images before it
/// dispatches, for the same reason): its environment for `$VAR` expansion, its
/// working directory for relative `WORKDIR`, and its ONBUILD triggers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BaseInfo {
    /// `KEY=value` entries of the image config.
    pub env: Vec<String>,
    /// The image's working directory.
    pub workdir: Option<String>,
    /// ONBUILD triggers to run in the stage that uses the image.
    pub onbuild: Vec<String>,
}

/// Looks base images up for a frontend; implemented by the builder (which
/// owns the store), passed in by the CLI, so frontends do no I/O themselves.
pub trait BaseResolver {
    /// What `image` is for `platform`.
    ///
    /// # Errors
    /// A message saying why the image cannot be found or read, or has no
    /// image for `platform`.
    fn resolve(&self, image: &ImageSource, platform: &Platform) -> Result<BaseInfo, String>;
}

/// A resolver for contexts where no image can be looked up.
pub struct NoBases;

impl BaseResolver for NoBases {
    fn resolve(&self, image: &ImageSource, _: &Platform) -> Result<BaseInfo, String> {
        Err(format!("image {image} cannot be looked up here"))
    }
}

/// Build-wide settings the frontends determine.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    /// The context directory (absolute).
    pub context: PathBuf,
    /// `source_date_epoch` from the spec, if any (the environment overrides it).
    pub source_date_epoch: Option<i64>,
    /// Context-wide exclude patterns (`.dockerignore`, spec `exclude`).
    pub context_excludes: Vec<String>,
    /// Files the frontend read (spec, Dockerfile, ignore file), for depfiles.
    pub inputs: Vec<PathBuf>,
}

/// The whole graph.
#[derive(Debug, Clone, Default)]
pub struct BuildGraph {
    /// Stages, in definition order.
    pub stages: Vec<Stage>,
    /// Steps of all stages.
    pub steps: Vec<Step>,
    /// Images to write.
    pub outputs: Vec<Output>,
    /// Build-wide settings.
    pub settings: Settings,
}

impl BuildGraph {
    /// The stage with this id.
    pub fn stage(&self, id: StageId) -> &Stage {
        &self.stages[id.0]
    }

    /// The step with this id.
    pub fn step(&self, id: StepId) -> &Step {
        &self.steps[id.0]
    }

    /// The stage `--target NAME` picks (see [`select_target`]).
    ///
    /// # Errors
    /// No such stage: a diagnostic naming the ones there are.
    pub fn target(&self, name: &str) -> Result<StageId, crate::diag::Diagnostic> {
        let names: Vec<&str> = self.stages.iter().map(|s| s.name.as_str()).collect();
        select_target(&names, name).map(StageId)
    }

    /// [`BuildGraph::dependencies`] of every stage.
    pub fn dependency_lists(&self) -> Vec<Vec<StageId>> {
        (0..self.stages.len())
            .map(|i| self.dependencies(StageId(i)))
            .collect()
    }

    /// Stages another stage needs first: its base stage, every stage it
    /// copies from and every stage a RUN mounts.
    pub fn dependencies(&self, id: StageId) -> Vec<StageId> {
        let stage = self.stage(id);
        let mut deps = Vec::new();
        let mut seen = HashSet::new();
        let mut add = |d: StageId, deps: &mut Vec<StageId>| {
            if seen.insert(d) {
                deps.push(d);
            }
        };
        if let Base::Stage(b) = stage.base {
            add(b, &mut deps);
        }
        for s in &stage.steps {
            match &self.step(*s).kind {
                StepKind::Copy(c) => {
                    for item in &c.items {
                        if let CopyFrom::Stage { stage, .. } = item.from {
                            add(stage, &mut deps);
                        }
                    }
                }
                // `RUN --mount=from=NAME` reads an earlier stage's files.
                StepKind::Run(r) => {
                    for m in &r.mounts {
                        if let Mount::Bind {
                            stage: Some(dep), ..
                        } = *m
                        {
                            add(dep, &mut deps);
                        }
                    }
                }
                StepKind::Config(_) | StepKind::Fetch(_) => {}
            }
        }
        deps
    }

    /// A warning for each stage none of `targets` needs (they are skipped),
    /// once per place it is defined.
    pub fn unused_stages(&self, targets: &[StageId]) -> Vec<crate::diag::Diagnostic> {
        let needed: HashSet<StageId> = self.build_order(targets).into_iter().collect();
        // Defined once, made per platform: unused only if no copy is used.
        let place = |s: &Stage| (s.source.span.start, s.source.span.end, s.name.clone());
        let used: HashSet<_> = needed.iter().map(|id| place(self.stage(*id))).collect();
        let mut said = HashSet::new();
        let mut out = Vec::new();
        for s in &self.stages {
            let at = place(s);
            if used.contains(&at) || !said.insert(at) {
                continue;
            }
            out.push(
                crate::diag::Diagnostic::warning(
                    &s.source.file,
                    s.source.span,
                    format!("stage `{}` is never used", s.name),
                )
                .with_help("nothing the target stage builds depends on it; it is skipped"),
            );
        }
        out
    }

    /// The stages needed to build `targets`, dependencies first; ties keep
    /// definition order. Iterative: a chain of 100,000 stages needs no deeper
    /// stack than one stage. On a graph with a cycle (which the graph builder
    /// reports) it still ends, each stage listed once.
    pub fn build_order(&self, targets: &[StageId]) -> Vec<StageId> {
        let deps = self.dependency_lists();
        let mut seen = vec![false; self.stages.len()];
        let mut out = Vec::new();
        let mut sorted = targets.to_vec();
        sorted.sort();
        // Depth-first post-order: (stage, index of its next dependency).
        let mut stack: Vec<(StageId, usize)> = Vec::new();
        for t in sorted {
            if seen[t.0] {
                continue;
            }
            seen[t.0] = true;
            stack.push((t, 0));
            while let Some((s, next)) = stack.last_mut() {
                let s = *s;
                match deps[s.0].get(*next) {
                    Some(&d) => {
                        *next += 1;
                        if !seen[d.0] {
                            seen[d.0] = true;
                            stack.push((d, 0));
                        }
                    }
                    None => {
                        stack.pop();
                        out.push(s);
                    }
                }
            }
        }
        out
    }

    /// The Dockerfile-syntax text of a step, as `history` and progress show it.
    pub fn created_by(&self, id: StepId) -> String {
        render::created_by(&self.step(id).kind)
    }
}
