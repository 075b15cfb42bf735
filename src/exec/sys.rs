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
