//! Command-line definitions (clap). Flags follow `docker build` / `buildx`
//! where those have one.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

const AFTER_HELP: &str = "\
Examples:
  imgbuild specs/app.toml                 build every image the spec defines
  imgbuild build -t app:dev --target app specs/app.toml
  imgbuild check specs/app.toml           report every problem, build nothing
  imgbuild load base.tar                  import an OCI or docker archive
  imgbuild images                         list images in the store

Exit status: 0 success, 1 build failed, 2 usage or spec error.
The store is --store, else $IMGBUILD_STORE, else $XDG_CACHE_HOME/imgbuild,
else ~/.cache/imgbuild.";

/// imgbuild: build container images from TOML specs or Dockerfiles into
/// reproducible OCI archives, without a daemon.
#[derive(Debug, Parser)]
#[command(name = "imgbuild", version, about, after_help = AFTER_HELP)]
pub struct Cli {
    /// Content store directory (blobs, images, tags, build cache).
    #[arg(long, global = true, env = "IMGBUILD_STORE", value_name = "DIR")]
    pub store: Option<PathBuf>,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands. `imgbuild SPEC` is `imgbuild build SPEC`.
// Parsed once per run: the size of the largest variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Build images from a TOML spec (or a directory with a Dockerfile).
    Build(BuildArgs),
    /// Validate a spec without building; report every problem.
    Check(CheckArgs),
    /// Import an OCI or docker archive into the store.
    Load(LoadArgs),
    /// List images in the store.
    Images(ImagesArgs),
    /// Show an image's config and metadata as JSON.
    Inspect(InspectArgs),
    /// Show an image's history.
    History(HistoryArgs),
    /// Give an image another name.
    Tag(TagArgs),
    /// Write an image from the store to an archive.
    Export(ExportArgs),
    /// Parse a Dockerfile and print its parse tree.
    Parse(ParseArgs),
    /// Remove images (untag; an image with no tag left is deleted).
    Rmi(RmiArgs),
    /// Remove what no image needs (blobs, snapshots, stale cache entries).
    Prune(PruneArgs),
    /// Store maintenance.
    Store(StoreArgs),
    /// Run a command in an image (tag, ID or step ID) over a throwaway
    /// writable layer; exits with the command's status.
    Run(RunArgs),
    /// Pull an image from a registry into the store.
    Pull(PullArgs),
    /// Push an image from the store to a registry.
    Push(PushArgs),
    /// Log in to a registry (credentials go to ~/.docker/config.json).
    Login(LoginArgs),
    /// Forget a registry's credentials.
    Logout(LogoutArgs),
    /// List the platforms this machine can run RUN steps for (natively or
    /// through QEMU registered in binfmt_misc).
    Platforms(PlatformsArgs),
}

/// `imgbuild platforms`.
#[derive(Debug, Args)]
#[command(after_help = "\
A foreign platform runs through a QEMU user-mode emulator registered in
binfmt_misc with the fix-binary (F) flag; on Debian:
  apt-get install qemu-user-static binfmt-support
  update-binfmts --enable qemu-aarch64        (without systemd)")]
pub struct PlatformsArgs {
    /// `table` (one platform a line with its status) or `json` (one object
    /// per line).
    #[arg(long, value_enum, default_value = "table")]
    pub format: PlatformsFormat,
}

/// Output of `imgbuild platforms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PlatformsFormat {
    /// `linux/arm64     emulated (qemu-aarch64, /usr/libexec/…)`.
    Table,
    /// `{"platform":"linux/arm64","status":"emulated",…}` per line.
    Json,
}

/// `imgbuild pull`.
#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  imgbuild pull alpine                      docker.io/library/alpine:latest
  imgbuild pull 127.0.0.1:5000/team/app:1.2
  imgbuild pull --platform linux/arm64 debian@sha256:…

