//! The sandbox plan: what each stage does, as a list of [`Op`]s that is a
//! pure function of the [`Spec`] (stage 1) or of the [`Init`] stage 1
//! hands over (stage 2), applied through the [`Syscall`] seam.
//!
//! The seam follows youki's `libcontainer::syscall`: the real
//! implementation (`linux::Linux`) is passed in explicitly by the stages;
//! the unit tests below pass a recording double instead and check the plan
//! without root — masked paths, read-only `/proc/sys`, the capability sets,
//! seccomp loaded after every mount and before exec, descriptors closed.
//! Nothing here picks an implementation by `cfg!(test)`.

use std::path::{Path, PathBuf};

use rustix::mount::MountFlags;
use rustix::thread::{CapabilitySet, CapabilitySets, UnshareFlags};
use serde::{Deserialize, Serialize};

use super::error::{Phase, SetupError};
use super::user::Identity;
use super::{IdMapping, MountKind, NetworkMode, Rootfs, Spec, Upper};

/// Docker's default capability set (moby `oci/caps/defaults.go`): root in a
/// RUN step gets these and no others (no `CAP_SYS_ADMIN`: the step cannot
/// mount or leave its namespaces). `0xa80425fb` in `/proc/self/status`.
pub const DOCKER_CAPABILITIES: CapabilitySet = CapabilitySet::CHOWN
    .union(CapabilitySet::DAC_OVERRIDE)
    .union(CapabilitySet::FSETID)
    .union(CapabilitySet::FOWNER)
    .union(CapabilitySet::MKNOD)
    .union(CapabilitySet::NET_RAW)
    .union(CapabilitySet::SETGID)
    .union(CapabilitySet::SETUID)
    .union(CapabilitySet::SETFCAP)
    .union(CapabilitySet::SETPCAP)
    .union(CapabilitySet::NET_BIND_SERVICE)
    .union(CapabilitySet::SYS_CHROOT)
    .union(CapabilitySet::KILL)
    .union(CapabilitySet::AUDIT_WRITE);

/// runc's default masked paths (`libcontainer/specconv/example.go`, as
/// docker and podman use them): a directory gets an empty read-only tmpfs,
/// a file `/dev/null`.
pub const MASKED_PATHS: &[&str] = &[
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

/// runc's default read-only paths.
pub const READONLY_PATHS: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// The default PATH docker gives a container whose image sets none.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Devices bound from the host into the sandbox's `/dev` (docker's set;
/// binding works in a user namespace, where mknod does not).
pub const DEVICES: &[&str] = &["null", "zero", "full", "random", "urandom", "tty"];

/// What stage 1 hands stage 2, as `DIR/init.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Init {
    /// The command.
    pub argv: Vec<String>,
    /// Its environment.
    pub env: Vec<(String, String)>,
    /// Its working directory.
    pub cwd: String,
    /// The host name.
    pub hostname: String,
    /// Who it runs as.
    pub identity: Identity,
    /// The command's stdin is /dev/null (stage 1's stdin is its control pipe).
    #[serde(default)]
    pub stdin_null: bool,
    /// Run the command on a pseudo-terminal (see [`super::Spec::tty`]).
    #[serde(default)]
    pub tty: bool,
    /// The root, mounted by stage 1 (host path).
    pub merged: PathBuf,
    /// `/sys` is bound from the host instead of a fresh sysfs: a user
    /// namespace may mount sysfs only over a network namespace it owns.
    #[serde(default)]
    pub bind_sys: bool,
    /// The compiled seccomp filter (see `exec::seccomp`).
    #[serde(default)]
    pub seccomp: Option<PathBuf>,
    /// `RLIMIT_NPROC`, where no pids cgroup could be made.
    #[serde(default)]
    pub nproc: Option<u64>,
    /// `--ulimit`s, set after `nproc`.
    #[serde(default)]
    pub ulimits: Vec<super::Ulimit>,
    /// Variables read from host files before `pivot_root` (see
    /// [`super::Spec::env_files`]).
    #[serde(default)]
    pub env_files: Vec<(String, PathBuf)>,
}

/// Where a mount goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A host path (the sandbox's own directories).
    Host(PathBuf),
    /// A path inside the opened root, resolved there (never following a
    /// symlink out of it), created as a directory or a file when missing.
    InRoot {
        /// Relative to the root.
        rel: String,
        /// Create a directory (else a file).
        dir: bool,
    },
}

/// The command stage 2 starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exec {
    /// Program and arguments.
    pub argv: Vec<String>,
    /// Environment, in order.
    pub env: Vec<(String, String)>,
    /// Working directory (inside the root).
    pub cwd: String,
    /// stdin from /dev/null.
    pub stdin_null: bool,
    /// On a new pseudo-terminal, as its session leader.
    pub tty: bool,
}

/// One step of a stage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Close every descriptor above 2 but the `keep` passed ones (stage 1
    /// starts with this: nothing else inherited from whoever started the
    /// builder reaches the sandbox).
    CloseInherited {
        /// Descriptors 3.. the builder passed on purpose.
        keep: u32,
    },
    /// Move this process into a cgroup (its directory).
    JoinCgroup(PathBuf),
    /// A new user namespace with this mapping.
    EnterUserNamespace(IdMapping),
    /// The user namespace of the build's network holder (rootless).
    JoinUserNamespace(i32),
    /// `unshare(2)`.
    Unshare(UnshareFlags),
    /// The network namespace of the build's network holder.
    JoinNetwork(i32),
    /// Bring up `lo` in a new network namespace.
    LoopbackUp,
    /// Make every mount private (nothing propagates to the host).
    MakePrivate,
    /// Create a directory of the sandbox's own.
    HostDir(PathBuf),
    /// Write a file of the sandbox's own.
    HostFile {
        /// Where.
        path: PathBuf,
        /// What.
        content: String,
    },
    /// The overlay root: `data` names the lowers relative to `base`, which
    /// is entered for the mount (options must fit a page).
    Overlay {
        /// The directory entered while mounting.
        base: PathBuf,
        /// Where.
        target: PathBuf,
        /// The mount options.
        data: String,
        /// Mount flags (`MS_NODEV` where no devices cgroup guards devices).
        flags: MountFlags,
    },
    /// Open the root everything `InRoot` resolves in.
    OpenRoot(PathBuf),
    /// Create a path inside the root when missing; `record` adds what was
    /// created to the report (mount points are no change of the command).
    Ensure {
        /// Relative to the root.
        rel: String,
        /// A directory (else a file).
        dir: bool,
        /// Report it.
        record: bool,
    },
    /// `mount(2)` of a filesystem.
    Mount {
        /// The failing phase's name.
        phase: Phase,
        /// Source.
        source: String,
        /// Where.
        target: Target,
        /// Filesystem type.
        fstype: String,
        /// Flags.
        flags: MountFlags,
        /// Options.
        data: String,
    },
    /// A recursive bind mount, optionally read-only.
    Bind {
        /// The failing phase's name.
        phase: Phase,
        /// Host source.
        source: PathBuf,
        /// Where.
        target: Target,
        /// Read-only.
        readonly: bool,
        /// Also `nodev`.
        nodev: bool,
    },
    /// A read-only bind mount of `path` resolved inside `root` (a build
    /// context, a stage's filesystem): resolved on a descriptor when it is
    /// mounted, never by a host path a symlink could redirect.
    BindConfined {
        /// The directory `path` is resolved in.
        root: PathBuf,
        /// The path inside it.
        path: PathBuf,
        /// Where.
        target: Target,
        /// Also `nodev`.
        nodev: bool,
    },
    /// A writable view of `path` resolved inside `root` whose changes are
    /// discarded: an overlay whose lower is that descriptor.
    OverlayConfined {
        /// The directory `path` is resolved in.
        root: PathBuf,
        /// The path inside it.
        path: PathBuf,
        /// Where.
        target: Target,
        /// Mount options after `lowerdir` (upper, work, `userxattr`).
        rest: String,
        /// Flags.
        flags: MountFlags,
    },
    /// A symlink inside the root.
    Symlink {
        /// Relative to the root.
        rel: String,
        /// Its target.
        target: String,
    },
    /// Read the compiled seccomp filter (before `pivot_root` hides it).
    ReadSeccomp(PathBuf),
    /// Copy a host file of at most `max` bytes to a new host file of mode
    /// `mode` (a secret onto the sandbox's own tmpfs).
    CopyFile {
        /// What is read.
        from: PathBuf,
        /// What is written (created, never through a link).
        to: PathBuf,
        /// The most read.
        max: u64,
        /// The new file's mode.
        mode: u32,
    },
    /// Give a host path (a socket of the builder's) an owner and a mode.
    Own {
        /// The path.
        path: PathBuf,
        /// Owner.
        uid: u32,
        /// Group.
        gid: u32,
        /// Permission bits.
        mode: u32,
    },
    /// Read a variable's value from a host file of at most `max` bytes
    /// (before `pivot_root` hides it); the command gets it.
    ReadEnv {
        /// The variable.
        name: String,
        /// The file.
        path: PathBuf,
        /// The most read.
        max: u64,
    },
    /// Pivot into the opened root and detach the host's.
    PivotRoot(PathBuf),
    /// Mask a path (runc's masked paths); missing paths are skipped.
    Mask(String),
    /// Make a path read-only; missing paths are skipped.
    ReadOnly(String),
    /// `sethostname(2)`.
    Hostname(String),
    /// A fresh anonymous session keyring.
    SessionKeyring,
    /// `RLIMIT_NPROC` (the fallback for a pids cgroup).
    Nproc(u64),
    /// A `--ulimit`.
    Rlimit(super::Ulimit),
    /// Reduce the bounding set to these.
    Bounding(CapabilitySet),
    /// `PR_SET_KEEPCAPS`.
    KeepCaps(bool),
    /// Supplementary groups (best effort: a user namespace without
    /// subordinate ids has setgroups denied).
    Groups(Vec<u32>),
    /// Real, effective and saved gid then uid.
    Ids {
        /// User.
        uid: u32,
        /// Group.
        gid: u32,
    },
    /// Effective = permitted (a uid change cleared it), so the filter can be
    /// loaded with `CAP_SYS_ADMIN`.
    RaiseEffective,
    /// Load the seccomp filter read by [`Op::ReadSeccomp`].
    LoadSeccomp,
    /// Set effective, permitted and inheritable.
    Capabilities(CapabilitySets),
    /// Clear the ambient set.
    ClearAmbient,
    /// Mark every descriptor above 2 close-on-exec.
    CloseOnExec,
    /// Start the command.
    Exec(Exec),
}

