//! Flags to options, in one pure step (as ripgrep's `HiArgs::from_low_args`).
//!
//! clap's structs ([`super::args`]) are the low-level arguments; here they
//! become the options a command works with, parsed and validated: `-t`
//! references, `--secret`, `--cache-from`/`--cache-to`, depfile rules,
//! `SOURCE_DATE_EPOCH`, `-v` volumes, `-e K`. Nothing here opens the store,
//! prints, or touches the filesystem: the environment comes in as an
//! [`Env`] snapshot, and the one filesystem question (is a secret a file?)
//! is asked of a function the caller passes in. New flags (outputs,
//! platforms) are converted and tested here; the commands only orchestrate.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::args::{BuildArgs, CompressionArg, FormatArg, ProgressMode, PullPolicy, RunArgs};
use super::env::Env;
use super::exit::Failure;
use crate::builder::{RunNetwork, SandboxMode, Secret};
use crate::exec::HostOptions;
use crate::exec::cgroup::Limits;
use crate::layer::Compression;
use crate::oci::archive::ArchiveFormat;
use crate::reference::{Reference, ReferenceError};

mod cache;
mod output;
pub use cache::{CacheBackend, CacheTo};
pub use output::{Dest, OutputKind, OutputSpec};

/// A flag that does not say something imgbuild can do.
#[derive(Debug, thiserror::Error)]
pub enum ArgError {
    /// A `-t` that is no image reference.
    #[error(transparent)]
    Tag(ReferenceError),
    /// A path that cannot be made absolute (no working directory).
    #[error("resolving {}", path.display())]
    Resolve {
        /// The path as given.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A `--build-context` that names nothing usable.
    #[error("--build-context {spec}: {why}")]
    BuildContext {
        /// The value as given.
        spec: String,
        /// What is wrong.
        why: String,
    },
    /// A `--platform` that names no platform.
    #[error("--platform: {0}")]
    Platform(crate::platform::PlatformError),
    /// `--depfile` on a Dockerfile build with nothing for its rule to make.
    #[error("--depfile needs a file for its rule to make: give -o FILE (or --iidfile FILE)")]
    DepfileWithoutTarget,
    /// A `-o` of no accepted form.
    #[error("-o {spec}: {why}")]
    OutputSyntax {
        /// The flag's value.
        spec: String,
        /// What is wrong with it.
        why: String,
    },
    /// `-o` outputs that cannot be written by one build.
    #[error("-o: {0}")]
    Outputs(String),
    /// A `--cache-from`/`--cache-to` of no accepted form.
    #[error("cache `{spec}`: {why}")]
    CacheSyntax {
        /// The flag's value.
        spec: String,
        /// What is wrong with it.
        why: String,
    },
    /// A cache whose `REF` is no image reference.
    #[error(transparent)]
    CacheRef(ReferenceError),
    /// `SOURCE_DATE_EPOCH` that is no non-negative integer.
    #[error("SOURCE_DATE_EPOCH must be a non-negative integer (seconds since 1970), not `{value}`")]
    Epoch {
        /// The variable's value.
        value: String,
    },
    /// A `--secret` without an id and a source.
    #[error("--secret {spec}: expected id=ID,src=FILE or id=ID,env=VAR")]
    SecretSyntax {
        /// The flag's value.
        spec: String,
    },
    /// A `--secret` from a variable holding more than [`MAX_SECRET`] bytes.
    #[error("--secret {spec}: the value is over 500 KiB")]
    SecretTooBig {
        /// The flag's value.
        spec: String,
    },
    /// `--ssh ID` with no path and no `SSH_AUTH_SOCK` (buildx's message).
    #[error("--ssh {spec}: invalid empty ssh agent socket: make sure SSH_AUTH_SOCK is set")]
    SshNoAgent {
        /// The flag's value.
        spec: String,
    },
    /// Two `--ssh` of one id.
    #[error("--ssh: invalid duplicate ID {id}")]
    SshDuplicate {
        /// The id.
        id: String,
    },
    /// A `--secret` whose source is not a file.
    #[error("--secret {spec}: {} is not a file", path.display())]
    SecretNotFile {
        /// The flag's value.
        spec: String,
        /// Its source, absolute.
        path: PathBuf,
    },
    /// An `--annotation` that cannot be placed.
    #[error("--annotation {spec}: {why}")]
    Annotation {
        /// The value as given.
        spec: String,
        /// What is wrong.
        why: String,
    },
    /// A `--label` without `=`.
    #[error("--label {0}: expected KEY=VALUE")]
    Label(String),
    /// An `--add-host` that is no `HOST:IP`.
    #[error("--add-host {spec}: {why}")]
    AddHost {
        /// The flag's value.
        spec: String,
        /// What is wrong with it.
        why: String,
    },
    /// A `--ulimit` that is no `TYPE=SOFT[:HARD]`.
    #[error("--ulimit {spec}: {why}")]
    Ulimit {
        /// The flag's value.
        spec: String,
        /// What is wrong with it.
        why: String,
    },
    /// A `-v` that cannot be mounted.
    #[error("-v {spec}: {why}")]
    Volume {
        /// The flag's value.
        spec: String,
        /// What is wrong with it.
        why: String,
    },
}

impl ArgError {
    /// As the CLI reports it: a usage error (exit 2), except a path that
    /// cannot be resolved (exit 1, as before the conversion was pure).
    pub fn into_failure(self) -> Failure {
        match self {
            ArgError::Resolve { .. } => Failure::Failed(self.into()),
            _ => Failure::Usage(self.into()),
        }
    }
}

/// How a build shows progress, `--progress`, `-q` and `--dry-run` resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// Nothing (a dry run prints only its summary).
    Null,
    /// Only the image ID, on stdout.
    Quiet,
    /// One JSON event per line on stderr.
    Json,
    /// The live view.
    Tty,
    /// Docker-classic lines on stderr.
    Plain,
}

/// `imgbuild build`'s options.
#[derive(Debug, Clone)]
pub struct HiBuild {
    /// The spec, or the context directory (or Dockerfile).
    pub input: PathBuf,
    /// `-f`.
    pub file: Option<PathBuf>,
    /// A Dockerfile build (not a `*.toml` spec: [`is_spec`]).
    pub dockerfile: bool,
    /// `--target`, for lowering.
    pub target: Option<String>,
    /// `--build-arg` as given (`K` alone is looked up while lowering).
    pub build_args: Vec<String>,
    /// `--build-context`, by the name lowering finds them by.
    pub named_contexts: crate::graph::NamedContexts,
    /// `--platform`, every value and comma-separated list in order,
    /// normalized, without duplicates (empty: the host's, unnamed).
    pub platforms: Vec<crate::platform::Platform>,
    /// `-t`.
    pub tags: Vec<Reference>,
    /// The image archive the builder writes (the first `-o PATH` or
    /// `-o type=oci|docker,dest=FILE`), absolute.
    pub output: Option<PathBuf>,
    /// That archive (else the first other `-o` file) as written: the
    /// depfile rule's target.
    pub output_as_given: Option<PathBuf>,
    /// Every other `-o` that writes something (more archives, archives on
    /// standard output, root filesystems as a tar or a directory): the
    /// CLI writes them after the build.
    pub exports: Vec<OutputSpec>,
    /// `--format`.
    pub format: Option<ArchiveFormat>,
    /// `--compression`.
    pub compression: Compression,
    /// `--no-cache`.
    pub no_cache: bool,
    /// `-j`, else the CPU count.
    pub jobs: usize,
    /// The renderer.
    pub progress: Progress,
    /// Pull lines and hints go to stderr (not with `--progress=quiet|json`).
    pub chatty: bool,
    /// `--iidfile`, as given.
    pub iidfile: Option<PathBuf>,
    /// `--metadata-file`, as given.
    pub metadata_file: Option<PathBuf>,
    /// `--depfile`, as given.
    pub depfile: Option<PathBuf>,
    /// The three above, absolute: left out of the context.
    pub side_outputs: Vec<PathBuf>,
    /// Where a spec's images without `output` go (the working directory);
    /// `None` for a Dockerfile (stored and tagged only).
    pub output_dir: Option<PathBuf>,
    /// `--dry-run`.
    pub dry_run: bool,
    /// `--network`.
    pub network: RunNetwork,
    /// `--pids-limit`, `--memory`, `--cpu-*`.
    pub limits: Limits,
    /// `--secret`: id → an absolute path of a file, or a variable's value.
    pub secrets: HashMap<String, Secret>,
    /// `--ssh`: id → absolute paths (an agent socket, or key files).
    pub ssh: HashMap<String, Vec<PathBuf>>,
    /// `IMGBUILD_SANDBOX`.
    pub sandbox: SandboxMode,
    /// `PATH`, `IMGBUILD_NO_SUBIDS`, `IMGBUILD_RUN_MEMORY`.
    pub host: HostOptions,
    /// `--insecure-registry`, `--retry*`, the docker config.
    pub registry: crate::registry::Options,
    /// `--pull`.
    pub pull: PullPolicy,
    /// `--push`.
    pub push: bool,
    /// `--label`, in order.
    pub labels: Vec<(String, String)>,
    /// `--annotation`, in order.
    pub annotations: Vec<crate::builder::Annotation>,
    /// An `-o …,force-compression=true`.
    pub force_compression: bool,
    /// `--add-host`, `--ulimit`, `--shm-size`.
    pub run: crate::builder::RunSettings,
    /// `--no-cache-filter`.
    pub no_cache_stages: Vec<String>,
    /// `--cache-to`, in order.
    pub cache_to: Vec<CacheTo>,
    /// `--cache-from`, in order.
    pub cache_from: Vec<CacheBackend>,
    /// `SOURCE_DATE_EPOCH` from the environment (a spec may set its own).
    pub epoch: Option<i64>,
}