Layers the store has already are not fetched again (`Already exists`).")]
pub struct PullArgs {
    /// Image reference: [REGISTRY/]NAME[:TAG|@DIGEST].
    #[arg(value_name = "REF")]
    pub reference: String,
    /// Platform to pull from a multi-platform image (os/arch[/variant];
    /// default: this host's).
    #[arg(long, value_name = "PLATFORM")]
    pub platform: Option<String>,
    /// Talk to this registry (host[:port]) over plain http; repeatable.
    /// Loopback registries always are.
    #[arg(long = "insecure-registry", value_name = "HOST")]
    pub insecure_registry: Vec<String>,
    /// How failed registry requests are retried.
    #[command(flatten)]
    pub retry: RetryArgs,
    /// Print only the image's full reference.
    #[arg(short, long)]
    pub quiet: bool,
}

/// `imgbuild push`.
#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  imgbuild push 127.0.0.1:5000/team/app:1.2           an image tagged with its destination
  imgbuild push app:dev registry.example.com/app:dev  any image (tag or ID) to a destination

Blobs the registry has already are not uploaded (`Layer already exists`); the
manifest goes last, and its digest is printed. A multi-platform image sends
every platform's manifest (by digest), then its index under the tag: the
digest printed last is the index's.")]
pub struct PushArgs {
    /// Image to push: a tag or an image ID.
    #[arg(value_name = "IMAGE")]
    pub image: String,
    /// Destination reference (default: IMAGE, which must then name a registry
    /// repository).
    #[arg(value_name = "DEST")]
    pub destination: Option<String>,
    /// Push only this platform's image of a multi-platform one, under the
    /// tag (os/arch[/variant]; default: every platform, and the index).
    #[arg(long, value_name = "PLATFORM")]
    pub platform: Option<String>,
    /// Talk to this registry (host[:port]) over plain http; repeatable.
    #[arg(long = "insecure-registry", value_name = "HOST")]
    pub insecure_registry: Vec<String>,
    /// How failed registry requests are retried.
    #[command(flatten)]
    pub retry: RetryArgs,
    /// Print only the pushed manifest's digest.
    #[arg(short, long)]
    pub quiet: bool,
}

/// `imgbuild login`.
#[derive(Debug, Args)]
pub struct LoginArgs {
    /// Registry host[:port] (default: docker.io).
    #[arg(value_name = "SERVER", default_value = "docker.io")]
    pub server: String,
    /// User name.
    #[arg(short, long)]
    pub username: String,
    /// Password (prefer --password-stdin: command lines are visible to others).
    #[arg(short, long, conflicts_with = "password_stdin")]
    pub password: Option<String>,
    /// Read the password from standard input.
    #[arg(long)]
    pub password_stdin: bool,
    /// Talk to this registry over plain http.
    #[arg(long = "insecure-registry", value_name = "HOST")]
    pub insecure_registry: Vec<String>,
}

/// `imgbuild logout`.
#[derive(Debug, Args)]
pub struct LogoutArgs {
    /// Registry host[:port] (default: docker.io).
    #[arg(value_name = "SERVER", default_value = "docker.io")]
    pub server: String,
}

/// `imgbuild run`.
#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  imgbuild run demo:latest cat /foo.txt
  imgbuild run -it 4932aede6a15 sh        an intermediate step, interactively
  imgbuild run -e DEBUG=1 -w /src -u app app:dev make test
  imgbuild run -v \"$PWD\":/src:ro -w /src app:dev ls

