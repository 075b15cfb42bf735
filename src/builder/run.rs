//! RUN steps: the command's argv, environment, user and mounts with docker's
//! semantics, the layer snapshots under it, and its changes as a layer.

use crate::progress::{self, Sink};
use std::path::{Path, PathBuf};

use super::config;
use super::error::{RunError, error_chain};
use crate::exec::{self, MountKind, Rootfs};
use crate::graph::{Command, Mount, Network, RunStep};
use crate::oci::{ImageConfig, LayerDescriptor};
use crate::store::Store;

/// How RUN gets its root filesystem. The build starts with the mode it is
/// given and moves down this list, for good, when the kernel refuses one
/// (see [`SandboxMode::fallback`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub enum SandboxMode {
    /// Overlay with its upper directory on a tmpfs private to the step.
    #[default]
    Memory,
    /// Overlay with its upper directory in the store (also the retry of a
    /// step that filled the tmpfs).
    Disk,
    /// A private copy of the filesystem, compared afterwards (where overlay
    /// cannot be mounted).
    Copy,
}

impl SandboxMode {
    /// The next mode to try when this one cannot be set up.
    pub fn fallback(self) -> Option<SandboxMode> {
        match self {
            SandboxMode::Memory => Some(SandboxMode::Disk),
            SandboxMode::Disk => Some(SandboxMode::Copy),
            SandboxMode::Copy => None,
        }
    }

    /// Where this mode keeps the overlay upper: a memory upper of `host`'s
    /// size ([`exec::HostOptions::memory_upper`]), else on disk.
    pub fn upper(self, host: &exec::HostOptions) -> exec::Upper {
        match self {
            SandboxMode::Memory => exec::Upper::Memory {
                size: host.memory_upper.clone(),
            },
            SandboxMode::Disk | SandboxMode::Copy => exec::Upper::Disk,
        }
    }
}

/// The network RUN steps get unless they ask for none (`--network`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RunNetwork {
    /// A private network namespace per build with outbound access through
    /// slirp4netns (the host's network, with a warning, where slirp4netns
    /// is not installed).
    #[default]
    Sandbox,
    /// The host's network (an explicit opt-in).
    Host,
    /// Loopback only.
    None,
}

/// What the sandboxes of one build (or one `imgbuild run`) share: the
/// compiled seccomp filter, the network namespace, the cgroup hierarchies,
/// and the warnings already given. Made lazily by the first RUN that needs
/// each; everything goes when this is dropped.
pub struct Isolation {
    store: PathBuf,
    network: RunNetwork,
    limits: exec::cgroup::Limits,
    host: exec::HostOptions,
    filter: std::sync::Mutex<Option<PathBuf>>,
    holders: std::sync::Mutex<Vec<(bool, exec::network::Holder)>>,
    cgroups: std::sync::OnceLock<exec::cgroup::Cgroups>,
    warned: std::sync::Mutex<std::collections::HashSet<&'static str>>,
}

impl Isolation {
    /// For the sandboxes of one build in `store`, on a host described by
    /// `host` (helpers, subordinate ids, the memory upper's size).
    pub fn new(
        store: &Store,
        network: RunNetwork,
        limits: exec::cgroup::Limits,
        host: exec::HostOptions,
    ) -> Isolation {
        Isolation {
            store: store.root().to_path_buf(),
            network,
            limits,
            host,
            filter: std::sync::Mutex::new(None),
            holders: std::sync::Mutex::new(Vec::new()),
            cgroups: std::sync::OnceLock::new(),
            warned: std::sync::Mutex::new(std::collections::HashSet::new()),
        }
    }

    /// What the sandboxes take from the host.
    pub fn host(&self) -> &exec::HostOptions {
        &self.host
    }

    fn warn_once(&self, key: &'static str, events: &dyn Sink, message: impl FnOnce() -> String) {
        let mut w = self.warned.lock().unwrap_or_else(|p| p.into_inner());
        if w.insert(key) {
            progress::warn(events, message());
        }
    }