impl HiBuild {
    /// Converts and validates `a` in environment `env`; `is_file` says
    /// whether a secret's source is a regular file.
    ///
    /// # Errors
    /// The first flag (in the order they are listed on [`HiBuild`]) that
    /// does not convert.
    pub fn from_low_args(
        a: &BuildArgs,
        env: &Env,
        is_file: &dyn Fn(&Path) -> bool,
    ) -> Result<HiBuild, ArgError> {
        let cwd = env.cwd.as_deref();
        let dockerfile = !is_spec(&a.input, a.file.as_deref());
        let tags = a
            .tags
            .iter()
            .map(|t| Reference::parse(t).map_err(ArgError::Tag))
            .collect::<Result<Vec<_>, _>>()?;
        let mut tags = tags;
        let given_format = a.format.map(|f| match f {
            FormatArg::Oci => ArchiveFormat::Oci,
            FormatArg::Docker => ArchiveFormat::Docker,
        });
        let specs = a
            .outputs
            .iter()
            .map(|o| {
                let mut spec = output::output(o, cwd)?;
                // `-o PATH` names no format: `--format` gives it.
                if let (false, OutputKind::Archive(f), Some(g)) =
                    (o.contains('='), &mut spec.kind, given_format)
                {
                    *f = g;
                }
                Ok(spec)
            })
            .collect::<Result<Vec<_>, ArgError>>()?;
        let (mut output, mut output_as_given, mut archive_format) = (None, None, None);
        let mut exports = Vec::new();
        let mut compression = match a.compression {
            CompressionArg::Gzip => Compression::Gzip,
            CompressionArg::Zstd => Compression::Zstd,
            CompressionArg::None => Compression::None,
        };
        let mut chosen: Option<Compression> = None;
        let mut force_compression = false;
        let mut push = a.push;
        for o in specs {
            force_compression |= o.force_compression;
            if let Some(c) = o.compression {
                if chosen.is_some_and(|have| have != c) {
                    return Err(ArgError::Outputs(
                        "outputs with different compression=: one build compresses its layers one way".into(),
                    ));
                }
                chosen = Some(c);
            }
            tags.extend(o.names.iter().cloned());
            push |= o.push;
            match (&o.kind, &o.dest) {
                (OutputKind::Image, _) => {}
                (OutputKind::Archive(f), Dest::Path(abs, given)) if output.is_none() => {
                    output = Some(abs.clone());
                    output_as_given = Some(given.clone());
                    archive_format = Some(*f);
                }
                (_, dest) => {
                    if let (None, Dest::Path(_, given)) = (&output_as_given, dest) {
                        output_as_given = Some(given.clone());
                    }
                    exports.push(o);
                }
            }
        }
        if let Some(c) = chosen {
            compression = c;
        }
        let quiet = a.quiet || a.progress == ProgressMode::Quiet;
        if quiet && exports.iter().any(|o| matches!(o.dest, Dest::Stdout)) {
            return Err(ArgError::Outputs(
                "-q prints the image ID on standard output, where this -o writes too: drop one"
                    .into(),
            ));
        }
        if a.depfile.is_some() && output_as_given.is_none() && dockerfile && a.iidfile.is_none() {
            return Err(ArgError::DepfileWithoutTarget);
        }
        let side_outputs = [&a.iidfile, &a.depfile, &a.metadata_file]
            .into_iter()
            .flatten()
            .map(|p| absolute(cwd, p))
            .collect::<Result<Vec<_>, _>>()?;
        let cache_from = a
            .cache_from
            .iter()
            .map(|c| cache::cache_from(c, cwd))
            .collect::<Result<Vec<_>, _>>()?;
        let cache_to = a
            .cache_to
            .iter()
            .map(|c| cache::cache_to(c, cwd))
            .collect::<Result<Vec<_>, _>>()?;
        let annotations = a
            .annotations
            .iter()
            .map(|s| Ok((s, annotation(s)?)))
            .collect::<Result<Vec<_>, ArgError>>()?;
        let epoch = epoch(env.source_date_epoch())?;
        let secrets = secrets(&a.secrets, env, is_file)?;
        let ssh = ssh(&a.ssh, env)?;
        let mut platforms: Vec<crate::platform::Platform> = Vec::new();
        for list in &a.platforms {
            for p in crate::platform::Platform::parse_list(list).map_err(ArgError::Platform)? {
                if !platforms.contains(&p) {
                    platforms.push(p);
                }
            }
        }
        let index_annotation = annotations
            .iter()
            .find(|(_, a)| a.level == crate::builder::AnnotationLevel::Index);
        if let Some((spec, _)) = index_annotation
            && dockerfile
            && platforms.len() < 2
        {
            return Err(ArgError::Annotation {
                spec: (*spec).clone(),
                why: "an index annotation needs a multi-platform image (--platform with several platforms)".into(),
            });
        }
        let annotations = annotations.into_iter().map(|(_, a)| a).collect();
        let mut named_contexts = crate::graph::NamedContexts::new();
        for spec in &a.build_contexts {
            let (name, nc) = named_context(spec, cwd)?;
            if !dockerfile {
                return Err(ArgError::BuildContext {
                    spec: spec.clone(),
                    why: "named contexts apply to Dockerfiles; a spec names its bases and copies directly".into(),
                });
            }
            named_contexts.insert(name, nc);
        }
        // `-o` says where the image goes: no default archive besides.
        let output_dir = if dockerfile || (!a.outputs.is_empty() && output.is_none()) {
            None
        } else {
            Some(absolute(cwd, Path::new("."))?)
        };
        Ok(HiBuild {
            input: a.input.clone(),
            file: a.file.clone(),
            dockerfile,
            target: a.target.clone(),
            build_args: a.build_args.clone(),
            named_contexts,
            platforms,
            tags,
            output,
            output_as_given,
            exports,
            // A `-o type=` says its archive's format; `--format` the rest.
            format: archive_format.or(given_format),
            compression,
            no_cache: a.no_cache,
            jobs: a.jobs.unwrap_or(env.cpus),
            progress: progress(a, env.stderr_is_terminal),
            // `-q` prints the image ID and nothing else.
            chatty: !a.quiet && !matches!(a.progress, ProgressMode::Quiet | ProgressMode::Json),
            iidfile: a.iidfile.clone(),
            metadata_file: a.metadata_file.clone(),
            depfile: a.depfile.clone(),
            side_outputs,
            output_dir,
            dry_run: a.dry_run,
            network: a.network.run_network(),
            limits: a.limits.limits(),
            secrets,
            ssh,
            sandbox: env.sandbox(),
            host: env.sandbox_host(),
            registry: a.bases.registry(env.docker_config()),
            pull: a.bases.pull,
            push,
            labels: a
                .labels
                .iter()
                .map(|l| {
                    l.split_once('=')
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .filter(|(k, _)| !k.is_empty())
                        .ok_or_else(|| ArgError::Label(l.clone()))
                })
                .collect::<Result<_, _>>()?,
            force_compression,
            annotations,
            run: crate::builder::RunSettings {
                add_hosts: a
                    .add_hosts
                    .iter()
                    .map(|h| add_host(h))
                    .collect::<Result<_, _>>()?,
                ulimits: a
                    .ulimits
                    .iter()
                    .map(|u| {
                        crate::exec::Ulimit::parse(u).map_err(|why| ArgError::Ulimit {
                            spec: u.clone(),
                            why,
                        })
                    })
                    .collect::<Result<_, _>>()?,
                shm_size: a.shm_size,
            },
            no_cache_stages: a.no_cache_filter.clone(),
            cache_to,
            cache_from,
            epoch,
        })
    }