Changes the command makes are discarded when it exits. Exit status: the
command's; 125 when the sandbox could not start it.")]
pub struct RunArgs {
    /// Keep stdin attached.
    #[arg(short = 'i', long)]
    pub interactive: bool,
    /// Allocate a pseudo-terminal for the command (with -i: ours in raw mode
    /// meanwhile, window size followed), as docker's -t.
    #[arg(short = 't', long)]
    pub tty: bool,
    /// Set an environment variable (K=V, or K to take it from here); repeatable.
    #[arg(short = 'e', long = "env", value_name = "K=V")]
    pub env: Vec<String>,
    /// Working directory inside the container.
    #[arg(short = 'w', long = "workdir", value_name = "DIR")]
    pub workdir: Option<String>,
    /// User (name, uid, name:group or uid:gid).
    #[arg(short = 'u', long = "user", value_name = "USER")]
    pub user: Option<String>,
    /// Network: a private one with outbound access (default), the host's,
    /// or none.
    #[arg(long, value_enum, default_value = "default")]
    pub network: NetworkArg,
    /// Resource limits.
    #[command(flatten)]
    pub limits: LimitArgs,
    /// Override the image's entrypoint.
    #[arg(long, value_name = "CMD")]
    pub entrypoint: Option<String>,
    /// Bind-mount a host file or directory (absolute paths; `:ro` for
    /// read-only); repeatable.
    #[arg(short = 'v', long = "volume", value_name = "HOST:CTR[:ro]")]
    pub volumes: Vec<String>,
    /// Run this platform's image of a multi-platform one (os/arch[/variant];
    /// default: this host's). A foreign platform runs through QEMU
    /// registered in binfmt_misc, as a build's RUN does.
    #[arg(long, value_name = "PLATFORM")]
    pub platform: Option<String>,
    /// The image: tag, image ID, or unique ID prefix.
    #[arg(value_name = "IMAGE")]
    pub image: String,
    /// Command and arguments (default: the image's CMD).
    #[arg(
        value_name = "CMD",
        trailing_var_arg = true,
        allow_hyphen_values = true
    )]
    pub command: Vec<String>,
}

/// `imgbuild rmi`.
#[derive(Debug, Args)]
pub struct RmiArgs {
    /// Tags, image IDs or unique ID prefixes.
    #[arg(value_name = "IMAGE", required = true)]
    pub images: Vec<String>,
    /// Remove an image by ID even when tags point at it (the tags go too).
    #[arg(short, long)]
    pub force: bool,
}

/// `imgbuild prune`.
#[derive(Debug, Args)]
pub struct PruneArgs {
    /// Also remove untagged images (intermediate steps) and the whole build cache.
    #[arg(short, long)]
    pub all: bool,
    /// Remove untagged images, oldest first, only until the store holds at most
    /// SIZE of blobs (e.g. 10GB, 500MB).
    #[arg(long, value_name = "SIZE")]
    pub keep_storage: Option<String>,
}

/// `imgbuild store`.
#[derive(Debug, Args)]
pub struct StoreArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: StoreCommand,
}

/// Store subcommands.
#[derive(Debug, Subcommand)]
pub enum StoreCommand {
    /// Verify every blob against its digest, every image's layers against its
    /// config's diff_ids, every record against what it names, and every
    /// extracted snapshot and layer against its layers; exit 1 if anything is
    /// wrong.
    Check {
        /// Remove what is corrupt (and what names it: tags, cache entries),
        /// saying what was removed; the store then checks clean.
        #[arg(long)]
        repair: bool,
    },
}

/// `imgbuild parse`.
#[derive(Debug, Args)]
pub struct ParseArgs {
    /// Print BuildKit's parse-tree dump (one s-expression per instruction).
    #[arg(long)]
    pub dump: bool,
    /// The Dockerfile (`-` for standard input).
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
}

/// `--progress` modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ProgressMode {
    /// `plain` unless on a terminal.
    Auto,
    /// Live status on a terminal.
    Tty,
    /// Docker-classic lines (`Step 1/3 : …`).
    Plain,
    /// Only the final image ID on stdout.
    Quiet,
    /// One JSON event per line.
    Json,
}

/// Archive flavours.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FormatArg {
    /// OCI media types (default).
    Oci,
    /// Docker v2 schema 2 media types.
    Docker,
}

/// Layer compression.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CompressionArg {
    /// gzip (default; every tool reads it).
    Gzip,
    /// zstd (faster; needs a recent runtime).
    Zstd,
    /// Uncompressed tar layers.
    None,
}

