//! `imgbuild run IMAGE [CMD…]`: a command in the RUN sandbox, over the
//! image's layers and a writable layer that is thrown away on exit.

use crate::build::run::{HOSTNAME, hosts_file, overlay_lowers, remove_tree};
use crate::build::{Isolation, SandboxMode};
use crate::cli::args::{Cli, RunArgs};
use crate::cli::exit::Failure;
use crate::cli::util::open_store;
use crate::exec::{self, Rootfs};
use crate::oci::{ImageConfig, LayerDescriptor, Manifest};

/// Docker's status for "the container could not be started".
const CANNOT_START: u8 = 125;

/// Runs the command and exits with its status.
#[allow(clippy::print_stderr)]
pub fn run(cli: &Cli, a: &RunArgs) -> Result<(), Failure> {
    let store = open_store(cli)?;
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
            None => match std::env::var(e) {
                Ok(v) => (e.clone(), v),
                Err(_) => continue,
            },
        };
        env.retain(|(ek, _)| *ek != k);
        env.push((k, v));
    }
    let mut spec = exec::Spec {
        // The writable layer in memory goes with the sandbox, however it ends.
        upper: SandboxMode::from_env().upper(),
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
        mounts: Vec::new(),
        hosts: hosts_file(),
        resolv_conf: std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default(),
        rootless: exec::rootless_mapping(),
        cgroups: Vec::new(),
        seccomp: None,
        nproc: None,
        nodev: false,
    };
    // The same isolation as a RUN step: seccomp, cgroups, the network.
    let isolation = Isolation::new(&store, a.network.run_network(), a.limits.limits());
    let cgroup = match isolation.apply(&mut spec, crate::graph::Network::Host, &warn) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {}: {}", a.image, crate::build::error_chain(&e));
            return Err(Failure::Quiet(CANNOT_START));
        }
    };
    let dir = store.tmp_path("container");
    std::fs::create_dir_all(&dir).map_err(anyhow::Error::from)?;
    let result = exec::run(
        &dir,
        &spec,
        exec::Output::Inherit {
            stdin: a.interactive || a.tty,
        },
    );
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