    /// `--target` as the builder takes it: a Dockerfile's was applied when
    /// lowering.
    pub fn builder_target(&self) -> Option<String> {
        if self.dockerfile {
            None
        } else {
            self.target.clone()
        }
    }

    /// The depfile rule's targets once the build wrote `outputs`: `-o` as
    /// written when given, else the iidfile when no archive was written,
    /// else the archives.
    pub fn depfile_targets(&self, outputs: &[PathBuf]) -> Vec<PathBuf> {
        match (&self.output_as_given, &self.iidfile) {
            (Some(o), _) => vec![o.clone()],
            (None, Some(iid)) if outputs.is_empty() => vec![iid.clone()],
            (None, _) => outputs.to_vec(),
        }
    }
}

/// Whether `input` (with `-f file`) names a TOML spec rather than a
/// Dockerfile build: a `*.toml` without `-f`. From the names alone, so that
/// flags that depend on it are checked before anything is read.
pub fn is_spec(input: &Path, file: Option<&Path>) -> bool {
    file.is_none() && input.extension().is_some_and(|e| e == "toml")
}

/// `--add-host HOST:IP` (or docker's newer `HOST=IP`): the host name up
/// to the first `:` (an IPv6 address has more), then an address.
fn add_host(spec: &str) -> Result<(String, std::net::IpAddr), ArgError> {
    let err = |why: &str| ArgError::AddHost {
        spec: spec.to_string(),
        why: why.to_string(),
    };
    let (host, ip) = spec
        .split_once('=')
        .or_else(|| spec.split_once(':'))
        .ok_or_else(|| err("expected HOST:IP"))?;
    if host.is_empty() || host.chars().any(|c| c.is_whitespace() || c == '#') {
        return Err(err("no host name"));
    }
    if ip == "host-gateway" {
        return Err(err(
            "host-gateway names the docker daemon's gateway; give the address instead",
        ));
    }
    let ip = ip
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .map_err(|_| err("not an IP address"))?;
    Ok((host.to_string(), ip))
}

/// One `--annotation [TYPE[,TYPE][\[PLATFORM\]]:]KEY=VALUE`, as buildx
/// takes it; no type is `manifest`. The descriptor levels
/// (`manifest-descriptor`, `index-descriptor`) are refused.
fn annotation(spec: &str) -> Result<crate::builder::Annotation, ArgError> {
    use crate::builder::{Annotation, AnnotationLevel};
    let bad = |why: &str| ArgError::Annotation {
        spec: spec.to_string(),
        why: why.to_string(),
    };
    let (head, kv) = match spec.split_once('=') {
        Some((k, _)) if !k.contains(':') => ("", spec),
        _ => match spec.split_once(':') {
            Some((t, kv)) => (t, kv),
            None => ("", spec),
        },
    };
    let (key, value) = kv
        .split_once('=')
        .filter(|(k, _)| !k.is_empty())
        .ok_or_else(|| bad("expected [TYPE:]KEY=VALUE"))?;
    let (types, platform) = match head.split_once('[') {
        Some((t, p)) => {
            let p = p
                .strip_suffix(']')
                .ok_or_else(|| bad("a platform is written TYPE[os/arch]"))?;
            let p = crate::platform::Platform::parse(p).map_err(|e| bad(&e.to_string()))?;
            (t, Some(p))
        }
        None => (head, None),
    };
    let level = match types {
        "" | "manifest" => AnnotationLevel::Manifest,
        "index" => AnnotationLevel::Index,
        "manifest-descriptor" | "index-descriptor" => {
            return Err(bad("descriptor annotations are not supported yet"));
        }
        _ if types.contains(',') => {
            return Err(bad("give one type per --annotation"));
        }
        _ => return Err(bad("the type is manifest or index")),
    };
    if level == AnnotationLevel::Index && platform.is_some() {
        return Err(bad("an index has no platform"));
    }
    Ok(Annotation {
        level,
        platform,
        key: key.to_string(),
        value: value.to_string(),
    })
}

/// One `--build-context NAME=VALUE`, as buildx takes it: a directory,
/// `docker-image://REF` (an image by name, from the store or its
/// registry), or `oci-layout://PATH[:TAG][@DIGEST]` (an image of an OCI
/// layout on disk, by tag or by manifest digest).
fn named_context(
    spec: &str,
    cwd: Option<&Path>,
) -> Result<(String, crate::graph::NamedContext), ArgError> {
    use crate::graph::{ImageSource, NamedContext};
    let bad = |why: String| ArgError::BuildContext {
        spec: spec.to_string(),
        why,
    };
    let (name, value) = spec
        .split_once('=')
        .filter(|(n, v)| !n.is_empty() && !v.is_empty())
        .ok_or_else(|| bad("expected NAME=VALUE".into()))?;
    let key = crate::graph::context_name(name);
    if let Some(r) = value.strip_prefix("docker-image://") {
        let r = Reference::parse(r).map_err(|e| bad(e.to_string()))?;
        return Ok((key, NamedContext::Image(ImageSource::Named(r))));
    }
    if let Some(rest) = value.strip_prefix("oci-layout://") {
        // PATH[:TAG][@DIGEST]; a digest wins over a tag, as in buildx.
        let (rest, digest) = match rest.rsplit_once('@') {
            Some((p, d)) => {
                let _: crate::digest::Digest = d
                    .parse()
                    .map_err(|_| bad(format!("`{d}` is not a sha256 digest")))?;
                (p, Some(d.to_string()))
            }
            None => (rest, None),
        };
        let (path, tag) = match rest.rsplit_once(':') {
            Some((p, t)) if !t.contains('/') => (p, Some(t.to_string())),
            _ => (rest, None),
        };
        if path.is_empty() {
            return Err(bad("oci-layout:// names no directory".into()));
        }
        let path = absolute(cwd, Path::new(path))?;
        return Ok((
            key,
            NamedContext::Image(ImageSource::OciDir {
                path,
                name: digest.or(tag),
            }),
        ));
    }
    if let Some((scheme, _)) = value.split_once("://") {
        return Err(bad(format!(
            "{scheme}:// contexts are not supported: give a directory, docker-image:// or oci-layout://"
        )));
    }
    let path = absolute(cwd, Path::new(value))?;
    Ok((key, NamedContext::Local(path)))
}