/// `imgbuild build`.
#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  imgbuild build -t app:1 .                     ./Dockerfile, context .: stored and tagged
  imgbuild build -t app:1 -o app.tar .          ... and written to an OCI archive
  imgbuild build -f docker/app.Dockerfile --build-arg VERSION=2 --target runtime .
  imgbuild build specs/app.toml                 every image of a spec, to its `output`
  imgbuild build --target web -t web:dev -o web.tar specs/app.toml
  imgbuild build --dry-run -o app.tar .         what would rebuild (exit 1), like make -q
  imgbuild build -o dist/app.tar --depfile dist/app.tar.d --iidfile dist/app.id .

Without -o, a Dockerfile build writes no file (as docker build); `imgbuild
export IMAGE -o FILE` writes one later. Outputs inside the context are left
out of it. Exit status: 0 built, 1 a step failed, 2 usage or definition error.")]
pub struct BuildArgs {
    /// A `*.toml` spec, or a directory holding a Dockerfile.
    #[arg(value_name = "SPEC|CONTEXT")]
    pub input: PathBuf,
    /// Dockerfile path (default: CONTEXT/Dockerfile).
    #[arg(short = 'f', long = "file", value_name = "PATH")]
    pub file: Option<PathBuf>,
    /// Name the image NAME[:TAG]; repeatable.
    #[arg(short = 't', long = "tag", value_name = "NAME[:TAG]")]
    pub tags: Vec<String>,
    /// Build only this stage or image (and what it needs).
    #[arg(long, value_name = "STAGE")]
    pub target: Option<String>,
    /// Set a build argument K=V; repeatable.
    #[arg(long = "build-arg", value_name = "K=V")]
    pub build_args: Vec<String>,
    /// Build for these platforms (os/arch[/variant], comma-separated or
    /// repeated): one image per platform, written as one multi-platform
    /// index (default: this host's).
    #[arg(long = "platform", value_name = "PLATFORMS")]
    pub platforms: Vec<String>,
    /// Name a context for FROM NAME and COPY --from=NAME (a stage AS NAME
    /// is replaced): NAME=DIR, NAME=docker-image://REF or
    /// NAME=oci-layout://PATH[:TAG][@DIGEST]; repeatable.
    #[arg(long = "build-context", value_name = "NAME=VALUE")]
    pub build_contexts: Vec<String>,
    /// Where the image goes; repeatable. PATH: an OCI archive (default:
    /// the spec's `output`, else ./<name>.oci.tar; a Dockerfile build
    /// writes none). buildx's form: type=oci|docker,dest=FILE |
    /// type=tar,dest=FILE|- | type=local,dest=DIR | type=image,name=REF[,push=true]
    /// | type=registry,name=REF, with compression=gzip|zstd|uncompressed.
    /// `-` alone: the root filesystem as a tar on standard output.
    #[arg(short = 'o', long = "output", value_name = "PATH|type=…")]
    pub outputs: Vec<String>,
    /// Archive flavour (both load with `docker load` and `podman load`).
    #[arg(long, value_enum, value_name = "oci|docker")]
    pub format: Option<FormatArg>,
    /// Layer compression.
    #[arg(long, value_enum, default_value = "gzip")]
    pub compression: CompressionArg,
    /// Ignore the build cache.
    #[arg(long)]
    pub no_cache: bool,
    /// Parallel jobs (default: number of CPUs).
    #[arg(short = 'j', long, value_name = "N")]
    pub jobs: Option<usize>,
    /// How to show progress.
    #[arg(long, value_enum, default_value = "auto")]
    pub progress: ProgressMode,
    /// Print only the image ID (same as --progress=quiet).
    #[arg(short = 'q', long)]
    pub quiet: bool,
    /// Write the image ID to this file.
    #[arg(long, value_name = "FILE")]
    pub iidfile: Option<PathBuf>,
    /// Write build metadata (JSON: image ID, manifest digest, layers, tags,
    /// per-step cache hit/miss with the reason, timing) to this file.
    #[arg(long, value_name = "FILE")]
    pub metadata_file: Option<PathBuf>,
    /// Write a make-format dependency file naming every input the build read
    /// (definition, .dockerignore, context files after ignore rules, base archives).
    #[arg(long, value_name = "FILE")]
    pub depfile: Option<PathBuf>,
    /// Compute cache keys without building: list what would rebuild; exit 0
    /// when everything is up to date, 1 when a rebuild is needed (like make -q).
    #[arg(long)]
    pub dry_run: bool,
    /// Network for RUN steps: a private one per build with outbound access
    /// through slirp4netns (default), the host's, or none (loopback only).
    #[arg(long, value_enum, default_value = "default")]
    pub network: NetworkArg,
    /// Resource limits of each RUN step.
    #[command(flatten)]
    pub limits: LimitArgs,
    /// A secret RUN --mount=type=secret can mount: id=ID,src=FILE or
    /// id=ID,env=VAR (a variable of this environment); never stored in a
    /// layer, the history or the cache.
    #[arg(long = "secret", value_name = "id=ID,src=FILE|env=VAR")]
    pub secrets: Vec<String>,
    /// Add a label KEY=VALUE to the output image's config (no history
    /// entry); repeatable.
    #[arg(long = "label", value_name = "KEY=VALUE")]
    pub labels: Vec<String>,
    /// Add an annotation to the output's manifest (KEY=VALUE,
    /// manifest:KEY=VALUE, manifest[os/arch]:KEY=VALUE) or to its
    /// multi-platform index (index:KEY=VALUE); repeatable.
    #[arg(long = "annotation", value_name = "[TYPE:]KEY=VALUE")]
    pub annotations: Vec<String>,
    /// Add a custom host-to-IP mapping HOST:IP (or HOST=IP) to every RUN
    /// step's /etc/hosts; repeatable.
    #[arg(long = "add-host", value_name = "HOST:IP")]
    pub add_hosts: Vec<String>,
    /// A resource limit of every RUN step, TYPE=SOFT[:HARD] (nofile,
    /// nproc, core, stack, …; -1: unlimited); repeatable.
    #[arg(long = "ulimit", value_name = "TYPE=SOFT[:HARD]")]
    pub ulimits: Vec<String>,
    /// Size of /dev/shm in RUN steps (64m by default).
    #[arg(long = "shm-size", value_name = "SIZE", value_parser = crate::exec::cgroup::parse_size)]
    pub shm_size: Option<u64>,
    /// Ignore the cache for these stages' steps (the other stages still
    /// hit it); repeatable.
    #[arg(long = "no-cache-filter", value_name = "STAGE", value_delimiter = ',')]
    pub no_cache_filter: Vec<String>,
    /// An SSH agent RUN --mount=type=ssh can use: `default` (or ID) for
    /// $SSH_AUTH_SOCK, ID=SOCKET, or ID=KEYFILE[,KEYFILE…] (held by a
    /// private ssh-agent for the build); the keys never reach a layer.
    #[arg(long = "ssh", value_name = "default|ID[=SOCKET|KEY[,KEY…]]")]
    pub ssh: Vec<String>,
    /// Base images from registries.
    #[command(flatten)]
    pub bases: BaseArgs,
    /// Push every tag of the built images to its registry after the build.
    #[arg(long)]
    pub push: bool,
    /// Export the build cache: type=registry,ref=REF | type=local,dest=DIR
    /// | type=inline, with mode=min (the output images' steps, the default)
    /// or mode=max (every step of every stage); registry:REF is
    /// type=registry with mode=max. Repeatable.
    #[arg(long = "cache-to", value_name = "TYPE=…")]
    pub cache_to: Vec<String>,
    /// Use a build cache: type=registry,ref=REF (a cache, or an image with
    /// an inline cache) | type=local,src=DIR; registry:REF or REF alone
    /// for a registry. Repeatable. Only the layers the build reads or
    /// outputs are fetched.
    #[arg(long = "cache-from", value_name = "TYPE=…")]
    pub cache_from: Vec<String>,
}

