//! The RUN sandbox: runs a command on the filesystem of an image's layers, in
//! new mount, PID, IPC and UTS namespaces (and a user namespace when not
//! root), with the changes landing in a fresh directory that becomes the
//! step's layer.
//!
//! Process model. Namespaces that need a single-threaded caller
//! (`CLONE_NEWUSER`) or that only apply to children (`CLONE_NEWPID`) cannot be
//! entered by the multi-threaded builder, so it re-executes its own binary:
//!
//! ```text
//! imgbuild (build, many threads)
//!   └─ imgbuild __sandbox DIR   stage 1: unshare, mount the overlay (its
//!        │                      upper on a private tmpfs, or on disk), /dev,
//!        │                      /etc/hosts, mounts; resolve USER
//!        └─ (fork) stage 2      PID 1 of the new PID namespace: mount
//!             │                 /proc, pivot_root, drop privileges, reap
//!             └─ the command
//! ```
//!
//! Each stage dies with its parent (`PR_SET_PDEATHSIG`), and when stage 2
//! (PID 1) exits the kernel kills everything left in the namespace, so no
//! process outlives its step, however the build ends. The mounts live only in
//! the private mount namespace: nothing stays mounted after the step.
//!
//! The upper directory in memory. Creating files on a disk filesystem is the
//! slow part of most RUN steps (ext4 without a journal here spends ~1 ms per
//! create), so by default the upper is a tmpfs mounted by stage 1 in its own
//! mount namespace. After the command, stage 1 stays alive with its stdout
//! closed while the builder reads the upper through `/proc/PID/root` and
//! writes the layer; when the builder lets go ([`Held`] dropped, or the
//! builder dies) stage 1 exits and the kernel frees the tmpfs: nothing to
//! clean up, nothing left behind by a kill.
//!
//! This module owns only the mechanics; what to run and what becomes of the
//! upper directory is `build`'s business. It is the only module allowed
//! `unsafe` (see `sys`).

pub mod binfmt;
pub mod cgroup;
pub mod diff;
pub mod error;
mod linux;
pub mod network;
pub mod plan;
pub mod seccomp;
mod stage;
mod sys;
mod tty;
pub mod user;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::Stdio;

use serde::{Deserialize, Serialize};

pub use error::{Phase, SetupError};
pub use stage::{prepare_mountpoints, stage1_main};

/// The argument that makes the binary act as stage 1.
pub const STAGE1_ARG: &str = "__sandbox";

/// Exit status of a stage whose setup failed (the reason is in `DIR/error`);
/// the same number runc and docker use for "the container could not start".
const SETUP_FAILED: i32 = 125;

/// How the root filesystem is made.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub enum Rootfs {
    /// An overlay mount: `lowers` (top first, each one layer in overlay
    /// format) under a fresh `DIR/upper`.
    Overlay {
        /// Layer directories, top first; empty for `FROM scratch`.
        lowers: Vec<PathBuf>,
        /// The opaque-directory xattr the lowers were extracted with
        /// (`trusted.overlay.opaque`, or `user.overlay.opaque` in a user
        /// namespace, which also needs the `userxattr` mount option).
        opaque_xattr: String,
    },
    /// A plain directory, bind-mounted as the root (the fallback when overlay
    /// cannot be mounted, and `imgbuild run` over a copy).
    Dir(PathBuf),
}

/// A mount for the duration of the command.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Mount {
    /// Absolute path inside the container.
    pub target: String,
    /// What is mounted.
    pub kind: MountKind,
}

/// What a [`Mount`] puts at its target.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub enum MountKind {
    /// A host file or directory.
    Bind {
        /// Host path.
        source: PathBuf,
        /// Mounted read-only.
        readonly: bool,
    },
    /// A file or directory of a build context or of a stage's filesystem:
    /// `path` is resolved inside `root` (symlinks included, confined) by
    /// the sandbox itself, on a descriptor, when it mounts it, so nothing
    /// in the context or the image can redirect the mount to the host.
    Confined {
        /// The directory acting as `/` for `path`.
        root: PathBuf,
        /// The path inside it.
        path: PathBuf,
        /// Writable with its changes discarded (as [`MountKind::Scratch`]);
        /// else read-only.
        scratch: bool,
    },
    /// An empty tmpfs.
    Tmpfs,
    /// A read-only file holding the bytes of `source` (at most
    /// [`MAX_COPIED`]), copied by stage 1 onto a tmpfs of its own mount
    /// namespace: for what exists only in memory (a secret from the
    /// caller's environment, a memfd passed in [`Spec::pass_fds`]), which
    /// the kernel will not bind-mount. Mode 0400, owned by root.
    Copied {
        /// A path stage 1 can read.
        source: PathBuf,
    },
    /// A Unix socket of the builder's (an SSH agent proxy) bound at the
    /// target, given this owner and mode by stage 1 (inside the user
    /// namespace, where the ids are the container's).
    Socket {
        /// The socket's host path.
        source: PathBuf,
        /// Its owner in the container.
        uid: u32,
        /// Its group in the container.
        gid: u32,
        /// Its permission bits.
        mode: u32,
    },
    /// A writable view of a host directory whose changes are discarded
    /// (`--mount=type=bind,rw`): an overlay with a throwaway upper.
    Scratch {
        /// The host directory.
        lower: PathBuf,
    },
}

