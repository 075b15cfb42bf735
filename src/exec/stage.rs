//! The two sandbox stages (see the module docs of `exec`). Each runs in its
//! own fresh, single-threaded process; a setup failure is written to
//! `DIR/error` and ends the stage with status 125.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use rustix::fs::{FileType, Mode, OFlags};
use rustix::mount::{MountFlags, MountPropagationFlags, UnmountFlags};
use rustix::process::Signal;
use rustix::thread::{CapabilitySet, UnshareFlags};
use serde::{Deserialize, Serialize};

use super::user::{self, Identity};
use super::{MountKind, Report, Rootfs, SETUP_FAILED, Spec, Upper, sys};
use crate::confine::{Root, open_in};

/// What stage 1 hands stage 2, as `DIR/init.json`.
#[derive(Debug, Serialize, Deserialize)]
struct Init {
    argv: Vec<String>,
    env: Vec<(String, String)>,
    cwd: String,
    hostname: String,
    identity: Identity,
    /// The command's stdin is /dev/null (stage 1's stdin is its control pipe).
    #[serde(default)]
    stdin_null: bool,
}

/// The default PATH docker gives a container whose image sets none.
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Docker's default capability set for containers; root in a RUN step gets
/// these and no others (no `CAP_SYS_ADMIN`: the step cannot mount or escape
/// its namespaces).
const KEPT_CAPABILITIES: CapabilitySet = CapabilitySet::CHOWN
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

type Result<T> = std::result::Result<T, String>;

fn ctx<E: std::fmt::Display>(what: impl std::fmt::Display) -> impl FnOnce(E) -> String {
    move |e| format!("{what}: {e}")
}

fn finish(dir: &Path, r: Result<i32>) -> i32 {
    match r {
        Ok(code) => code,
        Err(msg) => {
            let _ = std::fs::write(dir.join("error"), msg);
            SETUP_FAILED
        }
    }
}

/// Stage 1: namespaces, the root filesystem and its mounts, then stage 2.
/// Returns the process exit status.
pub fn stage1_main(dir: &Path) -> i32 {
    // Die with the builder, whatever kills it.
    let _ = rustix::process::set_parent_process_death_signal(Some(Signal::KILL));
    finish(dir, stage1(dir))
}

