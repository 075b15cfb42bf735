//! The few system calls that need `unsafe`, each with the reason it is sound.

#![allow(unsafe_code)]

use rustix::thread::UnshareFlags;

/// `unshare(2)` for the sandbox stages.
///
/// # Errors
/// The kernel's refusal (EPERM without privileges, EINVAL for a user
/// namespace in a multi-threaded process).
pub(super) fn unshare(flags: UnshareFlags) -> std::io::Result<()> {
    // SAFETY: rustix marks unshare unsafe only because `CLONE_FILES` would
    // make file descriptors held by other threads invalid. The stages are
    // single-threaded processes (fresh `exec`s that start no threads) and
    // never pass `FILES`.
    debug_assert!(!flags.contains(UnshareFlags::FILES));
    unsafe { rustix::thread::unshare_unsafe(flags) }.map_err(Into::into)
}

/// Who we are after [`fork`].
pub(super) enum Forked {
    /// The new process.
    Child,
    /// The caller, with the child's pid.
    Parent(rustix::process::Pid),
}

/// `fork(2)`.
///
/// # Errors
/// The kernel's refusal (EAGAIN, ENOMEM).
pub(super) fn fork() -> std::io::Result<Forked> {
    // SAFETY: only stage 1 calls this, a single-threaded process: no lock
    // (the allocator's included) can be held by another thread at the fork,
    // so the child may go on running ordinary Rust code. The child never
    // returns into the caller's stack frames beyond `stage1`, and ends with
    // `std::process::exit`.
    let pid = unsafe { libc::fork() };
    match pid {
        -1 => Err(std::io::Error::last_os_error()),
        0 => Ok(Forked::Child),
        p => rustix::process::Pid::from_raw(p)
            .map(Forked::Parent)
            .ok_or_else(|| std::io::Error::other("fork returned an invalid pid")),
    }
}