    /// Fills in `spec`'s seccomp filter, cgroups (or their fallbacks) and
    /// network for a step whose own network is `step`. The returned cgroups
    /// must outlive the sandbox (drop them after its [`exec::Held`]).
    ///
    /// # Errors
    /// The filter, a requested limit or the network that cannot be set up.
    pub fn apply(
        &self,
        spec: &mut exec::Spec,
        step: Network,
        events: &dyn Sink,
    ) -> Result<exec::cgroup::Step, RunError> {
        spec.seccomp = Some(self.filter()?);

        let setup = self
            .cgroups
            .get_or_init(exec::cgroup::Cgroups::probe)
            .create(&self.limits)
            .map_err(RunError::Cgroup)?;
        if let Some(why) = &setup.fallback {
            self.warn_once("cgroup", events, || {
                format!(
                    "RUN steps get no cgroup here ({why}): {}",
                    match (setup.nproc, setup.nodev) {
                        (Some(n), true) => format!(
                            "their process limit is RLIMIT_NPROC={n}, and device nodes they create cannot be opened (nodev)"
                        ),
                        (Some(n), false) => format!("their process limit is RLIMIT_NPROC={n}"),
                        _ => "device nodes they create cannot be opened (nodev)".into(),
                    }
                )
            });
        }
        spec.cgroups = setup.step.dirs.clone();
        spec.nproc = setup.nproc;
        spec.nodev = setup.nodev;

        spec.network = match (step, self.network) {
            (Network::None, _) | (_, RunNetwork::None) => exec::NetworkMode::None,
            (_, RunNetwork::Host) => exec::NetworkMode::Host,
            (_, RunNetwork::Sandbox) => match exec::network::slirp4netns(&self.host) {
                None => {
                    self.warn_once("slirp", events, || {
                        format!(
                            "slirp4netns is not installed (package `{}`): RUN steps use the host's network",
                            exec::network::SLIRP_PACKAGE
                        )
                    });
                    exec::NetworkMode::Host
                }
                Some(slirp) => {
                    let ranged = spec.rootless.is_some_and(|m| m.sub.is_some());
                    let mut holders = self.holders.lock().unwrap_or_else(|p| p.into_inner());
                    let i = match holders.iter().position(|(r, _)| *r == ranged) {
                        Some(i) => i,
                        None => {
                            let h = exec::network::Holder::start(&slirp, spec.rootless)
                                .map_err(RunError::Network)?;
                            holders.push((ranged, h));
                            holders.len() - 1
                        }
                    };
                    let h = &holders[i].1;
                    if let Some(m) = spec.rootless.as_mut()
                        && !h.ranged
                    {
                        // The holder's user namespace maps what it could.
                        m.sub = None;
                    }
                    spec.resolv_conf = exec::network::resolv_conf(&spec.resolv_conf);
                    exec::NetworkMode::Join {
                        holder: h.pid,
                        userns: h.userns,
                    }
                }
            },
        };
        Ok(setup.step)
    }
}

impl Isolation {
    /// The compiled seccomp program: `seccomp/<key>` in the store (see
    /// [`exec::seccomp::cache_key`]), compiled when missing.
    fn filter(&self) -> Result<PathBuf, RunError> {
        let mut f = self.filter.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(p) = &*f {
            return Ok(p.clone());
        }
        let host = exec::seccomp::Host::this();
        let profile = exec::seccomp::DOCKER_DEFAULT;
        let dir = self.store.join("seccomp");
        let path = dir.join(&exec::seccomp::cache_key(profile, &host)[..32]);
        if !fs_err::metadata(&path).is_ok_and(|m| m.len() > 0) {
            #[allow(clippy::disallowed_methods)] // the error names the path already
            std::fs::create_dir_all(&dir).map_err(|e| io(&dir, e))?;
            // Written beside its name and renamed: a reader never sees half.
            let tmp = dir.join(format!(".tmp-{}", std::process::id()));
            let _ = fs_err::remove_file(&tmp);
            #[allow(clippy::disallowed_methods)] // the error names the path already
            let made = exec::seccomp::compile(profile, &host, &tmp)
                .map_err(RunError::Seccomp)
                .and_then(|()| std::fs::rename(&tmp, &path).map_err(|e| io(&path, e)));
            if let Err(e) = made {
                let _ = fs_err::remove_file(&tmp);
                return Err(e);
            }
        }
        *f = Some(path.clone());
        Ok(path)
    }
}