/// The most [`MountKind::Copied`] and [`Spec::env_files`] read of a source
/// (BuildKit's limit on a secret).
pub const MAX_COPIED: u64 = 500 * 1024;

/// Makes `cmd`'s child get `SIGKILL` when the thread that spawns it ends
/// (`PR_SET_PDEATHSIG`): a helper (the build's private ssh-agent) that must
/// not outlive a builder killed before it could stop it.
pub fn die_with_parent(cmd: &mut std::process::Command) {
    sys::die_with_parent(cmd);
}

/// Where an overlay root's upper directory lives.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub enum Upper {
    /// `DIR/upper` on the store's filesystem: survives the sandbox.
    Disk,
    /// A tmpfs private to the sandbox, gone when the sandbox ends; see the
    /// module docs.
    Memory {
        /// Its size limit, in tmpfs's syntax (`50%` of the memory, `2g`).
        size: String,
    },
}

/// Everything stage 1 needs, written as `DIR/spec.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Spec {
    /// The root filesystem.
    pub rootfs: Rootfs,
    /// Where the overlay upper directory (and the scratch uppers of writable
    /// bind mounts) live.
    pub upper: Upper,
    /// Keep a memory upper readable after the command until the caller is
    /// done with it (see [`Outcome::upper`]). Needs [`Output::Lines`].
    pub capture: bool,
    /// With `capture`: when the sandbox maps subordinate ids, it writes the
    /// layer itself, here ([`Outcome::layer`]).
    pub layer: Option<LayerRequest>,
    /// The command and its arguments (`argv[0]` is looked up in `PATH`).
    pub argv: Vec<String>,
    /// The environment, in order.
    pub env: Vec<(String, String)>,
    /// Descriptors of the caller's that stage 1 (and stage 2, never the
    /// command) gets as 3, 4, … in this order, named `/proc/self/fd/N` by
    /// mounts and `env_files`: secrets held in memfds, which a process in
    /// a user namespace may not open through the builder's `/proc/PID/fd`.
    #[serde(default)]
    pub pass_fds: Vec<i32>,
    /// Variables whose values stage 2 reads from these files (at most
    /// [`MAX_COPIED`] bytes) just before the command: secrets exposed as
    /// environment variables, whose values never pass through a spec file
    /// on disk. They win over `env`.
    #[serde(default)]
    pub env_files: Vec<(String, PathBuf)>,
    /// Working directory inside the container (created when missing).
    pub cwd: String,
    /// USER as written (`name`, `uid`, `name:group`, `uid:gid`; empty: root).
    pub user: String,
    /// The network namespace.
    pub network: NetworkMode,
    /// Host name inside the container.
    pub hostname: String,
    /// Extra mounts, in order.
    pub mounts: Vec<Mount>,
    /// Contents of `/etc/hosts` and `/etc/resolv.conf` inside the container.
    pub hosts: String,
    /// See `hosts`.
    pub resolv_conf: String,
    /// The invoking user when not root: the sandbox enters a user namespace
    /// that maps container root to them.
    pub rootless: Option<IdMapping>,
    /// Cgroup directories stage 1 moves itself into (pids, devices, memory,
    /// cpu: see `cgroup`), before anything forks.
    #[serde(default)]
    pub cgroups: Vec<PathBuf>,
    /// The compiled seccomp filter, loaded by stage 2 (see `seccomp`).
    #[serde(default)]
    pub seccomp: Option<PathBuf>,
    /// `RLIMIT_NPROC` for the command, where no pids cgroup could be made.
    #[serde(default)]
    pub nproc: Option<u64>,
    /// `--ulimit`: resource limits of the command, set before it drops
    /// its privileges (raising one above the caller's hard limit needs
    /// `CAP_SYS_RESOURCE`).
    #[serde(default)]
    pub ulimits: Vec<Ulimit>,
    /// `--shm-size`: the size of `/dev/shm` in bytes (docker's default,
    /// 64 MiB, when `None`).
    #[serde(default)]
    pub shm_size: Option<u64>,
    /// Mount the writable filesystems `nodev`, where no devices cgroup
    /// keeps created device nodes from being opened.
    #[serde(default)]
    pub nodev: bool,
    /// Give the command a pseudo-terminal of the sandbox's own devpts as
    /// its controlling terminal and stdio (`imgbuild run -t`); the sandbox's
    /// init relays it to its own stdin and stdout and follows their window
    /// size.
    #[serde(default)]
    pub tty: bool,
}

