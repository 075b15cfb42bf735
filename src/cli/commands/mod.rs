//! One file per subcommand.

pub mod build;
pub mod check;
pub mod export;
pub mod history;
pub mod images;
pub mod inspect;
pub mod load;
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
    store.resolve(what).map_err(|e| match e {
        crate::store::Error::NoSuchImage(_) | crate::store::Error::Ambiguous(_) => {
            Failure::Usage(e.into())
        }
        other => Failure::Failed(other.into()),
    })
}