/// A RUN step's changes.
pub(super) enum Captured {
    /// Layer entries whose files stay readable until the value is dropped (a
    /// memory upper lives as long as its sandbox).
    Entries {
        entries: Vec<crate::layer::Entry>,
        /// The sandbox holding a memory upper.
        held: Option<exec::Held>,
        /// Its cgroups: drop them after `held` (stage 1 is in them).
        cgroup: exec::cgroup::Step,
    },
    /// The layer, written by a rootless sandbox with subordinate ids (only
    /// it can read every file) to `path` in the step's directory.
    Layer {
        path: PathBuf,
        digests: crate::layer::LayerDigests,
    },
}

/// Everything a RUN needs from the build besides the step itself.
/// What `--add-host`, `--ulimit` and `--shm-size` ask of every RUN step.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunSettings {
    /// `--add-host NAME:IP`: lines added to `/etc/hosts`, in order.
    pub add_hosts: Vec<(String, std::net::IpAddr)>,
    /// `--ulimit`.
    pub ulimits: Vec<exec::Ulimit>,
    /// `--shm-size`, in bytes.
    pub shm_size: Option<u64>,
}

impl RunSettings {
    /// What a RUN's cache key hears of these (as BuildKit's `ExecOp`
    /// carries its extra hosts, ulimits and shm size): nothing when none
    /// is given, so keys stay what they were.
    pub fn key_inputs(&self) -> Vec<(String, crate::digest::Digest)> {
        let mut out = Vec::new();
        if !self.add_hosts.is_empty() {
            let text: String = self
                .add_hosts
                .iter()
                .map(|(h, ip)| format!("{h}={ip}\n"))
                .collect();
            out.push((
                "add-hosts".into(),
                crate::digest::Digest::of(text.as_bytes()),
            ));
        }
        if !self.ulimits.is_empty() {
            let text: String = self.ulimits.iter().map(|u| format!("{u}\n")).collect();
            out.push(("ulimits".into(), crate::digest::Digest::of(text.as_bytes())));
        }
        if let Some(n) = self.shm_size {
            out.push((
                "shm-size".into(),
                crate::digest::Digest::of(n.to_string().as_bytes()),
            ));
        }
        out
    }

    /// `/etc/hosts` with the `--add-host` lines after the usual ones.
    pub fn hosts_file(&self) -> String {
        let mut s = hosts_file();
        for (h, ip) in &self.add_hosts {
            s.push_str(&format!("{ip}\t{h}\n"));
        }
        s
    }
}

pub(super) struct RunInputs<'a> {
    /// `--add-host`, `--ulimit`, `--shm-size`.
    pub settings: &'a RunSettings,
    pub store: &'a Store,
    pub config: &'a ImageConfig,
    pub layers: &'a [LayerDescriptor],
    pub epoch: Option<u64>,
    pub context: &'a Path,
    pub secrets: &'a std::collections::HashMap<String, super::Secret>,
    /// The build's SSH agents (`--ssh`).
    pub ssh: &'a super::ssh::Agents,
    /// Root filesystems of the stages a `--mount=from=` names.
    pub stage_roots: &'a dyn Fn(Option<crate::graph::StageId>) -> Option<Result<PathBuf, RunError>>,
    pub mode: SandboxMode,
    /// Compression of the layer, when the sandbox writes it.
    pub compression: crate::layer::Compression,
    /// Hears of layer entries skipped on extraction, and of isolation
    /// fallbacks.
    pub events: &'a dyn Sink,
    /// The build's shared sandbox setup.
    pub isolation: &'a Isolation,
}

/// The host name inside every sandbox: fixed, so that a command printing it
/// gives a reproducible layer.
pub const HOSTNAME: &str = "imgbuild";

