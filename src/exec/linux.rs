//! The real [`Syscall`](super::plan::Syscall): the kernel, through rustix
//! and the few `unsafe` wrappers of `sys`. Paths inside the container's root
//! resolve through `confine` (openat2 `RESOLVE_IN_ROOT`), and mounts target
//! the resolved descriptor, so no symlink in an image redirects a mount.

// std::fs, not fs_err: a failure here becomes a `SetupError` (the phase, the
// path, the errno), and fs_err's wrapper hides the errno.
#![allow(clippy::disallowed_methods)]

use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use rustix::fs::{FileType, Mode, OFlags};
use rustix::mount::{MountFlags, MountPropagationFlags, UnmountFlags};
use rustix::thread::{CapabilitySet, CapabilitySets, UnshareFlags};

use super::IdMapping;
use super::plan::{Exec, Syscall, Target};
use super::sys;
use crate::confine::{Root, open_in};

/// The kernel, with the little state the plan's steps share.
#[derive(Default)]
pub struct Linux {
    root: Option<Root>,
    /// Paths created as mount points (relative to the root).
    pub created: Vec<String>,
    /// Whether the user namespace maps subordinate ids.
    pub ranged: bool,
    seccomp: Option<Vec<u8>>,
    /// Descriptors named by `/proc/self/fd` paths handed to mount(2).
    held: Vec<OwnedFd>,
    /// The master side of the command's pseudo-terminal ([`Exec::tty`]).
    pub pty: Option<OwnedFd>,
    /// Variables read by `read_env`, for the command (they win).
    env: Vec<(std::ffi::OsString, std::ffi::OsString)>,
}

/// At most `max` bytes of `path` (more is `EFBIG`).
fn read_bounded(path: &Path, max: u64) -> io::Result<Vec<u8>> {
    use std::io::Read;
    let mut v = Vec::new();
    std::fs::File::open(path)?
        .take(max + 1)
        .read_to_end(&mut v)?;
    if v.len() as u64 > max {
        return Err(io::Error::from_raw_os_error(libc::EFBIG));
    }
    Ok(v)
}

impl Linux {
    /// The opened root.
    pub fn root(&self) -> io::Result<&Root> {
        self.root
            .as_ref()
            .ok_or_else(|| io::Error::from_raw_os_error(libc::EBADF))
    }

    /// Lets go of the root (before a fork, so the container gets no
    /// descriptor of it).
    pub fn close_root(&mut self) {
        self.root = None;
        self.held.clear();
    }

    /// Reads `rel` inside the root when it is a regular file ("" otherwise:
    /// an image without `/etc/passwd`).
    pub fn read_in_root(&self, rel: &str) -> String {
        let Ok(root) = self.root() else {
            return String::new();
        };
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

    fn target(&mut self, t: &Target) -> io::Result<PathBuf> {
        match t {
            Target::Host(p) => Ok(p.clone()),
            Target::InRoot { rel, dir } => {
                let fd = self.ensure_fd(rel, *dir, false)?;
                // The path by which mount(2) reaches an `O_PATH` descriptor:
                // the kernel follows the magic link to the very inode that
                // was resolved inside the root. The descriptor stays open
                // (leaked until the stage execs or exits) so the number
                // stays valid for the mount call.
                let p = PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()));
                self.held.push(fd);
                Ok(p)
            }
        }
    }

    /// Opens (creating as needed) `rel` inside the root as an `O_PATH`
    /// descriptor; a directory when `dir`, else a file. What it creates is
    /// recorded in `created` when `record`.
    fn ensure_fd(&mut self, rel: &str, dir: bool, record: bool) -> io::Result<OwnedFd> {
        let root = self.root()?;
        let (fd, made) = ensure(root, rel.trim_matches('/'), dir)?;
        if record {
            self.created.extend(made);
        }
        Ok(fd)
    }
}

