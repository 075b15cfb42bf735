//! The two sandbox stages (see the module docs of `exec`). Each runs in its
//! own fresh, single-threaded process and applies its part of the plan
//! (`plan::stage1`, `plan::stage2`) through the real `linux::Linux`; a setup
//! failure is written as JSON to `DIR/error` (stage 2 hands its failure to
//! stage 1 through a pipe: after `pivot_root` and the uid change it can no
//! longer reach `DIR`) and ends the stage with status 125.

use std::io;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use rustix::fs::{Mode, OFlags};
use rustix::mount::UnmountFlags;
use rustix::process::Signal;
use serde::{Deserialize, Serialize};

use super::error::{Phase, Result, SetupError, at};
use super::linux::{self, Linux};
use super::plan::{self, Init, Op};
use super::{NetworkMode, Report, Rootfs, SETUP_FAILED, Spec, sys, user};

fn write_error(dir: &Path, e: &SetupError) {
    if let Ok(json) = serde_json::to_vec(e) {
        let _ = fs_err::write(dir.join("error"), json);
    }
}

/// Stage 1: namespaces, the root filesystem and its mounts, then stage 2.
/// Returns the process exit status.
pub fn stage1_main(dir: &Path) -> i32 {
    // Die with the builder, whatever kills it.
    let _ = rustix::process::set_parent_process_death_signal(Some(Signal::KILL));
    match stage1(dir) {
        Ok(code) => code,
        Err(e) => {
            write_error(dir, &e);
            SETUP_FAILED
        }
    }
}

/// Stage 2: PID 1 of the sandbox. Returns the command's exit status; a
/// setup failure goes to `report` as JSON.
fn stage2_main(dir: &Path, report: OwnedFd) -> i32 {
    let _ = rustix::process::set_parent_process_death_signal(Some(Signal::KILL));
    match stage2(dir) {
        Ok(code) => code,
        Err(e) => {
            if let Ok(json) = serde_json::to_vec(&e) {
                let _ = io::Write::write_all(&mut std::fs::File::from(report), &json);
            }
            SETUP_FAILED
        }
    }
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T> {
    #[allow(clippy::disallowed_methods)] // the error names the path already
    let bytes = std::fs::read(path).map_err(at(Phase::State, path.display().to_string()))?;
    serde_json::from_slice(&bytes)
        .map_err(|e| SetupError::other(Phase::State, format!("{}: {e}", path.display())))
}

/// The message for ids that rootless use without subordinate ids cannot
/// give (`who`: a USER, a socket's owner): which files grant them and the
/// command that does.
fn unmapped(who: &str, host_uid: u32) -> String {
    let name = fs_err::read_to_string("/etc/passwd")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            let mut f = l.split(':');
            let name = f.next()?;
            (f.nth(1)? == host_uid.to_string()).then(|| name.to_string())
        })
        .unwrap_or_else(|| host_uid.to_string());
    format!(
        "{who}, but without subordinate ids only root exists \
         in a rootless sandbox: grant {name} a range in /etc/subuid and /etc/subgid \
         (as root: `usermod --add-subuids 100000-165535 --add-subgids 100000-165535 {name}`) \
         and install newuidmap/newgidmap (Debian: `apt-get install uidmap`)"
    )
}

fn unmapped_user(user: &str, uid: u32, gid: u32, host_uid: u32) -> String {
    let user = if user.is_empty() { "root" } else { user };
    unmapped(&format!("USER {user} is uid {uid}, gid {gid}"), host_uid)
}