/// How registry requests are retried (podman's and buildah's flags).
#[derive(Debug, Clone, Args)]
pub struct RetryArgs {
    /// Retries of a registry request that failed on the way (connection
    /// error, timeout, 408, 429, 500, 502, 503, 504); 0: none.
    #[arg(
        long,
        env = "IMGBUILD_RETRY",
        value_name = "N",
        default_value_t = crate::registry::DEFAULT_RETRIES
    )]
    pub retry: u32,
    /// Wait this long between retries (500ms, 2s) instead of the default
    /// exponential backoff (from 1s, doubling, with jitter); a registry's
    /// Retry-After still wins.
    #[arg(
        long,
        env = "IMGBUILD_RETRY_DELAY",
        value_name = "DURATION",
        value_parser = humantime::parse_duration
    )]
    pub retry_delay: Option<std::time::Duration>,
}

impl RetryArgs {
    /// The retry policy these flags ask for.
    pub fn policy(&self) -> crate::registry::Retry {
        crate::registry::Retry {
            retries: self.retry,
            delay: self.retry_delay,
        }
    }
}

/// How a build or check gets named base images it lacks.
#[derive(Debug, Args)]
pub struct BaseArgs {
    /// When named base images come from their registry: `missing` from the
    /// store (default), `always` (plain `--pull`), or `never`.
    #[arg(
        long,
        value_enum,
        env = "IMGBUILD_PULL",
        default_value = "missing",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "always",
        value_name = "POLICY"
    )]
    pub pull: PullPolicy,
    /// Talk to this registry (host[:port]) over plain http; repeatable.
    /// Loopback registries always are.
    #[arg(long = "insecure-registry", value_name = "HOST")]
    pub insecure_registry: Vec<String>,
    /// How failed registry requests are retried.
    #[command(flatten)]
    pub retry: RetryArgs,
}