/// Opens `rel` in `root`, creating it (and missing parents) when absent;
/// returns what it created, as resolved relative to the root.
fn ensure(root: &Root, rel: &str, dir: bool) -> io::Result<(OwnedFd, Vec<String>)> {
    let flags = OFlags::PATH | OFlags::CLOEXEC;
    match open_in(root.fd(), Path::new(rel), flags) {
        Ok(fd) => return Ok((fd, Vec::new())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let (parent, name) = match rel.rsplit_once('/') {
        Some((p, n)) => (p, n),
        None => ("", rel),
    };
    let mut made = Vec::new();
    if !parent.is_empty() {
        made = ensure(root, parent, true)?.1;
    }
    let pfd = open_in(
        root.fd(),
        Path::new(if parent.is_empty() { "." } else { parent }),
        OFlags::DIRECTORY | OFlags::RDONLY,
    )?;
    if dir {
        rustix::fs::mkdirat(pfd.as_fd(), name, Mode::from_raw_mode(0o755))?;
    } else {
        rustix::fs::openat(
            pfd.as_fd(),
            name,
            OFlags::CREATE | OFlags::EXCL | OFlags::WRONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o644),
        )?;
    }
    let fd = open_in(root.fd(), Path::new(rel), flags)?;
    // Where it really is (the parent may have been reached through a symlink).
    made.push(resolved(root, &fd).unwrap_or_else(|| rel.to_string()));
    Ok((fd, made))
}

fn resolved(root: &Root, fd: &OwnedFd) -> Option<String> {
    let r = std::fs::read_link(format!("/proc/self/fd/{}", root.fd().as_raw_fd())).ok()?;
    let p = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd())).ok()?;
    Some(p.strip_prefix(&r).ok()?.to_string_lossy().into_owned())
}

/// The flags a read-only remount of the mount at `path` must keep: a user
/// namespace may not clear `nosuid`, `nodev` or `noexec` of a mount it got
/// from its parent.
fn locked_flags(path: &Path) -> MountFlags {
    let mut flags = MountFlags::empty();
    if let Ok(st) = rustix::fs::statvfs(path) {
        for (bit, flag) in [
            (rustix::fs::StatVfsMountFlags::NOSUID, MountFlags::NOSUID),
            (rustix::fs::StatVfsMountFlags::NODEV, MountFlags::NODEV),
            (rustix::fs::StatVfsMountFlags::NOEXEC, MountFlags::NOEXEC),
        ] {
            if st.f_flag.contains(bit) {
                flags |= flag;
            }
        }
    }
    flags
}

/// Bind `source` onto `target` (recursively), then remount it with `extra`
/// (and read-only when asked): a bind mount takes those flags only on a
/// remount of the new mount.
/// `path` inside `root` as an `O_PATH` descriptor, resolved by `confine`.
fn confined_source(root: &Path, path: &Path) -> io::Result<OwnedFd> {
    let root = crate::confine::Root::open(root).map_err(io::Error::other)?;
    root.open_at(path, OFlags::PATH)
}

/// The path by which mount(2) reaches a descriptor.
fn fd_path(fd: &OwnedFd) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

fn bind_at(source: &Path, target: &Path, readonly: bool, extra: MountFlags) -> io::Result<()> {
    // Where the target is, resolved before the mount hides it (a
    // /proc/self/fd path would name the covered inode after the mount).
    let real = std::fs::read_link(target).unwrap_or_else(|_| target.to_path_buf());
    rustix::mount::mount_bind_recursive(source, target)?;
    if readonly || !extra.is_empty() {
        let mut flags = MountFlags::BIND | extra | locked_flags(&real);
        if readonly {
            flags |= MountFlags::RDONLY;
        }
        rustix::mount::mount_remount(&real, flags, "")?;
    }
    Ok(())
}

impl Syscall for Linux {
    fn close_range(&mut self, first: u32, cloexec: bool) -> io::Result<()> {
        sys::close_range(first, cloexec)
    }

    fn join_cgroup(&mut self, dir: &Path) -> io::Result<()> {
        // "0" is the writing process. On v1, `tasks` moves only the calling
        // thread — all of stage 1, which is single-threaded here — and so
        // skips the global threadgroup lock whose RCU grace period makes a
        // `cgroup.procs` write cost ~6 ms instead of ~0.1 ms. v2 has no
        // `tasks` file.
        let tasks = dir.join("tasks");
        if tasks.exists() {
            std::fs::write(tasks, b"0")
        } else {
            std::fs::write(dir.join("cgroup.procs"), b"0")
        }
    }