/// One `--ulimit TYPE=SOFT[:HARD]` (docker's syntax; `-1` is unlimited).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ulimit {
    /// The resource, as docker names it (`nofile`, `nproc`, `core`, …).
    pub name: String,
    /// The soft limit (`None`: unlimited).
    pub soft: Option<u64>,
    /// The hard limit (`None`: unlimited).
    pub hard: Option<u64>,
}

/// The resources `--ulimit` may name (docker's list).
pub const ULIMIT_NAMES: &[&str] = &[
    "core",
    "cpu",
    "data",
    "fsize",
    "locks",
    "memlock",
    "msgqueue",
    "nice",
    "nofile",
    "nproc",
    "rss",
    "rtprio",
    "rttime",
    "sigpending",
    "stack",
];

impl Ulimit {
    /// Parses `TYPE=SOFT[:HARD]`.
    ///
    /// # Errors
    /// An unknown resource, a value that is no number, or a soft limit
    /// above the hard one.
    pub fn parse(spec: &str) -> Result<Ulimit, String> {
        let (name, values) = spec
            .split_once('=')
            .ok_or_else(|| "expected TYPE=SOFT[:HARD]".to_string())?;
        if !ULIMIT_NAMES.contains(&name) {
            return Err(format!(
                "unknown resource `{name}` (one of {})",
                ULIMIT_NAMES.join(", ")
            ));
        }
        let value = |v: &str| -> Result<Option<u64>, String> {
            match v.parse::<i64>() {
                Ok(-1) => Ok(None),
                Ok(n) if n >= 0 => Ok(Some(n as u64)),
                _ => Err(format!("`{v}` is no limit (a number, or -1 for unlimited)")),
            }
        };
        let (soft, hard) = match values.split_once(':') {
            Some((s, h)) => (value(s)?, value(h)?),
            None => {
                let v = value(values)?;
                (v, v)
            }
        };
        if let (Some(s), h) = (soft, hard)
            && h.is_some_and(|h| s > h)
        {
            return Err(format!("the soft limit {s} is above the hard limit"));
        }
        if soft.is_none() && hard.is_some() {
            return Err("an unlimited soft limit is above the hard limit".into());
        }
        Ok(Ulimit {
            name: name.to_string(),
            soft,
            hard,
        })
    }
}

impl std::fmt::Display for Ulimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let v = |l: Option<u64>| l.map_or_else(|| "-1".to_string(), |n| n.to_string());
        write!(f, "{}={}:{}", self.name, v(self.soft), v(self.hard))
    }
}

/// The network namespace of a sandbox.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub enum NetworkMode {
    /// The host's (`--network host`).
    Host,
    /// A new namespace with only loopback (`--network none`).
    None,
    /// The namespace of the build's network holder, shared by the build's steps,
    /// with outbound access through slirp4netns.
    Join {
        /// The holder's pid.
        holder: i32,
        /// Join its user namespace too (rootless: the network namespace
        /// belongs to it).
        userns: bool,
    },
}

/// A user namespace mapping: container root is the invoking user, and when
/// `/etc/subuid` and `/etc/subgid` grant ranges (and `newuidmap` exists),
/// container ids from 1 up are those ranges.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct IdMapping {
    /// The invoking user's uid.
    pub uid: u32,
    /// The invoking user's gid.
    pub gid: u32,
    /// Subordinate ids for container ids 1 and up.
    #[serde(default)]
    pub sub: Option<SubIds>,
}