impl BaseArgs {
    /// The registry connection settings, with credentials from the docker
    /// config file `docker_config` (the environment's).
    pub fn registry(&self, docker_config: Option<std::path::PathBuf>) -> crate::registry::Options {
        crate::registry::Options {
            insecure: self.insecure_registry.clone(),
            retry: self.retry.policy(),
            docker_config,
        }
    }

    /// The puller these flags ask for (`None` for `--pull=never`) over
    /// `registry`, reporting docker's pull lines to `events`.
    pub fn puller(
        &self,
        registry: crate::registry::Options,
        events: std::sync::Arc<dyn crate::progress::Sink>,
    ) -> Option<crate::builder::base::Puller> {
        (self.pull != PullPolicy::Never).then(|| {
            crate::builder::base::Puller::new(registry, self.pull == PullPolicy::Always, events)
        })
    }
}

/// `--pull` policies (podman's names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PullPolicy {
    /// Pull only images the store lacks.
    Missing,
    /// Ask the registry for every named base image, once per build.
    Always,
    /// Never contact a registry.
    Never,
}

/// `--network` modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum NetworkArg {
    /// A private network namespace with outbound access through
    /// slirp4netns; the host's interfaces and 127.0.0.1 are out of reach.
    #[value(alias = "bridge")]
    Default,
    /// Share the host's network (explicit opt-in).
    Host,
    /// No network besides loopback.
    None,
}

impl NetworkArg {
    /// As the build takes it.
    pub fn run_network(self) -> crate::builder::RunNetwork {
        match self {
            NetworkArg::Default => crate::builder::RunNetwork::Sandbox,
            NetworkArg::Host => crate::builder::RunNetwork::Host,
            NetworkArg::None => crate::builder::RunNetwork::None,
        }
    }
}

