//! `imgbuild run` as a library function: a command in the RUN sandbox, over
//! an image's layers and a writable layer that is thrown away on exit.
//!
//! [`prepare`] resolves the image (a multi-platform tag's for the platform
//! asked, else the host's), checks that this machine can execute its
//! platform's binaries, extracts its layers as overlay lowers and
//! makes the sandbox's [`exec::Spec`] (argv, environment, user, volumes,
//! terminal) with docker's rules; [`Container::run`] gives it a RUN step's
//! isolation (seccomp, cgroups, the network), runs it and cleans up. Between
//! the two the caller may prepare its terminal. Nothing here prints or reads
//! the environment: warnings go to a callback, and the host's settings come
//! in [`Options`].

use crate::progress::Sink;
use std::path::PathBuf;

use crate::builder::run::{HOSTNAME, hosts_file, overlay_lowers, remove_tree};
use crate::builder::{Isolation, RunError, RunNetwork, SandboxMode};
use crate::digest::Digest;
use crate::exec::{self, Rootfs};
use crate::oci::{ImageConfig, LayerDescriptor};
use crate::store::{Store, StoreLock};

/// A host file or directory bind-mounted into the container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Volume {
    /// The host path, absolute and resolved (it is bound as it is).
    pub source: PathBuf,
    /// The absolute path inside the container.
    pub target: String,
    /// Mounted read-only.
    pub readonly: bool,
}

/// What to run, and how (docker's `run` flags).
#[derive(Debug, Clone)]
pub struct Options {
    /// The image: tag, image ID, or unique ID prefix.
    pub image: String,
    /// Which platform's image of a multi-platform tag (default: the
    /// host's); any other image must be for it.
    pub platform: Option<crate::platform::Platform>,
    /// Replaces the image's entrypoint (empty: none); drops its CMD.
    pub entrypoint: Option<String>,
    /// Replaces the image's CMD when not empty.
    pub command: Vec<String>,
    /// Set over the image's environment, in order.
    pub env: Vec<(String, String)>,
    /// Working directory (default: the image's, else `/`).
    pub workdir: Option<String>,
    /// User (default: the image's).
    pub user: Option<String>,
    /// A pseudo-terminal for the command (`TERM=xterm` unless set).
    pub tty: bool,
    /// Keep stdin attached.
    pub stdin: bool,
    /// Bind mounts.
    pub volumes: Vec<Volume>,
    /// The network.
    pub network: RunNetwork,
    /// Resource limits.
    pub limits: exec::cgroup::Limits,
    /// Where the writable layer lives (memory unless `Disk` or `Copy`).
    pub sandbox: SandboxMode,
    /// Helpers, subordinate ids, the memory upper's size.
    pub host: exec::HostOptions,
}

/// Why a command could not be run.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The image is not in the store (or the prefix is ambiguous, or the
    /// store could not say).
    #[error(transparent)]
    Resolve(crate::store::Error),
    /// Reading the image's records or blobs.
    #[error(transparent)]
    Store(#[from] crate::store::Error),
    /// The image's manifest or config.
    #[error(transparent)]
    Oci(#[from] crate::oci::Error),
    /// Extracting its layers.
    #[error(transparent)]
    Layers(RunError),
    /// The image is for a platform this machine cannot execute (no
    /// emulator registered, or one without the fix-binary flag).
    #[error("{image}: {platform} cannot run on this machine ({host}): {source}")]
    Emulation {
        /// The image as given.
        image: String,
        /// The image's platform.
        platform: String,
        /// This machine's.
        host: String,
        /// What is missing, and what to install or register (boxed: the
        /// error is large, and `Result`s carry this enum).
        #[source]
        source: Box<exec::binfmt::Error>,
    },
    /// Nothing to run.
    #[error("{image}: no command given and the image has no CMD or ENTRYPOINT")]
    NoCommand {
        /// The image as given.
        image: String,
    },
    /// The container's directory in the store.
    #[error(transparent)]
    Dir(std::io::Error),
    /// The isolation (seccomp filter, limits, network) could not be set up.
    #[error("{image}: {source}")]
    Isolation {
        /// The image as given.
        image: String,
        /// Why.
        #[source]
        source: RunError,
    },
    /// The sandbox could not start the command.
    #[error("{image}: {source}")]
    Sandbox {
        /// The image as given.
        image: String,
        /// Why.
        #[source]
        source: exec::Error,
    },
}

/// A container ready to start: its image resolved, its layers extracted.
/// Holds the store's lock (shared) until it is dropped, so a prune waits
/// rather than delete the layers it runs on.
pub struct Container<'s> {
    store: &'s Store,
    spec: exec::Spec,
    opts: Options,
    _lock: StoreLock,
}

/// The config and layers (bottom first) of image `id`, which the user
/// called `image`.
fn layers(
    store: &Store,
    id: &Digest,
    image: &str,
) -> Result<(ImageConfig, Vec<LayerDescriptor>), Error> {
    let rec = store
        .image(id)?
        .ok_or_else(|| crate::store::Error::NoSuchImage(image.to_string()))?;
    let image = crate::oci::Image::from_manifest(store, &rec.manifest)?;
    Ok((image.config, image.layers))
}

