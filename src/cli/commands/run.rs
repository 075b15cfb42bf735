//! `imgbuild run IMAGE [CMD…]`: a command in the RUN sandbox, over the
//! image's layers and a writable layer that is thrown away on exit.

use crate::builder::Isolation;
use crate::builder::run::{HOSTNAME, hosts_file, overlay_lowers, remove_tree};
use crate::cli::args::{Cli, RunArgs};
use crate::cli::env::Env;
use crate::cli::exit::Failure;
use crate::cli::util::open_store;
use crate::exec::{self, Rootfs};
use crate::oci::{ImageConfig, LayerDescriptor, Manifest};

/// `-v HOST:CTR[:ro|rw]`: a bind mount of an existing host path.
fn volume(v: &str) -> Result<exec::Mount, Failure> {
    let usage = |why: &str| Failure::Usage(anyhow::anyhow!("-v {v}: {why}"));
    let mut parts = v.split(':');
    let (Some(host), Some(target)) = (parts.next(), parts.next()) else {
        return Err(usage("expected HOST:CONTAINER[:ro]"));
    };
    let readonly = match parts.next() {
        None | Some("rw") => false,
        Some("ro") => true,
        Some(o) => return Err(usage(&format!("unknown option `{o}` (ro or rw)"))),
    };
    if parts.next().is_some() {
        return Err(usage("expected HOST:CONTAINER[:ro]"));
    }
    let host = std::path::Path::new(host);
    if !host.is_absolute() {
        return Err(usage(
            "the host path must be absolute (named volumes do not exist here)",
        ));
    }
    if !target.starts_with('/') {
        return Err(usage("the container path must be absolute"));
    }
    if target.trim_matches('/').is_empty() {
        return Err(usage("the container path cannot be `/`"));
    }
    let source =
        std::fs::canonicalize(host).map_err(|e| usage(&format!("{}: {e}", host.display())))?;
    Ok(exec::Mount {
        target: target.to_string(),
        kind: exec::MountKind::Bind { source, readonly },
    })
}

/// Our terminal in raw mode until dropped.
struct RawTerminal {
    saved: rustix::termios::Termios,
}

impl RawTerminal {
    /// Puts stdin's terminal in raw mode; docker's error when stdin is not
    /// a terminal.
    fn enter() -> Result<Self, Failure> {
        use rustix::termios::{OptionalActions, tcgetattr, tcsetattr};
        let stdin = rustix::stdio::stdin();
        // docker's words and status (1).
        let saved = tcgetattr(stdin).map_err(|_| {
            Failure::Failed(anyhow::anyhow!(
                "the input device is not a TTY (-t with -i needs a terminal on stdin; drop -t)"
            ))
        })?;
        let mut raw = saved.clone();
        raw.make_raw();
        tcsetattr(stdin, OptionalActions::Now, &raw)
            .map_err(|e| anyhow::anyhow!("setting the terminal to raw mode: {e}"))?;
        Ok(RawTerminal { saved })
    }
}

impl Drop for RawTerminal {
    fn drop(&mut self) {
        let _ = rustix::termios::tcsetattr(
            rustix::stdio::stdin(),
            rustix::termios::OptionalActions::Now,
            &self.saved,
        );
    }
}

/// Docker's status for "the container could not be started".
const CANNOT_START: u8 = 125;

