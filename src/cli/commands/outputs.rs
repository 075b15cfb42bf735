//! `-o` outputs beyond the archive the builder writes: more archives,
//! archives and root-filesystem tarballs on standard output, root
//! filesystems as a tar file or a directory (buildx's `oci`, `docker`,
//! `tar` and `local` exporters). Files are written atomically.

use std::io::Write;

use anyhow::Context;

use crate::builder::{self, BuiltImage};
use crate::cli::exit::Failure;
use crate::cli::options::{Dest, OutputKind, OutputSpec};
use crate::oci::archive::{ArchiveFormat, write_archive, write_index_archive};
use crate::progress::Sink;
use crate::store::{AtomicFile, Store};

/// Writes every `spec` for the build's one image; `mtime` stamps archive
/// members (the build's `SOURCE_DATE_EPOCH`, else 0).
///
/// # Errors
/// Several images (these outputs name one), or a failed write.
pub fn write_all(
    store: &Store,
    result: &builder::BuildResult,
    specs: &[OutputSpec],
    mtime: u64,
    events: &dyn Sink,
) -> Result<(), Failure> {
    if specs.is_empty() {
        return Ok(());
    }
    let [image] = result.images.as_slice() else {
        return Err(Failure::Usage(anyhow::anyhow!(
            "-o names one image, but this build writes {}: pick one with --target NAME",
            result.images.len()
        )));
    };
    for spec in specs {
        write_one(store, image, spec, mtime, events)?;
    }
    Ok(())
}

fn write_one(
    store: &Store,
    image: &BuiltImage,
    spec: &OutputSpec,
    mtime: u64,
    events: &dyn Sink,
) -> Result<(), Failure> {
    match (&spec.kind, &spec.dest) {
        (OutputKind::Image, _) | (_, Dest::None) => Ok(()),
        (OutputKind::Local, Dest::Path(dir, _)) => {
            if image.is_index() {
                // buildx's layout: one directory per platform.
                for (p, id) in &image.platforms {
                    let p = p.clone().unwrap_or_else(crate::platform::host);
                    let mut name = format!("{}_{}", p.os, p.arch);
                    if !p.variant.is_empty() {
                        name = format!("{name}_{}", p.variant);
                    }
                    let sub = dir.join(name);
                    builder::export::rootfs_dir(store, id, &sub, events)
                        .with_context(|| format!("writing {}", sub.display()))?;
                }
                Ok(())
            } else {
                builder::export::rootfs_dir(store, &image.id, dir, events)
                    .with_context(|| format!("writing {}", dir.display()))?;
                Ok(())
            }
        }
        (OutputKind::Local, Dest::Stdout) => Err(Failure::Usage(anyhow::anyhow!(
            "type=local writes a directory"
        ))),
        (OutputKind::Tar, dest) => {
            if image.is_index() {
                return Err(Failure::Usage(anyhow::anyhow!(
                    "type=tar holds one platform's filesystem, and this image has {}: use \
                     type=local (a directory per platform) or build one --platform",
                    image.platforms.len()
                )));
            }
            write_to(dest, |w| {
                builder::export::rootfs_tar(store, &image.id, w, events)
                    .map(drop)
                    .map_err(anyhow::Error::from)
            })
        }
        (OutputKind::Archive(format), dest) => {
            if image.is_index() && *format == ArchiveFormat::Docker {
                return Err(Failure::Usage(anyhow::anyhow!(
                    "a docker archive holds one platform, and this image has {}: write the \
                     OCI archive (type=oci) or build one --platform",
                    image.platforms.len()
                )));
            }
            write_to(dest, |w| {
                if image.is_index() {
                    write_index_archive(store, &image.id, &image.tags, mtime, w)?;
                } else {
                    write_archive(store, &image.manifest, &image.tags, *format, mtime, w)?;
                }
                Ok(())
            })
        }
    }
}

/// Runs `write` on the destination: standard output, or a file written
/// atomically (a failure leaves what was there).
fn write_to(
    dest: &Dest,
    write: impl FnOnce(&mut dyn Write) -> anyhow::Result<()>,
) -> Result<(), Failure> {
    match dest {
        Dest::None => Ok(()),
        Dest::Stdout => {
            let stdout = std::io::stdout();
            let mut w = std::io::BufWriter::with_capacity(1 << 20, stdout.lock());
            write(&mut w).context("writing to standard output")?;
            w.flush().context("writing to standard output")?;
            Ok(())
        }
        Dest::Path(path, _) => {
            if let Some(dir) = path.parent() {
                fs_err::create_dir_all(dir)?;
            }
            crate::store::atomic::reclaim(path)
                .with_context(|| format!("cleaning up beside {}", path.display()))?;
            let mut file =
                AtomicFile::create(path).with_context(|| format!("creating {}", path.display()))?;
            {
                let mut w = std::io::BufWriter::with_capacity(1 << 20, file.file());
                write(&mut w).with_context(|| format!("writing {}", path.display()))?;
                w.flush()
                    .with_context(|| format!("writing {}", path.display()))?;
            }
            file.commit()
                .with_context(|| format!("writing {}", path.display()))?;
            Ok(())
        }
    }
}