/// Stage 2: PID 1 of the sandbox. Returns the command's exit status.
fn stage2_main(dir: &Path) -> i32 {
    let _ = rustix::process::set_parent_process_death_signal(Some(Signal::KILL));
    // After pivot_root `dir` is out of reach: keep a descriptor for errors.
    let dir_fd = match rustix::fs::open(
        dir,
        OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC,
        Mode::empty(),
    ) {
        Ok(fd) => fd,
        Err(e) => return finish(dir, Err(format!("opening {}: {e}", dir.display()))),
    };
    match stage2(dir) {
        Ok(code) => code,
        Err(msg) => {
            if let Ok(fd) = rustix::fs::openat(
                &dir_fd,
                "error",
                OFlags::CREATE | OFlags::WRONLY | OFlags::TRUNC | OFlags::CLOEXEC,
                Mode::from_raw_mode(0o600),
            ) {
                let _ = io::Write::write_all(&mut std::fs::File::from(fd), msg.as_bytes());
            }
            SETUP_FAILED
        }
    }
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T> {
    let bytes = std::fs::read(path).map_err(ctx(format!("reading {}", path.display())))?;
    serde_json::from_slice(&bytes).map_err(ctx(format!("parsing {}", path.display())))
}

fn cstr(s: &str) -> Result<CString> {
    CString::new(s).map_err(ctx(format!("`{s}`")))
}

fn stage1(dir: &Path) -> Result<i32> {
    let spec: Spec = read_json(&dir.join("spec.json"))?;
    // Whether container ids other than root are mapped (subordinate ids).
    let ranged = match spec.rootless {
        Some(map) => enter_user_namespace(map)?,
        None => false,
    };
    let mut flags =
        UnshareFlags::NEWNS | UnshareFlags::NEWPID | UnshareFlags::NEWIPC | UnshareFlags::NEWUTS;
    if spec.network_none {
        flags |= UnshareFlags::NEWNET;
    }
    sys::unshare(flags).map_err(ctx("creating namespaces"))?;
    if spec.network_none {
        sys::loopback_up().map_err(ctx("bringing up the loopback interface"))?;
    }
    // Nothing mounted here may propagate back to the host.
    rustix::mount::mount_change(
        "/",
        MountPropagationFlags::PRIVATE | MountPropagationFlags::REC,
    )
    .map_err(ctx("making mounts private"))?;

    let merged = dir.join("merged");
    mkdir(&merged)?;
    // Where uppers go: a tmpfs of our own (see the module docs), or the disk.
    let uppers = match &spec.upper {
        Upper::Memory { size } if matches!(spec.rootfs, Rootfs::Overlay { .. }) => {
            let mem = dir.join("mem");
            mkdir(&mem)?;
            if size.contains(',') {
                return Err(format!("mounting a tmpfs for the upper: bad size `{size}`"));
            }
            let opts = cstr(&format!("mode=700,size={size}"))?;
            rustix::mount::mount("tmpfs", &mem, "tmpfs", MountFlags::empty(), opts.as_c_str())
                .map_err(ctx("mounting a tmpfs for the upper"))?;
            mem
        }
        _ => dir.to_path_buf(),
    };
    match &spec.rootfs {
        Rootfs::Overlay {
            lowers,
            opaque_xattr,
        } => mount_overlay(&uppers, &merged, lowers, opaque_xattr)?,
        Rootfs::Dir(root) => rustix::mount::mount_bind(root, &merged)
            .map_err(ctx(format!("bind-mounting {}", root.display())))?,
    }
    let root = Root::open(&merged).map_err(ctx("opening the root"))?;
    let mut created = Vec::new();
    mountpoints(&root, &spec, &mut created)?;
    mount_dev(&root)?;
    for (name, content) in [("hosts", &spec.hosts), ("resolv.conf", &spec.resolv_conf)] {
        let host = dir.join(name);
        std::fs::write(&host, content).map_err(ctx(format!("writing {}", host.display())))?;
        let target = ensure(&root, &format!("etc/{name}"), false, &mut created)?;
        bind(&host, &target, true)?;
    }
    for (i, m) in spec.mounts.iter().enumerate() {
        let rel = m.target.trim_start_matches('/');
        match &m.kind {
            MountKind::Tmpfs => {
                let t = ensure(&root, rel, true, &mut created)?;
                mount_fs(
                    &t,
                    "tmpfs",
                    "tmpfs",
                    MountFlags::NOSUID | MountFlags::NODEV,
                    "mode=755",
                )?;
            }
            MountKind::Bind { source, readonly } => {
                let t = ensure(&root, rel, source.is_dir(), &mut created)?;
                bind(source, &t, *readonly)?;
            }
            MountKind::Scratch { lower } => {
                let t = ensure(&root, rel, true, &mut created)?;
                scratch_overlay(&t, &uppers, i, lower, spec.rootless.is_some())?;
            }
            MountKind::Confined {
                root: src_root,
                path,
                scratch,
            } => {
                let src_root = Root::open(src_root).map_err(ctx("opening a mount source"))?;
                let fd = src_root
                    .open_at(path, OFlags::PATH)
                    .map_err(ctx(format!("mount source `{}`", path.display())))?;
                let is_dir = rustix::fs::fstat(&fd)
                    .is_ok_and(|st| FileType::from_raw_mode(st.st_mode) == FileType::Directory);
                let t = ensure(&root, rel, is_dir, &mut created)?;
                let source = PathBuf::from(fd_path(&fd));
                if *scratch {
                    scratch_overlay(&t, &uppers, i, &source, spec.rootless.is_some())?;
                } else {
                    bind(&source, &t, true)?;
                }
            }
        }
    }

    let passwd = read_in_root(&root, "etc/passwd");
    let group = read_in_root(&root, "etc/group");
    let identity = user::resolve(&spec.user, &passwd, &group).map_err(|e| e.to_string())?;
    // The working directory is created as docker does, and stays in the layer.
    let cwd = if spec.cwd.is_empty() { "/" } else { &spec.cwd };
    ensure(&root, cwd.trim_start_matches('/'), true, &mut Vec::new())?;

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
    let init = Init {
        argv: spec.argv.clone(),
        env,
        cwd: cwd.to_string(),
        hostname: spec.hostname.clone(),
        identity,
        stdin_null: spec.capture,
    };
    write_json(&dir.join("init.json"), &init)?;
    let mut report = Report {
        created,
        code: None,
        layer: None,
    };
    write_json(&dir.join("report.json"), &report)?;

    drop(root);
    // Stage 2 is a fork, not a new process image: the first process of the
    // new PID namespace, without paying for another exec.
    let code = match sys::fork().map_err(ctx("starting the sandbox init"))? {
        sys::Forked::Child => std::process::exit(stage2_main(dir)),
        sys::Forked::Parent(pid) => wait_for(pid, "the sandbox init")?,
    };
    if spec.capture {
        // The namespace is empty now. Keep the upper for the builder: unmount
        // the overlay (nothing may use the upper under it while it is read),
        // report, end our output so that the builder stops reading it, and
        // wait for the end of stdin.
        rustix::mount::unmount(&merged, UnmountFlags::DETACH)
            .map_err(ctx("unmounting the overlay"))?;
        if let (true, 0, Some(req), Rootfs::Overlay { lowers, .. }) =
            (ranged, code, &spec.layer, &spec.rootfs)
        {
            // Files the command gave to other users are readable only here.
            report.layer = Some(write_layer(
                req,
                &uppers.join("upper"),
                &report.created,
                lowers,
            )?);
        }
        report.code = Some(code);
        write_json(&dir.join("report.json"), &report)?;
        let null = rustix::fs::open("/dev/null", OFlags::RDWR | OFlags::CLOEXEC, Mode::empty())
            .map_err(ctx("opening /dev/null"))?;
        rustix::stdio::dup2_stdout(&null).map_err(ctx("closing stdout"))?;
        rustix::stdio::dup2_stderr(&null).map_err(ctx("closing stderr"))?;
        // Whatever arrives, or an error, we wait for the end.
        let _ = io::copy(&mut io::stdin().lock(), &mut io::sink());
    }
    if ranged && uppers == dir {
        // Files of subordinate ids on disk: only we can remove them.
        for d in ["upper", "work", "scratch"] {
            let _ = std::fs::remove_dir_all(dir.join(d));
        }
    }
    Ok(code)
}

/// Enters a new user namespace mapping container root to the invoking user
/// and, when the user has subordinate ids, container ids from 1 up to those
/// (applied by the setuid `newuidmap`/`newgidmap`, which must act from
/// outside: a helper forked before the unshare). Falls back to the single
/// mapping a process may write for itself. Returns whether the ranges are
/// mapped.
fn enter_user_namespace(map: super::IdMapping) -> Result<bool> {
    let helper = match map.sub {
        Some(sub) => Some(spawn_mapper(map, sub)?),
        None => None,
    };
    sys::unshare(UnshareFlags::NEWUSER).map_err(ctx("creating a user namespace"))?;
    if let Some((pid, go)) = helper {
        let _ = rustix::io::write(&go, b"x");
        drop(go);
        if wait_for(pid, "newuidmap")? == 0 {
            return Ok(true);
        }
    }
    // Without newuidmap a process may map only itself, and only after giving
    // up setgroups (user_namespaces(7)).
    std::fs::write("/proc/self/setgroups", "deny").map_err(ctx("writing setgroups"))?;
    std::fs::write("/proc/self/uid_map", format!("0 {} 1\n", map.uid))
        .map_err(ctx("writing uid_map"))?;
    std::fs::write("/proc/self/gid_map", format!("0 {} 1\n", map.gid))
        .map_err(ctx("writing gid_map"))?;
    Ok(false)
}

/// Forks the helper that maps our ids once we are in the new namespace:
/// it waits for a byte (or the end) on the returned pipe.
fn spawn_mapper(
    map: super::IdMapping,
    sub: super::SubIds,
) -> Result<(rustix::process::Pid, OwnedFd)> {
    let (r, w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
        .map_err(ctx("creating a pipe"))?;
    let target = rustix::process::getpid().as_raw_nonzero().to_string();
    match sys::fork().map_err(ctx("starting newuidmap"))? {
        sys::Forked::Child => {
            drop(w);
            let mut b = [0u8; 1];
            let _ = rustix::io::read(&r, &mut b);
            let apply = |tool: &str, own: u32, start: u32, count: u32| {
                std::process::Command::new(tool)
                    .arg(&target)
                    .args(["0", &own.to_string(), "1"])
                    .args(["1", &start.to_string(), &count.to_string()])
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::null())
                    .status()
                    .is_ok_and(|s| s.success())
            };
            let ok = apply("newuidmap", map.uid, sub.uid_start, sub.uid_count)
                && apply("newgidmap", map.gid, sub.gid_start, sub.gid_count);
            std::process::exit(if ok { 0 } else { 1 })
        }
        sys::Forked::Parent(pid) => Ok((pid, w)),
    }
}

/// Writes the layer of the changes in `upper` as `req` asks (the rootless
/// sandbox with subordinate ids; see [`super::LayerRequest`]).
fn write_layer(
    req: &super::LayerRequest,
    upper: &Path,
    created: &[String],
    lowers: &[PathBuf],
) -> Result<crate::layer::LayerDigests> {
    super::diff::remove_mountpoints(upper, created, lowers);
    let opts = super::diff::Options {
        epoch: req.epoch,
        rootless: None,
    };
    let entries = super::diff::capture(upper, &opts)
        .map_err(|e| format!("capturing the changes: {}: {}", e.path.display(), e.source))?;
    let entries = crate::layer::normalize(entries).map_err(ctx("capturing the changes"))?;
    let compression = crate::layer::Compression::from_name(&req.compression)
        .ok_or_else(|| format!("unknown compression `{}`", req.compression))?;
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&req.path)
        .map_err(ctx(format!("creating {}", req.path.display())))?;
    let (w, digests) = crate::layer::write(
        &entries,
        compression,
        io::BufWriter::new(file),
        None,
        &mut |_| {},
    )
    .map_err(ctx("writing the layer"))?;
    w.into_inner()
        .map_err(|e| format!("writing the layer: {}", e.error()))?;
    Ok(digests)
}