/// Runs the command and exits with its status.
#[allow(clippy::print_stderr)]
pub fn run(cli: &Cli, caller: &Env, a: &RunArgs) -> Result<(), Failure> {
    let store = open_store(cli, caller)?;
    // Held until the container exits: a prune waits rather than delete
    // the layers it runs on.
    let _lock = store.lock_shared()?;
    let id = super::resolve_image(&store, &a.image)?;
    let rec = store
        .image(&id)?
        .ok_or_else(|| crate::store::Error::NoSuchImage(a.image.clone()))?;
    let m = Manifest::from_bytes(&store.read_blob(&rec.manifest)?)?;
    let cfg = ImageConfig::from_bytes(&store.read_blob(&m.config)?)?;
    let diff_ids = cfg.diff_ids()?;
    let xattr = exec::opaque_xattr();
    let layers: Vec<LayerDescriptor> = m
        .layers
        .iter()
        .zip(diff_ids)
        .map(|((digest, size, media_type), diff_id)| LayerDescriptor {
            diff_id,
            digest: *digest,
            size: *size,
            media_type: media_type.clone(),
        })
        .collect();
    let warn = |m: String| eprintln!("warning: {m}");
    let lowers = overlay_lowers(&store, &layers, xattr, &warn).map_err(anyhow::Error::from)?;

    let c = cfg.config();
    let entrypoint: Vec<String> = match &a.entrypoint {
        Some(e) if e.is_empty() => Vec::new(),
        Some(e) => vec![e.clone()],
        None => c.entrypoint().clone().unwrap_or_default(),
    };
    // docker: arguments replace CMD; a new entrypoint drops the image's CMD.
    let cmd: Vec<String> = if !a.command.is_empty() {
        a.command.clone()
    } else if a.entrypoint.is_some() {
        Vec::new()
    } else {
        c.cmd().clone().unwrap_or_default()
    };
    let argv: Vec<String> = entrypoint.into_iter().chain(cmd).collect();
    if argv.is_empty() {
        return Err(Failure::Usage(anyhow::anyhow!(
            "{}: no command given and the image has no CMD or ENTRYPOINT",
            a.image
        )));
    }
    let mut env: Vec<(String, String)> = c
        .env()
        .clone()
        .unwrap_or_default()
        .iter()
        .map(|kv| match kv.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => (kv.clone(), String::new()),
        })
        .collect();
    for e in &a.env {
        let (k, v) = match e.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            // `-e K`: the value from here, or nothing when unset (docker).
            None => match caller.var(e) {
                Some(v) => (e.clone(), v.to_string()),
                None => continue,
            },
        };
        env.retain(|(ek, _)| *ek != k);
        env.push((k, v));
    }
    // docker's default for a terminal.
    if a.tty && !env.iter().any(|(k, _)| k == "TERM") {
        env.push(("TERM".into(), "xterm".into()));
    }
    let mounts = a
        .volumes
        .iter()
        .map(|v| volume(v))
        .collect::<Result<Vec<_>, _>>()?;
    let host = caller.sandbox_host();
    let mut spec = exec::Spec {
        // The writable layer in memory goes with the sandbox, however it ends.
        upper: caller.sandbox().upper(&host),
        capture: false,
        layer: None,
        rootfs: Rootfs::Overlay {
            lowers,
            opaque_xattr: xattr.to_string(),
        },
        argv,
        env,
        cwd: a
            .workdir
            .clone()
            .or_else(|| c.working_dir().clone())
            .unwrap_or_else(|| "/".into()),
        user: a
            .user
            .clone()
            .or_else(|| c.user().clone())
            .unwrap_or_default(),
        // Set by the isolation below.
        network: exec::NetworkMode::Host,
        hostname: HOSTNAME.into(),
        mounts,
        hosts: hosts_file(),
        resolv_conf: std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default(),
        rootless: exec::rootless_mapping(&host),
        cgroups: Vec::new(),
        seccomp: None,
        nproc: None,
        nodev: false,
        tty: a.tty,
    };
    // -it: our terminal in raw mode while the command runs (its own
    // terminal in the sandbox does the line editing and the signals),
    // restored however the run ends.
    let raw = (a.tty && a.interactive)
        .then(RawTerminal::enter)
        .transpose()?;
    // The same isolation as a RUN step: seccomp, cgroups, the network.
    let isolation = Isolation::new(&store, a.network.run_network(), a.limits.limits(), host);
    let cgroup = match isolation.apply(&mut spec, crate::graph::Network::Host, &warn) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {}: {}", a.image, crate::builder::error_chain(&e));
            return Err(Failure::Quiet(CANNOT_START));
        }
    };
    let dir = store.tmp_path("container");
    std::fs::create_dir_all(&dir).map_err(anyhow::Error::from)?;
    let result = exec::run(
        &dir,
        &spec,
        exec::Output::Inherit {
            stdin: a.interactive,
        },
    );
    drop(raw);
    // The writable layer goes with the container.
    remove_tree(&dir);
    drop(cgroup);
    drop(isolation);
    match result {
        Ok(o) if o.code == 0 => Ok(()),
        Ok(o) => Err(Failure::Quiet(u8::try_from(o.code).unwrap_or(255))),
        Err(e) => {
            eprintln!("error: {}: {e}", a.image);
            Err(Failure::Quiet(CANNOT_START))
        }
    }
}