    fn enter_user_namespace(&mut self, map: &IdMapping) -> io::Result<()> {
        self.ranged = enter_user_namespace(*map)?;
        Ok(())
    }

    fn setns(&mut self, pid: i32, ns: &str) -> io::Result<()> {
        let kind = match ns {
            "user" => rustix::thread::LinkNameSpaceType::User,
            _ => rustix::thread::LinkNameSpaceType::Network,
        };
        let fd = rustix::fs::open(
            format!("/proc/{pid}/ns/{ns}"),
            OFlags::RDONLY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        rustix::thread::move_into_link_name_space(fd.as_fd(), Some(kind))?;
        Ok(())
    }

    fn unshare(&mut self, flags: UnshareFlags) -> io::Result<()> {
        sys::unshare(flags)
    }

    fn loopback_up(&mut self) -> io::Result<()> {
        sys::loopback_up()
    }

    fn make_private(&mut self) -> io::Result<()> {
        Ok(rustix::mount::mount_change(
            "/",
            MountPropagationFlags::PRIVATE | MountPropagationFlags::REC,
        )?)
    }

    fn mkdir_all(&mut self, path: &Path) -> io::Result<()> {
        std::fs::create_dir_all(path)
    }

    fn write_file(&mut self, path: &Path, content: &[u8]) -> io::Result<()> {
        std::fs::write(path, content)
    }

    fn mount_overlay(
        &mut self,
        base: &Path,
        target: &Path,
        data: &str,
        flags: MountFlags,
    ) -> io::Result<()> {
        let here = std::env::current_dir()?;
        rustix::process::chdir(base)?;
        let data = cstring(data)?;
        let r = rustix::mount::mount("overlay", target, "overlay", flags, data.as_c_str());
        let _ = rustix::process::chdir(&here);
        Ok(r?)
    }

    fn open_root(&mut self, path: &Path) -> io::Result<()> {
        self.root = Some(Root::open(path).map_err(|e| match e {
            crate::confine::Error::Open { source, .. } => source,
            other => io::Error::other(other.to_string()),
        })?);
        Ok(())
    }

    fn ensure(&mut self, rel: &str, dir: bool, record: bool) -> io::Result<()> {
        self.ensure_fd(rel, dir, record).map(drop)
    }

    fn mount(
        &mut self,
        source: &str,
        target: &Target,
        fstype: &str,
        flags: MountFlags,
        data: &str,
    ) -> io::Result<()> {
        let t = self.target(target)?;
        let data = cstring(data)?;
        Ok(rustix::mount::mount(
            source,
            &t,
            fstype,
            flags,
            data.as_c_str(),
        )?)
    }

    fn bind(
        &mut self,
        source: &Path,
        target: &Target,
        readonly: bool,
        nodev: bool,
    ) -> io::Result<()> {
        let t = self.target(target)?;
        let extra = if nodev {
            MountFlags::NODEV
        } else {
            MountFlags::empty()
        };
        bind_at(source, &t, readonly, extra)
    }

    fn bind_confined(
        &mut self,
        root: &Path,
        path: &Path,
        target: &Target,
        nodev: bool,
    ) -> io::Result<()> {
        let source = confined_source(root, path)?;
        let t = self.target(target)?;
        let extra = if nodev {
            MountFlags::NODEV
        } else {
            MountFlags::empty()
        };
        bind_at(&fd_path(&source), &t, true, extra)
    }

    fn overlay_confined(
        &mut self,
        root: &Path,
        path: &Path,
        target: &Target,
        rest: &str,
        flags: MountFlags,
    ) -> io::Result<()> {
        let lower = confined_source(root, path)?;
        let t = self.target(target)?;
        // overlayfs follows the magic link to the very directory resolved
        // inside the root.
        let data = cstring(&format!("lowerdir={},{rest}", fd_path(&lower).display()))?;
        Ok(rustix::mount::mount(
            "overlay",
            &t,
            "overlay",
            flags,
            data.as_c_str(),
        )?)
    }

    fn symlink(&mut self, rel: &str, target: &str) -> io::Result<()> {
        let root = self.root()?;
        let (parent, name) = rel.rsplit_once('/').unwrap_or(("", rel));
        let dir = open_in(
            root.fd(),
            Path::new(if parent.is_empty() { "." } else { parent }),
            OFlags::DIRECTORY | OFlags::RDONLY,
        )?;
        Ok(rustix::fs::symlinkat(target, dir.as_fd(), name)?)
    }

    fn read_seccomp(&mut self, path: &Path) -> io::Result<()> {
        self.seccomp = Some(std::fs::read(path)?);
        Ok(())
    }

    fn copy_file(&mut self, from: &Path, to: &Path, max: u64, mode: u32) -> io::Result<()> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let bytes = read_bounded(from, max)?;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(to)?;
        f.write_all(&bytes)?;
        // create_new's mode went through the umask.
        rustix::fs::fchmod(&f, Mode::from_raw_mode(mode))?;
        Ok(())
    }

