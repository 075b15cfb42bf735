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
