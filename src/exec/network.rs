//! The default RUN network: one private network namespace per build, with
//! outbound access through slirp4netns, shared by every RUN step of the
//! build (joining it costs a `setns`; making one per step would cost a
//! slirp4netns start each).
//!
//! A small holder process (`imgbuild __netns`, single-threaded so that it
//! may enter a user namespace) owns the namespace — and, rootless, the user
//! namespace it belongs to, which stage 1 then joins. slirp4netns runs on
//! the builder's side with `--disable-host-loopback` (as rootless podman
//! runs it): the sandbox reaches the world through NAT but not the host's
//! 127.0.0.1, and sees only its own `lo` and `tap0`. Both processes go when
//! the build ends, however it ends: the holder dies with its parent
//! (`PR_SET_PDEATHSIG`) or at the end of its stdin, slirp4netns when its
//! `--exit-fd` closes.

use std::io::{BufRead, BufReader, Read};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use rustix::process::Signal;
use rustix::thread::UnshareFlags;

use super::{IdMapping, sys};

/// The argument that makes the binary act as the holder.
pub const HOLDER_ARG: &str = "__netns";

/// The package that provides slirp4netns (for the warning when it is missing).
pub const SLIRP_PACKAGE: &str = "slirp4netns";

/// slirp4netns's DNS forwarder inside the sandbox's network.
pub const SLIRP_DNS: &str = "10.0.2.3";

/// The network could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A helper did not start.
    #[error("starting {what}")]
    Spawn {
        /// Which.
        what: &'static str,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A helper started but did not get ready.
    #[error("{what} failed: {detail}")]
    Failed {
        /// Which.
        what: &'static str,
        /// What it said.
        detail: String,
    },
}

/// A running network namespace with slirp4netns attached.
#[derive(Debug)]
pub struct Holder {
    holder: Child,
    slirp: Child,
    exit: Option<OwnedFd>,
    /// The holder's pid, for `/proc/PID/ns/{net,user}`.
    pub pid: i32,
    /// Its user namespace is to be joined (rootless).
    pub userns: bool,
    /// Whether that user namespace maps subordinate ids.
    pub ranged: bool,
}

/// The slirp4netns binary, when installed (in `host`'s `PATH`).
pub fn slirp4netns(host: &super::HostOptions) -> Option<PathBuf> {
    host.find_in_path("slirp4netns")
}

/// The holder: namespaces, then wait for the end of stdin. Prints `ready
/// RANGED` when the namespace exists. Returns the exit status.
pub fn holder_main(mapping: Option<&str>) -> i32 {
    let _ = rustix::process::set_parent_process_death_signal(Some(Signal::KILL));
    // The builder may have died before the line above.
    if rustix::process::getppid().is_none() {
        return 1;
    }
    // Nothing the builder inherited stays open in a process the build's
    // steps share namespaces with.
    let _ = sys::close_range(3, false);
    let run = || -> std::io::Result<bool> {
        let mut ranged = false;
        if let Some(m) = mapping {
            let map: IdMapping =
                serde_json::from_str(m).map_err(|e| std::io::Error::other(e.to_string()))?;
            ranged = super::linux::enter_user_namespace(map)?;
        }
        sys::unshare(UnshareFlags::NEWNET)?;
        sys::loopback_up()?;
        Ok(ranged)
    };
    match run() {
        Ok(ranged) => {
            let _ = std::io::Write::write_all(
                &mut std::io::stdout(),
                format!("ready {}\n", u8::from(ranged)).as_bytes(),
            );
            let _ = std::io::copy(&mut std::io::stdin().lock(), &mut std::io::sink());
            0
        }
        Err(e) => {
            let _ = std::io::Write::write_all(&mut std::io::stdout(), format!("{e}\n").as_bytes());
            1
        }
    }
}