/// The overlay lower directories for an image made of `layers` (bottom
/// first), topmost first as overlay wants them.
///
/// A layer that appears twice (two `RUN true`s both leave the same empty
/// diff) is kept only at its topmost place: overlay refuses a directory named
/// twice, and applying a layer again above others hides its lower copy.
///
/// # Errors
/// A layer that cannot be read or extracted.
pub fn overlay_lowers(
    store: &Store,
    layers: &[LayerDescriptor],
    xattr: &'static str,
    events: &dyn Sink,
) -> Result<Vec<PathBuf>, RunError> {
    let mut seen = std::collections::HashSet::new();
    let mut lowers = Vec::new();
    for l in layers.iter().rev() {
        if seen.insert(l.diff_id) {
            lowers.push(layer_dir(store, l, xattr, events)?);
        }
    }
    Ok(lowers)
}

/// The per-layer directory of `layer` in overlay format, extracted once
/// (and verified against its diff_id) into the store; see
/// [`snapshot::layer_dir`](super::snapshot::layer_dir).
///
/// # Errors
/// A layer that cannot be read, verified or extracted.
fn layer_dir(
    store: &Store,
    layer: &LayerDescriptor,
    xattr: &'static str,
    events: &dyn Sink,
) -> Result<PathBuf, RunError> {
    super::snapshot::layer_dir(store, layer, xattr, events).map_err(|e| RunError::Snapshot {
        what: error_chain(&e),
    })
}

/// Removes a sandbox or snapshot directory, including overlay's work
/// directory (mode 000) and read-only directories a command left behind,
/// never through a symlink and at any depth (`confine::remove_all`).
/// Best effort: what cannot be removed stays for `prune`.
pub fn remove_tree(p: &Path) {
    let _ = crate::confine::remove_all(p);
}

/// The command line docker would run: exec form as is, shell form under the
/// image's SHELL, heredocs as BuildKit treats them. `scripts` receives
/// `(name, content)` of a heredoc to run as a file at `/dev/pipes/NAME`.
pub fn argv(cfg: &ImageConfig, r: &RunStep, scripts: &mut Vec<(String, String)>) -> Vec<String> {
    let shell = config::shell_of(cfg);
    let mut cmd = match &r.command {
        Command::Exec(a) => return a.clone(),
        Command::Shell(s) => s.clone(),
    };
    if let Some(first) = r.heredocs.first() {
        let only_heredoc = r.heredocs.len() == 1 && is_heredoc_only(&cmd, &first.name);
        if only_heredoc && first.content.starts_with("#!") {
            // BuildKit: a script with a shebang runs as a file.
            scripts.push((first.name.clone(), first.content.clone()));
            return vec![format!("/dev/pipes/{}", first.name)];
        } else if only_heredoc {
            cmd = first.content.clone();
        } else {
            // The shell handles the heredocs itself.
            for h in &r.heredocs {
                cmd.push('\n');
                cmd.push_str(&h.content);
                cmd.push_str(&h.name);
            }
        }
    }
    let mut v = shell;
    v.push(cmd);
    v
}

fn is_heredoc_only(cmd: &str, name: &str) -> bool {
    let c = cmd.trim();
    let Some(rest) = c.strip_prefix("<<") else {
        return false;
    };
    let rest = rest.trim_start_matches('-');
    let rest = rest.trim_matches(|ch| ch == '"' || ch == '\'');
    rest == name
}

/// The build-time environment: the image's ENV, plus the declared build
/// args the image does not set (ENV wins over an ARG declared before it, an
/// ARG declared after an ENV wins over it: BuildKit's order).
pub fn environment(cfg: &ImageConfig, r: &RunStep) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = cfg
        .config()
        .env()
        .clone()
        .unwrap_or_default()
        .iter()
        .map(|kv| match kv.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => (kv.clone(), String::new()),
        })
        .collect();
    for (k, v) in &r.env {
        match env.iter_mut().find(|(ek, _)| ek == k) {
            None => env.push((k.clone(), v.clone())),
            Some((_, ev)) if r.env_wins.contains(k) => v.clone_into(ev),
            Some(_) => {}
        }
    }
    // BuildKit's ExecOp: SSH_AUTH_SOCK names the first ssh mount's socket,
    // unless the environment already sets it.
    let first_ssh = r.mounts.iter().find_map(|m| match m {
        Mount::Ssh { target, .. } => Some(target),
        _ => None,
    });
    if let Some(t) = first_ssh
        && !env.iter().any(|(k, _)| k == "SSH_AUTH_SOCK")
    {
        env.push(("SSH_AUTH_SOCK".into(), t.clone()));
    }
    env
}

