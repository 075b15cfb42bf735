//! `imgbuild tag IMAGE NAME`.

use crate::cli::args::{Cli, TagArgs};
use crate::cli::env::Env;
use crate::cli::exit::Failure;
use crate::cli::util::open_store;
use crate::reference::Reference;

/// Points a new name at an image.
pub fn run(cli: &Cli, env: &Env, a: &TagArgs) -> Result<(), Failure> {
    let store = open_store(cli, env)?;
    let _lock = store.lock_shared()?;
    let id = super::resolve_image(&store, &a.image)?;
    let name = Reference::parse(&a.name).map_err(|e| Failure::Usage(e.into()))?;
    store.set_tag(&name, &id)?;
    Ok(())
}