impl Holder {
    /// Starts the holder (in a user namespace with `rootless`'s mapping
    /// when given) and slirp4netns on it.
    ///
    /// # Errors
    /// Either one failing to start or to get ready.
    pub fn start(slirp: &Path, rootless: Option<IdMapping>) -> Result<Holder, Error> {
        let exe = std::env::current_exe().map_err(|source| Error::Spawn {
            what: "the network holder",
            source,
        })?;
        let mut cmd = Command::new(exe);
        cmd.arg(HOLDER_ARG);
        if let Some(m) = rootless {
            cmd.arg(serde_json::to_string(&m).unwrap_or_default());
        }
        let mut holder = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|source| Error::Spawn {
                what: "the network holder",
                source,
            })?;
        let mut line = String::new();
        if let Some(out) = holder.stdout.take() {
            let _ = BufReader::new(out).read_line(&mut line);
        }
        let ranged = match line.trim_end().strip_prefix("ready ") {
            Some(r) => r == "1",
            None => {
                let _ = holder.kill();
                let _ = holder.wait();
                return Err(Error::Failed {
                    what: "the network holder",
                    detail: line.trim_end().to_string(),
                });
            }
        };
        let pid = holder.id() as i32;
        let fail = |holder: &mut Child, e: Error| {
            drop(holder.stdin.take());
            let _ = holder.wait();
            e
        };
        let pipes = (|| {
            let (ready_r, ready_w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?;
            let (exit_r, exit_w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?;
            std::io::Result::Ok((ready_r, ready_w, exit_r, exit_w))
        })();
        let (ready_r, ready_w, exit_r, exit_w) = match pipes {
            Ok(p) => p,
            Err(source) => {
                return Err(fail(
                    &mut holder,
                    Error::Spawn {
                        what: "slirp4netns",
                        source,
                    },
                ));
            }
        };
        let mut s = Command::new(slirp);
        s.args([
            "--configure",
            "--mtu=65520",
            "--disable-host-loopback",
            "--enable-sandbox",
            "--enable-seccomp",
            "--ready-fd=3",
            "--exit-fd=4",
            &pid.to_string(),
            "tap0",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
        // As root, its sandbox's mount namespace must start private (see
        // `sys::pass_fds`); rootless, it is a less privileged namespace
        // whose mounts are slaves already.
        sys::pass_fds(
            &mut s,
            vec![(ready_w.as_raw_fd(), 3), (exit_r.as_raw_fd(), 4)],
            rootless.is_none(),
        );
        let mut slirp_child = match s.spawn() {
            Ok(c) => c,
            Err(source) => {
                return Err(fail(
                    &mut holder,
                    Error::Spawn {
                        what: "slirp4netns",
                        source,
                    },
                ));
            }
        };
        drop(s);
        drop(ready_w);
        drop(exit_r);
        // One byte when configured; the end of the pipe when it died.
        let mut b = [0u8; 1];
        let ready = std::fs::File::from(ready_r).read(&mut b).unwrap_or(0) == 1;
        if !ready {
            let mut err = String::new();
            if let Some(mut e) = slirp_child.stderr.take() {
                let _ = e.read_to_string(&mut err);
            }
            let _ = slirp_child.kill();
            let _ = slirp_child.wait();
            return Err(fail(
                &mut holder,
                Error::Failed {
                    what: "slirp4netns",
                    detail: err.trim_end().to_string(),
                },
            ));
        }
        // Its messages from now on are not ours to show.
        drop(slirp_child.stderr.take());
        Ok(Holder {
            holder,
            slirp: slirp_child,
            exit: Some(exit_w),
            pid,
            userns: rootless.is_some(),
            ranged,
        })
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        drop(self.exit.take());
        drop(self.holder.stdin.take());
        let _ = self.slirp.wait();
        let _ = self.holder.wait();
    }
}

/// The resolver configuration for the sandbox's network: the host's, with
/// loopback name servers (unreachable from another namespace) replaced by
/// slirp4netns's forwarder, as podman does.
pub fn resolv_conf(host: &str) -> String {
    let mut out = String::new();
    let mut servers = 0;
    for line in host.lines() {
        let mut f = line.split_whitespace();
        if f.next() == Some("nameserver") {
            let addr = f.next().unwrap_or("");
            if addr.starts_with("127.") || addr == "::1" {
                continue;
            }
            servers += 1;
        }
        out.push_str(line);
        out.push('\n');
    }
    if servers == 0 {
        out.push_str(&format!("nameserver {SLIRP_DNS}\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_name_servers_become_slirps_forwarder() {
        assert_eq!(
            resolv_conf("nameserver 127.0.0.53\noptions edns0\n"),
            "options edns0\nnameserver 10.0.2.3\n"
        );
        assert_eq!(
            resolv_conf("nameserver 10.1.1.1\n"),
            "nameserver 10.1.1.1\n"
        );
    }
}
