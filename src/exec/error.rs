//! Typed sandbox setup failures: the phase that failed, the OS error and
//! the path or detail. Stage 1 and stage 2 are separate processes, so a
//! failure crosses back to the builder as JSON in `DIR/error` and is rebuilt
//! there; callers (the scheduler's fallback ladder) match the phase, never
//! the text.

use serde::{Deserialize, Serialize};

/// The step of sandbox setup that failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    /// Reading or writing the sandbox's own files (`spec.json`, `init.json`,
    /// the report) or preparing its directory.
    State,
    /// Entering a user namespace or writing its id maps.
    UserNamespace,
    /// Creating (or joining) the mount, PID, IPC, UTS and network namespaces.
    Namespaces,
    /// Making mounts private, so that nothing propagates to the host.
    Propagation,
    /// Mounting the tmpfs that holds the upper directory in memory.
    UpperTmpfs,
    /// Mounting the overlay root filesystem.
    Overlay,
    /// Bind-mounting a plain directory as the root.
    RootBind,
    /// Creating or opening a path inside the root (a mount point).
    RootPath,
    /// Making `/dev`.
    Dev,
    /// Binding `/etc/hosts` or `/etc/resolv.conf`.
    Hosts,
    /// A `--mount` (bind, tmpfs, writable bind).
    Mount,
    /// Resolving USER in the image.
    User,
    /// Mounting `/proc`.
    Proc,
    /// Mounting `/sys`.
    Sys,
    /// Masking a path (runc's masked paths) or making one read-only.
    Mask,
    /// `pivot_root` into the container's root.
    PivotRoot,
    /// Setting the host name.
    Hostname,
    /// The network: bringing up loopback, joining the build's network.
    Network,
    /// The capability sets.
    Capabilities,
    /// Setting the user and group ids.
    Ids,
    /// A fresh session keyring.
    Keyring,
    /// A resource limit.
    Rlimit,
    /// Joining the step's cgroups.
    Cgroup,
    /// Loading the seccomp filter.
    Seccomp,
    /// Closing inherited descriptors.
    Descriptors,
    /// Starting the init process (stage 2) or waiting for it.
    Init,
    /// Starting the command itself.
    Exec,
    /// Writing the layer of the changes inside the sandbox.
    Capture,
}

impl Phase {
    /// What the phase does, as the error message starts.
    fn describe(self) -> &'static str {
        match self {
            Phase::State => "sandbox state",
            Phase::UserNamespace => "creating a user namespace",
            Phase::Namespaces => "creating namespaces",
            Phase::Propagation => "making mounts private",
            Phase::UpperTmpfs => "mounting a tmpfs for the upper",
            Phase::Overlay => "mounting the overlay",
            Phase::RootBind => "bind-mounting the root",
            Phase::RootPath => "preparing a mount point",
            Phase::Dev => "mounting /dev",
            Phase::Hosts => "mounting /etc/hosts",
            Phase::Mount => "mounting",
            Phase::User => "USER",
            Phase::Proc => "mounting /proc",
            Phase::Sys => "mounting /sys",
            Phase::Mask => "masking",
            Phase::PivotRoot => "pivot_root",
            Phase::Hostname => "setting the hostname",
            Phase::Network => "network",
            Phase::Capabilities => "dropping capabilities",
            Phase::Ids => "setting ids",
            Phase::Keyring => "joining a session keyring",
            Phase::Rlimit => "setting a resource limit",
            Phase::Cgroup => "joining the cgroup",
            Phase::Seccomp => "loading the seccomp filter",
            Phase::Descriptors => "closing inherited descriptors",
            Phase::Init => "the sandbox init",
            Phase::Exec => "exec",
            Phase::Capture => "capturing the changes",
        }
    }
}

/// A setup failure of the sandbox, as stage 1 or 2 reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub struct SetupError {
    /// What was being done.
    pub phase: Phase,
    /// The path or argument it was done to (may be empty).
    pub detail: String,
    /// The OS error number, when the kernel refused.
    pub errno: Option<i32>,
}

impl SetupError {
    /// A failure with an OS error.
    pub fn os(phase: Phase, detail: impl Into<String>, errno: impl Into<Errno>) -> Self {
        SetupError {
            phase,
            detail: detail.into(),
            errno: Some(errno.into().0),
        }
    }

    /// A failure without an OS error (bad input, an unknown user).
    pub fn other(phase: Phase, detail: impl Into<String>) -> Self {
        SetupError {
            phase,
            detail: detail.into(),
            errno: None,
        }
    }

    /// The OS error, as `std` shows it.
    pub fn os_error(&self) -> Option<std::io::Error> {
        self.errno.map(std::io::Error::from_raw_os_error)
    }
}

impl std::fmt::Display for SetupError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // docker's (runc's) words for a missing command.
        if self.phase == Phase::Exec && self.errno == Some(libc::ENOENT) {
            return write!(
                f,
                "exec: \"{}\": executable file not found in $PATH",
                self.detail
            );
        }
        match (self.phase, self.detail.is_empty()) {
            (Phase::Exec, _) => write!(f, "exec: \"{}\"", self.detail)?,
            (Phase::User, _) => f.write_str(&self.detail)?,
            (p, true) => f.write_str(p.describe())?,
            (p, false) => write!(f, "{} {}", p.describe(), self.detail)?,
        }
        if let Some(e) = self.os_error() {
            write!(f, ": {e}")?;
        }
        Ok(())
    }
}

/// An OS error number, from whichever error type the call gave.
#[derive(Debug, Clone, Copy)]
pub struct Errno(pub i32);

impl From<rustix::io::Errno> for Errno {
    fn from(e: rustix::io::Errno) -> Self {
        Errno(e.raw_os_error())
    }
}

impl From<std::io::Error> for Errno {
    fn from(e: std::io::Error) -> Self {
        Errno(e.raw_os_error().unwrap_or(libc::EIO))
    }
}

impl From<&std::io::Error> for Errno {
    fn from(e: &std::io::Error) -> Self {
        Errno(e.raw_os_error().unwrap_or(libc::EIO))
    }
}

/// Result alias for the stages.
pub type Result<T, E = SetupError> = std::result::Result<T, E>;

/// `map_err` helper: a failure of `phase` on `detail`.
pub fn at<E: Into<Errno>>(phase: Phase, detail: impl Into<String>) -> impl FnOnce(E) -> SetupError {
    let detail = detail.into();
    move |e| SetupError::os(phase, detail, e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_json_and_reads_as_before() {
        let e = SetupError::os(Phase::Overlay, "", Errno(libc::EINVAL));
        let back: SetupError = serde_json::from_slice(&serde_json::to_vec(&e).unwrap()).unwrap();
        assert_eq!(back, e);
        assert!(
            back.to_string().starts_with("mounting the overlay: "),
            "{back}"
        );
        let e = SetupError::os(Phase::Exec, "nosuch", Errno(libc::ENOENT));
        assert_eq!(
            e.to_string(),
            "exec: \"nosuch\": executable file not found in $PATH"
        );
        let e = SetupError::os(Phase::Mount, "/cache", Errno(libc::EPERM));
        assert!(e.to_string().starts_with("mounting /cache: "), "{e}");
    }
}