/// The subordinate id ranges of a user (`/etc/subuid`, `/etc/subgid`).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct SubIds {
    /// First host uid of the range.
    pub uid_start: u32,
    /// Number of uids.
    pub uid_count: u32,
    /// First host gid of the range.
    pub gid_start: u32,
    /// Number of gids.
    pub gid_count: u32,
}

/// A capture the sandbox does itself: the layer of the command's changes,
/// written to `path`. Needed when subordinate ids are mapped, because files
/// the command gave to other users are then unreadable outside the sandbox.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct LayerRequest {
    /// Where the (compressed) layer goes; on the store's filesystem.
    pub path: PathBuf,
    /// Compression name (`gzip`, `zstd`, `none`).
    pub compression: String,
    /// SOURCE_DATE_EPOCH, for mtimes.
    pub epoch: Option<u64>,
}

/// What stage 1 reports back in `DIR/report.json`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Report {
    /// Paths (relative to the root) stage 1 created only to mount on: not
    /// part of the command's changes.
    pub created: Vec<String>,
    /// The command's exit status, when stage 1 waits for the caller
    /// ([`Spec::capture`]) instead of exiting with it.
    #[serde(default)]
    pub code: Option<i32>,
    /// The layer stage 1 wrote (see [`Spec::layer`]).
    #[serde(default)]
    pub layer: Option<crate::layer::LayerDigests>,
}