/// Brings the loopback interface of the current network namespace up, as
/// docker's `--network none` has it (a new namespace starts with `lo` down).
///
/// # Errors
/// The socket or the ioctls failing (no `CAP_NET_ADMIN` in the namespace).
pub(super) fn loopback_up() -> std::io::Result<()> {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    // SAFETY: socket(2) with constant arguments; the result is checked and
    // owned at once.
    let raw = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if raw < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `raw` is a fresh descriptor nothing else owns.
    let sock = unsafe { OwnedFd::from_raw_fd(raw) };
    // SAFETY: `ifreq` is plain old data; all zeroes is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS/SIOCSIFFLAGS read and write the `ifreq` we pass,
    // which lives across both calls; the union member used is the flags.
    unsafe {
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) < 0 {
            return Err(std::io::Error::last_os_error());
        }
        req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// `close_range(first, ~0, flags)`: closes every descriptor from `first` up
/// (or, with `cloexec`, marks them close-on-exec, so that the caller keeps
/// its own until it execs).
///
/// # Errors
/// The kernel's (ENOSYS before Linux 5.9, EINVAL for `cloexec` before 5.11).
pub(super) fn close_range(first: u32, cloexec: bool) -> std::io::Result<()> {
    let flags: libc::c_uint = if cloexec {
        libc::CLOSE_RANGE_CLOEXEC
    } else {
        0
    };
    // SAFETY: close_range(2) takes plain integers. Closing descriptors is
    // only unsound for Rust code still holding them as owned values: the
    // stages call this first thing (stage 1, nothing of ours open above 2)
    // or with CLOSE_RANGE_CLOEXEC (nothing is closed before exec).
    let r = unsafe { libc::syscall(libc::SYS_close_range, first, libc::c_uint::MAX, flags) };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// `keyctl(KEYCTL_JOIN_SESSION_KEYRING, NULL)`: a new anonymous session
/// keyring, so the command sees none of the keys of whoever started us.
///
/// # Errors
/// The kernel's (ENOSYS without key support, EDQUOT).
pub(super) fn join_session_keyring() -> std::io::Result<()> {
    const KEYCTL_JOIN_SESSION_KEYRING: libc::c_long = 1;
    // SAFETY: a null name asks for an anonymous keyring; the call reads no
    // memory of ours.
    let r = unsafe {
        libc::syscall(
            libc::SYS_keyctl,
            KEYCTL_JOIN_SESSION_KEYRING,
            std::ptr::null::<libc::c_char>(),
        )
    };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Loads a classic BPF seccomp program (`sock_filter` records, 8 bytes
/// each, as `seccomp_export_bpf` writes them) for this process and its
/// future children. Without `no_new_privs` this needs `CAP_SYS_ADMIN` in
/// the user namespace, as runc does it when no-new-privileges is off.
///
/// # Errors
/// EINVAL for a program that is not a whole number of records or that the
/// kernel rejects; EPERM without the capability.
pub(super) fn load_seccomp(program: &[u8]) -> std::io::Result<()> {
    const RECORD: usize = std::mem::size_of::<libc::sock_filter>();
    if program.is_empty() || program.len() % RECORD != 0 || program.len() / RECORD > 4096 {
        return Err(std::io::Error::from_raw_os_error(libc::EINVAL));
    }
    // Copied into properly aligned records.
    let filters: Vec<libc::sock_filter> = program
        .chunks_exact(RECORD)
        .map(|c| libc::sock_filter {
            code: u16::from_ne_bytes([c[0], c[1]]),
            jt: c[2],
            jf: c[3],
            k: u32::from_ne_bytes([c[4], c[5], c[6], c[7]]),
        })
        .collect();
    let prog = libc::sock_fprog {
        len: filters.len() as libc::c_ushort,
        filter: filters.as_ptr().cast_mut(),
    };
    // SAFETY: `prog` points at `filters`, which outlive the call; the kernel
    // copies the program and keeps no pointer to it.
    let r = unsafe {
        libc::prctl(
            libc::PR_SET_SECCOMP,
            libc::SECCOMP_MODE_FILTER as libc::c_ulong,
            &prog as *const libc::sock_fprog,
        )
    };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Makes `cmd`'s child get each `(fd, number)` at that descriptor number
/// (for helpers that take descriptor numbers, like slirp4netns's
/// `--ready-fd` and `--exit-fd`), and, with `private_mounts`, start in a
/// mount namespace of its own whose mounts are all private: slirp4netns's
/// `--enable-sandbox` makes only `/` private before it detaches the old
/// root, which as real root would unmount the host's shared submounts
/// (`/run/netns/*`) through propagation. The descriptors stay the caller's.
pub(super) fn pass_fds(
    cmd: &mut std::process::Command,
    fds: Vec<(i32, i32)>,
    private_mounts: bool,
) {
    use std::os::unix::process::CommandExt;
    let mut moved = fds.clone();
    // SAFETY: the closure runs in the child between fork and exec and calls
    // only fcntl(2), dup2(2), unshare(2) and mount(2), plain system calls
    // that are async-signal-safe; it allocates nothing (the vectors and the
    // C strings are made before the fork) and takes no lock. The child is
    // single-threaded, as unshare(CLONE_NEWNS) needs.
    unsafe {
        cmd.pre_exec(move || {
            if private_mounts {
                if libc::unshare(libc::CLONE_NEWNS) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                let root = c"/";
                if libc::mount(
                    std::ptr::null(),
                    root.as_ptr(),
                    std::ptr::null(),
                    libc::MS_REC | libc::MS_PRIVATE,
                    std::ptr::null(),
                ) < 0
                {
                    return Err(std::io::Error::last_os_error());
                }
            }
            // First out of the way of every target number, then into place
            // (dup2 clears close-on-exec on the copy).
            for (i, (fd, _)) in fds.iter().enumerate() {
                let high = libc::fcntl(*fd, libc::F_DUPFD_CLOEXEC, 256);
                if high < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                moved[i].0 = high;
            }
            for (fd, to) in &moved {
                if libc::dup2(*fd, *to) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
}

/// Makes `cmd`'s child the leader of a new session whose controlling
/// terminal is its stdin (a pseudo-terminal slave), as a login shell's is.
pub(super) fn controlling_terminal(cmd: &mut std::process::Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: the closure runs in the child between fork and exec and calls
    // only setsid(2) and ioctl(2), async-signal-safe system calls; it
    // allocates nothing and takes no lock.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            if libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// See [`super::die_with_parent`].
pub(super) fn die_with_parent(cmd: &mut std::process::Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: the closure runs in the child between fork and exec and calls
    // only prctl(2), async-signal-safe; it allocates nothing and takes no
    // lock.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(
                libc::PR_SET_PDEATHSIG,
                libc::SIGKILL as libc::c_ulong,
                0,
                0,
                0,
            ) < 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}