/// An absolute form of `p` against the working directory `cwd`, touching
/// nothing (what `std::path::absolute` gives in `cwd`).
fn absolute(cwd: Option<&Path>, p: &Path) -> Result<PathBuf, ArgError> {
    let joined = if p.is_absolute() || p.as_os_str().is_empty() {
        // Absolute (or empty, which it refuses): std does not look at the
        // working directory.
        p.to_path_buf()
    } else {
        match cwd {
            Some(c) => c.join(p),
            None => {
                return Err(ArgError::Resolve {
                    path: p.to_path_buf(),
                    source: std::io::Error::other("the working directory is unknown"),
                });
            }
        }
    };
    std::path::absolute(&joined).map_err(|source| ArgError::Resolve {
        path: p.to_path_buf(),
        source,
    })
}

/// `SOURCE_DATE_EPOCH`: unset or blank is none.
fn epoch(value: Option<&str>) -> Result<Option<i64>, ArgError> {
    match value {
        Some(s) if s.trim().is_empty() => Ok(None),
        Some(s) => s
            .trim()
            .parse::<i64>()
            .ok()
            .filter(|e| *e >= 0)
            .map(Some)
            .ok_or_else(|| ArgError::Epoch {
                value: s.to_string(),
            }),
        None => Ok(None),
    }
}

/// The most a secret may hold (BuildKit's `MaxSecretSize`).
pub const MAX_SECRET: usize = 500 * 1024;

/// `--secret` as buildx reads it: `id=ID`, `src=FILE` (or `source=`),
/// `env=VAR`, `type=file|env`. `type=env` takes `src` as the variable's
/// name; with neither `src` nor `env` the variable `ID` is the source when
/// it is set, else the file `ID`; the id defaults to the file's name. A
/// variable that is not set gives an empty secret (buildx's `os.Getenv`).
/// A later secret of the same id wins.
fn secrets(
    specs: &[String],
    env: &Env,
    is_file: &dyn Fn(&Path) -> bool,
) -> Result<HashMap<String, Secret>, ArgError> {
    let cwd = env.cwd.as_deref();
    let mut out = HashMap::new();
    for spec in specs {
        let syntax = || ArgError::SecretSyntax { spec: spec.clone() };
        let (mut id, mut src, mut var, mut typ) = (None, None, None, None);
        for part in spec.split(',') {
            let Some((k, v)) = part.split_once('=') else {
                return Err(syntax());
            };
            match (k.to_ascii_lowercase().as_str(), v) {
                ("id", v) => id = Some(v.to_string()),
                ("src" | "source", v) => src = Some(v.to_string()),
                ("env", v) => var = Some(v.to_string()),
                ("type", t @ ("file" | "env")) => typ = Some(t),
                _ => return Err(syntax()),
            }
        }
        let (mut src, mut var) = (src.filter(|s| !s.is_empty()), var.filter(|v| !v.is_empty()));
        if typ == Some("env") && var.is_none() {
            var = src.take();
        }
        if var.is_none() && src.is_none() {
            let Some(id) = &id else {
                return Err(syntax());
            };
            if env.var_os(id).is_some() {
                var = Some(id.clone());
            } else {
                src = Some(id.clone());
            }
        }
        let secret = match (var, src) {
            (Some(name), _) => {
                use std::os::unix::ffi::OsStrExt;
                let value = env.var_os(&name).map(|v| v.as_bytes().to_vec());
                let value = value.unwrap_or_default();
                if value.len() > MAX_SECRET {
                    return Err(ArgError::SecretTooBig { spec: spec.clone() });
                }
                Secret::Value(value)
            }
            (None, Some(src)) => {
                let path = absolute(cwd, Path::new(&src))?;
                if !is_file(&path) {
                    return Err(ArgError::SecretNotFile {
                        spec: spec.clone(),
                        path,
                    });
                }
                Secret::File(path)
            }
            (None, None) => return Err(syntax()),
        };
        let id = id.filter(|i| !i.is_empty()).or_else(|| match &secret {
            Secret::File(p) => p.file_name().map(|n| n.to_string_lossy().into_owned()),
            Secret::Value(_) => None,
        });
        let Some(id) = id else {
            return Err(syntax());
        };
        out.insert(id, secret);
    }
    Ok(out)
}

/// `--ssh ID[=PATH[,PATH…]]` as buildx reads it: an agent socket or key
/// files under `ID` (`default` when empty), `$SSH_AUTH_SOCK` when no path
/// is given. Paths are made absolute; what each is (socket or key) is the
/// builder's question.
fn ssh(specs: &[String], env: &Env) -> Result<HashMap<String, Vec<PathBuf>>, ArgError> {
    let cwd = env.cwd.as_deref();
    let mut out = HashMap::new();
    for spec in specs {
        let (id, paths) = spec.split_once('=').unwrap_or((spec.as_str(), ""));
        let id = if id.is_empty() { "default" } else { id };
        let mut paths: Vec<PathBuf> = paths
            .split(',')
            .filter(|p| !p.is_empty())
            .map(|p| absolute(cwd, Path::new(p)))
            .collect::<Result<_, _>>()?;
        if paths.is_empty() {
            match env.var_os("SSH_AUTH_SOCK").filter(|s| !s.is_empty()) {
                Some(sock) => paths.push(absolute(cwd, Path::new(sock))?),
                None => {
                    return Err(ArgError::SshNoAgent { spec: spec.clone() });
                }
            }
        }
        if out.insert(id.to_string(), paths).is_some() {
            return Err(ArgError::SshDuplicate { id: id.to_string() });
        }
    }
    Ok(out)
}

/// The renderer `--progress` (and `-q`, `--dry-run`) asks for: `auto` is the
/// live view on a terminal and Docker-classic lines elsewhere.
fn progress(a: &BuildArgs, stderr_is_terminal: bool) -> Progress {
    if a.dry_run {
        return Progress::Null;
    }
    let mode = if a.quiet {
        ProgressMode::Quiet
    } else {
        a.progress
    };
    match mode {
        ProgressMode::Quiet => Progress::Quiet,
        ProgressMode::Json => Progress::Json,
        ProgressMode::Tty => Progress::Tty,
        ProgressMode::Auto if stderr_is_terminal => Progress::Tty,
        ProgressMode::Auto | ProgressMode::Plain => Progress::Plain,
    }
}

/// A `-v` checked for syntax; the host path is resolved (and must exist)
/// when the command runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeArg {
    /// The flag's value, for messages.
    pub spec: String,
    /// The host path, absolute.
    pub host: PathBuf,
    /// The container path, absolute and not `/`.
    pub target: String,
    /// `:ro`.
    pub readonly: bool,
}

impl VolumeArg {
    /// Parses `-v HOST:CTR[:ro|rw]`.
    ///
    /// # Errors
    /// [`ArgError::Volume`], saying what is wrong.
    pub fn parse(v: &str) -> Result<VolumeArg, ArgError> {
        let usage = |why: &str| ArgError::Volume {
            spec: v.to_string(),
            why: why.to_string(),
        };
        let mut parts = v.split(':');
        let (Some(host), Some(target)) = (parts.next(), parts.next()) else {
            return Err(usage("expected HOST:CONTAINER[:ro]"));
        };
        let readonly = match parts.next() {
            None | Some("rw") => false,
            Some("ro") => true,
            Some(o) => return Err(usage(&format!("unknown option `{o}` (ro or rw)"))),
        };
        if parts.next().is_some() {
            return Err(usage("expected HOST:CONTAINER[:ro]"));
        }
        let host = Path::new(host);
        if !host.is_absolute() {
            return Err(usage(
                "the host path must be absolute (named volumes do not exist here)",
            ));
        }
        if !target.starts_with('/') {
            return Err(usage("the container path must be absolute"));
        }
        if target.trim_matches('/').is_empty() {
            return Err(usage("the container path cannot be `/`"));
        }
        Ok(VolumeArg {
            spec: v.to_string(),
            host: host.to_path_buf(),
            target: target.to_string(),
            readonly,
        })
    }
}

