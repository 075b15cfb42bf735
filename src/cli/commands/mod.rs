//! One file per subcommand.

pub mod build;
pub mod check;
pub mod export;
pub mod history;
pub mod images;
pub mod inspect;
pub mod load;
pub mod outputs;
pub mod parse;
pub mod platforms;
pub mod prune;
pub mod registry;
pub mod rmi;
pub mod run;
pub mod store;
pub mod tag;

pub mod definition;

use super::exit::Failure;

/// Resolves what the user typed to an image ID, as a usage error when unknown.
pub fn resolve_image(
    store: &crate::store::Store,
    what: &str,
) -> Result<crate::digest::Digest, Failure> {
    store.resolve(what).map_err(usage_if_unknown)
}

/// Resolves what the user typed to an image ID for `platform` (a
/// multi-platform tag's image for it; without one, the host's), as a usage
/// error when the store has no such image.
pub fn resolve_image_for(
    store: &crate::store::Store,
    what: &str,
    platform: Option<&crate::platform::Platform>,
) -> Result<crate::digest::Digest, Failure> {
    store.resolve_for(what, platform).map_err(usage_if_unknown)
}

/// What the user typed names: a tag's target (an image, or a
/// multi-platform image's index), else the image an ID or prefix resolves
/// to.
pub fn resolve_target(
    store: &crate::store::Store,
    what: &str,
) -> Result<crate::store::TagTarget, Failure> {
    if let Ok(r) = crate::reference::Reference::parse(what)
        && let Some(t) = store.tag_target(&r)?
    {
        return Ok(t);
    }
    resolve_image(store, what).map(crate::store::TagTarget::Image)
}

/// `--platform`'s value, parsed.
pub fn parse_platform(s: Option<&str>) -> Result<Option<crate::platform::Platform>, Failure> {
    s.map(crate::platform::Platform::parse)
        .transpose()
        .map_err(|e| Failure::Usage(e.into()))
}

fn usage_if_unknown(e: crate::store::Error) -> Failure {
    match e {
        crate::store::Error::NoSuchImage(_)
        | crate::store::Error::Ambiguous(_)
        | crate::store::Error::NoSuchPlatform { .. } => Failure::Usage(e.into()),
        other => Failure::Failed(other.into()),
    }
}
