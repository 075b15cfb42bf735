//! `imgbuild history IMAGE`: IMAGE, CREATED, CREATED BY, SIZE, COMMENT, newest
//! first, as `docker history` prints it.

use crate::cli::args::{Cli, HistoryArgs};
use crate::cli::env::Env;
use crate::cli::exit::Failure;
use crate::cli::util::{ago, human_size, now, open_store, out};
use crate::oci::{Image, parse_rfc3339};

/// Prints the history of an image (of a multi-platform tag: the
/// `--platform`'s, else the host's).
pub fn run(cli: &Cli, env: &Env, a: &HistoryArgs) -> Result<(), Failure> {
    let platform = super::parse_platform(a.platform.as_deref())?;
    let store = open_store(cli, env)?;
    let _lock = store.lock_shared()?;
    let id = super::resolve_image_for(&store, &a.image, platform.as_ref())?;
    // Walk the parent chain: entry i of the history belongs to the image whose
    // history has i+1 entries.
    let mut chain = Vec::new();
    let mut cur = Some(id);
    while let Some(c) = cur {
        let Some(rec) = store.image(&c)? else { break };
        let image = Image::from_manifest(&store, &rec.manifest)?;
        let n = image.config.oci.history().as_ref().map_or(0, Vec::len);
        chain.push((c, n));
        cur = rec.parent;
    }
    let image = Image::load(&store, &id)?;
    let history = image.config.oci.history().clone().unwrap_or_default();
    // docker shows what a layer holds, not what it weighs compressed.
    let mut layer_sizes = image
        .layers
        .iter()
        .map(|l| store.shown_size(&l.digest, l.size, &l.media_type))
        .collect::<Vec<_>>()
        .into_iter();
    let now = now();
    let mut rows = Vec::new();
    for (i, h) in history.iter().enumerate() {
        let size = if h.empty_layer().unwrap_or(false) {
            0
        } else {
            layer_sizes.next().unwrap_or(0)
        };
        let image = chain
            .iter()
            .find(|(_, n)| *n == i + 1)
            .map_or_else(|| "<missing>".to_string(), |(d, _)| d.short());
        let created = h
            .created()
            .as_deref()
            .and_then(parse_rfc3339)
            .map_or_else(|| "N/A".into(), |t| ago(t, now));
        let mut by = h.created_by().clone().unwrap_or_default();
        if !a.no_trunc && by.chars().count() > 45 {
            by = by.chars().take(44).collect::<String>() + "…";
        }
        rows.push((
            image,
            created,
            by,
            human_size(size),
            h.comment().clone().unwrap_or_default(),
        ));
    }
    rows.reverse();
    let w_by = rows
        .iter()
        .map(|r| r.2.chars().count())
        .max()
        .unwrap_or(0)
        .max(10);
    let mut text = format!(
        "{:12}   {:16}   {:w_by$}   {:8}   COMMENT\n",
        "IMAGE", "CREATED", "CREATED BY", "SIZE"
    );
    for (image, created, by, size, comment) in rows {
        let pad = w_by - by.chars().count();
        text.push_str(&format!(
            "{image:12}   {created:16}   {by}{:pad$}   {size:8}   {comment}\n",
            ""
        ));
    }
    out(&text)
}
