//! `imgbuild rmi IMAGE…`: untag; an image left without tags is deleted (its
//! blobs go at the next `prune`), each platform's of a multi-platform tag.

use anyhow::anyhow;

use crate::cli::args::{Cli, RmiArgs};
use crate::cli::env::Env;
use crate::cli::exit::Failure;
use crate::cli::util::{open_store, out};
use crate::reference::Reference;
use crate::store::TagTarget;

/// Removes images or tags, docker-style.
pub fn run(cli: &Cli, env: &Env, a: &RmiArgs) -> Result<(), Failure> {
    let store = open_store(cli, env)?;
    let _lock = store.lock_shared()?;
    let mut text = String::new();
    for what in &a.images {
        // A multi-platform tag: untagged, and each of its platforms' images
        // that no other tag names is deleted.
        if let Ok(r) = Reference::parse(what)
            && let Some(t @ TagTarget::Index(_)) = store.tag_target(&r)?
        {
            let images = store.target_images(&t).unwrap_or_default();
            store.remove_tag(&r)?;
            text.push_str(&format!("Untagged: {}\n", r.familiar()));
            for (_, id) in images {
                if store.tags_of(&id)?.is_empty() && store.remove_image(&id)? {
                    text.push_str(&format!("Deleted: {id}\n"));
                }
            }
            continue;
        }
        let id = super::resolve_image(&store, what)?;
        let tags = store.tags_of(&id)?;
        // A name removes that tag; an ID removes the image (and, with -f, its tags).
        let named = Reference::parse(what).ok().filter(|r| tags.contains(r));
        match named {
            Some(r) => {
                store.remove_tag(&r)?;
                text.push_str(&format!("Untagged: {}\n", r.familiar()));
                if tags.len() == 1 {
                    store.remove_image(&id)?;
                    text.push_str(&format!("Deleted: {id}\n"));
                }
            }
            None => {
                if !tags.is_empty() && !a.force {
                    let names: Vec<String> = tags.iter().map(Reference::familiar).collect();
                    return Err(Failure::Usage(anyhow!(
                        "image {} is tagged ({}); remove the tags, or use -f",
                        id.short(),
                        names.join(", ")
                    )));
                }
                for r in &tags {
                    store.remove_tag(r)?;
                    text.push_str(&format!("Untagged: {}\n", r.familiar()));
                }
                store.remove_image(&id)?;
                text.push_str(&format!("Deleted: {id}\n"));
            }
        }
    }
    out(&text)
}