/// Creates, in `root`, every path the sandbox for `spec` mounts on, and
/// returns those it created (relative to `root`). Stage 1 does the same
/// (finding them all present) — done beforehand, on a private copy of the
/// filesystem, they are not changes of the command.
///
/// # Errors
/// A mount point that cannot be made.
pub fn prepare_mountpoints(
    root: &Path,
    spec: &Spec,
) -> std::result::Result<Vec<String>, super::Error> {
    let root = Root::open(root).map_err(|e| super::Error::Setup(e.to_string()))?;
    let mut created = Vec::new();
    mountpoints(&root, spec, &mut created).map_err(super::Error::Setup)?;
    Ok(created)
}

fn mountpoints(root: &Root, spec: &Spec, created: &mut Vec<String>) -> Result<()> {
    ensure(root, "proc", true, created)?;
    ensure(root, "dev", true, created)?;
    ensure(root, "etc/hosts", false, created)?;
    ensure(root, "etc/resolv.conf", false, created)?;
    for m in &spec.mounts {
        let rel = m.target.trim_start_matches('/');
        // Everything under /dev is on the sandbox's own tmpfs.
        if rel == "dev" || rel.starts_with("dev/") {
            continue;
        }
        let dir = match &m.kind {
            MountKind::Bind { source, .. } => source.is_dir(),
            MountKind::Confined { root, path, .. } => Root::open(root)
                .ok()
                .and_then(|r| r.stat(path).ok())
                .is_some_and(|st| FileType::from_raw_mode(st.st_mode) == FileType::Directory),
            MountKind::Tmpfs | MountKind::Scratch { .. } => true,
        };
        ensure(root, rel, dir, created)?;
    }
    Ok(())
}