/// docker's resource flags, for each RUN step (and `imgbuild run`).
#[derive(Debug, Args)]
pub struct LimitArgs {
    /// Maximum number of processes (and threads); 0 or -1: unlimited.
    #[arg(long = "pids-limit", value_name = "N", default_value_t = crate::exec::cgroup::DEFAULT_PIDS as i64, allow_negative_numbers = true)]
    pub pids_limit: i64,
    /// Memory limit (512m, 2g; needs the memory cgroup controller).
    #[arg(short = 'm', long = "memory", value_name = "SIZE", value_parser = crate::exec::cgroup::parse_memory)]
    pub memory: Option<u64>,
    /// CPU time in microseconds per --cpu-period (needs the cpu controller).
    #[arg(long = "cpu-quota", value_name = "US", value_parser = clap::value_parser!(u64).range(1000..))]
    pub cpu_quota: Option<u64>,
    /// The CPU period in microseconds (default 100000).
    #[arg(long = "cpu-period", value_name = "US", value_parser = clap::value_parser!(u64).range(1000..=1_000_000))]
    pub cpu_period: Option<u64>,
}

impl LimitArgs {
    /// The limits these flags ask for.
    pub fn limits(&self) -> crate::exec::cgroup::Limits {
        crate::exec::cgroup::Limits {
            pids: u64::try_from(self.pids_limit).ok().filter(|n| *n > 0),
            memory: self.memory,
            cpu_quota: self.cpu_quota,
            cpu_period: self.cpu_period,
        }
    }
}

/// `imgbuild check`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The spec (or directory with a Dockerfile) to validate.
    #[arg(value_name = "SPEC|CONTEXT")]
    pub input: PathBuf,
    /// Dockerfile path (default: CONTEXT/Dockerfile).
    #[arg(short = 'f', long = "file", value_name = "PATH")]
    pub file: Option<PathBuf>,
    /// Check as if building only this stage or image.
    #[arg(long, value_name = "STAGE")]
    pub target: Option<String>,
    /// Set a build argument K=V (K alone: from the environment); repeatable.
    #[arg(long = "build-arg", value_name = "K=V")]
    pub build_args: Vec<String>,
    /// Check as if building for these platforms (as build's --platform).
    #[arg(long = "platform", value_name = "PLATFORMS")]
    pub platforms: Vec<String>,
    /// Base images from registries (their environment matters to a
    /// Dockerfile's expansion).
    #[command(flatten)]
    pub bases: BaseArgs,
}

/// `imgbuild load`.
#[derive(Debug, Args)]
pub struct LoadArgs {
    /// OCI archive, docker archive (`docker save`), or OCI layout directory.
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    /// Also name the loaded image NAME[:TAG] (the archive must hold one
    /// image); repeatable.
    #[arg(short = 't', long = "tag", value_name = "NAME[:TAG]")]
    pub tags: Vec<String>,
}

/// `imgbuild images`.
#[derive(Debug, Args)]
pub struct ImagesArgs {
    /// Also list untagged images, intermediate step images included.
    #[arg(short = 'a', long)]
    pub all: bool,
    /// Only print image IDs.
    #[arg(short = 'q', long)]
    pub quiet: bool,
    /// `json` (one object per line), or a Go template per image as docker
    /// takes it: `{{.Repository}}:{{.Tag}} {{.ID}} {{.Size}}`; fields
    /// Repository Tag ID CreatedAt CreatedSince Size Digest, functions json
    /// and index.
    #[arg(long, value_name = "FORMAT")]
    pub format: Option<String>,
}

/// `imgbuild inspect`.
#[derive(Debug, Args)]
pub struct InspectArgs {
    /// Tag, image ID, or unique ID prefix.
    #[arg(value_name = "IMAGE", required = true)]
    pub images: Vec<String>,
    /// `json` (the default output), or a Go template per image as docker
    /// takes it: `{{.Id}}`, `{{.Config.Env}}`, `{{index .Config.Labels "k"}}`,
    /// `{{json .RootFS.Layers}}`.
    #[arg(short = 'f', long, value_name = "FORMAT")]
    pub format: Option<String>,
    /// Which platform's image of a multi-platform tag (os/arch[/variant];
    /// default: this host's).
    #[arg(long, value_name = "PLATFORM")]
    pub platform: Option<String>,
}