impl Op {
    fn phase(&self) -> Phase {
        match self {
            Op::CloseInherited { .. } | Op::CloseOnExec => Phase::Descriptors,
            Op::JoinCgroup(_) => Phase::Cgroup,
            Op::EnterUserNamespace(_) | Op::JoinUserNamespace(_) => Phase::UserNamespace,
            Op::Unshare(_) => Phase::Namespaces,
            Op::JoinNetwork(_) | Op::LoopbackUp => Phase::Network,
            Op::MakePrivate => Phase::Propagation,
            Op::HostDir(_) | Op::HostFile { .. } => Phase::State,
            Op::Overlay { .. } => Phase::Overlay,
            Op::OpenRoot(_) | Op::Ensure { .. } | Op::Symlink { .. } => Phase::RootPath,
            Op::Mount { phase, .. } | Op::Bind { phase, .. } => *phase,
            Op::BindConfined { .. } | Op::OverlayConfined { .. } => Phase::Mount,
            Op::ReadSeccomp(_) | Op::LoadSeccomp => Phase::Seccomp,
            Op::CopyFile { .. } | Op::Own { .. } | Op::ReadEnv { .. } => Phase::Mount,
            Op::PivotRoot(_) => Phase::PivotRoot,
            Op::Mask(_) | Op::ReadOnly(_) => Phase::Mask,
            Op::Hostname(_) => Phase::Hostname,
            Op::SessionKeyring => Phase::Keyring,
            Op::Nproc(_) | Op::Rlimit(_) => Phase::Rlimit,
            Op::Bounding(_)
            | Op::KeepCaps(_)
            | Op::RaiseEffective
            | Op::Capabilities(_)
            | Op::ClearAmbient => Phase::Capabilities,
            Op::Groups(_) | Op::Ids { .. } => Phase::Ids,
            Op::Exec(_) => Phase::Exec,
        }
    }

    /// The path or argument for the error message.
    fn detail(&self) -> String {
        let t = |t: &Target| match t {
            Target::Host(p) => p.display().to_string(),
            Target::InRoot { rel, .. } => format!("/{rel}"),
        };
        match self {
            Op::JoinCgroup(p) | Op::HostDir(p) | Op::OpenRoot(p) | Op::ReadSeccomp(p) => {
                p.display().to_string()
            }
            Op::HostFile { path, .. } => path.display().to_string(),
            Op::CopyFile { from, .. } => from.display().to_string(),
            Op::Own { path, uid, gid, .. } => {
                format!("{} (owner {uid}:{gid} of the container)", path.display())
            }
            Op::ReadEnv { name, .. } => format!("${name}"),
            Op::Ensure { rel, .. } | Op::Symlink { rel, .. } => format!("/{rel}"),
            Op::Mount {
                phase: Phase::Mount,
                target,
                ..
            }
            | Op::Bind {
                phase: Phase::Mount | Phase::Hosts,
                target,
                ..
            } => t(target),
            Op::BindConfined { path, target, .. } | Op::OverlayConfined { path, target, .. } => {
                format!("{} (from {})", t(target), path.display())
            }
            Op::Bind {
                phase: Phase::Dev,
                source,
                ..
            } => source.display().to_string(),
            Op::Mask(p) | Op::ReadOnly(p) => p.clone(),
            Op::Ids { uid, gid } => format!("{uid}:{gid}"),
            Op::Rlimit(l) => format!("--ulimit {l}"),
            Op::Exec(e) => e.argv.first().cloned().unwrap_or_default(),
            _ => String::new(),
        }
    }
}