fn stage2(dir: &Path) -> Result<i32> {
    let init: Init = read_json(&dir.join("init.json"))?;
    // pivot_root moves every process of the mount namespace whose root is
    // the old one: a namespace of our own keeps stage 1 where it is, able
    // to hand over the upper afterwards.
    sys::unshare(UnshareFlags::NEWNS).map_err(ctx("creating the container's mount namespace"))?;
    let merged = dir.join("merged");
    // Only a process inside the new PID namespace mounts its /proc.
    rustix::mount::mount(
        "proc",
        merged.join("proc"),
        "proc",
        MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC,
        None,
    )
    .map_err(ctx("mounting /proc"))?;
    rustix::process::chdir(&merged).map_err(ctx("entering the root"))?;
    // pivot_root(".", ".") stacks the old root on the new one, and the
    // detach removes it: no directory for the old root is needed (and so
    // none ends up in the layer). See pivot_root(2), NOTES.
    rustix::process::pivot_root(".", ".").map_err(ctx("pivot_root"))?;
    rustix::mount::unmount(".", UnmountFlags::DETACH).map_err(ctx("detaching the host root"))?;
    rustix::process::chdir("/").map_err(ctx("chdir /"))?;
    rustix::system::sethostname(init.hostname.as_bytes()).map_err(ctx("setting the hostname"))?;

    let id = &init.identity;
    for cap in (CapabilitySet::all() - KEPT_CAPABILITIES).iter() {
        // Caps this kernel does not know are EINVAL: nothing to drop.
        match rustix::thread::remove_capability_from_bounding_set(cap) {
            Ok(()) | Err(rustix::io::Errno::INVAL) => {}
            Err(e) => return Err(format!("dropping capabilities: {e}")),
        }
    }
    let groups: Vec<rustix::process::Gid> = id
        .groups
        .iter()
        .map(|g| rustix::process::Gid::from_raw(*g))
        .collect();
    // A user namespace without newuidmap has setgroups denied; groups are
    // then whatever the mapping gives.
    let _ = rustix::thread::set_thread_groups(&groups);
    let gid = rustix::process::Gid::from_raw(id.gid);
    let uid = rustix::process::Uid::from_raw(id.uid);
    rustix::thread::set_thread_res_gid(gid, gid, gid)
        .map_err(ctx(format!("setting group {}", id.gid)))?;
    rustix::thread::set_thread_res_uid(uid, uid, uid)
        .map_err(ctx(format!("setting user {}", id.uid)))?;

    let Some((prog, args)) = init.argv.split_first() else {
        return Err("no command given".into());
    };
    let child = std::process::Command::new(prog)
        .args(args)
        .stdin(if init.stdin_null {
            std::process::Stdio::null()
        } else {
            std::process::Stdio::inherit()
        })
        .env_clear()
        .envs(init.env.iter().map(|(k, v)| (k, v)))
        .current_dir(&init.cwd)
        .spawn()
        .map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => {
                format!("exec: \"{prog}\": executable file not found in $PATH")
            }
            _ => format!("exec: \"{prog}\": {e}"),
        })?;
    let pid = rustix::process::Pid::from_child(&child);
    // As PID 1, reap every orphan until the command itself exits; leaving
    // then kills whatever it left behind.
    loop {
        match rustix::process::wait(rustix::process::WaitOptions::empty()) {
            Ok(Some((p, status))) if p == pid => {
                return Ok(exit_code(status));
            }
            Ok(_) | Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(format!("waiting for the command: {e}")),
        }
    }
}