/// `/etc/hosts` inside every sandbox.
pub fn hosts_file() -> String {
    format!(
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\t{HOSTNAME}\n"
    )
}

/// Runs one RUN step and returns the entries of its layer, read from `dir`
/// or the sandbox's memory (the caller removes `dir` once the layer is
/// written). `on_line` receives the command's output.
pub(super) fn run_step(
    r: &RunStep,
    inp: &RunInputs<'_>,
    dir: &Path,
    on_line: &mut dyn FnMut(&str),
) -> Result<Captured, RunError> {
    let mut scripts = Vec::new();
    let argv = argv(inp.config, r, &mut scripts);
    let cfg = inp.config.config();
    let cwd = r
        .workdir
        .clone()
        .or_else(|| cfg.working_dir().clone())
        .unwrap_or_else(|| "/".into());
    let user = r
        .user
        .clone()
        .or_else(|| cfg.user().clone())
        .unwrap_or_default();
    let mut mounts = Vec::new();
    let mount_dir = dir.join("mounts");
    for (i, (name, content)) in scripts.iter().enumerate() {
        let path = mount_dir.join(format!("script{i}"));
        write_file(&path, content, 0o755)?;
        mounts.push(exec::Mount {
            target: format!("/dev/pipes/{name}"),
            kind: MountKind::Bind {
                source: path,
                readonly: true,
            },
        });
    }
    // What the mounts need while the command runs: secrets held in
    // memory, agent proxies.
    let mut live = Live::default();
    for m in &r.mounts {
        if let Some(em) = mount_for(m, inp, &cwd, &mount_dir, &mut live)? {
            mounts.push(em);
        }
    }
    let xattr = exec::opaque_xattr();
    let overlay = inp.mode != SandboxMode::Copy;
    let mut lowers = Vec::new();
    let copy_root = dir.join("root");
    let mut before = None;
    if overlay {
        lowers = overlay_lowers(inp.store, inp.layers, xattr, inp.events)?;
    } else {
        #[allow(clippy::disallowed_methods)] // the error names the path already
        std::fs::create_dir_all(&copy_root).map_err(|e| io(&copy_root, e))?;
        for l in inp.layers {
            let report = super::snapshot::extract_verified(inp.store, l, &copy_root, None)
                .map_err(|e| RunError::Snapshot {
                    what: error_chain(&e),
                })?;
            for skipped in report.skipped {
                progress::warn(inp.events, format!("layer {}: {skipped}", l.digest.short()));
            }
        }
    }
    let mut spec = exec::Spec {
        upper: inp.mode.upper(inp.isolation.host()),
        capture: true,
        rootfs: if overlay {
            Rootfs::Overlay {
                lowers: lowers.clone(),
                opaque_xattr: xattr.to_string(),
            }
        } else {
            Rootfs::Dir(copy_root.clone())
        },
        argv,
        env: environment(inp.config, r),
        env_files: std::mem::take(&mut live.env_files),
        pass_fds: live
            .memfds
            .iter()
            .map(std::os::fd::AsRawFd::as_raw_fd)
            .collect(),
        cwd,
        user,
        // Set by the isolation below.
        network: exec::NetworkMode::Host,
        hostname: HOSTNAME.into(),
        mounts,
        hosts: inp.settings.hosts_file(),
        resolv_conf: fs_err::read_to_string("/etc/resolv.conf").unwrap_or_default(),
        // Subordinate ids only where the sandbox can write the layer itself:
        // other users' files are unreadable to us.
        rootless: exec::rootless_mapping(inp.isolation.host()).map(|m| exec::IdMapping {
            sub: m.sub.filter(|_| overlay),
            ..m
        }),
        cgroups: Vec::new(),
        seccomp: None,
        nproc: None,
        ulimits: inp.settings.ulimits.clone(),
        shm_size: inp.settings.shm_size,
        nodev: false,
        tty: false,
        layer: overlay.then(|| exec::LayerRequest {
            path: dir.join("layer"),
            compression: inp.compression.name().to_string(),
            epoch: inp.epoch,
        }),
    };
    let cgroup = inp.isolation.apply(&mut spec, r.network, inp.events)?;
    let mut created = Vec::new();
    if !overlay {
        // Mount points exist before the "before" picture, so they are no change.
        created = exec::prepare_mountpoints(&copy_root, &spec).map_err(RunError::Sandbox)?;
        before = Some(exec::diff::record(&copy_root).map_err(RunError::Diff)?);
    }
    let outcome = exec::run(dir, &spec, exec::Output::Lines(on_line)).map_err(RunError::Sandbox);
    // The command is over (its PID namespace with it): the proxies close,
    // the in-memory secrets go.
    drop(live);
    let outcome = outcome?;
    if outcome.code != 0 {
        if let (Some(held), Some(upper)) = (&outcome.held, &outcome.upper)
            && held.upper_full(upper)
        {
            return Err(RunError::MemoryFull { code: outcome.code });
        }
        return Err(RunError::Failed {
            code: outcome.code,
            tail: outcome.tail,
        });
    }
    let opts = exec::diff::Options {
        epoch: inp.epoch,
        rootless: spec.rootless.map(|m| (m.uid, m.gid)),
    };
    if let Some(digests) = outcome.layer {
        return Ok(Captured::Layer {
            path: dir.join("layer"),
            digests,
        });
    }
    let entries = match (before, &outcome.upper) {
        (None, Some(upper)) => {
            exec::diff::remove_mountpoints(upper, &outcome.created, &lowers);
            exec::diff::capture(upper, &opts)
        }
        (None, None) => Ok(Vec::new()),
        (Some(before), _) => exec::diff::compare(&copy_root, &before, &opts).map(|mut v| {
            v.retain(|e| !created.iter().any(|c| e.path == *c.as_str()));
            v
        }),
    }
    .map_err(RunError::Diff)?;
    Ok(Captured::Entries {
        entries,
        held: outcome.held,
        cgroup,
    })
}