/// A sandbox failure that is not the command's own.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The sandbox's work directory could not be prepared or read.
    #[error("sandbox directory {path}")]
    Dir {
        /// The directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The helper process could not be started.
    #[error("starting the sandbox helper {exe}")]
    Spawn {
        /// The binary.
        exe: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Setting up the sandbox failed (namespaces, mounts, user, exec).
    #[error(transparent)]
    Setup(#[from] SetupError),
    /// The command was killed by a signal.
    #[error("the command was killed by signal {0}")]
    Signaled(i32),
}

/// How the command ended.
#[derive(Debug)]
pub struct Outcome {
    /// Exit status (0 success).
    pub code: i32,
    /// The last lines of its output (when captured).
    pub tail: Vec<String>,
    /// Paths created only as mount points (see [`Report::created`]).
    pub created: Vec<String>,
    /// The overlay upper directory, readable until [`Outcome::held`] is
    /// dropped (overlay roots only).
    pub upper: Option<PathBuf>,
    /// The sandbox kept alive so that a memory upper can be read.
    pub held: Option<Held>,
    /// The layer the sandbox wrote itself, at [`LayerRequest::path`].
    pub layer: Option<crate::layer::LayerDigests>,
}

/// A finished sandbox kept alive so that its memory upper stays readable.
/// Dropping it lets the sandbox exit, which frees the upper.
#[derive(Debug)]
pub struct Held {
    child: std::process::Child,
    control: Option<std::process::ChildStdin>,
}

impl Held {
    /// Whether the memory upper ran out of space or inodes: the command
    /// probably failed for that reason, and may succeed on disk.
    pub fn upper_full(&self, upper: &Path) -> bool {
        match rustix::fs::statvfs(upper) {
            Ok(st) => st.f_bavail.saturating_mul(st.f_frsize) < (1 << 20) || st.f_favail < 16,
            Err(_) => false,
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        // End of stdin is stage 1's signal to exit.
        drop(self.control.take());
        let _ = self.child.wait();
    }
}

/// Where the command's output goes.
pub enum Output<'a> {
    /// Captured line by line (stdout and stderr together, as docker shows
    /// them); stdin is `/dev/null`.
    Lines(&'a mut dyn FnMut(&str)),
    /// The caller's stdout and stderr, and its stdin when `stdin` (`imgbuild
    /// run`, `-i`); a terminal passes straight through.
    Inherit {
        /// Keep stdin attached (else `/dev/null`).
        stdin: bool,
    },
}

/// Lines of output kept for the error message of a failing command.
const TAIL_LINES: usize = 20;

/// Runs `spec` in a sandbox whose state lives in `dir` (which must exist,
/// be empty, and sit on a filesystem that can hold an overlay upper
/// directory). On return [`Outcome::upper`] holds the command's changes
/// (overlay mode); the caller removes `dir`.
///
/// # Errors
/// A sandbox that could not be set up, or a command killed by a signal. A
/// command that exits non-zero is an [`Outcome`] with its code.
pub fn run(dir: &Path, spec: &Spec, output: Output<'_>) -> Result<Outcome, Error> {
    let dir_err = |source| Error::Dir {
        path: dir.to_path_buf(),
        source,
    };
    let json = serde_json::to_vec(spec).map_err(|e| dir_err(std::io::Error::other(e)))?;
    #[allow(clippy::disallowed_methods)] // the error names the path already
    std::fs::write(dir.join("spec.json"), json).map_err(dir_err)?;
    let exe = std::env::current_exe().map_err(|source| Error::Spawn {
        exe: PathBuf::from("/proc/self/exe"),
        source,
    })?;
    let mut cmd = std::process::Command::new(&exe);
    cmd.arg(STAGE1_ARG).arg(dir);
    if !spec.pass_fds.is_empty() {
        let fds = (3..).zip(&spec.pass_fds).map(|(n, fd)| (*fd, n)).collect();
        sys::pass_fds(&mut cmd, fds, false);
    }
    // The upper is read through /proc/PID/root, from the root directory.
    let abs = std::path::absolute(dir).map_err(dir_err)?;
    let hold = spec.capture
        && matches!(spec.upper, Upper::Memory { .. })
        && matches!(spec.rootfs, Rootfs::Overlay { .. })
        && matches!(output, Output::Lines(_));
    let spawn_err = |source| Error::Spawn {
        exe: exe.clone(),
        source,
    };
    let mut tail: std::collections::VecDeque<String> = std::collections::VecDeque::new();
    let status = match output {
        Output::Inherit { stdin } => {
            if !stdin {
                cmd.stdin(Stdio::null());
            }
            cmd.status().map_err(spawn_err)?
        }
        Output::Lines(sink) => {
            let (reader, writer) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
                .map_err(|e| spawn_err(e.into()))?;
            let writer2 = writer.try_clone().map_err(spawn_err)?;
            cmd.stdin(if hold { Stdio::piped() } else { Stdio::null() })
                .stdout(Stdio::from(writer))
                .stderr(Stdio::from(writer2));
            let mut child = cmd.spawn().map_err(spawn_err)?;
            // Our copies of the write end must go, or the read never ends.
            drop(cmd);
            let control = child.stdin.take();
            let mut r = BufReader::new(std::fs::File::from(reader));
            let mut buf = Vec::new();
            loop {
                buf.clear();
                match r.read_until(b'\n', &mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        let line = String::from_utf8_lossy(&buf);
                        let line = line.trim_end_matches(['\n', '\r']);
                        sink(line);
                        if tail.len() == TAIL_LINES {
                            tail.pop_front();
                        }
                        tail.push_back(line.to_string());
                    }
                }
            }
            // Output ends when stage 1 has written the report; holding a
            // memory upper (and not having written the layer itself), it
            // waits for us to read it.
            let report = read_report(dir);
            if let (Some(code), true, None) = (report.code, hold, &report.layer)
                && !dir.join("error").exists()
            {
                let pid = child.id();
                return Ok(Outcome {
                    code,
                    tail: tail.into(),
                    created: report.created,
                    upper: Some(
                        Path::new(&format!("/proc/{pid}/root"))
                            .join(abs.strip_prefix("/").unwrap_or(&abs))
                            .join("mem/upper"),
                    ),
                    held: Some(Held { child, control }),
                    layer: None,
                });
            }
            drop(control);
            child.wait().map_err(spawn_err)?
        }
    };
    if let Some(e) = read_error(dir) {
        return Err(Error::Setup(e));
    }
    let code = match (
        status.code(),
        std::os::unix::process::ExitStatusExt::signal(&status),
    ) {
        (Some(c), _) => c,
        (None, Some(sig)) => return Err(Error::Signaled(sig)),
        (None, None) => return Err(Error::Signaled(0)),
    };
    let report = read_report(dir);
    // Where the changes are: a layer stage 1 wrote, or the disk upper.
    let upper = (report.layer.is_none() && matches!(spec.rootfs, Rootfs::Overlay { .. }))
        .then(|| dir.join("upper"));
    Ok(Outcome {
        code,
        tail: tail.into(),
        created: report.created,
        upper,
        held: None,
        layer: report.layer,
    })
}

/// The setup failure stage 1 wrote, if any.
fn read_error(dir: &Path) -> Option<SetupError> {
    let bytes = fs_err::read(dir.join("error")).ok()?;
    Some(serde_json::from_slice(&bytes).unwrap_or_else(|_| {
        SetupError::other(Phase::State, String::from_utf8_lossy(&bytes).trim_end())
    }))
}

fn read_report(dir: &Path) -> Report {
    fs_err::read(dir.join("report.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

/// Whether this process can run the sandbox without a user namespace.
pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// What the sandbox takes from the invoking environment. The CLI reads it
/// (`PATH`, `IMGBUILD_NO_SUBIDS`, `IMGBUILD_RUN_MEMORY`) and hands it down:
/// nothing in the library reads environment variables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostOptions {
    /// Where helpers (`newuidmap`, `newgidmap`, `slirp4netns`) are looked
    /// up, in `PATH` syntax.
    pub path: std::ffi::OsString,
    /// Use the invoking user's subordinate ids when they are granted
    /// (`false`: only its own id is mapped).
    pub subids: bool,
    /// The size of a memory upper ([`Upper::Memory`]), tmpfs syntax: `2g`,
    /// `25%`.
    pub memory_upper: String,
    /// The binfmt_misc directory that says which foreign platforms RUN can
    /// execute ([`binfmt::DEFAULT_DIR`]).
    pub binfmt_misc: std::path::PathBuf,
}

impl Default for HostOptions {
    /// `PATH=/usr/bin:/bin`, subordinate ids when granted, half the memory.
    fn default() -> Self {
        HostOptions {
            path: "/usr/bin:/bin".into(),
            subids: true,
            memory_upper: "50%".into(),
            binfmt_misc: binfmt::DEFAULT_DIR.into(),
        }
    }
}

impl HostOptions {
    /// The path of an executable named `name` in [`HostOptions::path`].
    pub fn find_in_path(&self, name: &str) -> Option<PathBuf> {
        std::env::split_paths(&self.path)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    }
}

/// The mapping for a rootless sandbox, or `None` when running as root.
pub fn rootless_mapping(host: &HostOptions) -> Option<IdMapping> {
    if is_root() {
        return None;
    }
    let uid = rustix::process::getuid().as_raw();
    let gid = rustix::process::getgid().as_raw();
    Some(IdMapping {
        uid,
        gid,
        sub: sub_ids(host, uid),
    })
}

/// The invoking user's subordinate ids, when `/etc/subuid` and `/etc/subgid`
/// grant both and the setuid helpers that apply them are installed.
fn sub_ids(host: &HostOptions, uid: u32) -> Option<SubIds> {
    if !host.subids {
        return None;
    }
    let helpers = ["newuidmap", "newgidmap"];
    if !helpers.iter().all(|h| host.find_in_path(h).is_some()) {
        return None;
    }
    let passwd = fs_err::read_to_string("/etc/passwd").unwrap_or_default();
    let name = passwd.lines().find_map(|l| {
        let mut f = l.split(':');
        let name = f.next()?;
        (f.nth(1)? == uid.to_string()).then(|| name.to_string())
    });
    let (uid_start, uid_count) = sub_range(
        &fs_err::read_to_string("/etc/subuid").ok()?,
        name.as_deref(),
        uid,
    )?;
    let (gid_start, gid_count) = sub_range(
        &fs_err::read_to_string("/etc/subgid").ok()?,
        name.as_deref(),
        uid,
    )?;
    Some(SubIds {
        uid_start,
        uid_count,
        gid_start,
        gid_count,
    })
}

/// The first range of `/etc/subuid` (or `subgid`) syntax granted to the
/// user by name or by number.
fn sub_range(text: &str, name: Option<&str>, uid: u32) -> Option<(u32, u32)> {
    let uid = uid.to_string();
    text.lines().find_map(|l| {
        let mut f = l.trim().split(':');
        let owner = f.next()?;
        if owner != uid && Some(owner) != name {
            return None;
        }
        let start = f.next()?.parse().ok()?;
        let count: u32 = f.next()?.parse().ok()?;
        (count > 0).then_some((start, count))
    })
}

/// The opaque-directory xattr overlay uses for this process: `trusted.*`
/// needs real root; a user namespace mount uses `user.*` (`userxattr`).
pub fn opaque_xattr() -> &'static str {
    if is_root() {
        "trusted.overlay.opaque"
    } else {
        "user.overlay.opaque"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subordinate_ranges_by_name_or_uid() {
        let text = "# comment\nalice:100000:65536\n1001:200000:1000\nbob:300000:0\n";
        assert_eq!(sub_range(text, Some("alice"), 1000), Some((100000, 65536)));
        assert_eq!(sub_range(text, None, 1001), Some((200000, 1000)));
        assert_eq!(sub_range(text, Some("bob"), 1002), None);
        assert_eq!(sub_range(text, Some("carol"), 1003), None);
    }
}