/// The system calls the plan needs: `linux::Linux` makes them, the tests'
/// recorder writes them down.
pub trait Syscall {
    /// `close_range(first, ~0)`, or marking them close-on-exec.
    fn close_range(&mut self, first: u32, cloexec: bool) -> std::io::Result<()>;
    /// Move this process into the cgroup `dir`.
    fn join_cgroup(&mut self, dir: &Path) -> std::io::Result<()>;
    /// A new user namespace with `map`.
    fn enter_user_namespace(&mut self, map: &IdMapping) -> std::io::Result<()>;
    /// `setns` into a namespace of `pid` (`user` or `net`).
    fn setns(&mut self, pid: i32, ns: &str) -> std::io::Result<()>;
    /// `unshare(2)`.
    fn unshare(&mut self, flags: UnshareFlags) -> std::io::Result<()>;
    /// Bring `lo` up.
    fn loopback_up(&mut self) -> std::io::Result<()>;
    /// `mount --make-rprivate /`.
    fn make_private(&mut self) -> std::io::Result<()>;
    /// `mkdir -p`.
    fn mkdir_all(&mut self, path: &Path) -> std::io::Result<()>;
    /// Write a host file.
    fn write_file(&mut self, path: &Path, content: &[u8]) -> std::io::Result<()>;
    /// Mount the overlay from inside `base`.
    fn mount_overlay(
        &mut self,
        base: &Path,
        target: &Path,
        data: &str,
        flags: MountFlags,
    ) -> std::io::Result<()>;
    /// Open the root [`Target::InRoot`] resolves in.
    fn open_root(&mut self, path: &Path) -> std::io::Result<()>;
    /// Create `rel` in the root when missing (and report it if `record`).
    fn ensure(&mut self, rel: &str, dir: bool, record: bool) -> std::io::Result<()>;
    /// `mount(2)`.
    fn mount(
        &mut self,
        source: &str,
        target: &Target,
        fstype: &str,
        flags: MountFlags,
        data: &str,
    ) -> std::io::Result<()>;
    /// A recursive bind mount.
    fn bind(
        &mut self,
        source: &Path,
        target: &Target,
        readonly: bool,
        nodev: bool,
    ) -> std::io::Result<()>;
    /// A read-only bind mount of `path` resolved inside `root`.
    fn bind_confined(
        &mut self,
        root: &Path,
        path: &Path,
        target: &Target,
        nodev: bool,
    ) -> std::io::Result<()>;
    /// An overlay whose lower is `path` resolved inside `root`, with the
    /// options `rest` after `lowerdir`.
    fn overlay_confined(
        &mut self,
        root: &Path,
        path: &Path,
        target: &Target,
        rest: &str,
        flags: MountFlags,
    ) -> std::io::Result<()>;
    /// A symlink in the root.
    fn symlink(&mut self, rel: &str, target: &str) -> std::io::Result<()>;
    /// Read the seccomp program.
    fn read_seccomp(&mut self, path: &Path) -> std::io::Result<()>;
    /// Copy at most `max` bytes of `from` to a new file `to` of `mode`
    /// (more is an error).
    fn copy_file(&mut self, from: &Path, to: &Path, max: u64, mode: u32) -> std::io::Result<()>;
    /// `chown` and `chmod` of a host path.
    fn own(&mut self, path: &Path, uid: u32, gid: u32, mode: u32) -> std::io::Result<()>;
    /// Read the variable `name` from `path` (at most `max` bytes) for the
    /// command.
    fn read_env(&mut self, name: &str, path: &Path, max: u64) -> std::io::Result<()>;
    /// `pivot_root` into `root`, detaching the old root.
    fn pivot_root(&mut self, root: &Path) -> std::io::Result<()>;
    /// Mask `path` (skip a missing one).
    fn mask(&mut self, path: &str) -> std::io::Result<()>;
    /// Make `path` read-only (skip a missing one).
    fn readonly(&mut self, path: &str) -> std::io::Result<()>;
    /// `sethostname(2)`.
    fn sethostname(&mut self, name: &str) -> std::io::Result<()>;
    /// A fresh session keyring.
    fn session_keyring(&mut self) -> std::io::Result<()>;
    /// `RLIMIT_NPROC`.
    fn nproc(&mut self, limit: u64) -> std::io::Result<()>;
    /// `setrlimit(2)` of a `--ulimit`.
    fn rlimit(&mut self, limit: &super::Ulimit) -> std::io::Result<()>;
    /// Reduce the bounding set to `keep`.
    fn bounding(&mut self, keep: CapabilitySet) -> std::io::Result<()>;
    /// `PR_SET_KEEPCAPS`.
    fn keep_caps(&mut self, on: bool) -> std::io::Result<()>;
    /// `setgroups(2)`.
    fn groups(&mut self, groups: &[u32]) -> std::io::Result<()>;
    /// `setresgid` then `setresuid`.
    fn ids(&mut self, uid: u32, gid: u32) -> std::io::Result<()>;
    /// Effective = permitted.
    fn raise_effective(&mut self) -> std::io::Result<()>;
    /// Load the seccomp program read before.
    fn load_seccomp(&mut self) -> std::io::Result<()>;
    /// `capset(2)`.
    fn capabilities(&mut self, sets: CapabilitySets) -> std::io::Result<()>;
    /// Clear the ambient set.
    fn clear_ambient(&mut self) -> std::io::Result<()>;
    /// Start the command; its pid.
    fn exec(&mut self, exec: &Exec) -> std::io::Result<i32>;
}

/// Applies `ops` in order and returns the pid of the command when the last
/// one started it.
///
/// # Errors
/// The first op that failed, with its phase and detail.
pub fn apply(ops: &[Op], sys: &mut dyn Syscall) -> Result<Option<i32>, SetupError> {
    let mut pid = None;
    for op in ops {
        let r = match op {
            Op::CloseInherited { keep } => sys.close_range(3 + keep, false),
            Op::CloseOnExec => sys.close_range(3, true),
            Op::JoinCgroup(d) => sys.join_cgroup(d),
            Op::EnterUserNamespace(m) => sys.enter_user_namespace(m),
            Op::JoinUserNamespace(p) => sys.setns(*p, "user"),
            Op::Unshare(f) => sys.unshare(*f),
            Op::JoinNetwork(p) => sys.setns(*p, "net"),
            Op::LoopbackUp => sys.loopback_up(),
            Op::MakePrivate => sys.make_private(),
            Op::HostDir(p) => sys.mkdir_all(p),
            Op::HostFile { path, content } => sys.write_file(path, content.as_bytes()),
            Op::Overlay {
                base,
                target,
                data,
                flags,
            } => sys.mount_overlay(base, target, data, *flags),
            Op::OpenRoot(p) => sys.open_root(p),
            Op::Ensure { rel, dir, record } => sys.ensure(rel, *dir, *record),
            Op::Mount {
                source,
                target,
                fstype,
                flags,
                data,
                ..
            } => sys.mount(source, target, fstype, *flags, data),
            Op::Bind {
                source,
                target,
                readonly,
                nodev,
                ..
            } => sys.bind(source, target, *readonly, *nodev),
            Op::BindConfined {
                root,
                path,
                target,
                nodev,
            } => sys.bind_confined(root, path, target, *nodev),
            Op::OverlayConfined {
                root,
                path,
                target,
                rest,
                flags,
            } => sys.overlay_confined(root, path, target, rest, *flags),
            Op::Symlink { rel, target } => sys.symlink(rel, target),
            Op::ReadSeccomp(p) => sys.read_seccomp(p),
            Op::CopyFile {
                from,
                to,
                max,
                mode,
            } => sys.copy_file(from, to, *max, *mode),
            Op::Own {
                path,
                uid,
                gid,
                mode,
            } => sys.own(path, *uid, *gid, *mode),
            Op::ReadEnv { name, path, max } => sys.read_env(name, path, *max),
            Op::PivotRoot(p) => sys.pivot_root(p),
            Op::Mask(p) => sys.mask(p),
            Op::ReadOnly(p) => sys.readonly(p),
            Op::Hostname(h) => sys.sethostname(h),
            Op::SessionKeyring => sys.session_keyring(),
            Op::Nproc(n) => sys.nproc(*n),
            Op::Rlimit(l) => sys.rlimit(l),
            Op::Bounding(keep) => sys.bounding(*keep),
            Op::KeepCaps(on) => sys.keep_caps(*on),
            // setgroups is denied in a user namespace mapped without
            // newgidmap; the groups are then whatever the mapping gives.
            Op::Groups(g) => {
                let _ = sys.groups(g);
                Ok(())
            }
            Op::Ids { uid, gid } => sys.ids(*uid, *gid),
            Op::RaiseEffective => sys.raise_effective(),
            Op::LoadSeccomp => sys.load_seccomp(),
            Op::Capabilities(s) => sys.capabilities(*s),
            Op::ClearAmbient => sys.clear_ambient(),
            Op::Exec(e) => sys.exec(e).map(|p| {
                pid = Some(p);
            }),
        };
        r.map_err(|e| SetupError::os(op.phase(), op.detail(), e))?;
    }
    Ok(pid)
}

fn in_root(rel: &str, dir: bool) -> Target {
    Target::InRoot {
        rel: rel.trim_matches('/').to_string(),
        dir,
    }
}

/// Where stage 1 keeps uppers: a tmpfs of its own, or `dir` itself.
pub fn uppers_dir(spec: &Spec, dir: &Path) -> PathBuf {
    match (&spec.upper, &spec.rootfs) {
        (Upper::Memory { .. }, Rootfs::Overlay { .. }) => dir.join("mem"),
        _ => dir.to_path_buf(),
    }
}