/// Waits for our child `pid` and returns its [`exit_code`].
fn wait_for(pid: rustix::process::Pid, what: &str) -> Result<i32> {
    loop {
        match rustix::process::waitpid(Some(pid), rustix::process::WaitOptions::empty()) {
            Ok(Some((_, status))) => return Ok(exit_code(status)),
            Ok(None) | Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(format!("waiting for {what}: {e}")),
        }
    }
}

/// The shell's convention: the exit code, or 128 + the signal that killed it.
fn exit_code(status: rustix::process::WaitStatus) -> i32 {
    match (status.exit_status(), status.terminating_signal()) {
        (Some(c), _) => c,
        (None, Some(s)) => 128 + s,
        _ => 128,
    }
}

fn write_json<T: Serialize>(path: &Path, v: &T) -> Result<()> {
    let bytes = serde_json::to_vec(v).map_err(ctx("encoding"))?;
    std::fs::write(path, bytes).map_err(ctx(format!("writing {}", path.display())))
}

fn mkdir(p: &Path) -> Result<()> {
    std::fs::create_dir_all(p).map_err(ctx(format!("creating {}", p.display())))
}

fn mount_overlay(dir: &Path, merged: &Path, lowers: &[PathBuf], xattr: &str) -> Result<()> {
    // Absolute: the options are read after we change into the layers' directory.
    let dir = std::path::absolute(dir).map_err(ctx("resolving the sandbox directory"))?;
    let upper = dir.join("upper");
    let work = dir.join("work");
    mkdir(&upper)?;
    mkdir(&work)?;
    let mut lowers: Vec<PathBuf> = lowers.to_vec();
    if lowers.is_empty() {
        // FROM scratch: overlay needs a lower layer; an empty one it is.
        let empty = dir.join("empty");
        mkdir(&empty)?;
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
    for n in &names {
        if n.contains([',', ':']) {
            return Err(format!(
                "layer path `{n}` cannot be named in overlay options"
            ));
        }
    }
    let mut opts = format!(
        "lowerdir={},upperdir={},workdir={}",
        names.join(":"),
        upper.display(),
        work.display()
    );
    if xattr.starts_with("user.") {
        // userxattr (a user namespace) already rules out redirects, the
        // index and metacopy, and refuses options that name them.
        opts.push_str(",userxattr");
    } else {
        // Plain copy-ups only: a redirect or a metadata-only copy in the
        // upper directory would not be a layer.
        opts.push_str(",redirect_dir=off,index=off,metacopy=off");
    }
    if opts.len() >= 4096 {
        return Err(format!(
            "{} layers are too many for one overlay mount",
            lowers.len()
        ));
    }
    let here = std::env::current_dir().map_err(ctx("reading the working directory"))?;
    rustix::process::chdir(&base).map_err(ctx(format!("entering {}", base.display())))?;
    let data = cstr(&opts)?;
    let r = rustix::mount::mount(
        "overlay",
        merged,
        "overlay",
        MountFlags::empty(),
        data.as_c_str(),
    );
    let _ = rustix::process::chdir(&here);
    r.map_err(ctx("mounting the overlay"))
}

/// A writable view of `lower` whose changes are discarded: an overlay with
/// a throwaway upper (the `i`th mount's) under `uppers`.
fn scratch_overlay(
    target: &OwnedFd,
    uppers: &Path,
    i: usize,
    lower: &Path,
    rootless: bool,
) -> Result<()> {
    let scratch = uppers.join("scratch").join(i.to_string());
    let (upper, work) = (scratch.join("upper"), scratch.join("work"));
    mkdir(&upper)?;
    mkdir(&work)?;
    let l = lower.display().to_string();
    if l.contains([',', ':']) {
        return Err(format!(
            "cannot mount `{l}` writable: its path has `,` or `:`"
        ));
    }
    let opts = format!(
        "lowerdir={l},upperdir={},workdir={}{}",
        upper.display(),
        work.display(),
        if rootless { ",userxattr" } else { "" }
    );
    mount_fs(target, "overlay", "overlay", MountFlags::empty(), &opts)
}

/// `/dev` as docker makes it: a tmpfs with the harmless devices bound from
/// the host (binding works in a user namespace, where mknod does not), a
/// private devpts, and /dev/shm.
fn mount_dev(root: &Root) -> Result<()> {
    let dev = ensure(root, "dev", true, &mut Vec::new())?;
    mount_fs(
        &dev,
        "tmpfs",
        "tmpfs",
        MountFlags::NOSUID | MountFlags::STRICTATIME,
        "mode=755,size=65536k",
    )?;
    for name in ["null", "zero", "full", "random", "urandom", "tty"] {
        let target = ensure(root, &format!("dev/{name}"), false, &mut Vec::new())?;
        bind(Path::new(&format!("/dev/{name}")), &target, false)?;
    }
    let pts = ensure(root, "dev/pts", true, &mut Vec::new())?;
    mount_fs(
        &pts,
        "devpts",
        "devpts",
        MountFlags::NOSUID | MountFlags::NOEXEC,
        "newinstance,ptmxmode=0666,mode=0620",
    )?;
    let shm = ensure(root, "dev/shm", true, &mut Vec::new())?;
    mount_fs(
        &shm,
        "shm",
        "tmpfs",
        MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC,
        "mode=1777,size=65536k",
    )?;
    let devfd = open_in(
        root.fd(),
        Path::new("dev"),
        OFlags::DIRECTORY | OFlags::RDONLY,
    )
    .map_err(ctx("opening /dev"))?;
    for (link, target) in [
        ("ptmx", "pts/ptmx"),
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        rustix::fs::symlinkat(target, devfd.as_fd(), link)
            .map_err(ctx(format!("creating /dev/{link}")))?;
    }
    Ok(())
}

/// The path by which mount(2) reaches an `O_PATH` descriptor: the kernel
/// follows the magic link to the very inode that was resolved inside the
/// root, so a symlink in the image cannot redirect a mount to the host.
fn fd_path(fd: &OwnedFd) -> String {
    format!("/proc/self/fd/{}", fd.as_raw_fd())
}

fn bind(source: &Path, target: &OwnedFd, readonly: bool) -> Result<()> {
    let t = fd_path(target);
    // Where the target is, resolved before the mount hides it.
    let real = std::fs::read_link(&t).map_err(ctx("resolving a mount target"))?;
    rustix::mount::mount_bind_recursive(source, &t)
        .map_err(ctx(format!("bind-mounting {}", source.display())))?;
    if readonly {
        // A bind mount takes MS_RDONLY only on a remount of the new mount
        // (the descriptor still names the one below), keeping the flags a
        // user namespace may not drop.
        let mut flags = MountFlags::BIND | MountFlags::RDONLY;
        if let Ok(st) = rustix::fs::statvfs(&real) {
            let f = st.f_flag;
            for (bit, flag) in [
                (rustix::fs::StatVfsMountFlags::NOSUID, MountFlags::NOSUID),
                (rustix::fs::StatVfsMountFlags::NODEV, MountFlags::NODEV),
                (rustix::fs::StatVfsMountFlags::NOEXEC, MountFlags::NOEXEC),
            ] {
                if f.contains(bit) {
                    flags |= flag;
                }
            }
        }
        rustix::mount::mount_remount(&real, flags, "")
            .map_err(ctx(format!("making {} read-only", source.display())))?;
    }
    Ok(())
}

fn mount_fs(target: &OwnedFd, source: &str, fs: &str, flags: MountFlags, data: &str) -> Result<()> {
    let data = cstr(data)?;
    rustix::mount::mount(source, fd_path(target), fs, flags, data.as_c_str())
        .map_err(ctx(format!("mounting {fs} ({source})")))
}

/// Opens (creating as needed) `rel` inside the root as an `O_PATH`
/// descriptor; a directory when `dir`, else a file. Whatever it creates is
/// appended to `created` (as resolved, relative to the root).
fn ensure(root: &Root, rel: &str, dir: bool, created: &mut Vec<String>) -> Result<OwnedFd> {
    let rel = rel.trim_matches('/');
    let flags = OFlags::PATH | OFlags::CLOEXEC;
    match open_in(root.fd(), Path::new(rel), flags) {
        Ok(fd) => return Ok(fd),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(format!("opening /{rel}: {e}")),
    }
    let (parent, name) = match rel.rsplit_once('/') {
        Some((p, n)) => (p, n),
        None => ("", rel),
    };
    let pfd = if parent.is_empty() {
        open_in(
            root.fd(),
            Path::new("."),
            OFlags::DIRECTORY | OFlags::RDONLY,
        )
    } else {
        ensure(root, parent, true, created)?;
        open_in(
            root.fd(),
            Path::new(parent),
            OFlags::DIRECTORY | OFlags::RDONLY,
        )
    }
    .map_err(ctx(format!("opening /{parent}")))?;
    if dir {
        rustix::fs::mkdirat(pfd.as_fd(), name, Mode::from_raw_mode(0o755))
            .map_err(ctx(format!("creating /{rel}")))?;
    } else {
        rustix::fs::openat(
            pfd.as_fd(),
            name,
            OFlags::CREATE | OFlags::EXCL | OFlags::WRONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o644),
        )
        .map_err(ctx(format!("creating /{rel}")))?;
    }
    let fd = open_in(root.fd(), Path::new(rel), flags).map_err(ctx(format!("opening /{rel}")))?;
    // Where it really is (the parent may have been reached through a symlink).
    let real = resolved(root, &fd).unwrap_or_else(|| rel.to_string());
    created.push(real);
    Ok(fd)
}

fn resolved(root: &Root, fd: &OwnedFd) -> Option<String> {
    let r = std::fs::read_link(format!("/proc/self/fd/{}", root.fd().as_raw_fd())).ok()?;
    let p = std::fs::read_link(fd_path(fd)).ok()?;
    Some(p.strip_prefix(&r).ok()?.to_string_lossy().into_owned())
}

fn read_in_root(root: &Root, rel: &str) -> String {
    let Ok(fd) = open_in(root.fd(), Path::new(rel), OFlags::RDONLY | OFlags::CLOEXEC) else {
        return String::new();
    };
    let Ok(st) = rustix::fs::fstat(&fd) else {
        return String::new();
    };
    if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
        return String::new();
    }
    let mut s = String::new();
    let _ = io::Read::read_to_string(&mut std::fs::File::from(fd), &mut s);
    s
}
