//! `imgbuild export IMAGE -o FILE`.

use anyhow::Context;

use crate::cli::args::{Cli, ExportArgs, FormatArg};
use crate::cli::env::Env;
use crate::cli::exit::Failure;
use crate::cli::util::open_store;
use crate::oci::archive::{ArchiveFormat, write_archive};
use crate::store::AtomicFile;

/// Writes an image (any tag, ID or step ID) to an archive.
pub fn run(cli: &Cli, env: &Env, a: &ExportArgs) -> Result<(), Failure> {
    let store = open_store(cli, env)?;
    // A reader: a prune waits until the archive is written.
    let _lock = store.lock_shared()?;
    let id = super::resolve_image(&store, &a.image)?;
    let record = store
        .image(&id)?
        .ok_or_else(|| crate::store::Error::NoSuchImage(a.image.clone()))?;
    let names: Vec<_> = store
        .tags()?
        .into_iter()
        .filter(|(_, t)| *t == id)
        .map(|(r, _)| r)
        .collect();
    let format = match a.format {
        FormatArg::Oci => ArchiveFormat::Oci,
        FormatArg::Docker => ArchiveFormat::Docker,
    };
    // What a killed export of the same file left beside it.
    crate::store::atomic::reclaim(&a.output)
        .with_context(|| format!("cleaning up beside {}", a.output.display()))?;
    let mut file = AtomicFile::create(&a.output)
        .with_context(|| format!("creating {}", a.output.display()))?;
    let w = std::io::BufWriter::new(file.file());
    let (w, _) = write_archive(&store, &record.manifest, &names, format, 0, w)?;
    w.into_inner()
        .map_err(|e| e.into_error())
        .with_context(|| format!("writing {}", a.output.display()))?;
    file.commit()
        .with_context(|| format!("writing {}", a.output.display()))?;
    Ok(())
}