fn stage1(dir: &Path) -> Result<i32> {
    let spec: Spec = read_json(&dir.join("spec.json"))?;
    // Absolute: the overlay options are read from inside the layers' directory.
    let dir = std::path::absolute(dir).map_err(at(Phase::State, dir.display().to_string()))?;
    let ops = plan::stage1(&spec, &dir)?;
    let mut sys = Linux::default();
    // Up to the first socket to give an owner (`--mount=type=ssh,uid=`):
    // the user namespace is made by then, and what it maps decides
    // whether that owner exists.
    let owned = ops
        .iter()
        .position(|o| matches!(o, Op::Own { .. }))
        .unwrap_or(ops.len());
    plan::apply(&ops[..owned], &mut sys)?;
    // Whether container ids other than root are mapped (subordinate ids).
    let ranged = match (&spec.network, spec.rootless) {
        (NetworkMode::Join { userns: true, .. }, Some(m)) => m.sub.is_some(),
        _ => sys.ranged,
    };
    if let Some(m) = spec.rootless
        && !ranged
    {
        for op in &ops[owned..] {
            if let Op::Own { uid, gid, .. } = op
                && (*uid != 0 || *gid != 0)
            {
                return Err(SetupError::other(
                    Phase::Mount,
                    unmapped(
                        &format!(
                            "an ssh agent socket owned by uid={uid},gid={gid} (RUN --mount=type=ssh)"
                        ),
                        m.uid,
                    ),
                ));
            }
        }
    }
    plan::apply(&ops[owned..], &mut sys)?;
    let passwd = sys.read_in_root("etc/passwd");
    let group = sys.read_in_root("etc/group");
    let identity = user::resolve(&spec.user, &passwd, &group)
        .map_err(|e| SetupError::other(Phase::User, e.to_string()))?;
    // Rootless with only our own id mapped, no other uid or gid exists in
    // the sandbox: say what would make it exist, instead of EINVAL later.
    if let Some(m) = spec.rootless
        && !ranged
        && (identity.uid != 0 || identity.gid != 0)
    {
        return Err(SetupError::other(
            Phase::User,
            unmapped_user(&spec.user, identity.uid, identity.gid, m.uid),
        ));
    }
    // The working directory is created as docker does, and stays in the layer.
    let cwd = if spec.cwd.is_empty() { "/" } else { &spec.cwd };
    plan::apply(
        &[Op::Ensure {
            rel: cwd.trim_matches('/').to_string(),
            dir: true,
            record: false,
        }],
        &mut sys,
    )?;
    let init = Init {
        argv: spec.argv.clone(),
        env: plan::environment(&spec, &identity),
        cwd: cwd.to_string(),
        hostname: spec.hostname.clone(),
        identity,
        stdin_null: spec.capture,
        tty: spec.tty,
        merged: dir.join("merged"),
        // sysfs needs a network namespace owned by our user namespace.
        bind_sys: spec.rootless.is_some() && spec.network == NetworkMode::Host,
        seccomp: spec.seccomp.clone(),
        nproc: spec.nproc,
        ulimits: spec.ulimits.clone(),
        env_files: spec.env_files.clone(),
    };
    write_json(&dir.join("init.json"), &init)?;
    let mut report = Report {
        created: std::mem::take(&mut sys.created),
        code: None,
        layer: None,
    };
    write_json(&dir.join("report.json"), &report)?;

    sys.close_root();
    let (r, w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
        .map_err(at(Phase::Init, "a pipe"))?;
    // Stage 2 is a fork, not a new process image: the first process of the
    // new PID namespace, without paying for another exec.
    let code = match sys::fork().map_err(at(Phase::Init, ""))? {
        sys::Forked::Child => {
            drop(r);
            std::process::exit(stage2_main(&dir, w))
        }
        sys::Forked::Parent(pid) => {
            drop(w);
            let code = linux::wait_for(pid).map_err(at(Phase::Init, "waiting"))?;
            let mut failure = Vec::new();
            let _ = io::Read::read_to_end(&mut std::fs::File::from(r), &mut failure);
            if !failure.is_empty() {
                return Err(serde_json::from_slice(&failure).unwrap_or_else(|_| {
                    SetupError::other(Phase::Init, String::from_utf8_lossy(&failure))
                }));
            }
            code
        }
    };
    let merged = dir.join("merged");
    let uppers = plan::uppers_dir(&spec, &dir);
    if spec.capture {
        // The namespace is empty now. Keep the upper for the builder: unmount
        // the overlay (nothing may use the upper under it while it is read),
        // report, end our output so that the builder stops reading it, and
        // wait for the end of stdin.
        rustix::mount::unmount(&merged, UnmountFlags::DETACH)
            .map_err(at(Phase::Overlay, "unmounting"))?;
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
            .map_err(at(Phase::State, "/dev/null"))?;
        rustix::stdio::dup2_stdout(&null).map_err(at(Phase::State, "stdout"))?;
        rustix::stdio::dup2_stderr(&null).map_err(at(Phase::State, "stderr"))?;
        // Whatever arrives, or an error, we wait for the end.
        let _ = io::copy(&mut io::stdin().lock(), &mut io::sink());
    }
    if ranged && uppers == dir {
        // Files of subordinate ids on disk: only we can remove them.
        for d in ["upper", "work", "scratch"] {
            let _ = fs_err::remove_dir_all(dir.join(d));
        }
    }
    Ok(code)
}

fn stage2(dir: &Path) -> Result<i32> {
    let init: Init = read_json(&dir.join("init.json"))?;
    let mut sys = Linux::default();
    let Some(pid) = plan::apply(&plan::stage2(&init), &mut sys)? else {
        return Err(SetupError::other(Phase::Exec, "no command"));
    };
    let pid = rustix::process::Pid::from_raw(pid)
        .ok_or_else(|| SetupError::other(Phase::Exec, "bad pid"))?;
    let relay = sys
        .pty
        .take()
        .map(|m| super::tty::relay(m, !init.stdin_null));
    // As PID 1, reap every orphan until the command itself exits; leaving
    // then kills whatever it left behind.
    loop {
        match rustix::process::wait(rustix::process::WaitOptions::empty()) {
            Ok(Some((p, status))) if p == pid => {
                if let Some(r) = relay {
                    r.finish();
                }
                return Ok(linux::exit_code(status));
            }
            Ok(_) | Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(SetupError::os(Phase::Init, "waiting for the command", e)),
        }
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
        .map_err(|e| SetupError::os(Phase::Capture, e.path.display().to_string(), e.source))?;
    let entries = crate::layer::normalize(entries)
        .map_err(|e| SetupError::other(Phase::Capture, e.to_string()))?;
    let compression = crate::layer::Compression::from_name(&req.compression).ok_or_else(|| {
        SetupError::other(
            Phase::Capture,
            format!("unknown compression `{}`", req.compression),
        )
    })?;
    #[allow(clippy::disallowed_methods)] // the error names the path already
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&req.path)
        .map_err(at(Phase::Capture, req.path.display().to_string()))?;
    let (w, digests) = crate::layer::write(
        &entries,
        compression,
        io::BufWriter::new(file),
        None,
        &mut |_| {},
    )
    .map_err(|e| SetupError::other(Phase::Capture, format!("{}: {e}", req.path.display())))?;
    w.into_inner()
        .map_err(|e| SetupError::os(Phase::Capture, req.path.display().to_string(), e.error()))?;
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
    linux::prepare(root, &plan::mountpoints(spec)).map_err(|e| {
        super::Error::Setup(SetupError::os(
            Phase::RootPath,
            root.display().to_string(),
            e,
        ))
    })
}

#[allow(clippy::disallowed_methods)] // the error names the path already
fn write_json<T: Serialize>(path: &Path, v: &T) -> Result<()> {
    let bytes =
        serde_json::to_vec(v).map_err(|e| SetupError::other(Phase::State, e.to_string()))?;
    std::fs::write(path, bytes).map_err(at(Phase::State, path.display().to_string()))
}