/// `imgbuild run`'s options.
#[derive(Debug, Clone)]
pub struct HiRun {
    /// The image as typed.
    pub image: String,
    /// `--platform`.
    pub platform: Option<crate::platform::Platform>,
    /// `-i`.
    pub interactive: bool,
    /// `-t`.
    pub tty: bool,
    /// `-e`, in order: `K=V`, and `K` with this environment's value (left
    /// out when unset, as docker does).
    pub env: Vec<(String, String)>,
    /// `-w`.
    pub workdir: Option<String>,
    /// `-u`.
    pub user: Option<String>,
    /// `--network`.
    pub network: RunNetwork,
    /// `--pids-limit`, `--memory`, `--cpu-*`.
    pub limits: Limits,
    /// `--entrypoint`.
    pub entrypoint: Option<String>,
    /// `-v`.
    pub volumes: Vec<VolumeArg>,
    /// The command and its arguments.
    pub command: Vec<String>,
    /// `IMGBUILD_SANDBOX` (where the writable layer lives).
    pub sandbox: SandboxMode,
    /// `PATH`, `IMGBUILD_NO_SUBIDS`, `IMGBUILD_RUN_MEMORY`.
    pub host: HostOptions,
}

impl HiRun {
    /// Converts and validates `a` in environment `env`.
    ///
    /// # Errors
    /// A `--platform` or the first `-v` that does not parse.
    pub fn from_low_args(a: &RunArgs, env: &Env) -> Result<HiRun, ArgError> {
        let platform = a
            .platform
            .as_deref()
            .map(crate::platform::Platform::parse)
            .transpose()
            .map_err(ArgError::Platform)?;
        let vars = a
            .env
            .iter()
            .filter_map(|e| match e.split_once('=') {
                Some((k, v)) => Some((k.to_string(), v.to_string())),
                None => env.var(e).map(|v| (e.clone(), v.to_string())),
            })
            .collect();
        let volumes = a
            .volumes
            .iter()
            .map(|v| VolumeArg::parse(v))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(HiRun {
            image: a.image.clone(),
            platform,
            interactive: a.interactive,
            tty: a.tty,
            env: vars,
            workdir: a.workdir.clone(),
            user: a.user.clone(),
            network: a.network.run_network(),
            limits: a.limits.limits(),
            entrypoint: a.entrypoint.clone(),
            volumes,
            command: a.command.clone(),
            sandbox: env.sandbox(),
            host: env.sandbox_host(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::args::{Cli, Command};
    use clap::Parser;

    fn env() -> Env {
        let mut e = Env::from_vars([("HOME", "/home/u"), ("PATH", "/bin")]);
        e.cwd = Some(PathBuf::from("/work"));
        e.cpus = 3;
        e
    }

    fn args(argv: &[&str]) -> BuildArgs {
        let argv = ["imgbuild", "build"].iter().chain(argv);
        match Cli::try_parse_from(argv).map(|c| c.command) {
            Ok(Command::Build(a)) => a,
            other => panic!("not a build: {other:?}"),
        }
    }

    fn build_in(env: &Env, argv: &[&str]) -> Result<HiBuild, ArgError> {
        HiBuild::from_low_args(&args(argv), env, &|p| p.starts_with("/work/files"))
    }

    fn build(argv: &[&str]) -> Result<HiBuild, ArgError> {
        build_in(&env(), argv)
    }

    #[test]
    fn defaults() {
        let h = build(&["."]).unwrap();
        assert!(h.dockerfile);
        assert_eq!(h.jobs, 3);
        assert_eq!(h.progress, Progress::Plain);
        assert!(h.chatty);
        assert_eq!(h.output, None);
        assert_eq!(h.output_dir, None, "a Dockerfile build writes no archive");
        assert_eq!(h.compression, Compression::Gzip);
        assert_eq!(h.format, None);
        assert_eq!(h.network, RunNetwork::Sandbox);
        assert_eq!(h.sandbox, SandboxMode::Memory);
        assert_eq!(h.host.path, "/bin");
        assert_eq!(h.epoch, None);
        assert!(h.secrets.is_empty() && h.cache_from.is_empty() && h.cache_to.is_empty());
        assert_eq!(
            h.registry.docker_config,
            Some(PathBuf::from("/home/u/.docker/config.json"))
        );
    }

    #[test]
    fn spec_or_dockerfile_by_name() {
        let h = build(&["--target", "web", "specs/app.toml"]).unwrap();
        assert!(!h.dockerfile);
        assert_eq!(h.output_dir, Some(PathBuf::from("/work")));
        assert_eq!(h.builder_target(), Some("web".into()));
        let h = build(&["-f", "app.toml", "--target", "web", "."]).unwrap();
        assert!(h.dockerfile, "-f names a Dockerfile, whatever its name");
        assert_eq!(h.builder_target(), None, "applied when lowering");
    }

    #[test]
    fn tags_and_paths() {
        let h = build(&["-t", "app:1", "-t", "reg.io/x/y:2", "-o", "out/a.tar", "."]).unwrap();
        assert_eq!(
            h.tags.iter().map(|t| t.familiar()).collect::<Vec<_>>(),
            ["app:1", "reg.io/x/y:2"]
        );
        assert_eq!(h.output, Some(PathBuf::from("/work/out/a.tar")));
        assert_eq!(h.output_as_given, Some(PathBuf::from("out/a.tar")));
        let h = build(&["-o", "/abs/./a.tar", "."]).unwrap();
        assert_eq!(h.output, Some(PathBuf::from("/abs/a.tar")));
        assert!(matches!(
            build(&["-t", "Bad:Tag!", "."]),
            Err(ArgError::Tag(_))
        ));
    }

    #[test]
    fn relative_paths_need_a_working_directory() {
        let mut e = env();
        e.cwd = None;
        let err = build_in(&e, &["-o", "a.tar", "."]).unwrap_err();
        assert!(matches!(err, ArgError::Resolve { .. }));
        assert!(matches!(err.into_failure(), Failure::Failed(_)));
        assert!(build_in(&e, &["-o", "/a.tar", "."]).is_ok());
    }

    #[test]
    fn side_outputs_are_absolute() {
        let h = build(&[
            "--iidfile",
            "id",
            "--depfile",
            "/d/dep",
            "--metadata-file",
            "m.json",
            ".",
        ])
        .unwrap();
        assert_eq!(
            h.side_outputs,
            [
                PathBuf::from("/work/id"),
                PathBuf::from("/d/dep"),
                PathBuf::from("/work/m.json")
            ]
        );
        assert_eq!(h.iidfile, Some(PathBuf::from("id")), "written as given");
    }

    #[test]
    fn depfile_needs_a_target() {
        let err = build(&["--depfile", "d", "."]).unwrap_err();
        assert!(matches!(err, ArgError::DepfileWithoutTarget));
        assert_eq!(
            err.to_string(),
            "--depfile needs a file for its rule to make: give -o FILE (or --iidfile FILE)"
        );
        assert!(matches!(err.into_failure(), Failure::Usage(_)));
        // A spec names its archives; -o or --iidfile give the rule a target.
        assert!(build(&["--depfile", "d", "a.toml"]).is_ok());
        assert!(build(&["--depfile", "d", "-o", "a.tar", "."]).is_ok());
        assert!(build(&["--depfile", "d", "--iidfile", "id", "."]).is_ok());
    }

    #[test]
    fn depfile_targets() {
        let archives = [PathBuf::from("/work/a.oci.tar")];
        let h = build(&["--depfile", "d", "-o", "x/a.tar", "."]).unwrap();
        assert_eq!(h.depfile_targets(&archives), [PathBuf::from("x/a.tar")]);
        let h = build(&["--depfile", "d", "--iidfile", "id", "."]).unwrap();
        assert_eq!(h.depfile_targets(&[]), [PathBuf::from("id")]);
        assert_eq!(h.depfile_targets(&archives), archives);
        let h = build(&["--depfile", "d", "a.toml"]).unwrap();
        assert_eq!(h.depfile_targets(&archives), archives);
    }

    #[test]
    fn secrets() {
        let file = |p: &str| Secret::File(PathBuf::from(p));
        let h = build(&[
            "--secret",
            "id=token,src=files/t",
            "--secret",
            "id=key,source=/work/files/k,type=file",
            "--secret",
            "src=files/named",
            ".",
        ])
        .unwrap();
        assert_eq!(h.secrets.len(), 3);
        assert_eq!(h.secrets["token"], file("/work/files/t"));
        assert_eq!(h.secrets["key"], file("/work/files/k"));
        assert_eq!(
            h.secrets["named"],
            file("/work/files/named"),
            "the id defaults to the file name"
        );
        let h = build(&[
            "--secret",
            "id=a,src=files/1",
            "--secret",
            "id=a,src=files/2",
            ".",
        ])
        .unwrap();
        assert_eq!(h.secrets["a"], file("/work/files/2"), "the last wins");
    }

    #[test]
    fn secrets_from_the_environment_as_buildx_reads_them() {
        let mut e = env();
        e.vars_mut().insert("MYTOK".into(), "value".into());
        e.vars_mut().insert("tok".into(), "by-id".into());
        let value = |v: &str| Secret::Value(v.as_bytes().to_vec());
        let h = build_in(
            &e,
            &[
                "--secret",
                "id=a,env=MYTOK",
                "--secret",
                "id=b,type=env,src=MYTOK",
                "--secret",
                "id=tok",
                "--secret",
                "id=files/f",
                "--secret",
                "id=unset,env=NOT_SET",
                "--secret",
                "id=both,src=files/x,env=MYTOK",
                ".",
            ],
        )
        .unwrap();
        assert_eq!(h.secrets["a"], value("value"));
        assert_eq!(
            h.secrets["b"],
            value("value"),
            "type=env: src names the variable"
        );
        assert_eq!(
            h.secrets["tok"],
            value("by-id"),
            "the variable named by the id"
        );
        assert_eq!(
            h.secrets["files/f"],
            Secret::File(PathBuf::from("/work/files/f")),
            "no such variable: the file named by the id"
        );
        assert_eq!(
            h.secrets["unset"],
            value(""),
            "buildx: an unset variable is empty"
        );
        assert_eq!(h.secrets["both"], value("value"), "env wins over src");
        // Never the value in a debug print.
        let shown = format!("{:?}", h.secrets["a"]);
        assert_eq!(shown, "Value(<5 bytes>)");
        e.vars_mut()
            .insert("BIG".into(), "x".repeat(MAX_SECRET + 1).into());
        let err = build_in(&e, &["--secret", "id=big,env=BIG", "."]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "--secret id=big,env=BIG: the value is over 500 KiB"
        );
        assert!(matches!(err.into_failure(), Failure::Usage(_)));
    }

    #[test]
    fn bad_secrets() {
        for bad in [
            "",
            "id=x,src=files/y,mode=0400",
            "type=socket,id=x,src=files/y",
            "files/y",
            "env=MYTOK",
        ] {
            let err = build(&["--secret", bad, "."]).unwrap_err();
            assert_eq!(
                err.to_string(),
                format!("--secret {bad}: expected id=ID,src=FILE or id=ID,env=VAR"),
                "{bad}"
            );
            assert!(matches!(err.into_failure(), Failure::Usage(_)));
        }
        for (bad, path) in [
            ("id=x,src=elsewhere/y", "/work/elsewhere/y"),
            ("id=x", "/work/x"),
        ] {
            let err = build(&["--secret", bad, "."]).unwrap_err();
            assert_eq!(
                err.to_string(),
                format!("--secret {bad}: {path} is not a file")
            );
            assert!(matches!(err.into_failure(), Failure::Usage(_)));
        }
    }

    #[test]
    fn ssh_agents_and_keys() {
        let mut e = env();
        e.vars_mut()
            .insert("SSH_AUTH_SOCK".into(), "/tmp/ssh-X/agent.1".into());
        let h = build_in(
            &e,
            &[
                "--ssh",
                "default",
                "--ssh",
                "keys=files/id_a,/k/id_b",
                "--ssh",
                "sock=rel.sock",
                "--ssh",
                "other=",
                ".",
            ],
        )
        .unwrap();
        let paths = |v: &[&str]| v.iter().map(PathBuf::from).collect::<Vec<_>>();
        assert_eq!(h.ssh["default"], paths(&["/tmp/ssh-X/agent.1"]));
        assert_eq!(h.ssh["keys"], paths(&["/work/files/id_a", "/k/id_b"]));
        assert_eq!(h.ssh["sock"], paths(&["/work/rel.sock"]));
        assert_eq!(
            h.ssh["other"],
            paths(&["/tmp/ssh-X/agent.1"]),
            "no path: the caller's agent, whatever the id"
        );
        assert_eq!(h.ssh.len(), 4);
        assert!(build(&["."]).unwrap().ssh.is_empty());

        let err = build(&["--ssh", "default", "."]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "--ssh default: invalid empty ssh agent socket: make sure SSH_AUTH_SOCK is set"
        );
        assert!(matches!(err.into_failure(), Failure::Usage(_)));
        let err = build_in(&e, &["--ssh", "a=/x", "--ssh", "a=/y", "."]).unwrap_err();
        assert_eq!(err.to_string(), "--ssh: invalid duplicate ID a");
        let err = build_in(&e, &["--ssh", "=/x", "--ssh", "default", "."]).unwrap_err();
        assert_eq!(err.to_string(), "--ssh: invalid duplicate ID default");
    }

    #[test]
    fn outputs_in_buildx_syntax() {
        let h = build(&[
            "-o",
            "type=docker,dest=d.tar",
            "-o",
            "out.tar",
            "-o",
            "type=tar,dest=-",
            "-o",
            "type=local,dest=rootfs",
            "-o",
            "type=registry,\"name=reg.io/a:1,reg.io/a:2\"",
            "-o",
            "type=oci,dest=z.tar,compression=zstd,compression-level=3,oci-mediatypes=true",
            ".",
        ])
        .unwrap();
        // The first archive is the builder's; its type says its format.
        assert_eq!(h.output, Some(PathBuf::from("/work/d.tar")));
        assert_eq!(h.output_as_given, Some(PathBuf::from("d.tar")));
        assert_eq!(h.format, Some(ArchiveFormat::Docker));
        assert_eq!(h.compression, Compression::Zstd);
        assert!(h.push);
        assert_eq!(
            h.tags.iter().map(ToString::to_string).collect::<Vec<_>>(),
            ["reg.io/a:1", "reg.io/a:2"]
        );
        let kinds: Vec<(OutputKind, Dest)> =
            h.exports.iter().map(|o| (o.kind, o.dest.clone())).collect();
        assert_eq!(
            kinds,
            [
                (
                    OutputKind::Archive(ArchiveFormat::Oci),
                    Dest::Path("/work/out.tar".into(), "out.tar".into())
                ),
                (OutputKind::Tar, Dest::Stdout),
                (
                    OutputKind::Local,
                    Dest::Path("/work/rootfs".into(), "rootfs".into())
                ),
                (
                    OutputKind::Archive(ArchiveFormat::Oci),
                    Dest::Path("/work/z.tar".into(), "z.tar".into())
                ),
            ]
        );
        // `-` alone is buildx's: the filesystem on standard output.
        let h = build(&["-o", "-", "."]).unwrap();
        assert_eq!(h.output, None);
        assert_eq!(h.exports[0].kind, OutputKind::Tar);

        for (bad, why) in [
            ("type=tar", "needs dest=FILE"),
            ("type=local,dest=-", "type=local writes a directory"),
            (
                "type=image,dest=x",
                "type=image and type=registry go to the store",
            ),
            ("type=image,push=true", "pushing needs name="),
            ("type=nope,dest=x", "unknown type `nope`"),
            ("dest=x", "no type="),
            ("type=oci,dest=x,bogus=1", "unknown attribute `bogus`"),
            (
                "type=oci,dest=x,compression=lz4",
                "compression=lz4: expected",
            ),
            (
                "type=oci,dest=x,compression-level=9",
                "compression-level=9: imgbuild compresses at level 6",
            ),
            (
                "type=oci,dest=x,push=maybe",
                "push=maybe: expected true or false",
            ),
            ("type=oci,dest=\"x", "an unterminated quote"),
            ("type=oci,dest=x,tar=false", "tar=false"),
        ] {
            let err = build(&["-o", bad, "."]).unwrap_err();
            assert!(
                err.to_string().starts_with(&format!("-o {bad}: {why}")),
                "{bad}: {err}"
            );
            assert!(matches!(err.into_failure(), Failure::Usage(_)));
        }
        let err = build(&[
            "-o",
            "type=oci,dest=a,compression=zstd",
            "-o",
            "type=oci,dest=b,compression=gzip",
            ".",
        ])
        .unwrap_err();
        assert!(err.to_string().contains("different compression"), "{err}");
        assert!(matches!(
            build(&["-o", "type=image,name=Bad!", "."]),
            Err(ArgError::Tag(_))
        ));
    }

    #[test]
    fn annotations_in_buildx_syntax() {
        use crate::builder::AnnotationLevel;
        let a = annotation("org.opencontainers.image.title=a=b").unwrap();
        assert_eq!(
            (a.level, a.key.as_str(), a.value.as_str()),
            (
                AnnotationLevel::Manifest,
                "org.opencontainers.image.title",
                "a=b"
            )
        );
        let a = annotation("index:k=v").unwrap();
        assert_eq!((a.level, a.platform), (AnnotationLevel::Index, None));
        let a = annotation("manifest[linux/arm64]:k=").unwrap();
        assert_eq!(a.platform.unwrap().arch, "arm64");
        assert_eq!(a.value, "");
        for bad in [
            "k",
            "=v",
            "index-descriptor:k=v",
            "x:k=v",
            "manifest[linux/arm64:k=v",
        ] {
            assert!(annotation(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn named_contexts_in_buildx_syntax() {
        use crate::graph::{ImageSource, NamedContext};
        let cwd = Some(Path::new("/w"));
        let (k, c) = named_context("Base=docker-image://alpine:3", cwd).unwrap();
        assert_eq!(k, "base");
        assert!(matches!(c, NamedContext::Image(ImageSource::Named(_))));
        let (_, c) = named_context("x=oci-layout://l:v1", cwd).unwrap();
        assert_eq!(
            c,
            NamedContext::Image(ImageSource::OciDir {
                path: "/w/l".into(),
                name: Some("v1".into())
            })
        );
        let d = format!("sha256:{}", "a".repeat(64));
        let (_, c) = named_context(&format!("x=oci-layout:///l:v1@{d}"), cwd).unwrap();
        assert_eq!(
            c,
            NamedContext::Image(ImageSource::OciDir {
                path: "/l".into(),
                name: Some(d)
            })
        );
        let (k, c) = named_context("docker.io/library/alpine:latest=dir", cwd).unwrap();
        assert_eq!(
            (k.as_str(), c),
            ("alpine", NamedContext::Local("/w/dir".into()))
        );
        for bad in [
            "x",
            "x=",
            "=d",
            "x=git://h/r",
            "x=oci-layout://",
            "x=oci-layout://l@sha256:zz",
        ] {
            assert!(named_context(bad, cwd).is_err(), "{bad}");
        }
    }

    #[test]
    fn run_flags_labels_and_no_cache_filter() {
        let h = build(&[
            "--add-host",
            "a.test:10.0.0.1",
            "--add-host",
            "b.test=fd00::2",
            "--add-host",
            "c.test:[fd00::3]",
            "--ulimit",
            "nofile=1024:2048",
            "--ulimit",
            "core=-1",
            "--shm-size",
            "128m",
            "--label",
            "a=b=c",
            "--no-cache-filter",
            "build,test",
            "--no-cache-filter",
            "lint",
            ".",
        ])
        .unwrap();
        let hosts: Vec<String> = h
            .run
            .add_hosts
            .iter()
            .map(|(n, ip)| format!("{n} {ip}"))
            .collect();
        assert_eq!(
            hosts,
            ["a.test 10.0.0.1", "b.test fd00::2", "c.test fd00::3"]
        );
        let ulimits: Vec<String> = h.run.ulimits.iter().map(ToString::to_string).collect();
        assert_eq!(ulimits, ["nofile=1024:2048", "core=-1:-1"]);
        assert_eq!(h.run.shm_size, Some(128 << 20));
        assert_eq!(h.labels, [("a".to_string(), "b=c".to_string())]);
        assert_eq!(h.no_cache_stages, ["build", "test", "lint"]);
        for (flag, bad, why) in [
            (
                "--add-host",
                "nohost",
                "--add-host nohost: expected HOST:IP",
            ),
            ("--add-host", "h:300.1.1.1", "not an IP address"),
            ("--add-host", "h:host-gateway", "host-gateway names"),
            ("--add-host", ":1.2.3.4", "no host name"),
            ("--ulimit", "nofile", "expected TYPE=SOFT[:HARD]"),
            ("--ulimit", "bogus=1", "unknown resource `bogus`"),
            (
                "--ulimit",
                "nofile=2:1",
                "the soft limit 2 is above the hard limit",
            ),
            ("--ulimit", "nofile=-1:5", "an unlimited soft limit"),
            ("--ulimit", "nofile=x", "`x` is no limit"),
            ("--label", "novalue", "--label novalue: expected KEY=VALUE"),
            ("--label", "=v", "expected KEY=VALUE"),
        ] {
            let err = build(&[flag, bad, "."]).unwrap_err();
            assert!(err.to_string().contains(why), "{bad}: {err}");
            assert!(matches!(err.into_failure(), Failure::Usage(_)));
        }
    }

    #[test]
    fn cache_references() {
        use crate::oci::cache::{Layout, Mode};
        let reg = |r: &str| CacheBackend::Registry(Reference::parse(r).unwrap());
        let h = build(&[
            "--cache-from",
            "registry:127.0.0.1:5000/cache:a",
            "--cache-from",
            "type=registry,ref=reg.io/c:b",
            "--cache-from",
            "reg.io/plain:c",
            "--cache-from",
            "type=local,src=cache,tag=t1",
            "--cache-from",
            "type=local,src=/abs,digest=sha256:0000000000000000000000000000000000000000000000000000000000000000",
            "--cache-to",
            "ref=reg.io/c:t,type=registry",
            "--cache-to",
            "registry:reg.io/c:short",
            "--cache-to",
            "type=local,dest=out,mode=max,compression=zstd",
            "--cache-to",
            "type=inline",
            "--cache-to",
            "type=registry,ref=reg.io/c:x,mode=max,ignore-error=true,oci-mediatypes=true",
            ".",
        ])
        .unwrap();
        assert_eq!(
            h.cache_from,
            [
                reg("127.0.0.1:5000/cache:a"),
                reg("reg.io/c:b"),
                reg("reg.io/plain:c"),
                CacheBackend::Local(Layout {
                    dir: "/work/cache".into(),
                    tag: "t1".into(),
                    digest: None
                }),
                CacheBackend::Local(Layout {
                    dir: "/abs".into(),
                    tag: "latest".into(),
                    digest: Some(
                        "sha256:0000000000000000000000000000000000000000000000000000000000000000"
                            .parse()
                            .unwrap()
                    )
                }),
            ]
        );
        let to = |backend, mode, ignore_error| CacheTo {
            backend,
            mode,
            ignore_error,
        };
        assert_eq!(
            h.cache_to,
            [
                to(reg("reg.io/c:t"), Mode::Min, false),
                // The short form shares everything.
                to(reg("reg.io/c:short"), Mode::Max, false),
                to(
                    CacheBackend::Local(Layout {
                        dir: "/work/out".into(),
                        tag: "latest".into(),
                        digest: None
                    }),
                    Mode::Max,
                    false
                ),
                to(CacheBackend::Inline, Mode::Min, false),
                to(reg("reg.io/c:x"), Mode::Max, true),
            ]
        );
        for (flag, bad, why) in [
            (
                "--cache-to",
                "type=local,ref=reg.io/c",
                "type=local needs dest=DIR",
            ),
            (
                "--cache-from",
                "type=local,dest=d",
                "unknown attribute `dest`",
            ),
            ("--cache-to", "type=registry", "type=registry needs ref=REF"),
            (
                "--cache-to",
                "type=inline,mode=max",
                "an inline cache holds only",
            ),
            (
                "--cache-from",
                "type=inline",
                "an inline cache is read from its image",
            ),
            (
                "--cache-to",
                "type=gha,url=x",
                "type=gha is a cloud service",
            ),
            ("--cache-to", "type=nope,ref=x", "unknown type `nope`"),
            ("--cache-to", "ref=x", "no type="),
            (
                "--cache-to",
                "type=registry,ref=r,mode=all",
                "mode=all: expected min or max",
            ),
            (
                "--cache-to",
                "type=registry,ref=r,bogus",
                "`bogus` is not KEY=VALUE",
            ),
        ] {
            let err = build(&[flag, bad, "."]).unwrap_err();
            assert!(
                err.to_string()
                    .starts_with(&format!("cache `{bad}`: {why}")),
                "{flag} {bad}: {err}"
            );
            assert!(matches!(err.into_failure(), Failure::Usage(_)));
        }
        for flag in ["--cache-from", "--cache-to"] {
            assert!(matches!(
                build(&[flag, "registry:Bad!", "."]),
                Err(ArgError::CacheRef(_))
            ));
        }
    }

    #[test]
    fn source_date_epoch() {
        let with = |v: &str| {
            let mut e = env();
            e.vars_mut().insert("SOURCE_DATE_EPOCH".into(), v.into());
            build_in(&e, &["."]).map(|h| h.epoch)
        };
        assert_eq!(with("1700000000").unwrap(), Some(1_700_000_000));
        assert_eq!(with(" 0 ").unwrap(), Some(0));
        assert_eq!(with("").unwrap(), None);
        assert_eq!(with("  ").unwrap(), None);
        for bad in ["-1", "soon", "1.5"] {
            let err = with(bad).unwrap_err();
            assert_eq!(
                err.to_string(),
                format!(
                    "SOURCE_DATE_EPOCH must be a non-negative integer (seconds since 1970), not `{bad}`"
                )
            );
        }
    }

    #[test]
    fn progress_modes() {
        let p = |argv: &[&str], tty: bool| {
            let mut e = env();
            e.stderr_is_terminal = tty;
            build_in(&e, argv).unwrap()
        };
        assert_eq!(p(&["."], true).progress, Progress::Tty);
        assert_eq!(p(&["."], false).progress, Progress::Plain);
        assert_eq!(
            p(&["--progress", "plain", "."], true).progress,
            Progress::Plain
        );
        assert_eq!(
            p(&["--progress", "tty", "."], false).progress,
            Progress::Tty
        );
        let h = p(&["--progress", "json", "."], false);
        assert_eq!(h.progress, Progress::Json);
        assert!(!h.chatty);
        let h = p(&["-q", "."], false);
        assert_eq!(h.progress, Progress::Quiet);
        assert!(
            !h.chatty,
            "-q prints the image ID and nothing else, as docker build -q"
        );
        assert_eq!(p(&["--dry-run", "-q", "."], false).progress, Progress::Null);
    }

    #[test]
    fn other_flags() {
        let h = build(&[
            "--format",
            "docker",
            "--compression",
            "zstd",
            "--no-cache",
            "-j",
            "8",
            "--network",
            "none",
            "--pids-limit",
            "-1",
            "--memory",
            "512m",
            "--pull=never",
            "--push",
            "--insecure-registry",
            "reg:5000",
            "--dry-run",
            ".",
        ])
        .unwrap();
        assert_eq!(h.format, Some(ArchiveFormat::Docker));
        assert_eq!(h.compression, Compression::Zstd);
        assert!(h.no_cache && h.push && h.dry_run);
        assert_eq!(h.jobs, 8);
        assert_eq!(h.network, RunNetwork::None);
        assert_eq!(h.limits.pids, None);
        assert_eq!(h.limits.memory, Some(512 << 20));
        assert_eq!(h.pull, PullPolicy::Never);
        assert_eq!(h.registry.insecure, ["reg:5000"]);
    }

    #[test]
    fn sandbox_from_the_environment() {
        let mut e = env();
        e.vars_mut()
            .insert("IMGBUILD_SANDBOX".into(), "copy".into());
        e.vars_mut()
            .insert("IMGBUILD_RUN_MEMORY".into(), "1m".into());
        let h = build_in(&e, &["."]).unwrap();
        assert_eq!(h.sandbox, SandboxMode::Copy);
        assert_eq!(h.host.memory_upper, "1m");
    }

    fn run_args(argv: &[&str]) -> RunArgs {
        let argv = ["imgbuild", "run"].iter().chain(argv);
        match Cli::try_parse_from(argv).map(|c| c.command) {
            Ok(Command::Run(a)) => a,
            other => panic!("not a run: {other:?}"),
        }
    }

    #[test]
    fn run_env_and_command() {
        let mut e = env();
        e.vars_mut().insert("FROM_HERE".into(), "yes".into());
        let h = HiRun::from_low_args(
            &run_args(&[
                "-e",
                "A=1",
                "-e",
                "FROM_HERE",
                "-e",
                "UNSET",
                "-e",
                "B=x=y",
                "img",
                "sh",
                "-c",
                "true",
            ]),
            &e,
        )
        .unwrap();
        assert_eq!(
            h.env,
            [
                ("A".to_string(), "1".to_string()),
                ("FROM_HERE".into(), "yes".into()),
                ("B".into(), "x=y".into())
            ]
        );
        assert_eq!(h.image, "img");
        assert_eq!(h.command, ["sh", "-c", "true"]);
        assert_eq!(h.platform, None);
    }

    #[test]
    fn run_platform_is_parsed_and_normalized() {
        let h = HiRun::from_low_args(&run_args(&["--platform", "linux/arm64/v8", "img"]), &env())
            .unwrap();
        assert_eq!(
            h.platform,
            Some(crate::platform::Platform::parse("linux/arm64").unwrap())
        );
        let err = HiRun::from_low_args(&run_args(&["--platform", "linux/", "img"]), &env())
            .map(|_| ())
            .unwrap_err();
        assert!(matches!(err, ArgError::Platform(_)), "{err}");
    }

    #[test]
    fn volumes() {
        assert_eq!(
            VolumeArg::parse("/h:/c:ro").unwrap(),
            VolumeArg {
                spec: "/h:/c:ro".into(),
                host: "/h".into(),
                target: "/c".into(),
                readonly: true
            }
        );
        assert!(!VolumeArg::parse("/h:/c").unwrap().readonly);
        assert!(!VolumeArg::parse("/h:/c:rw").unwrap().readonly);
        for (bad, why) in [
            ("/h", "expected HOST:CONTAINER[:ro]"),
            ("/h:/c:ro:x", "expected HOST:CONTAINER[:ro]"),
            ("/h:/c:z", "unknown option `z` (ro or rw)"),
            (
                "h:/c",
                "the host path must be absolute (named volumes do not exist here)",
            ),
            ("/h:c", "the container path must be absolute"),
            ("/h:/", "the container path cannot be `/`"),
            ("/h://", "the container path cannot be `/`"),
        ] {
            let err = VolumeArg::parse(bad).unwrap_err();
            assert_eq!(err.to_string(), format!("-v {bad}: {why}"));
        }
        let err = HiRun::from_low_args(&run_args(&["-v", "rel:/c", "img"]), &env()).unwrap_err();
        assert!(matches!(err.into_failure(), Failure::Usage(_)));
    }
}