/// `imgbuild history`.
#[derive(Debug, Args)]
pub struct HistoryArgs {
    /// Tag, image ID, or unique ID prefix.
    #[arg(value_name = "IMAGE")]
    pub image: String,
    /// Do not truncate CREATED BY.
    #[arg(long)]
    pub no_trunc: bool,
    /// Which platform's image of a multi-platform tag (os/arch[/variant];
    /// default: this host's).
    #[arg(long, value_name = "PLATFORM")]
    pub platform: Option<String>,
}

/// `imgbuild tag`.
#[derive(Debug, Args)]
pub struct TagArgs {
    /// Tag, image ID, or unique ID prefix.
    #[arg(value_name = "IMAGE")]
    pub image: String,
    /// New name NAME[:TAG].
    #[arg(value_name = "NAME")]
    pub name: String,
}

/// `imgbuild export`.
#[derive(Debug, Args)]
pub struct ExportArgs {
    /// Tag, image ID, or unique ID prefix.
    #[arg(value_name = "IMAGE")]
    pub image: String,
    /// Archive to write.
    #[arg(short = 'o', long = "output", value_name = "FILE", required = true)]
    pub output: PathBuf,
    /// Archive flavour.
    #[arg(long, value_enum, default_value = "oci")]
    pub format: FormatArg,
    /// Of a multi-platform image, only this platform's (os/arch[/variant]),
    /// as a plain archive; default: the whole index.
    #[arg(long, value_name = "PLATFORM")]
    pub platform: Option<String>,
}

/// Subcommand names, for `imgbuild SPEC` → `imgbuild build SPEC`.
pub const SUBCOMMANDS: &[&str] = &[
    "build",
    "check",
    "load",
    "images",
    "inspect",
    "history",
    "tag",
    "export",
    "parse",
    "rmi",
    "prune",
    "store",
    "run",
    "pull",
    "push",
    "login",
    "logout",
    "platforms",
    "help",
];

/// Inserts `build` when the first word is not a subcommand, so `imgbuild
/// specs/app.toml` and `imgbuild -t x specs/app.toml` work.
pub fn with_default_subcommand(args: Vec<std::ffi::OsString>) -> Vec<std::ffi::OsString> {
    let mut i = 1;
    while i < args.len() {
        let a = args[i].to_string_lossy();
        if a == "--store" {
            i += 2;
            continue;
        }
        if a.starts_with("--store=") {
            i += 1;
            continue;
        }
        if SUBCOMMANDS.contains(&a.as_ref())
            || matches!(a.as_ref(), "-h" | "--help" | "-V" | "--version")
        {
            return args;
        }
        let mut out = args;
        out.insert(i, "build".into());
        return out;
    }
    args
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(v: &[&str]) -> Vec<String> {
        with_default_subcommand(v.iter().map(Into::into).collect())
            .into_iter()
            .map(|s| s.to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn default_subcommand() {
        assert_eq!(
            run(&["imgbuild", "a.toml"]),
            ["imgbuild", "build", "a.toml"]
        );
        assert_eq!(
            run(&["imgbuild", "--store", "s", "a.toml"]),
            ["imgbuild", "--store", "s", "build", "a.toml"]
        );
        assert_eq!(
            run(&["imgbuild", "-t", "x", "a.toml"]),
            ["imgbuild", "build", "-t", "x", "a.toml"]
        );
        assert_eq!(run(&["imgbuild", "images"]), ["imgbuild", "images"]);
        assert_eq!(run(&["imgbuild", "--help"]), ["imgbuild", "--help"]);
        assert_eq!(run(&["imgbuild"]), ["imgbuild"]);
    }

    #[test]
    fn clap_definition_is_valid() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
