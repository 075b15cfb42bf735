//! `imgbuild images [-a]`: a row per tag, and per platform the store has of
//! a multi-platform tag (with a PLATFORM column, and `Platform` in JSON,
//! when some tag is one).

use std::collections::{BTreeMap, BTreeSet};

use crate::cli::args::{Cli, ImagesArgs};
use crate::cli::env::Env;
use crate::cli::exit::Failure;
use crate::cli::template::Template;
use crate::cli::util::{ago, human_size, now, open_store, out};
use crate::digest::Digest;
use crate::oci::{Image, parse_rfc3339};
use crate::store::{Store, TagTarget};

struct Row {
    repo: String,
    tag: String,
    id: Digest,
    created: Option<i64>,
    size: u64,
    platform: String,
}

/// An image's creation time, size, and platform (`os/arch[/variant]`, as
/// its config says).
fn image_info(store: &Store, id: &Digest) -> Result<(Option<i64>, u64, String), Failure> {
    let Some(rec) = store.image(id)? else {
        return Ok((None, 0, String::new()));
    };
    let image = Image::from_manifest(store, &rec.manifest)?;
    let created = image
        .config
        .oci
        .created()
        .as_deref()
        .and_then(parse_rfc3339);
    // What the layers hold, as docker counts SIZE.
    let size = image
        .layers
        .iter()
        .map(|l| store.shown_size(&l.digest, l.size, &l.media_type))
        .sum();
    let platform = store
        .image_platform(id)
        .ok()
        .flatten()
        .map(|p| p.to_string())
        .unwrap_or_default();
    Ok((created, size, platform))
}

/// A time as Go prints a `time.Time` in UTC (docker's CreatedAt):
/// `2023-11-14 22:13:20 +0000 UTC`.
fn go_time(secs: i64) -> String {
    let t = crate::oci::rfc3339(secs);
    format!("{} {} +0000 UTC", &t[..10], &t[11..19])
}

/// Lists tagged images (and, with `-a`, untagged ones).
pub fn run(cli: &Cli, env: &Env, a: &ImagesArgs) -> Result<(), Failure> {
    let store = open_store(cli, env)?;
    let _lock = store.lock_shared()?;
    let mut rows = Vec::new();
    let mut tagged: BTreeSet<Digest> = BTreeSet::new();
    let mut multi = false;
    for (r, target) in store.tag_targets()? {
        let fam = r.familiar();
        let (repo, tag) = match fam.rsplit_once(':') {
            Some((n, t)) if !t.contains('/') => (n.to_string(), t.to_string()),
            _ => (fam.clone(), "<none>".to_string()),
        };
        // Each platform the store has of a multi-platform tag (an index
        // that cannot be read shows nothing; `store check` reports it).
        let images = store.target_images(&target).unwrap_or_default();
        multi |= matches!(target, TagTarget::Index(_)) && !images.is_empty();
        for (_, id) in images {
            tagged.insert(id);
            let (created, size, platform) = image_info(&store, &id)?;
            rows.push(Row {
                repo: repo.clone(),
                tag: tag.clone(),
                id,
                created,
                size,
                platform,
            });
        }
    }
    if a.all {
        let mut untagged: BTreeMap<Digest, ()> = BTreeMap::new();
        for id in store.image_ids()? {
            if !tagged.contains(&id) {
                untagged.insert(id, ());
            }
        }
        for id in untagged.into_keys() {
            let (created, size, platform) = image_info(&store, &id)?;
            rows.push(Row {
                repo: "<none>".into(),
                tag: "<none>".into(),
                id,
                created,
                size,
                platform,
            });
        }
    }
    // Stable: a tag's platforms stay in its index's order.
    rows.sort_by(|x, y| y.created.cmp(&x.created).then(x.repo.cmp(&y.repo)));
    let mut text = String::new();
    if a.quiet {
        let mut seen = BTreeSet::new();
        for r in &rows {
            if seen.insert(r.id) {
                text.push_str(&format!("{}\n", r.id.short()));
            }
        }
        return out(&text);
    }
    let now = now();
    if let Some(f) = &a.format {
        // docker's `table FORMAT`: a header row (the fields' column names)
        // before the rows.
        let (table, f) = match f.strip_prefix("table") {
            Some(rest) if rest.is_empty() || rest.starts_with(char::is_whitespace) => {
                (true, rest.trim_start())
            }
            _ => (false, f.as_str()),
        };
        let f = if table && f.is_empty() {
            "{{.Repository}}\t{{.Tag}}\t{{.ID}}\t{{.CreatedSince}}\t{{.Size}}"
        } else {
            f
        };
        let t = (f != "json")
            .then(|| Template::parse_docker(f))
            .transpose()
            .map_err(|e| Failure::Usage(e.into()))?;
        if let (true, Some(t)) = (table, &t) {
            let header = serde_json::json!({
                "Repository": "REPOSITORY", "Tag": "TAG", "ID": "IMAGE ID",
                "Digest": "DIGEST", "CreatedAt": "CREATED AT",
                "CreatedSince": "CREATED", "Size": "SIZE", "Platform": "PLATFORM",
            });
            text.push_str(&t.render(&header).map_err(|e| Failure::Failed(e.into()))?);
            text.push('\n');
        }
        for r in rows {
            let mut v = serde_json::json!({
                "Repository": r.repo,
                "Tag": r.tag,
                "ID": r.id.short(),
                "Digest": "<none>",
                "CreatedAt": r.created.map_or_else(|| "N/A".to_string(), go_time),
                "CreatedSince": r.created.map_or_else(|| "N/A".to_string(), |c| ago(c, now)),
                "Size": human_size(r.size),
                "Platform": r.platform,
            });
            match &t {
                Some(t) => text.push_str(&t.render(&v).map_err(|e| Failure::Failed(e.into()))?),
                None => {
                    // JSON has the table's columns: Platform only when
                    // some tag is multi-platform.
                    if !multi && let Some(o) = v.as_object_mut() {
                        o.remove("Platform");
                    }
                    text.push_str(&v.to_string());
                }
            }
            text.push('\n');
        }
        return out(&text);
    }
    let w_repo = rows.iter().map(|r| r.repo.len()).max().unwrap_or(0).max(10);
    let w_tag = rows.iter().map(|r| r.tag.len()).max().unwrap_or(0).max(3);
    // PLATFORM last, so that the other columns keep their places for
    // scripts that cut them.
    let w_size = rows
        .iter()
        .map(|r| human_size(r.size).len())
        .max()
        .unwrap_or(0)
        .max(4);
    let row = |repo: &str, tag: &str, id: &str, created: &str, size: &str, platform: &str| {
        let line = format!("{repo:w_repo$}   {tag:w_tag$}   {id:12}   {created:16}   ");
        if multi {
            format!("{line}{size:w_size$}   {platform}\n")
        } else {
            format!("{line}{size}\n")
        }
    };
    text.push_str(&row(
        "REPOSITORY",
        "TAG",
        "IMAGE ID",
        "CREATED",
        "SIZE",
        "PLATFORM",
    ));
    for r in rows {
        let created = r.created.map_or_else(|| "N/A".to_string(), |c| ago(c, now));
        let size = human_size(r.size);
        text.push_str(&row(
            &r.repo,
            &r.tag,
            &r.id.short(),
            &created,
            &size,
            &r.platform,
        ));
    }
    out(&text)
}