/// Paths (relative to the root) every sandbox for `spec` mounts on, with
/// whether each is a directory. Created before the command runs, so they
/// are not its changes.
pub fn mountpoints(spec: &Spec) -> Vec<(String, bool)> {
    let mut v: Vec<(String, bool)> = vec![
        ("proc".into(), true),
        ("sys".into(), true),
        ("dev".into(), true),
        ("etc/hosts".into(), false),
        ("etc/resolv.conf".into(), false),
    ];
    for m in &spec.mounts {
        let rel = m.target.trim_matches('/');
        // Everything under /dev is on the sandbox's own tmpfs.
        if rel == "dev" || rel.starts_with("dev/") {
            continue;
        }
        let dir = match &m.kind {
            MountKind::Bind { source, .. } => source.is_dir(),
            MountKind::Confined { root, path, .. } => confined_is_dir(root, path),
            MountKind::Tmpfs | MountKind::Scratch { .. } => true,
            MountKind::Copied { .. } | MountKind::Socket { .. } => false,
        };
        v.push((rel.to_string(), dir));
    }
    v
}

/// Whether `path` inside `root` is a directory (resolved confined; what a
/// mount point for it should be).
fn confined_is_dir(root: &Path, path: &Path) -> bool {
    crate::confine::Root::open(root)
        .ok()
        .and_then(|r| r.stat(path).ok())
        .is_some_and(|st| {
            rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::Directory
        })
}

/// Stage 1: from a fresh process to a root filesystem with everything
/// mounted, ready for stage 2. `dir` is the sandbox directory (absolute).
///
/// Bind-mount sources that are directories are looked up on the host
/// (`is_dir`) to know what kind of mount point to make.
///
/// # Errors
/// A spec that cannot be mounted (bad characters in overlay options, too
/// many layers for one mount).
pub fn stage1(spec: &Spec, dir: &Path) -> Result<Vec<Op>, SetupError> {
    let mut ops = vec![Op::CloseInherited {
        keep: u32::try_from(spec.pass_fds.len()).unwrap_or(u32::MAX),
    }];
    for c in &spec.cgroups {
        ops.push(Op::JoinCgroup(c.clone()));
    }
    match (&spec.network, spec.rootless) {
        (
            NetworkMode::Join {
                holder,
                userns: true,
            },
            Some(_),
        ) => ops.push(Op::JoinUserNamespace(*holder)),
        (_, Some(map)) => ops.push(Op::EnterUserNamespace(map)),
        (_, None) => {}
    }
    let mut flags =
        UnshareFlags::NEWNS | UnshareFlags::NEWPID | UnshareFlags::NEWIPC | UnshareFlags::NEWUTS;
    if spec.network == NetworkMode::None {
        flags |= UnshareFlags::NEWNET;
    }
    ops.push(Op::Unshare(flags));
    match spec.network {
        NetworkMode::None => ops.push(Op::LoopbackUp),
        NetworkMode::Join { holder, .. } => ops.push(Op::JoinNetwork(holder)),
        NetworkMode::Host => {}
    }
    ops.push(Op::MakePrivate);

    let merged = dir.join("merged");
    ops.push(Op::HostDir(merged.clone()));
    let uppers = uppers_dir(spec, dir);
    if let (Upper::Memory { size }, Rootfs::Overlay { .. }) = (&spec.upper, &spec.rootfs) {
        if size.contains(',') {
            return Err(SetupError::other(
                Phase::UpperTmpfs,
                format!("bad size `{size}`"),
            ));
        }
        ops.push(Op::HostDir(uppers.clone()));
        ops.push(Op::Mount {
            phase: Phase::UpperTmpfs,
            source: "tmpfs".into(),
            target: Target::Host(uppers.clone()),
            fstype: "tmpfs".into(),
            flags: MountFlags::empty(),
            data: format!("mode=700,size={size}"),
        });
    }
    let nodev = if spec.nodev {
        MountFlags::NODEV
    } else {
        MountFlags::empty()
    };
    match &spec.rootfs {
        Rootfs::Overlay {
            lowers,
            opaque_xattr,
        } => {
            let (base, data, mut dirs) = overlay_options(&uppers, lowers, opaque_xattr)?;
            for d in dirs.drain(..) {
                ops.push(Op::HostDir(d));
            }
            ops.push(Op::Overlay {
                base,
                target: merged.clone(),
                data,
                flags: nodev,
            });
        }
        Rootfs::Dir(root) => ops.push(Op::Bind {
            phase: Phase::RootBind,
            source: root.clone(),
            target: Target::Host(merged.clone()),
            readonly: false,
            nodev: spec.nodev,
        }),
    }
    ops.push(Op::OpenRoot(merged));
    for (rel, dir) in mountpoints(spec) {
        ops.push(Op::Ensure {
            rel,
            dir,
            record: true,
        });
    }
    dev(&mut ops, spec.nodev, spec.shm_size);
    for (name, content) in [("hosts", &spec.hosts), ("resolv.conf", &spec.resolv_conf)] {
        let host = dir.join(name);
        ops.push(Op::HostFile {
            path: host.clone(),
            content: content.clone(),
        });
        ops.push(Op::Bind {
            phase: Phase::Hosts,
            source: host,
            target: in_root(&format!("etc/{name}"), false),
            readonly: true,
            nodev: false,
        });
    }
    let copied = dir.join("copied");
    if spec
        .mounts
        .iter()
        .any(|m| matches!(m.kind, MountKind::Copied { .. }))
    {
        // Secrets that exist only in memory: copied onto a tmpfs of this
        // mount namespace, gone with it (never on disk).
        ops.push(Op::HostDir(copied.clone()));
        ops.push(Op::Mount {
            phase: Phase::Mount,
            source: "tmpfs".into(),
            target: Target::Host(copied.clone()),
            fstype: "tmpfs".into(),
            flags: MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC,
            data: format!(
                "mode=700,size={}",
                (spec.mounts.len() as u64 + 1) * super::MAX_COPIED
            ),
        });
    }
    for (i, m) in spec.mounts.iter().enumerate() {
        let rel = m.target.trim_matches('/');
        match &m.kind {
            MountKind::Copied { source } => {
                let file = copied.join(i.to_string());
                ops.push(Op::CopyFile {
                    from: source.clone(),
                    to: file.clone(),
                    max: super::MAX_COPIED,
                    mode: 0o400,
                });
                ops.push(Op::Bind {
                    phase: Phase::Mount,
                    source: file,
                    target: in_root(rel, false),
                    readonly: true,
                    nodev: spec.nodev,
                });
            }
            MountKind::Socket {
                source,
                uid,
                gid,
                mode,
            } => {
                ops.push(Op::Own {
                    path: source.clone(),
                    uid: *uid,
                    gid: *gid,
                    mode: *mode,
                });
                ops.push(Op::Bind {
                    phase: Phase::Mount,
                    source: source.clone(),
                    target: in_root(rel, false),
                    readonly: true,
                    nodev: spec.nodev,
                });
            }
            MountKind::Tmpfs => ops.push(Op::Mount {
                phase: Phase::Mount,
                source: "tmpfs".into(),
                target: in_root(rel, true),
                fstype: "tmpfs".into(),
                flags: MountFlags::NOSUID | MountFlags::NODEV,
                data: "mode=755".into(),
            }),
            MountKind::Bind { source, readonly } => ops.push(Op::Bind {
                phase: Phase::Mount,
                source: source.clone(),
                target: in_root(rel, source.is_dir()),
                readonly: *readonly,
                nodev: spec.nodev,
            }),
            MountKind::Confined {
                root,
                path,
                scratch: false,
            } => ops.push(Op::BindConfined {
                root: root.clone(),
                path: path.clone(),
                target: in_root(rel, confined_is_dir(root, path)),
                nodev: spec.nodev,
            }),
            MountKind::Confined {
                root,
                path,
                scratch: true,
            } => {
                let scratch = uppers.join("scratch").join(i.to_string());
                let (upper, work) = (scratch.join("upper"), scratch.join("work"));
                ops.push(Op::HostDir(upper.clone()));
                ops.push(Op::HostDir(work.clone()));
                ops.push(Op::OverlayConfined {
                    root: root.clone(),
                    path: path.clone(),
                    target: in_root(rel, true),
                    rest: format!(
                        "upperdir={},workdir={}{}",
                        upper.display(),
                        work.display(),
                        if spec.rootless.is_some() {
                            ",userxattr"
                        } else {
                            ""
                        }
                    ),
                    flags: nodev,
                });
            }
            MountKind::Scratch { lower } => {
                let scratch = uppers.join("scratch").join(i.to_string());
                let (upper, work) = (scratch.join("upper"), scratch.join("work"));
                let l = lower.display().to_string();
                if l.contains([',', ':']) {
                    return Err(SetupError::other(
                        Phase::Mount,
                        format!("/{rel}: cannot mount `{l}` writable: its path has `,` or `:`"),
                    ));
                }
                ops.push(Op::HostDir(upper.clone()));
                ops.push(Op::HostDir(work.clone()));
                ops.push(Op::Mount {
                    phase: Phase::Mount,
                    source: "overlay".into(),
                    target: in_root(rel, true),
                    fstype: "overlay".into(),
                    flags: nodev,
                    data: format!(
                        "lowerdir={l},upperdir={},workdir={}{}",
                        upper.display(),
                        work.display(),
                        if spec.rootless.is_some() {
                            ",userxattr"
                        } else {
                            ""
                        }
                    ),
                });
            }
        }
    }
    Ok(ops)
}