fn io(p: &Path, e: std::io::Error) -> RunError {
    RunError::Io {
        path: p.to_path_buf(),
        source: e,
    }
}

#[allow(clippy::disallowed_methods)] // the error names the path already
fn write_file(path: &Path, content: &str, mode: u32) -> Result<(), RunError> {
    use std::os::unix::fs::PermissionsExt;
    if let Some(p) = path.parent() {
        std::fs::create_dir_all(p).map_err(|e| io(p, e))?;
    }
    std::fs::write(path, content).map_err(|e| io(path, e))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(|e| io(path, e))
}

/// What a RUN's mounts hold while its command runs (dropped after it).
#[derive(Default)]
struct Live {
    /// Secrets from the caller's environment, as sealed memfds.
    memfds: Vec<std::os::fd::OwnedFd>,
    /// One per ssh mount.
    proxies: Vec<super::ssh::Proxy>,
    /// `env=` secrets: variable and the file stage 2 reads it from.
    env_files: Vec<(String, PathBuf)>,
}

/// A secret given as a value, as a path the sandbox can read while `live`
/// holds it. A memfd: the value stays in memory, never on a disk, and goes
/// when the last descriptor does — with the builder and the sandbox,
/// however they end. The
/// kernel will not bind-mount a memfd (it lives on an internal mount), so
/// the sandbox copies it onto a tmpfs of its own mount namespace
/// (`exec::MountKind::Copied`), which vanishes with the sandbox.
fn memfd_path(value: &[u8], live: &mut Live) -> Result<PathBuf, RunError> {
    use rustix::fs::{MemfdFlags, SealFlags};
    let at = Path::new("memfd:imgbuild-secret");
    let fd = rustix::fs::memfd_create(
        "imgbuild-secret",
        MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING,
    )
    .map_err(|e| io(at, e.into()))?;
    let mut rest = value;
    while !rest.is_empty() {
        let n = rustix::io::write(&fd, rest).map_err(|e| io(at, e.into()))?;
        rest = &rest[n..];
    }
    rustix::fs::fcntl_add_seals(
        &fd,
        SealFlags::SEAL | SealFlags::SHRINK | SealFlags::GROW | SealFlags::WRITE,
    )
    .map_err(|e| io(at, e.into()))?;
    // The sandbox gets it as descriptor 3, 4, … (`exec::Spec::pass_fds`):
    // in a user namespace, /proc/<builder>/fd is closed to it.
    let path = PathBuf::from(format!("/proc/self/fd/{}", 3 + live.memfds.len()));
    live.memfds.push(fd);
    Ok(path)
}

