//! `imgbuild tag IMAGE NAME`.

use crate::cli::args::{Cli, TagArgs};
use crate::cli::env::Env;
use crate::cli::exit::Failure;
use crate::cli::util::open_store;
use crate::reference::Reference;
use crate::store::TagTarget;

/// Points a new name at an image, or at a multi-platform tag's index (every
/// platform goes with the name, as with docker's containerd store).
pub fn run(cli: &Cli, env: &Env, a: &TagArgs) -> Result<(), Failure> {
    let store = open_store(cli, env)?;
    let _lock = store.lock_shared()?;
    let target = super::resolve_target(&store, &a.image)?;
    let name = Reference::parse(&a.name).map_err(|e| Failure::Usage(e.into()))?;
    match target {
        TagTarget::Image(id) => store.set_tag(&name, &id)?,
        TagTarget::Index(index) => store.set_index_tag(&name, &index)?,
    }
    Ok(())
}