/// `/dev` as docker makes it: a tmpfs with the harmless devices bound from
/// the host, a private devpts, /dev/shm and the usual links.
fn dev(ops: &mut Vec<Op>, nodev: bool, shm_size: Option<u64>) {
    let mount = |rel: &str, source: &str, fstype: &str, flags: MountFlags, data: &str| Op::Mount {
        phase: Phase::Dev,
        source: source.into(),
        target: in_root(rel, true),
        fstype: fstype.into(),
        flags,
        data: data.into(),
    };
    // The devices themselves are bind mounts of their own, whose flags are
    // the host's: `nodev` on the tmpfs leaves them usable.
    let nodev = if nodev {
        MountFlags::NODEV
    } else {
        MountFlags::empty()
    };
    ops.push(mount(
        "dev",
        "tmpfs",
        "tmpfs",
        MountFlags::NOSUID | MountFlags::STRICTATIME | nodev,
        "mode=755,size=65536k",
    ));
    for name in DEVICES {
        ops.push(Op::Bind {
            phase: Phase::Dev,
            source: PathBuf::from(format!("/dev/{name}")),
            target: in_root(&format!("dev/{name}"), false),
            readonly: false,
            nodev: false,
        });
    }
    ops.push(mount(
        "dev/pts",
        "devpts",
        "devpts",
        MountFlags::NOSUID | MountFlags::NOEXEC,
        "newinstance,ptmxmode=0666,mode=0620",
    ));
    ops.push(mount(
        "dev/shm",
        "shm",
        "tmpfs",
        MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC,
        &format!(
            "mode=1777,size={}k",
            shm_size.map_or(65536, |b| b.div_ceil(1024))
        ),
    ));
    for (link, target) in [
        ("ptmx", "pts/ptmx"),
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        ops.push(Op::Symlink {
            rel: format!("dev/{link}"),
            target: target.into(),
        });
    }
}

/// The overlay's options, the directory they are relative to, and the
/// directories to create first (upper, work, an empty lower for scratch).
fn overlay_options(
    uppers: &Path,
    lowers: &[PathBuf],
    xattr: &str,
) -> Result<(PathBuf, String, Vec<PathBuf>), SetupError> {
    let upper = uppers.join("upper");
    let work = uppers.join("work");
    let mut dirs = vec![upper.clone(), work.clone()];
    let mut lowers: Vec<PathBuf> = lowers.to_vec();
    if lowers.is_empty() {
        // FROM scratch: overlay needs a lower layer; an empty one it is.
        let empty = uppers.join("empty");
        dirs.push(empty.clone());
        lowers.push(empty);
    }
    // Mount options must fit one page: name the lowers relative to their
    // common directory (the store's layer snapshots), entered first.
    let base = lowers[0]
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let names: Vec<String> = lowers
        .iter()
        .map(|l| match l.strip_prefix(&base) {
            Ok(rel) if l.parent() == Some(base.as_path()) => rel.display().to_string(),
            _ => l.display().to_string(),
        })
        .collect();
    for n in names
        .iter()
        .chain([upper.display().to_string(), work.display().to_string()].iter())
    {
        if n.contains([',', ':']) {
            return Err(SetupError::other(
                Phase::Overlay,
                format!("path `{n}` cannot be named in overlay options"),
            ));
        }
    }
    let mut data = format!(
        "lowerdir={},upperdir={},workdir={}",
        names.join(":"),
        upper.display(),
        work.display()
    );
    if xattr.starts_with("user.") {
        // userxattr (a user namespace) already rules out redirects, the
        // index and metacopy, and refuses options that name them.
        data.push_str(",userxattr");
    } else {
        // Plain copy-ups only: a redirect or a metadata-only copy in the
        // upper directory would not be a layer.
        data.push_str(",redirect_dir=off,index=off,metacopy=off");
    }
    if data.len() >= 4096 {
        return Err(SetupError::other(
            Phase::Overlay,
            format!("{} layers are too many for one mount", lowers.len()),
        ));
    }
    Ok((base, data, dirs))
}

/// The environment stage 2 gives the command: the spec's, with docker's
/// defaults for `PATH`, `HOSTNAME` and `HOME`.
pub fn environment(spec: &Spec, identity: &Identity) -> Vec<(String, String)> {
    let mut env = spec.env.clone();
    if !env.iter().any(|(k, _)| k == "PATH") {
        env.insert(0, ("PATH".into(), DEFAULT_PATH.into()));
    }
    if !env.iter().any(|(k, _)| k == "HOSTNAME") {
        env.push(("HOSTNAME".into(), spec.hostname.clone()));
    }
    if !env.iter().any(|(k, _)| k == "HOME") {
        env.push(("HOME".into(), identity.home.clone()));
    }
    env
}