/// Resolves `opts.image` in `store` and makes its container; `warn` hears
/// of layer entries skipped on extraction.
///
/// # Errors
/// An image that is not in the store or cannot be read, and an image with
/// nothing to run.
pub fn prepare<'s>(
    store: &'s Store,
    opts: Options,
    events: &dyn Sink,
) -> Result<Container<'s>, Error> {
    let lock = store.lock_shared()?;
    let id = store
        .resolve_for(&opts.image, opts.platform.as_ref())
        .map_err(Error::Resolve)?;
    let (cfg, layers) = layers(store, &id, &opts.image)?;
    // Before any extraction: the kernel must run the image's binaries,
    // natively or through a registered emulator (as a build's RUN).
    if let Some(platform) = store.image_platform(&id)? {
        let host = crate::platform::host();
        if let Err(source) = exec::binfmt::check(&platform, &host, &opts.host.binfmt_misc) {
            return Err(Error::Emulation {
                image: opts.image.clone(),
                platform: platform.to_string(),
                host: host.to_string(),
                source: Box::new(source),
            });
        }
    }
    let xattr = exec::opaque_xattr();
    let lowers = overlay_lowers(store, &layers, xattr, events).map_err(Error::Layers)?;

    let c = cfg.config();
    let entrypoint: Vec<String> = match &opts.entrypoint {
        Some(e) if e.is_empty() => Vec::new(),
        Some(e) => vec![e.clone()],
        None => c.entrypoint().clone().unwrap_or_default(),
    };
    // docker: arguments replace CMD; a new entrypoint drops the image's CMD.
    let cmd: Vec<String> = if !opts.command.is_empty() {
        opts.command.clone()
    } else if opts.entrypoint.is_some() {
        Vec::new()
    } else {
        c.cmd().clone().unwrap_or_default()
    };
    let argv: Vec<String> = entrypoint.into_iter().chain(cmd).collect();
    if argv.is_empty() {
        return Err(Error::NoCommand {
            image: opts.image.clone(),
        });
    }
    let mut env: Vec<(String, String)> = c
        .env()
        .clone()
        .unwrap_or_default()
        .iter()
        .map(|kv| match kv.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => (kv.clone(), String::new()),
        })
        .collect();
    for (k, v) in &opts.env {
        env.retain(|(ek, _)| ek != k);
        env.push((k.clone(), v.clone()));
    }
    // docker's default for a terminal.
    if opts.tty && !env.iter().any(|(k, _)| k == "TERM") {
        env.push(("TERM".into(), "xterm".into()));
    }
    let mounts = opts
        .volumes
        .iter()
        .map(|v| exec::Mount {
            target: v.target.clone(),
            kind: exec::MountKind::Bind {
                source: v.source.clone(),
                readonly: v.readonly,
            },
        })
        .collect();
    let spec = exec::Spec {
        // The writable layer in memory goes with the sandbox, however it ends.
        upper: opts.sandbox.upper(&opts.host),
        capture: false,
        layer: None,
        rootfs: Rootfs::Overlay {
            lowers,
            opaque_xattr: xattr.to_string(),
        },
        argv,
        env,
        env_files: Vec::new(),
        pass_fds: Vec::new(),
        cwd: opts
            .workdir
            .clone()
            .or_else(|| c.working_dir().clone())
            .unwrap_or_else(|| "/".into()),
        user: opts
            .user
            .clone()
            .or_else(|| c.user().clone())
            .unwrap_or_default(),
        // Set by the isolation below.
        network: exec::NetworkMode::Host,
        hostname: HOSTNAME.into(),
        mounts,
        hosts: hosts_file(),
        resolv_conf: fs_err::read_to_string("/etc/resolv.conf").unwrap_or_default(),
        rootless: exec::rootless_mapping(&opts.host),
        cgroups: Vec::new(),
        seccomp: None,
        nproc: None,
        ulimits: Vec::new(),
        shm_size: None,
        nodev: false,
        tty: opts.tty,
    };
    Ok(Container {
        store,
        spec,
        opts,
        _lock: lock,
    })
}

impl Container<'_> {
    /// Runs the command to its end and returns its exit status. `during`
    /// is dropped as soon as the command ends (before the cleanup): the
    /// caller's terminal mode, say. `warn` hears of isolation fallbacks.
    ///
    /// # Errors
    /// The isolation, the container's directory, or a sandbox that could
    /// not start the command.
    pub fn run<G>(mut self, during: G, events: &dyn Sink) -> Result<i32, Error> {
        // The same isolation as a RUN step: seccomp, cgroups, the network.
        let isolation = Isolation::new(
            self.store,
            self.opts.network,
            self.opts.limits,
            self.opts.host.clone(),
        );
        let cgroup = isolation
            .apply(&mut self.spec, crate::graph::Network::Host, events)
            .map_err(|source| Error::Isolation {
                image: self.opts.image.clone(),
                source,
            })?;
        let dir = self.store.tmp_path("container");
        fs_err::create_dir_all(&dir).map_err(Error::Dir)?;
        let result = exec::run(
            &dir,
            &self.spec,
            exec::Output::Inherit {
                stdin: self.opts.stdin,
            },
        );
        drop(during);
        // The writable layer goes with the container.
        remove_tree(&dir);
        drop(cgroup);
        drop(isolation);
        result.map(|o| o.code).map_err(|source| Error::Sandbox {
            image: self.opts.image,
            source,
        })
    }
}