/// A `--mount` as the sandbox mounts it (`None`: an optional secret or
/// agent that was not given, or a secret that is only a variable). What
/// the mount needs while the command runs goes into `live`; sockets are
/// made in `mount_dir`.
fn mount_for(
    m: &Mount,
    inp: &RunInputs<'_>,
    cwd: &str,
    mount_dir: &Path,
    live: &mut Live,
) -> Result<Option<exec::Mount>, RunError> {
    let abs = |t: &str| {
        if t.starts_with('/') {
            t.to_string()
        } else {
            format!("{}/{t}", cwd.trim_end_matches('/'))
        }
    };
    Ok(Some(match m {
        Mount::Cache { target, id } => {
            // Kept in the store, never in a layer; shared by every build
            // using the same id.
            let dir = inp
                .store
                .root()
                .join("cache-mounts")
                .join(crate::digest::Digest::of(id.as_bytes()).hex());
            #[allow(clippy::disallowed_methods)] // the error names the path already
            std::fs::create_dir_all(&dir).map_err(|e| io(&dir, e))?;
            exec::Mount {
                target: abs(target),
                kind: MountKind::Bind {
                    source: dir,
                    readonly: false,
                },
            }
        }
        Mount::Tmpfs { target } => exec::Mount {
            target: abs(target),
            kind: MountKind::Tmpfs,
        },
        Mount::Bind {
            target,
            source,
            from,
            stage,
            rw,
        } => {
            let root = match from {
                None => inp.context.to_path_buf(),
                Some(name) => match (inp.stage_roots)(*stage) {
                    Some(r) => r?,
                    None => {
                        return Err(RunError::Mount {
                            what: format!("--mount from=`{name}`: no such stage"),
                        });
                    }
                },
            };
            // Resolved inside its root by the sandbox itself, on a
            // descriptor: checked here only for a clear error up front.
            let path = PathBuf::from(source.trim_start_matches('/'));
            crate::confine::Root::open(&root)
                .map_err(|e| RunError::Mount {
                    what: format!("--mount source `{source}`: {e}"),
                })?
                .stat(&path)
                .map_err(|e| RunError::Mount {
                    what: format!("--mount source `{source}`: {e}"),
                })?;
            exec::Mount {
                target: abs(target),
                kind: MountKind::Confined {
                    root,
                    path,
                    scratch: *rw,
                },
            }
        }
        Mount::Secret {
            id,
            target,
            required,
            env,
        } => {
            let (source, copied) = match inp.secrets.get(id) {
                Some(super::Secret::File(p)) => (p.clone(), false),
                Some(super::Secret::Value(v)) => (memfd_path(v, live)?, true),
                None if *required => {
                    return Err(RunError::Mount {
                        what: format!(
                            "secret `{id}` is required but was not given (--secret id={id},src=FILE or id={id},env=VAR)"
                        ),
                    });
                }
                None => return Ok(None),
            };
            if let Some(name) = env {
                live.env_files.push((name.clone(), source.clone()));
                if target.is_empty() {
                    return Ok(None);
                }
            }
            exec::Mount {
                target: if target.is_empty() {
                    format!("/run/secrets/{id}")
                } else {
                    abs(target)
                },
                kind: if copied {
                    MountKind::Copied { source }
                } else {
                    MountKind::Bind {
                        source,
                        readonly: true,
                    }
                },
            }
        }
        Mount::Ssh {
            id,
            target,
            required,
            uid,
            gid,
            mode,
        } => {
            let Some(agent) = inp.ssh.socket(id) else {
                if *required {
                    return Err(RunError::Mount {
                        what: format!(
                            "ssh agent `{id}` is required but was not given (--ssh {id}=SOCKET|KEY)"
                        ),
                    });
                }
                return Ok(None);
            };
            #[allow(clippy::disallowed_methods)] // the error names the path already
            std::fs::create_dir_all(mount_dir).map_err(|e| io(mount_dir, e))?;
            let path = mount_dir.join(format!("ssh{}.sock", live.proxies.len()));
            let proxy = super::ssh::Proxy::start(&path, agent).map_err(|e| io(&path, e))?;
            live.proxies.push(proxy);
            exec::Mount {
                target: abs(target),
                kind: MountKind::Socket {
                    source: path,
                    uid: *uid,
                    gid: *gid,
                    mode: *mode,
                },
            }
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::RunHeredoc;

    fn step(cmd: Command, heredocs: Vec<RunHeredoc>) -> RunStep {
        RunStep {
            command: cmd,
            heredocs,
            env: vec![("A".into(), "arg".into()), ("B".into(), "arg".into())],
            env_wins: Vec::new(),
            workdir: None,
            user: None,
            network: Network::Host,
            mounts: Vec::new(),
        }
    }

    fn doc(name: &str, content: &str) -> RunHeredoc {
        RunHeredoc {
            name: name.into(),
            content: content.into(),
            fd: 0,
            expand: true,
        }
    }

    #[test]
    fn argv_follows_docker_and_buildkit() {
        let cfg = ImageConfig::scratch();
        let mut s = Vec::new();
        assert_eq!(
            argv(
                &cfg,
                &step(Command::Shell("echo hi".into()), vec![]),
                &mut s
            ),
            ["/bin/sh", "-c", "echo hi"]
        );
        assert_eq!(
            argv(
                &cfg,
                &step(Command::Exec(vec!["ls".into(), "-l".into()]), vec![]),
                &mut s
            ),
            ["ls", "-l"]
        );
        let h = step(
            Command::Shell("<<EOF".into()),
            vec![doc("EOF", "echo a\necho b\n")],
        );
        assert_eq!(
            argv(&cfg, &h, &mut s),
            ["/bin/sh", "-c", "echo a\necho b\n"]
        );
        let h = step(
            Command::Shell("<<EOF".into()),
            vec![doc("EOF", "#!/bin/busybox sh\necho a\n")],
        );
        assert_eq!(argv(&cfg, &h, &mut s), ["/dev/pipes/EOF"]);
        assert_eq!(
            s,
            [("EOF".to_string(), "#!/bin/busybox sh\necho a\n".to_string())]
        );
        let h = step(
            Command::Shell("cat <<EOF > /x".into()),
            vec![doc("EOF", "hello\n")],
        );
        assert_eq!(
            argv(&cfg, &h, &mut s),
            ["/bin/sh", "-c", "cat <<EOF > /x\nhello\nEOF"]
        );
    }

    #[test]
    fn image_env_wins_over_build_args() {
        let mut cfg = ImageConfig::scratch();
        cfg.edit_config(|c| {
            c.set_env(Some(vec!["A=env".into(), "PATH=/bin".into()]));
        });
        let env = environment(&cfg, &step(Command::Shell("true".into()), vec![]));
        assert_eq!(
            env,
            [
                ("A".to_string(), "env".to_string()),
                ("PATH".into(), "/bin".into()),
                ("B".into(), "arg".into())
            ]
        );
    }
}