    fn own(&mut self, path: &Path, uid: u32, gid: u32, mode: u32) -> io::Result<()> {
        // Ids of the (user) namespace this stage is in; the kernel refuses
        // unmapped ones.
        rustix::fs::chown(
            path,
            Some(rustix::fs::Uid::from_raw(uid)),
            Some(rustix::fs::Gid::from_raw(gid)),
        )?;
        Ok(rustix::fs::chmod(path, Mode::from_raw_mode(mode))?)
    }

    fn read_env(&mut self, name: &str, path: &Path, max: u64) -> io::Result<()> {
        use std::os::unix::ffi::OsStringExt;
        let value = std::ffi::OsString::from_vec(read_bounded(path, max)?);
        self.env.push((name.into(), value));
        Ok(())
    }

    fn pivot_root(&mut self, root: &Path) -> io::Result<()> {
        self.root = None;
        rustix::process::chdir(root)?;
        // pivot_root(".", ".") stacks the old root on the new one, and the
        // detach removes it: no directory for the old root is needed (and
        // so none ends up in the layer). See pivot_root(2), NOTES.
        rustix::process::pivot_root(".", ".")?;
        rustix::mount::unmount(".", UnmountFlags::DETACH)?;
        Ok(rustix::process::chdir("/")?)
    }

    fn mask(&mut self, path: &str) -> io::Result<()> {
        // runc's maskPath: an empty read-only tmpfs over a directory,
        // /dev/null over anything else; what this kernel lacks is skipped.
        match std::fs::metadata(path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
            Ok(m) if m.is_dir() => Ok(rustix::mount::mount(
                "tmpfs",
                path,
                "tmpfs",
                MountFlags::RDONLY | MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC,
                c"mode=555",
            )?),
            Ok(_) => Ok(rustix::mount::mount_bind("/dev/null", path)?),
        }
    }

    fn readonly(&mut self, path: &str) -> io::Result<()> {
        match std::fs::symlink_metadata(path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
            Ok(_) => bind_at(Path::new(path), Path::new(path), true, MountFlags::empty()),
        }
    }

    fn sethostname(&mut self, name: &str) -> io::Result<()> {
        Ok(rustix::system::sethostname(name.as_bytes())?)
    }

    fn session_keyring(&mut self) -> io::Result<()> {
        sys::join_session_keyring()
    }

    fn nproc(&mut self, limit: u64) -> io::Result<()> {
        let l = rustix::process::Rlimit {
            current: Some(limit),
            maximum: Some(limit),
        };
        Ok(rustix::process::setrlimit(
            rustix::process::Resource::Nproc,
            l,
        )?)
    }