/// Stage 2, PID 1 of the sandbox: `/proc` and `/sys`, pivot, masks, then
/// privileges down to docker's and the command. The seccomp filter is the
/// last privileged act: without no-new-privileges (docker's default, so
/// that setuid programs work) loading it needs `CAP_SYS_ADMIN`, so — as in
/// runc — it comes before the final capability sets, and only capset,
/// prctl and close_range (all allowed by the profile) follow it before exec.
pub fn stage2(init: &Init) -> Vec<Op> {
    let mut ops = vec![
        // pivot_root moves every process of the mount namespace whose root
        // is the old one: a namespace of our own keeps stage 1 where it is.
        Op::Unshare(UnshareFlags::NEWNS),
    ];
    if let Some(f) = &init.seccomp {
        ops.push(Op::ReadSeccomp(f.clone()));
    }
    ops.push(Op::OpenRoot(init.merged.clone()));
    // Only a process inside the new PID namespace mounts its /proc.
    ops.push(Op::Mount {
        phase: Phase::Proc,
        source: "proc".into(),
        target: in_root("proc", true),
        fstype: "proc".into(),
        flags: MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC,
        data: String::new(),
    });
    let ro = MountFlags::RDONLY | MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC;
    if init.bind_sys {
        ops.push(Op::Bind {
            phase: Phase::Sys,
            source: "/sys".into(),
            target: in_root("sys", true),
            readonly: true,
            nodev: true,
        });
    } else {
        ops.push(Op::Mount {
            phase: Phase::Sys,
            source: "sysfs".into(),
            target: in_root("sys", true),
            fstype: "sysfs".into(),
            flags: ro,
            data: String::new(),
        });
    }
    for (name, path) in &init.env_files {
        ops.push(Op::ReadEnv {
            name: name.clone(),
            path: path.clone(),
            max: super::MAX_COPIED,
        });
    }
    ops.push(Op::PivotRoot(init.merged.clone()));
    ops.extend(MASKED_PATHS.iter().map(|p| Op::Mask(p.to_string())));
    ops.extend(READONLY_PATHS.iter().map(|p| Op::ReadOnly(p.to_string())));
    ops.push(Op::Hostname(init.hostname.clone()));
    ops.push(Op::SessionKeyring);
    if let Some(n) = init.nproc {
        ops.push(Op::Nproc(n));
    }
    ops.extend(init.ulimits.iter().cloned().map(Op::Rlimit));
    let id = &init.identity;
    ops.push(Op::Bounding(DOCKER_CAPABILITIES));
    ops.push(Op::KeepCaps(true));
    ops.push(Op::Groups(id.groups.clone()));
    ops.push(Op::Ids {
        uid: id.uid,
        gid: id.gid,
    });
    if init.seccomp.is_some() {
        ops.push(Op::RaiseEffective);
        ops.push(Op::LoadSeccomp);
    }
    // What docker's containers show: root has the default set permitted and
    // effective, nothing inheritable or ambient (moby since 23.0, after
    // CVE-2022-24769); another user has none at all, only the bounding set.
    let set = if id.uid == 0 {
        DOCKER_CAPABILITIES
    } else {
        CapabilitySet::empty()
    };
    ops.push(Op::Capabilities(CapabilitySets {
        effective: set,
        permitted: set,
        inheritable: CapabilitySet::empty(),
    }));
    ops.push(Op::KeepCaps(false));
    ops.push(Op::ClearAmbient);
    ops.push(Op::CloseOnExec);
    ops.push(Op::Exec(Exec {
        argv: init.argv.clone(),
        env: init.env.clone(),
        cwd: init.cwd.clone(),
        stdin_null: init.stdin_null,
        tty: init.tty,
    }));
    ops
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The recording double: every call with its arguments, in order, and
    /// success (youki's `TestHelperSyscall`).
    #[derive(Default)]
    struct Recorder {
        calls: Vec<String>,
        /// A call (by its prefix) that fails with EINVAL.
        fail: Option<&'static str>,
    }

    impl Recorder {
        fn rec(&mut self, call: String) -> std::io::Result<()> {
            let failing = self.fail.is_some_and(|f| call.starts_with(f));
            self.calls.push(call);
            if failing {
                Err(std::io::Error::from_raw_os_error(libc::EINVAL))
            } else {
                Ok(())
            }
        }
        fn index(&self, prefix: &str) -> usize {
            self.calls
                .iter()
                .position(|c| c.starts_with(prefix))
                .unwrap_or_else(|| panic!("no `{prefix}` in {:#?}", self.calls))
        }
        fn last(&self, prefix: &str) -> usize {
            self.calls
                .iter()
                .rposition(|c| c.starts_with(prefix))
                .unwrap_or_else(|| panic!("no `{prefix}` in {:#?}", self.calls))
        }
    }

    fn t(t: &Target) -> String {
        match t {
            Target::Host(p) => p.display().to_string(),
            Target::InRoot { rel, .. } => format!("root:/{rel}"),
        }
    }

    impl Syscall for Recorder {
        fn close_range(&mut self, first: u32, cloexec: bool) -> std::io::Result<()> {
            self.rec(format!("close_range {first} cloexec={cloexec}"))
        }
        fn join_cgroup(&mut self, dir: &Path) -> std::io::Result<()> {
            self.rec(format!("cgroup {}", dir.display()))
        }
        fn enter_user_namespace(&mut self, map: &IdMapping) -> std::io::Result<()> {
            self.rec(format!("userns {}", map.uid))
        }
        fn setns(&mut self, pid: i32, ns: &str) -> std::io::Result<()> {
            self.rec(format!("setns {ns} {pid}"))
        }
        fn unshare(&mut self, flags: UnshareFlags) -> std::io::Result<()> {
            self.rec(format!("unshare {flags:?}"))
        }
        fn loopback_up(&mut self) -> std::io::Result<()> {
            self.rec("lo up".into())
        }
        fn make_private(&mut self) -> std::io::Result<()> {
            self.rec("make-rprivate".into())
        }
        fn mkdir_all(&mut self, path: &Path) -> std::io::Result<()> {
            self.rec(format!("mkdir {}", path.display()))
        }
        fn write_file(&mut self, path: &Path, _: &[u8]) -> std::io::Result<()> {
            self.rec(format!("write {}", path.display()))
        }
        fn mount_overlay(
            &mut self,
            base: &Path,
            target: &Path,
            data: &str,
            flags: MountFlags,
        ) -> std::io::Result<()> {
            self.rec(format!(
                "overlay {} in {} {data} {flags:?}",
                target.display(),
                base.display()
            ))
        }
        fn open_root(&mut self, path: &Path) -> std::io::Result<()> {
            self.rec(format!("open_root {}", path.display()))
        }
        fn ensure(&mut self, rel: &str, dir: bool, record: bool) -> std::io::Result<()> {
            self.rec(format!("ensure /{rel} dir={dir} record={record}"))
        }
        fn mount(
            &mut self,
            source: &str,
            target: &Target,
            fstype: &str,
            flags: MountFlags,
            data: &str,
        ) -> std::io::Result<()> {
            self.rec(format!(
                "mount {fstype} {source} {} {flags:?} {data}",
                t(target)
            ))
        }
        fn bind(
            &mut self,
            source: &Path,
            target: &Target,
            readonly: bool,
            nodev: bool,
        ) -> std::io::Result<()> {
            self.rec(format!(
                "bind {} {} ro={readonly} nodev={nodev}",
                source.display(),
                t(target)
            ))
        }

        fn bind_confined(
            &mut self,
            root: &Path,
            path: &Path,
            target: &Target,
            nodev: bool,
        ) -> std::io::Result<()> {
            self.rec(format!(
                "bind-confined {}:{} {} nodev={nodev}",
                root.display(),
                path.display(),
                t(target)
            ))
        }

        fn overlay_confined(
            &mut self,
            root: &Path,
            path: &Path,
            target: &Target,
            rest: &str,
            flags: MountFlags,
        ) -> std::io::Result<()> {
            self.rec(format!(
                "overlay-confined {}:{} {} {rest} {flags:?}",
                root.display(),
                path.display(),
                t(target)
            ))
        }
        fn symlink(&mut self, rel: &str, target: &str) -> std::io::Result<()> {
            self.rec(format!("symlink /{rel} -> {target}"))
        }
        fn read_seccomp(&mut self, path: &Path) -> std::io::Result<()> {
            self.rec(format!("read_seccomp {}", path.display()))
        }
        fn copy_file(
            &mut self,
            from: &Path,
            to: &Path,
            max: u64,
            mode: u32,
        ) -> std::io::Result<()> {
            self.rec(format!(
                "copy {} {} max={max} mode={mode:o}",
                from.display(),
                to.display()
            ))
        }
        fn own(&mut self, path: &Path, uid: u32, gid: u32, mode: u32) -> std::io::Result<()> {
            self.rec(format!("own {} {uid}:{gid} {mode:o}", path.display()))
        }
        fn read_env(&mut self, name: &str, path: &Path, max: u64) -> std::io::Result<()> {
            self.rec(format!("read_env {name} {} max={max}", path.display()))
        }
        fn pivot_root(&mut self, root: &Path) -> std::io::Result<()> {
            self.rec(format!("pivot_root {}", root.display()))
        }
        fn mask(&mut self, path: &str) -> std::io::Result<()> {
            self.rec(format!("mask {path}"))
        }
        fn readonly(&mut self, path: &str) -> std::io::Result<()> {
            self.rec(format!("readonly {path}"))
        }
        fn sethostname(&mut self, name: &str) -> std::io::Result<()> {
            self.rec(format!("hostname {name}"))
        }
        fn session_keyring(&mut self) -> std::io::Result<()> {
            self.rec("keyring".into())
        }
        fn nproc(&mut self, limit: u64) -> std::io::Result<()> {
            self.rec(format!("rlimit nproc {limit}"))
        }
        fn rlimit(&mut self, limit: &crate::exec::Ulimit) -> std::io::Result<()> {
            self.rec(format!("rlimit {limit}"))
        }
        fn bounding(&mut self, keep: CapabilitySet) -> std::io::Result<()> {
            self.rec(format!("bounding {:#x}", keep.bits()))
        }
        fn keep_caps(&mut self, on: bool) -> std::io::Result<()> {
            self.rec(format!("keepcaps {on}"))
        }
        fn groups(&mut self, groups: &[u32]) -> std::io::Result<()> {
            self.rec(format!("groups {groups:?}"))
        }
        fn ids(&mut self, uid: u32, gid: u32) -> std::io::Result<()> {
            self.rec(format!("ids {uid}:{gid}"))
        }
        fn raise_effective(&mut self) -> std::io::Result<()> {
            self.rec("raise_effective".into())
        }
        fn load_seccomp(&mut self) -> std::io::Result<()> {
            self.rec("load_seccomp".into())
        }
        fn capabilities(&mut self, s: CapabilitySets) -> std::io::Result<()> {
            self.rec(format!(
                "capset e={:#x} p={:#x} i={:#x}",
                s.effective.bits(),
                s.permitted.bits(),
                s.inheritable.bits()
            ))
        }
        fn clear_ambient(&mut self) -> std::io::Result<()> {
            self.rec("clear_ambient".into())
        }
        fn exec(&mut self, e: &Exec) -> std::io::Result<i32> {
            self.rec(format!("exec {:?} in {}", e.argv, e.cwd))?;
            Ok(7)
        }
    }

    fn spec() -> Spec {
        Spec {
            rootfs: Rootfs::Overlay {
                lowers: vec!["/s/layers/trusted/a".into(), "/s/layers/trusted/b".into()],
                opaque_xattr: "trusted.overlay.opaque".into(),
            },
            upper: Upper::Memory { size: "50%".into() },
            capture: true,
            layer: None,
            argv: vec!["/bin/sh".into(), "-c".into(), "true".into()],
            env: vec![],
            env_files: vec![],
            pass_fds: vec![],
            cwd: "/".into(),
            user: String::new(),
            network: NetworkMode::Host,
            hostname: "imgbuild".into(),
            mounts: vec![],
            hosts: String::new(),
            resolv_conf: String::new(),
            rootless: None,
            cgroups: vec![],
            seccomp: None,
            nproc: None,
            ulimits: Vec::new(),
            shm_size: None,
            nodev: false,
            tty: false,
        }
    }

    fn init(uid: u32) -> Init {
        Init {
            argv: vec!["/bin/sh".into()],
            env: vec![],
            cwd: "/work".into(),
            hostname: "imgbuild".into(),
            identity: Identity {
                uid,
                gid: uid,
                groups: vec![uid],
                home: "/".into(),
            },
            stdin_null: true,
            tty: false,
            merged: "/s/tmp/run/merged".into(),
            bind_sys: false,
            seccomp: Some("/s/tmp/seccomp".into()),
            nproc: None,
            ulimits: Vec::new(),
            env_files: vec![],
        }
    }

    fn record(ops: &[Op]) -> Recorder {
        let mut r = Recorder::default();
        assert_eq!(
            apply(ops, &mut r).unwrap(),
            ops.last().and_then(|o| match o {
                Op::Exec(_) => Some(7),
                _ => None,
            })
        );
        r
    }

    #[test]
    fn context_and_stage_mounts_are_resolved_in_their_root_at_mount_time() {
        let mut s = spec();
        s.mounts = vec![
            super::super::Mount {
                target: "/src".into(),
                kind: MountKind::Confined {
                    root: "/ctx".into(),
                    path: "sub/link".into(),
                    scratch: false,
                },
            },
            super::super::Mount {
                target: "/work".into(),
                kind: MountKind::Confined {
                    root: "/stage".into(),
                    path: "app".into(),
                    scratch: true,
                },
            },
        ];
        let r = record(&stage1(&s, Path::new("/d")).unwrap());
        assert!(
            r.calls
                .iter()
                .any(|c| c.starts_with("bind-confined /ctx:sub/link root:/src")),
            "{:?}",
            r.calls
        );
        let o = r.index("overlay-confined /stage:app root:/work");
        assert!(
            r.calls[o].contains("upperdir=/d/mem/scratch/1/upper"),
            "{}",
            r.calls[o]
        );
        // No host path of a source is ever handed to a plain bind.
        assert!(
            !r.calls
                .iter()
                .any(|c| c.starts_with("bind /ctx") || c.starts_with("bind /stage"))
        );
    }

    #[test]
    fn secrets_in_memory_are_copied_to_a_private_tmpfs_and_sockets_owned_before_binding() {
        let mut s = spec();
        s.mounts = vec![
            super::super::Mount {
                target: "/run/secrets/tok".into(),
                kind: MountKind::Copied {
                    source: "/proc/self/fd/3".into(),
                },
            },
            super::super::Mount {
                target: "/run/buildkit/ssh_agent.0".into(),
                kind: MountKind::Socket {
                    source: "/d/mounts/ssh0.sock".into(),
                    uid: 1000,
                    gid: 1001,
                    mode: 0o600,
                },
            },
        ];
        s.pass_fds = vec![17];
        let r = record(&stage1(&s, Path::new("/d")).unwrap());
        assert_eq!(r.calls[0], "close_range 4 cloexec=false", "3 is kept");
        let tmpfs = r.index("mount tmpfs tmpfs /d/copied ");
        assert!(r.calls[tmpfs].contains("mode=700"), "{}", r.calls[tmpfs]);
        let copy = r.index("copy /proc/self/fd/3 /d/copied/0 max=512000 mode=400");
        let bind = r.index("bind /d/copied/0 root:/run/secrets/tok ro=true");
        assert!(tmpfs < copy && copy < bind, "{:#?}", r.calls);
        let own = r.index("own /d/mounts/ssh0.sock 1000:1001 600");
        let sock = r.index("bind /d/mounts/ssh0.sock root:/run/buildkit/ssh_agent.0 ro=true");
        assert!(own < sock, "{:#?}", r.calls);
        // Both are files to mount over.
        assert!(
            r.calls
                .contains(&"ensure /run/secrets/tok dir=false record=true".to_string())
        );
        assert!(
            r.calls
                .contains(&"ensure /run/buildkit/ssh_agent.0 dir=false record=true".to_string())
        );
        // No tmpfs for copies when there are none.
        let r = record(&stage1(&spec(), Path::new("/d")).unwrap());
        assert!(!r.calls.iter().any(|c| c.contains("/d/copied")));
    }

    #[test]
    fn stage2_reads_secret_variables_before_it_pivots() {
        let mut i = init(0);
        i.env_files = vec![("TOKEN".into(), "/proc/self/fd/3".into())];
        let r = record(&stage2(&i));
        let read = r.index("read_env TOKEN /proc/self/fd/3 max=512000");
        assert!(read < r.index("pivot_root"), "{:#?}", r.calls);
    }

    #[test]
    fn stage1_closes_inherited_descriptors_before_anything_else() {
        let mut s = spec();
        s.cgroups = vec!["/sys/fs/cgroup/pids/imgbuild/x".into()];
        let r = record(&stage1(&s, Path::new("/s/tmp/run")).unwrap());
        assert_eq!(r.calls[0], "close_range 3 cloexec=false");
        // The cgroup is joined before anything can fork.
        assert_eq!(r.calls[1], "cgroup /sys/fs/cgroup/pids/imgbuild/x");
        assert!(r.index("unshare") > 1);
    }

    #[test]
    fn stage1_mounts_the_overlay_on_a_memory_upper_with_plain_copy_ups() {
        let r = record(&stage1(&spec(), Path::new("/s/tmp/run")).unwrap());
        let unshare = r.index("unshare");
        assert_eq!(
            r.calls[unshare],
            "unshare UnshareFlags(NEWIPC | NEWNS | NEWPID | NEWUTS)"
        );
        assert!(r.index("make-rprivate") < r.index("mount tmpfs tmpfs /s/tmp/run/mem"));
        let ov = &r.calls[r.index("overlay")];
        assert!(
            ov.starts_with("overlay /s/tmp/run/merged in /s/layers/trusted lowerdir=a:b,upperdir=/s/tmp/run/mem/upper,workdir=/s/tmp/run/mem/work,redirect_dir=off,index=off,metacopy=off"),
            "{ov}"
        );
        // Mount points recorded; /dev binds the harmless devices only.
        for p in ["/proc", "/sys", "/dev", "/etc/hosts"] {
            assert!(
                r.calls
                    .iter()
                    .any(|c| c.starts_with(&format!("ensure {p} ")) && c.ends_with("record=true")),
                "{p}"
            );
        }
        let binds: Vec<&String> = r
            .calls
            .iter()
            .filter(|c| c.starts_with("bind /dev/"))
            .collect();
        assert_eq!(binds.len(), DEVICES.len(), "{binds:?}");
        assert!(
            r.calls
                .iter()
                .any(|c| c == "bind /s/tmp/run/hosts root:/etc/hosts ro=true nodev=false")
        );
    }

    #[test]
    fn stage1_network_modes() {
        let mut s = spec();
        s.network = NetworkMode::None;
        let r = record(&stage1(&s, Path::new("/d")).unwrap());
        assert!(r.calls[r.index("unshare")].contains("NEWNET"));
        assert!(r.index("lo up") > r.index("unshare"));

        // Rootless, joining the build's network: its user namespace first,
        // then new namespaces of our own, then its network namespace.
        s.network = NetworkMode::Join {
            holder: 42,
            userns: true,
        };
        s.rootless = Some(IdMapping {
            uid: 1000,
            gid: 1000,
            sub: None,
        });
        let r = record(&stage1(&s, Path::new("/d")).unwrap());
        assert!(!r.calls[r.index("unshare")].contains("NEWNET"));
        assert!(r.index("setns user 42") < r.index("unshare"));
        assert!(r.index("setns net 42") > r.index("unshare"));
        assert!(!r.calls.iter().any(|c| c.starts_with("userns")));

        // Rootless on the host's network: a user namespace of its own.
        s.network = NetworkMode::Host;
        let r = record(&stage1(&s, Path::new("/d")).unwrap());
        assert!(r.index("userns 1000") < r.index("unshare"));
        assert!(!r.calls.iter().any(|c| c.starts_with("setns")));
    }

    #[test]
    fn without_a_devices_cgroup_writable_mounts_are_nodev() {
        let mut s = spec();
        s.nodev = true;
        s.mounts = vec![super::super::Mount {
            target: "/cache".into(),
            kind: MountKind::Bind {
                source: "/nonexistent-cache".into(),
                readonly: false,
            },
        }];
        let r = record(&stage1(&s, Path::new("/d")).unwrap());
        assert!(r.calls[r.index("overlay")].ends_with("MountFlags(NODEV)"));
        assert!(r.calls[r.index("mount tmpfs tmpfs root:/dev ")].contains("NODEV"));
        assert!(
            r.calls
                .iter()
                .any(|c| c == "bind /nonexistent-cache root:/cache ro=false nodev=true")
        );
        // The devices themselves stay usable.
        assert!(
            r.calls
                .iter()
                .any(|c| c == "bind /dev/null root:/dev/null ro=false nodev=false")
        );
    }

    #[test]
    fn bad_overlay_paths_and_sizes_are_refused_before_any_mount() {
        let mut s = spec();
        s.rootfs = Rootfs::Overlay {
            lowers: vec!["/s/a,b".into()],
            opaque_xattr: "user.overlay.opaque".into(),
        };
        let e = stage1(&s, Path::new("/d")).unwrap_err();
        assert_eq!(e.phase, Phase::Overlay);
        let mut s = spec();
        s.upper = Upper::Memory {
            size: "1g,nr_inodes=1".into(),
        };
        assert_eq!(
            stage1(&s, Path::new("/d")).unwrap_err().phase,
            Phase::UpperTmpfs
        );
    }

    #[test]
    fn a_failing_call_reports_its_phase() {
        let mut r = Recorder {
            fail: Some("overlay"),
            ..Default::default()
        };
        let e = apply(&stage1(&spec(), Path::new("/d")).unwrap(), &mut r).unwrap_err();
        assert_eq!(e.phase, Phase::Overlay);
        assert_eq!(e.errno, Some(libc::EINVAL));
        assert!(r.calls.last().unwrap().starts_with("overlay"));
        let mut r = Recorder {
            fail: Some("mount tmpfs tmpfs /d/mem"),
            ..Default::default()
        };
        let e = apply(&stage1(&spec(), Path::new("/d")).unwrap(), &mut r).unwrap_err();
        assert_eq!(e.phase, Phase::UpperTmpfs);
    }

    #[test]
    fn stage2_masks_runcs_paths_and_makes_proc_sys_read_only_after_the_pivot() {
        let r = record(&stage2(&init(0)));
        let pivot = r.index("pivot_root /s/tmp/run/merged");
        assert!(r.index("mount proc proc root:/proc") < pivot);
        let sys = &r.calls[r.index("mount sysfs")];
        assert!(sys.contains("RDONLY"), "{sys}");
        for p in MASKED_PATHS {
            assert!(r.index(&format!("mask {p}")) > pivot, "{p}");
        }
        for p in [
            "/proc/sys",
            "/proc/sysrq-trigger",
            "/proc/bus",
            "/proc/fs",
            "/proc/irq",
        ] {
            assert!(r.index(&format!("readonly {p}")) > pivot, "{p}");
        }
        assert!(r.calls.iter().any(|c| c == "mask /proc/kcore"));
        assert!(r.calls.iter().any(|c| c == "mask /proc/keys"));
        assert!(r.index("keyring") > pivot);
    }

    #[test]
    fn stage2_gives_root_dockers_capabilities_and_another_user_none() {
        let docker = format!("{:#x}", DOCKER_CAPABILITIES.bits());
        assert_eq!(docker, "0xa80425fb");
        let r = record(&stage2(&init(0)));
        assert_eq!(r.calls[r.index("bounding")], format!("bounding {docker}"));
        assert_eq!(
            r.calls[r.index("capset")],
            format!("capset e={docker} p={docker} i=0x0")
        );
        assert!(r.index("clear_ambient") > r.index("capset"));
        let r = record(&stage2(&init(1000)));
        assert_eq!(r.calls[r.index("bounding")], format!("bounding {docker}"));
        assert_eq!(r.calls[r.index("capset")], "capset e=0x0 p=0x0 i=0x0");
        assert_eq!(r.calls[r.index("ids")], "ids 1000:1000");
        assert!(r.index("keepcaps true") < r.index("ids"));
    }

    #[test]
    fn stage2_loads_seccomp_last_before_exec_and_closes_descriptors() {
        let r = record(&stage2(&init(1000)));
        let load = r.index("load_seccomp");
        // Read before the pivot hides the host's files, loaded after every
        // mount, the pivot, the masks and the uid change.
        assert!(r.index("read_seccomp /s/tmp/seccomp") < r.index("pivot_root"));
        for before in [
            "mount",
            "pivot_root",
            "mask",
            "readonly",
            "bounding",
            "ids",
            "raise_effective",
        ] {
            assert!(r.last(before) < load, "{before} after the filter");
        }
        // After it only capability and descriptor housekeeping, then exec.
        let after: Vec<&str> = r.calls[load + 1..]
            .iter()
            .map(|c| c.split(' ').next().unwrap())
            .collect();
        assert_eq!(
            after,
            ["capset", "keepcaps", "clear_ambient", "close_range", "exec"]
        );
        assert_eq!(r.calls[r.calls.len() - 2], "close_range 3 cloexec=true");
        assert_eq!(r.calls.last().unwrap(), "exec [\"/bin/sh\"] in /work");
    }

    #[test]
    fn stage2_rootless_fallbacks() {
        let mut i = init(0);
        i.bind_sys = true;
        i.nproc = Some(2048);
        let r = record(&stage2(&i));
        assert_eq!(
            r.calls[r.index("bind /sys")],
            "bind /sys root:/sys ro=true nodev=true"
        );
        assert!(!r.calls.iter().any(|c| c.starts_with("mount sysfs")));
        // The rlimit is set while still privileged, before the uid change.
        assert!(r.index("rlimit nproc 2048") < r.index("ids"));
    }
}
