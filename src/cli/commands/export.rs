//! `imgbuild export IMAGE -o FILE [--platform P]`.

use anyhow::Context;

use crate::cli::args::{Cli, ExportArgs, FormatArg};
use crate::cli::env::Env;
use crate::cli::exit::Failure;
use crate::cli::util::open_store;
use crate::oci::archive::{ArchiveFormat, write_archive, write_index_archive};
use crate::reference::Reference;
use crate::store::{AtomicFile, Store, TagTarget};

/// What the archive holds.
enum Content {
    /// One image's manifest, named by these tags.
    Image(crate::digest::Digest, Vec<Reference>),
    /// A multi-platform image's index, named by these tags.
    Index(crate::digest::Digest, Vec<Reference>),
}

/// Writes an image (any tag, ID or step ID) to an archive: a multi-platform
/// tag as its index (every platform), or one platform's image with
/// `--platform`.
pub fn run(cli: &Cli, env: &Env, a: &ExportArgs) -> Result<(), Failure> {
    let platform = super::parse_platform(a.platform.as_deref())?;
    let store = open_store(cli, env)?;
    // A reader: a prune waits until the archive is written.
    let _lock = store.lock_shared()?;
    let format = match a.format {
        FormatArg::Oci => ArchiveFormat::Oci,
        FormatArg::Docker => ArchiveFormat::Docker,
    };
    let content = content(&store, &a.image, platform.as_ref())?;
    if let (Content::Index(..), ArchiveFormat::Docker) = (&content, format) {
        return Err(Failure::Usage(anyhow::anyhow!(
            "{} is a multi-platform image, and a docker archive holds one platform: \
             add --platform (or export the OCI index)",
            a.image
        )));
    }
    // What a killed export of the same file left beside it.
    crate::store::atomic::reclaim(&a.output)
        .with_context(|| format!("cleaning up beside {}", a.output.display()))?;
    let mut file = AtomicFile::create(&a.output)
        .with_context(|| format!("creating {}", a.output.display()))?;
    let w = std::io::BufWriter::new(file.file());
    let (w, _) = match &content {
        Content::Image(id, names) => {
            let record = store
                .image(id)?
                .ok_or_else(|| crate::store::Error::NoSuchImage(a.image.clone()))?;
            write_archive(&store, &record.manifest, names, format, 0, w)?
        }
        Content::Index(index, names) => write_index_archive(&store, index, names, 0, w)?,
    };
    w.into_inner()
        .map_err(|e| e.into_error())
        .with_context(|| format!("writing {}", a.output.display()))?;
    file.commit()
        .with_context(|| format!("writing {}", a.output.display()))?;
    Ok(())
}

/// What `what` (for `platform`) puts in the archive, and the names it goes
/// by: every tag of the image or index, and the tag typed when one
/// platform was taken from a multi-platform image.
fn content(
    store: &Store,
    what: &str,
    platform: Option<&crate::platform::Platform>,
) -> Result<Content, Failure> {
    let typed = Reference::parse(what).ok();
    let target = match &typed {
        Some(r) => store.tag_target(r)?,
        None => None,
    };
    if let (Some(TagTarget::Index(index)), None) = (target, platform) {
        let names = store
            .tag_targets()?
            .into_iter()
            .filter(|(_, t)| *t == TagTarget::Index(index))
            .map(|(r, _)| r)
            .collect();
        // An index archive holds every platform: a pull fetched only some.
        let absent: Vec<_> = store
            .index_images(&index)?
            .into_iter()
            .filter_map(|(p, id)| id.is_none().then_some(p))
            .collect();
        if !absent.is_empty() {
            return Err(Failure::Usage(anyhow::anyhow!(
                "{what}: the store lacks {} of this multi-platform image; export one \
                 platform with --platform, or pull the others (`imgbuild pull --platform P`)",
                crate::platform::index::list(&absent)
            )));
        }
        return Ok(Content::Index(index, names));
    }
    let id = super::resolve_image_for(store, what, platform)?;
    let mut names: Vec<Reference> = store
        .tag_targets()?
        .into_iter()
        .filter(|(_, t)| *t == TagTarget::Image(id))
        .map(|(r, _)| r)
        .collect();
    // One platform of a multi-platform tag goes by that tag too (the
    // index's other tags name the whole image, and stay out).
    if let (Some(r), Some(TagTarget::Index(_))) = (typed, target) {
        names.push(r);
    }
    Ok(Content::Image(id, names))
}