    fn rlimit(&mut self, limit: &super::Ulimit) -> io::Result<()> {
        use rustix::process::Resource;
        let resource = match limit.name.as_str() {
            "core" => Resource::Core,
            "cpu" => Resource::Cpu,
            "data" => Resource::Data,
            "fsize" => Resource::Fsize,
            "locks" => Resource::Locks,
            "memlock" => Resource::Memlock,
            "msgqueue" => Resource::Msgqueue,
            "nice" => Resource::Nice,
            "nofile" => Resource::Nofile,
            "nproc" => Resource::Nproc,
            "rss" => Resource::Rss,
            "rtprio" => Resource::Rtprio,
            "rttime" => Resource::Rttime,
            "sigpending" => Resource::Sigpending,
            "stack" => Resource::Stack,
            other => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("unknown resource `{other}`"),
                ));
            }
        };
        rustix::process::setrlimit(
            resource,
            rustix::process::Rlimit {
                current: limit.soft,
                maximum: limit.hard,
            },
        )
        .map_err(|e| {
            let e = io::Error::from(e);
            io::Error::new(
                e.kind(),
                format!(
                    "--ulimit {limit}: {e} (raising a limit above the caller's needs CAP_SYS_RESOURCE)"
                ),
            )
        })
    }

    fn bounding(&mut self, keep: CapabilitySet) -> io::Result<()> {
        for cap in (CapabilitySet::all() - keep).iter() {
            // Caps this kernel does not know are EINVAL: nothing to drop.
            match rustix::thread::remove_capability_from_bounding_set(cap) {
                Ok(()) | Err(rustix::io::Errno::INVAL) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    fn keep_caps(&mut self, on: bool) -> io::Result<()> {
        Ok(rustix::thread::set_keep_capabilities(on)?)
    }

    fn groups(&mut self, groups: &[u32]) -> io::Result<()> {
        let groups: Vec<rustix::process::Gid> = groups
            .iter()
            .map(|g| rustix::process::Gid::from_raw(*g))
            .collect();
        Ok(rustix::thread::set_thread_groups(&groups)?)
    }

    fn ids(&mut self, uid: u32, gid: u32) -> io::Result<()> {
        let gid = rustix::process::Gid::from_raw(gid);
        let uid = rustix::process::Uid::from_raw(uid);
        rustix::thread::set_thread_res_gid(gid, gid, gid)?;
        Ok(rustix::thread::set_thread_res_uid(uid, uid, uid)?)
    }

    fn raise_effective(&mut self) -> io::Result<()> {
        let mut s = rustix::thread::capabilities(None)?;
        s.effective = s.permitted;
        Ok(rustix::thread::set_capabilities(None, s)?)
    }

    fn load_seccomp(&mut self) -> io::Result<()> {
        let p = self
            .seccomp
            .take()
            .ok_or_else(|| io::Error::from_raw_os_error(libc::ENOENT))?;
        sys::load_seccomp(&p)
    }

    fn capabilities(&mut self, sets: CapabilitySets) -> io::Result<()> {
        Ok(rustix::thread::set_capabilities(None, sets)?)
    }

    fn clear_ambient(&mut self) -> io::Result<()> {
        Ok(rustix::thread::clear_ambient_capability_set()?)
    }

    fn exec(&mut self, e: &Exec) -> io::Result<i32> {
        let Some((prog, args)) = e.argv.split_first() else {
            return Err(io::Error::from_raw_os_error(libc::ENOENT));
        };
        let mut cmd = std::process::Command::new(prog);
        cmd.args(args)
            .stdin(if e.stdin_null {
                std::process::Stdio::null()
            } else {
                std::process::Stdio::inherit()
            })
            .env_clear()
            .envs(e.env.iter().map(|(k, v)| (k, v)))
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .current_dir(&e.cwd);
        if e.tty {
            let (master, slave) = open_pty()?;
            cmd.stdin(slave.try_clone()?)
                .stdout(slave.try_clone()?)
                .stderr(slave);
            super::sys::controlling_terminal(&mut cmd);
            self.pty = Some(master);
        }
        let child = cmd.spawn()?;
        Ok(rustix::process::Pid::from_child(&child)
            .as_raw_nonzero()
            .get())
    }
}

/// A new pseudo-terminal of the devpts at `/dev/pts` (the sandbox's own
/// instance): the master, and the slave opened without becoming anyone's
/// controlling terminal. The slave starts with the window size of our
/// stdin or stdout, whichever is a terminal.
fn open_pty() -> io::Result<(OwnedFd, OwnedFd)> {
    use rustix::pty::{OpenptFlags, grantpt, openpt, ptsname, unlockpt};
    let master = openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC)?;
    grantpt(&master)?;
    unlockpt(&master)?;
    let name = ptsname(&master, Vec::new())?;
    let slave = rustix::fs::open(
        name.as_c_str(),
        rustix::fs::OFlags::RDWR | rustix::fs::OFlags::NOCTTY | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )?;
    if let Some(ws) = outer_winsize() {
        let _ = rustix::termios::tcsetwinsize(&slave, ws);
    }
    Ok((master, slave))
}

/// The window size of our stdin or stdout, whichever is a terminal.
pub(super) fn outer_winsize() -> Option<rustix::termios::Winsize> {
    [rustix::stdio::stdin(), rustix::stdio::stdout()]
        .into_iter()
        .find_map(|fd| rustix::termios::tcgetwinsize(fd).ok())
}

/// Enters a new user namespace mapping container root to the invoking user
/// and, when the user has subordinate ids, container ids from 1 up to those
/// (applied by the setuid `newuidmap`/`newgidmap`, which must act from
/// outside: a helper forked before the unshare). Falls back to the single
/// mapping a process may write for itself. Returns whether the ranges are
/// mapped.
pub fn enter_user_namespace(map: IdMapping) -> io::Result<bool> {
    let helper = match map.sub {
        Some(sub) => Some(spawn_mapper(map, sub)?),
        None => None,
    };
    sys::unshare(UnshareFlags::NEWUSER)?;
    if let Some((pid, go)) = helper {
        let _ = rustix::io::write(&go, b"x");
        drop(go);
        if wait_for(pid)? == 0 {
            return Ok(true);
        }
    }
    // Without newuidmap a process may map only itself, and only after giving
    // up setgroups (user_namespaces(7)).
    std::fs::write("/proc/self/setgroups", "deny")?;
    std::fs::write("/proc/self/uid_map", format!("0 {} 1\n", map.uid))?;
    std::fs::write("/proc/self/gid_map", format!("0 {} 1\n", map.gid))?;
    Ok(false)
}

/// Forks the helper that maps our ids once we are in the new namespace:
/// it waits for a byte (or the end) on the returned pipe.
fn spawn_mapper(map: IdMapping, sub: super::SubIds) -> io::Result<(rustix::process::Pid, OwnedFd)> {
    let (r, w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?;
    let target = rustix::process::getpid().as_raw_nonzero().to_string();
    match sys::fork()? {
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

/// Waits for our child `pid` and returns its [`exit_code`].
pub fn wait_for(pid: rustix::process::Pid) -> io::Result<i32> {
    loop {
        match rustix::process::waitpid(Some(pid), rustix::process::WaitOptions::empty()) {
            Ok(Some((_, status))) => return Ok(exit_code(status)),
            Ok(None) | Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
}

/// The shell's convention: the exit code, or 128 + the signal that killed it.
pub fn exit_code(status: rustix::process::WaitStatus) -> i32 {
    match (status.exit_status(), status.terminating_signal()) {
        (Some(c), _) => c,
        (None, Some(s)) => 128 + s,
        _ => 128,
    }
}

/// Creates, in `root`, every path of `mountpoints` and returns those it
/// created (relative to `root`).
///
/// # Errors
/// A mount point that cannot be made.
pub fn prepare(root: &Path, mountpoints: &[(String, bool)]) -> io::Result<Vec<String>> {
    let mut l = Linux::default();
    l.open_root(root)?;
    for (rel, dir) in mountpoints {
        l.ensure(rel, *dir, true)?;
    }
    Ok(l.created)
}

fn cstring(s: &str) -> io::Result<std::ffi::CString> {
    std::ffi::CString::new(s).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}
